"""lstm_stateful.py run as its users run it: its data, its runs, its refusals, its figures, its
command line and sweep.py. Everything on the CPU, with small sizes but for one default run. The
state itself, on every backend: test_state.py."""

import contextlib
import io
import os
import re
import sys

import helpers  # noqa: F401  (first: it loads Keras as the example's Setup does)
import numpy as np
import pandas as pd
import pytest
from helpers import SCRIPT, original_data, run


# ---------------------------------------------------------------- the data
def in_batches(a, batch_size):
    """Rows of time-ordered `a` as the contiguous layout batches them: row k * batch_size + i
    holds time step i * streams + k, so that slot i walks stream i."""
    streams = len(a) // batch_size
    return a[[i * streams + k for k in range(streams) for i in range(batch_size)]]


@pytest.mark.parametrize(
    "input_len, tsteps, lahead, batch_size, seed, order, layout",
    [
        (1000, 2, 1, 1, 1986, "newest-first", "interleaved"),  # the original's defaults
        (50, 3, 4, 1, 0, "newest-first", "interleaved"),  # lahead > tsteps: more rows dropped
        (50, 3, 4, 1, 0, "oldest-first", "interleaved"),  # the same windows, in time order
        (103, 4, 2, 4, 7, "newest-first", "interleaved"),  # sets cut to whole batches of 4
        (53, 4, 3, 2, 7, "oldest-first", "contiguous"),  # slot i walks stream i
        (41, 1, 3, 3, 1986, "newest-first", "contiguous"),  # tsteps = 1: the target is the input
        (63, 5, 1, 2, 2**32 - 1, "oldest-first", "interleaved"),  # the largest seed numpy takes
    ],
)
def test_the_data_is_the_originals_in_the_layouts_order(
    input_len, tsteps, lahead, batch_size, seed, order, layout, tmp_path
):
    """The cells up to training, run as a learner runs them: the arrays, in time order, and the
    batches the models are given, in the layout's order."""
    flags = [f"--input-len={input_len}", f"--tsteps={tsteps}", f"--lahead={lahead}"]
    flags += [f"--batch-size={batch_size}", f"--seed={seed}", f"--window-order={order}"]
    flags += [f"--layout={layout}", f"--output-dir={tmp_path}"]
    with contextlib.redirect_stdout(io.StringIO()):
        ns = run(*flags, until="Training the stateful model")
    ((x_train, y_train), (x_test, y_test)), noise = original_data(
        input_len, tsteps, lahead, batch_size, seed, order
    )
    for name, want in (("x_train", x_train), ("x_test", x_test)):
        assert ns[name].dtype == np.float64 and ns[name].flags.writeable
        np.testing.assert_array_equal(ns[name], want)  # the inputs are copied, never recomputed
    for name, want in (("y_train", y_train), ("y_test", y_test)):
        # pandas' rolling mean sums in another order than np.mean: equal to a float's last bits
        np.testing.assert_allclose(ns[name], want, rtol=0, atol=1e-16)
    np.testing.assert_array_equal(ns["noise"][0], noise)  # every input, for the memory readout
    for rows in (x_train, y_train, x_test, y_test):  # as the models are given them
        batched = in_batches(rows, batch_size) if layout == "contiguous" else rows
        np.testing.assert_array_equal(ns["to_layout"](rows), batched)
        np.testing.assert_array_equal(ns["to_layout"](batched, undo=True), rows)


