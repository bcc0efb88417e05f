"""The example's claim over a grid of tsteps x lahead, and over seeds, on every core.

    python sweep.py --tsteps 1 2 4 --lahead 1 2 4
    python sweep.py --tsteps 1 2 4 6 8 --lahead 1 2 4 6 8 --seeds 1 2 3 4 5
    python sweep.py --tsteps 1 2 --lahead 1 2 --window-order oldest-first --epochs 2 --jobs 1

Each run is `python lstm_stateful.py --tsteps T --lahead L [--seed S] FLAGS`, in a process of its
own, as many at a time as --jobs (default: every core). Any other flag is the example's and
goes to every run. Each run writes its figures, metrics.json and log.txt into a folder of its
own under OUTPUT_DIR/runs/; after each run, OUTPUT_DIR/sweep.json ({"cells": [...]}: one entry
per run, what its metrics.json holds) and OUTPUT_DIR/sweep.png are written again, so that Ctrl-C
keeps the runs done. sweep.png shows per cell how many seeds agree with the example's claim,
coloured by that share, and each model's median verdict.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np
from matplotlib.figure import Figure

EXAMPLE = pathlib.Path(__file__).with_name("lstm_stateful.py")
MODELS = ("stateful", "stateless")


def positive(text):
    """An integer from 1 up, for argparse."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def seed(text):
    """A seed numpy takes: an integer from 0 to 2**32 - 1, for argparse."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise ValueError(text)
    return value


def verdict(runs, name):
    """One model's verdict in a cell, as the example prints it: the share of the floor it
    recovered, or R² where the window shows every input (no floor); over seeds, the median."""
    models, median = [run[name] for run in runs], "median " if len(runs) > 1 else ""
    if models[0]["recovered"] is None:
        return f"{name}: {median}R² {statistics.median(m['r2'] for m in models):.3f}"
    return f"{name}: {median}{statistics.median(m['recovered'] for m in models):.1%} recovered"


def plot(runs, tsteps, lahead):
    """Each cell: the share of its seeds whose run agrees with the claim (green: all, red: none;
    blank: not run yet), how many, and each model's median verdict."""
    share = np.full((len(tsteps), len(lahead)), np.nan)
    fig = Figure(figsize=(max(8, 2.6 * len(lahead) + 1.5), 1.3 * len(tsteps) + 1.8))
    ax = fig.add_subplot()
    for row, t in enumerate(tsteps):
        for col, la in enumerate(lahead):
            cell = [r for r in runs if (r["params"]["tsteps"], r["params"]["lahead"]) == (t, la)]
            if not cell:
                continue
            agree = sum(r["agrees"] for r in cell)
            share[row, col] = agree / len(cell)
            lines = [f"{agree}/{len(cell)} agree"] if len(cell) > 1 else []
            lines += [verdict(cell, name) for name in MODELS]
            ax.text(col, row, "\n".join(lines), ha="center", va="center", fontsize=8)
    ax.imshow(share, origin="lower", cmap="RdYlGn", vmin=-0.25, vmax=1.25, aspect="auto")
    ax.set_xticks(range(len(lahead)), lahead)
    ax.set_yticks(range(len(tsteps)), tsteps)
    ax.set(xlabel="lahead (input window)", ylabel="tsteps (moving-average window)")
    first = runs[0]
    seeds = sorted({r["params"]["seed"] for r in runs})
    ax.set_title(
        "The claim (only the stateful model converges when lahead < tsteps, both when lahead >= "
        "tsteps), cell by cell:\ngreen where the runs agree with it, red where they differ "
        f"({first['window_order']} windows, learning rate {first['params']['learning_rate']}, "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})",
        fontsize=9,
    )
    fig.set_layout_engine("constrained")
    return fig


