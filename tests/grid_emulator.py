"""A cooperative grid of several blocks, run on CPU threads, for the persistent kernels.

Numba's CUDA simulator runs a cooperative grid as one block: its grid.sync() is the
block's syncthreads(), and it launches the blocks of any grid one after another. So the
persistent kernels' logic across blocks (a block's share of a grid-stride loop, of a
GEMM's tiles, of the held weights' columns, the barriers between phases) ran only on a
GPU. This harness runs a kernel's Python function with every thread of every block as a
Python thread, all at once:
  - cuda.syncthreads() is a barrier of the block's threads, grid.sync() one of all the
    grid's threads;
  - each block has its own shared arrays, filled with NaN (a GPU's shared memory starts
    as whatever was there, so a read before a write must not pass unnoticed);
  - cuda.grid(1), cuda.gridsize(1), threadIdx, blockIdx, blockDim and gridDim, x only.
Only the part of numba.cuda that emit_persistent's kernels use is there; anything else
fails on an AttributeError.

    run_grid(kernel, blocks, threads, *args)
"""

from __future__ import annotations

import sys
import threading
import types
from types import SimpleNamespace

import numpy as np

BARRIER_TIMEOUT = 120.0     # seconds a barrier waits before it calls the run hung


class _FakeCuda:
    """What `cuda` is, inside the kernel, for the thread that runs it."""

    def __init__(self, blocks: int, threads: int):
        self.gridDim = SimpleNamespace(x=blocks)
        self.blockDim = SimpleNamespace(x=threads)
        self._here = threading.local()
        self._block_barriers = [threading.Barrier(threads, timeout=BARRIER_TIMEOUT)
                                for _ in range(blocks)]
        self._grid_barrier = threading.Barrier(blocks * threads, timeout=BARRIER_TIMEOUT)
        self._shared: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()
        self.shared = SimpleNamespace(array=self._shared_array)
        self.cg = SimpleNamespace(this_grid=lambda: SimpleNamespace(sync=self._grid_sync))

    @property
    def threadIdx(self):
        return SimpleNamespace(x=self._here.thread)

    @property
    def blockIdx(self):
        return SimpleNamespace(x=self._here.block)

    def grid(self, ndim: int) -> int:
        assert ndim == 1
        return self._here.block * self.blockDim.x + self._here.thread

    def gridsize(self, ndim: int) -> int:
        assert ndim == 1
        return self.gridDim.x * self.blockDim.x

    def syncthreads(self) -> None:
        self._block_barriers[self._here.block].wait()

    def _grid_sync(self) -> None:
        self._grid_barrier.wait()

    def _shared_array(self, shape, dtype):
        # one array a block and a declaration (emit_persistent declares each name once,
        # at the kernel's top), as on a GPU
        key = (self._here.block, sys._getframe(1).f_lineno)
        with self._lock:
            if key not in self._shared:
                self._shared[key] = np.full(shape, np.nan, dtype=dtype)
            return self._shared[key]

    def abort(self) -> None:
        for barrier in (*self._block_barriers, self._grid_barrier):
            barrier.abort()


def _host(array):
    """The NumPy array behind a simulator device array (the kernel writes into it)."""
    return getattr(array, "_ary", array)


def run_grid(kernel, blocks: int, threads: int, *args) -> None:
    """Run `kernel` (a @cuda.jit function under the simulator, or its Python function)
    on a cooperative grid of `blocks` x `threads`; raises the first thread's error."""
    fn = getattr(kernel, "py_func", kernel)
    fake = _FakeCuda(blocks, threads)
    scope = dict(fn.__globals__, cuda=fake)
    body = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__,
                              fn.__closure__)
    args = tuple(_host(a) for a in args)
    errors: list[BaseException] = []

    def thread(b: int, t: int) -> None:
        fake._here.block, fake._here.thread = b, t
        try:
            body(*args)
        except threading.BrokenBarrierError as exc:
            errors.append(exc)
        except BaseException as exc:    # noqa: BLE001 - handed to the caller below
            errors.insert(0, exc)
            fake.abort()

    workers = [threading.Thread(target=thread, args=(b, t), daemon=True)
               for b in range(blocks) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
