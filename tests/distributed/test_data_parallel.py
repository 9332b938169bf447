"""`rnndsl train --workers N | --scheduler ADDR`: synchronous data parallelism on Dask.

Without either option a run never imports Dask (in a fresh process, since these tests
import it); that run, in one process, is the reference: on two workers, with the batch's
5 rows split 2 + 3, the same seed gives the same loss at every step, the same params,
optimiser state and carried state (to float64 summation order), the same closing lines
and --json keys; a checkpoint resumes with another number of workers and continues the
one-process run; a worker killed mid-run stops the run with a message naming it and
the command that resumes it, the checkpoint intact. The workers' params are compared,
and a replica changed behind the run's back is caught. The interpreter (nothing to
compile), H=6 and a few steps keep each run to a second or two; one LocalCluster is
shared by the tests that join it with --scheduler.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rnndsl.cli.main import main
from rnndsl.distributed import data_parallel
from rnndsl.distributed.data_parallel import DataParallel, ReplicasDiverged, row_slices
from rnndsl.train import checkpoint

REPO = Path(__file__).resolve().parents[2]
TEXT = "the cat sat on the mat. the dog sat on the log. " * 40
STEPS = 4
SETTINGS = ["--dims", "H=6", "--batch", "5", "--seq", "6", "--target", "interp",
            "--dtype", "float64", "--sample-chars", "4", "--val-every", "2", "--val-chars",
            "60", "--warmup", "0", "--lr-schedule", "constant", "--lr", "0.02", "--every", "2",
            # rows start afresh often, so that the workers must reset the rows one process
            # resets (the driver draws them for the whole batch)
            "--state-resets", "0.3"]


def _setup(where: Path) -> Path:
    (where / "corpus.txt").write_text(TEXT)
    for name in ("char_lstm.rnn", "lstm.rnn"):
        shutil.copy(REPO / "specs" / name, where / name)
    return where


def train(where: Path, *extra, name="m") -> tuple[int, str, str]:
    """`rnndsl train` in this process, in `where`, its text captured."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["train", "char_lstm.rnn", "--corpus", "corpus.txt", *SETTINGS,
            "--checkpoint", f"{name}.npz", *map(str, extra)]
    previous = os.getcwd()
    os.chdir(where)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(previous)
    return code, out.getvalue(), err.getvalue()


def history(path: Path) -> np.ndarray:
    return np.array(checkpoint.peek(path).meta["user"]["history"])


