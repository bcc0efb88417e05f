"""lstm_stateful.py and sweep.py from the command line, in new processes, as users run them:
the same numbers in every run and on every backend, one line and a status for what stops a run,
and the sweep's runs, seeds, figure and Ctrl-C."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import helpers  # noqa: F401  (first: it loads Keras as the example's Setup does)
import keras
import matplotlib.image
import numpy as np
import pytest
from helpers import (
    BACKENDS,
    ROOT,
    ended,
    new_process,
    original_data,
    require,
    start_command_line_runs,
    start_default_run,
)

TINY = ["--input-len", "60", "--epochs", "2"]
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
MODEL_KEYS = {"test_mse", "r2", "floor_mse", "recovered", "converged", "verdict"}
MODEL_KEYS |= {"loss", "val_loss"}


# ---------------------------------------------------------------- the default run
@pytest.fixture(scope="module")
def default_run():
    """`python lstm_stateful.py` as it comes (1000 inputs, 10 epochs), in a new
    process started as the session starts: what it printed, its metrics.json and its folder."""
    start_default_run()
    folder, [(printed, stderr, status)] = ended("default")
    assert status == 0, stderr[-3000:]
    return printed, json.loads((folder / "metrics.json").read_text()), folder


def test_the_default_run_shows_the_claim(default_run):
    """The example's point, judged by its own rule: the stateful model recovers most of what its
    window cannot show, the stateless one stays near its floor, and the run says it agrees."""
    printed, metrics, _ = default_run
    stateful, stateless = metrics["stateful"], metrics["stateless"]
    assert stateful["converged"] and stateful["recovered"] > 0.9
    assert not stateless["converged"] and abs(stateless["recovered"]) < 0.3
    assert metrics["agrees"] is True
    assert (
        "This run agrees with the example's claim: only the stateful model converges when "
        "lahead < tsteps." in printed
    )


def test_the_state_remembers_the_inputs_the_window_cannot_show(default_run):
    """What the state remembers, at the default run: the stateful state holds the input one
    step back (which the window cannot show), the stateless state nothing past its window."""
    printed, metrics, _ = default_run
    stateful, stateless = metrics["stateful"]["memory_r2"], metrics["stateless"]["memory_r2"]
    assert len(stateful) == len(stateless) == 5  # k = 0 .. max(tsteps, lahead) + 2
    assert stateful[0] > 0.99 and stateless[0] > 0.99  # the newest input: in the window
    assert stateful[1] >= 0.9
    assert all(r <= 0.2 for r in stateless[1:])  # k >= lahead
    assert "R² of the input k = 0, 1, 2, 3, 4 steps back, read from the state:" in printed
    for name in ("stateful", "stateless"):
        r2 = metrics[name]["memory_r2"]
        assert f"{name:<10} {' '.join(f'{r:5.2f}' for r in r2)}" in printed


def test_the_readmes_numbers_are_the_default_runs(default_run):
    """README.md shows what the default run prints at its end. Where the versions are the ones
    it names, the run prints those lines exactly (the seed fixes the data and the weights)."""
    printed = default_run[0]
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"The default run ends with:\n+```\n(.*?)```", readme, re.S).group(1)
    versions = re.search(r"Keras (\S+) on (\w+); seed 1986", block)
    if (keras.version(), keras.backend.backend()) != versions.groups():
        pytest.skip(f"README.md's numbers are Keras {versions[1]}'s on {versions[2]}")
    for line in block.splitlines():
        assert line in printed.splitlines()


def test_the_default_runs_metrics_are_what_an_independent_computation_gives(default_run):
    printed, metrics, folder = default_run
    assert {p.name for p in folder.iterdir()} == {
        *("input.png", "results.png", "memory.png", "metrics.json")
    }
    assert metrics["backend"] == keras.backend.backend()
    assert metrics["params"] == {
        **{"input_len": 1000, "tsteps": 2, "lahead": 1, "batch_size": 1, "epochs": 10},
        **{"seed": 1986, "layout": "interleaved", "window_order": "newest-first"},
        "learning_rate": 0.001,
    }
    (_, (x_test, y_test)), _ = original_data(1000, 2, 1, 1, 1986)
    # the best guess without state: the one input the window shows, half the average
    floor_errors = (y_test[:, 0] - x_test[:, 0, 0] / 2) ** 2
    for name, scored in (("stateful", slice(1, None)), ("stateless", slice(None))):
        m = metrics[name]
        assert set(m) == MODEL_KEYS | {"memory_r2"}
        assert len(m["loss"]) == len(m["val_loss"]) == 10
        assert m["r2"] == pytest.approx(1 - m["test_mse"] / np.var(y_test[scored]), rel=1e-12)
        assert m["floor_mse"] == pytest.approx(floor_errors[scored].mean(), rel=1e-12)
        assert m["recovered"] == pytest.approx(1 - m["test_mse"] / m["floor_mse"], rel=1e-12)
        assert m["converged"] == (m["recovered"] >= 0.5)
        assert m["verdict"] == f"{m['recovered']:.1%} recovered"
        line = f"{name:<10} test MSE {m['test_mse']:.2e} against a floor of {m['floor_mse']:.2e}: "
        line += f"{m['recovered']:.1%} recovered, {'' if m['converged'] else 'NOT '}converged"
        assert line in printed
    # the floor scatters around its expected value: 1 of 2 inputs unseen, of variance 0.01 / 3
    assert metrics["stateless"]["floor_mse"] == pytest.approx(0.01 / 3 / 4, rel=0.2)
    # the stream: the stateful model's weights at batch size 1, one sample per call, from a
    # reset state: what predict() gave, to the last bit
    stream = metrics["stream"]
    assert set(stream) == MODEL_KEYS - {"loss", "val_loss"} | {"largest_difference"}
    assert stream["largest_difference"] == 0.0
    assert {k: stream[k] for k in MODEL_KEYS - {"loss", "val_loss"}} == {
        k: metrics["stateful"][k] for k in MODEL_KEYS - {"loss", "val_loss"}
    }
    assert "largest difference from predict(): 0.0e+00)" in printed
    assert f"Keras {keras.version()} on {keras.backend.backend()}; seed 1986" in printed
    assert re.search(r"^Epoch 10 / 10$", printed, re.M) and "Predicting" in printed
    for name in ("input.png", "results.png", "memory.png"):
        pixels = matplotlib.image.imread(folder / name)
        assert pixels.shape[0] >= 400 and pixels.shape[1] >= 600
        assert pixels[..., :3].std() > 0.05  # not a blank canvas


# ---------------------------------------------------------------- the command line
def tensorflow_errors(stderr):
    """TensorFlow's C++ error lines (`E0000 00:00:...`, `F...`) among what a run wrote. Where the
    user sets no level the example asks for errors' and worse, so that a CPU-only machine with
    CUDA's libraries does not log `failed call to cuInit`. (A few lines TensorFlow writes as it
    loads, before any level applies, are its own: `I...` and absl's note about them.)"""
    return [line for line in stderr.splitlines() if re.match(r"[EF]\d{4} \d\d:\d\d:", line)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_command_line_repeats_exactly_and_the_sweep_runs_it(backend):
    """The same flags in two new processes, one under `python -m cProfile`, one run by the
    sweep, give the same numbers bit for bit. The outputs go to --output-dir only."""
    require(backend)
    start_command_line_runs(backend)
    folder, outputs = ended(backend)
    for _, stderr, status in outputs:
        assert status == 0, stderr[-3000:]
        assert tensorflow_errors(stderr) == [] and "Traceback" not in stderr
    profiled = json.loads((folder / "profiled" / "metrics.json").read_text())
    first, swept = json.loads((folder / "sweep" / "sweep.json").read_text())["cells"]
    assert profiled == swept  # run second in the sweep's worker, bit for bit
    assert (
        first["params"]["tsteps"] == 2
        and first["stateful"]["test_mse"] != swept["stateful"]["test_mse"]
    )
    assert profiled["backend"] == backend and profiled["params"]["lahead"] == 2
    assert (folder / "profile").stat().st_size > 0  # cProfile ran it to its end
    stdout = outputs[0][0]
    assert f"on {backend}; seed 1986" in stdout and "STATELESS LSTM WILL NOT CONVERGE" in stdout
    counts = [(int(n), int(total)) for n, total in re.findall(r"(\d+)/(\d+)(?!\d)", stdout)]
    assert (96, 96) in counts and (24, 24) in counts  # 80% of 120 to train, the rest to test
    assert all(n <= total for n, total in counts), counts
    run_log = (folder / "sweep" / "runs" / "tsteps3-lahead2" / "log.txt").read_text()
    assert run_log.startswith("*" * 33 + "\nSTATELESS LSTM WILL NOT CONVERGE\n")
    assert f"on {backend}; seed 1986" in run_log and "Figures and metrics.json written" in run_log
    # second in its worker, it names its model as a new process does: Keras's session was cleared
    assert 'Model: "sequential"\n' in run_log and 'Model: "sequential"\n' in stdout
    files = {p.name for p in (folder / "sweep" / "runs" / "tsteps3-lahead2").iterdir()}
    assert files == {"input.png", "results.png", "memory.png", "metrics.json", "log.txt"}
    sweep_out = outputs[1][0].splitlines()
    assert sweep_out[0].endswith(": 2 runs, 1 at a time")
    assert sweep_out[1].startswith("[1/2] tsteps=2 lahead=2 seed=1986: stateful: ")  # one worker
    assert sweep_out[2].startswith("[2/2] tsteps=3 lahead=2 seed=1986: stateful: ")
    assert sweep_out[-1] == f"sweep.json and sweep.png written to {folder / 'sweep'}"
    assert sorted(p.name for p in folder.iterdir()) == ["profile", "profiled", "sweep"]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != keras.backend.backend()])