def test_the_data_keeps_the_originals_sizes_and_first_numbers(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        ns = run("--output-dir", str(tmp_path), until="Training the stateful model")
    assert ns["x_train"].shape == (800, 1, 1) and ns["y_train"].shape == (800, 1)
    assert ns["x_test"].shape == (200, 1, 1) and ns["y_test"].shape == (200, 1)
    # np.random.seed(1986), then uniform(-0.1, 0.1): the original's first input after the one
    # row the moving average of 2 drops
    first_two = np.random.RandomState(1986).uniform(-0.1, 0.1, 2)
    assert ns["x_train"][0, 0, 0] == first_two[1]
    assert ns["y_train"][0, 0] == pytest.approx(first_two.mean(), abs=1e-17)
    lines = printed.getvalue().splitlines()
    assert lines[:4] == [
        "*" * 33,
        "STATELESS LSTM WILL NOT CONVERGE",
        "*" * 33,
        "Generating Data...",
    ]
    for line in [
        "Input shape: (1000, 1)",
        "Output shape: (1000, 1)",
        "x_train.shape:  (800, 1, 1)",
    ]:
        assert line in lines
    for line in [
        "y_test.shape:  (200, 1)",
        "Input head: ",
        "Output tail: ",
        "Creating Stateful Model...",
    ]:
        assert line in lines
    assert "Total params: 1,781" in printed.getvalue()  # the summary: the weights alone


# ---------------------------------------------------------------- refusals
def refused(capsys, *flags, path=SCRIPT):
    """Run the example with these flags, expecting it to refuse: its one line of stderr."""
    with pytest.raises(SystemExit) as stop:
        run(*flags, until="The data", path=path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("lstm_stateful.py: error: "), err
    return err.removeprefix("lstm_stateful.py: error: ").strip()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tsteps", "0"], "argument --tsteps: 0 is not a number from 1 to 2**32 - 1"),
        (["--lahead", "-2"], "argument --lahead: -2 is not a number from 1 to 2**32 - 1"),
        (["--epochs", "1.5"], "argument --epochs: invalid number value: '1.5'"),
        (["--input-len", "many"], "argument --input-len: invalid number value: 'many'"),
        (["--batch-size", "0"], "argument --batch-size: 0 is not a number from 1 to 2**32 - 1"),
        (["--seed", "-1"], "argument --seed: -1 is not a number from 0 to 2**32 - 1"),
        (["--seed", str(2**32)], f"argument --seed: {2**32} is not a number from 0 to 2**32 - 1"),
        (["--layout", "rows"], "argument --layout: invalid choice: 'rows'"),
        (["--window-order", "newest"], "argument --window-order: invalid choice: 'newest'"),
        (["--learning-rate", "fast"], "argument --learning-rate: invalid float value: 'fast'"),
        (["--learning-rate", "0"], "layout 'interleaved', window_order 'newest-first' or 0.0: not"),
        (["--learning-rate", "nan"], "layout 'interleaved', window_order 'newest-first' or nan: "),
        (["--learning-rate", "inf"], "layout 'interleaved', window_order 'newest-first' or inf: "),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--no-show"], "unrecognized arguments: --no-show"),
        (["--input-len", "14"], "--input-len 14 is under 5 x --batch-size x (--tsteps + 1)"),
        (["--batch-size", "900"], "--input-len 1000 is under 5 x --batch-size x (--tsteps + 1)"),
        (["--input-len", "20", "--tsteps", "4"], "--input-len 20 is under 5 x --batch-size"),
        (["--lahead", "100000"], "Unable to allocate 11.9 TiB"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_work(flags, message, tmp_path, capsys):
    out = tmp_path / "never-made"
    assert refused(capsys, *flags, "--output-dir", str(out)).startswith(message)
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("tsteps", "0", "argument --tsteps: 0 is not a number from 1 to 2**32 - 1"),
        ("batch_size", "2.5", "argument --batch-size: invalid number value: '2.5'"),
        ("input_len", "True", "argument --input-len: invalid number value: 'True'"),
        ("seed", "-1", "argument --seed: -1 is not a number from 0 to 2**32 - 1"),
        ("layout", '"contigous"', "layout 'contigous', window_order 'newest-first' or 0.001: not"),
        ("window_order", '"oldest"', "layout 'interleaved', window_order 'oldest' or 0.001: not"),
        ("window_order", '"interleaved"', "layout 'interleaved', window_order 'interleaved' or"),
        ("learning_rate", "None", "argument --learning-rate: invalid float value: 'None'"),
        ("learning_rate", "-1", "layout 'interleaved', window_order 'newest-first' or -1.0: not"),
        ("output_dir", '""', "[Errno 2] No such file or directory: ''"),
    ],
)
def test_bad_values_typed_into_the_cell_are_refused_like_flags(
    name, value, message, tmp_path, capsys
):
    """What a learner does: edit a line of the parameters cell and run the file."""
    text, count = re.subn(
        rf"^{name} = .+?  #", f"{name} = {value}  #", script(), count=1, flags=re.M
    )
    assert count == 1
    edited = tmp_path / "lstm_stateful.py"
    edited.write_text(text)
    flags = [] if name == "output_dir" else ["--output-dir", str(tmp_path / "out")]
    assert refused(capsys, *flags, path=edited).startswith(message)
    assert not (tmp_path / "out").exists()


def script():
    return SCRIPT.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "flags, refuses",
    [
        (["--input-len", "15", "--tsteps", "2"], False),  # 5 x 1 x 3: a test set of 3
        (["--input-len", "14", "--tsteps", "2"], True),
        (["--input-len", "60", "--batch-size", "4", "--layout", "contiguous"], False),  # 5 x 4 x 3
        (["--input-len", "59", "--batch-size", "4", "--layout", "contiguous"], True),
        (["--input-len", "40", "--batch-size", "4", "--tsteps", "1"], False),  # 5 x 4 x 2
        (["--input-len", "39", "--batch-size", "4", "--tsteps", "1"], True),
    ],
)
def test_the_size_check_refuses_exactly_what_the_rule_says(flags, refuses, tmp_path):
    """The rule: input_len at least 5 x batch_size x (tsteps + 1), so that the test set holds
    more than tsteps whole batches. What it lets through at the edge of the strictest case (4
    streams, each scored from its third point) is scored to the verdict."""
    until = "The verdict" if flags[1] == "60" else "Training the stateful model"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ns = run(*flags, "--epochs", "1", "--output-dir", str(tmp_path), until=until)
    except SystemExit:
        assert refuses
    else:
        assert not refuses
        if until == "The verdict":
            assert ns["results"]["stateful"]["test_mse"] > 0  # scored on a point of each stream


