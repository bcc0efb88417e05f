"""The example's claim over a grid of tsteps x lahead, and over seeds, on every core or a cluster.

    python sweep.py --tsteps 1 2 4 --lahead 1 2 4
    python sweep.py --tsteps 1 2 4 6 8 --lahead 1 2 4 6 8 --seeds 1 2 3 4 5
    python sweep.py --tsteps 1 2 --lahead 1 2 --window-order oldest-first --epochs 2 --jobs 1
    python sweep.py --tsteps 1 2 4 --lahead 1 2 4 --scheduler tcp://HOST:8786

Each run is the example, run as `python lstm_stateful.py --tsteps T --lahead L [--seed S] FLAGS`
runs it, in a worker process that keeps Keras loaded from one run to the next: --jobs processes
on this machine (default: one per core), or, with --scheduler, the workers of a Dask cluster
(`pip install -r requirements-cluster.txt`; each worker started with `--nthreads 1`). Any flag
not listed here is the example's and goes to every run. Each run's figures, metrics.json and
log.txt land in OUTPUT_DIR/runs/<its cell>/ on this machine; after each run OUTPUT_DIR/sweep.json
({"cells": [...]}: what each run's metrics.json holds) and OUTPUT_DIR/sweep.png are written
again, so that Ctrl-C keeps the runs done. sweep.png shows per cell how many seeds agree with
the example's claim, coloured by that share, and each model's median and worst verdict.
"""

import argparse
import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import pathlib
import runpy
import signal
import statistics
import sys
import tempfile
import time
import uuid

import numpy as np
from matplotlib.figure import Figure

EXAMPLE = pathlib.Path(__file__).with_name("lstm_stateful.py")
MODELS = ("stateful", "stateless")
STARTS = "lstm_stateful-sweep-starts"  # the Dask event topic: each run says when it starts


def run_example(source, argv, start_event=None):
    """Run the example (its source text) once in this process, as `python lstm_stateful.py ARGV`
    does, into a temporary folder. Returns its exit status and the files it wrote, by name, with
    what it printed as log.txt. Nothing of the run stays for the next one: its namespace is its
    own, and Keras's session and the figures are cleared after it."""
    if start_event is not None:  # on a Dask worker: the sweep counts the starts of each run
        from distributed import get_worker

        get_worker().log_event(STARTS, start_event)
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")  # figures saved, never shown
    log, status, argv_before = io.StringIO(), 0, sys.argv
    with tempfile.TemporaryDirectory() as folder:
        script, output_dir = pathlib.Path(folder, "lstm_stateful.py"), pathlib.Path(folder, "out")
        script.write_text(source, encoding="utf-8")
        sys.argv = [str(script), *argv, "--output-dir", str(output_dir)]
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                runpy.run_path(str(script), run_name="__main__")
        except SystemExit as stop:  # a refusal: exit status 2
            status = stop.code if isinstance(stop.code, int) else 1
        finally:
            sys.argv = argv_before
            plt.close("all")
            if "keras" in sys.modules:
                sys.modules["keras"].utils.clear_session()
        files = {path.name: path.read_bytes() for path in output_dir.glob("*")}
    return status, files | {"log.txt": log.getvalue().encode()}


def leave_ctrl_c_to_the_sweep():
    """A local worker's start: Ctrl-C in a terminal reaches every process; the sweep stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    recovered, or R² where the window shows every input (no floor); over seeds, the median and
    the worst seed's."""
    scores = [run[name] for run in runs]
    key, unit = ("r2", "R² {:.3f}") if scores[0]["recovered"] is None else ("recovered", "{:.1%}")
    values = [score[key] for score in scores]
    if len(runs) == 1:
        return f"{name}: {unit.format(values[0])}" + (" recovered" if key == "recovered" else "")
    median, worst = unit.format(statistics.median(values)), unit.format(min(values))
    return f"{name}: median {median}, worst {worst}"


def plot(runs, tsteps, lahead):
    """Each cell: the share of its seeds whose run agrees with the claim (green: all, red: none;
    blank: not run yet), how many, and each model's verdict."""
    share = np.full((len(tsteps), len(lahead)), np.nan)
    size = (max(8, 2.6 * len(lahead) + 2.5), 1.3 * len(tsteps) + 1.8)
    fig = Figure(figsize=size, layout="constrained")
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
    image = ax.imshow(share, origin="lower", cmap="RdYlGn", vmin=-0.25, vmax=1.25, aspect="auto")
    key = fig.colorbar(image, ax=ax, ticks=[0, 0.5, 1], shrink=0.9)
    key.ax.set_ylim(0, 1)  # the share runs from 0 to 1; the colours, wider, stay mild
    key.set_label("share of seeds whose run agrees with the claim\n(not how well a model fits)")
    ax.set_xticks(range(len(lahead)), lahead)
    ax.set_yticks(range(len(tsteps)), tsteps)
    ax.set(xlabel="lahead (input window), one column per value run, not to scale",
           ylabel="tsteps (inputs in the mean), one row per value")  # fmt: skip
    first = runs[0]["params"]
    seeds = sorted({r["params"]["seed"] for r in runs})
    ax.set_title(
        "The claim (only the stateful model converges when lahead < tsteps, both when lahead >= "
        "tsteps), cell by cell:\ngreen where the runs agree with it, red where they do not "
        f"({first['window_order']} windows, learning rate {first['learning_rate']}, "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})",
        fontsize=9,
    )
    return fig


