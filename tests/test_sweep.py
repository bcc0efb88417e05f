"""sweep.py, the command line beside the lesson: its flags and refusals (in this
process); the lesson it runs with other values (the real one, and a run of it against
the same values run alone); with a stand-in lesson that takes no time, its runs, files,
failures, retries, Ctrl-C, `kill` and SIGKILL, as a user meets them in a terminal."""

import ctypes
import json
import os
import re
import signal
import sys

import helpers  # noqa: F401  (first: it loads Keras as the lesson's Setup does)
import numpy as np
import pytest
from helpers import (
    LESSON,
    PARAMETERS,
    alive,
    ended,
    read,
    run,
    start,
    wait_for,
    waiting,
)

import sweep

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


# ---------------------------------------------------------------- flags and refusals
@pytest.fixture
def main(monkeypatch, capsys):
    """main(ARGS): `python sweep.py ARGS` in this process, for what it does before any
    run: its exit status, what it printed and wrote to stderr."""

    def call(*args):
        monkeypatch.setattr(sys, "argv", ["sweep.py", *map(str, args)])
        try:
            status = sweep.main()
        except SystemExit as stop:
            status = stop.code
        return status, *capsys.readouterr()

    return call


def test_every_parameter_is_a_flag_with_its_help_and_default(main):
    status, out, _ = main("--help")
    assert status == 0
    help_text = " ".join(out.split())  # argparse wraps its lines
    cell = LESSON.read_text().split('tags=["parameters"]')[1].split("# %%")[0]
    lines = re.findall(r"^(\w+) = (.+?)  # (.+)$", cell, re.M)
    assert [name for name, _, _ in lines] == [*PARAMETERS, "output_dir"]
    for name, value, text in lines:
        flag = "--" + name.replace("_", "-")
        if name == "output_dir":
            value, text = "outputs/sweep", "sweep.json, sweep.png and runs/"
        elif name in ("tsteps", "lahead", "seed"):  # several values: a grid
            value = f"[{value}]"
        default = f"(default: {value.strip(chr(34))})"
        assert re.search(
            rf"{flag} \S+(?: \[\S+ \.\.\.\])? {re.escape(text)} {re.escape(default)}",
            help_text,
        )
    for flag in ("--jobs", "--scheduler"):
        assert flag in help_text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tsteps", "0"], "argument --tsteps: invalid int value: '0'"),
        (["--lahead", "2", "-2"], "argument --lahead: invalid int value: '-2'"),
        (["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
        (["--input-len", "many"], "argument --input-len: invalid int value: 'many'"),
        (["--batch-size", "0"], "argument --batch-size: invalid int value: '0'"),
        (["--seed", "-1"], "argument --seed: invalid int value: '-1'"),
        (["--seed", str(2**32)], f"argument --seed: invalid int value: '{2**32}'"),
        (["--layout", "rows"], "argument --layout: invalid choice: 'rows'"),
        (
            ["--window-order", "newest"],
            "argument --window-order: invalid choice: 'newest'",
        ),
        (
            ["--learning-rate", "fast"],
            "argument --learning-rate: invalid float value: 'fast'",
        ),
        (
            ["--learning-rate", "0"],
            "argument --learning-rate: invalid float value: '0'",
        ),
        (
            ["--learning-rate", "nan"],
            "argument --learning-rate: invalid float value: 'nan'",
        ),
        (
            ["--learning-rate", "inf"],
            "argument --learning-rate: invalid float value: 'inf'",
        ),
        (["--jobs", "0"], "argument --jobs: invalid int value: '0'"),
        (["--seed"], "argument --seed: expected at least one argument"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (
            ["--input-len", "24"],
            "--input-len 24 is too short for --tsteps 2 --lahead 1",
        ),
        (
            ["--batch-size", "900"],
            "--input-len 1000 is too short for --tsteps 2 --lahead 1",
        ),
        (
            ["--tsteps", "2", "9", "--input-len", "50"],
            "--input-len 50 is too short for",
        ),
        (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler "),
    ],
)
def test_a_bad_value_is_refused_in_one_line_before_any_run(
    main, tmp_path, args, message
):
    """A scheduler nobody listens at: Dask's own word for it where Dask is installed,
    else that it needs Dask."""
    out = tmp_path / "never-made"
    status, printed, err = main(*args, "--output-dir", out)
    assert (status, printed, len(err.splitlines())) == (2, "", 1), err
    assert err.startswith(f"sweep.py: error: {message}")
    assert not out.exists()


def test_too_little_data_names_the_rule_and_its_number(main, tmp_path):
    status, _, err = main(
        "--input-len", "99", "--batch-size", "4", "--output-dir", tmp_path
    )
    assert status == 2
    assert err == (
        "sweep.py: error: --input-len 99 is too short for --tsteps 2 --lahead 1 "
        "--batch-size 4: it must be at least 5 x batch_size x "
        "(max(tsteps, lahead) + 3) = 100\n"
    )


@pytest.mark.parametrize(
    "values",
    [
        dict(
            input_len=40, tsteps=1, lahead=5
        ),  # 5 x 1 x (5 + 3): the readout's k up to 7
        dict(input_len=100, tsteps=2, lahead=1, batch_size=4, layout="contiguous"),
    ],
)
def test_the_smallest_data_the_rule_lets_through_is_scored(values, tmp_path, capsys):
    """At the rule's edge, the lesson runs to its end: every model scored on points of
    its own, and a readout of each k."""
    ns = run(values | {"epochs": 1, "output_dir": str(tmp_path)})
    for name in ("stateful", "stateless", "stream"):
        assert np.isfinite(ns["results"][name]["test_mse"])
    for name in ("stateful", "stateless"):
        r2 = ns["results"][name]["memory_r2"]
        assert len(r2) == max(values["tsteps"], values["lahead"]) + 3
        assert np.all(np.isfinite(r2))


def test_a_run_too_large_for_this_machine_names_its_values_and_the_memory(
    main, tmp_path
):
    args = ["--input-len", 500000, "--lahead", 90000, "--jobs", 1]
    status, _, err = main(*args, "--output-dir", tmp_path)
    need = 2**30 + 2000 * 500000 + 100 * 500000 * 90000  # bytes: docs/speed.md
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert status == 2
    assert err == (
        f"sweep.py: error: --input-len 500000 --lahead 90000 needs about "
        f"{sweep.size(need)} of memory a run, 1 at a time; this machine has "
        f"{sweep.size(memory)}\n"
    )
    assert sweep.size(need) == "4.1 TiB"


def test_runs_at_once_share_the_memory(main, tmp_path):
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    one = sweep.memory_needed(dict(input_len=1000, lahead=1))
    jobs = memory // one + 1  # each run fits; this many at once do not
    seeds = range(jobs)
    status, _, err = main("--seed", *seeds, "--jobs", jobs, "--output-dir", tmp_path)
    assert status == 2 and f"a run, {jobs} at a time; this machine has" in err


def test_windows_memory_is_read_without_os_sysconf(monkeypatch):
    """Windows has no os.sysconf: its kernel32 says how much memory is installed."""

    class Kernel32:
        def GetPhysicallyInstalledSystemMemory(self, kilobytes):
            ctypes.cast(kilobytes, ctypes.POINTER(ctypes.c_ulonglong))[0] = 16 * 1024**2
            return 1

    monkeypatch.delattr(os, "sysconf")
    monkeypatch.setattr(ctypes, "windll", type("WinDLL", (), {"kernel32": Kernel32()}),
                        raising=False)  # fmt: skip
    assert sweep.physical_memory() == 16 * 1024**3


def test_an_unwritable_output_dir_is_refused_before_any_run(main, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    status, _, err = main("--output-dir", blocker / "sub")
    assert status == 2
    assert err.startswith(
        f"sweep.py: error: --output-dir '{blocker / 'sub'}' cannot be "
    )
    assert blocker.read_text() == "keep me"


# ---------------------------------------------------------------- the lesson it runs
def test_the_values_are_assigned_right_after_the_parameters_cell():
    """As papermill does: a cell of assignments after the Parameters cell, the lesson's
    own lines untouched."""
    source = LESSON.read_text()
    injected = sweep.with_values(source, {"tsteps": 3, "layout": "contiguous"})
    cell = "# %% tags=[\"injected-parameters\"]\ntsteps = 3\nlayout = 'contiguous'\n\n"
    before, after = injected.split(cell)
    assert before + after == source
    assert before.endswith('output_dir = "outputs"  # where the figures go\n\n')
    assert after.startswith("# %% [markdown]\n# ## The data")


def test_a_run_of_the_sweep_is_the_lesson_run_alone(small_sweep, small_run):
    """`python sweep.py` with small values (conftest.py), second in a worker that ran
    another seed first: its metrics.json is what the lesson gives in this process with
    the same values, number for number, and its files are the run's."""
    printed, folder = small_sweep
    runs = {path.name: path for path in (folder / "runs").iterdir()}
    assert set(runs) == {"tsteps4-lahead2-seed22", "tsteps4-lahead2-seed21"}
    second = runs["tsteps4-lahead2-seed21"]
    assert json.loads((second / "metrics.json").read_text()) == small_run[2]
    assert {path.name for path in second.iterdir()} == {
        *("input.png", "results.png", "memory.png", "metrics.json", "log.txt")
    }
    log = (second / "log.txt").read_text()
    assert "STATELESS LSTM WILL NOT CONVERGE" in log and "This run " in log
    # the summary names the model as in a new process: Keras's session was cleared
    assert re.search(r'Model: "sequential"', log), log[:2000]
    assert printed.splitlines()[0] == "2 runs of lstm_stateful.py, 1 at a time"


# ------------------------------------------------------------ with a stand-in lesson
@POSIX
def test_a_grid_runs_every_cell_and_seed_and_brings_back_its_files(stand_in):
    process = start(
        stand_in, "--tsteps", 2, 3, "--lahead", 2, "--seed", 7, 1, "--jobs", 3,
        "--epochs", 4, "--window-order", "oldest-first",
    )  # fmt: skip
    assert ended(process) == 0, read(stand_in, "stderr")
    out = stand_in / "out"
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    assert [(c["params"]["tsteps"], c["params"]["seed"]) for c in cells] == [
        (2, 1), (2, 7), (3, 1), (3, 7),
    ]  # fmt: skip
    defaults = {
        name: value for name, (value, _) in sweep.parameters(LESSON.read_text()).items()
    }
    del defaults["output_dir"]
    for cell in cells:  # each run: its values, its files, here
        t, la, s = (cell["params"][k] for k in ("tsteps", "lahead", "seed"))
        given = dict(tsteps=t, lahead=la, seed=s, epochs=4, window_order="oldest-first")
        assert cell["params"] == defaults | given
        folder = out / "runs" / f"tsteps{t}-lahead{la}-seed{s}"
        assert json.loads((folder / "metrics.json").read_text()) == cell
        assert (folder / "input.png").read_bytes() == b"a figure"
        assert (folder / "log.txt").read_text().startswith("a run of the stand-in")
    lines = read(stand_in, "stdout").splitlines()
    assert lines[0] == "4 runs of lstm_stateful.py, 3 at a time"
    assert [line[:5] for line in lines[1:5]] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    ran = sorted(re.match(r"\[\d/4\] (tsteps=\d lahead=2 seed=\d): ", line)[1]
                 for line in lines[1:5])  # fmt: skip
    assert ran == [f"tsteps={t} lahead=2 seed={s}" for t in (2, 3) for s in (1, 7)]
    for line in lines[1:5]:  # tsteps 2: no floor (R²); tsteps 3: a floor (recovered)
        if "tsteps=2" in line:
            assert "stateful: R² 0.900, stateless: R² 0.500: agrees | " in line
        else:
            assert (
                "stateful: 90.0% recovered, stateless: 90.0% recovered: agrees" in line
            )
    assert lines[5] == f"sweep.json and sweep.png written to {out}"
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.rglob("*.partial"))


@POSIX
def test_a_worker_runs_one_run_after_another_each_in_a_namespace_of_its_own(stand_in):
    process = start(stand_in, "--seed", 1, 2, 3, 4, "--jobs", 2)
    assert ended(process) == 0, read(stand_in, "stderr")
    logs = [path.read_text() for path in (stand_in / "out" / "runs").glob("*/log.txt")]
    assert len(logs) == 4 and all(log.endswith(" fresh\n") for log in logs)
    pids = {log.split("process ")[1].split()[0] for log in logs}
    assert len(pids) <= 2 and str(process.pid) not in pids  # two workers, not the sweep


@POSIX
def test_a_run_that_raises_keeps_its_traceback_and_stops_the_sweep(stand_in):
    process = start(stand_in, "--epochs", 98, "--tsteps", 2, 3, "--jobs", 1)
    assert ended(process) == 1
    folder = stand_in / "out" / "runs" / "tsteps2-lahead1"
    assert read(stand_in, "stderr") == (
        f"sweep.py: {folder} failed: ValueError: no run at epochs 98\n"
    )
    log = (folder / "log.txt").read_text()
    assert log.startswith("Traceback (most recent call last):")
    assert "lesson.py" in log and log.endswith("ValueError: no run at epochs 98\n")
    assert not (stand_in / "out" / "runs" / "tsteps3-lahead1").exists()  # never run


@POSIX
def test_a_run_whose_process_dies_runs_again(stand_in):
    process = start(stand_in, "--epochs", 97, "--jobs", 1)
    assert ended(process) == 0, read(stand_in, "stderr")
    (line,) = [
        line for line in read(stand_in, "stdout").splitlines() if "[1/1]" in line
    ]
    assert line.endswith(" (its worker died; run 2 times)")
    watched = stand_in / "watched"
    assert (watched / "tsteps2-lahead1-seed1986.again").exists()


@POSIX
def test_a_run_whose_process_dies_every_time_stops_the_sweep_in_one_line(stand_in):
    process = start(stand_in, "--epochs", 95, "--tsteps", 2, 3, "--jobs", 1)
    assert ended(process) == 1
    folder = stand_in / "out" / "runs" / "tsteps2-lahead1"
    assert read(stand_in, "stderr") == f"sweep.py: {folder} died 3 times\n"
    assert not (stand_in / "out" / "runs" / "tsteps3-lahead1").exists()  # never run


def test_a_worker_that_dies_every_time_ends_its_run_after_three():
    code = "import os\nos._exit(9)\n"  # a worker killed for want of memory, say
    workers = sweep.Workers(1, sweep.WORKER)
    try:
        status, files, attempts = workers.run(code)
    finally:
        workers.stop()
    assert (status, files, attempts) == (None, {}, 3)
    assert len(workers.started) == 3 and all(
        w.wait(10) is not None for w in workers.started
    )


@POSIX
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_keeps_the_runs_done_and_leaves_no_process(stand_in, how):
    """Ctrl-C (or `kill`) after two runs, while two more wait: status 130 within 10
    s, one line and no traceback, the runs done in sweep.json, no run's process left."""
    process = start(stand_in, "--seed", 1, 2, 10, 11, "--jobs", 2)
    sweep_json = stand_in / "out" / "sweep.json"
    wait_for(lambda: sweep_json.exists() and len(waiting(stand_in)) == 2, 60, "2 runs")
    wait_for(
        lambda: len(json.loads(sweep_json.read_text())["cells"]) == 2, 60, "2 done"
    )
    children = waiting(stand_in)
    os.kill(process.pid, how)
    assert ended(process, 10) == 130
    assert read(stand_in, "stderr") == ""
    last = read(stand_in, "stdout").splitlines()[-1]
    assert last == f"Interrupted: 2 of 4 runs done, in {stand_in / 'out'}"
    cells = json.loads(sweep_json.read_text())["cells"]
    assert [cell["params"]["seed"] for cell in cells] == [1, 2]
    wait_for(lambda: not any(map(alive, children)), 10, "the runs' processes to end")


@POSIX
def test_ctrl_c_with_many_runs_queued_ends_at_once(stand_in):
    args = [
        "--tsteps",
        1,
        2,
        3,
        4,
        5,
        "--lahead",
        1,
        2,
        3,
        4,
        5,
        "--seed",
        10,
        11,
        12,
        13,
    ]
    process = start(stand_in, *args, "--jobs", 2)  # 100 runs that wait for good
    wait_for(lambda: len(waiting(stand_in)) == 2, 60, "two runs to start")
    os.kill(process.pid, signal.SIGINT)
    assert ended(process, 10) == 130 and read(stand_in, "stderr") == ""
    assert (
        read(stand_in, "stdout").splitlines()[-1].startswith("Interrupted: 0 of 100 ")
    )
    wait_for(lambda: not any(map(alive, waiting(stand_in))), 10, "the runs to end")


@POSIX
def test_ctrl_c_before_any_run_ends_quietly(stand_in):
    process = start(stand_in, "--seed", 10, "--jobs", 1)
    wait_for(lambda: read(stand_in, "stdout"), 60, "the sweep's first line")
    os.kill(process.pid, signal.SIGINT)
    assert ended(process, 10) == 130 and read(stand_in, "stderr") == ""
    wait_for(lambda: not any(map(alive, waiting(stand_in))), 10, "the run to end")


@POSIX
def test_a_sweep_killed_outright_leaves_no_run_behind(stand_in):
    """SIGKILL (or the kernel's out-of-memory killer) gives the sweep no chance to stop
    its runs: each run's process ends by itself when the sweep is gone."""
    process = start(stand_in, "--seed", 10, 11, "--jobs", 2)
    wait_for(lambda: len(waiting(stand_in)) == 2, 60, "two runs to start")
    children = waiting(stand_in)
    os.kill(process.pid, signal.SIGKILL)
    assert ended(process, 10) == -signal.SIGKILL
    wait_for(lambda: not any(map(alive, children)), 10, "the orphaned runs to end")


# ---------------------------------------------------------------- sweep.png
def fake_run(tsteps, lahead, seed, stateful, stateless, recovered=0.7):
    """What a run's metrics.json holds, as far as sweep.png reads it."""
    floor = lahead < tsteps
    model = {"r2": 0.9, "recovered": recovered if floor else None}
    params = dict(tsteps=tsteps, lahead=lahead, seed=seed, learning_rate=0.001)
    return {
        "params": params | {"window_order": "newest-first"},
        "agrees": stateful and stateless == (not floor),
        "stateful": {**model, "converged": stateful},
        "stateless": {**model, "converged": stateless, "r2": 0.5},
    }


def test_the_sweep_figure_counts_the_seeds_that_agree_and_colours_by_their_share():
    shares = {1: 0.1, 2: 0.2, 3: 0.9, 4: 0.95, 5: 0.99}  # the median, 90%, not the mean
    runs = [
        fake_run(2, 1, s, True, s == 3, recovered=shares[s]) for s in (1, 2, 3, 4, 5)
    ]
    runs += [fake_run(1, 1, s, True, True) for s in (1, 2)]  # (2, 2): not run yet
    fig = sweep.plot(runs, [1, 2], [1, 2])
    ax = fig.axes[0]
    share = ax.images[0].get_array()
    np.testing.assert_array_equal(share.filled(np.nan), [[1.0, np.nan], [0.8, np.nan]])
    cmap, norm = ax.images[0].get_cmap(), ax.images[0].norm
    assert cmap(norm(1.0))[1] > cmap(norm(1.0))[0]  # green where all agree
    assert cmap(norm(0.0))[0] > cmap(norm(0.0))[1]  # red where none does
    texts = {(t.get_position()): t.get_text() for t in ax.texts}
    assert texts[(0, 1)] == (
        "4/5 agree\nstateful: median 90.0%, worst 10.0%\n"
        "stateless: median 90.0%, worst 10.0%"
    )
    assert texts[(0, 0)] == (
        "2/2 agree\nstateful: median R² 0.900, worst R² 0.900\n"
        "stateless: median R² 0.500, worst R² 0.500"
    )
    (key,) = [other for other in fig.axes if other is not ax]  # the colour bar
    assert (
        "agrees with the claim" in key.get_ylabel()
        and "not how well" in key.get_ylabel()
    )
    assert "not to scale" in ax.get_xlabel()
    one = sweep.plot([fake_run(2, 1, 1986, True, False)], [2], [1]).axes[0]
    assert (
        one.texts[0].get_text()
        == "stateful: 70.0% recovered\nstateless: 70.0% recovered"
    )
    assert one.get_title().endswith(
        "(newest-first windows, learning rate 0.001, seed 1986)"
    )
