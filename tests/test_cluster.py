"""sweep.py on a real Dask cluster on this machine (127.0.0.1): a scheduler and two workers
started with Dask's own commands (`dask scheduler`, `dask worker`), as README.md shows them.
Needs `pip install -r requirements-cluster.txt` (CI installs it); skipped without it."""

import json
import os
import signal
import subprocess
import sys
import time

import helpers  # noqa: F401  (first: it loads Keras as the example's Setup does)
import keras
import pytest
from helpers import ROOT, SCRIPT, require

CELLS = ["--tsteps", "2", "3", "--lahead", "1", "2"]
FLAGS = ["--input-len", "120", "--epochs", "2"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two worker processes (each one run at a time), on this machine's
    backend; their address, and a Dask client of the test's own to watch them."""
    require("distributed")
    from distributed import Client

    folder = tmp_path_factory.mktemp("cluster")
    address_file = folder / "scheduler.json"
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    dask = [os.path.join(os.path.dirname(sys.executable), "dask")]  # Dask's own command
    commands = [[*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]]
    commands[0] += ["--scheduler-file", str(address_file)]
    worker = [*dask, "worker", "--scheduler-file", str(address_file), "--nthreads", "1"]
    commands += [[*worker, "--no-dashboard", "--name", name] for name in ("one", "two")]
    processes = []
    for command in commands:  # each in a session of its own, stopped as a group at the end
        log = open(folder / f"{len(processes)}.log", "w")  # noqa: SIM115
        processes.append(
            subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
        )
        while command is commands[0] and not address_file.exists():
            time.sleep(0.1)
    address = json.loads(address_file.read_text())["address"]
    client = Client(address, timeout="30s")
    client.wait_for_workers(2, timeout=120)
    yield address, client
    client.close()
    for process in reversed(processes):
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def sweep_on(address, folder, *extra):
    """`python sweep.py CELLS FLAGS --scheduler ADDRESS`, in a new process."""
    command = [sys.executable, ROOT / "sweep.py", *CELLS, *FLAGS, *extra]
    command += ["--scheduler", address, "--output-dir", str(folder)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Each cell run alone, `python lstm_stateful.py --tsteps T --lahead L FLAGS`, two at a time:
    its metrics.json, by cell."""
    require("distributed")
    folder = tmp_path_factory.mktemp("alone")
    cells = [(t, la) for t in (2, 3) for la in (1, 2)]
    metrics = {}
    for pair in (cells[:2], cells[2:]):
        runs = [
            subprocess.Popen(
                [sys.executable, SCRIPT, "--tsteps", str(t), "--lahead", str(la), *FLAGS]
                + ["--output-dir", str(folder / f"{t}-{la}")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for t, la in pair
        ]
        for run in runs:
            assert run.wait() == 0, run.stderr.read()[-3000:]
        for t, la in pair:
            metrics[t, la] = json.loads((folder / f"{t}-{la}" / "metrics.json").read_text())
    return metrics


def cells_of(folder):
    cells = json.loads((folder / "sweep.json").read_text())["cells"]
    return {(c["params"]["tsteps"], c["params"]["lahead"]): c for c in cells}


def test_a_sweep_on_a_cluster_gives_every_run_as_run_alone(cluster, alone, tmp_path):
    """A 2 x 2 sweep through the scheduler: every run's files come back to this machine, and
    every run's numbers equal those of the same flags run alone, bit for bit."""
    address, _ = cluster
    process = sweep_on(address, tmp_path)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    assert out.splitlines()[0].endswith(f": 4 runs, on the workers of {address}")
    assert cells_of(tmp_path) == alone
    for t, la in alone:
        files = {p.name for p in (tmp_path / "runs" / f"tsteps{t}-lahead{la}").iterdir()}
        assert files == {"input.png", "results.png", "memory.png", "metrics.json", "log.txt"}
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "retried" not in out


def test_a_worker_killed_during_a_run_costs_that_run_a_retry(cluster, alone, tmp_path):
    """SIGKILL to the worker process running a run: Dask's nanny starts it again, the scheduler
    gives the run to a worker again, and the sweep ends with every run (the same numbers) and
    says which run was retried."""
    address, client = cluster
    process = sweep_on(address, tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the first run under way on a worker: kill that worker
        busy = [worker for worker, keys in client.processing().items() if keys]
        if busy:
            pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    else:
        pytest.fail("no run started on the cluster")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    assert cells_of(tmp_path) == alone
    retried = [line for line in out.splitlines() if line.endswith("(retried: its worker died)")]
    assert len(retried) == 1, out
    client.wait_for_workers(2, timeout=120)  # the nanny's new worker, for the next test


def test_a_cluster_of_workers_with_many_threads_is_refused(tmp_path):
    """Runs of the example cannot share a process: workers must run one at a time."""
    require("distributed")
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=2, host="127.0.0.1", dashboard_address=None
    ) as local:
        process = sweep_on(local.scheduler_address, tmp_path)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 2 and out == ""
    assert err == "sweep.py: error: start each Dask worker with --nthreads 1 (one run at a time)\n"
