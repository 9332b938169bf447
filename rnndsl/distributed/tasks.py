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
import time
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

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 0


def _render(exc: RnnError) -> str:
    return exc.render() if hasattr(exc, "render") else f"error: {exc}"


def run_task(key: str, fn: Callable, settings, progress=None) -> Outcome:
    """Run one task here (in this process or on a worker), its text captured: the
    function Dask ships to the workers. `progress` (a stream) takes the task's progress
    display instead of the capture, for a task run where someone watches it."""
    buffer = io.StringIO()
    started = time.monotonic()
    try:
        status, summary = fn(settings, out=buffer, err=progress or buffer)
    except RnnError as exc:
        text = _render(exc)
        buffer.write(text + "\n")
        return Outcome(key, 2, None, buffer.getvalue(), time.monotonic() - started,
                       error=text)
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
    Outcome: a machine's fault, not the task's, and not a reason to stop the others."""
    from distributed import KilledWorker, as_completed
    # pure=False: a task has side effects (its checkpoint), so each gets a fresh key;
    # a key hashed from the arguments would merge two sweeps' same point
    futures = {client.submit(run_task, t.key, t.fn, t.settings, pure=False): t.key
               for t in tasks}
    for future in as_completed(futures):
        try:
            yield future.result()
        except KilledWorker as exc:
            yield Outcome(futures[future], 2, None, "", 0.0,
                          error=f"error: the workers running it died ({exc})")
