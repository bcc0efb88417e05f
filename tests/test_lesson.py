"""lstm_stateful.py run in this process with small values, as papermill and sweep.py set
them: its data against the original's pipeline, how it trains and scores each model, its
figures' drawn data, and the memory readout against an independent least squares."""

import contextlib
import io

import helpers  # noqa: F401  (first: it loads Keras as the lesson's Setup does)
import numpy as np
import pandas as pd
import pytest
from conftest import SMALL
from helpers import PARAMETERS, original_data, run


def in_batches(a, batch_size):
    """Rows of time-ordered `a` as the contiguous layout batches them: row
    k * batch_size + i holds time step i * streams + k: slot i walks stream i."""
    streams = len(a) // batch_size
    return a[[i * streams + k for k in range(streams) for i in range(batch_size)]]


# ---------------------------------------------------------------- the data
@pytest.mark.parametrize(
    "input_len, tsteps, lahead, batch_size, seed, order, layout",
    [
        (1000, 2, 1, 1, 1986, "newest-first", "interleaved"),  # the original's defaults
        (
            50,
            3,
            4,
            1,
            0,
            "newest-first",
            "interleaved",
        ),  # lahead > tsteps: more dropped
        (50, 3, 4, 1, 0, "oldest-first", "interleaved"),  # the same windows, time order
        (103, 4, 2, 4, 7, "newest-first", "interleaved"),  # cut to whole batches of 4
        (53, 4, 3, 2, 7, "oldest-first", "contiguous"),  # slot i walks stream i
        (41, 1, 3, 3, 1986, "newest-first", "contiguous"),  # tsteps 1: the input itself
        (63, 5, 1, 2, 2**32 - 1, "oldest-first", "interleaved"),  # numpy's largest seed
    ],
)
def test_the_data_is_the_originals_in_the_layouts_order(
    input_len, tsteps, lahead, batch_size, seed, order, layout, tmp_path
):
    """The cells up to training, run as a learner runs them: the arrays, in time order,
    and the batches the models are given, in the layout's order."""
    values = dict(input_len=input_len, tsteps=tsteps, lahead=lahead, seed=seed)
    values |= dict(batch_size=batch_size, window_order=order, layout=layout)
    with contextlib.redirect_stdout(io.StringIO()):
        ns = run(values | {"output_dir": str(tmp_path)}, until="Training the stateful")
    ((x_train, y_train), (x_test, y_test)), noise = original_data(
        input_len, tsteps, lahead, batch_size, seed, order
    )
    for name, want in (("x_train", x_train), ("x_test", x_test)):
        assert ns[name].dtype == np.float64
        np.testing.assert_array_equal(ns[name], want)  # the inputs themselves
    for name, want in (("y_train", y_train), ("y_test", y_test)):
        # pandas' rolling mean sums in another order than np.mean: a float's last bits
        np.testing.assert_allclose(ns[name], want, rtol=0, atol=1e-16)
    np.testing.assert_array_equal(ns["noise"][0], noise)  # every input drawn
    for rows in (x_train, y_train, x_test, y_test):  # as the models are given them
        batched = in_batches(rows, batch_size) if layout == "contiguous" else rows
        np.testing.assert_array_equal(ns["to_layout"](rows), batched)
        np.testing.assert_array_equal(ns["to_layout"](batched, undo=True), rows)
    np.testing.assert_array_equal(ns["train"][0], ns["to_layout"](x_train))
    np.testing.assert_array_equal(ns["test"][1], ns["to_layout"](ns["y_test"]))


