"""Benchmarks: whole runs of the lesson, and the sweep's way of running them.

    python tests/benchmark.py runs                      # 3 default runs: time, memory
    python tests/benchmark.py runs --backends tensorflow jax torch --against old.py
    python tests/benchmark.py runs --values tsteps=3 lahead=3 input_len=20000
    python tests/benchmark.py engines                   # the 4 x 4 sweep, 2 ways

`runs` times `python lstm_stateful.py` (with --values, the lesson with those values, as
sweep.py sets them) in a new process, on each backend, beside other versions of the
lesson (--against: an earlier commit's, say `git show REV:lstm_stateful.py > old.py`).
`engines` times the sweep `python sweep.py --tsteps 1 2 3 4 --lahead 1 2 3 4` (a new
process per run) against the same 16 runs in --jobs worker processes that keep Keras
loaded from one run to the next. Kinds alternate, so that a slow spell of the machine
hits each alike; the table gives medians. Peak memory comes from os.wait4 (POSIX only).
pytest does not collect this file: nothing here passes or fails.
"""

import argparse
import ast
import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import pathlib
import runpy
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import sweep  # noqa: E402

# The lesson's TensorFlow settings, made before any worker imports Keras, as the lesson
# makes them before it does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

GRID = dict(tsteps=[1, 2, 3, 4], lahead=[1, 2, 3, 4])


def timed(command, env, folder):
    """One command in a new process: wall seconds and peak memory (MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env, cwd=folder)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(map(str, command))} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def runs(args):
    """Each version of the lesson on each backend, alternating."""
    values = dict(value.split("=", 1) for value in args.values)
    values = {name: ast.literal_eval(value) for name, value in values.items()}
    kinds = []
    for backend in args.backends:
        for path in [ROOT / "lstm_stateful.py", *map(pathlib.Path, args.against)]:
            code = sweep.with_values(path.read_text(), values | {"output_dir": "."})
            env = {**os.environ, "MPLBACKEND": "Agg", "KERAS_BACKEND": backend}
            kinds.append((f"{backend} {path.stem}", code, env))
    measured = {label: [] for label, _, _ in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for n, (label, code, env) in enumerate(kinds):
                folder = pathlib.Path(tmp, f"{n}-{repeat}")
                folder.mkdir()
                pathlib.Path(folder, "lesson.py").write_text(code)
                command = [sys.executable, "lesson.py"]
                measured[label].append(timed(command, env, folder))
                seconds, mib = measured[label][-1]
                print(
                    f"{repeat + 1}/{args.repeats} {label:<30} {seconds:6.1f} s", end=""
                )
                print(f" {mib:6.0f} MiB")
    print(f"\n{'lesson':<30} {'median s':>8} {'peak MiB':>8}")
    for label, times in measured.items():
        median = statistics.median(seconds for seconds, _ in times)
        print(f"{label:<30} {median:8.1f} {max(mib for _, mib in times):8.0f}")


def in_this_process(code):
    """A run of `code` in this worker process, which keeps Keras loaded: its metrics."""
    import keras
    import matplotlib.pyplot as plt

    before = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            pathlib.Path("lesson.py").write_text(code)
            with contextlib.redirect_stdout(io.StringIO()):
                runpy.run_path("lesson.py", run_name="__main__")
            return json.loads(pathlib.Path("out", "metrics.json").read_text())
        finally:
            os.chdir(before)
            keras.utils.clear_session()
            plt.close("all")


def keep_loaded(jobs):
    """The grid's runs in `jobs` spawned worker processes that keep Keras loaded."""
    source = sweep.LESSON.read_text()
    values = {name: default for name, (default, _) in sweep.parameters(source).items()}
    codes = [
        sweep.program(source, values | dict(tsteps=t, lahead=la, output_dir="out"))
        for t in GRID["tsteps"]
        for la in GRID["lahead"]
    ]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        return list(pool.map(in_this_process, codes))


def engines(args):
    """The 4 x 4 sweep, a new process per run against workers that keep Keras loaded."""
    os.environ["MPLBACKEND"] = "Agg"
    grid = [[f"--{name}", *map(str, GRID[name])] for name in GRID]
    times, numbers = {"process per run": [], "workers keep Keras": []}, {}
    for pair in range(args.pairs):
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, ROOT / "sweep.py", *sum(grid, [])]
            command += ["--jobs", str(args.jobs), "--output-dir", tmp]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times["process per run"].append(time.perf_counter() - start)
            cells = json.loads(pathlib.Path(tmp, "sweep.json").read_text())["cells"]
        start = time.perf_counter()
        loaded = keep_loaded(args.jobs)
        times["workers keep Keras"].append(time.perf_counter() - start)
        for label, found in [
            ("process per run", cells),
            ("workers keep Keras", loaded),
        ]:
            mses = sorted(
                (
                    (c["params"]["tsteps"], c["params"]["lahead"]),
                    c["stateful"]["test_mse"],
                )
                for c in found
            )
            numbers.setdefault(label, mses)
            print(f"pair {pair + 1}/{args.pairs} {label:<20} {times[label][-1]:7.1f} s")
    medians = {label: statistics.median(seconds) for label, seconds in times.items()}
    for label, median in medians.items():
        each = ", ".join(f"{seconds:.1f}" for seconds in times[label])
        print(f"{label:<20} median {median:7.1f} s of {each}")
    ratio = medians["workers keep Keras"] / medians["process per run"]
    print(f"workers that keep Keras take {ratio:.2f}x the time of a process per run")
    same = numbers["process per run"] == numbers["workers keep Keras"]
    print("the same stateful test MSEs in every cell:", same)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True)
    run_parser = commands.add_parser("runs", help="whole runs of the lesson")
    run_parser.add_argument("--repeats", type=int, default=3)
    run_parser.add_argument("--backends", nargs="+", default=["tensorflow"])
    run_parser.add_argument("--against", nargs="+", default=[], metavar="PATH")
    run_parser.add_argument("--values", nargs="+", default=[], metavar="NAME=VALUE")
    run_parser.set_defaults(do=runs)
    engine_parser = commands.add_parser("engines", help="the sweep's way of running")
    engine_parser.add_argument("--pairs", type=int, default=3)
    engine_parser.add_argument("--jobs", type=int, default=os.cpu_count())
    engine_parser.set_defaults(do=engines)
    args = parser.parse_args()
    args.do(args)


if __name__ == "__main__":
    main()
