"""lstm_stateful.py in a real Jupyter kernel (ipykernel, driven by nbclient), the ways a
learner runs it there: as the notebook jupytext makes, cell by cell, its constants
edited; `%run`; the whole file pasted into a cell; and papermill, by the README's
commands. Needs `pip install ipykernel nbclient jupytext papermill` (CI has them)."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from helpers import BACKENDS, LESSON, ROOT, require

EDITS = [("input_len = 1000 ", "input_len = 60 "), ("epochs = 10 ", "epochs = 1 ")]


def edited(text, output_dir):
    """The constants edited, as a learner does: a short run, a folder of its own."""
    for old, new in [
        *EDITS,
        ('output_dir = "outputs"', f"output_dir = {output_dir!r}"),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def readme_commands(word):
    """The README's shell lines that start with `word`, split as a shell does."""
    readme = (ROOT / "README.md").read_text()
    blocks = "".join(re.findall(r"^```bash\n(.*?)^```$", readme, re.M | re.S))
    lines = re.findall(rf"^{word} .*$", blocks, re.M)
    return [shlex.split(part) for line in lines for part in line.split(" && ")]


def notebook(folder):
    """The notebook jupytext makes of lstm_stateful.py by the README's command, run
    where the lesson lies, as in a clone."""
    folder.mkdir(exist_ok=True)
    shutil.copy(LESSON, folder / "lstm_stateful.py")
    (command,) = [
        c for c in readme_commands("pip install jupytext") if c[0] == "jupytext"
    ]
    subprocess.run([sys.executable, "-m", *command], cwd=folder, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    return folder / "lstm_stateful.ipynb"


def images(cell):
    return [
        o
        for o in cell.outputs
        if o.output_type == "display_data" and "image/png" in o.data
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_lesson_runs_in_a_jupyter_kernel_cell_by_cell_by_run_and_pasted(
    backend, tmp_path, monkeypatch
):
    for module in ("ipykernel", "nbclient", "jupytext", backend):
        require(module)
    import nbclient
    import nbformat

    book = nbformat.read(notebook(tmp_path / "book"), as_version=4)
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    text = [cell for cell in book.cells if cell.cell_type == "markdown"]
    assert len(code) >= 8 and len(text) >= 8
    assert text[0].source.startswith("# Stateful vs stateless LSTM")
    (block,) = [cell for cell in code if cell.source.startswith("input_len = ")]
    assert block.metadata.tags == ["parameters"]  # for papermill
    block.source = edited(block.source, str(tmp_path / "cells"))
    learner = len(book.cells)
    copy = tmp_path / "lstm_stateful.py"
    copy.write_text(edited(LESSON.read_text(), str(tmp_path / "run")))
    book.cells += [
        nbformat.v4.new_code_cell(source)
        for source in (
            "import logging, sys\nbefore = (sys.excepthook, logging.getLogger().level)",
            f"%run {copy}",
            edited(LESSON.read_text(), str(tmp_path / "pasted")),
            # a learner's own model after the lesson, and the kernel as it was
            "import keras, numpy as np\n"
            "user = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])\n"
            "user.compile(loss='mse', optimizer='sgd')\n"
            "user.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0)\n"
            "assert (sys.excepthook, logging.getLogger().level) == before\n"
            "print('kernel as it was')",
        )
    ]
    monkeypatch.delenv(
        "MPLBACKEND"
    )  # a kernel as Jupyter starts it: the inline backend
    monkeypatch.setenv("KERAS_BACKEND", backend)
    nbclient.NotebookClient(book, timeout=900, kernel_name="python3").execute()

    for cell in book.cells:
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        assert not errors, errors
    # cell by cell: each figure under the cell that draws it, no other
    for cell in code:
        drawn = re.findall(
            r'savefig\(os\.path\.join\(output_dir, "(\w+)\.png"', cell.source
        )
        assert len(images(cell)) == len(drawn), cell.source[:200]
    assert sum(len(images(cell)) for cell in code) == 3
    for folder in ("cells", "run", "pasted"):
        names = {path.name for path in (tmp_path / folder).iterdir()}
        assert names == {"input.png", "results.png", "memory.png"}
    run_cell, pasted_cell, last = book.cells[learner + 1 :]
    assert len(images(run_cell)) == len(images(pasted_cell)) == 3
    printed = "".join(o.get("text", "") for o in pasted_cell.outputs)
    assert f"on {backend}, seed 1986" in printed and "This run " in printed
    assert "kernel as it was" in "".join(o.get("text", "") for o in last.outputs)


def test_papermill_runs_the_notebook_by_the_readmes_commands(tmp_path):
    """The Parameters cell is tagged `parameters`: the README's papermill command runs
    the notebook with a window that holds the whole mean, where both models converge."""
    for module in ("ipykernel", "jupytext", "papermill", "tensorflow"):
        require(module)
    folder = notebook(tmp_path).parent
    (command,) = readme_commands("papermill")
    assert command[:2] == ["papermill", "lstm_stateful.ipynb"]
    done = subprocess.run(
        [sys.executable, "-m", *command, "-p", "output_dir", "out", "--log-output"],
        capture_output=True, text=True, cwd=folder, timeout=900,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stderr  # --log-output: what the cells printed
    assert "STATELESS LSTM WILL ALSO CONVERGE" in printed
    for name in ("stateful", "stateless"):
        assert re.search(rf"{name} +test MSE \S+: R² [01]\.\d+, converged", printed)
    claim = "both models converge when lahead >= tsteps."
    assert f"This run agrees with the claim: {claim}" in printed
    assert (tmp_path / "out.ipynb").exists() and (
        tmp_path / "out" / "memory.png"
    ).exists()
