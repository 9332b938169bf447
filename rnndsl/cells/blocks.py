"""Row blocks: a compiled call's batch split into blocks of rows, one kernel call each,
run beside the caller's on kept helper threads; and the arrays a block reads and writes.

CompiledCell (compiled.py) splits a call into `_RowBlock`s and hands all but its own to
`_Helper`s; cells/directions.py runs a second direction on `_block_pool()`.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .base import lent_workspace
from .seen import Seen


@dataclass
class _RowBlock:
    """The rows r0 .. r1-1 of a compiled run, as one kernel call saw them: its tapes and
    its inputs (the caller's arrays for a single block, contiguous copies otherwise)."""
    r0: int
    r1: int
    arrays: dict[tuple, Any]        # ("hist", name) / ("tape", nid) -> (T, rows, size)
    inputs: dict[str, Any]


@dataclass
class _CompiledTape:
    """What a compiled forward keeps for its backward (a Run's tape): its row blocks,
    the params and fingerprints it read, and, lent a Workspace, whose buffers hold it."""
    blocks: tuple                   # _RowBlock: one, or one per thread (_row_blocks)
    consts: np.ndarray              # host scalars: kernels take them by value
    owner: object                   # the cell's token: ids of dead objects get reused
    from_params: frozenset = frozenset()   # states that started at a learned param
    on_device: bool = False         # (cuda) did the caller pass device arrays?
    params: dict = field(default_factory=dict)   # the param arrays the kernels read
    seen: Seen | None = None        # and the caller's arrays, fingerprinted (rnndsl.cells.seen)
    reused: Any = None              # the workspace's _Reused whose tapes these are, if any
    generation: int = 0             # and its generation when this run wrote them


_NOTHING = nullcontext()
_SHARE = threading.local()      # .threads: this thread's share of the cores (see below)


def thread_share() -> int | None:
    """How many threads a call on this thread may split its rows among, when it runs
    beside others (a two-way cell's directions, cells/directions.py); None: no limit."""
    return getattr(_SHARE, "threads", None)


@contextmanager
def sharing(threads: int):
    """Calls on this thread split their rows among at most `threads` threads: two
    directions at once, each splitting into one block a core, ran 4 threads on 2 cores
    and 5-8% slower than one block each (a bidirectional LSTM's forward+BPTT)."""
    before = getattr(_SHARE, "threads", None)
    _SHARE.threads = max(1, threads)
    try:
        yield
    finally:
        _SHARE.threads = before


def _blas_held() -> bool:
    """Whether the caller holds the kernels' BLAS at one thread around this call (a
    lent Workspace's `blas_held`)."""
    workspace = lent_workspace()
    return workspace is not None and workspace.blas_held


def _kernel_array(value: np.ndarray) -> np.ndarray:
    """The array as the kernels take it: C-contiguous and writeable. Numba compiles a
    kernel once for each kind of array it is called with, and a read-only one (a memory
    map, a broadcast) is another kind: another 2-9 s compile. A copy costs less."""
    if value.flags.c_contiguous and value.flags.writeable:
        return value
    return np.array(value, order="C")


def _rows_of(arrays: Mapping[str, np.ndarray], r0: int, r1: int, axis: int) -> dict:
    """Rows r0 .. r1-1 (batch axis `axis`) of each array, as C-contiguous copies."""
    index = (slice(None),) * axis + (slice(r0, r1),)
    return {k: np.ascontiguousarray(v[index]) for k, v in arrays.items()}


def _joined(parts: list[dict], axis: int) -> dict:
    """The blocks' arrays put back together along the batch axis."""
    return {k: np.concatenate([p[k] for p in parts], axis=axis) for k in parts[0]}


def _rows_to_copy(arrays: Mapping[str, np.ndarray], r0: int, r1: int, axis: int,
                  copies: list) -> dict:
    """As `_rows_of`, but the copies are left to the block's own thread: fresh
    C-contiguous arrays for the rows that are not contiguous already, their (array,
    rows) pairs appended to `copies` for `_with_copies` to fill."""
    index = (slice(None),) * axis + (slice(r0, r1),)
    mine = {}
    for k, v in arrays.items():
        rows = v[index]
        if rows.flags.c_contiguous:
            mine[k] = rows
        else:
            mine[k] = np.empty(rows.shape, rows.dtype)
            copies.append((mine[k], rows))
    return mine


def _with_copies(driver, args, before: list, after: list) -> None:
    """One row block's kernel call with the copies around it, run on the block's own
    thread: `before`'s (block's array, caller's rows) pairs copied in first, `after`'s
    (rows of a joined array, block's array) once the kernel ran. The blocks' copies then
    run side by side, as their kernels do (np.copyto lets go of the GIL), where the
    caller used to make them one after the other: at Elman's mid shape (T=50, B=32,
    256 wide) joining the outputs alone took 0.44 ms of a 5.7 ms forward (issue 19)."""
    _copy_pairs(before)
    driver(*args)
    _copy_pairs(after)


def _copy_pairs(pairs: list) -> None:
    """Each (destination, source) pair's source copied into its destination."""
    for destination, source in pairs:
        np.copyto(destination, source)


_POOL = None



class _Helper:
    """A thread that runs other row blocks' kernel calls beside the caller's, one at a
    time, handed over through two locks. A ThreadPoolExecutor's future, queue and
    condition cost 90-150 us more a call in a training step, where the kernels have just
    pushed the interpreter's data out of the caches (the wait after the last block
    ended: 92 us with a pool, 19 us so; issue 19)."""

    def __init__(self) -> None:
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._job: tuple | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._serve, name="rnndsl-rows", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._go.acquire()
            driver, args = self._job
            self._job = None
            try:
                driver(*args)
            except BaseException as error:      # handed to the caller, who raises it
                self._error = error
            self._done.release()

    def start(self, driver, args) -> None:
        self._job = (driver, args)
        self._go.release()

    def wait(self) -> BaseException | None:
        """Wait for the call to end; what it raised, if anything."""
        self._done.acquire()
        error, self._error = self._error, None
        return error


_IDLE_HELPERS: list[_Helper] = []     # made as calls need them, kept
_HELPERS_LOCK = threading.Lock()


def _take_helpers(n: int) -> list[_Helper]:
    with _HELPERS_LOCK:
        taken = [_IDLE_HELPERS.pop() for _ in range(min(n, len(_IDLE_HELPERS)))]
    return taken + [_Helper() for _ in range(n - len(taken))]


def _give_back(helpers: list[_Helper]) -> None:
    with _HELPERS_LOCK:
        _IDLE_HELPERS.extend(helpers)


def _forget_helpers() -> None:
    """In a forked child: the helpers' threads did not come along, nor did the two-way
    cells' pool's (whose count of idle threads did: it started none for a job, and a
    bidirectional call in the child waited for ever)."""
    global _HELPERS_LOCK, _POOL
    _HELPERS_LOCK = threading.Lock()
    _IDLE_HELPERS.clear()
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


def _block_pool():
    """The threads that run a two-way cell's second direction beside the caller's
    (cells/directions.py; row blocks have `_Helper`s): made once, kept."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        # threads start as calls need them
        _POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="rnndsl-directions")
    return _POOL
