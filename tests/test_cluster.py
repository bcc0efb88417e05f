"""sweep.py on a real Dask cluster on this machine (127.0.0.1): a scheduler and two
workers started with Dask's own commands, as the README shows them. The runs come back
equal to the same sweep run locally; a run whose worker dies runs again, and its
orphaned process ends; Ctrl-C ends the sweep. Needs `pip install -r
requirements-cluster.txt` (CI installs it); skipped without it."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import helpers  # noqa: F401  (first: it loads Keras as the lesson's Setup does)
import keras
import pytest
from helpers import ROOT, alive, ended, python, read, require, start, stop, wait_for

SMALL = [
    "--tsteps",
    "2",
    "3",
    "--lahead",
    "1",
    "2",
    "--input-len",
    "120",
    "--epochs",
    "2",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two workers (one thread each) on this machine's backend: its
    address, and the folder the stand-in lesson writes to (STAND_IN, set for them)."""
    require("distributed")
    from distributed import Client

    folder = tmp_path_factory.mktemp("cluster")
    (folder / "watched").mkdir()
    address_file = folder / "scheduler.json"
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    env["STAND_IN"] = str(folder / "watched")
    dask = [str(Path(sys.executable).with_name("dask"))]  # Dask's own command
    scheduler = [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0"]
    scheduler += ["--no-dashboard", "--scheduler-file", str(address_file)]
    worker = [*dask, "worker", "--scheduler-file", str(address_file), "--nthreads", "1"]
    commands = [scheduler] + [[*worker, "--no-dashboard", "--name", n] for n in "ab"]
    processes = []
    try:
        for command in commands:  # each in a session of its own, stopped as a group
            log = open(folder / f"{len(processes)}.log", "w")  # noqa: SIM115
            processes.append(subprocess.Popen(command, stdout=log, stderr=log, env=env,
                                              start_new_session=True))  # fmt: skip
            if command is scheduler:
                wait_for(address_file.exists, 60, "the scheduler's address file")
        address = json.loads(address_file.read_text())["address"]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address, folder / "watched"
    finally:
        for process in reversed(processes):
            stop(process)


def test_a_sweep_on_the_cluster_gives_the_runs_of_a_local_one(cluster, tmp_path):
    address, _ = cluster
    runs = {}
    for where in ("local", "cluster"):
        flags = ["--scheduler", address] if where == "cluster" else ["--jobs", "2"]
        done = python(
            ROOT / "sweep.py", *SMALL, *flags, "--output-dir", tmp_path / where
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[where] = json.loads((tmp_path / where / "sweep.json").read_text())["cells"]
    assert len(runs["cluster"]) == 4 and runs["cluster"] == runs["local"]
    assert done.stdout.splitlines()[0] == f"4 runs of lstm_stateful.py, on {address}"
    names = {path.name for path in (tmp_path / "cluster" / "runs").iterdir()}
    assert names == {f"tsteps{t}-lahead{la}" for t in (2, 3) for la in (1, 2)}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_run_whose_worker_dies_runs_again(cluster, stand_in):
    """SIGKILL to the Dask worker whose run waits (the stand-in's, with epochs 96, waits
    in its first process): Dask's nanny starts the worker again, the scheduler gives the
    run to a worker again, and the first run's process, its parent gone, ends."""
    address, watched = cluster
    process = start(stand_in, "--epochs", 96, "--scheduler", address)
    wait_for(lambda: list(watched.glob("*.waits")), 120, "the run to start")
    (pid,) = [int(path.stem) for path in watched.glob("*.waits")]
    worker = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(worker, signal.SIGKILL)
    assert ended(process, 180) == 0, read(stand_in, "stderr")
    assert (watched / "tsteps2-lahead1-seed1986.again").exists()  # it started twice
    wait_for(lambda: not alive(pid), 10, "the orphaned run's process to end")
    metrics = json.loads((stand_in / "out" / "sweep.json").read_text())["cells"]
    assert [cell["params"]["epochs"] for cell in metrics] == [96]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_ends_a_sweep_on_the_cluster(cluster, stand_in):
    address, watched = cluster
    before = set(watched.glob("*.waits"))
    process = start(stand_in, "--seed", 11, "--scheduler", address)
    wait_for(lambda: set(watched.glob("*.waits")) - before, 120, "the run to start")
    os.kill(process.pid, signal.SIGINT)
    assert ended(process, 10) == 130 and read(stand_in, "stderr") == ""
    assert read(stand_in, "stdout").splitlines()[-1].startswith("Interrupted: 0 of 1 ")
