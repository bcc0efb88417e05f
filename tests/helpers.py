"""What the tests share: the lesson run with other values, as sweep.py and papermill run
it, in this process or in a new one; the original's data computed a second way; waits
with a deadline."""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "lstm_stateful.py"
BACKENDS = ("tensorflow", "jax", "torch")
sys.path.insert(0, str(ROOT))
import sweep  # noqa: E402

PARAMETERS = [
    name for name in sweep.parameters(LESSON.read_text()) if name != "output_dir"
]


def source(values=None, until=None, metrics=False):
    """The lesson with `values` set as sweep.py sets them, cut before the cell headed
    `## until` (a learner who stops there), or with sweep.py's metrics cell at its
    end."""
    text = LESSON.read_text(encoding="utf-8")
    if metrics:
        return sweep.program(text, values or {})
    text = sweep.with_values(text, values or {})
    if until:
        heading = re.search(rf"^# %% \[markdown\]\n# ## {re.escape(until)}", text, re.M)
        text = text[: heading.start()]
    return text


def run(values=None, until=None, metrics=False, namespace=None):
    """Run the lesson in this process, as a notebook kernel runs its cells, and return
    the namespace it leaves, with each figure it saved in `__figures__`, by file name.
    Pass `namespace` to see what the cells left after an error."""
    namespace = {} if namespace is None else namespace
    namespace |= {"__name__": "__main__", "__figures__": {}}
    savefig = Figure.savefig

    def recorded(fig, name, *args, **kwargs):
        namespace["__figures__"][Path(str(name)).name] = fig
        return savefig(fig, name, *args, **kwargs)

    Figure.savefig = recorded
    try:
        code = compile(source(values, until, metrics), str(LESSON), "exec")
        exec(code, namespace)
    finally:
        Figure.savefig = savefig
        plt.close("all")  # the namespace keeps the figures the run saved
    return namespace


def original_data(input_len, tsteps, lahead, batch_size, seed, order="newest-first"):
    """The original's arrays, computed a second way: plain numpy, no pandas, explicit
    indices, in time order: ((x_train, y_train), (x_test, y_test)), and every input."""
    to_drop = max(tsteps - 1, lahead - 1)
    noise = np.random.RandomState(seed).uniform(-0.1, 0.1, input_len + to_drop)
    times = np.arange(to_drop, to_drop + input_len)
    # newest-first, x[t, i, 0] is the input i steps before t; oldest-first,
    # lahead - 1 - i steps before; y[t] is the mean of the last tsteps inputs.
    back = range(lahead) if order == "newest-first" else range(lahead - 1, -1, -1)
    x = np.array([[noise[t - i] for i in back] for t in times])[:, :, None]
    y = np.array([noise[t - tsteps + 1 : t + 1].mean() for t in times])[:, None]
    n_train = int(0.8 * input_len) // batch_size * batch_size
    n_test = (input_len - n_train) - input_len % batch_size
    test = slice(n_train, n_train + n_test)
    return ((x[:n_train], y[:n_train]), (x[test], y[test])), noise


def python(*args, backend=None, **kwargs):
    """`python ARGS` in a new process, on `backend` if given, within 15 minutes."""
    env = {**os.environ, **kwargs.pop("env", {})}
    if backend:
        env["KERAS_BACKEND"] = backend
    command = [sys.executable, *map(str, args)]
    kwargs.setdefault("timeout", 900)
    return subprocess.run(command, capture_output=True, text=True, env=env, **kwargs)


def wait_for(condition, seconds, what):
    """Wait until condition() is true, or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.05)


def alive(pid):
    """Whether process `pid` still runs (a zombie, ended but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return not stat.parent.parent.joinpath("self").exists()


def stop(process):
    """Kill a process the tests started, and its group if it leads one."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()
    process.wait(timeout=60)


def require(module):
    """Skip a test whose backend or tool is not installed; fail instead where
    LSTM_STATEFUL_REQUIRE_ALL=1 (CI installs them all: a skip would hide a failure)."""
    if importlib.util.find_spec(module) is None:
        if os.environ.get("LSTM_STATEFUL_REQUIRE_ALL") == "1":
            pytest.fail(
                f"{module} is not installed; LSTM_STATEFUL_REQUIRE_ALL=1 asks for it"
            )
        pytest.skip(f"{module} is not installed")


STAND_IN = """\
# %% tags=["parameters"]
{parameters}
# %%
# A stand-in for the lesson, for the sweep's own tests: it takes no time, prints a line,
# writes input.png and leaves what write_metrics reads. With epochs 98 it raises; with
# epochs 97 its first process kills itself, with 95 every process does; with epochs 96
# its first process waits for
# good, and with seeds 10 to 99 every process does. Each process that waits, or that
# starts a run that started before, says so in the folder STAND_IN names.
import os, pathlib, signal, sys, time, types

fresh, seen = "seen" not in globals(), True  # a namespace of its own: nothing seen

keras = types.SimpleNamespace(version=lambda: "none", backend=types.SimpleNamespace())
keras.backend.backend = lambda: "none"

watched = pathlib.Path(os.environ["STAND_IN"])
run = f"tsteps{{tsteps}}-lahead{{lahead}}-seed{{seed}}"
if epochs == 98:
    raise ValueError(f"no run at epochs {{epochs}}")
first = not (watched / run).exists()
(watched / (run if first else f"{{run}}.again")).touch()
if epochs == 95 or epochs == 97 and first:
    os.kill(os.getpid(), signal.SIGKILL)
if 10 <= seed < 100 or epochs == 96 and first:
    (watched / f"{{os.getpid()}}.waits").touch()
    time.sleep(3600)
print("a run of the stand-in, process", os.getpid(), "fresh" if fresh else "not fresh")
os.makedirs(output_dir, exist_ok=True)
pathlib.Path(output_dir, "input.png").write_bytes(b"a figure")
floor = 0.0 if lahead >= tsteps else 1e-3
model = dict(test_mse=1e-4, floor=floor, r2=0.9, recovered=0.9 if floor else None)
results = dict(stateful=dict(model, converged=True), stream=dict(model, converged=True))
results["stateless"] = dict(model, converged=lahead >= tsteps, r2=0.5)
history_stateful = [dict(loss=[0.1], val_loss=[0.2])] * epochs
history_stateless = dict(loss=[0.1] * epochs, val_loss=[0.2] * epochs)
agrees = True
"""


def start(stand_in, *args):
    """`python sweep.py ARGS` beside the stand-in, in a new process; its output goes to
    files, read with read()."""
    out, err = (open(stand_in / name, "w") for name in ("stdout", "stderr"))
    command = [sys.executable, stand_in / "sweep.py", *map(str, args)]
    command += ["--output-dir", stand_in / "out"]
    with out, err:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            start_new_session=True,  # stop() kills it and what is left of its own
            # a runner started in the background may ignore SIGINT; a terminal does not
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def read(stand_in, name):
    return (stand_in / name).read_text()


def ended(process, seconds=60):
    """The process's exit status, once it ends within `seconds`."""
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        stop(process)
        pytest.fail(f"still running after {seconds} s")


def waiting(stand_in):
    """The processes of the stand-in's runs that wait for good."""
    return [int(path.stem) for path in (stand_in / "watched").glob("*.waits")]


# The lesson's Setup cell, run before anything in this process imports Keras: Keras (and
# TensorFlow, with the settings the lesson makes before it loads) loads as in its runs.
run(until="Parameters")
