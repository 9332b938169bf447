"""Where independent tasks run: a Dask cluster started here, one joined, or none.

Input: how the user asked (`--workers N`, `--scheduler ADDR`, `--threads T`, or none of
them). Output: a `Placement` (worker processes and the kernel threads each one's task
may use) checked before any work, and, on entering `open_client`, a connected
`distributed.Client`.

Invariants: Dask is imported only inside `open_client` (a run without a cluster never
imports it); on a cluster started here, workers x kernel threads never exceed the cores
this process may run on, and each worker runs one task at a time, so the kernels' own
threads are the only ones computing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
from dataclasses import dataclass

from ..core.errors import RnnError
from ..kernels.blas import usable_cores

CONNECT_TIMEOUT_S = 20          # joining a scheduler that does not answer: give up then
SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
_ADDRESS = re.compile(r"^(?P<scheme>[a-z]+)://(?P<host>\[[0-9a-fA-F:]+\]|[^\s:/\[\]]+)"
                      r":(?P<port>[0-9]{1,5})/?$")


class ClusterError(RnnError):
    """A cluster that cannot be started or joined as asked."""


@dataclass(frozen=True)
class Placement:
    """How tasks are placed: `workers` processes started here (0: none, run in this
    process; None: a joined cluster's, whatever it has), each task's kernel threads
    (None: the kernels' default), and the scheduler joined (None: none)."""

    workers: int | None
    threads: int | None
    scheduler: str | None = None

    @property
    def in_process(self) -> bool:
        return self.workers == 0

    def describe(self) -> str:
        threads = ("kernel threads: the kernels' default" if self.threads is None else
                   f"{self.threads} kernel thread{'s' if self.threads > 1 else ''} a task")
        if self.scheduler is not None:
            return f"on the Dask cluster at {self.scheduler} ({threads})"
        if self.in_process:
            return f"in this process, one after another ({threads})"
        return (f"on a Dask LocalCluster of {self.workers} worker process"
                f"{'es' if self.workers > 1 else ''}, one task each at a time ({threads})")


def place(workers: int | None, scheduler: str | None, threads: int | None,
          cores: int | None = None) -> Placement:
    """Check the cluster options together and decide the threads, before any work.

    With `workers`, each worker's kernels get the cores shared out (cores // workers,
    at least 1), or `threads` if given; a plan that would put more threads to work than
    there are cores is refused rather than run slowly."""
    cores = usable_cores() if cores is None else cores
    if workers is not None and scheduler is not None:
        raise ClusterError("--workers starts a cluster here and --scheduler joins one: "
                           "give one of them")
    if scheduler is not None:
        check_address(scheduler)
        require_dask("--scheduler")
        return Placement(None, threads, scheduler)
    if workers is None:
        return Placement(0, threads)
    if workers < 1:
        raise ClusterError(f"--workers {workers}: must be at least 1")
    if workers > cores:
        raise ClusterError(f"--workers {workers}: this machine lets rnndsl use {cores} "
                           f"core{'s' if cores > 1 else ''}, so at most {cores} workers "
                           "(each works on cores of its own)")
    if threads is None:
        threads = max(1, cores // workers)
    elif workers * threads > cores:
        raise ClusterError(f"--workers {workers} x --threads {threads} is "
                           f"{workers * threads} threads on {cores} cores: lower one of "
                           f"them (or leave --threads out: {max(1, cores // workers)} a "
                           "worker)")
    require_dask("--workers")
    return Placement(workers, threads)


def check_address(address: str) -> None:
    """A scheduler address as Dask takes it: SCHEME://HOST:PORT."""
    found = _ADDRESS.match(address)
    if found is None:
        raise ClusterError(f"--scheduler {address!r}: expected an address like "
                           "tcp://HOST:PORT (what dask-scheduler prints)")
    if found["scheme"] not in SCHEMES:
        raise ClusterError(f"--scheduler {address}: unknown protocol {found['scheme']}://; "
                           f"Dask speaks {', '.join(s + '://' for s in SCHEMES)}")
    if not 0 < int(found["port"]) < 65536:
        raise ClusterError(f"--scheduler {address}: port {found['port']} is not from 1 to "
                           "65535")


def require_dask(option: str) -> None:
    """Refuse, naming the option and the extra to install, when Dask is missing. Finds
    the package without importing it."""
    if importlib.util.find_spec("distributed") is None:
        raise ClusterError(f"{option} runs on Dask distributed, which is not installed: "
                           "pip install 'rnndsl[distributed]'")


@contextlib.contextmanager
def open_client(placement: Placement):
    """A Dask client on the placement's cluster, closed (and a cluster started here shut
    down) on leaving, whatever happened inside."""
    assert not placement.in_process, placement
    from distributed import Client, LocalCluster
    if placement.scheduler is not None:
        try:
            client = Client(placement.scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"--scheduler {placement.scheduler}: cannot reach the "
                               f"scheduler ({exc})") from None
        except (TypeError, ValueError, ImportError, RuntimeError) as exc:
            # tls:// without Dask's TLS settings (distributed.comm.tls), ucx:// without
            # ucx-py: Dask's comm layer refuses the address itself
            raise ClusterError(f"--scheduler {placement.scheduler}: Dask cannot connect "
                               f"there ({type(exc).__name__}: {exc}); tls:// needs Dask's "
                               "TLS settings (distributed.comm.tls), ucx:// the ucx "
                               "package") from None
        with client:
            try:      # a sweep's tasks would wait for a worker forever, silently
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise ClusterError(f"--scheduler {placement.scheduler}: the cluster has no "
                                   f"workers (waited {CONNECT_TIMEOUT_S} s)") from None
            yield client
        return
    # one task a worker at a time: the kernels' threads do the computing; no dashboard
    # (a second sweep on the same machine would fight for its port); no statistical
    # profiler, which samples every worker's stacks every 10 ms for that dashboard
    # (the nannies hand this config to the workers they start, and restart)
    import dask
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        with _ctrl_c_ignored():
            cluster = LocalCluster(n_workers=placement.workers, threads_per_worker=1,
                                   processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
        with cluster, Client(cluster) as client:
            client.run(keep_on_ctrl_c)
            yield client


@contextlib.contextmanager
def _ctrl_c_ignored():
    """Ctrl-C ignored while a LocalCluster starts (a second or two): its processes are
    born ignoring it (an ignored signal stays ignored across exec), where one pressed
    then used to kill a starting worker's interpreter, and the start failed with
    "Nanny failed to start" (an internal error, status 3). A Ctrl-C in that second is
    lost; the next one is handled as ever. Only the main thread can set handlers."""
    import signal
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def keep_on_ctrl_c() -> None:
    """For a LocalCluster's workers, which share the terminal: Ctrl-C reaches every
    process of its group, and they ignore it, so that the driver decides (data-parallel
    training ends the step, saves and stops them; a sweep tells its points to stop at
    their step's end, rnndsl.distributed.tasks); and a task's error (a diverged loss) is
    the driver's to report, not a worker's traceback in the user's terminal."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)