@pytest.mark.parametrize("sysconf", ["kept", "removed"])
def test_a_run_too_large_for_memory_is_refused_with_or_without_os_sysconf(
    sysconf, monkeypatch, tmp_path, capsys
):
    """numpy is asked for the memory the run needs, before any work: where the system cannot
    give it (a 10 TiB window here), one line names the parameters and the memory; Windows has no
    os.sysconf, and nothing here needs it."""
    if sysconf == "removed":
        monkeypatch.delattr(os, "sysconf", raising=False)
    out = tmp_path / "out"
    message = refused(capsys, "--lahead", "90000", "--output-dir", str(out))
    need = 2**30 + 1300 * (1000 + 90000) * 90000 + 600 * 1 * 90000  # bytes: docs/speed.md
    assert message == (
        f"Unable to allocate 9.68 TiB for an array with shape ({need},) and data type uint8 "
        f"(--input-len 1000, --lahead 90000, --output-dir {out})"
    )
    assert not out.exists()


def test_an_unwritable_output_dir_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    message = refused(capsys, "--output-dir", str(blocker / "sub"))
    assert message.startswith("[Errno 20] Not a directory: ")
    assert message.endswith(f"(--input-len 1000, --lahead 1, --output-dir {blocker / 'sub'})")
    assert blocker.read_text() == "keep me"


def test_every_parameter_is_a_flag_with_help_and_its_default(capsys):
    cell = script().split('tags=["parameters"]')[1].split("# %%")[0]
    names = re.findall(r"^(\w+) = (.+?)  # ", cell, re.M)
    assert [name for name, _ in names] == [
        *("input_len", "tsteps", "lahead", "batch_size", "epochs", "seed", "layout"),
        *("window_order", "learning_rate", "output_dir"),
    ]
    with pytest.raises(SystemExit) as stop:
        run("--help", until="The data")
    assert stop.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps its lines
    for name, value in names:
        flag = "--" + name.replace("_", "-")
        assert re.search(
            rf"{flag}\b[^-]*\w.* \(default: {re.escape(value.strip(chr(34)))}\)", help_text
        )


def test_an_edited_cell_runs_with_its_values_and_flags_still_win(tmp_path, capsys):
    """Edit the parameters cell, run the file: the values are the run's, --help says them, and a
    flag given on the command line still takes the place of its value."""
    text = script()
    for old, new in [
        ("\ninput_len = 1000 ", "\ninput_len = 50 "),
        ("\nlahead = 1 ", "\nlahead = 2 "),
        ('\noutput_dir = "outputs"', f"\noutput_dir = {str(tmp_path / 'edited')!r}"),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    edited = tmp_path / "lstm_stateful.py"
    edited.write_text(text)
    ns = run(path=edited, until="Training the stateful model")
    assert (ns["input_len"], ns["lahead"], ns["tsteps"]) == (50, 2, 2)
    assert ns["x_train"].shape == (40, 2, 1) and (tmp_path / "edited" / "input.png").exists()
    assert "STATELESS LSTM WILL ALSO CONVERGE" in capsys.readouterr().out
    ns = run("--lahead", "1", path=edited, until="Training the stateful model")
    assert (ns["input_len"], ns["lahead"]) == (50, 1)
    with pytest.raises(SystemExit):
        run("--help", path=edited, until="The data")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--input-len INPUT_LEN inputs to learn from (default: 50)" in help_text


def test_flags_are_read_only_where_this_file_is_the_program(tmp_path, monkeypatch, capsys):
    """A notebook kernel's command line (ipykernel_launcher.py -f ...) is never taken for flags;
    `python lstm_stateful.py FLAGS` (and `%run`) is."""
    ns = {}
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "kernel.json"])
    source = script().split("# %% [markdown]\n# ## The data")[0]
    source = source.replace('output_dir = "outputs"', f"output_dir = {str(tmp_path)!r}")
    exec(compile(source, "<cell>", "exec"), ns)  # a pasted cell: no __file__
    assert (ns["tsteps"], ns["lahead"]) == (2, 1)
    with contextlib.redirect_stdout(io.StringIO()):
        assert run("--tsteps", "3", "--output-dir", str(tmp_path), until="The data")["tsteps"] == 3


