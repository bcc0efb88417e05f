"""Benchmark: whole runs of lstm_stateful.py, alternating with the runs it is compared with.

    python tests/benchmark.py                          # 3 runs: wall time, peak memory, MSEs
    python tests/benchmark.py --backends tensorflow jax torch --repeats 5
    python tests/benchmark.py --against old.py         # another version of the example
    python tests/benchmark.py --original lstm_stateful_keras2.py --backends tensorflow
    python tests/benchmark.py -- --tsteps 3 --lahead 3  # flags for the example

--against PATH [PATH ...] runs other copies of the example (an earlier commit's, say: `git show
REV:lstm_stateful.py > old.py`) with the same flags, on each backend. --original PATH runs the
Keras 2 original, as its authors wrote it, which you fetch yourself (docs/changes.md says where
it lives) and which needs `pip install tf_keras`. Runs alternate, so that a slow spell of the
machine hits every kind alike. Peak memory comes from os.wait4 (POSIX only). pytest does not
collect this file: nothing here is a pass/fail test.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "lstm_stateful.py"


def one_run(command, env, folder):
    """One command in a process of its own: wall seconds, peak RSS (MiB), its metrics.json."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=folder
    )
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode()
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{stderr}")
    path = Path(folder, "metrics.json")
    return seconds, usage.ru_maxrss / 1024, json.loads(path.read_text()) if path.exists() else None


def kinds(backends, against, original, flags):
    """(label, command, environment) of every kind of run to time."""
    env = {**os.environ, "MPLBACKEND": "Agg"}  # figures saved, never shown
    scripts = [("this", SCRIPT)] + [(Path(path).stem, Path(path).resolve()) for path in against]
    runs = [
        (
            f"{backend} {name}",
            [sys.executable, path, *flags, "--output-dir", "."],
            {**env, "KERAS_BACKEND": backend},
        )  # fmt: skip
        for backend in backends
        for name, path in scripts
    ]
    if original:  # Keras 2: TensorFlow only
        env = {**env, "TF_CPP_MIN_LOG_LEVEL": "3"}
        runs.append(("Keras 2 original", [sys.executable, Path(original).resolve()], env))
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind")
    parser.add_argument(
        "--backends", nargs="+", default=[os.environ.get("KERAS_BACKEND", "tensorflow")]
    )
    parser.add_argument("--against", metavar="PATH", nargs="+", default=[],
                        help="other versions of lstm_stateful.py to time")  # fmt: skip
    parser.add_argument("--original", metavar="PATH", help="the Keras 2 original, fetched")
    args, flags = parser.parse_known_args()
    flags = [flag for flag in flags if flag != "--"]
    runs = kinds(args.backends, args.against, args.original, flags)
    results = {label: [] for label, _, _ in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for n, (label, command, env) in enumerate(runs):
                folder = Path(tmp, f"{n}-{i}")
                folder.mkdir()
                results[label].append(one_run(command, env, folder))
                seconds, rss, _ = results[label][-1]
                print(f"run {i + 1}/{args.repeats} {label:<24} {seconds:6.1f} s {rss:6.0f} MiB")
    print(f"\n{'run':<24} {'median s':>8} {'peak MiB':>8}   stateful MSE   stateless MSE")
    for label, measured in results.items():
        median = statistics.median(seconds for seconds, _, _ in measured)
        rss = max(rss for _, rss, _ in measured)
        metrics = measured[0][2]
        mses = (
            ""
            if metrics is None
            else "   ".join(
                f"{metrics[name]['test_mse']:.6e}" for name in ("stateful", "stateless")
            )
        )
        print(f"{label:<24} {median:8.1f} {rss:8.0f}   {mses}")


if __name__ == "__main__":
    main()