def write_whole(path, content):
    """Write bytes under a temporary name, then rename: Ctrl-C never leaves half a file."""
    pathlib.Path(f"{path}.partial").write_bytes(content)
    os.replace(f"{path}.partial", path)


def save(runs, output_dir, tsteps, lahead):
    """sweep.json and sweep.png, each written whole."""
    write_whole(output_dir / "sweep.json", json.dumps({"cells": runs}, indent=2).encode())
    png = io.BytesIO()
    plot(runs, tsteps, lahead).savefig(png, format="png")
    write_whole(output_dir / "sweep.png", png.getvalue())


def report(run, done, total, seconds, retried):
    """One line per run: its cell and seed, each model's verdict, and the time left."""
    params = run["params"]
    models = ", ".join(verdict([run], name) for name in MODELS)
    print(
        f"[{done}/{total}] tsteps={params['tsteps']} lahead={params['lahead']} "
        f"seed={params['seed']}: {models}: {'agrees' if run['agrees'] else 'DIFFERS'} | "
        f"{seconds:.0f} s elapsed, about {seconds / done * (total - done):.0f} s left"
        + (" (retried: its worker died)" if retried else ""),
        flush=True,
    )


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
    parser.add_argument(
        "--jobs", type=positive, default=os.cpu_count() or 1, help="runs at once on this machine"
    )
    parser.add_argument("--scheduler", help="a Dask scheduler's address, to run on its workers")
    parser.add_argument("--output-dir", default="outputs/sweep", help="sweep.json, sweep.png")
    args, flags = parser.parse_known_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as Ctrl-C does
    output_dir = pathlib.Path(args.output_dir)
    try:
        (output_dir / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--output-dir {str(output_dir)!r} cannot be written: {error}")
    source = EXAMPLE.read_text(encoding="utf-8")

    if args.scheduler:
        try:
            from distributed import Client
        except ImportError:
            parser.error("--scheduler needs Dask: pip install -r requirements-cluster.txt")
        try:
            client = Client(args.scheduler, timeout="10s")
        except OSError as error:
            parser.error(f"--scheduler {args.scheduler}: {error}")
        threads = {w["nthreads"] for w in client.scheduler_info()["workers"].values()}
        if threads - {1}:  # a worker's runs share its process: one at a time
            client.close()
            parser.error("start each Dask worker with --nthreads 1 (one run at a time)")
        executor, where = client.get_executor(pure=False), f"on the workers of {args.scheduler}"
        sweep_id = uuid.uuid4().hex  # tells this sweep's starts from other sweeps'
    else:
        context = multiprocessing.get_context("spawn")  # new processes, alike on every system
        executor = concurrent.futures.ProcessPoolExecutor(
            args.jobs, mp_context=context, initializer=leave_ctrl_c_to_the_sweep
        )
        client, where = None, f"{args.jobs} at a time"

    todo = [(t, la, s) for t in args.tsteps for la in args.lahead for s in args.seeds or [None]]
    seeds = args.seeds or "the example's"
    print(f"Sweeping tsteps {args.tsteps} x lahead {args.lahead}, seeds {seeds}: ", end="")
    print(f"{len(todo)} runs, {where}", flush=True)
    futures = {}
    for t, la, s in todo:
        name = f"tsteps{t}-lahead{la}" + ("" if s is None else f"-seed{s}")
        argv = ["--tsteps", str(t), "--lahead", str(la), *([] if s is None else ["--seed", str(s)])]
        event = f"{sweep_id}/{name}" if client else None
        futures[executor.submit(run_example, source, [*argv, *flags], event)] = name
    runs, began = [], time.perf_counter()
    try:
        for future in concurrent.futures.as_completed(futures):
            name, folder = futures[future], output_dir / "runs" / futures[future]
            try:
                status, files = future.result()
            except Exception as error:  # a local worker that died, say
                print(f"sweep.py: a run failed ({folder}): {error!r}", file=sys.stderr)
                return stop(executor, futures, client, 1)
            folder.mkdir(exist_ok=True)
            for file_name, content in files.items():
                write_whole(folder / file_name, content)
            if status != 0:  # a bad flag, say: its own line, and no more runs
                last = files["log.txt"].decode().strip().splitlines()[-1:] or [""]
                print(f"sweep.py: a run failed ({folder}): {last[0]}", file=sys.stderr)
                return stop(executor, futures, client, status)
            run = json.loads(files["metrics.json"])
            runs.append(run)
            runs.sort(key=lambda r: [r["params"][k] for k in ("tsteps", "lahead", "seed")])
            save(runs, output_dir, args.tsteps, args.lahead)
            starts = [event for _, event in client.get_events(STARTS)] if client else []
            retried = client is not None and starts.count(f"{sweep_id}/{name}") > 1
            report(run, len(runs), len(todo), time.perf_counter() - began, retried)
    except KeyboardInterrupt:
        print(
            f"\nInterrupted: {len(runs)} of {len(todo)} runs done, in {output_dir / 'sweep.json'}"
        )
        return stop(executor, futures, client, 130)
    print(f"sweep.json and sweep.png written to {output_dir}")
    return stop(executor, futures, client, 0)


def stop(executor, futures, client, status):
    """Cancel the runs not started; end this machine's worker processes, and leave the cluster."""
    workers = list((getattr(executor, "_processes", None) or {}).values())  # local ones only
    for future in futures:
        future.cancel()
    for process in workers:  # a running run too (ProcessPoolExecutor has no public way to stop
        process.kill()  # its processes before Python 3.14)
    executor.shutdown(wait=False)
    if client is not None:
        client.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