# ---------------------------------------------------------------- layouts
def test_each_model_trains_and_is_scored_on_the_layouts_batches(contiguous_run):
    ns, calls, metrics, _ = contiguous_run
    ((x_train, y_train), (x_test, y_test)), _ = original_data(90, 4, 2, 3, 21, "oldest-first")
    models = {id(ns["model_stateful"]): "stateful", id(ns["model_stateless"]): "stateless"}
    calls = [c | {"model": models[id(c["model"])]} for c in calls if id(c["model"]) in models]
    assert [(c["call"], c["model"]) for c in calls] == [
        *[("fit", "stateful")] * 2,  # an epoch each
        ("predict", "stateful"),
        ("fit", "stateless"),
        ("predict", "stateless"),
    ]
    for c in calls:
        assert c["rate"] == pytest.approx(0.002)  # --learning-rate reaches Adam
        if c["call"] == "fit":
            assert c["kwargs"]["shuffle"] is False and c["kwargs"]["batch_size"] == 3
            np.testing.assert_array_equal(c["x"], in_batches(x_train, 3))
            x_val, y_val = c["kwargs"]["validation_data"]
            np.testing.assert_array_equal(x_val, in_batches(x_test, 3))
            np.testing.assert_allclose(y_val, in_batches(y_test, 3), atol=1e-16)
        else:
            np.testing.assert_array_equal(c["x"], in_batches(x_test, 3))
            assert c["steps"] == 1  # one step per call (fused, TensorFlow's predict is slow)
    np.testing.assert_allclose(ns["expected"], y_test[:, 0], atol=1e-16)  # back in time order
    assert metrics["params"]["learning_rate"] == 0.002 and metrics["params"]["seed"] == 21
    assert set(metrics["params"]) == {  # every parameter but where the files go
        *("input_len", "tsteps", "lahead", "batch_size", "epochs", "seed", "layout"),
        *("window_order", "learning_rate"),
    }
    assert (metrics["params"]["layout"], metrics["params"]["window_order"]) == (
        *("contiguous", "oldest-first"),
    )


def test_the_floor_and_the_points_left_out_are_the_originals_per_stream(contiguous_run):
    """The floor: the error of averaging what the window shows, on the points scored. Left out:
    the first tsteps - 1 points of each of the 3 streams for the stateful model (no history
    after the reset), none for the stateless one."""
    ns, _, metrics, _ = contiguous_run
    (_, (x_test, y_test)), _ = original_data(90, 4, 2, 3, 21)
    best_guess = (x_test[:, 0, 0] + x_test[:, 1, 0]) / 4  # 2 of 4 inputs
    first_of_each_stream = np.isin(np.arange(18) % 6, [0, 1, 2])  # 3 streams of 6
    drawn = residuals(ns)
    for name, skipped in (("stateful", first_of_each_stream), ("stateless", np.zeros(18, bool))):
        residual = drawn[name]
        np.testing.assert_array_equal(np.isnan(residual), skipped)
        floor = np.mean((y_test[~skipped, 0] - best_guess[~skipped]) ** 2)
        assert metrics[name]["floor_mse"] == pytest.approx(floor, rel=1e-12)
        assert metrics[name]["test_mse"] == pytest.approx(np.nanmean(residual**2), rel=1e-12)


def residuals(ns):
    """Each model's residual as results.png draws it (red), by the model's name."""
    _, stateful_ax, stateless_ax = ns["__figures__"]["results.png"].axes
    return {name: ax.get_lines()[1].get_ydata() for name, ax in
            (("stateful", stateful_ax), ("stateless", stateless_ax))}  # fmt: skip


