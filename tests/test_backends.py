"""The lesson on JAX and PyTorch against TensorFlow, each in a new process (one process
loads one Keras backend): the default run's verdicts, and, from the same initial
weights, the same numbers. Needs `pip install -r requirements-jax.txt` and
`-r requirements-torch.txt` (CI installs them); skipped without them."""

import json
import re

import helpers  # noqa: F401  (first: it loads Keras as the lesson's Setup does)
import pytest
from helpers import BACKENDS, python, require, source

# Keras's initializers draw other numbers on each backend from one seed. This gives
# every model numpy's draws instead, the same on every backend, as it is compiled.
SAME_WEIGHTS = """
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the lesson's settings, first
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
import keras, numpy as np
compile = keras.Model.compile
def compiled(model, *args, **kwargs):
    compile(model, *args, **kwargs)
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-0.3, 0.3, w.shape) for w in model.get_weights()])
keras.Model.compile = compiled
"""
VALUES = dict(input_len=300, tsteps=3, lahead=2, epochs=3)


def verdicts(printed):
    """What judges: whether each model converged, and the run's word on the claim."""
    models = re.findall(r"^(\w+) +test MSE .*, ((?:NOT )?converged)$", printed, re.M)
    return models + re.findall(r"^This run .*$", printed, re.M)


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_each_backend_gives_the_default_runs_verdicts(backend, request, tmp_path):
    require(backend)
    code = source({"output_dir": str(tmp_path)})
    (tmp_path / "lesson.py").write_text(code)
    done = python(tmp_path / "lesson.py", backend=backend)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(rf"^Keras \S+ on {backend}, seed 1986$", done.stdout, re.M)
    default_run = request.getfixturevalue("default_run")  # in the meantime, it ran
    assert verdicts(done.stdout) == verdicts(default_run[0])
    assert len(verdicts(done.stdout)) == 3  # two models and the claim


def test_from_the_same_weights_every_backend_gives_the_same_numbers(tmp_path):
    """Each backend rounds its float32 sums in its own order: the test errors agree to
    a thousandth, what the state remembers to a hundredth."""
    found = {}
    for backend in BACKENDS:
        require(backend)  # all of them, before any run
    for backend in BACKENDS:
        folder = tmp_path / backend
        code = SAME_WEIGHTS + source(VALUES | {"output_dir": str(folder)}, metrics=True)
        (tmp_path / f"on_{backend}.py").write_text(code)  # not tensorflow.py: an import
        done = python(tmp_path / f"on_{backend}.py", backend=backend)
        assert done.returncode == 0, done.stderr[-3000:]
        found[backend] = json.loads((folder / "metrics.json").read_text())
        assert found[backend]["backend"] == backend
    tensorflow = found.pop("tensorflow")
    for backend, metrics in found.items():
        for name in ("stateful", "stateless", "stream"):
            want = tensorflow[name]["test_mse"]
            assert metrics[name]["test_mse"] == pytest.approx(want, rel=1e-3), backend
        for name in ("stateful", "stateless"):
            want = tensorflow[name]["memory_r2"]
            assert metrics[name]["memory_r2"] == pytest.approx(want, abs=0.01), backend
        assert metrics["agrees"] == tensorflow["agrees"]
