"""`python lstm_stateful.py` as the README runs it, in a new process (conftest.py starts
it as the tests are collected): the claim, the README's numbers, the printed scores
against an independent computation, what TensorFlow writes, and its figures."""

import os
import re
import subprocess
import sys

import helpers  # noqa: F401  (first: it loads Keras as the lesson's Setup does)
import keras
import matplotlib.image
import pytest
from helpers import ROOT, original_data, require


def scores(printed):
    """Each model's printed line: {name: (test MSE, floor, recovered %, converged)}."""
    found = re.findall(
        r"^(\w+) +test MSE (\S+) against a floor of (\S+): (-?[\d.]+)% recovered, "
        r"(converged|NOT converged)$",
        printed,
        re.M,
    )
    return {name: (float(mse), float(floor), float(share), verdict == "converged")
            for name, mse, floor, share, verdict in found}  # fmt: skip


def test_the_default_run_shows_the_claim(default_run):
    """The lesson's point, by its own rule: the stateful model recovers most of what its
    window cannot show, the stateless one stays near its floor, and the run agrees."""
    printed, _ = default_run
    found = scores(printed)
    assert found["stateful"][3] and found["stateful"][2] > 70
    assert not found["stateless"][3] and abs(found["stateless"][2]) < 30
    claim = "only the stateful model converges when lahead < tsteps."
    assert f"This run agrees with the claim: {claim}" in printed


def test_the_default_runs_scores_are_what_an_independent_computation_gives(default_run):
    """The floor from the original's data computed a second way: the window's one input,
    halved, is the best guess without state; the stateful model is scored from the
    second test point, after the reset."""
    printed, _ = default_run
    (_, (x_test, y_test)), _ = original_data(1000, 2, 1, 1, 1986)
    errors = (y_test[:, 0] - x_test[:, 0, 0] / 2) ** 2
    found = scores(printed)
    for name, scored in (("stateful", slice(1, None)), ("stateless", slice(None))):
        mse, floor, share, converged = found[name]
        assert floor == float(f"{errors[scored].mean():.2e}")
        # each number printed to 3 digits: the share from them, to about 1% of mse/floor
        assert share == pytest.approx(100 * (1 - mse / floor), abs=0.06 + mse / floor)
        assert converged == (share >= 50)
    stream = re.search(
        r"^streamed   test MSE (\S+), one sample per call$", printed, re.M
    )
    assert float(stream[1]) == found["stateful"][0]  # the same predictions, one by one
    assert "(largest difference from predict(): 0.0e+00)" in printed


def test_the_state_remembers_the_input_the_window_cannot_show(default_run):
    """The stateful state holds the input one step back; the stateless one nothing past
    its window."""
    printed, _ = default_run
    assert "R² of the input k steps back, read from the state, k = 0 to 4:" in printed
    rows = dict(re.findall(r"^(stateful|stateless) +((?:-?\d\.\d\d +){4}-?\d\.\d\d)$",
                           printed, re.M))  # fmt: skip
    stateful, stateless = ([float(r) for r in rows[name].split()] for name in rows)
    assert stateful[0] > 0.99 and stateless[0] > 0.99  # the newest input: in the window
    assert stateful[1] >= 0.9 and all(r <= 0.2 for r in stateless[1:])


def test_the_readmes_numbers_are_the_default_runs(default_run):
    """README.md shows what the default run prints at its end. Where the versions are
    the ones it names, the run prints those lines exactly: the seed fixes the data and
    the weights."""
    printed, _ = default_run
    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"ends with these lines, among others:\n+```\n(.*?)```",
        readme,
        re.S,
    )[1]
    versions = re.search(r"Keras (\S+) on (\w+), seed 1986", block)
    if (keras.version(), keras.backend.backend()) != versions.groups():
        pytest.skip(f"README.md's numbers are Keras {versions[1]}'s on {versions[2]}")
    tf = re.search(r"TensorFlow (\S+)", readme[readme.index(block) :])[1]
    import tensorflow

    if tensorflow.__version__ != tf:
        pytest.skip(f"README.md's numbers are TensorFlow {tf}'s")
    for line in block.splitlines():
        assert line in printed.splitlines()


def test_the_run_writes_its_figures_and_no_tensorflow_error_lines(default_run):
    """Its three figures, in outputs/ where the command ran. TensorFlow's C++ log below
    errors is off, so a machine with CUDA's libraries and no GPU logs no failed cuInit
    (TensorFlow writes a few lines as it loads, before any level applies)."""
    printed, folder = default_run
    assert {path.name for path in (folder / "outputs").iterdir()} == {
        *("input.png", "results.png", "memory.png")
    }
    for name in ("input.png", "results.png", "memory.png"):
        pixels = matplotlib.image.imread(folder / "outputs" / name)
        assert pixels.shape[0] >= 400 and pixels.shape[1] >= 600
        assert pixels[..., :3].std() > 0.05  # not a blank canvas
    stderr = (folder / "stderr").read_text()
    assert not re.findall(r"^[EF]\d{4} \d\d:\d\d:", stderr, re.M), stderr
    assert re.search(r"^Epoch 10 / 10$", printed, re.M) and "Predicting" in printed
    assert "Figures written to outputs" in printed


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="no display (CI has Xvfb)")
def test_on_a_desktop_the_figures_open_in_windows_at_the_end(tmp_path):
    """Real windows: matplotlib's TkAgg on the display. A timer closes them a moment
    after they open, as a person would, so that plt.show() returns."""
    require("tkinter")
    close_soon = (
        "import matplotlib.pyplot as plt\nreal_show = plt.show\n"
        "def show(*args, **kwargs):\n"
        "    timer = plt.gcf().canvas.new_timer(interval=500)\n"
        "    timer.add_callback(plt.close, 'all')\n    timer.start()\n"
        "    print('SHOWING', plt.get_backend().lower(), plt.get_fignums())\n"
        "    real_show(*args, **kwargs)\n    print('CLOSED', plt.get_fignums())\n"
        "plt.show = show\n"
    )
    code = helpers.source(dict(input_len=60, epochs=1, output_dir=str(tmp_path)))
    (tmp_path / "lesson.py").write_text(close_soon + code)
    done = subprocess.run(
        [sys.executable, tmp_path / "lesson.py"],
        capture_output=True,
        text=True,
        env={**os.environ, "MPLBACKEND": "TkAgg"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SHOWING tkagg [1, 2, 3]" in done.stdout and "CLOSED []" in done.stdout