def test_the_stream_continues_slot_0_one_sample_per_call(contiguous_run):
    """The batch-1 copy starts from a reset state at the first test point, as slot 0 of the
    batch-3 model does: over slot 0's stream (the first 6 points) both predict the same; the
    copy then runs on with its state, where slots 1 and 2 start again from zeros. It is scored
    as one stream, from its fourth point (tsteps 4)."""
    ns, _, metrics, printed = contiguous_run
    stream, stateful = ns["streamed"][:, 0], ns["predicted_stateful"][:, 0]
    np.testing.assert_allclose(stream[:6], stateful[:6], rtol=1e-5, atol=1e-9)
    assert not np.allclose(stream[6:], stateful[6:], rtol=1e-3)
    assert metrics["stream"]["largest_difference"] == np.abs(stream - stateful).max() > 0
    expected = ns["y_test"][:, 0]
    assert metrics["stream"]["test_mse"] == pytest.approx(np.mean((expected - stream)[3:] ** 2))
    assert tuple(ns["model_stream"].layers[0].states[0].shape) == (1, 20)
    assert tuple(ns["model_stateful"].layers[0].states[0].shape) == (3, 20)
    assert f"streamed   test MSE {metrics['stream']['test_mse']:.2e}: " in printed


def test_the_figures_draw_what_their_titles_say(contiguous_run):
    """input.png: the first ten inputs and expected outputs; results.png: the expected output,
    then each residual over what the window cannot show, on one scale; loss.png: the losses
    and the floor; memory.png: each model's R² over k, the window and the average marked."""
    ns, _, metrics, _ = contiguous_run
    figures = ns["__figures__"]
    (_, (x_test, y_test)), noise = original_data(90, 4, 2, 3, 21)
    ax = figures["input.png"].axes[0]
    assert ax.get_title() == "Input"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Input", "Expected output"]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), noise[3:13])  # the newest inputs
    averages = [noise[t - 3 : t + 1].mean() for t in range(3, 13)]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), averages, rtol=0, atol=1e-16)

    expected_ax, stateful_ax, stateless_ax = figures["results.png"].axes
    assert expected_ax.get_title() == "Expected: the mean of the last tsteps inputs"
    np.testing.assert_allclose(expected_ax.lines[0].get_ydata(), y_test[:, 0], atol=1e-16)
    unseen = y_test[:, 0] - (x_test[:, 0, 0] + x_test[:, 1, 0]) / 4  # 2 of the 4 inputs
    predicted = {"stateful": ns["predicted_stateful"], "stateless": ns["predicted_stateless"]}
    for ax, name in ((stateful_ax, "stateful"), (stateless_ax, "stateless")):
        mse = metrics[name]["test_mse"]
        assert ax.get_title() == f"{name.capitalize()}: Expected - Predicted (test MSE {mse:.2e})"
        grey, residual = ax.get_lines()
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            *("what the window cannot show", "expected - predicted"),
        ]
        assert grey.get_color() != residual.get_color() != expected_ax.get_lines()[0].get_color()
        np.testing.assert_allclose(grey.get_ydata(), unseen, atol=1e-16)
        drawn = residual.get_ydata()
        scored = ~np.isnan(drawn)
        np.testing.assert_array_equal(drawn[scored], (ns["y_test"] - predicted[name])[scored, 0])
    assert stateful_ax.get_ylim() == stateless_ax.get_ylim()  # one scale: the small looks small

    ax = figures["memory.png"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in ("stateful", "stateless"):
        np.testing.assert_array_equal(lines[name].get_xdata(), range(7))  # k = 0 .. 4 + 2
        np.testing.assert_array_equal(lines[name].get_ydata(), metrics[name]["memory_r2"])
    assert list(lines["in the mean: k < 4"].get_xdata()) == [3.5, 3.5]
    (window,) = ax.patches
    assert window.get_label() == "in the window: k < lahead = 2"
    assert (window.get_x(), window.get_width()) == (-0.5, 2)


def test_the_readout_finds_the_lags_a_state_holds(contiguous_run, monkeypatch):
    """memory_r2 against states made by hand, on 1000 samples of inputs of its own (800 to fit
    on): a state that holds the inputs 0 and 2 steps back (and noise) reads them with R² near 1,
    and the others near 0."""
    ns = contiguous_run[0]
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-0.1, 0.1, 1003)  # 3 inputs before the first sample's newest
    for name, value in (("noise", pd.DataFrame(inputs)), ("to_drop", 3), ("x_train", range(800))):
        monkeypatch.setitem(ns, name, value)
    newest, back_2 = inputs[3:], inputs[1:-2]
    # 40 numbers that mix those two inputs and three of noise, as a state mixes what it holds
    states = np.c_[newest, back_2, rng.normal(0, 1, (1000, 3))] @ rng.normal(0, 1, (5, 40))
    r2 = ns["memory_r2"](states, range(5))
    assert r2[0] > 0.999 and r2[2] > 0.999
    assert all(abs(r2[k]) < 0.02 for k in (1, 3, 4))
