"""`rnndsl sweep`: a grid of `rnndsl train` points, in this process or on Dask.

Arguments are checked before any work (exit 2, the option named, nothing written); a
sweep without --workers or --scheduler runs in this process and never imports Dask (in
a fresh process, since other tests here import it); on a 2-worker LocalCluster, and on
a cluster joined with --scheduler, the points end with the bits/char they end with in
this process (same seed, same settings); results.csv agrees with what each checkpoint
records; an earlier sweep is kept without --force. Tiny settings and the interpreter
(nothing to compile) keep each sweep to a second or two.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnndsl.cli.main import main
from rnndsl.cli.sweep import Axis, points
from rnndsl.distributed import ClusterError, place
from rnndsl.train import checkpoint

REPO = Path(__file__).resolve().parents[2]
TEXT = "the cat sat on the mat. the dog sat on the log. " * 40
TINY = ["--corpus", "corpus.txt", "--steps", "2", "--batch", "2", "--seq", "4",
        "--target", "interp", "--dtype", "float64", "--sample-chars", "3", "--val-every",
        "0", "--warmup", "0"]
GRID = ["--grid", "lr=1e-3,3e-2", "--grid", "H=3,5"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sweep(capsys, *extra):
    return run(["sweep", "char_lstm.rnn", *TINY, *extra], capsys)


def _setup(where: Path) -> Path:
    (where / "corpus.txt").write_text(TEXT)
    for name in ("char_lstm.rnn", "lstm.rnn"):
        shutil.copy(REPO / "specs" / name, where / name)
    return where


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(_setup(tmp_path))
    return tmp_path


def results(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ arguments first
@pytest.mark.parametrize("args, named", [
    ([], "--grid"),
    (["--grid", "lr"], "--grid"),
    (["--grid", "lr="], "--grid"),
    (["--grid", "lr=1e-3,,3e-3"], "--grid"),
    (["--grid", "lr=1e-3,1e-3"], "given twice"),
    (["--grid", "lr=1e-3,0.001"], "given twice"),
    (["--grid", "lr=1e-3", "--grid", "lr=3e-3"], "more than one --grid"),
    (["--grid", "lr-floor=0.1", "--grid", "lr_floor=0.2"], "the same setting"),
    (["--grid", "lr=-1"], "--grid lr=-1"),
    (["--grid", "lr=fast"], "--grid lr=fast"),
    (["--grid", "clip=-1"], "--grid clip=-1"),
    (["--grid", "batch=0"], "--grid batch=0"),
    (["--grid", "optimizer=adam,lbfgs"], "--grid optimizer=lbfgs"),
    (["--grid", "Q=1,2", "--grid", "zz=3"], "Q, zz"),
    (["--grid", "H=0"], "--grid H=0"),
    (["--grid", "H=99999999999"], "--grid H=99999999999: a size must be at most"),
    (["--grid", "debug=0,1"], "--grid debug: not a setting to sweep"),
    (["--grid", "temperatures=0.5,1"], "--grid temperatures: not a setting to sweep"),
    (["--grid", "corpus=corpus.txt,./corpus.txt"], "are one file"),
    (["--grid", "V=10"], "vocabulary"),
    (["--grid", "H=3", "--dims", "H=4"], "--dims"),
    (["--grid", "dims=3"], "--grid dims"),
    (["--grid", "threads=1,2"], "--grid threads"),
    (["--grid", "workers=1,2"], "--grid workers"),
    (["--grid", "checkpoint=a.npz,b.npz"], "--grid checkpoint"),
    (["--grid", "lr=1e-3", "--lr", "0.1"], "--lr and --grid lr"),
    (["--grid", "lr=1e-3", "--workers", "0"], "--workers"),
    (["--grid", "lr=1e-3", "--workers", "999"], "--workers 999"),
    (["--grid", "lr=1e-3", "--workers", "1", "--threads", "999"], "--threads"),
    (["--grid", "lr=1e-3", "--workers", "1", "--scheduler", "tcp://h:1"], "--scheduler"),
    (["--grid", "lr=1e-3", "--scheduler", "nowhere"], "--scheduler"),
    (["--grid", "lr=1e-3", "--scheduler", "tcp://h:70000"], "--scheduler"),
    (["--grid", "lr=1e-3", "--checkpoint", "m.npz"], "--checkpoint"),
    (["--grid", "lr=1e-3", "--resume"], "--resume"),
    (["--grid", "lr=1e-3", "--out", "corpus.txt"], "--out"),
    (["--grid", "lr=1e-3", "--plot", "nofolder/p.png"], "--plot"),
    (["--grid", "lr=1e-3", "--steps", "0"], "--steps"),
    (["--grid", "max-chars=5000,10"], "point max-chars=10"),   # train's check of a point
    (["--grid", "lr-floor=0.1", "--lr-schedule", "constant"], "--lr-floor"),
])
def test_bad_arguments_exit_2_naming_the_option_before_any_work(folder, capsys, args, named):
    before = sorted(p.name for p in folder.iterdir())
    code, out, err = sweep(capsys, *args)
    assert code == 2, (out, err)
    assert named in err, err
    assert "Traceback" not in err and "internal error" not in err
    assert "[1/" not in out and sorted(p.name for p in folder.iterdir()) == before


def test_dry_run_lists_the_points_and_writes_nothing(folder, capsys):
    code, out, err = sweep(capsys, *GRID, "--dry-run")
    assert code == 0, err
    assert [line.strip() for line in out.splitlines() if line.startswith("  ")] == [
        "lr=0.001,H=3", "lr=0.001,H=5", "lr=0.03,H=3", "lr=0.03,H=5"]
    assert not (folder / "sweep-char_lstm").exists()


# ------------------------------------------------------------------ in this process
@pytest.fixture(scope="module")
def in_process(tmp_path_factory, cli_listing_dask):
    """A 2 x 2 sweep in a fresh process, without --workers or --scheduler."""
    where = _setup(tmp_path_factory.mktemp("sweep_here"))
    done = subprocess.run([sys.executable, "-c", cli_listing_dask, "sweep", "char_lstm.rnn",
                           *TINY, *GRID], cwd=where, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return where, done.stdout


def test_a_sweep_without_a_cluster_runs_here_and_never_imports_dask(in_process):
    where, out = in_process
    assert "DASK MODULES: []" in out
    assert "in this process" in out
    progress = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in progress] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert all("best so far" in line for line in progress)


def test_results_csv_agrees_with_the_checkpoints(in_process):
    where, out = in_process
    rows = results(where / "sweep-char_lstm" / "results.csv")
    assert list(rows[0]) == ["lr", "H", "bits_per_char", "checkpoint"]
    assert [(r["lr"], r["H"]) for r in rows] == [("0.001", "3"), ("0.001", "5"),
                                                 ("0.03", "3"), ("0.03", "5")]
    for row in rows:
        path = Path(row["checkpoint"])
        assert path.parent == where / "sweep-char_lstm"
        assert path.name == f"lr={row['lr']},H={row['H']}.npz"
        info = checkpoint.peek(path)
        assert info.dims["H"] == int(row["H"])
        assert info.meta["user"]["settings"]["lr"] == float(row["lr"])
        assert info.meta["trainer"]["steps"] == 2
        assert float(row["bits_per_char"]) == info.meta["user"]["validation"]["bits_per_char"]
        assert path.with_suffix(".log").read_text().startswith("model: CharLSTM")
    best = min(rows, key=lambda r: float(r["bits_per_char"]))
    assert f"best: {float(best['bits_per_char']):.4f} bits/char" in out
    table = out.split("\n\n")[-1].splitlines()
    assert table[0].split()[:3] == ["lr", "H", "bits/char"]
    shown = [float(line.split()[2]) for line in table[1:5]]
    assert shown == sorted(shown)                                 # best first


# ------------------------------------------------------------------ on Dask
def test_a_sweep_on_a_local_cluster_matches_the_one_in_process(in_process, folder, capsys):
    pytest.importorskip("distributed")
    code, out, err = sweep(capsys, *GRID, "--workers", "2", "--out", "two")
    assert code == 0, err
    assert "LocalCluster of 2 worker processes" in out
    here = {(r["lr"], r["H"]): float(r["bits_per_char"])
            for r in results(in_process[0] / "sweep-char_lstm" / "results.csv")}
    there = {(r["lr"], r["H"]): float(r["bits_per_char"])
             for r in results(folder / "two" / "results.csv")}
    assert there == pytest.approx(here, rel=1e-12)    # same seed and settings: same run
    assert len(list((folder / "two").glob("*.log"))) == 4


def test_a_sweep_joins_a_cluster_with_scheduler(folder, capsys):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        code, out, err = sweep(capsys, "--grid", "seed=1,2", "--scheduler",
                               cluster.scheduler_address, "--out", "joined")
    assert code == 0, err
    rows = results(folder / "joined" / "results.csv")
    assert [r["seed"] for r in rows] == ["1", "2"]
    assert rows[0]["bits_per_char"] != rows[1]["bits_per_char"]    # the seed reached them


def test_a_cluster_without_workers_is_named_not_waited_on_forever(folder, capsys,
                                                               monkeypatch):
    """sweep --scheduler on a scheduler with no workers printed its header and then
    nothing, ever (train's own run said "the cluster has no workers" after 20 s)."""
    distributed = pytest.importorskip("distributed")
    from rnndsl.distributed import cluster as cluster_module
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT_S", 1)
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://",
                                  dashboard_address=None) as empty:
        code, out, err = sweep(capsys, "--grid", "seed=1,2", "--scheduler",
                               empty.scheduler_address, "--out", "none")
    assert code == 2, (out, err)
    assert f"--scheduler {empty.scheduler_address}: the cluster has no workers (waited " \
           "1 s)" in err
    assert not (folder / "none").exists()