def test_the_state_tests_pass_on_every_other_backend(backend):
    """tests/test_state.py, in a process of its own for each other backend (one process loads
    one Keras backend)."""
    require(backend)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_state.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": backend},
    )
    assert done.returncode == 0, done.stdout[-3000:]
    last = done.stdout.splitlines()[-1].strip("= ")  # all passed: no test skipped or failed
    assert re.fullmatch(r"\d+ passed(, \d+ warnings?)? in .*", last), last


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "tensorflow"])
def test_every_backend_gives_tensorflows_numbers(backend):
    """The initial weights come from the seed alone (numpy draws them), so every backend trains
    from the same numbers to the same numbers, but for float32's rounding: the test MSEs within
    1%, the shares recovered within 0.1 percentage point, the same verdicts, and what the state
    remembers within 0.01."""
    require("tensorflow")
    require(backend)
    for b in ("tensorflow", backend):
        start_command_line_runs(b)
    tensorflow, other = (
        json.loads((ended(b)[0] / "profiled" / "metrics.json").read_text())
        for b in ("tensorflow", backend)
    )
    for name in ("stateful", "stateless", "stream"):
        assert other[name]["test_mse"] == pytest.approx(tensorflow[name]["test_mse"], rel=0.01)
        assert other[name]["recovered"] == pytest.approx(tensorflow[name]["recovered"], abs=1e-3)
        assert other[name]["converged"] == tensorflow[name]["converged"]
    for name in ("stateful", "stateless"):
        for key in ("loss", "val_loss"):
            assert other[name][key] == pytest.approx(tensorflow[name][key], rel=0.01)
        assert other[name]["memory_r2"] == pytest.approx(tensorflow[name]["memory_r2"], abs=0.01)


