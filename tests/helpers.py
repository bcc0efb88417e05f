"""What the tests share: the example run as its users run it, in this process or in a new one."""

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "lstm_stateful.py"
BACKENDS = ("tensorflow", "jax", "torch")
sys.path.insert(0, str(ROOT))  # sweep.py, for the tests that call it


def run(*flags, until=None, path=SCRIPT, namespace=None):
    """Run the example as `python lstm_stateful.py FLAGS` or `%run lstm_stateful.py FLAGS` does,
    in this process, and return the namespace it leaves: its data, models, results and figures
    (kept open: see `figures`). With `until`, only the cells before the one headed `## until`,
    as a learner who runs a notebook cell by cell and stops there. Pass `namespace` to see what
    the cells left after an error."""
    source = Path(path).read_text(encoding="utf-8")
    if until:
        heading = re.search(rf"^# %% \[markdown\]\n# ## {re.escape(until)}", source, re.M)
        source = source[: heading.start()]
    namespace = {} if namespace is None else namespace
    namespace |= {"__name__": "__main__", "__file__": str(path), "__figures__": {}}
    argv, savefig = sys.argv, Figure.savefig

    def recorded(fig, name, *args, **kwargs):  # each figure saved, by its file's name
        namespace["__figures__"][Path(str(name).removesuffix(".partial")).name] = fig
        return savefig(fig, name, *args, **kwargs)

    sys.argv, Figure.savefig = [str(path), *flags], recorded
    try:
        exec(compile(source, str(path), "exec"), namespace)
    finally:
        sys.argv, Figure.savefig = argv, savefig
        plt.close("all")  # the namespace keeps the figures the run saved
    return namespace


def original_data(input_len, tsteps, lahead, batch_size, seed, window_order="newest-first"):
    """The original's arrays, computed a second way: plain numpy, no pandas, explicit indices,
    in time order: ((x_train, y_train), (x_test, y_test)), and every input drawn."""
    to_drop = max(tsteps - 1, lahead - 1)
    noise = np.random.RandomState(seed).uniform(-0.1, 0.1, input_len + to_drop)
    times = np.arange(to_drop, to_drop + input_len)
    # newest-first, x[t, i, 0] is the input i steps before t; oldest-first, lahead - 1 - i steps
    # before; y[t] is the mean of the last tsteps inputs.
    back = range(lahead) if window_order == "newest-first" else range(lahead - 1, -1, -1)
    x = np.array([[noise[t - i] for i in back] for t in times])[:, :, None]
    y = np.array([noise[t - tsteps + 1 : t + 1].mean() for t in times])[:, None]
    n_train = int(0.8 * input_len) // batch_size * batch_size
    n_test = (input_len - n_train) - input_len % batch_size
    test = slice(n_train, n_train + n_test)
    return ((x[:n_train], y[:n_train]), (x[test], y[test])), noise


def new_process(*args, backend=None, before="", cwd=None, **kwargs):
    """`python lstm_stateful.py ARGS` in a new process, after the Python line `before`; on
    `backend` if given. Returns the CompletedProcess (text)."""
    env = {**os.environ, **kwargs.pop("env", {})}
    if backend:
        env["KERAS_BACKEND"] = backend
    code = f"import runpy, sys\n{before}\nsys.argv = sys.argv[1:]\n"
    code += "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    command = [sys.executable, "-c", code, str(SCRIPT), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, **kwargs)


# Runs in new processes, started at once (conftest.py starts those the collected tests need as
# the session starts, so that they run beside the tests run in this process), each in a folder
# of its own, read when a test needs them: by key, the folder and the processes; what each wrote.
STARTED, ENDED = {}, {}


def start(key, *commands, backend=None):
    """Start `commands` (in which {folder} is the folder) once for `key`; returns the folder."""
    if key not in STARTED:
        folder = Path(tempfile.mkdtemp(prefix=f"lstm_stateful-{key}-"))
        env = {**os.environ, **({"KERAS_BACKEND": backend} if backend else {})}
        commands = [[str(arg).format(folder=folder) for arg in c] for c in commands]
        STARTED[key] = (
            folder,
            [
                subprocess.Popen(c, stdout=-1, stderr=-1, text=True, cwd=folder, env=env)
                for c in commands
            ],
        )
    return STARTED[key][0]


def ended(key):
    """The folder of `key`'s runs, and [(stdout, stderr, status)] of each, once they end."""
    folder, processes = STARTED[key]
    if key not in ENDED:
        ENDED[key] = [(*p.communicate(), p.returncode) for p in processes]
    return folder, ENDED[key]


def start_default_run():
    """`python lstm_stateful.py`: the default run, as the README's numbers are made."""
    return start("default", [sys.executable, SCRIPT, "--output-dir", "{folder}"])


# The command line's flags for the runs tests compare: small, and a window of 2.
SMALL = ["--input-len", "120", "--epochs", "2", "--tsteps", "3", "--lahead", "2"]


def start_command_line_runs(backend):
    """On `backend`, at once: `python -m cProfile lstm_stateful.py SMALL`, and `python sweep.py`
    over tsteps 2 then 3 with the same flags, in one worker process: its second run, SMALL's
    flags, runs where Keras has run the example before."""
    profiled = [sys.executable, "-m", "cProfile", "-o", "{folder}/profile", SCRIPT, *SMALL]
    swept = [sys.executable, ROOT / "sweep.py", "--tsteps", "2", "3", "--lahead", "2", *SMALL[:4]]
    profiled += ["--output-dir", "{folder}/profiled"]
    swept += ["--jobs", "1", "--output-dir", "{folder}/sweep"]
    return start(backend, profiled, swept, backend=backend)


def require(module):
    """Skip a test whose backend or tool is not installed; fail instead where
    LSTM_STATEFUL_REQUIRE_ALL=1 (CI installs them all, so a skip would hide a failure)."""
    if importlib.util.find_spec(module) is None:
        if os.environ.get("LSTM_STATEFUL_REQUIRE_ALL") == "1":
            pytest.fail(f"{module} is not installed, and LSTM_STATEFUL_REQUIRE_ALL=1 asks for it")
        pytest.skip(f"{module} is not installed")


# The example's Setup cell, run before anything in this process imports Keras: Keras (and
# TensorFlow, with the settings the example makes before it loads) is loaded as in its runs.
run(until="Parameters")
