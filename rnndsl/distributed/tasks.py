"""Independent tasks, run in this process or on a Dask cluster, reported as they finish.

Input: `Task`s, each a key, a function and its settings: the function is
`f(settings, out=, err=) -> (exit status, summary dict)`, as `rnndsl train`'s
`run_training` is, and is passed in by the caller (this layer sits below the command
line and never imports it; a worker imports the function's module by name when it
unpickles the task). Output: one `Outcome` a task, in the order they finish.

Invariants: a task's text (what it would have printed) is captured in its Outcome, never
mixed into another's or into the caller's output (in this process, where tasks run one
at a time, its progress display is shown live instead); a user mistake inside a task (an
`RnnError`: a loss that diverged, say) ends that task only, as a failed Outcome, while a
bug (any other exception) propagates to the caller with its traceback.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from ..core.errors import RnnError
from .cluster import Placement, open_client


@dataclass(frozen=True)
class Task:
    """One unit of work: `fn(settings, out=, err=)`, known to the caller by `key`."""

    key: str
    fn: Callable
    settings: object


@dataclass
class Outcome:
    """How a task ended: its exit status and summary, or the error that stopped it (then
    status is 2 and summary None), the text it printed and its seconds."""

    key: str
    status: int
    summary: dict | None
    log: str
    seconds: float
    error: str | None = None
    started: bool = True       # False: the driver had asked the tasks to stop before it began

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 0


def _render(exc: RnnError) -> str:
    return exc.render() if hasattr(exc, "render") else f"error: {exc}"


# The name of the Dask Event that tells the tasks on a cluster that Ctrl-C was pressed
# (set by `_run_on`), for the task running on this thread: see `stop_requested`.
_STOP = threading.local()


class StopWatch:
    """Whether the driver asked the tasks to stop (call it), read by a training loop at
    the end of each step. A thread waits on the driver's Dask Event, so a step pays
    nothing for asking; `close()` ends that thread when the task ends."""

    def __init__(self, event):
        self.asked, self.done = threading.Event(), threading.Event()
        self._event = event
        threading.Thread(target=self._watch, daemon=True, name="rnndsl-stop-watch").start()

    def _watch(self) -> None:
        while not self.done.is_set():
            try:
                if self._event.wait(timeout=0.5):
                    self.asked.set()
                    return
            except Exception:        # the cluster is going away: nothing to watch
                return

    def __call__(self) -> bool:
        return self.asked.is_set()

    def close(self) -> None:
        self.done.set()


def stop_requested() -> StopWatch | None:
    """For a task on a cluster's worker thread, where no signal handler can be set: a
    StopWatch on the driver's Ctrl-C (see `_run_on`); None elsewhere."""
    name = getattr(_STOP, "event", None)
    return None if name is None else StopWatch(_event(name))


def _event(name: str):
    """The driver's Dask Event, with this worker's client named: an Event used from
    another thread (the StopWatch's) finds none of its own."""
    from distributed import Event, get_client
    return Event(name, client=get_client())


def _stop_set(name: str) -> bool:
    try:
        return _event(name).is_set()
    except Exception:            # no cluster to ask: run it
        return False


def run_task(key: str, fn: Callable, settings, progress=None,
             stop_event: str | None = None) -> Outcome:
    """Run one task here (in this process or on a worker), its text captured: the
    function Dask ships to the workers. `progress` (a stream) takes the task's progress
    display instead of the capture, for a task run where someone watches it.
    `stop_event`: the Dask Event by which the driver asks the task to stop."""
    buffer = io.StringIO()
    started = time.monotonic()
    if stop_event is not None and _stop_set(stop_event):
        return Outcome(key, 130, None, "", 0.0, started=False)
    _STOP.event = stop_event
    try:
        status, summary = fn(settings, out=buffer, err=progress or buffer)
    except RnnError as exc:
        text = _render(exc)
        buffer.write(text + "\n")
        return Outcome(key, 2, None, buffer.getvalue(), time.monotonic() - started,
                       error=text)
    finally:
        _STOP.event = None
    return Outcome(key, status, summary, buffer.getvalue(), time.monotonic() - started)


@contextlib.contextmanager
def runner(placement: Placement):
    """A function that runs tasks and yields each one's Outcome as it finishes: one
    after another in this process without a cluster, else all submitted at once to the
    cluster, which is started or joined on entering (so that a cluster that cannot be
    had is known before anything is written) and let go on leaving."""
    if placement.in_process:
        yield _run_here
        return
    with open_client(placement) as client:
        yield lambda tasks: _run_on(client, tasks)


def _run_here(tasks: Iterable[Task]) -> Iterator[Outcome]:
    """One after another, each one's progress shown live on standard error (a bar on a
    terminal, as `rnndsl train` shows it), since nothing else moves meanwhile."""
    for task in tasks:
        outcome = run_task(task.key, task.fn, task.settings, progress=sys.stderr)
        yield outcome
        if outcome.status == 130:       # Ctrl-C stopped it: stop the rest too
            return


def _run_on(client, tasks: Iterable[Task]) -> Iterator[Outcome]:
    """All at once; Dask runs a task again on another worker when its worker dies (up
    to distributed.scheduler.allowed-failures times), after which it is a failed
    Outcome: a machine's fault, not the task's, and not a reason to stop the others.

    Ctrl-C (here: the workers of a LocalCluster ignore it) sets a Dask Event that the
    tasks under way read at the end of each step (`stop_requested`): they stop there,
    save, and come back as their own Outcomes (status 130); tasks not started are
    cancelled. A second Ctrl-C stops at once."""
    from distributed import Event, KilledWorker, as_completed
    stop = Event(f"rnndsl-stop-{uuid.uuid4().hex}", client=client)
    # pure=False: a task has side effects (its checkpoint), so each gets a fresh key;
    # a key hashed from the arguments would merge two sweeps' same point
    futures = {client.submit(run_task, t.key, t.fn, t.settings, None, stop.name,
                             pure=False): t.key for t in tasks}
    pending = as_completed(futures)
    stopping = False
    while True:
        try:
            future = next(pending)
        except StopIteration:
            return
        except KeyboardInterrupt:
            if stopping:
                raise
            stopping = True
            stop.set()
            running = _running_keys(client)   # None: cannot tell, cancel none
            for f in futures:            # not started: dropped; under way: they stop
                if running is not None and f.status == "pending" and f.key not in running:
                    f.cancel()
            continue
        if future.cancelled():
            continue
        try:
            outcome = future.result()
            if outcome.started:
                yield outcome
        except KilledWorker as exc:
            yield Outcome(futures[future], 2, None, "", 0.0,
                          error=f"error: the workers running it died ({exc})")


def _running_keys(client) -> set | None:
    """The keys of the tasks the scheduler has on a worker now (one call for all of
    them); None where it cannot tell."""
    try:
        return {key for keys in client.processing().values() for key in keys}
    except Exception:
        return None