def test_the_workers_share_out_the_cores():
    pytest.importorskip("distributed")         # place() refuses a cluster without Dask
    assert place(2, None, None, cores=8).threads == 4
    assert place(3, None, None, cores=8).threads == 2
    assert place(None, None, 3, cores=8).in_process
    for workers in range(1, 9):
        placed = place(workers, None, None, cores=8)
        assert placed.workers * placed.threads <= 8
    with pytest.raises(ClusterError, match="at most 8"):
        place(9, None, None, cores=8)
    with pytest.raises(ClusterError, match="--threads"):
        place(2, None, 5, cores=8)


# ------------------------------------------------------------------ never destroy work
def test_an_earlier_sweep_is_overwritten_only_with_force(folder, capsys):
    assert sweep(capsys, "--grid", "H=3,4")[0] == 0
    out_dir = folder / "sweep-char_lstm"
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    code, out, err = sweep(capsys, "--grid", "H=3,4")
    assert code == 2 and "--force" in err and "results.csv" in err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    code, out, err = sweep(capsys, "--grid", "H=3,4", "--force", "--seed", "7")
    assert code == 0, err
    assert "note:" not in out
    assert (out_dir / "results.csv").read_bytes() != before["results.csv"]
    assert checkpoint.peek(out_dir / "H=3.npz").meta["user"]["settings"]["seed"] == 7
    # a smaller grid over it: the other point's files stay, and are named
    code, out, err = sweep(capsys, "--grid", "H=3", "--force")
    assert code == 0, err
    assert "also holds files of points not in this sweep (H=4.log, H=4.npz)" in out


