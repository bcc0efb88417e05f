"""What the tests share: the script's arrays and parameters, built as the script builds them."""

import argparse
import importlib.util
import os

import pytest

import lstm_stateful as ls


def dataset(
    input_len, tsteps, lahead, batch_size, seed, layout="interleaved", window_order="newest-first"
):
    """((x_train, y_train), (x_test, y_test)), as experiment() trains and tests on them."""
    data_input, expected_output = ls.build_series(input_len, tsteps, lahead, seed, window_order)
    (x_train, y_train), (x_test, y_test) = ls.split_data(data_input, expected_output, batch_size)
    x_train, y_train, x_test, y_test = (
        ls.to_layout(a, batch_size, layout) for a in (x_train, y_train, x_test, y_test)
    )
    return (x_train, y_train), (x_test, y_test)


def parameters(**changes):
    """The editable block's values, with some changed: what main() hands to run()."""
    return argparse.Namespace(**{name: getattr(ls, name) for name in ls.PARAMETERS} | changes)


def require(module):
    """Skip a test whose backend or tool is not installed; fail instead where
    LSTM_STATEFUL_REQUIRE_ALL=1 (CI installs them all, so a skip would hide a failure)."""
    if importlib.util.find_spec(module) is None:
        if os.environ.get("LSTM_STATEFUL_REQUIRE_ALL") == "1":
            pytest.fail(f"{module} is not installed, and LSTM_STATEFUL_REQUIRE_ALL=1 asks for it")
        pytest.skip(f"{module} is not installed")