def test_tensorflows_log_level_is_the_users_and_else_3(tmp_path):
    """The example sets TF_CPP_MIN_LOG_LEVEL to 3 only where it is unset (as in this process:
    conftest.py unsets it), before Keras loads, and keeps the user's."""
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"  # this process ran the example's Setup
    after = "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    done = new_process("--help", before=f"import os, atexit; atexit.register(lambda: {after})",
                       env=env, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0 and done.stdout.endswith("\n2\n"), done.stderr


@POSIX
@pytest.mark.parametrize("at", ["input.png", "the summary"])
def test_ctrl_c_leaves_only_whole_files(at, tmp_path):
    """Ctrl-C (SIGINT) while input.png is written leaves only its temporary .partial file, never
    half an input.png; a moment later, input.png whole. Python stops with its own status for
    Ctrl-C (killed by SIGINT: 130 in a shell)."""
    if at == "input.png":
        hook = "from matplotlib.figure import Figure\nreal = Figure.savefig\n"
        hook += (
            "def savefig(*a, **k):\n    real(*a, **k)\n    os.kill(os.getpid(), signal.SIGINT)\n"
        )
        hook += "Figure.savefig = savefig"
    else:
        hook = "import keras\nreal = keras.Model.summary\n"
        hook += (
            "def summary(*a, **k):\n    real(*a, **k)\n    os.kill(os.getpid(), signal.SIGINT)\n"
        )
        hook += "keras.Model.summary = summary"
    # Python's own Ctrl-C handler, as in a terminal (a runner in the background ignores SIGINT)
    hook = f"import os, signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n{hook}"
    done = new_process(*TINY, "--output-dir", str(tmp_path), before=hook)
    assert done.returncode == -signal.SIGINT and "KeyboardInterrupt" in done.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == (["input.png.partial"] if at == "input.png" else ["input.png"])
    if at == "the summary":
        assert matplotlib.image.imread(tmp_path / "input.png").shape[0] > 100  # a whole PNG


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="no display (CI gives one with Xvfb)")
def test_on_a_desktop_the_figures_open_in_windows_at_the_end(tmp_path):
    """Real windows: matplotlib's TkAgg on the display. A timer closes them a moment after they
    open, as a person would, so that plt.show() returns."""
    require("tkinter")
    close_soon = (
        "import matplotlib.pyplot as plt\nreal_show = plt.show\n"
        "def show(*args, **kwargs):\n"
        "    timer = plt.gcf().canvas.new_timer(interval=500)\n"
        "    timer.add_callback(plt.close, 'all')\n    timer.start()\n"
        "    print('SHOWING', plt.get_backend().lower(), plt.get_fignums())\n"
        "    real_show(*args, **kwargs)\n    print('CLOSED', plt.get_fignums())\n"
        "plt.show = show"
    )
    done = new_process(
        *["--input-len", "60", "--epochs", "1", "--output-dir", str(tmp_path)],
        before=close_soon,
        env={"MPLBACKEND": "TkAgg"},
        timeout=300,  # fmt: skip
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SHOWING tkagg [1, 2, 3]" in done.stdout and "CLOSED []" in done.stdout


# ---------------------------------------------------------------- sweep.py
@pytest.fixture
def sweep(monkeypatch, capsys, tmp_path):
    """sweep(ARGS): `python sweep.py ARGS` in this process, with a stand-in (below) for the
    example; its status, stdout and stderr."""
    import sweep as module

    stand_in = tmp_path / "stand_in.py"
    stand_in.write_text(STAND_IN)
    monkeypatch.setattr(module, "EXAMPLE", stand_in)

    def run_sweep(*args):
        monkeypatch.setattr(sys, "argv", ["sweep.py", *args])
        try:
            status = module.main()
        except SystemExit as stop:
            status = stop.code
        return status, *capsys.readouterr()

    return run_sweep


# A stand-in for the example, for the sweep's own tests: a run of it takes a moment. It writes
# the metrics.json of a run that agrees with the claim, the flags it was given, its process and
# whether its namespace was new; --sleep S makes the runs of tsteps 1 wait S seconds first,
# --fail makes them fail as a bad flag does.
STAND_IN = """
import argparse, json, os, pathlib, sys, time
fresh = "seen" not in globals()
seen = True
parser = argparse.ArgumentParser()
for flag in ("--tsteps", "--lahead", "--sleep"):
    parser.add_argument(flag, type=int, default=0)
parser.add_argument("--seed", type=int, default=1986)
parser.add_argument("--fail", action="store_true")
parser.add_argument("--output-dir")
args, _ = parser.parse_known_args()
if args.tsteps == 1 and args.fail:
    print("lstm_stateful.py: error: epochs = 0 on the command line: must be ...", file=sys.stderr)
    sys.exit(2)
if args.tsteps == 1:
    time.sleep(args.sleep)
floor = args.lahead < args.tsteps
model = {"r2": 0.9, "recovered": 0.7 if floor else None, "converged": True}
params = {"tsteps": args.tsteps, "lahead": args.lahead, "seed": args.seed, "learning_rate": 0.1,
          "window_order": "newest-first"}
metrics = {
    "params": params, "agrees": True, "argv": sys.argv[1:], "pid": os.getpid(), "fresh": fresh,
    "stateful": model, "stateless": {**model, "converged": not floor},
}
os.makedirs(args.output_dir)
pathlib.Path(args.output_dir, "metrics.json").write_text(json.dumps(metrics))
"""


def test_a_sweep_runs_every_cell_and_seed_with_the_flags_given(sweep, tmp_path):
    out = tmp_path / "out"
    status, stdout, stderr = sweep(
        *["--tsteps", "2", "3", "--lahead", "2", "--seeds", "7", "1", "--jobs", "3", "--epochs"],
        *["4", "--window-order", "oldest-first", "--output-dir", str(out)],
    )
    assert status == 0, stderr
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    assert [(c["params"]["tsteps"], c["params"]["seed"]) for c in cells] == [
        (2, 1),
        (2, 7),
        (3, 1),
        (3, 7),  # fmt: skip
    ]
    for cell in cells:  # each run: its cell, its seed, the flags given, its files here
        t, la, s = (cell["params"][k] for k in ("tsteps", "lahead", "seed"))
        folder = out / "runs" / f"tsteps{t}-lahead{la}-seed{s}"
        assert cell["argv"][:-1] == [
            *("--tsteps", str(t), "--lahead", str(la), "--seed", str(s), "--epochs", "4"),
            *("--window-order", "oldest-first", "--output-dir"),
        ]
        assert json.loads((folder / "metrics.json").read_text()) == cell
        assert (folder / "log.txt").read_text() == ""  # the stand-in prints nothing
        assert cell["fresh"] and cell["pid"] != os.getpid()  # a worker's, a namespace of its own
    lines = stdout.splitlines()
    assert lines[0] == "Sweeping tsteps [2, 3] x lahead [2], seeds [7, 1]: 4 runs, 3 at a time"
    assert [line[:5] for line in lines[1:5]] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    # which run ends first is the machine's choice: each run once, in any order
    ran = sorted(
        re.match(r"\[\d/4\] (tsteps=\d lahead=2 seed=\d): ", line)[1] for line in lines[1:5]
    )
    assert ran == [f"tsteps={t} lahead=2 seed={s}" for t in (2, 3) for s in (1, 7)]
    for line in lines[1:5]:  # tsteps 2: the window shows the mean (R²); 3: a floor (recovered)
        verdicts = "R² 0.900" if "tsteps=2" in line else "70.0% recovered"
        assert f"stateful: {verdicts}, stateless: {verdicts}: agrees | " in line
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG" and not list(out.glob("*.partial"))


def test_one_worker_runs_the_runs_one_after_another_in_one_process(sweep, tmp_path):
    """--jobs 1: every run in the same worker process (Keras would load once), each in a
    namespace of its own."""
    status, _, stderr = sweep("--tsteps", "2", "3", "--lahead", "1", "2", "--jobs", "1",
                              "--output-dir", str(tmp_path))  # fmt: skip
    assert status == 0, stderr
    cells = json.loads((tmp_path / "sweep.json").read_text())["cells"]
    assert len(cells) == 4 and len({cell["pid"] for cell in cells}) == 1
    assert all(cell["fresh"] for cell in cells)


def test_a_sweep_stops_at_a_run_that_fails_and_says_why(sweep, tmp_path):
    status, _, stderr = sweep("--tsteps", "1", "2", "--lahead", "1", "--fail", "--jobs", "1",
                              "--output-dir", str(tmp_path))  # fmt: skip
    assert status == 2  # the run's own
    assert stderr == (
        f"sweep.py: a run failed ({tmp_path / 'runs' / 'tsteps1-lahead1'}): lstm_stateful.py: "
        "error: epochs = 0 on the command line: must be ...\n"
    )
    assert not (tmp_path / "runs" / "tsteps2-lahead1").exists()  # stopped, never written
    assert not (tmp_path / "sweep.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "-1"], "argument --seeds: invalid seed value: '-1'"),
        (["--seeds", "x"], "argument --seeds: invalid seed value: 'x'"),
        (["--seeds"], "argument --seeds: expected at least one argument"),
        (["--jobs", "0"], "argument --jobs: invalid positive value: '0'"),
        (["--jobs", "two"], "argument --jobs: invalid positive value: 'two'"),
        (["--tsteps", "0"], "argument --tsteps: invalid positive value: '0'"),
        (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler "),
    ],
)
def test_sweep_refuses_bad_seeds_jobs_and_schedulers_in_one_line(sweep, args, message, tmp_path):
    """A scheduler nobody listens at: Dask's own word for it where Dask is installed, else that
    it is needed."""
    status, out, err = sweep(*args, "--output-dir", str(tmp_path / "out"))
    assert (status, out, len(err.splitlines())) == (2, "", 1)
    assert err.startswith(f"sweep.py: error: {message}")


def children(pid):
    """The processes `pid` started, and theirs (Linux: /proc)."""
    found = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *children(int(child))]
    return found