@pytest.mark.filterwarnings("ignore::RuntimeWarning")      # NumPy, on the overflow
def test_a_diverging_point_is_a_row_without_bits_and_the_rest_go_on(folder, capsys):
    # float32 params overflow at once at lr 1e300 (float64 ones can stay finite)
    code, out, err = sweep(capsys, "--grid", "lr=1e300,1e-3", "--dtype", "float32")
    assert code == 0, err
    rows = results(folder / "sweep-char_lstm" / "results.csv")
    assert rows[0]["bits_per_char"] == "" and float(rows[1]["bits_per_char"]) > 0
    assert "diverged" in out
    code, out, err = sweep(capsys, "--grid", "lr=1e300", "--dtype", "float32", "--out", "all")
    assert code == 2 and "no point of the sweep trained" in err
    # params still finite (SGD's first step at lr 3e38), logits not: an internal error
    # (exit 3) that stopped the whole sweep
    code, out, err = sweep(capsys, "--grid", "lr=3e38,1e-2", "--dtype", "float32",
                           "--optimizer", "sgd", "--clip", "0", "--warmup", "0",
                           "--out", "finite")
    assert code == 0, err
    rows = results(folder / "finite" / "results.csv")
    assert rows[0]["bits_per_char"] == "" and float(rows[1]["bits_per_char"]) > 0
    assert "the model diverged: its logits are no longer finite" in out


