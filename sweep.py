"""Run lstm_stateful.py with other values: one run, or a grid of tsteps x lahead x seed.

    python sweep.py --tsteps 3 --lahead 3
    python sweep.py --tsteps 1 2 4 --lahead 1 2 4 --seed 1 2 3
    python sweep.py --tsteps 1 2 4 --lahead 1 2 4 --scheduler tcp://HOST:8786

Each run is the lesson as papermill runs a notebook: its source, with the run's values
assigned in a cell right after its Parameters cell, run top to bottom, and a last cell,
this file's `write_metrics`, that saves what the lesson computed. On this machine the
runs go to --jobs worker processes; each runs one run at a time and keeps Keras loaded
from one to the next, clearing its session in between. With --scheduler they go to the
workers of a Dask cluster, each run in a new process there. Each run's figures, log.txt
and metrics.json land in OUTPUT_DIR/runs/<its name>/. After each run,
OUTPUT_DIR/sweep.json (every run's metrics.json) and OUTPUT_DIR/sweep.png (the claim,
cell by cell) are written again, so that Ctrl-C keeps the runs done.
"""

import argparse
import ast
import concurrent.futures
import contextlib
import functools
import inspect
import io
import json
import math
import os
import pathlib
import queue
import re
import runpy
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

LESSON = pathlib.Path(__file__).resolve().with_name("lstm_stateful.py")
MODELS = ("stateful", "stateless")
CHOICES = {
    "layout": ["interleaved", "contiguous"],
    "window_order": ["newest-first", "oldest-first"],
}
GRID = ("tsteps", "lahead", "seed")  # the parameters that take several values
RAISED = 3  # the exit status of a run whose lesson raised an exception


def parameters(source):
    """The lesson's Parameters cell: {name: (default, its comment)}, in order."""
    cell = re.search(r'^# %% tags=\["parameters"\]\n(.*?)^# %%', source, re.M | re.S)
    lines = re.findall(r"^(\w+) = (.+?)  # (.+)$", cell.group(1), re.M)
    return {name: (ast.literal_eval(value), text) for name, value, text in lines}


def with_values(source, values):
    """The lesson's source with `values` assigned in a cell right after its Parameters
    cell, as papermill injects a notebook's parameters."""
    cell = re.search(r'^# %% tags=\["parameters"\]\n.*?(?=^# %%)', source, re.M | re.S)
    assignments = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    injected = f'# %% tags=["injected-parameters"]\n{assignments}\n'
    return source[: cell.end()] + injected + source[cell.end() :]


