"""lstm_stateful.py in a real Jupyter kernel (ipykernel, driven by nbclient), the ways a learner
runs it there: as a notebook made by jupytext, cell by cell, its constants edited; `%run` with
flags; the whole file pasted into a cell. Each writes its outputs and shows its figures where a
learner looks for them; none takes the kernel's own command line for flags; the kernel is left
as it was. Needs `pip install ipykernel nbclient jupytext` (CI installs them), and runs on each
installed backend.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import BACKENDS, SCRIPT, require

EDITS = [("input_len = 1000 ", "input_len = 60 "), ("epochs = 10 ", "epochs = 1 ")]


def edited(text, output_dir):
    """The constants at the top edited, as a learner does: a short run, its own folder."""
    for old, new in [*EDITS, ('output_dir = "outputs"', f"output_dir = {output_dir!r}")]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def notebook_of_the_script(folder):
    """The notebook jupytext makes of lstm_stateful.py, as the README says to: its path."""
    path = folder / "lstm_stateful.ipynb"
    command = [sys.executable, "-m", "jupytext", "--to", "ipynb", "-o", str(path), str(SCRIPT)]
    subprocess.run(command, check=True, capture_output=True)
    return path


def images(cell):
    return [o for o in cell.outputs if o.output_type == "display_data" and "image/png" in o.data]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_example_runs_in_a_jupyter_kernel_cell_by_cell_by_run_and_pasted(
    backend, tmp_path, monkeypatch
):
    for module in ("ipykernel", "nbclient", "jupytext", backend):
        require(module)
    import nbclient
    import nbformat

    notebook = nbformat.read(notebook_of_the_script(tmp_path), as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    text = [cell for cell in notebook.cells if cell.cell_type == "markdown"]
    assert len(code) >= 8 and len(text) >= 6
    assert text[0].source.startswith("# Stateful vs stateless LSTM")
    (block,) = [cell for cell in code if cell.source.startswith("input_len = ")]
    assert block.metadata.tags == ["parameters"]  # for papermill
    block.source = edited(block.source, str(tmp_path / "cells"))
    learner = len(notebook.cells)
    out = {name: tmp_path / name for name in ("run", "pasted")}
    notebook.cells += [
        nbformat.v4.new_code_cell(source)
        for source in (
            "import logging, sys\nbefore = (sys.excepthook, logging.getLogger().level)",
            f"%run {SCRIPT} --input-len 60 --epochs 1 --output-dir {out['run']}",
            edited(SCRIPT.read_text(encoding="utf-8"), str(out["pasted"])),  # show stays True
            # a learner's own model after the example, and the kernel as it was
            "import keras, numpy as np\n"
            "user = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])\n"
            "user.compile(loss='mse', optimizer='sgd')\n"
            "user.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0)\n"
            "assert (sys.excepthook, logging.getLogger().level) == before\n"
            "import importlib, importlib.util\n"  # every installed framework still imports
            "for name in ('tensorflow', 'jax', 'torch'):\n"
            "    if importlib.util.find_spec(name):\n"
            "        importlib.import_module(name)\n"
            "print('kernel as it was')",
        )
    ]
    monkeypatch.delenv("MPLBACKEND")  # a kernel as Jupyter starts it: matplotlib's inline backend
    monkeypatch.setenv("KERAS_BACKEND", backend)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3").execute()

    for cell in notebook.cells:
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        assert not errors, errors
    # cell by cell: each figure under the cell that draws it, the rest without one
    figures = {"input.png": 0, "results.png": 0, "memory.png": 0}
    for cell in code:
        drawn = re.findall(r'^save\("(\w+\.png)", fig\)', cell.source, re.M)
        assert len(images(cell)) == len(drawn), cell.source[:200]
        for name in drawn:
            figures[name] += 1
    assert set(figures.values()) == {1}
    for folder in (tmp_path / "cells", out["run"], out["pasted"]):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["backend"] == backend
        assert metrics["params"]["input_len"] == 60 and metrics["params"]["epochs"] == 1
        assert {p.name for p in folder.iterdir()} == {*figures, "metrics.json"}
    run_cell, pasted_cell, last = notebook.cells[learner + 1 :]
    assert len(images(run_cell)) == len(images(pasted_cell)) == 3  # shown at its end, inline
    assert "kernel as it was" in "".join(o.get("text", "") for o in last.outputs)


def test_papermill_runs_the_notebook_with_other_parameters(tmp_path):
    """The parameters cell is tagged `parameters`: `papermill -p tsteps 3 -p lahead 3` runs the
    notebook jupytext makes with a window that shows the whole mean, where both models
    converge."""
    for module in ("ipykernel", "jupytext", "papermill", "tensorflow"):
        require(module)
    notebook = notebook_of_the_script(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(notebook), str(tmp_path / "ran.ipynb")]
        + ["-p", "tsteps", "3", "-p", "lahead", "3", "-p", "output_dir", str(tmp_path / "out")]
        + ["-k", "python3", "--language", "python", "--log-output", "--no-progress-bar"],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ran = json.loads((tmp_path / "ran.ipynb").read_text())
    texts = [output.get("text", []) for cell in ran["cells"] for output in cell.get("outputs", [])]
    printed = "".join(text if isinstance(text, str) else "".join(text) for text in texts)
    assert "STATELESS LSTM WILL ALSO CONVERGE" in printed
    for name in ("stateful", "stateless"):
        assert re.search(rf"^{name} +test MSE \S+: R² [01]\.\d+, converged$", printed, re.M), (
            printed
        )
    assert (
        "This run agrees with the example's claim: both models converge when lahead >= tsteps."
        in printed
    )
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (metrics["params"]["tsteps"], metrics["params"]["lahead"]) == (3, 3)
