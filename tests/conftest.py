"""Settings for the whole suite, made before any test imports matplotlib or Keras; the
runs that several tests read; and the default run, started in a new process as soon as
the tests are collected, so that it runs beside them."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# No window that waits for a person: pyplot, here and in every process a test starts,
# uses the non-interactive Agg backend, unless a test asks for another.
os.environ["MPLBACKEND"] = "Agg"
# The lesson as it runs where the user has set nothing for TensorFlow.
for name in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
    os.environ.pop(name, None)


def pytest_configure(config):
    # Keras 3's TensorFlow backend converts its variables with numpy's __array__ the old
    # way; numpy 2 warns of it on each conversion. The tests convert many.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:__array__ implementation doesn't accept a copy keyword",
    )


# A small run: batches of 3 in the contiguous layout, oldest-first windows, a learning
# rate of its own, 2 epochs.
SMALL = dict(input_len=105, tsteps=4, lahead=2, batch_size=3, seed=21, epochs=2)
SMALL |= dict(layout="contiguous", window_order="oldest-first", learning_rate=0.002)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """SMALL, run whole in this process with sweep.py's metrics cell at its end. Returns
    its namespace; each fit() and predict() call (which, the model, x, the keyword
    arguments, Adam's rate, whether the state was zeros, the steps per call and the
    weights, as the call began); its metrics.json; what it printed."""
    import helpers
    import keras
    import numpy as np

    calls, real = [], {name: getattr(keras.Model, name) for name in ("fit", "predict")}

    def recorded(name):
        def call(model, x, *args, **kwargs):
            lstm = model.layers[0]
            states = [keras.ops.convert_to_numpy(state) for state in lstm.states or []]
            rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
            calls.append(
                dict(call=name, model=model, x=x, kwargs=kwargs, rate=rate)
                | dict(zeros=lstm.stateful and not any(np.any(s) for s in states))
                | dict(steps=model.steps_per_execution, weights=model.get_weights())
            )
            return real[name](model, x, *args, **kwargs)

        return call

    out = tmp_path_factory.mktemp("small")
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(io.StringIO()) as log,
    ):
        for name in real:
            patch.setattr(keras.Model, name, recorded(name))
        ns = helpers.run(SMALL | {"output_dir": str(out)}, metrics=True)
    return ns, calls, json.loads((out / "metrics.json").read_text()), log.getvalue()


# Runs in new processes, started as soon as the tests are collected (if a collected test
# reads them), so that they run beside the tests: by fixture, the command; then, by
# fixture, its folder and process.
COMMANDS = {
    "default_run": [sys.executable, ROOT / "lstm_stateful.py"],  # as the README runs it
    # SMALL with another seed first, in one worker: SMALL's run is its second
    "small_sweep": [sys.executable, ROOT / "sweep.py", "--output-dir", ".", "--jobs=1"]
    + [f"--{name.replace('_', '-')}={value}" for name, value in SMALL.items()]
    + ["--seed", "22", str(SMALL["seed"])],
}
STARTED = {}


def pytest_collection_modifyitems(items):
    """The tests that read the runs in new processes go last, so that the runs go on
    beside the other tests instead of holding them up."""
    items.sort(key=lambda item: any(name in item.fixturenames for name in COMMANDS))


def pytest_collection_finish(session):
    for name, command in COMMANDS.items():
        if any(name in item.fixturenames for item in session.items):
            folder = Path(tempfile.mkdtemp(prefix=f"lstm_stateful-{name}-"))
            with (
                open(folder / "stdout", "w") as out,
                open(folder / "stderr", "w") as err,
            ):
                STARTED[name] = (
                    folder,
                    subprocess.Popen(
                        command,
                        cwd=folder,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    ),
                )


def ended(name):
    """What the run printed, and its folder, once it has ended."""
    folder, process = STARTED[name]
    assert process.wait(timeout=900) == 0, (folder / "stderr").read_text()[-3000:]
    return (folder / "stdout").read_text(), folder


@pytest.fixture(scope="session")
def default_run():
    """`python lstm_stateful.py` in a folder of its own: what it printed, the folder."""
    return ended("default_run")


@pytest.fixture(scope="session")
def small_sweep():
    """`python sweep.py` with SMALL's values, second in one worker after another seed:
    what it printed, and its folder."""
    return ended("small_sweep")


def pytest_sessionfinish(session):
    """Stop the runs that still run, and remove their folders."""
    import helpers

    for folder, process in STARTED.values():
        helpers.stop(process)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """sweep.py copied beside a stand-in lesson with the lesson's Parameters cell; the
    folder the stand-in writes to, in STAND_IN (helpers.py)."""
    import helpers

    cell = helpers.LESSON.read_text().split('tags=["parameters"]\n')[1].split("# %%")[0]
    shutil.copy(ROOT / "sweep.py", tmp_path / "sweep.py")
    stand_in = helpers.STAND_IN.format(parameters=cell.strip())
    (tmp_path / "lstm_stateful.py").write_text(stand_in)
    watched = tmp_path / "watched"
    watched.mkdir()
    monkeypatch.setenv("STAND_IN", str(watched))
    return tmp_path
