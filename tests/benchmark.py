"""Benchmark: lstm_stateful.py with and without its speed-ups (--fast / --no-fast), per backend.

    python tests/benchmark.py              # whole runs, alternating, 3 of each: time, RSS, MSEs
    python tests/benchmark.py --repeats 5
    python tests/benchmark.py --backends tensorflow jax torch --original  # all, and Keras 2
    python tests/benchmark.py --breakdown  # where the time of one run of each mode goes
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


# ---------------------------------------------------------------- breakdown
PROFILE = r"""
import json, statistics, sys, time
start = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import lstm_stateful as ls
import keras
times = {"import": time.perf_counter() - start}
epochs = []  # (model number, train seconds, validation seconds) per epoch


class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.v = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        epochs.append((self.model.name, self.v - self.t, now - self.v))


def timed(owner, name, key):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times[key] = times.get(key, 0) + time.perf_counter() - t

    setattr(owner, name, wrapper)
    return original


original_fit = keras.Model.fit
keras.Model.fit = lambda self, *a, **k: original_fit(
    self, *a, **{**k, "callbacks": [*k.get("callbacks", []), Clock()]}
)
timed(keras.Model, "predict", "prediction")
for name in ("plot_input", "plot_results", "plot_loss", "finish_figures"):
    timed(ls, name, "plotting")
t = time.perf_counter()
ls.main([*sys.argv[2:], "--no-show"])
times["main"] = time.perf_counter() - t
# each model's first epoch also traces and compiles its train and test functions
models = dict.fromkeys(m for m, _, _ in epochs)
first = [next(e for e in epochs if e[0] == model) for model in models]
steady_train = statistics.median(e[1] for e in epochs if e not in first)
steady_val = statistics.median(e[2] for e in epochs if e not in first)
compilation = sum(e[1] - steady_train + e[2] - steady_val for e in first)
times["compilation (first epoch's extra)"] = compilation
times["training steps"] = sum(e[1] for e in epochs) - sum(e[1] - steady_train for e in first)
times["validation"] = sum(e[2] for e in epochs) - sum(e[2] - steady_val for e in first)
measured = ("compilation (first epoch's extra)", "training steps", "validation", "prediction")
times["other (data, printing, Keras set-up)"] = times["main"] - sum(
    times[k] for k in (*measured, "plotting")
)
print(json.dumps(times))
"""


def breakdown(extra):
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            start = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    PROFILE,
                    str(SCRIPT.parent),
                    mode,
                    "--output-dir",
                    tmp,
                    *extra,
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                sys.exit(done.stderr)
            rows[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            rows[mode]["whole process"] = time.perf_counter() - start
    keys = [
        "import",
        "compilation (first epoch's extra)",
        "training steps",
        "validation",
        "prediction",
        "plotting",
        "other (data, printing, Keras set-up)",
        "whole process",
    ]
    print(f"{'seconds':<38} {'--no-fast':>9} {'--fast':>9}")
    for key in keys:
        print(f"{key:<38} {rows['--no-fast'][key]:>9.2f} {rows['--fast'][key]:>9.2f}")


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
        "--breakdown", action="store_true", help="time the phases of one run of each mode"
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
    if args.breakdown:
        breakdown(args.extra)
    else:
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