def test_the_data_keeps_the_originals_sizes_numbers_and_messages(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        ns = run({"output_dir": str(tmp_path)}, until="Training the stateful")
    assert ns["x_train"].shape == (800, 1, 1) and ns["y_train"].shape == (800, 1)
    assert ns["x_test"].shape == (200, 1, 1) and ns["y_test"].shape == (200, 1)
    # np.random.seed(1986), then uniform(-0.1, 0.1): the original's first input after
    # the one the mean of 2 drops
    first_two = np.random.RandomState(1986).uniform(-0.1, 0.1, 2)
    assert ns["x_train"][0, 0, 0] == first_two[1]
    assert ns["y_train"][0, 0] == pytest.approx(first_two.mean(), abs=1e-17)
    lines = printed.getvalue().splitlines()
    assert lines[:3] == ["*" * 33, "STATELESS LSTM WILL NOT CONVERGE", "*" * 33]
    assert lines[3] == "Generating Data..."
    for line in ["Input shape: (1000, 1)", "Output shape: (1000, 1)", "Input head:"]:
        assert line in lines
    for line in ["x_train.shape: (800, 1, 1)", "y_test.shape: (200, 1)"]:
        assert line in lines
    assert "Total params: 1,781" in printed.getvalue()  # the summary: weights only


def test_a_window_that_holds_the_mean_changes_the_banner(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        run(dict(tsteps=3, lahead=3, output_dir=str(tmp_path)), until="Aside")
    assert "STATELESS LSTM WILL ALSO CONVERGE" in printed.getvalue()


# ---------------------------------------------------------------- training and scoring
def test_each_model_trains_as_the_original_did_on_the_layouts_batches(small_run):
    """The stateful model: a fit() per epoch, each from zeros, its batches in order; it
    predicts from zeros. The stateless one: one fit() of every epoch. Both start from
    the same weights, and Adam gets the rate asked for."""
    ns, calls, metrics, _ = small_run
    ((x_train, _), (x_test, y_test)), _ = original_data(
        105, 4, 2, 3, 21, "oldest-first"
    )
    models = {
        id(ns["model_stateful"]): "stateful",
        id(ns["model_stateless"]): "stateless",
    }
    seen = [
        (c["call"], models[id(c["model"])], c["kwargs"].get("epochs"), c["zeros"])
        for c in calls
        if id(c["model"]) in models
    ]
    assert seen == [
        *[("fit", "stateful", None, True)] * 2,  # one epoch each, from a reset state
        ("predict", "stateful", None, True),
        ("fit", "stateless", 2, False),
        ("predict", "stateless", None, False),
    ]
    fits = [c for c in calls if c["call"] == "fit" and id(c["model"]) in models]
    for a, b in zip(fits[0]["weights"], fits[2]["weights"], strict=True):
        np.testing.assert_array_equal(a, b)  # the same start for both models
    for c in calls:
        if id(c["model"]) not in models:
            continue
        assert c["rate"] == pytest.approx(0.002)
        if c["call"] == "fit":
            assert c["kwargs"]["shuffle"] is False and c["kwargs"]["batch_size"] == 3
            np.testing.assert_array_equal(c["x"], in_batches(x_train, 3))
            x_val, y_val = c["kwargs"]["validation_data"]
            np.testing.assert_array_equal(x_val, in_batches(x_test, 3))
            np.testing.assert_allclose(y_val, in_batches(y_test, 3), atol=1e-16)
        else:
            np.testing.assert_array_equal(c["x"], in_batches(x_test, 3))
            assert c["steps"] == 1 and c["kwargs"]["verbose"] == 0  # no progress bars
    np.testing.assert_allclose(ns["expected"], y_test[:, 0], atol=1e-16)  # time order
    assert metrics["params"] == {name: SMALL.get(name) for name in PARAMETERS}


def test_the_floor_and_the_points_left_out_are_the_originals_per_stream(small_run):
    """The floor: the error of summing what the window shows, over tsteps, on the points
    scored. Left out: the first tsteps - 1 points of each of the 3 streams for the
    stateful model (they reach back before the reset), none for the stateless one."""
    ns, _, metrics, _ = small_run
    (_, (x_test, y_test)), _ = original_data(105, 4, 2, 3, 21)
    best_guess = (x_test[:, 0, 0] + x_test[:, 1, 0]) / 4  # 2 of 4 inputs
    first_of_each_stream = np.isin(np.arange(21) % 7, [0, 1, 2])  # 3 streams of 7
    drawn = residuals(ns)
    none = np.zeros(21, bool)
    for name, skipped in (("stateful", first_of_each_stream), ("stateless", none)):
        residual = drawn[name]
        np.testing.assert_array_equal(np.isnan(residual), skipped)
        floor = np.mean((y_test[~skipped, 0] - best_guess[~skipped]) ** 2)
        assert metrics[name]["floor"] == pytest.approx(floor, rel=1e-12)
        mse = np.nanmean(residual**2)
        assert metrics[name]["test_mse"] == pytest.approx(mse, rel=1e-12)
        assert metrics[name]["recovered"] == pytest.approx(1 - mse / floor, rel=1e-12)
        r2 = 1 - mse / np.var(y_test[~skipped, 0])
        assert metrics[name]["r2"] == pytest.approx(r2, rel=1e-12)


def residuals(ns):
    """Each model's residual as results.png draws it (red), by the model's name."""
    _, stateful_ax, stateless_ax = ns["__figures__"]["results.png"].axes
    return {name: ax.get_lines()[1].get_ydata() for name, ax in
            (("stateful", stateful_ax), ("stateless", stateless_ax))}  # fmt: skip


def test_a_model_converges_when_it_recovers_half_the_floor_or_r2_reaches_0_8(small_run):
    """The verdict's rule, with predictions made to measure on the run's test set: where
    there is a floor, a model that recovers 45% of it has not converged and one at 55%
    has, whatever its R²; with no floor, R² 0.75 has not and 0.85 has."""
    ns = small_run[0]
    expected, unseen = ns["expected"], ns["expected"] - ns["best_guess"]
    for recovered, converged in ((0.45, False), (0.55, True), (0.0, False)):
        scores = ns["score"](expected - np.sqrt(1 - recovered) * unseen, 0)
        assert scores["recovered"] == pytest.approx(recovered)
        assert scores["converged"] == converged
    noise = np.random.RandomState(0).normal(0, 1, len(expected))
    noise *= np.sqrt(np.var(expected) / np.mean(noise**2))  # R²: 1 - its share
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(ns, "best_guess", expected)  # as where lahead >= tsteps
        for r2, converged in ((0.75, False), (0.85, True)):
            scores = ns["score"](expected - np.sqrt(1 - r2) * noise, 0)
            assert scores["recovered"] is None and scores["converged"] == converged
            assert scores["r2"] == pytest.approx(r2)


def test_the_run_prints_its_verdict_by_that_rule(small_run):
    ns, _, metrics, printed = small_run
    for name in ("stateful", "stateless"):
        m = metrics[name]
        line = f"{name:<10} test MSE {m['test_mse']:.2e} against a floor of "
        line += f"{m['floor']:.2e}: {m['recovered']:.1%} recovered, "
        line += "converged" if m["converged"] else "NOT converged"
        assert line in printed.splitlines()
    agrees = metrics["stateful"]["converged"] and not metrics["stateless"]["converged"]
    assert metrics["agrees"] == agrees
    claim = "only the stateful model converges when lahead < tsteps."
    assert (
        f"This run {'agrees' if agrees else 'does NOT agree'} with the claim: {claim}"
        in (printed)
    )


def test_the_stream_continues_slot_0_one_sample_per_call(small_run):
    """The batch-1 copy starts from zeros at the first test point, as slot 0 of the
    batch-3 model does: over slot 0's stream (the first 7 points) both predict the same.
    The copy then runs on with its state, where slots 1 and 2 start again from zeros. It
    is scored as one stream, from its fourth point (tsteps 4)."""
    ns, _, metrics, printed = small_run
    stream, stateful = ns["streamed"], ns["predicted_stateful"]
    np.testing.assert_allclose(stream[:7], stateful[:7], rtol=1e-5, atol=1e-9)
    assert not np.allclose(stream[7:], stateful[7:], rtol=1e-3)
    expected = ns["y_test"][:, 0]
    mse = np.mean((expected - stream)[3:] ** 2)
    assert metrics["stream"]["test_mse"] == pytest.approx(mse)
    assert tuple(ns["model_stream"].layers[0].states[0].shape) == (1, 20)
    assert tuple(ns["model_stateful"].layers[0].states[0].shape) == (3, 20)
    assert f"streamed   test MSE {mse:.2e}, one sample per call" in printed
    difference = np.abs(stream - stateful).max()
    assert f"(largest difference from predict(): {difference:.1e})" in printed


# ---------------------------------------------------------------- the figures
def test_the_figures_draw_what_their_titles_say(small_run):
    """input.png: the first ten inputs and expected outputs; results.png: the expected
    output, then each residual over what the window cannot show, on one scale, axes
    named; memory.png: each model's R² over k, the window and the mean marked."""
    ns, _, metrics, _ = small_run
    figures = ns["__figures__"]
    (_, (x_test, y_test)), noise = original_data(105, 4, 2, 3, 21)
    fig = figures["input.png"]
    (ax,) = fig.axes
    assert ax.get_title() == "Input" and ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "input",
        "expected output",
    ]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), noise[3:13])
    means = [noise[t - 3 : t + 1].mean() for t in range(3, 13)]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), means, rtol=0, atol=1e-16)

    fig = figures["results.png"]
    expected_ax, stateful_ax, stateless_ax = fig.axes
    assert expected_ax.get_title() == "Expected" and expected_ax.get_ylabel()
    np.testing.assert_allclose(
        expected_ax.lines[0].get_ydata(), y_test[:, 0], atol=1e-16
    )
    unseen = y_test[:, 0] - (x_test[:, 0, 0] + x_test[:, 1, 0]) / 4  # 2 of 4 inputs
    predicted = {
        "stateful": ns["predicted_stateful"],
        "stateless": ns["predicted_stateless"],
    }
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        *("what the window cannot show", "expected - predicted"),
    ]
    for ax, name in ((stateful_ax, "stateful"), (stateless_ax, "stateless")):
        assert ax.get_title() == f"{name.capitalize()}: Expected - Predicted"
        assert ax.get_ylabel() == "residual"
        grey, residual = ax.get_lines()
        assert grey.get_color() != residual.get_color()
        np.testing.assert_allclose(grey.get_ydata(), unseen, atol=1e-16)
        drawn = residual.get_ydata()
        scored = ~np.isnan(drawn)
        want = ns["y_test"][:, 0] - predicted[name]
        np.testing.assert_array_equal(drawn[scored], want[scored])
    assert stateful_ax.get_ylim() == stateless_ax.get_ylim()  # one scale
    assert stateless_ax.get_xlabel() == "test time step"

    fig = figures["memory.png"]
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in ("stateful", "stateless"):
        np.testing.assert_array_equal(
            lines[name].get_xdata(), range(7)
        )  # k = 0 .. 4 + 2
        np.testing.assert_array_equal(
            lines[name].get_ydata(), metrics[name]["memory_r2"]
        )
    assert list(lines["in the mean: k < 4"].get_xdata()) == [3.5, 3.5]
    (window,) = ax.patches
    assert window.get_label() == "in the window: k < 2"
    assert (window.get_x(), window.get_width()) == (-0.5, 2)
    assert ax.get_xlabel() and ax.get_ylabel()


