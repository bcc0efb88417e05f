"""Benchmark: lstm_stateful.py with and without its speed-ups (--fast / --no-fast), per backend.

    python tests/benchmark.py              # whole runs, alternating, 3 of each: time, RSS, MSEs
    python tests/benchmark.py --repeats 5
    python tests/benchmark.py --backends tensorflow jax torch --original  # all, and Keras 2
    python tests/benchmark.py --modes fast --input-lens 1250 1262  # a round and an awkward size

--backends names the Keras backends to run on (each must be installed; default: the one Keras
picks here). --original also times the Keras 2 original (tests/original_keras2.py, which needs
`pip install tf_keras`) in the same alternation. pytest does not collect this file; nothing here
is a pass/fail test. Extra arguments after `--` go to the script, e.g. `-- --tsteps 3 --lahead 3`.
--input-lens runs each size as a kind of its own. Peak memory comes from os.wait4 (POSIX only).
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "lstm_stateful.py"
ORIGINAL = Path(__file__).resolve().parent / "original_keras2.py"
MODES = ("--fast", "--no-fast")


def one_run(command, env, output_dir):
    """Run one command in a process of its own: wall seconds, peak RSS (MiB), any metrics.json."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=output_dir
    )
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory, not all children's
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode()
    process.stderr.close()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stderr}")
    path = Path(output_dir, "metrics.json")
    metrics = json.loads(path.read_text()) if path.exists() else None
    return seconds, usage.ru_maxrss / 1024, metrics  # ru_maxrss is in KiB on Linux


def configurations(backends, modes, original, extra, sizes=(None,)):
    """(label, command, environment) of every kind of run to time."""
    runs = []
    for backend, size, mode in ((b, n, m) for b in backends for n in sizes for m in modes):
        command = [sys.executable, str(SCRIPT), mode, "--no-show", "--output-dir", ".", *extra]
        label = f"{backend} {mode}"
        if size:
            command += ["--input-len", str(size)]
            label += f" n={size}"
        runs.append((label, command, {**os.environ, "KERAS_BACKEND": backend}))
    if original:
        # Keras 2 runs on TensorFlow; MPLBACKEND=Agg: its plt.show() would wait for a window
        env = {**os.environ, "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3"}
        runs.append(("Keras 2 original", [sys.executable, str(ORIGINAL)], env))
    return runs


def compare(repeats, backends, modes, original, extra, sizes):
    runs = configurations(backends, modes, original, extra, sizes)
    results = {label: [] for label, _, _ in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for n, (label, command, env) in enumerate(
                runs
            ):  # alternate: a slow spell hits every kind
                output_dir = os.path.join(tmp, f"{n}-{i}")
                os.makedirs(output_dir)
                seconds, rss, metrics = one_run(command, env, output_dir)
                results[label].append((seconds, rss, metrics))
                print(
                    f"run {i + 1}/{repeats} {label:<22} {seconds:6.1f} s  {rss:6.0f} MiB",
                    flush=True,
                )

    print()
    print(
        f"{'run':<22} {'median s':>9} {'peak RSS MiB':>13} "
        f"{'stateful MSE (R²)':>20} {'stateless MSE (R²)':>20}"
    )
    medians = {}
    for label, _, _ in runs:
        medians[label] = statistics.median(seconds for seconds, _, _ in results[label])
        peak = max(rss for _, rss, _ in results[label])
        metrics = results[label][0][2]
        scores = [
            "" if metrics is None else f"{metrics[m]['test_mse']:.4e} ({metrics[m]['r2']:.3f})"
            for m in ("stateful", "stateless")
        ]
        print(f"{label:<22} {medians[label]:>9.1f} {peak:>13.0f} {scores[0]:>20} {scores[1]:>20}")
    for label, _, _ in runs:  # the same seed must give the same numbers every time
        mses = {
            (m["stateful"]["test_mse"], m["stateless"]["test_mse"])
            for _, _, m in results[label]
            if m
        }
        if len(mses) > 1:
            print(f"WARNING: {label} gave different MSEs across repeats: {sorted(mses)}")
    print()
    if original:
        for label, _, _ in runs[:-1]:
            print(
                f"{label}: {medians['Keras 2 original'] / medians[label]:.2f}x "
                "as fast as the Keras 2 original"
            )
    for backend, size in ((b, n) for b in backends for n in sizes):
        if len(modes) == 2:
            at = f" n={size}" if size else ""
            fast = results[f"{backend} --fast{at}"][0][2]
            slow = results[f"{backend} --no-fast{at}"][0][2]
            ratio = medians[f"{backend} --no-fast{at}"] / medians[f"{backend} --fast{at}"]
            print(f"{backend}{at}: speed-up (median --no-fast / median --fast) {ratio:.2f}x")
            for name in ("stateful", "stateless"):
                a, b = fast[name]["test_mse"], slow[name]["test_mse"]
                print(
                    f"  {name} test MSE: relative difference {abs(a - b) / b:.1e}; "
                    f"converged {fast[name]['converged']} / {slow[name]['converged']}"
                )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="whole runs of each kind")
    parser.add_argument(
        "--backends", nargs="+", default=[os.environ.get("KERAS_BACKEND", "tensorflow")]
    )
    parser.add_argument(
        "--modes", nargs="+", choices=("fast", "no-fast"), default=["fast", "no-fast"]
    )
    parser.add_argument(
        "--original", action="store_true", help="also time the Keras 2 original (needs tf_keras)"
    )
    parser.add_argument(
        "--input-lens", nargs="+", type=int, default=[None], help="sizes to run, each a kind"
    )
    parser.add_argument("extra", nargs="*", help="arguments for lstm_stateful.py, after --")
    args = parser.parse_args()
    for name in [*args.backends, *(["tf_keras"] if args.original else [])]:
        if importlib.util.find_spec(name) is None:
            parser.error(f"{name} is not installed")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"script {SCRIPT.name} {' '.join(args.extra)}"
    )
    compare(
        args.repeats,
        args.backends,
        [f"--{mode}" for mode in args.modes],
        args.original,
        args.extra,
        args.input_lens,
    )


if __name__ == "__main__":
    main()
