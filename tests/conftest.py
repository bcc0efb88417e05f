"""Settings for the whole suite, made before any test imports matplotlib or Keras."""

import contextlib
import io
import json
import os

import pytest

# The suite never opens a window that waits for a person, display or not: pyplot (here and in
# every process a test starts) uses the non-interactive Agg backend, unless a test asks for another.
os.environ["MPLBACKEND"] = "Agg"
# The tests check the example as it runs where the user has set nothing for TensorFlow: it sets
# these three only where they are unset (the log level's test sets its own).
for name in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTEROP_THREADS"):
    os.environ.pop(name, None)


@pytest.fixture(scope="session")
def contiguous_run(tmp_path_factory):
    """One small run of the whole example in this process, for the tests of test_lstm_stateful.py
    and test_state.py: batches of 3 in the contiguous layout, oldest-first windows, a learning
    rate of its own, 2 epochs. Returns its namespace; each fit() and predict() call (its name,
    the model, x, the keyword arguments, the learning rate, whether the state was zeros, the
    steps per execution and the weights, as the call began); its metrics.json; what it printed."""
    import helpers
    import keras
    import numpy as np

    calls, real = [], {name: getattr(keras.Model, name) for name in ("fit", "predict")}

    def recorded(name):
        def call(model, x, *args, **kwargs):
            optimizer = getattr(model, "optimizer", None)  # what the state remembers: none
            rate = optimizer and float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            lstm, numpy = model.layers[0], keras.ops.convert_to_numpy
            zeros = lstm.stateful and not any(np.any(numpy(s)) for s in lstm.states)
            call = dict(call=name, model=model, x=x, kwargs=kwargs, rate=rate, zeros=zeros)
            calls.append(
                call | {"steps": model.steps_per_execution, "weights": model.get_weights()}
            )
            return real[name](model, x, *args, **kwargs)

        return call

    out = tmp_path_factory.mktemp("contiguous")
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as log:
        for name in real:
            patch.setattr(keras.Model, name, recorded(name))
        ns = helpers.run(*CONTIGUOUS, f"--output-dir={out}")
    return ns, calls, json.loads((out / "metrics.json").read_text()), log.getvalue()


CONTIGUOUS = ["--input-len=90", "--tsteps=4", "--lahead=2", "--batch-size=3", "--seed=21"]
CONTIGUOUS += ["--layout=contiguous", "--window-order=oldest-first", "--learning-rate=0.002"]
CONTIGUOUS += ["--epochs=2"]


def pytest_collection_finish(session):
    """Start the runs in new processes that the collected tests read (helpers.py), so that they
    run beside the tests that run in this process."""
    import helpers
    import keras

    names = [(item.nodeid, item.fixturenames) for item in session.items]
    if any("default_run" in fixtures for _, fixtures in names):
        helpers.start_default_run()
    if any("test_the_command_line_repeats" in nodeid for nodeid, _ in names):
        if keras.backend.backend() in helpers.BACKENDS:
            helpers.start_command_line_runs(keras.backend.backend())


def pytest_sessionfinish(session):
    """Stop what is still running of those runs, and remove their folders."""
    import shutil

    import helpers

    for folder, processes in helpers.STARTED.values():
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
        shutil.rmtree(folder, ignore_errors=True)