def test_point_names_are_safe_for_files_and_distinct():
    axes = [Axis("corpus", False, "corpus", ("a/b.txt", "a_b.txt", "x y"),
                 ("a/b.txt", "a_b.txt", "x y"))]
    names = [p.name for p in points(axes)]
    assert names == ["corpus=a_b.txt", "corpus=a_b.txt-2", "corpus=x_y"]
    assert all(os.sep not in n and " " not in n for n in names)


def test_plot_writes_a_png(folder, capsys):
    pytest.importorskip("matplotlib")
    code, out, err = sweep(capsys, "--grid", "lr=1e-3,3e-2", "--plot", "sweep.png")
    assert code == 0, err
    assert (folder / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("plot, named", [
    ("corpus.txt", "is a corpus the sweep reads"),
    ("char_lstm.rnn", "is the spec"),
    ("lstm.rnn", "is a file the spec uses"),
    ("out/results.csv", "is the sweep's results.csv, which the sweep writes"),
    ("out/lr=0.001.npz", "is point lr=0.001's checkpoint, which the sweep writes"),
    ("out/lr=0.001.best.npz", "is point lr=0.001's best checkpoint"),
    ("out/lr=0.001.log", "is point lr=0.001's log"),
])
def test_plot_never_replaces_what_the_sweep_reads_or_writes(folder, capsys, plot, named):
    """--plot corpus.txt made the corpus a PNG (exit 0), as it did the spec, results.csv
    or a point's checkpoint; train refuses such names, and now the sweep does too."""
    pytest.importorskip("matplotlib")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    code, out, err = sweep(capsys, "--grid", "lr=1e-3,3e-2", "--out", "out", "--plot", plot)
    assert code == 2 and f"--plot {plot} {named}" in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert not (folder / "out").exists()
    # a plot in the folder the sweep makes is fine
    code, out, err = sweep(capsys, "--grid", "lr=1e-3,3e-2", "--out", "out", "--plot",
                           "out/plot.png")
    assert code == 0, err
    assert (folder / "out" / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_a_points_resume_command_continues_the_point(folder, capsys):
    """An interrupted point's log said `rnndsl train SPEC --checkpoint X --resume`, which
    refused to run (another corpus; the point's settings lost). A point now runs as the
    sweep's command line less its own options, with the point's values and checkpoint:
    what its resume command is made of."""
    from rnndsl.cli.main import build_parser
    from rnndsl.cli.sweep import point_args, points, resolve

    def parsed(argv):
        args = build_parser().parse_args(argv)
        args.argv = argv
        axes = resolve(args.grid, args.parser, ["V", "H"], "V", args.dims or {})
        return args, axes, points(axes)
    args, axes, pts = parsed(["--debug", "sweep", "char_lstm.rnn", *TINY, "--dims", "V=20",
                              "--grid", "lr=1e-2,2e-2", "--grid", "H=4", "--out", "o",
                              "--plot", "p.png", "--force", "--workers=2"])
    settings = point_args(args, axes, pts[1], folder / "o", None)
    assert settings.argv[:3] == ["--debug", "train", "char_lstm.rnn"]
    assert settings.argv[-6:] == ["--dims", "V=20,H=4", "--lr", "0.02", "--checkpoint",
                                  str((folder / "o" / f"{pts[1].name}.npz").absolute())]
    assert not {"--grid", "--out", "--plot", "--force", "--workers=2", "o", "p.png"} \
        & set(settings.argv)
    assert settings.argv.count("--dims") == 1
    # the command runs: the checkpoint a point wrote continues
    assert sweep(capsys, "--grid", "lr=1e-2", "--out", "o")[0] == 0
    args, axes, pts = parsed(["sweep", "char_lstm.rnn", *TINY, "--grid", "lr=1e-2",
                              "--out", "o"])
    ckpt = folder / "o" / f"{pts[0].name}.npz"
    resumed = point_args(args, axes, pts[0], folder / "o", None).argv
    assert resumed[0] == "train"
    code, out, err = run([*resumed, "--resume"], capsys)
    assert code == 0, err
    assert "resuming at step 2" in out, out
    assert checkpoint.peek(ckpt).meta["trainer"]["steps"] == 4


def test_ctrl_c_stops_the_sweep_and_keeps_the_point_under_way(tmp_path):
    """In this process, Ctrl-C ends the point under way as it ends `rnndsl train` (at the
    end of its step, its checkpoint saved), and then the sweep, with status 130."""
    where = _setup(tmp_path)
    child = subprocess.Popen([sys.executable, "-m", "rnndsl", "sweep", "char_lstm.rnn", *TINY,
                              "--steps", "1000000", "--grid", "H=3,4"], cwd=where,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, deadline = "", time.monotonic() + 120
    while "step 1 |" not in seen and time.monotonic() < deadline:
        seen += child.stderr.readline()         # the point's progress, shown live
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, (out, err)
    assert "interrupted: 0 of 2 points trained" in out and "Traceback" not in err
    rows = results(where / "sweep-char_lstm" / "results.csv")
    assert [(r["H"], r["bits_per_char"]) for r in rows] == [("3", "")]
    assert checkpoint.peek(rows[0]["checkpoint"]).meta["trainer"]["steps"] >= 1


def test_ctrl_c_on_a_cluster_stops_the_points_under_way_as_in_this_process(tmp_path):
    """With --workers, Ctrl-C (to the whole process group, as a terminal sends it)
    reaches the driver and the workers; the workers ignore it, and the driver tells the
    points under way to stop at the end of their step: each saves its checkpoint and is
    a "stopped" row, the point not started is left out, no traceback, status 130."""
    pytest.importorskip("distributed")
    where = _setup(tmp_path)
    child = subprocess.Popen([sys.executable, "-m", "rnndsl", "sweep", "char_lstm.rnn", *TINY,
                              "--steps", "1000000", "--every", "5", "--grid", "H=3,4,5",
                              "--workers", "2"], cwd=where, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    folder = where / "sweep-char_lstm"
    deadline = time.monotonic() + 180
    while len(list(folder.glob("*.npz"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)                          # both workers' points are training
    os.killpg(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, (out, err)
    assert "interrupted: 0 of 3 points trained" in out
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    rows = results(folder / "results.csv")
    assert sorted(r["H"] for r in rows) == ["3", "4"]          # H=5 never started
    for row in rows:
        assert row["bits_per_char"] == "" and row["checkpoint"].endswith(f"H={row['H']}.npz")
        assert checkpoint.peek(row["checkpoint"]).meta["trainer"]["steps"] >= 5
    assert "stopped by Ctrl-C, its checkpoint saved" in out


def _dies(settings, out, err):
    os._exit(1)                         # as a worker killed mid-point


def _trains(settings, out, err):
    print("trained", file=out)
    return 0, {"value": settings}


def test_a_point_whose_worker_dies_fails_alone():
    """A worker that dies under a task: Dask tries it elsewhere (here: not at all), then
    it is a failed Outcome, and the other tasks' outcomes still come."""
    pytest.importorskip("distributed")
    import cloudpickle
    import dask
    from rnndsl.distributed import Placement, Task, runner
    here = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(here)      # the workers cannot import tests/
    tasks = [Task("dies", _dies, None), Task("trains", _trains, 7)]
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
                runner(Placement(workers=2, threads=1)) as run:
            outcomes = {o.key: o for o in run(tasks)}
    finally:
        cloudpickle.unregister_pickle_by_value(here)
    assert not outcomes["dies"].ok and "died" in outcomes["dies"].error
    assert outcomes["trains"].ok and outcomes["trains"].summary == {"value": 7}
    assert outcomes["trains"].log == "trained\n"


def test_a_points_stop_watch_sees_the_drivers_event_and_ends_with_the_point():
    """The thread watching the driver's Event (one a point on a worker) reports the stop,
    and ends when its point ends: a sweep of many points leaves no thread polling the
    scheduler behind each (a stand-in for Dask's Event)."""
    import threading

    from rnndsl.distributed.tasks import StopWatch

    class Event:
        def __init__(self):
            self.set_ = threading.Event()

        def wait(self, timeout=None):
            return self.set_.wait(min(timeout, 0.05))

    def watchers():
        return [t for t in threading.enumerate() if t.name == "rnndsl-stop-watch"]

    event = Event()
    watch = StopWatch(event)
    assert not watch()
    event.set_.set()
    deadline = time.monotonic() + 5
    while not watch() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watch()
    quiet = StopWatch(Event())
    assert watchers()
    quiet.close()
    deadline = time.monotonic() + 5
    while watchers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not watchers() and not quiet()
