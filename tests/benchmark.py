"""Benchmark: lstm_stateful.py with and without its speed-ups (--fast / --no-fast).

    python tests/benchmark.py              # whole runs, alternating, 3 of each: wall time, RSS, MSEs
    python tests/benchmark.py --repeats 5
    python tests/benchmark.py --breakdown  # where the time of one run of each goes

pytest does not collect this file; nothing here is a pass/fail test.
Extra arguments after `--` go to the script, e.g. `-- --batch-size 4 --layout contiguous`.
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
MODES = ("--fast", "--no-fast")


def one_run(mode, extra, output_dir):
    """Run the whole script once as its own process; wall seconds, peak RSS (MiB) and metrics."""
    command = [sys.executable, str(SCRIPT), mode, "--no-show", "--output-dir", output_dir, *extra]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory, not all children's
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode()
    process.stderr.close()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stderr}")
    metrics = json.loads(Path(output_dir, "metrics.json").read_text())
    return seconds, usage.ru_maxrss / 1024, metrics  # ru_maxrss is in KiB on Linux


def compare(repeats, extra):
    runs = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for mode in MODES:  # alternate, so that a slow spell of the machine hits both
                seconds, rss, metrics = one_run(mode, extra, os.path.join(tmp, f"{mode}-{i}"))
                runs[mode].append((seconds, rss, metrics))
                print(f"run {i + 1}/{repeats} {mode:<9} {seconds:6.1f} s  {rss:6.0f} MiB", flush=True)

    print()
    print(f"{'mode':<10} {'median s':>9} {'peak RSS MiB':>13} {'stateful MSE':>13} {'stateless MSE':>14}")
    medians, peaks = {}, {}
    for mode in MODES:
        medians[mode] = statistics.median(seconds for seconds, _, _ in runs[mode])
        peaks[mode] = max(rss for _, rss, _ in runs[mode])
        metrics = runs[mode][0][2]
        print(
            f"{mode:<10} {medians[mode]:>9.1f} {peaks[mode]:>13.0f} "
            f"{metrics['stateful']['test_mse']:>13.4e} {metrics['stateless']['test_mse']:>14.4e}"
        )
    for mode in MODES:  # the same seed must give the same numbers every time
        mses = {(m["stateful"]["test_mse"], m["stateless"]["test_mse"]) for _, _, m in runs[mode]}
        if len(mses) != 1:
            print(f"WARNING: {mode} gave different MSEs across repeats: {sorted(mses)}")
    fast, slow = runs["--fast"][0][2], runs["--no-fast"][0][2]
    print()
    print(f"speed-up (median --no-fast / median --fast): {medians['--no-fast'] / medians['--fast']:.2f}x")
    print(f"peak memory (--fast / --no-fast): {peaks['--fast'] / peaks['--no-fast']:.2f}x")
    for name in ("stateful", "stateless"):
        a, b = fast[name]["test_mse"], slow[name]["test_mse"]
        print(
            f"{name} test MSE: relative difference {abs(a - b) / b:.1e}; "
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
keras.Model.fit = lambda self, *a, **k: original_fit(self, *a, callbacks=[Clock()], **k)
timed(keras.Model, "predict", "prediction")
for name in ("plot_input", "plot_results", "plot_loss", "finish_figures"):
    timed(ls, name, "plotting")
t = time.perf_counter()
ls.main([*sys.argv[2:], "--no-show"])
times["main"] = time.perf_counter() - t
# each model's first epoch also traces and compiles its train and test functions
first = [next(e for e in epochs if e[0] == model) for model in dict.fromkeys(m for m, _, _ in epochs)]
steady_train = statistics.median(e[1] for e in epochs if e not in first)
steady_val = statistics.median(e[2] for e in epochs if e not in first)
times["compilation (first epoch's extra)"] = sum(e[1] - steady_train + e[2] - steady_val for e in first)
times["training steps"] = sum(e[1] for e in epochs) - sum(e[1] - steady_train for e in first)
times["validation"] = sum(e[2] for e in epochs) - sum(e[2] - steady_val for e in first)
times["other (data, printing, Keras set-up)"] = times["main"] - sum(
    times[k] for k in ("compilation (first epoch's extra)", "training steps", "validation", "prediction", "plotting")
)
print(json.dumps(times))
"""


def breakdown(extra):
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", PROFILE, str(SCRIPT.parent), mode, "--output-dir", tmp, *extra],
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="whole runs of each mode")
    parser.add_argument("--breakdown", action="store_true", help="time the phases of one run of each mode")
    parser.add_argument("extra", nargs="*", help="arguments for lstm_stateful.py, after --")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, script {SCRIPT.name} {' '.join(args.extra)}")
    if args.breakdown:
        breakdown(args.extra)
    else:
        compare(args.repeats, args.extra)


if __name__ == "__main__":
    main()
