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
import pytest
from helpers import SCRIPT, original_data, run

TINY = ["--input-len", "60", "--epochs", "2", "--no-show"]
MODEL_KEYS = {"test_mse", "r2", "floor_mse", "recovered", "converged", "loss", "val_loss"}
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


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
        (53, 4, 2, 4, 7, "newest-first", "interleaved"),  # sets cut to whole batches of 4
        (53, 4, 3, 2, 7, "oldest-first", "contiguous"),  # slot i walks stream i
        (41, 1, 3, 3, 1986, "newest-first", "contiguous"),  # tsteps = 1: the target is the input
        (30, 5, 1, 2, 2**32 - 1, "oldest-first", "interleaved"),  # the largest seed numpy takes
    ],
)
def test_the_data_is_the_originals_in_the_layouts_order(
    input_len, tsteps, lahead, batch_size, seed, order, layout, tmp_path
):
    """The cells up to training, run as a learner runs them: the arrays the models are given."""
    flags = [f"--input-len={input_len}", f"--tsteps={tsteps}", f"--lahead={lahead}"]
    flags += [f"--batch-size={batch_size}", f"--seed={seed}", f"--window-order={order}"]
    flags += [f"--layout={layout}", f"--output-dir={tmp_path}"]
    with contextlib.redirect_stdout(io.StringIO()):
        ns = run(*flags, until="Training the stateful model")
    ((x_train, y_train), (x_test, y_test)), noise = original_data(
        input_len, tsteps, lahead, batch_size, seed, order
    )
    if layout == "contiguous":
        x_train, y_train, x_test, y_test = (
            in_batches(a, batch_size) for a in (x_train, y_train, x_test, y_test)
        )
    for name, want in (("x_train", x_train), ("x_test", x_test)):
        assert ns[name].dtype == np.float64
        np.testing.assert_array_equal(ns[name], want)  # the inputs are copied, never recomputed
    for name, want in (("y_train", y_train), ("y_test", y_test)):
        # pandas' rolling mean sums in another order than np.mean: equal to a float's last bits
        np.testing.assert_allclose(ns[name], want, rtol=0, atol=1e-16)
    np.testing.assert_array_equal(ns["series"], noise)  # every input, for the memory readout


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
    assert lines[1:4] == ["*" * 33, "STATELESS LSTM WILL NOT CONVERGE", "*" * 33]
    for line in ["Input shape: (1000, 1)", "x_train.shape:  (800, 1, 1)", "Output tail: "]:
        assert line in lines
    assert "Total params: 1,781" in printed.getvalue()  # the summary: the weights alone