def fake_run(tsteps, lahead, seed, stateful, stateless, recovered=0.7):
    """What a run's metrics.json holds, as far as sweep.png reads it."""
    floor = lahead < tsteps
    model = {"r2": 0.9, "recovered": recovered if floor else None}
    return {
        "params": {
            "tsteps": tsteps,
            "lahead": lahead,
            "seed": seed,
            "learning_rate": 0.001,
            "window_order": "newest-first",
        },  # fmt: skip
        "agrees": stateful and stateless == (not floor),
        "stateful": {**model, "converged": stateful},
        "stateless": {**model, "converged": stateless, "r2": 0.5},
    }


def test_the_sweep_figure_counts_the_seeds_that_agree_and_colours_by_their_share():
    import sweep as sweep_module

    shares = {1: 0.1, 2: 0.2, 3: 0.9, 4: 0.95, 5: 0.99}  # the median, 90%, is not the mean
    runs = [fake_run(2, 1, s, True, s == 3, recovered=shares[s]) for s in (1, 2, 3, 4, 5)]
    runs += [fake_run(1, 1, s, True, True) for s in (1, 2)]  # (2, 2): not run yet
    fig = sweep_module.plot(runs, [1, 2], [1, 2])
    ax = fig.axes[0]
    share = ax.images[0].get_array()
    np.testing.assert_array_equal(share.filled(np.nan), [[1.0, np.nan], [0.8, np.nan]])
    cmap, norm = ax.images[0].get_cmap(), ax.images[0].norm
    assert cmap(norm(1.0))[1] > cmap(norm(1.0))[0]  # green where all agree
    assert cmap(norm(0.0))[0] > cmap(norm(0.0))[1]  # red where none does
    texts = {(t.get_position()): t.get_text() for t in ax.texts}
    assert texts[(0, 1)] == (
        "4/5 agree\nstateful: median 90.0%, worst 10.0%\nstateless: median 90.0%, worst 10.0%"
    )
    assert texts[(0, 0)] == (
        "2/2 agree\nstateful: median R² 0.900, worst R² 0.900\n"
        "stateless: median R² 0.500, worst R² 0.500"
    )
    (key,) = [other for other in fig.axes if other is not ax]  # the colour bar
    assert "agrees with the claim" in key.get_ylabel() and "not how well" in key.get_ylabel()
    assert "not to scale" in ax.get_xlabel()
    one = sweep_module.plot([fake_run(2, 1, 1986, True, False)], [2], [1]).axes[0]
    assert one.texts[0].get_text() == "stateful: 70.0% recovered\nstateless: 70.0% recovered"
    assert one.get_title().endswith("(newest-first windows, learning rate 0.001, seed 1986)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals, Linux's /proc")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_in_a_sweep_keeps_the_runs_done(stop, tmp_path):
    """Ctrl-C (or `kill`) after two runs, while two wait in the workers: one line, status 130,
    the runs done in sweep.json and sweep.png, each whole, and no worker process left."""
    stand_in = tmp_path / "stand_in.py"
    stand_in.write_text(STAND_IN)
    code = f"import sys, pathlib\nsys.path.insert(0, {str(ROOT)!r})\nimport sweep\n"
    code += f"sweep.EXAMPLE = pathlib.Path({str(stand_in)!r})\nsys.exit(sweep.main())"
    # tsteps 2 first, then two runs of tsteps 1 that wait, one in each worker
    args = ["--tsteps", "2", "1", "--lahead", "1", "2", "--jobs", "2", "--sleep", "60"]
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--output-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a runner started in the background may ignore SIGINT, and its children would too
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in process.stdout:
        if line.startswith("[2/4]"):  # both tsteps-2 runs done and saved: now press Ctrl-C
            workers = children(process.pid)
            process.send_signal(stop)
            break
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130 and err == ""
    assert out.strip() == f"Interrupted: 2 of 4 runs done, in {tmp_path / 'sweep.json'}"
    cells = json.loads((tmp_path / "sweep.json").read_text())["cells"]
    assert [(c["params"]["tsteps"], c["params"]["lahead"]) for c in cells] == [(2, 1), (2, 2)]
    assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
    for _ in range(50):  # a moment for the kernel to reap them
        left = [pid for pid in workers if pathlib.Path(f"/proc/{pid}").exists()]
        left = [(pid, pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()) for pid in left]
        if not left:
            break
        time.sleep(0.1)
    assert left == []  # none of them left behind
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob("*.partial"))
