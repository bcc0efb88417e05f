"""lstm_stateful.py in a real Jupyter kernel (ipykernel, driven by nbclient), the three ways a
learner runs a script there: %run with flags; the whole file pasted into a cell, its constants
edited; import and main(). Each writes its outputs, none takes the kernel's own command line for
flags, and the kernel is left as it was: every framework still imports, and the settings the run
changes for its own sake are back. Needs `pip install ipykernel nbclient` (CI installs them).
"""

import json
from pathlib import Path

from helpers import require

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "lstm_stateful.py"
TINY = "--input-len 60 --epochs 1"


def pasted_script(output_dir):
    """The whole script with the constants at the top edited, as a learner pastes it in a cell."""
    text = SCRIPT.read_text()
    for old, new in [
        ("\ninput_len: int = 1000 ", "\ninput_len: int = 60 "),
        ("\nepochs: int = 10 ", "\nepochs: int = 1 "),
        ('\noutput_dir: str = "outputs"', f"\noutput_dir: str = {str(output_dir)!r}"),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def test_the_three_ways_to_run_it_in_a_jupyter_kernel(tmp_path, monkeypatch):
    require("ipykernel")
    require("nbclient")
    import nbclient
    import nbformat

    monkeypatch.delenv("MPLBACKEND")  # a kernel as Jupyter starts it: matplotlib's inline backend
    out = {name: tmp_path / name for name in ("run", "pasted", "imported")}
    cells = [
        # what the run must leave as it found it (TensorFlow loaded first: its own import is not
        # the script's doing)
        "import logging, os, sys\n"
        "import tensorflow as tf\n"
        "def session():\n"
        "    return (\n"
        "        [name for name, module in sys.modules.items() if module is None],\n"
        "        logging.getLogger('tensorflow').level,\n"
        "        tf.config.optimizer.get_experimental_options().get('disable_meta_optimizer'),\n"
        "        os.fstat(2).st_ino,\n"
        "    )\n"
        "before = session()",
        f"%run {SCRIPT} {TINY} --no-show --output-dir {out['run']}",
        # a learner's own model, built after the script has run once, must still train after it
        "import keras, numpy as np\n"
        "user = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])\n"
        "user.compile(loss='mse', optimizer='sgd')\n"
        "user.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0)",
        pasted_script(out["pasted"]),  # show stays True: figures inline
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import lstm_stateful\n"
        f"print('status', lstm_stateful.main({TINY.split()} + "
        f"['--no-show', '--output-dir', {str(out['imported'])!r}]))",
        "import jax, torch\n"
        "assert session() == before, (session(), before)\n"
        "user.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0)\n"
        "print('kernel as it was')",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3").execute()

    def outputs(i, kind):
        return [o for o in notebook.cells[i].outputs if o.output_type == kind]

    for i in range(len(cells)):
        assert not outputs(i, "error"), outputs(i, "error")
    for name, folder in out.items():
        assert {p.name for p in folder.iterdir()} == {
            "input.png",
            "results.png",
            "loss.png",
            "metrics.json",
        }, name
        params = json.loads((folder / "metrics.json").read_text())["params"]
        assert params["input_len"] == 60 and params["epochs"] == 1, name
    # show, in a notebook: matplotlib's inline backend displays the three figures in the cell
    images = [o for o in outputs(3, "display_data") if "image/png" in o["data"]]
    assert len(images) == 3
    assert not [o for o in outputs(1, "display_data") if "image/png" in o["data"]]  # --no-show
    assert "status 0" in "".join(o["text"] for o in outputs(4, "stream"))
    assert "kernel as it was" in "".join(o["text"] for o in outputs(5, "stream"))
