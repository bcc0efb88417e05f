"""What the tests share: the script's arrays and parameters, built as the script builds them."""

import argparse

import lstm_stateful as ls


def dataset(input_len, tsteps, lahead, batch_size, seed, layout="interleaved"):
    """((x_train, y_train), (x_test, y_test)), as experiment() trains and tests on them."""
    data_input, expected_output = ls.build_series(input_len, tsteps, lahead, seed)
    (x_train, y_train), (x_test, y_test) = ls.split_data(data_input, expected_output, batch_size)
    x_train, y_train, x_test, y_test = (
        ls.to_layout(a, batch_size, layout) for a in (x_train, y_train, x_test, y_test)
    )
    return (x_train, y_train), (x_test, y_test)


def parameters(**changes):
    """The editable block's values, with some changed: what main() hands to run()."""
    return argparse.Namespace(**{name: getattr(ls, name) for name in ls.PARAMETERS} | changes)