# ---------------------------------------------------------------- refusals
def refused(capsys, *flags, path=SCRIPT):
    """Run the example with these flags, expecting it to refuse: its one line of stderr."""
    with pytest.raises(SystemExit) as stop:
        run(*flags, until="The data", path=path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("lstm_stateful.py: error: ")
    return err.removeprefix("lstm_stateful.py: error: ").strip()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tsteps", "0"], "tsteps = 0 on the command line: must be an integer from 1 to 2**32"),
        (["--lahead", "-2"], "lahead = -2 on the command line: must be an integer from 1"),
        (["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
        (["--input-len", "many"], "argument --input-len: invalid int value: 'many'"),
        (["--batch-size", "0"], "batch_size = 0 on the command line: must be an integer from 1"),
        (["--seed", "-1"], "seed = -1 on the command line: must be an integer from 0 to 2**32"),
        (["--seed", str(2**32)], f"seed = {2**32} on the command line: must be an integer"),
        (["--layout", "rows"], "argument --layout: invalid choice: 'rows'"),
        (["--window-order", "newest"], "argument --window-order: invalid choice: 'newest'"),
        (["--learning-rate", "fast"], "argument --learning-rate: invalid float value: 'fast'"),
        (["--learning-rate", "0"], "learning_rate = 0.0 on the command line: must be a positive"),
        (["--learning-rate", "nan"], "learning_rate = nan on the command line: must be a posit"),
        (["--learning-rate", "inf"], "learning_rate = inf on the command line: must be a posit"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--input-len", "1"], "--input-len 1 leaves too few test points for --tsteps 2"),
        (["--input-len", "10", "--batch-size", "8"], "--input-len 10 leaves too few test points"),
        (["--input-len", "20", "--tsteps", "5"], "--input-len 20 leaves too few test points"),
        (["--lahead", "100000"], "these sizes need "),
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_work(flags, message, tmp_path, capsys):
    out = tmp_path / "never-made"
    assert refused(capsys, *flags, "--output-dir", str(out), "--no-show").startswith(message)
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("tsteps", "0", "must be an integer from 1 to 2**32 - 1"),
        ("batch_size", "2.5", "must be an integer from 1 to 2**32 - 1"),
        ("input_len", "True", "must be an integer from 1 to 2**32 - 1"),
        ("seed", "-1", "must be an integer from 0 to 2**32 - 1"),
        ("layout", '"contigous"', "must be one of interleaved, contiguous"),
        ("window_order", '"oldest"', "must be one of newest-first, oldest-first"),
        ("learning_rate", "None", "must be a positive number"),
        ("learning_rate", "True", "must be a positive number"),
        ("fast", "1", "must be True or False"),
        ("show", '"no"', "must be True or False"),
        ("output_dir", "None", "must be a folder name"),
        ("output_dir", '""', "must be a folder name"),
    ],
)
def test_bad_values_typed_into_the_block_are_refused_like_flags(
    name, value, message, tmp_path, capsys
):
    """What a learner does: edit a line of the block and run the file."""
    text, count = re.subn(
        rf"^{name}: (.+?) = .+?  #", rf"{name}: \1 = {value}  #", script(), count=1, flags=re.M
    )
    assert count == 1
    edited = tmp_path / "lstm_stateful.py"
    edited.write_text(text)
    flags = [] if name == "output_dir" else ["--output-dir", str(tmp_path / "out")]
    shown = repr(value.strip('"')) if value.startswith('"') else value
    assert (
        refused(capsys, *flags, path=edited) == f"{name} = {shown} in the editable block: {message}"
    )


def script():
    return SCRIPT.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "flags, refuses",
    [
        # 5 test points: the stateful score skips tsteps - 1 = 3, and R² needs 2
        (["--input-len", "21", "--tsteps", "4"], False),
        (["--input-len", "20", "--tsteps", "4"], True),
        # contiguous: 8 test points in 4 streams of 2, each skipping its first tsteps - 1
        (["--input-len", "24", "--batch-size", "4", "--layout", "contiguous"], False),
        (
            ["--input-len", "24", "--batch-size", "4", "--layout", "contiguous", "--tsteps", "3"],
            True,
        ),
        (["--input-len", "24", "--batch-size", "4", "--tsteps", "3"], False),  # one stream of 8
    ],
)
def test_the_size_check_refuses_exactly_what_leaves_too_few_points(flags, refuses, tmp_path):
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            run(*flags, "--output-dir", str(tmp_path), until="The data")
    except SystemExit:
        assert refuses
    else:
        assert not refuses


def test_the_memory_check_refuses_exactly_what_does_not_fit(monkeypatch, tmp_path, capsys):
    """Bytes: a GiB for Keras, 1300 per input and window step, 600 per batch slot and window
    step. Where the system says nothing of its memory (Windows has no os.sysconf) the run goes
    on."""
    need = 2**30 + 1300 * (60 + 1) * 1 + 600 * 1 * 1
    pages = {"SC_PAGE_SIZE": 1, "SC_PHYS_PAGES": need - 1}
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name], raising=False)
    assert refused(capsys, *TINY, "--output-dir", str(tmp_path)) == (
        "these sizes need 1.0 GiB, more than this machine has"
    )
    pages["SC_PHYS_PAGES"] = need
    with contextlib.redirect_stdout(io.StringIO()):
        run(*TINY, "--output-dir", str(tmp_path), until="The data")
        monkeypatch.delattr(os, "sysconf")
        run("--lahead", "100000", "--output-dir", str(tmp_path), until="The data")