def save(runs, output_dir, tsteps, lahead):
    """sweep.json and sweep.png, each written under a temporary name, then renamed: never seen
    half-written."""
    json_path, png_path = output_dir / "sweep.json", output_dir / "sweep.png"
    pathlib.Path(f"{json_path}.partial").write_text(json.dumps({"cells": runs}, indent=2))
    os.replace(f"{json_path}.partial", json_path)
    plot(runs, tsteps, lahead).savefig(f"{png_path}.partial", format="png")
    os.replace(f"{png_path}.partial", png_path)


def start(t, la, s, flags, output_dir):
    """Start one run of the example in a process of its own; its output goes to log.txt."""
    folder = output_dir / "runs" / (f"tsteps{t}-lahead{la}" + ("" if s is None else f"-seed{s}"))
    folder.mkdir(exist_ok=True)
    command = [sys.executable, str(EXAMPLE), "--tsteps", str(t), "--lahead", str(la)]
    command += [] if s is None else ["--seed", str(s)]
    command += [*flags, "--no-show", "--output-dir", str(folder)]
    with open(folder / "log.txt", "w") as log:  # a session of its own: Ctrl-C reaches this
        # script only, which stops the runs
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return folder, process


def main():
    parser = argparse.ArgumentParser(
        description="The example's claim over tsteps x lahead and seeds; other flags go to "
        "lstm_stateful.py (see python lstm_stateful.py --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.error = lambda message: parser.exit(2, f"sweep.py: error: {message}\n")  # one line
    parser.add_argument("--tsteps", type=positive, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--lahead", type=positive, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument(
        "--seeds", type=seed, nargs="+", help="seeds of each cell (default: the example's one)"
    )
    parser.add_argument("--jobs", type=positive, default=os.cpu_count() or 1, help="runs at once")
    parser.add_argument("--output-dir", default="outputs/sweep", help="sweep.json, sweep.png")
    args, flags = parser.parse_known_args()
    output_dir = pathlib.Path(args.output_dir)
    try:
        (output_dir / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--output-dir {str(output_dir)!r} cannot be written: {error}")

    todo = [(t, la, s) for t in args.tsteps for la in args.lahead for s in args.seeds or [None]]
    seeds = args.seeds or "the example's"
    print(f"Sweeping tsteps {args.tsteps} x lahead {args.lahead}, seeds {seeds}: ", end="")
    print(f"{len(todo)} runs, {args.jobs} at a time", flush=True)
    runs, running, total, began = [], {}, len(todo), time.perf_counter()
    try:
        while todo or running:
            while todo and len(running) < args.jobs:
                folder, process = start(*todo.pop(0), flags, output_dir)
                running[folder] = process
            for folder, process in list(running.items()):
                if process.poll() is None:
                    continue
                del running[folder]
                if process.returncode != 0:  # a bad flag, say: say why, stop the others
                    last = (folder / "log.txt").read_text().strip().splitlines()[-1:] or [""]
                    print(f"sweep.py: a run failed ({folder}): {last[0]}", file=sys.stderr)
                    for other in running.values():
                        other.kill()
                    return process.returncode if process.returncode > 0 else 1
                run = json.loads((folder / "metrics.json").read_text())
                runs.append(run)
                runs.sort(key=lambda r: [r["params"][k] for k in ("tsteps", "lahead", "seed")])
                save(runs, output_dir, args.tsteps, args.lahead)
                report(run, len(runs), total, time.perf_counter() - began)
            time.sleep(0.05)
    except KeyboardInterrupt:
        for process in running.values():
            process.kill()
        print(f"\nInterrupted: {len(runs)} of {total} runs done, in {output_dir / 'sweep.json'}")
        return 130
    print(f"sweep.json and sweep.png written to {output_dir}")
    return 0


def report(run, done, total, seconds):
    """One line per run: its cell and seed, each model's verdict, and the time left."""
    params = run["params"]
    models = ", ".join(verdict([run], name) for name in MODELS)
    print(
        f"[{done}/{total}] tsteps={params['tsteps']} lahead={params['lahead']} "
        f"seed={params['seed']}: {models}: {'agrees' if run['agrees'] else 'DIFFERS'} | "
        f"{seconds:.0f} s elapsed, about {seconds / done * (total - done):.0f} s left",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