def arrays(path: Path) -> dict[str, np.ndarray]:
    """Everything numeric a checkpoint holds of the model and its training."""
    from rnndsl.train.checkpoint import _read
    header, members = _read(path)
    return members


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def here(tmp_path_factory, cli_listing_dask):
    """The reference: STEPS steps in one process, in a fresh process."""
    where = _setup(tmp_path_factory.mktemp("here"))
    done = subprocess.run([sys.executable, "-c", cli_listing_dask, "train", "char_lstm.rnn",
                           "--corpus", "corpus.txt", *SETTINGS, "--steps", str(STEPS), "--checkpoint",
                           "m.npz", "--json", "run.json"], cwd=where, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return where, done.stdout


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    """The same run on a LocalCluster of 2 workers that it starts (--workers 2)."""
    pytest.importorskip("distributed")
    where = _setup(tmp_path_factory.mktemp("spread"))
    code, out, err = train(where, "--steps", STEPS, "--workers", 2, "--threads", 1,
                           "--json", "run.json")
    assert code == 0, err
    return where, out


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 workers, joined with --scheduler, and a client on it."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local, \
            distributed.Client(local) as client:
        yield local.scheduler_address, client


# ------------------------------------------------------------------ without a cluster
def test_without_workers_or_scheduler_dask_is_never_imported(here):
    where, out = here
    assert "DASK MODULES: []" in out
    assert "data parallel" not in out


# ------------------------------------------------------------------ the same run
def test_two_workers_follow_the_one_process_run(here, spread):
    (a, _), (b, out_spread) = here, spread
    assert "data parallel: 2 workers on a Dask LocalCluster, 2 or 3 of the 5 rows" \
        in out_spread
    assert "data parallel: a step took" in out_spread and "in Dask" in out_spread
    np.testing.assert_allclose(history(b / "m.npz"), history(a / "m.npz"), rtol=1e-10)
    assert len(history(a / "m.npz")) == STEPS
    ours, theirs = arrays(a / "m.npz"), arrays(b / "m.npz")
    assert ours.keys() == theirs.keys()
    for key in ours:          # params, optimiser buffers, carried and eval states
        if key != "__header__":
            np.testing.assert_allclose(theirs[key], ours[key], rtol=1e-9, atol=1e-12,
                                       err_msg=key)
    one, two = checkpoint.peek(a / "m.npz"), checkpoint.peek(b / "m.npz")
    assert one.meta["trainer"]["steps"] == two.meta["trainer"]["steps"] == STEPS
    assert one.meta["user"]["position"] == two.meta["user"]["position"]
    assert one.meta["user"]["validation"]["bits_per_char"] == pytest.approx(
        two.meta["user"]["validation"]["bits_per_char"], rel=1e-10)


def _form(text: str) -> list[str]:
    """The closing lines with their numbers and times blanked."""
    lines = [line for line in text.splitlines()
             if line.startswith(("trained ", "validation: ", "best: "))]
    return [re.sub(r"\d+(\.\d+)?|\d:\d\d", "N", line) for line in lines]


def _keys(value, prefix=""):
    if isinstance(value, dict):
        return {k for key, v in value.items() for k in _keys(v, f"{prefix}{key}.")} | \
            {prefix + str(key) for key in value}
    return set()


def test_closing_lines_and_json_are_those_of_one_process(here, spread):
    (a, out_here), (b, out_spread) = here, spread
    assert _form(out_spread) == _form(out_here) and len(_form(out_here)) == 3
    ours = json.loads((a / "run.json").read_text())
    theirs = json.loads((b / "run.json").read_text())
    assert _keys(theirs) == _keys(ours)
    for key in ("steps", "total_steps", "chars", "model", "lr_schedule"):
        assert theirs[key] == ours[key], key
    assert theirs["validation_bits_per_char"] == pytest.approx(
        ours["validation_bits_per_char"], rel=1e-10)
    assert [s["text"] for s in theirs["samples"]] == [s["text"] for s in ours["samples"]]


# ------------------------------------------------------------------ resume across N
def test_resume_with_another_number_of_workers_continues_the_run(here, cluster, tmp_path):
    address, _ = cluster
    where = _setup(tmp_path)
    code, _, err = train(where, "--steps", 2)                       # in this process
    assert code == 0, err
    code, out, err = train(where, "--steps", STEPS - 2, "--resume", "--scheduler", address)
    assert code == 0, err
    assert "resuming at step 2" in out and f"on the Dask cluster at {address}" in out
    np.testing.assert_allclose(history(where / "m.npz"), history(here[0] / "m.npz"),
                               rtol=1e-10)
    assert checkpoint.peek(where / "m.npz").meta["trainer"]["steps"] == STEPS


@pytest.mark.filterwarnings("ignore::RuntimeWarning")      # NumPy, on the overflow
def test_a_run_that_diverges_on_the_workers_says_so(cluster, tmp_path):
    """float32 params overflow at once at lr 1e300: a worker's loss refuses its logits,
    and the driver reports the divergence as one process does (exit 2)."""
    address, _ = cluster
    where = _setup(tmp_path)
    code, out, err = train(where, "--steps", 3, "--scheduler", address, "--lr", "1e300",
                           "--dtype", "float32", "--clip", "0")
    assert code == 2, (out, err)
    assert "the model diverged" in err and "internal error" not in err


# ------------------------------------------------------------------ bad options
@pytest.mark.parametrize("args, named", [
    (["--workers", "0"], "--workers"),
    (["--workers", "999"], "--workers 999"),
    (["--workers", "2", "--batch", "1"], "--batch 1"),
    (["--workers", "1", "--threads", "999"], "--threads"),
    (["--workers", "1", "--scheduler", "tcp://h:1"], "--scheduler"),
    (["--scheduler", "nowhere"], "--scheduler"),
    (["--scheduler", "tcp://h:70000"], "port"),
])
def test_bad_cluster_options_exit_2_before_any_work(tmp_path, args, named):
    pytest.importorskip("distributed")
    where = _setup(tmp_path)
    code, out, err = train(where, "--steps", 1, *args)
    assert code == 2, (out, err)
    assert named in err and "Traceback" not in err and "internal error" not in err
    assert not (where / "m.npz").exists() and "trained" not in out


# ------------------------------------------------------------------ the reduction
class _Eager:
    """Stands in for a DataParallel's client: runs each task at once, recording on
    which rank it ran and which ranks' values it read."""

    id = "eager"

    def __init__(self):
        self.reads: dict[int, int] = {}

    def _submit(self, rank, fn, *args):
        values = [a for a in args if isinstance(a, tuple)]
        self.reads[rank] = self.reads.get(rank, 0) + sum(1 for v in values if v[1] != rank)
        if fn is data_parallel._apply:
            total = values[0][0] if len(values) == 1 else values[0][0] + values[1][0]
            return (total, rank)
        return (values[0][0] + values[1][0], rank)


@pytest.mark.parametrize("n", range(1, 9))
def test_every_worker_gets_the_same_total_and_none_receives_them_all(n):
    grads = [(np.float64(1.0) / (3 + rank) * 10 ** rank, rank) for rank in range(n)]
    eager = _Eager()
    totals = [t for t, _ in DataParallel._reduce_and_apply(eager, grads, False)]
    assert len({float(t).hex() for t in totals}) == 1            # the same bits
    assert totals[0] == pytest.approx(sum(g for g, _ in grads), rel=1e-15)
    rounds = max(1, (n - 1).bit_length())
    assert max(eager.reads.values()) <= rounds + 1
    assert n < 4 or max(eager.reads.values()) < n - 1


def test_rows_split_evenly():
    for batch in range(1, 20):
        for n in range(1, batch + 1):
            sizes = [s.stop - s.start for s in row_slices(batch, n)]
            assert sum(sizes) == batch and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


# ------------------------------------------------------------------ params checked
def test_replicas_that_differ_are_caught(cluster):
    """Through the API, on the tiny cell: a replica's params changed behind the run's
    back are found at the next comparison."""
    address, client = cluster
    import rnndsl
    from rnndsl.train.optim import Adam
    from rnndsl.train.trainer import Trainer
    from tiny_cells import TINY      # tests/ is on sys.path (conftest.py)
    Tiny = rnndsl.load_text(TINY, target="interp")
    cell = Tiny(I=3, H=4, V=3, dtype=np.float64, seed=0)
    dp = DataParallel(Trainer(cell, optimizer=Adam(1e-2)), client,
                      sorted(client.scheduler_info(n_workers=-1)["workers"]), None)
    dp.start()
    try:
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(3, 4, 3)), rng.integers(0, 3, size=(3, 4))
        dp.step(x, y)
        dp.sync()                                   # identical: no complaint
        client.run(_nudge, dp.id, workers=[dp.addresses[1]])
        dp.step(x, y)
        with pytest.raises(ReplicasDiverged, match="params differ at step 2"):
            dp.sync()
    finally:
        dp.close()


