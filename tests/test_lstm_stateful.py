"""Tests for lstm_stateful.py: the data, the runs, the refusals and the command line.

Everything runs on the CPU with tiny sizes. The state itself is tested in test_state.py.
"""

import contextlib
import importlib.util
import inspect
import io
import json
import os
import pstats
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lstm_stateful as ls  # noqa: E402, I001  (first: it quiets TensorFlow before Keras loads)
from helpers import dataset, parameters, require  # noqa: E402

import keras  # noqa: E402

TINY = ["--input-len", "60", "--epochs", "2", "--no-show"]
METRIC_KEYS = {
    "test_mse",
    "r2",
    "floor_mse",
    "recovered",
    "converged",
    "loss",
    "val_loss",
    "seconds",
}
BACKENDS = ("tensorflow", "jax", "torch")
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and preexec_fn")
MEMORY_FIGURE = pytest.mark.skipif(
    sys.platform == "win32", reason="Windows gives no memory figure (see the next test)"
)


# ---------------------------------------------------------------- data
def expected_dataset(input_len, tsteps, lahead, batch_size, seed, window_order="newest-first"):
    """The original's arrays, computed a second way: plain numpy, no pandas, explicit indices."""
    to_drop = max(tsteps - 1, lahead - 1)
    noise = np.random.RandomState(seed).uniform(-0.1, 0.1, input_len + to_drop)
    times = np.arange(to_drop, to_drop + input_len)
    # newest-first, x[t, i, 0] is the input i steps before t; oldest-first, lahead - 1 - i steps
    # before; y[t] is the mean of the last tsteps inputs.
    back = range(lahead) if window_order == "newest-first" else range(lahead - 1, -1, -1)
    x = np.array([[noise[t - i] for i in back] for t in times])[:, :, None]
    y = np.array([noise[t - tsteps + 1 : t + 1].mean() for t in times])[:, None]
    n_train = int(0.8 * input_len) // batch_size * batch_size
    n_test = (input_len - n_train) - input_len % batch_size
    return (x[:n_train], y[:n_train]), (
        x[n_train : n_train + n_test],
        y[n_train : n_train + n_test],
    )


@pytest.mark.parametrize(
    "input_len, tsteps, lahead, batch_size, seed, window_order",
    [
        (1000, 2, 1, 1, 1986, "newest-first"),  # the original's defaults
        (50, 3, 4, 1, 0, "newest-first"),  # lahead > tsteps: the window view drops more rows
        (50, 3, 4, 1, 0, "oldest-first"),  # the same windows, in time order
        (53, 4, 2, 4, 7, "newest-first"),  # batch_size > 1: both sets trimmed to whole batches
        (53, 4, 3, 4, 7, "oldest-first"),
        (41, 1, 3, 3, 1986, "newest-first"),  # tsteps = 1: the target is the input itself
        (30, 5, 1, 2, 2**32 - 1, "oldest-first"),  # the largest seed numpy takes; a window of 1
    ],
)
def test_the_data_matches_an_independent_computation(
    input_len, tsteps, lahead, batch_size, seed, window_order
):
    got = dataset(input_len, tsteps, lahead, batch_size, seed, window_order=window_order)
    want = expected_dataset(input_len, tsteps, lahead, batch_size, seed, window_order)
    for got_array, want_array in zip([*got[0], *got[1]], [*want[0], *want[1]], strict=True):
        assert got_array.shape == want_array.shape
        assert got_array.dtype == np.float64
    (x_train, y_train), (x_test, y_test) = got
    (wx_train, wy_train), (wx_test, wy_test) = want
    np.testing.assert_array_equal(x_train, wx_train)  # the inputs are copied, never recomputed
    np.testing.assert_array_equal(x_test, wx_test)
    # pandas' rolling mean sums in another order than np.mean: equal to the last bits of a float
    np.testing.assert_allclose(y_train, wy_train, rtol=0, atol=1e-16)
    np.testing.assert_allclose(y_test, wy_test, rtol=0, atol=1e-16)


def test_the_data_keeps_the_originals_sizes():
    (x_train, y_train), (x_test, y_test) = dataset(1000, 2, 1, 1, 1986)
    assert x_train.shape == (800, 1, 1) and y_train.shape == (800, 1)
    assert x_test.shape == (200, 1, 1) and y_test.shape == (200, 1)
    # np.random.seed(1986) then uniform(-0.1, 0.1): the original's very first input, after the
    # one row the tsteps = 2 moving average drops
    first_two = np.random.RandomState(1986).uniform(-0.1, 0.1, 2)
    assert x_train[0, 0, 0] == first_two[1]
    assert y_train[0, 0] == pytest.approx(first_two.mean(), abs=1e-17)


def test_split_sizes_agree_with_split_data():
    for input_len, batch_size in [(1000, 1), (53, 4), (97, 7), (10, 3)]:
        (x_train, _), (x_test, _) = dataset(input_len, 1, 1, batch_size, 0)
        assert ls.split_sizes(input_len, batch_size) == (len(x_train), len(x_test))
        assert len(x_train) % batch_size == 0 and len(x_test) % batch_size == 0


def test_stateless_floor_is_the_variance_of_the_unseen_inputs():
    assert ls.stateless_floor_mse(2, 1) == pytest.approx(0.01 / 12)
    assert ls.stateless_floor_mse(4, 1) == pytest.approx(3 * 0.01 / 3 / 16)
    assert ls.stateless_floor_mse(2, 2) == 0.0
    assert ls.stateless_floor_mse(2, 5) == 0.0
    # and the noise really has that variance: the best stateless guess leaves this error
    x = np.random.RandomState(0).uniform(-0.1, 0.1, 200_000)
    y = (x[1:] + x[:-1]) / 2
    best_guess = x[1:] / 2  # what a model that sees only the current input can do at best
    assert np.mean((y - best_guess) ** 2) == pytest.approx(ls.stateless_floor_mse(2, 1), rel=0.02)