@pytest.mark.parametrize("name", ["input.png", "results.png", "memory.png"])
def test_each_legend_lies_outside_the_axes(small_run, name):
    """A figure's legend keeps clear of its data: it sits beside or below the axes."""
    fig = small_run[0]["__figures__"][name]
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent()), name


# ------------------------------------------------------------ what the state remembers
def test_the_readout_finds_the_lags_a_state_holds(small_run, monkeypatch):
    """memory_r2 against states made by hand, on 1000 samples of inputs of its own
    (800 to fit on): a state that holds the inputs 0 and 2 steps back reads them with
    R² near 1, and the others near 0."""
    ns = small_run[0]
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-0.1, 0.1, 1003)  # 3 inputs before the first sample's newest
    for name, value in (("noise", pd.DataFrame(inputs)), ("to_drop", 3)):
        monkeypatch.setitem(ns, name, value)
    monkeypatch.setitem(ns, "x_train", np.zeros((800, 1, 1)))
    newest, back_2 = inputs[3:], inputs[1:-2]
    # 40 numbers that mix those two inputs and three of noise, as a state mixes them
    states = np.c_[newest, back_2, rng.normal(0, 1, (1000, 3))] @ rng.normal(
        0, 1, (5, 40)
    )
    r2 = ns["memory_r2"](states, range(5))
    assert r2[0] > 0.999 and r2[2] > 0.999
    assert all(abs(r2[k]) < 0.02 for k in (1, 3, 4))


def test_the_memory_readout_is_what_an_independent_least_squares_gives(small_run):
    """metrics.json's memory_r2, computed a second way: for each k, an explicit design
    matrix (the states of samples 6.. with a constant) against the input drawn k steps
    before each sample's newest, fitted on the training samples."""
    ns, _, metrics, _ = small_run
    noise = np.random.RandomState(21).uniform(-0.1, 0.1, 105 + 3)  # to_drop 3
    samples = np.arange(6, 105)  # k up to 6 = max(tsteps, lahead) + 2
    for name in ("stateful", "stateless"):
        states = ns["states_after_each_sample"](ns[f"model_{name}"])
        design = np.c_[states[samples], np.ones(len(samples))]
        train = samples < len(ns["x_train"])
        for k, r2 in enumerate(metrics[name]["memory_r2"]):
            target = noise[samples + 3 - k]
            weights = np.linalg.lstsq(design[train], target[train], rcond=1e-7)[0]
            error = target[~train] - design[~train] @ weights
            want = 1 - np.mean(error**2) / np.var(target[~train])
            assert r2 == pytest.approx(want, abs=1e-9)
    assert len(metrics["stateful"]["memory_r2"]) == 7