def _nudge(run_id):
    params = data_parallel._REPLICAS[run_id].trainer.cell.params
    params["b"][0] += 1e-6


# ------------------------------------------------------------------ a killed worker
def test_a_killed_worker_stops_the_run_and_the_checkpoint_resumes(cluster, tmp_path):
    """Last here: it kills one of the shared cluster's workers (its nanny restarts it)."""
    address, client = cluster
    where = _setup(tmp_path)
    pids = client.run(os.getpid)
    victim = sorted(pids)[1]

    def kill_after_a_checkpoint():
        deadline = time.monotonic() + 120
        while not (where / "m.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(pids[victim], signal.SIGKILL)

    killer = threading.Thread(target=kill_after_a_checkpoint)
    killer.start()
    try:
        code, out, err = train(where, "--steps", 100_000, "--scheduler", address)
    finally:
        killer.join()
    assert code == 2, (out, err)
    assert f"Dask worker {victim}" in err and "was lost" in err
    assert "rows 2-4" in err and f"pid {pids[victim]}" in err
    saved = checkpoint.peek(where / "m.npz").meta["trainer"]["steps"]
    assert f"m.npz holds step {saved}" in err and saved % 2 == 0 and saved >= 2
    assert "rnndsl train char_lstm.rnn" in err and "--resume" in err
    # what is left of --steps (with --resume, --steps counts from the checkpoint on)
    assert f"--steps {100_000 - saved} " in err and "--steps 100000" not in err, err
    assert "Traceback" not in err and "internal error" not in err
    code, out, err = train(where, "--steps", 1, "--resume")          # in this process
    assert code == 0, err
    assert checkpoint.peek(where / "m.npz").meta["trainer"]["steps"] == saved + 1
    client.wait_for_workers(2, timeout=60)


def test_ctrl_c_in_a_terminal_saves_and_stops_the_workers_too(tmp_path):
    """Ctrl-C reaches the whole process group, the LocalCluster's workers with it: they
    carry on, and the run ends as `rnndsl train` ends on Ctrl-C (checkpoint saved, 130)."""
    pytest.importorskip("distributed")
    where = _setup(tmp_path)
    child = subprocess.Popen([sys.executable, "-m", "rnndsl", "train", "char_lstm.rnn",
                              "--corpus", "corpus.txt", *SETTINGS, "--steps", "100000",
                              "--workers", "2", "--checkpoint", "m.npz"], cwd=where,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen, deadline = "", time.monotonic() + 120
    while "data parallel" not in seen and time.monotonic() < deadline:
        seen += child.stdout.readline()
    time.sleep(1.0)
    os.killpg(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, (seen + out, err)
    assert "interrupted: the checkpoint holds step" in out and "Traceback" not in err
    assert checkpoint.peek(where / "m.npz").meta["trainer"]["steps"] >= 1


def test_ctrl_c_while_the_cluster_starts_is_no_internal_error(tmp_path):
    """Ctrl-C in the second or so while the LocalCluster starts killed a starting
    worker's interpreter: "internal error: Nanny failed to start" (status 3) and the
    workers' tracebacks. The cluster's processes now start ignoring it; a Ctrl-C then
    is lost, and the next one ends the run as ever (130)."""
    pytest.importorskip("distributed")
    where = _setup(tmp_path)
    child = subprocess.Popen([sys.executable, "-m", "rnndsl", "train", "char_lstm.rnn",
                              "--corpus", "corpus.txt", *SETTINGS, "--steps", "100000",
                              "--workers", "2", "--checkpoint", "m.npz"], cwd=where,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    seen, deadline = "", time.monotonic() + 120
    while "running one step" not in seen and time.monotonic() < deadline:
        seen += child.stdout.read(1)
    assert "running one step" in seen, seen          # the interpreter's warm-up
    time.sleep(0.5)                          # the cluster is starting
    os.killpg(child.pid, signal.SIGINT)
    try:
        out, err = child.communicate(timeout=5)
    except subprocess.TimeoutExpired:        # it was lost: the next one counts
        os.killpg(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=120)
    # stderr first: pytest shortens a long message in its middle (a run on a loaded
    # machine once ended 2, its stderr's head, the cause, cut)
    assert child.returncode == 130, (err, seen + out)
    assert "internal error" not in err and "Traceback" not in err, err


def test_a_result_lost_with_its_worker_after_the_task_finished_stops_the_run():
    """The race an outside test hit (3 hangs in 15 kills): every task has finished, then
    a worker dies before its result is fetched; the scheduler runs the task again,
    pinned to the dead worker, and the fetch never returns. The fetch times out, finds
    the worker gone, and stops the run (stand-ins for Dask's client and futures)."""
    class Finished:                      # done: its result is here at once
        def __init__(self, value):
            self.value = value

        def result(self, timeout=None):
            return self.value

    class LostWithItsWorker(Finished):   # its result never comes back
        def result(self, timeout=None):
            time.sleep(min(timeout or 0.05, 0.05))
            raise TimeoutError

    class Client:
        def scheduler_info(self, n_workers=-1):
            return {"workers": {"tcp://a:1": {}}}          # tcp://b:2 is gone

        def gather(self, futures):
            raise AssertionError("Client.gather has no timeout: it would wait for ever here")

    runner = object.__new__(DataParallel)
    runner.client, runner.addresses, runner.pids = Client(), ["tcp://a:1", "tcp://b:2"], {}
    runner._slices, runner.steps = [slice(0, 2), slice(2, 4)], 6
    assert runner._results([Finished(1), Finished(2)]) == [1, 2]
    started = time.monotonic()
    with pytest.raises(data_parallel.WorkerLost, match=r"tcp://b:2 \(pid \?, rows 2-3 of "
                       r"each batch\) was lost during step 7"):
        runner._results([Finished(1), LostWithItsWorker(2)])
    assert time.monotonic() - started < 5