def write_metrics(namespace, names):
    """The lesson's last cell in a sweep: its parameters and scores, in metrics.json in
    its output_dir. (sweep.py appends this function's source to the lesson.)"""
    import json
    import os

    keras = namespace["keras"]

    def plain(value):  # numpy's numbers and arrays as JSON's
        return value.tolist() if hasattr(value, "tolist") else value

    params = {name: namespace[name] for name in names}
    metrics = {"backend": keras.backend.backend(), "keras": keras.version()}
    metrics |= {"params": params, "agrees": bool(namespace["agrees"])}
    epochs = namespace["history_stateful"]  # a fit() per epoch
    losses = {"stateless": namespace["history_stateless"]}
    losses["stateful"] = {key: [h[key][0] for h in epochs] for key in epochs[0]}
    for name, scores in namespace["results"].items():
        scores = {
            key: plain(value) for key, value in scores.items() if key != "residual"
        }
        metrics[name] = scores | losses.get(name, {})
    path = os.path.join(namespace["output_dir"], "metrics.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(metrics, file, indent=2)


def program(source, values):
    """What a run executes: the lesson with its values, then write_metrics."""
    names = [name for name in parameters(source) if name != "output_dir"]
    last = f"\n# %%\n{inspect.getsource(write_metrics)}\n"
    last += f"write_metrics(globals(), {names!r})\n"
    return with_values(source, values) + last


def run_here(folder):
    """Run folder/lesson.py in this process, in that folder, as `python lesson.py` would
    there, what it prints going to folder/log.txt. Returns 0, or RAISED with the
    traceback in the log. Keras's session and the figures are cleared after it, so that
    a run after it in the same process starts as in a new one."""
    before = os.getcwd()
    os.chdir(folder)
    with open("log.txt", "w", encoding="utf-8") as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                runpy.run_path("lesson.py", run_name="__main__")
                return 0
            except BaseException:
                traceback.print_exc()
                return RAISED
            finally:
                os.chdir(before)
                if "keras" in sys.modules:
                    sys.modules["keras"].utils.clear_session()
                if "matplotlib.pyplot" in sys.modules:
                    sys.modules["matplotlib.pyplot"].close("all")


def serve():
    """A worker process's loop: run each folder named on standard input, one a line, and
    answer each with its status, a line on standard output. The worker exits when its
    standard input closes, which happens when the sweep ends, however it ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal: the sweep's
    folders = queue.Queue()

    def read():
        for line in sys.stdin:
            folders.put(line.rstrip("\n"))
        os._exit(1)

    threading.Thread(target=read, daemon=True).start()
    answers = sys.stdout
    while True:
        status = run_here(folders.get())
        print(status, file=answers, flush=True)


def written(folder):
    """The files a run wrote, by name: those in folder/out, and log.txt."""
    files = {
        path.name: path.read_bytes() for path in pathlib.Path(folder, "out").glob("*")
    }
    return files | {"log.txt": pathlib.Path(folder, "log.txt").read_bytes()}


def on_a_dask_worker(code, worker):
    """A run on a Dask worker: in a process of its own, which a worker started with the
    code `worker` runs (Dask itself runs again a run whose worker died)."""
    workers = Workers(1, worker)
    try:
        return workers.run(code)
    finally:
        workers.stop()


class Workers:
    """Worker processes, each running one run at a time and keeping Keras loaded from
    one to the next: the code `worker` (WORKER: serve()). A worker that dies (killed for
    want of memory, say) is replaced, and its run starts again, 3 times at most."""

    def __init__(self, jobs, worker):
        self.worker, self.lock, self.started, self.stopped = (
            worker,
            threading.Lock(),
            [],
            False,
        )
        self.free = queue.Queue()  # workers between runs; None: one not started yet
        for _ in range(jobs):
            self.free.put(None)

    def start(self):
        with self.lock:  # stop() kills every worker started before it, and no more
            if self.stopped:
                return None
            self.started.append(
                subprocess.Popen(
                    [sys.executable, "-c", self.worker],
                    env={**os.environ, "MPLBACKEND": "Agg"},  # figures never shown
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )  # fmt: skip
            )
            return self.started[-1]

    def run(self, code):
        """A run of `code` in a free worker: its status (None if it never ended), its
        files and how many times it started."""
        worker = self.free.get()
        try:
            for attempt in range(1, 4):
                if worker is None or worker.poll() is not None:
                    worker = self.start()
                    if worker is None:  # the sweep has stopped
                        return None, {}, attempt
                with tempfile.TemporaryDirectory() as folder:
                    pathlib.Path(folder, "lesson.py").write_text(code, encoding="utf-8")
                    try:
                        print(folder, file=worker.stdin, flush=True)
                        answer = worker.stdout.readline()
                    except OSError:  # a worker that died before it read the line
                        answer = ""
                    files = written(folder) if answer else {}
                if answer:
                    return int(answer), files, attempt
                with contextlib.suppress(OSError):  # the line it never read, if any
                    worker.stdin.close()
                worker = None  # it died: the run starts again in a new one
            return None, files, attempt
        finally:
            self.free.put(worker)

    def stop(self):
        """Kill every worker, and start no more."""
        with self.lock:
            self.stopped = True
            for worker in self.started:
                worker.kill()


# A worker process's code, which needs nothing but Python's own modules: it can run on
# any machine of a cluster.
WORKER = "import contextlib, os, queue, runpy, signal, sys, threading, traceback\n"
WORKER += (
    f"RAISED = {RAISED}\n" + inspect.getsource(run_here) + inspect.getsource(serve)
)
WORKER += "serve()\n"


def physical_memory():
    """This machine's memory in bytes, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except AttributeError:  # Windows has no os.sysconf
        import ctypes

        kilobytes = ctypes.c_ulonglong()
        kernel32 = ctypes.windll.kernel32
        if kernel32.GetPhysicallyInstalledSystemMemory(ctypes.byref(kilobytes)):
            return kilobytes.value * 1024
    except (ValueError, OSError):  # a system that does not say
        pass
    return None


def memory_needed(values):
    """About how many bytes a run of the lesson takes at its peak (docs/speed.md)."""
    input_len, lahead = values["input_len"], values["lahead"]
    return 2**30 + 2000 * input_len + 100 * input_len * lahead


def size(number):
    """Bytes, for people: 9.7 TiB."""
    exponent = min(int(math.log(max(number, 1), 1024)), 4)
    unit = ["bytes", "KiB", "MiB", "GiB", "TiB"][exponent]
    return f"{number / 1024**exponent:.1f} {unit}"


def verdict(runs, name):
    """One model's verdict in a cell, as the lesson prints it: the share of the floor it
    recovered, or R² where the window shows every input (no floor). Over seeds, the
    median and the worst seed's."""
    scores = [run[name] for run in runs]
    key, unit = (
        ("r2", "R² {:.3f}")
        if scores[0]["recovered"] is None
        else ("recovered", "{:.1%}")
    )
    values = [score[key] for score in scores]
    if len(runs) == 1:
        return f"{name}: {unit.format(values[0])}" + (
            " recovered" if key == "recovered" else ""
        )
    median, worst = unit.format(statistics.median(values)), unit.format(min(values))
    return f"{name}: median {median}, worst {worst}"


def plot(runs, tsteps, lahead):
    """Each cell: the share of its seeds whose run agrees with the claim (green: all,
    red: none; blank: not run yet), how many, and each model's verdict."""
    import numpy as np
    from matplotlib.figure import Figure

    share = np.full((len(tsteps), len(lahead)), np.nan)
    fig = Figure(figsize=(max(8, 2.6 * len(lahead) + 2.5), 1.3 * len(tsteps) + 1.8))
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    for row, t in enumerate(tsteps):
        for col, la in enumerate(lahead):
            cell = [
                r
                for r in runs
                if (r["params"]["tsteps"], r["params"]["lahead"]) == (t, la)
            ]
            if not cell:
                continue
            agree = sum(r["agrees"] for r in cell)
            share[row, col] = agree / len(cell)
            lines = [f"{agree}/{len(cell)} agree"] if len(cell) > 1 else []
            lines += [verdict(cell, name) for name in MODELS]
            ax.text(col, row, "\n".join(lines), ha="center", va="center", fontsize=8)
    image = ax.imshow(
        share, origin="lower", cmap="RdYlGn", vmin=-0.25, vmax=1.25, aspect="auto"
    )
    key = fig.colorbar(image, ax=ax, ticks=[0, 0.5, 1], shrink=0.9)
    key.ax.set_ylim(0, 1)  # the share runs from 0 to 1; the colours, wider, stay mild
    key.set_label(
        "share of seeds whose run agrees with the claim\n(not how well a model fits)"
    )
    ax.set_xticks(range(len(lahead)), lahead)
    ax.set_yticks(range(len(tsteps)), tsteps)
    ax.set(xlabel="lahead (inputs in a window), one column per value run, not to scale",
           ylabel="tsteps (inputs in the mean), one row per value")  # fmt: skip
    first, seeds = runs[0]["params"], sorted({r["params"]["seed"] for r in runs})
    ax.set_title(
        "The claim (only the stateful model converges when lahead < tsteps, both "
        "when lahead >= tsteps), cell by cell:\ngreen where the runs agree with it, "
        f"red where they do not ({first['window_order']} windows, learning rate "
        f"{first['learning_rate']}, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))})",
        fontsize=9,
    )
    return fig


def write_whole(path, content):
    """Write bytes under a temporary name, then rename it: never half a file."""
    pathlib.Path(f"{path}.partial").write_bytes(content)
    os.replace(f"{path}.partial", path)


def save(runs, output_dir, tsteps, lahead):
    """sweep.json and sweep.png, each written whole."""
    write_whole(
        output_dir / "sweep.json", json.dumps({"cells": runs}, indent=2).encode()
    )
    png = io.BytesIO()
    plot(runs, tsteps, lahead).savefig(png, format="png")
    write_whole(output_dir / "sweep.png", png.getvalue())


def report(run, done, total, seconds, attempts):
    """One line per run: its values, each model's verdict, and the time left."""
    params = run["params"]
    models = ", ".join(verdict([run], name) for name in MODELS)
    print(
        f"[{done}/{total}] tsteps={params['tsteps']} lahead={params['lahead']} "
        f"seed={params['seed']}: {models}: "
        f"{'agrees' if run['agrees'] else 'DIFFERS'} | "
        f"{seconds:.0f} s elapsed, about {seconds / done * (total - done):.0f} s left"
        + (f" (its worker died; run {attempts} times)" if attempts > 1 else ""),
        flush=True,
    )


def number(kind, low):
    """An argparse type: a `kind` from `low` up, finite, below 2**32 (numpy's seeds)."""

    def check(text):
        value = kind(text)
        if not low <= value < 2**32:
            raise ValueError(text)
        return value

    check.__name__ = kind.__name__  # argparse names the type in its message
    return check


def arguments(lesson):
    """A flag for each of the lesson's parameters, then the sweep's own."""
    parser = argparse.ArgumentParser(
        description="Run lstm_stateful.py with other values. Each flag sets a value of "
        "its Parameters cell; tsteps, lahead and seed take several, for a grid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.error = lambda message: parser.exit(
        2, f"sweep.py: error: {message}\n"
    )  # one line
    for name, (default, text) in lesson.items():
        flag, many = f"--{name.replace('_', '-')}", name in GRID
        options = dict(default=[default] if many else default, help=text)
        if name in CHOICES:
            options["choices"] = CHOICES[name]
        elif name == "output_dir":
            options |= dict(
                default="outputs/sweep", help="sweep.json, sweep.png and runs/"
            )
        elif isinstance(default, float):
            options["type"] = number(float, 1e-12)  # a positive rate
        elif isinstance(default, int):
            options["type"] = number(int, 0 if name == "seed" else 1)
        parser.add_argument(flag, nargs="+" if many else None, **options)
    parser.add_argument("--jobs", type=number(int, 1), default=os.cpu_count() or 1,
                        help="runs at once on this machine")  # fmt: skip
    parser.add_argument(
        "--scheduler", help="a Dask scheduler's address, to run on its workers"
    )
    return parser, parser.parse_args()


def main():
    source = LESSON.read_text(encoding="utf-8")
    lesson = parameters(source)
    parser, args = arguments(lesson)
    values = {name: getattr(args, name) for name in lesson if name != "output_dir"}
    todo = [
        values | dict(tsteps=t, lahead=la, seed=s)
        for t in args.tsteps
        for la in args.lahead
        for s in args.seed
    ]
    for run_values in todo:  # every run is checked before any starts
        t, la, bs = run_values["tsteps"], run_values["lahead"], run_values["batch_size"]
        least = 5 * bs * (max(t, la) + 3)
        if args.input_len < least:
            parser.error(
                f"--input-len {args.input_len} is too short for --tsteps {t} --lahead "
                f"{la} --batch-size {bs}: it must be at least 5 x batch_size x "
                f"(max(tsteps, lahead) + 3) = {least}"
            )
    at_once = min(args.jobs, len(todo))  # on this machine; a cluster's workers: its own
    largest = max(todo, key=memory_needed)
    needed, memory = memory_needed(largest) * at_once, physical_memory()
    if not args.scheduler and memory is not None and needed > memory:
        parser.error(
            f"--input-len {largest['input_len']} --lahead {largest['lahead']} needs "
            f"about {size(needed // at_once)} of memory a run, {at_once} at a time; "
            f"this machine has {size(memory)}"
        )
    if args.scheduler:
        try:
            from distributed import Client
        except ImportError:
            parser.error(
                "--scheduler needs Dask: pip install -r requirements-cluster.txt"
            )
        try:
            client = Client(args.scheduler, timeout="10s")
        except OSError as error:
            parser.error(f"--scheduler {args.scheduler}: {error}")
        executor, where = client.get_executor(pure=False), f"on {args.scheduler}"
        workers, run = None, functools.partial(on_a_dask_worker, worker=WORKER)
    else:
        client, where = None, f"{at_once} at a time"
        executor = concurrent.futures.ThreadPoolExecutor(at_once)
        workers = Workers(at_once, WORKER)
        run = workers.run

    output_dir = pathlib.Path(args.output_dir)
    try:
        (output_dir / "runs").mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output_dir).close()
    except OSError as error:
        parser.error(f"--output-dir {str(output_dir)!r} cannot be written: {error}")

    def name(run_values):
        grid = [f"tsteps{run_values['tsteps']}", f"lahead{run_values['lahead']}"]
        return "-".join(
            grid + ([f"seed{run_values['seed']}"] if len(args.seed) > 1 else [])
        )

    runs_of = f"{len(todo)} run{'s' if len(todo) > 1 else ''} of lstm_stateful.py"
    print(f"{runs_of}, {where}", flush=True)
    # `kill` stops the sweep as Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    runs, futures, began = [], {}, time.perf_counter()
    try:
        for run_values in todo:
            code = program(source, run_values | {"output_dir": "out"})
            futures[executor.submit(run, code)] = name(run_values)
        for future in concurrent.futures.as_completed(futures):
            status, files, attempts = future.result()
            folder = output_dir / "runs" / futures[future]
            folder.mkdir(exist_ok=True)
            for file_name, content in files.items():
                write_whole(folder / file_name, content)
            if status != 0:
                log = files.get("log.txt", b"").decode(errors="replace")
                last = "".join(log.strip().splitlines()[-1:])
                how = "failed" if status == RAISED else f"died {attempts} times"
                print(f"sweep.py: {folder} {how}" + f": {last}" * bool(last),
                      file=sys.stderr)  # fmt: skip
                return 1
            metrics = json.loads(files["metrics.json"])
            runs.append(metrics)
            runs.sort(key=lambda run: [run["params"][name] for name in GRID])
            save(runs, output_dir, args.tsteps, args.lahead)
            seconds = time.perf_counter() - began
            report(metrics, len(runs), len(todo), seconds, attempts)
        print(f"sweep.json and sweep.png written to {output_dir}")
        return 0
    except KeyboardInterrupt:
        print(f"\nInterrupted: {len(runs)} of {len(todo)} runs done, in {output_dir}")
        return 130
    finally:  # whatever ended the sweep: stop what is left of it, uninterrupted
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if workers is not None:
            workers.stop()
        for future in futures:
            future.cancel()
        executor.shutdown(wait=False)
        if client is not None:
            client.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # before the runs start, or after they end
        sys.exit(130)