# ---------------------------------------------------------------- runs
def test_run_in_process_writes_figures_and_consistent_metrics(tmp_path, capsys, recwarn):
    import matplotlib.image
    import matplotlib.pyplot as plt

    out = tmp_path / "out"
    # --show where pyplot cannot show (the suite chose Agg, conftest.py): neither fails nor warns
    assert plt.get_backend().lower() == "agg"
    assert ls.main([*TINY, "--show", "--tsteps", "3", "--output-dir", str(out)]) == 0
    assert not [w for w in recwarn if "non-interactive" in str(w.message)]
    assert {p.name for p in out.iterdir()} == {
        "input.png",
        "results.png",
        "loss.png",
        "metrics.json",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == keras.backend.backend()
    assert metrics["params"] == {
        "input_len": 60,
        "tsteps": 3,
        "lahead": 1,
        "batch_size": 1,
        "epochs": 2,
        "seed": 1986,
        "learning_rate": 0.001,
    }
    assert metrics["stateless_floor_mse"] == pytest.approx(2 * 0.01 / 27)
    _, (x_test, y_test) = expected_dataset(60, 3, 1, 1, 1986)
    # the best guess without state: the one input the window shows, a third of the average
    floor_errors = (y_test[:, 0] - x_test[:, 0, 0] / 3) ** 2
    scored = {"stateful": slice(2, None), "stateless": slice(None)}  # stateful skips tsteps - 1
    for name in ("stateful", "stateless"):
        m = metrics[name]
        assert set(m) == METRIC_KEYS
        assert len(m["loss"]) == len(m["val_loss"]) == 2
        assert m["test_mse"] > 0 and m["seconds"] > 0
        y = y_test[scored[name]]
        assert m["r2"] == pytest.approx(1 - m["test_mse"] / np.var(y), rel=1e-12)
        assert m["floor_mse"] == pytest.approx(floor_errors[scored[name]].mean(), rel=1e-12)
        assert m["recovered"] == pytest.approx(1 - m["test_mse"] / m["floor_mse"], rel=1e-12)
        assert m["converged"] == (m["recovered"] >= 0.5)
    # the stream: at batch size 1, one sample per call predicts what predict() did, exactly
    stream = metrics["stream"]
    assert set(stream) == {"test_mse", "r2", "floor_mse", "recovered", "converged"} | {
        "largest_difference"
    }
    assert stream["largest_difference"] == 0.0
    for key in ("test_mse", "r2", "floor_mse", "recovered", "converged"):
        assert stream[key] == metrics["stateful"][key]
    printed = capsys.readouterr().out
    assert "STATELESS LSTM WILL NOT CONVERGE" in printed
    assert "largest difference from its predict(): 0.0e+00)" in printed
    assert "Epoch 2 / 2" in printed
    assert f"{metrics['stateful']['test_mse']:.2e}" in printed
    floor = metrics["stateless"]["floor_mse"]
    assert f"{floor:.2e} on this test set, {metrics['stateless_floor_mse']:.2e} expected" in printed
    assert f"Keras {keras.version()} on {keras.backend.backend()}; seed 1986" in printed
    stateful = metrics["stateful"]
    assert (
        f"stateful   test MSE {stateful['test_mse']:.2e}: {stateful['recovered']:.1%} recovered, "
        f"{'converged' if stateful['converged'] else 'NOT converged'}"
    ) in printed
    agrees = stateful["converged"] and not metrics["stateless"]["converged"]
    assert (
        f"This run {'agrees' if agrees else 'does NOT agree'} with the example's claim: "
        "only the stateful model converges when lahead < tsteps."
    ) in printed
    for name, (min_height, min_width) in {
        "input.png": (400, 600),
        "results.png": (700, 700),
        "loss.png": (450, 700),
    }.items():
        pixels = matplotlib.image.imread(out / name)
        assert pixels.shape[0] >= min_height and pixels.shape[1] >= min_width, name
        assert pixels[..., :3].std() > 0.05, name  # not a blank canvas


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "args, message",
    [
        (["--tsteps", "0"], "tsteps = 0 on the command line: must be a positive integer"),
        (["--lahead", "-2"], "lahead = -2 on the command line: must be a positive integer"),
        (["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
        (["--input-len", "many"], "argument --input-len: invalid int value: 'many'"),
        (["--batch-size", "0"], "batch_size = 0 on the command line: must be a positive integer"),
        (["--seed", "-1"], "seed = -1 on the command line: must be an integer from 0 to 2**32 - 1"),
        (["--seed", str(2**32)], f"seed = {2**32} on the command line: must be an integer from 0"),
        (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
        (["--layout", "rows"], "argument --layout: invalid choice: 'rows'"),
        (["--window-order", "newest"], "argument --window-order: invalid choice: 'newest'"),
        (["--learning-rate", "fast"], "argument --learning-rate: invalid float value: 'fast'"),
        (["--learning-rate", "0"], "learning_rate = 0.0 on the command line: must be a positive"),
        (["--learning-rate", "-0.001"], "learning_rate = -0.001 on the command line: must be a"),
        (["--learning-rate", "nan"], "learning_rate = nan on the command line: must be a positive"),
        (["--learning-rate", "inf"], "learning_rate = inf on the command line: must be a positive"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--input-len", "1"], "--input-len 1 leaves 0 training and 1 test points"),
        (["--input-len", "10", "--batch-size", "8"], "leaves 8 training and 0 test points"),
        (["--input-len", "20", "--tsteps", "5"], "leaves 16 training and 4 test points"),
        (
            ["--sweep-lahead", "1", "2"],
            "--sweep-tsteps and --sweep-lahead only make sense with --sweep",
        ),
        (
            ["--sweep", "--sweep-tsteps", "0"],
            "sweep_tsteps = [0] on the command line: must be a list of positive integers",
        ),
    ],
)
def test_bad_input_is_refused_with_status_2(args, message, tmp_path, capsys):
    out = tmp_path / "never-made"
    with pytest.raises(SystemExit) as stop:
        ls.main([*args, "--output-dir", str(out), "--no-show"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.startswith("lstm_stateful.py: error: ") and len(err.splitlines()) == 1  # no usage
    assert message in err and "Traceback" not in err
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(
    "args, refused",
    [
        # 5 test points: the stateful score skips tsteps - 1 = 3, and R² needs 2
        (["--input-len", "21", "--tsteps", "4"], False),
        (["--input-len", "20", "--tsteps", "4"], True),
        # contiguous: 8 test points in 4 streams of 2, each skipping its first tsteps - 1
        (
            ["--input-len", "24", "--batch-size", "4", "--layout", "contiguous", "--tsteps", "2"],
            False,
        ),
        (
            ["--input-len", "24", "--batch-size", "4", "--layout", "contiguous", "--tsteps", "3"],
            True,
        ),
        (["--input-len", "24", "--batch-size", "4", "--tsteps", "3"], False),  # one stream of 8
    ],
)
def test_the_size_check_refuses_exactly_what_leaves_too_few_points(args, refused, tmp_path):
    problem = ls.check(ls.make_parser().parse_args([*args, "--output-dir", str(tmp_path)]))
    assert (problem is not None) == refused, problem


def test_unwritable_output_dir_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    with pytest.raises(SystemExit) as stop:
        ls.main([*TINY, "--output-dir", str(blocker / "sub")])
    assert stop.value.code == 2
    assert "--output-dir" in capsys.readouterr().err
    assert blocker.read_text() == "keep me"


# ---------------------------------------------------------------- layouts
def test_contiguous_layout_matches_an_independent_computation():
    input_len, tsteps, lahead, batch_size, seed = 83, 3, 2, 4, 21
    (x_train, y_train), (x_test, y_test) = dataset(
        input_len, tsteps, lahead, batch_size, seed, "contiguous"
    )
    (wx_train, wy_train), (wx_test, wy_test) = expected_dataset(
        input_len, tsteps, lahead, batch_size, seed
    )
    for got, want in [
        (x_train, wx_train),
        (y_train, wy_train),
        (x_test, wx_test),
        (y_test, wy_test),
    ]:
        streams = len(want) // batch_size
        # row k * batch_size + i holds time step i * streams + k of the set
        order = [i * streams + k for k in range(streams) for i in range(batch_size)]
        np.testing.assert_allclose(got, want[order], rtol=0, atol=1e-16)


def test_contiguous_slot_continues_one_time_step_later():
    batch_size, lahead = 3, 2
    (x_train, _), (x_test, _) = dataset(64, 2, lahead, batch_size, 4, "contiguous")
    noise = list(np.random.RandomState(4).uniform(-0.1, 0.1, 64 + 1))
    for x in (x_train, x_test):
        batches = x[:, 0, 0].reshape(-1, batch_size)  # the newest input of each sample
        times = np.vectorize(noise.index)(
            batches
        )  # the noise is unique, so its value names its time
        np.testing.assert_array_equal(
            times[1:], times[:-1] + 1
        )  # slot i of batch k+1: one step later
    # ...while the original layout moves each slot batch_size steps on
    (x_train, _), _ = dataset(64, 2, lahead, batch_size, 4, "interleaved")
    times = np.vectorize(noise.index)(x_train[:, 0, 0].reshape(-1, batch_size))
    np.testing.assert_array_equal(times[1:], times[:-1] + batch_size)


def test_layout_round_trip_restores_time_order():
    a = np.arange(24.0).reshape(24, 1)
    for batch_size in (1, 2, 3, 4, 6):
        for layout in ("interleaved", "contiguous"):
            np.testing.assert_array_equal(
                ls.to_layout(ls.to_layout(a, batch_size, layout), batch_size, layout, undo=True), a
            )
    np.testing.assert_array_equal(ls.to_layout(a, 3, "contiguous")[:4, 0], [0, 8, 16, 1])


def test_points_without_history_are_left_out_per_stream():
    assert list(np.flatnonzero(ls.without_history(12, 3, 3, "contiguous"))) == [0, 1, 4, 5, 8, 9]
    assert list(np.flatnonzero(ls.without_history(12, 3, 3, "interleaved"))) == [0, 1]
    assert not ls.without_history(12, 1, 3, "contiguous").any()


# One real run serves the claims below: tsteps 4 and lahead 2 (a floor that needs the whole
# window), 3 streams of 6 test points (contiguous), with what the models were fed, the figures,
# the results and what it printed kept.
CONTIGUOUS = {"input_len": 90, "tsteps": 4, "lahead": 2, "batch_size": 3, "seed": 21}


@pytest.fixture(scope="module")
def contiguous_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("contiguous")
    kept = {"fit": [], "predict": [], "figures": {}, "results": [], "learning_rates": []}
    real = {name: getattr(keras.Model, name) for name in ("fit", "predict")}
    real_experiment, real_finish = ls.experiment, ls.finish_figures

    def recorded(name):
        def call(model, x, *args, **kwargs):
            y = args[0] if args else None  # fit(x, y, ...); predict(x, ...)
            kept[name].append((model.layers[0].stateful, x, y, kwargs.get("validation_data")))
            if name == "fit":
                rate = keras.ops.convert_to_numpy(model.optimizer.learning_rate)
                kept["learning_rates"].append(float(rate))
            return real[name](model, x, *args, **kwargs)

        return call

    def experiment(*args):
        kept["results"].append(real_experiment(*args))
        return kept["results"][-1]

    def finish_figures(figures, *args):
        kept["figures"].update(figures)
        return real_finish(figures, *args)

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in CONTIGUOUS.items()]
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as log:
        for name in ("fit", "predict"):
            patch.setattr(keras.Model, name, recorded(name))
        patch.setattr(ls, "experiment", experiment)
        patch.setattr(ls, "finish_figures", finish_figures)
        assert (
            ls.main(
                [*flags, "--layout=contiguous", "--window-order=oldest-first", "--epochs=1"]
                + ["--learning-rate=0.002", "--no-show", f"--output-dir={out}"]
            )
            == 0
        )
    kept["metrics"] = json.loads((out / "metrics.json").read_text())
    kept["printed"] = log.getvalue()
    (kept["results"],) = kept["results"]
    return kept


def contiguous_order(n, batch_size):
    """Row k * batch_size + i holds time step i * streams + k: slot i walks stream i."""
    streams = n // batch_size
    return [i * streams + k for k in range(streams) for i in range(batch_size)]


def test_each_layout_is_what_the_models_train_on_and_are_scored_on(contiguous_run):
    """What --layout contiguous and --window-order oldest-first give, fed to each model."""
    args = {k: CONTIGUOUS[k] for k in ("input_len", "tsteps", "lahead", "batch_size", "seed")}
    (x_train, y_train), (x_test, y_test) = expected_dataset(**args, window_order="oldest-first")
    train = contiguous_order(len(x_train), 3)
    test = contiguous_order(len(x_test), 3)
    fits, predicts = contiguous_run["fit"], contiguous_run["predict"]
    assert [stateful for stateful, *_ in fits] == [True, False]  # one epoch each, epochs=1
    for _, x, y, (x_val, y_val) in fits:
        np.testing.assert_allclose(x, x_train[train], rtol=0, atol=1e-16)
        np.testing.assert_allclose(y, y_train[train], rtol=0, atol=1e-16)
        np.testing.assert_allclose(x_val, x_test[test], rtol=0, atol=1e-16)
        np.testing.assert_allclose(y_val, y_test[test], rtol=0, atol=1e-16)
    for _, x, _, _ in predicts:
        np.testing.assert_allclose(x, x_test[test], rtol=0, atol=1e-16)
    # ...and the scores are computed back in time order
    np.testing.assert_allclose(contiguous_run["results"]["expected"], y_test[:, 0], atol=1e-16)


def test_the_learning_rate_reaches_the_optimizer(contiguous_run):
    """--learning-rate is the step size of the Adam that trains each model, and metrics.json
    says it; the block's 0.001 is the one Keras's "adam", the original's optimizer, has."""
    assert contiguous_run["learning_rates"] == [pytest.approx(0.002)] * 2  # both models' fit
    assert contiguous_run["metrics"]["params"]["learning_rate"] == 0.002
    assert contiguous_run["metrics"]["window_order"] == "oldest-first"
    adam = inspect.signature(keras.optimizers.Adam).parameters["learning_rate"].default
    assert ls.learning_rate == adam == 0.001


def test_the_floor_is_the_best_guess_from_the_window_and_the_skipped_points_the_originals(
    contiguous_run,
):
    """The floor: the error of averaging what the window shows (the inputs it cannot see average
    zero), on the very points scored. The points left out: the original leaves out the first
    tsteps - 1 of the stateful model's (no history after the reset), here of each stream, and
    none of the stateless model's."""
    args = {k: CONTIGUOUS[k] for k in ("input_len", "tsteps", "lahead", "batch_size", "seed")}
    _, (x_test, y_test) = expected_dataset(**args)
    best_guess = (x_test[:, 0, 0] + x_test[:, 1, 0]) / 4  # lahead 2 of tsteps 4 inputs
    first_of_each_stream = np.isin(np.arange(18) % 6, [0, 1, 2])  # 3 streams of 6
    results, metrics = contiguous_run["results"], contiguous_run["metrics"]
    for name, skipped in (("stateful", first_of_each_stream), ("stateless", np.zeros(18, bool))):
        np.testing.assert_array_equal(np.isnan(results[name]["residual"]), skipped)
        floor = np.mean((y_test[~skipped, 0] - best_guess[~skipped]) ** 2)
        assert metrics[name]["floor_mse"] == pytest.approx(floor, rel=1e-12)
        residual = results[name]["residual"][~skipped]
        assert metrics[name]["test_mse"] == pytest.approx(np.mean(residual**2), rel=1e-12)


def test_the_stream_continues_slot_0_and_says_what_the_state_is(contiguous_run):
    """The batch-1 stream starts from a reset state at the first test point, as slot 0 of the
    batch-3 model does: for slot 0's stream (the first 6 points) they predict the same; the
    stream then runs on with its state, where slots 1 and 2 start again from zeros."""
    results, printed = contiguous_run["results"], contiguous_run["printed"]
    stream, stateful = results["stream"]["residual"], results["stateful"]["residual"]
    np.testing.assert_array_equal(np.isnan(stream), np.arange(18) < 3)  # one stream from reset
    np.testing.assert_allclose(stream[3:6], stateful[3:6], rtol=1e-5, atol=1e-9)
    assert not np.allclose(stream[9:12], stateful[9:12], rtol=1e-3)
    largest = results["stream"]["largest_difference"]  # over every point, the skipped ones too
    assert largest >= np.nanmax(np.abs(stream - stateful)) > 0
    assert "h and c, each of shape (3, 20), a row per batch slot." in printed
    assert "after reset_state(), h and c are all zeros: True" in printed
    metrics = contiguous_run["metrics"]
    assert metrics["stream"]["test_mse"] == pytest.approx(np.nanmean(stream**2), rel=1e-12)
    stream_line = f"streamed   test MSE {metrics['stream']['test_mse']:.2e}: "
    assert stream_line in printed and "at batch size 1, one test sample per call" in printed


def test_each_figure_draws_what_its_titles_and_legend_say(contiguous_run):
    """input.png: the first ten inputs and expected outputs; results.png: the expected output,
    then each model's residual, with this test set's stateless floor as a band; loss.png: each
    model's losses per epoch and the expected floor. Read from the figures' own data."""
    figures, metrics, results = (contiguous_run[k] for k in ("figures", "metrics", "results"))
    noise = np.random.RandomState(21).uniform(-0.1, 0.1, 90 + 3)  # to_drop = tsteps - 1
    ax = figures["input.png"].axes[0]
    assert ax.get_title() == "Input"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Input", "Expected output"]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), noise[3:13])
    averages = [noise[t - 3 : t + 1].mean() for t in range(3, 13)]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), averages, rtol=0, atol=1e-16)

    expected_ax, stateful_ax, stateless_ax = figures["results.png"].axes
    assert expected_ax.get_title() == "Expected"
    np.testing.assert_array_equal(expected_ax.lines[0].get_ydata(), results["expected"])
    rms = np.sqrt(metrics["stateless"]["floor_mse"])  # this test set's floor, all its points
    for ax, name in ((stateful_ax, "stateful"), (stateless_ax, "stateless")):
        title = (
            f"{name.capitalize()}: Expected - Predicted (test MSE {metrics[name]['test_mse']:.2e})"
        )
        assert ax.get_title() == title
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), results[name]["residual"])
        band = sorted(line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--")
        assert band == pytest.approx([-rms, rms], rel=1e-12)
    (label,) = [t.get_text() for t in stateful_ax.get_legend().get_texts()]
    assert label == f"stateless floor (this test set), RMS ±{rms:.4f}"

    ax = figures["loss.png"].axes[0]
    lines = {line.get_label(): line.get_ydata() for line in ax.lines}
    for name in ("stateful", "stateless"):
        assert list(lines[f"{name} training loss"]) == metrics[name]["loss"]
        assert list(lines[f"{name} validation loss"]) == metrics[name]["val_loss"]
    floor = metrics["stateless_floor_mse"]
    assert list(lines[f"stateless floor {floor:.2e} (expected)"]) == [floor, floor]
    assert floor == pytest.approx(2 * 0.01 / (3 * 16))  # 2 unseen inputs of 4, each var 0.01/3


def test_interleaved_batches_print_what_the_state_carries(tmp_path, capsys):
    ls.main(
        [
            "--input-len",
            "40",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--no-show",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert "the state holds the input from 2 steps back (see --layout)" in capsys.readouterr().out
    ls.print_layout_note(1, "interleaved")
    ls.print_layout_note(4, "contiguous")
    assert capsys.readouterr().out == ""  # the state carries the step before


def test_contiguous_needs_streams_as_long_as_tsteps(capsys):
    with pytest.raises(SystemExit) as stop:
        ls.main(
            ["--input-len", "20", "--batch-size", "4", "--tsteps", "3", "--layout", "contiguous"]
        )
    assert stop.value.code == 2
    assert "leaves 16 training and 4 test points, 1 per stream" in capsys.readouterr().err


# ---------------------------------------------------------------- figures and sweep
def test_sweep_writes_one_cell_per_pair(tmp_path, capsys):
    argv = ["--sweep", "--sweep-tsteps", "2", "1", "--sweep-lahead", "2", "--window-order"]
    argv += ["oldest-first"]
    argv += ["--input-len", "40", "--epochs", "1", "--no-show", "--output-dir", str(tmp_path)]
    assert ls.main(argv) == 0
    cells = json.loads((tmp_path / "sweep.json").read_text())["cells"]
    pairs = [(c["params"]["tsteps"], c["params"]["lahead"]) for c in cells]
    assert pairs == [(2, 2), (1, 2)]  # in the order given
    for cell, (tsteps, lahead) in zip(cells, pairs, strict=True):
        assert cell["backend"] == keras.backend.backend() and cell["layout"] == "interleaved"
        assert cell["window_order"] == "oldest-first"
        assert cell["params"] == {
            "input_len": 40,
            "tsteps": tsteps,
            "lahead": lahead,
            "batch_size": 1,
            "epochs": 1,
            "seed": 1986,
            "learning_rate": 0.001,
        }
        assert set(cell["stateful"]) == set(cell["stateless"]) == METRIC_KEYS
        assert cell["stateless_floor_mse"] == ls.stateless_floor_mse(tsteps, lahead)
    # a cell holds what a run of its own would
    args = parameters(input_len=40, epochs=1, tsteps=1, lahead=2, window_order="oldest-first")
    alone = ls.run_metrics(
        args, ls.experiment(args, *ls.build_series(40, 1, 2, 1986, "oldest-first"))
    )
    assert_same_numbers(cells[1], json.loads(json.dumps(alone)))
    assert matplotlib_image_shape(tmp_path / "sweep.png")[1] >= 800
    printed = capsys.readouterr().out
    assert "[2/2] tsteps=1 lahead=2: stateful R² " in printed and "s left" in printed
    assert "[1/2] tsteps=2 lahead=2: stateful R² " in printed and ", stateless R² " in printed
    assert not list(tmp_path.glob("*.partial"))


def assert_same_numbers(run, other):
    """Two runs' metrics are equal, bit for bit, but for the seconds each model took."""
    run, other = json.loads(json.dumps(run)), json.loads(json.dumps(other))  # copies
    for name in ("stateful", "stateless"):
        for metrics in (run, other):
            assert metrics[name].pop("seconds") > 0
    assert run == other


def matplotlib_image_shape(path):
    import matplotlib.image

    return matplotlib.image.imread(path).shape


def test_the_sweep_figure_is_green_where_the_claim_holds_and_red_where_not():
    def cell(tsteps, lahead, stateful, stateless):
        model = {"r2": 0.9, "recovered": None if lahead >= tsteps else 0.7}
        return {
            "params": {"tsteps": tsteps, "lahead": lahead, "learning_rate": 0.0003},
            "window_order": "oldest-first",
            "stateful": {**model, "converged": stateful},
            "stateless": {**model, "converged": stateless},
        }

    cells = [cell(1, 1, True, True), cell(2, 1, True, False), cell(2, 2, True, False)]
    fig = ls.plot_sweep(cells, [1, 2], [1, 2])  # (1, 2) not done: left blank
    grid = fig.axes[0].images[0].get_array()
    np.testing.assert_array_equal(grid.filled(np.nan), [[1, np.nan], [1, 0]])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[1] == "stateful: 70.0% recovered\nstateless: 70.0% recovered"
    assert texts[2] == "stateful: R² 0.900\nstateless: R² 0.900"
    assert fig.axes[0].get_title().endswith("(oldest-first windows, learning rate 0.0003)")


def test_interrupted_sweep_keeps_the_cells_done(tmp_path, monkeypatch, capsys):
    real_experiment = ls.experiment
    calls = []

    def experiment_then_ctrl_c(args, *data):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_experiment(args, *data)

    monkeypatch.setattr(ls, "experiment", experiment_then_ctrl_c)
    argv = ["--sweep", "--sweep-tsteps", "1", "2", "--sweep-lahead", "1"]
    argv += ["--input-len", "40", "--epochs", "1", "--no-show", "--output-dir", str(tmp_path)]
    assert ls.main(argv) == 130  # as a shell reports Ctrl-C
    cells = json.loads((tmp_path / "sweep.json").read_text())["cells"]  # whole, not half-written
    assert [(c["params"]["tsteps"], c["params"]["lahead"]) for c in cells] == [(1, 1)]
    printed = capsys.readouterr().out
    assert f"Interrupted: sweep.json, sweep.png written to {tmp_path} by this run" in printed
    assert (tmp_path / "sweep.png").exists()


def test_write_json_never_leaves_a_half_written_file(tmp_path):
    path = str(tmp_path / "m.json")
    ls.write_json(path, {"cells": [1]})
    with pytest.raises(TypeError):
        ls.write_json(path, {"cells": [1, object()]})  # fails halfway through dumping
    assert json.loads(Path(path).read_text()) == {"cells": [1]}


def test_results_figure_puts_both_residuals_on_one_scale_with_the_floor():
    rng = np.random.RandomState(0)
    results = {"expected": rng.uniform(-0.1, 0.1, 50)}
    for name, size in (("stateful", 0.001), ("stateless", 0.05)):
        results[name] = {
            "residual": rng.uniform(-size, size, 50),
            "test_mse": size**2,
            "loss": [1e-3, 1e-4],
            "val_loss": [1e-3, 2e-4],
        }
    fig = ls.plot_results(results, floor_mse=8e-4)
    _, stateful_ax, stateless_ax = fig.axes
    assert stateful_ax.get_ylim() == stateless_ax.get_ylim()  # the small residual looks small
    assert "1.00e-06" in stateful_ax.get_title() and "2.50e-03" in stateless_ax.get_title()
    dashed = [
        line.get_ydata()[0] for line in stateless_ax.get_lines() if line.get_linestyle() == "--"
    ]
    assert sorted(dashed) == pytest.approx([-np.sqrt(8e-4), np.sqrt(8e-4)])
    loss = ls.plot_loss(results, floor_mse=8e-4).axes[0]
    assert loss.get_yscale() == "log"
    assert [line.get_ydata()[0] for line in loss.get_lines() if line.get_linestyle() == "--"] == [
        8e-4
    ]


@pytest.mark.parametrize(
    "tsteps, lahead", [(2, 1), (4, 1), (4, 3), (6, 5), (8, 7), (8, 1), (3, 3), (2, 5)]
)
def test_a_model_at_its_floor_never_converges(tsteps, lahead):
    """The verdict, for any tsteps and lahead: a model that predicts exactly what a model without
    state can know sits at the floor and never converges (where lahead / tsteps >= 0.8 its R² is
    above 0.8, which the old rule took for converged); a model that also recovers most of what
    the window cannot show converges; with lahead >= tsteps there is no floor, and R² decides."""
    _, (x_test, y_test) = expected_dataset(1000, tsteps, lahead, 1, 11)
    expected, window = y_test[:, 0], x_test[:, :, 0]
    best_without_state = expected if lahead >= tsteps else window.sum(1) / tsteps
    none_skipped = np.zeros(len(expected), dtype=bool)
    at_floor = ls.score(expected, best_without_state, best_without_state, none_skipped)
    if lahead >= tsteps:
        assert at_floor["recovered"] is None and at_floor["converged"]  # it is the target itself
        noisy = expected + np.random.RandomState(0).normal(0, 0.6 * expected.std(), len(expected))
        assert not ls.score(expected, noisy, best_without_state, none_skipped)["converged"]
        return
    assert at_floor["recovered"] == 0 and not at_floor["converged"]
    if lahead / tsteps >= 0.8:
        assert at_floor["r2"] > 0.8  # what the old rule, R² >= 0.8, called converged
    unseen = expected - best_without_state  # what the window cannot show
    for recovered, verdict in ((0.45, False), (0.55, True), (1.0, True)):
        model = expected - np.sqrt(1 - recovered) * unseen  # MSE: (1 - recovered) x the floor
        m = ls.score(expected, model, best_without_state, none_skipped)
        assert m["recovered"] == pytest.approx(recovered) and m["converged"] == verdict


@pytest.mark.parametrize(
    "tsteps, lahead, stateful, stateless, agrees",
    [
        (2, 1, True, False, True),
        (2, 1, True, True, False),
        (2, 1, False, False, False),
        (2, 2, True, True, True),
        (2, 2, True, False, False),
        (3, 4, False, True, False),
    ],
)
def test_claim_check(tsteps, lahead, stateful, stateless, agrees):
    metrics = {
        "params": {"tsteps": tsteps, "lahead": lahead},
        "stateful": {"converged": stateful},
        "stateless": {"converged": stateless},
    }
    claim = (
        "both models converge when lahead >= tsteps"
        if lahead >= tsteps
        else "only the stateful model converges when lahead < tsteps"
    )
    assert ls.claim_check(metrics) == (agrees, claim)


@POSIX
def test_ctrl_c_on_the_command_line_gives_one_line_130_and_keeps_what_was_written(tmp_path):
    """Ctrl-C in a sweep, after its first cell: one line naming what this run wrote (whole), the
    status a shell gives a run it stopped, and an earlier run's file left alone and not named."""
    import signal

    earlier = tmp_path / "metrics.json"
    earlier.write_text("{}")
    os.utime(earlier, (0, 0))
    command = [
        sys.executable,
        str(ROOT / "lstm_stateful.py"),
        "--sweep",
        "--sweep-tsteps",
        "1",
        "2",
    ]
    command += ["--sweep-lahead", "1", "2", "--input-len", "40", "--epochs", "1", "--no-show"]
    process = subprocess.Popen(
        [*command, "--output-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a runner started in the background may ignore SIGINT, and its children would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in process.stdout:
        if line.startswith("[1/4]"):  # one cell done and saved: now press Ctrl-C
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert out.strip().splitlines()[-1] == (
        f"Interrupted: sweep.json, sweep.png written to {tmp_path} by this run"
    )
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    cells = json.loads((tmp_path / "sweep.json").read_text())["cells"]
    assert 1 <= len(cells) < 4
    assert earlier.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "sweep.json", "sweep.png"]


# ---------------------------------------------------------------- backends
# One process loads one Keras backend, so each backend runs in a process of its own. A backend
# that is not installed is skipped, unless LSTM_STATEFUL_REQUIRE_ALL=1 (CI sets it) makes that
# a failure.
OTHER_BACKENDS = [b for b in BACKENDS if b != keras.backend.backend()]


def backend_env(backend):
    return {**os.environ, "KERAS_BACKEND": backend}


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_state_tests_pass_on_every_other_backend(backend):
    require(backend)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "test_state.py"),
        ],
        capture_output=True,
        text=True,
        env=backend_env(backend),
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert (
        " passed" in done.stdout.splitlines()[-1] and "skipped" not in done.stdout.splitlines()[-1]
    )


def command_line(*args, before="pass", after="pass"):
    """The command that runs lstm_stateful.py as `python lstm_stateful.py ARGS` does, in a process
    that runs the Python line `before` first and the line `after` last (even after an error)."""
    script = (
        f"import runpy, sys\n{before}\n"
        "sys.argv = sys.argv[1:]  # as if run as `python lstm_stateful.py ...`\n"
        f"try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nfinally:\n    {after}\n"
    )
    return [sys.executable, "-c", script, str(ROOT / "lstm_stateful.py"), *args]


def run_as_command_line(*args, before="pass", after="pass", **kwargs):
    command = command_line(*args, before=before, after=after)
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


# A window of 7 steps: TensorFlow's own runtime would sum its gradients in an order that changes
# from run to run (the script has XLA compile it: speed_settings).
WINDOW_OF_7 = ["--input-len", "250", "--epochs", "2", "--tsteps", "8", "--lahead", "7"]


@pytest.fixture(scope="module")
def command_line_runs(tmp_path_factory):
    """runs(backend): `python lstm_stateful.py WINDOW_OF_7`, twice at once, each in a new process
    in a folder of its own, on that backend: the first as the command line does (runpy), the
    second under `python -m cProfile`; run once per backend for the tests that read it."""
    done = {}

    def runs(backend):
        if backend not in done:
            folder = tmp_path_factory.mktemp(backend)
            first = command_line(
                *WINDOW_OF_7,
                *["--no-show", "--output-dir", str(folder / "first")],
                after="print('LOADED', sorted(m for m in ('tensorflow', 'jax', 'torch') "
                "if sys.modules.get(m)))",
            )
            second = [sys.executable, "-m", "cProfile", "-o", str(folder / "second" / "profile")]
            second += [str(ROOT / "lstm_stateful.py"), *WINDOW_OF_7, "--no-show", "--output-dir"]
            started = [
                subprocess.Popen(
                    command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=folder,
                    env=backend_env(backend),
                )
                for command in (first, [*second, str(folder / "second")])
            ]
            outputs = [(*process.communicate(), process.returncode) for process in started]
            done[backend] = folder, outputs
        return done[backend]

    return runs


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_command_line_runs_on_each_backend_and_repeats_exactly(backend, command_line_runs):
    """`python lstm_stateful.py`, twice at once, each in a new process, once of them under
    `python -m cProfile`: the same seed and a window of 7 steps give the same numbers, bit for
    bit (see assert_same_numbers); the outputs go to --output-dir, nothing into the working
    directory; TensorFlow neither logs (see tensorflow_log_lines) nor loads where another
    backend runs."""
    require(backend)
    folder, outputs = command_line_runs(backend)
    runs = []
    for (stdout, stderr, returncode), name in zip(outputs, ("first", "second"), strict=True):
        assert returncode == 0, stderr[-3000:]
        if name == "first":
            loaded = stdout.splitlines()[-1]
            assert backend in loaded and ("tensorflow" in loaded) == (backend == "tensorflow")
        else:  # the profile of the run, with the script's own functions in it
            functions = pstats.Stats(str(folder / name / "profile")).stats
            assert ("lstm_stateful.py", "experiment") in {
                (Path(f).name, n) for f, _, n in functions
            }
        assert f"on {backend}; seed 1986" in stdout
        assert "STATELESS LSTM WILL NOT CONVERGE" in stdout
        assert tensorflow_log_lines(stderr) == [] and "Traceback" not in stderr
        # progress bars count to their real totals: 200 training steps an epoch (80% of 250), 50
        # to predict
        counts = [(int(n), int(total)) for n, total in re.findall(r"(\d+)/(\d+)(?!\d)", stdout)]
        assert (200, 200) in counts and (50, 50) in counts
        assert all(n <= total for n, total in counts), counts
        for png in ("input.png", "results.png", "loss.png"):
            assert (folder / name / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        runs.append(json.loads((folder / name / "metrics.json").read_text()))
    assert sorted(p.name for p in folder.iterdir()) == ["first", "second"]
    assert runs[0]["backend"] == backend and len(runs[0]["stateful"]["loss"]) == 2
    assert runs[0]["params"]["lahead"] == 7
    assert_same_numbers(*runs)


def tensorflow_log_lines(stderr):
    """TensorFlow's C++ log lines (`E0000 00:00:...`, `I0000 ...`) among what a run wrote to its
    stderr. The script holds them back (TF_CPP_MIN_LOG_LEVEL 3 where the user set none): below it
    a machine with CUDA's libraries and no GPU logs `failed call to cuInit`, and XLA logs what it
    compiled. TensorFlow 2.16 still logs 3 lines of XLA's, at any level."""
    lines = [line for line in stderr.splitlines() if re.match(r"[IWEF]\d{4} \d\d:\d\d:", line)]
    if importlib.util.find_spec("tensorflow") and metadata.version("tensorflow") < "2.17":
        info = [line for line in lines if line.startswith("I")]
        lines = [line for line in lines if not line.startswith("I")] + info[3:]
    return lines


def test_tensorflows_log_level_is_the_users_and_else_3():
    """The script quiets TensorFlow only where the user has not chosen a level: it sets
    TF_CPP_MIN_LOG_LEVEL to 3 where it is unset (as in this process: conftest.py unsets it),
    before Keras loads, and keeps the user's."""
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    # a backend Keras cannot load: it refuses at once, after the script has set the level
    env = {**os.environ, "KERAS_BACKEND": "none", "TF_CPP_MIN_LOG_LEVEL": "2"}
    code = "import os\ntry:\n    import lstm_stateful\nexcept ValueError:\n    pass\n"
    code += "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.stdout == "2\n", done.stderr[-2000:]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "tensorflow"])
def test_every_backend_gives_tensorflows_numbers(backend, command_line_runs):
    """The initial weights come from the seed alone (drawn by numpy), so every backend trains
    from the same numbers to the same numbers, but for rounding: each model's test MSE within 1%
    of TensorFlow's, the share it recovered within 0.1 percentage point, the same verdicts. (A
    backend that dropped the state, as Keras 3's own LSTM does on JAX, would stand out at once.)"""
    require("tensorflow")
    require(backend)
    tensorflow, other = (
        json.loads((command_line_runs(b)[0] / "first" / "metrics.json").read_text())
        for b in ("tensorflow", backend)
    )
    for name in ("stateful", "stateless", "stream"):
        assert other[name]["test_mse"] == pytest.approx(tensorflow[name]["test_mse"], rel=0.01)
        assert other[name]["recovered"] == pytest.approx(tensorflow[name]["recovered"], abs=1e-3)
        assert other[name]["converged"] == tensorflow[name]["converged"]
    for name in ("stateful", "stateless"):
        for key in ("loss", "val_loss"):
            assert other[name][key] == pytest.approx(tensorflow[name][key], rel=0.01)


@pytest.mark.parametrize("tool", [["trace", "--count"], ["pdb"]])
def test_pythons_tools_run_it_with_its_flags_and_checks(tool, tmp_path):
    """`python -m trace` and `python -m pdb` run the script with its flags, and check them as
    `python lstm_stateful.py` does (trace, like cProfile, in a namespace that is not the module
    in sys.modules; a whole run under cProfile: the repeat test above)."""
    trace = ["--coverdir", str(tmp_path.parent / "cover")]  # counts of this file's lines only:
    trace += ["--ignore-dir", sys.prefix, "--ignore-dir", sys.base_prefix]  # much faster
    trace = trace if tool[0] == "trace" else []
    done = subprocess.run(
        [sys.executable, "-m", *tool, *trace, str(ROOT / "lstm_stateful.py"), "--epochs", "0"],
        input="continue\nquit\n",  # what pdb reads: run the script, then quit when it ends
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    error = "lstm_stateful.py: error: epochs = 0 on the command line: must be a positive integer"
    assert done.stderr.splitlines() == [error]
    if tool == ["pdb"]:
        assert "The program exited via sys.exit(). Exit status: 2" in done.stdout
    # (the status: trace ends with its own 0 whatever the program's was)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_a_framework_that_fails_to_load_says_why_then_the_hint(tmp_path):
    """What the framework printed while it failed to load is shown (it was held back), then one
    line with the hint."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import sys\n"
        "sys.stderr.write('A module that was compiled using NumPy 1.x cannot be run in\\n"
        "NumPy 2.4.6 as it may crash.\\n')\n"
        "raise ImportError('numpy.core.multiarray failed to import')\n"
    )
    env = {**backend_env("tensorflow"), "PYTHONPATH": str(tmp_path / "fake")}
    done = run_as_command_line(*TINY, "--output-dir", str(tmp_path / "out"), env=env)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines[:2] == [
        "A module that was compiled using NumPy 1.x cannot be run in",
        "NumPy 2.4.6 as it may crash.",
    ]
    assert lines[-1] == (
        "lstm_stateful.py: error: Keras cannot load its backend: "
        "numpy.core.multiarray failed to import; install it (see the README) or set KERAS_BACKEND "
        "to tensorflow, jax or torch"
    )
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="no display (CI gives one with Xvfb)")
def test_on_a_desktop_the_figures_open_in_windows_at_the_end(tmp_path):
    """A real window: matplotlib's TkAgg on the display. A timer closes the windows a moment
    after they open, as a person would, so that plt.show() returns."""
    require("tkinter")  # in CI (LSTM_STATEFUL_REQUIRE_ALL=1) a missing Tk fails, not skips
    close_soon = (
        "import matplotlib.pyplot as plt\n"
        "real_show = plt.show\n"
        "def show(*args, **kwargs):\n"
        "    timer = plt.gcf().canvas.new_timer(interval=500)\n"
        "    timer.add_callback(plt.close, 'all')\n"
        "    timer.start()\n"
        "    print('SHOWING', plt.get_backend().lower(), plt.get_fignums())\n"
        "    real_show(*args, **kwargs)\n"
        "    print('CLOSED', plt.get_fignums())\n"
        "plt.show = show"
    )
    done = run_as_command_line(
        *["--input-len", "60", "--epochs", "1", "--show", "--output-dir", str(tmp_path)],
        before=close_soon,
        env={**os.environ, "MPLBACKEND": "TkAgg"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SHOWING tkagg [1, 2, 3]" in done.stdout and "CLOSED []" in done.stdout
    assert (tmp_path / "results.png").exists()


@pytest.mark.parametrize(
    "backend, message",
    [
        ("no-such-backend", "Keras cannot load its backend: "),
        # Keras's numpy backend loads only where JAX is installed; either way, one line and status 2
        (
            "numpy",
            "Keras's numpy backend cannot train: set KERAS_BACKEND=tensorflow, jax or torch"
            if importlib.util.find_spec("jax")
            else "Keras cannot load its backend: ",
        ),
    ],
)
def test_a_backend_that_cannot_run_gets_one_line_and_status_2(backend, message, tmp_path):
    done = run_as_command_line(
        *TINY, "--output-dir", str(tmp_path / "out"), env=backend_env(backend)
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"lstm_stateful.py: error: {message}")
    assert done.stderr.rstrip().endswith("tensorflow, jax or torch")  # the names that can train
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stdout == "" and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the editable block
@pytest.mark.parametrize(
    "name, value, message",
    [
        ("tsteps", 0, "tsteps = 0 in the editable block: must be a positive integer"),
        ("lahead", -1, "lahead = -1 in the editable block: must be a positive integer"),
        ("batch_size", 2.5, "batch_size = 2.5 in the editable block: must be a positive integer"),
        ("epochs", 0.5, "epochs = 0.5 in the editable block: must be a positive integer"),
        ("input_len", True, "input_len = True in the editable block: must be a positive integer"),
        ("seed", -1, "seed = -1 in the editable block: must be an integer from 0 to 2**32 - 1"),
        (
            "layout",
            "contigous",
            "layout = 'contigous' in the editable block: must be one of interleaved, contiguous",
        ),
        ("show", "no", "show = 'no' in the editable block: must be True or False"),
        (
            "window_order",
            "oldest",
            "window_order = 'oldest' in the editable block: must be one of newest-first, "
            "oldest-first",
        ),
        ("learning_rate", 0, "learning_rate = 0 in the editable block: must be a positive number"),
        (
            "learning_rate",
            None,
            "learning_rate = None in the editable block: must be a positive number",
        ),
        (
            "learning_rate",
            True,
            "learning_rate = True in the editable block: must be a positive number",
        ),
        ("fast", 1, "fast = 1 in the editable block: must be True or False"),
        ("output_dir", None, "output_dir = None in the editable block: must be a folder name"),
        ("output_dir", "", "output_dir = '' in the editable block: must be a folder name"),
        (
            "sweep_tsteps",
            [],
            "sweep_tsteps = [] in the editable block: must be a list of positive integers",
        ),
        (
            "sweep_lahead",
            [1, 0],
            "sweep_lahead = [1, 0] in the editable block: must be a list of positive integers",
        ),
    ],
)
def test_bad_values_in_the_editable_block_are_refused_like_flags(
    name, value, message, monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(ls, name, value)
    out = tmp_path / "never-made"
    with pytest.raises(SystemExit) as stop:
        ls.main(["--output-dir", str(out)] if name != "output_dir" else [])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == f"lstm_stateful.py: error: {message}\n"
    assert not out.exists()


def test_a_flag_overrides_a_bad_value_of_the_block_and_a_type_it_cannot_check_is_refused(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(ls, "epochs", 0)
    args = ls.make_parser().parse_args(["--epochs", "1", "--output-dir", str(tmp_path)])
    assert ls.check(args) is None
    assert ls.check(ls.make_parser().parse_args(["--output-dir", str(tmp_path)])).startswith(
        "epochs = 0 in the editable block"
    )
    monkeypatch.setitem(ls.PARAMETERS, "tsteps", complex)  # as if it read `tsteps: complex = 2j`
    monkeypatch.setattr(ls, "tsteps", 2j)
    with pytest.raises(SystemExit) as stop:
        ls.main(["--output-dir", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "lstm_stateful.py: error: tsteps = 2j in the editable block: the type complex is not one "
        "this script checks; keep the line's type\n"
    )


def test_every_value_of_the_block_is_a_flag_with_its_comment_as_help():
    values = {
        name for name, value in vars(ls).items() if name.islower() and not name.startswith("_")
    }
    values -= {
        name
        for name in values
        if callable(getattr(ls, name)) or inspect.ismodule(getattr(ls, name))
    }
    values -= {"backend_registry"}  # imported from matplotlib
    assert values == set(ls.PARAMETERS)  # every module-level value is a parameter of the block
    help_text = " ".join(ls.make_parser().format_help().split())  # argparse wraps the lines
    source = (ROOT / "lstm_stateful.py").read_text()
    for name, kind in ls.PARAMETERS.items():
        comment = re.search(rf"^{name}: [^=]+= .+  # (.+)$", source, re.MULTILINE).group(1)
        default = f"(default: {getattr(ls, name)})"
        flag = "--" + name.replace("_", "-")
        assert re.search(rf"{flag}\b.* {re.escape(comment)} {re.escape(default)}", help_text), name
        if kind is bool:
            assert f"--no-{flag[2:]}" in help_text


def edited_script(tmp_path, *edits):
    """A copy of lstm_stateful.py with lines of its editable block replaced, as a user would."""
    text = (ROOT / "lstm_stateful.py").read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "lstm_stateful.py"
    path.write_text(text)
    return path


def test_an_edited_block_is_checked_and_used_on_the_command_line(tmp_path, monkeypatch):
    """What a learner does: edit the block and run `python lstm_stateful.py`: the values are the
    run's, and --help shows them. (Bad values: the tests above.)"""
    good = edited_script(
        tmp_path,
        ("\ninput_len: int = 1000 ", "\ninput_len: int = 50 "),
        ("\nepochs: int = 10 ", "\nepochs: int = 1 "),
        (
            "\nlahead: int = 1  # input window the LSTM sees for each output point\n",
            "\nlahead: int = 2  # how far back the LSTM looks\n",
        ),
        ('\noutput_dir: str = "outputs"', '\noutput_dir: str = "edited"'),
        ("\nshow: bool = True ", "\nshow: bool = False "),
    )
    done = subprocess.run([sys.executable, str(good)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "STATELESS LSTM WILL ALSO CONVERGE" in done.stdout
    assert "converged: R² >= 0.8 (no stateless floor" in done.stdout
    metrics = json.loads((tmp_path / "edited" / "metrics.json").read_text())
    assert metrics["params"] == {
        "input_len": 50,
        "tsteps": 2,
        "lahead": 2,
        "batch_size": 1,
        "epochs": 1,
        "seed": 1986,
        "learning_rate": 0.001,
    }
    assert metrics["stateless_floor_mse"] == 0.0
    # --help follows the edited file: its values are the defaults, its comments the help (read
    # from the file that runs)
    monkeypatch.setattr(ls, "__file__", str(good))
    for name, value in (("input_len", 50), ("lahead", 2), ("epochs", 1), ("show", False)):
        monkeypatch.setattr(ls, name, value)
    help_text = " ".join(ls.make_parser().format_help().split())
    assert "--epochs EPOCHS training epochs of each model (default: 1)" in help_text
    assert "--lahead LAHEAD how far back the LSTM looks (default: 2)" in help_text
    assert (
        "--show, --no-show open the figures at the end, where a display exists (default: False)"
        in help_text
    )


# ---------------------------------------------------------------- memory
@MEMORY_FIGURE
@pytest.mark.parametrize(
    "args, need",
    [
        # six float64 copies of the (input_len + lahead - 1) x lahead window view, and 640 bytes
        # of LSTM activations per sample and window step
        (["--lahead", "100000"], 6 * (1000 + 99999) * 100000 * 8 + 1 * 100000 * 640),
        (
            ["--input-len", "5000000", "--batch-size", "1000000", "--lahead", "100"],
            6 * (5000000 + 99) * 100 * 8 + 1000000 * 100 * 640,
        ),
    ],
)
def test_work_too_large_for_memory_is_refused_before_it_starts(args, need, tmp_path, capsys):
    out = tmp_path / "never-made"
    with pytest.raises(SystemExit) as stop:
        ls.main([*args, "--output-dir", str(out)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"lstm_stateful.py: error: --input-len, --lahead and --batch-size need about "
        f"{need / 2**30:.1f} GiB, and "
    )
    assert err.endswith(" GiB is available: lower them\n") and not out.exists()


def test_the_memory_check_refuses_exactly_what_does_not_fit(monkeypatch, tmp_path, capsys):
    need = 6 * 60 * 1 * 8 + 1 * 1 * 640  # TINY: input_len 60, lahead 1, batch_size 1
    monkeypatch.setattr(ls, "available_memory", lambda: need - 1)
    with pytest.raises(SystemExit):
        ls.main([*TINY, "--output-dir", str(tmp_path / "a")])
    assert "need about" in capsys.readouterr().err
    monkeypatch.setattr(ls, "available_memory", lambda: need)
    assert (
        ls.check(ls.make_parser().parse_args([*TINY, "--output-dir", str(tmp_path / "b")])) is None
    )


@MEMORY_FIGURE
def test_available_memory_is_a_plausible_size():
    assert 2**27 < ls.available_memory() < 2**50


def test_where_the_system_does_not_say_its_memory_numpy_refuses_with_one_line(
    monkeypatch, tmp_path, capsys
):
    """As on Windows: no os.sysconf and no /proc/meminfo. A run still runs; one that does not fit
    is stopped by numpy's MemoryError (an allocation larger than the machine's memory, which the
    system refuses) with one line and status 2, not a traceback."""
    monkeypatch.delattr(os, "sysconf", raising=False)
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    assert ls.available_memory() is None
    assert (
        ls.check(ls.make_parser().parse_args([*TINY, "--output-dir", str(tmp_path / "a")])) is None
    )
    with pytest.raises(SystemExit) as stop:
        ls.main(["--lahead", "100000", "--no-show", "--output-dir", str(tmp_path / "b")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == "lstm_stateful.py: error: out of memory; lower --input-len or --lahead\n"


# ---------------------------------------------------------------- Ctrl-C
def test_ctrl_c_while_a_file_is_written_leaves_no_partial_file(tmp_path):
    path = tmp_path / "results.png"
    path.write_bytes(b"old")

    def write_then_ctrl_c(partial):
        Path(partial).write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ls.write_whole(str(path), write_then_ctrl_c)
    assert [p.name for p in tmp_path.iterdir()] == ["results.png"] and path.read_bytes() == b"old"


def test_ctrl_c_in_process_names_what_was_written(tmp_path, monkeypatch, capsys):
    def figures_then_ctrl_c(figures, output_dir, show):
        ls.write_whole(os.path.join(output_dir, "input.png"), lambda p: Path(p).write_bytes(b"png"))
        raise KeyboardInterrupt

    monkeypatch.setattr(ls, "finish_figures", figures_then_ctrl_c)
    assert ls.main([*TINY, "--output-dir", str(tmp_path)]) == 130
    assert (
        f"Interrupted: input.png, metrics.json written to {tmp_path} by this run"
        in capsys.readouterr().out
    )


def test_ctrl_c_while_keras_loads_gives_one_line_and_status_130(tmp_path):
    # Ctrl-C at the moment `import keras` runs, simulated by an import hook that raises it
    hook = (
        "class CtrlC:\n"
        "    def find_spec(self, name, *args):\n"
        "        if name == 'keras':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())"
    )
    done = run_as_command_line("--output-dir", str(tmp_path / "out"), before=hook)
    assert done.returncode == 130
    assert done.stdout == "Interrupted while loading Keras: nothing written\n"
    assert done.stderr == "" and not (tmp_path / "out").exists()