def test_an_unwritable_output_dir_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    assert refused(capsys, "--output-dir", str(blocker / "sub")).startswith(
        f"--output-dir '{blocker / 'sub'}' cannot be written: "
    )
    assert blocker.read_text() == "keep me"


def test_every_line_of_the_block_is_a_flag_with_its_comment_as_help(tmp_path, capsys):
    block = re.findall(r"^(\w+): (.+?) = (.+?)  # (.+)$", script(), re.M)
    assert [name for name, *_ in block] == [
        *("input_len", "tsteps", "lahead", "batch_size", "epochs", "seed", "layout"),
        *("window_order", "learning_rate", "fast", "output_dir", "show"),
    ]
    with pytest.raises(SystemExit) as stop:
        run("--help", until="The data")
    assert stop.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps its lines
    for name, kind, value, comment in block:
        flag = "--" + name.replace("_", "-")
        default = f"(default: {value.strip(chr(34))})"
        assert re.search(rf"{flag}\b.* {re.escape(comment)} {re.escape(default)}", help_text)
        if kind == "bool":
            assert f"--no-{flag[2:]}" in help_text


def test_an_edited_block_runs_with_its_values(tmp_path, capsys):
    """Edit the block, run the file: the values are the run's, and --help says them."""
    text = script()
    for old, new in [
        ("\ninput_len: int = 1000 ", "\ninput_len: int = 50 "),
        (
            "\nlahead: int = 1  # input window",
            "\nlahead: int = 2  # how far back it looks; input window",
        ),
        ('\noutput_dir: str = "outputs"', f"\noutput_dir: str = {str(tmp_path / 'edited')!r}"),
        ("\nshow: bool = True ", "\nshow: bool = False "),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    edited = tmp_path / "lstm_stateful.py"
    edited.write_text(text)
    ns = run(path=edited, until="Training the stateful model")
    assert (ns["input_len"], ns["lahead"], ns["show"]) == (50, 2, False)
    assert ns["x_train"].shape == (40, 2, 1) and (tmp_path / "edited" / "input.png").exists()
    assert "STATELESS LSTM WILL ALSO CONVERGE" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run("--help", path=edited, until="The data")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--lahead LAHEAD how far back it looks; input window the LSTM sees for each" in help_text
    assert "--input-len INPUT_LEN length of the generated input (default: 50)" in help_text


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
    assert metrics["params"]["learning_rate"] == 0.002
    assert (metrics["layout"], metrics["window_order"]) == ("contiguous", "oldest-first")


def test_the_floor_and_the_points_left_out_are_the_originals_per_stream(contiguous_run):
    """The floor: the error of averaging what the window shows, on the points scored. Left out:
    the first tsteps - 1 points of each of the 3 streams for the stateful model (no history
    after the reset), none for the stateless one."""
    ns, _, metrics, _ = contiguous_run
    (_, (x_test, y_test)), _ = original_data(90, 4, 2, 3, 21)
    best_guess = (x_test[:, 0, 0] + x_test[:, 1, 0]) / 4  # 2 of 4 inputs
    first_of_each_stream = np.isin(np.arange(18) % 6, [0, 1, 2])  # 3 streams of 6
    for name, skipped in (("stateful", first_of_each_stream), ("stateless", np.zeros(18, bool))):
        residual = ns["results"][name]["residual"]
        np.testing.assert_array_equal(np.isnan(residual), skipped)
        floor = np.mean((y_test[~skipped, 0] - best_guess[~skipped]) ** 2)
        assert metrics[name]["floor_mse"] == pytest.approx(floor, rel=1e-12)
        assert metrics[name]["test_mse"] == pytest.approx(np.nanmean(residual**2), rel=1e-12)


def test_the_stream_continues_slot_0_one_sample_per_call(contiguous_run):
    """The batch-1 copy starts from a reset state at the first test point, as slot 0 of the
    batch-3 model does: over slot 0's stream (the first 6 points) both predict the same; the
    copy then runs on with its state, where slots 1 and 2 start again from zeros."""
    ns, _, metrics, printed = contiguous_run
    stream, stateful = ns["results"]["stream"]["residual"], ns["results"]["stateful"]["residual"]
    np.testing.assert_array_equal(np.isnan(stream), np.arange(18) < 3)  # one stream from reset
    np.testing.assert_allclose(stream[3:6], stateful[3:6], rtol=1e-5, atol=1e-9)
    assert not np.allclose(stream[9:12], stateful[9:12], rtol=1e-3)
    assert metrics["stream"]["largest_difference"] >= np.nanmax(np.abs(stream - stateful)) > 0
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
    assert expected_ax.get_title() == "Expected"
    np.testing.assert_allclose(expected_ax.lines[0].get_ydata(), y_test[:, 0], atol=1e-16)
    unseen = y_test[:, 0] - (x_test[:, 0, 0] + x_test[:, 1, 0]) / 4  # 2 of the 4 inputs
    for ax, name in ((stateful_ax, "stateful"), (stateless_ax, "stateless")):
        mse = metrics[name]["test_mse"]
        assert ax.get_title() == f"{name.capitalize()}: Expected - Predicted (test MSE {mse:.2e})"
        grey, residual = ax.get_lines()
        np.testing.assert_allclose(grey.get_ydata(), unseen, atol=1e-16)
        np.testing.assert_array_equal(residual.get_ydata(), ns["results"][name]["residual"])
    assert stateful_ax.get_ylim() == stateless_ax.get_ylim()  # one scale: the small looks small

    ax = figures["loss.png"].axes[0]
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    for name in ("stateful", "stateless"):
        assert list(lines[f"{name} training loss"]) == metrics[name]["loss"]
        assert list(lines[f"{name} validation loss"]) == metrics[name]["val_loss"]
    floor = metrics["stateless"]["floor_mse"]
    assert list(lines[f"stateless floor on the test set, {floor:.2e}"]) == [floor, floor]

    ax = figures["memory.png"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in ("stateful", "stateless"):
        np.testing.assert_array_equal(lines[name].get_xdata(), range(7))  # k = 0 .. 4 + 2
        np.testing.assert_array_equal(lines[name].get_ydata(), metrics[name]["memory_r2"])
    assert list(lines["the average: k < 4"].get_xdata()) == [3.5, 3.5]
    (window,) = ax.patches
    assert window.get_label() == "in the window: k < lahead = 2"
    assert (window.get_x(), window.get_width()) == (-0.5, 2)


def test_the_readout_finds_the_lags_a_state_holds(contiguous_run):
    """memory_r2 against states made by hand: a state that holds the inputs 0 and 2 steps back
    (and noise) reads them with R² near 1, and the others near 0."""
    memory_r2 = contiguous_run[0]["memory_r2"]
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-0.1, 0.1, 1003)  # 3 inputs before the first sample's newest
    newest, back_2 = inputs[3:], inputs[1:-2]
    # 40 numbers that mix those two inputs and three of noise, as a state mixes what it holds
    states = np.c_[newest, back_2, rng.normal(0, 1, (1000, 3))] @ rng.normal(0, 1, (5, 40))
    r2 = memory_r2(states, inputs, 800, range(5))
    assert r2[0] > 0.999 and r2[2] > 0.999
    assert all(abs(r2[k]) < 0.02 for k in (1, 3, 4))
