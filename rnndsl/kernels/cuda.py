"""Kernels and launchers that every generated CUDA module imports (the cuda target).

The generated host drivers call these by the same names as the CPU helpers in
kernels.py (`copy2`, `fill2`, `transposed`, ...), so the emitter writes one program for
both targets; here each name launches a `@cuda.jit` kernel on device arrays instead of
running a loop. `gemm` is the tiled shared-memory GEMM that the hoisted input
projections, the per-step recurrent products (when not fused into the step kernel) and
the deferred weight gradients all run on. (The scalar functions, tanh, sigmoid and the
like, are written inline into the generated kernels by emit_cuda.py.)

Every kernel here is lazy (no signature): a kernel with an eager signature compiles at
import and fails on a machine without a GPU. `KERNEL_SIGNATURES` lists them with their
argument kinds, so that a test can compile each one to PTX without a GPU.

Launch shapes: `launch(*extents)` maps the last (innermost) extent to threadIdx.x, so
neighbouring threads touch neighbouring features (coalesced). On the simulator, which
runs each thread as a Python thread, blocks are sized to the work (a 3-wide loop gets 4
threads, not 32) and the GEMM tile is 8: a block's threads all start, and each
syncthreads() costs a round of thread switches.
"""

from __future__ import annotations

import math
import os
import weakref

import numba
import numpy as np
from numba import cuda

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
THREADS = 256                     # threads a block, at most, for elementwise kernels
TILE = 8 if SIMULATOR else 16     # GEMM tile edge: TILE x TILE threads a block


def _pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 1 << (max(1, n) - 1).bit_length()


def launch(*extents: int) -> tuple[tuple, tuple]:
    """(blocks, threads) covering `extents`, given outermost first; x is the last one.

    The kernels guard every index against its extent, so the grid may overshoot. An
    extent of 0 still launches one block (the guard makes it do nothing), since CUDA
    rejects an empty grid.
    """
    if not extents:
        return (1,), (1,)
    assert len(extents) <= 3, f"at most three parallel axes, got {extents}"
    sizes = [max(1, int(e)) for e in reversed(extents)]       # x, y, z
    threads = []
    budget = THREADS
    for i, n in enumerate(sizes):
        cap = 32 if i == 0 and len(sizes) > 1 else budget
        t = min(_pow2(n), cap, budget)
        threads.append(t)
        budget = max(1, budget // t)
    blocks = tuple((n + t - 1) // t for n, t in zip(sizes, threads))
    return blocks, tuple(threads)


def persistent_grid(kernel, work: int, *args) -> tuple[int, int]:
    """(blocks, threads) for a persistent kernel (emit_persistent.py): a cooperative
    grid, every block resident at once so that grid.sync() can wait for all of them, no
    larger than its widest phase needs. RNNDSL_CUDA_BLOCKS=N caps the blocks (a tuning
    knob: benchmarks/gpu_probe.py measures what the cap does). The simulator runs a
    cooperative grid as one block."""
    cap = _blocks_cap()
    if SIMULATOR:       # each simulated thread is a Python thread: keep blocks small
        return 1, min(64, _pow2(work))
    threads = min(THREADS, _pow2(work))
    compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
    blocks = min(compiled.max_cooperative_grid_blocks(threads), (work + threads - 1) // threads)
    return max(1, min(blocks, cap or blocks)), threads


def _blocks_cap() -> int | None:
    cap = os.environ.get("RNNDSL_CUDA_BLOCKS")
    if not cap:
        return None
    if not cap.isdigit() or int(cap) < 1:
        from ..core.errors import TargetError
        raise TargetError(f"RNNDSL_CUDA_BLOCKS must be a positive whole number of blocks, "
                          f"not {cap!r}; unset it for the default")
    return int(cap)


def held_threads(depth: int, cols: int, cap: int, rows: int = 0) -> int:
    """Threads a persistent kernel asks for so that a GEMM phase of the `hold_weights`
    pass (emit_persistent.py) can hold its depth x cols weight in shared memory: enough
    blocks of THREADS that each block's columns, ceil(cols / blocks), take at most `cap`
    elements, a column padded by one.

    Or 0 where holding would not pay. Every block reads all `rows` rows of the step's
    left operand (rows x depth) at every step, blocks x rows x depth elements, against
    the depth x cols elements of the weights that holding spares reading: it pays where
    blocks x rows <= cols, that is at small batches (an LSTM at H = 512: B <= 8 forward,
    B <= 2 backward). rows = 0 holds wherever the weights fit. Where not even one column
    fits, 0 too. held_grid_fits checks the same on the grid the GPU gives."""
    per = cap // (depth + 1)
    if per < 1:
        return 0
    blocks = (cols + per - 1) // per
    if rows * blocks > cols:
        return 0
    return blocks * THREADS


def held_grid_fits(kernel, work: int, checks, *args) -> bool:
    """Whether to launch a loop's kernel that holds its weights (emit_persistent's
    hold_weights pass) rather than the one that streams them: for each held GEMM's
    (depth, cols, cap, rows), holding must pay and fit at the grid it asks for
    (held_threads), and the cooperative grid the GPU gives the kernel must be wide
    enough that each block's columns, a column padded by one, fit in `cap` elements,
    and no wider than holding pays for (blocks x rows <= cols). The kernel has no
    other way to compute the products, so this is the whole of its guard."""
    # implied by the check below, but made first: asking for the grid compiles the kernel
    if not all(held_threads(*check) for check in checks):
        return False
    blocks, _ = persistent_grid(kernel, work, *args)
    return all((depth + 1) * -(-cols // blocks) <= cap and rows * blocks <= cols
               for depth, cols, cap, rows in checks)


LAST_GRID: dict = {}      # kernel -> the (blocks, threads) of its last launch, for probes


def launch_persistent(kernel, work: int, *args) -> None:
    """Launch a persistent kernel on the grid `persistent_grid` chooses."""
    grid = LAST_GRID[kernel] = persistent_grid(kernel, work, *args)
    kernel[grid](*args)


# ---------------------------------------------------------------------------- workspace
# RNNDSL_CUDA_POOL=1 keeps device buffers across calls instead of allocating each call's
# work arrays and tapes afresh. Measured once on an H100 (gpu_probe.py, session 4; LSTM
# forward, T=101, B=64, H=512): 50.5 ms a call with it, 69.9 without (before the slicing
# fix below; after it, cProfile put 12 ms of a 20 ms call in freeing). The cuda tests
# have not yet run with it on a GPU, so it is off by default. Never used for arrays
# handed to the user. A buffer goes back to the pool when the array made on it is
# garbage; its reshapes share its pointer, and its slices (DeviceArray) hold the array,
# so neither lets the buffer go while it lives.
POOL = not SIMULATOR and os.environ.get("RNNDSL_CUDA_POOL") == "1"
_FREE: dict[int, list] = {}


def _simulator_makes_each_shared_array_once() -> None:
    """Mend a race in numba-cuda's simulator (0.30.4, the newest): a block's threads
    share the array `cuda.shared.array` returns, made by the first thread to reach the
    line, but FakeCUDAShared.array looks the line up, makes the array and stores it
    with no lock. Two threads that reach the line together each make an array of their
    own, and each then reads what only it wrote: a GEMM's shared tile half stale. Seen
    once in CI (specs/two_streams.rnn's W_in gradient 1.6e19 off) and in 10 runs of 20
    with the GIL switched every 0.05 ms (tests/cells/test_cuda_backend.py,
    test_simulated_shared_arrays_are_one_a_block). Here the lookup and the making hold
    a lock; the allocation is still told apart by the calling line, as the simulator
    does, found with sys._getframe instead of a whole traceback.extract_stack (which
    read every frame's source line, on every thread)."""
    import sys
    import threading
    from numba.core import types
    from numba.np import numpy_support
    from numba.cuda.simulator import kernelapi
    shared = kernelapi.FakeCUDAShared
    if getattr(shared.array, "rnndsl_locked", False):
        return
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None:
            raise RuntimeError("Array alignment is not supported in cudasim")
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        if shape == 0:                # dynamic shared memory: one buffer for all
            count = self._dynshared_size // dtype.itemsize
            return np.frombuffer(self._dynshared.data, dtype=dtype, count=count)
        caller = sys._getframe(1)
        line = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            made = self._allocations.get(line)
            if made is None:
                made = self._allocations[line] = np.empty(shape, dtype)
        return made

    array.rnndsl_locked = True
    shared.array = array


# The simulator runs a block's threads as Python threads, and the launching thread polls
# them in a loop (numba-cuda's BlockManager.run) that never sleeps: each time it holds
# the GIL it keeps it for a whole switch interval (5 ms), while the block's threads have
# a few lines each to run before their next syncthreads(). A switch interval of 0.5 ms
# during a launch hands the GIL round ten times as often: docs/cuda.md's example took
# 15.9 s on the simulator here, 6.3 s so (benchmarks/RESULTS.md; the results are the
# same: only when threads take turns changes). Set by the first launch in flight and
# put back by the last.
SIMULATOR_SWITCH_INTERVAL = 0.0005


def _simulated_launches_take_turns_faster() -> None:
    import sys
    import threading
    from numba.cuda.simulator import kernel as simulator
    launch = simulator.FakeCUDAKernel.__call__
    if getattr(launch, "rnndsl_switching", False):
        return
    lock = threading.Lock()
    in_flight = [0, None]          # launches running, the interval before the first

    def launch_switching(self, *args):
        if getattr(self, "_device", False):     # a device function: called in a launch
            return launch(self, *args)
        with lock:
            if in_flight[0] == 0:
                in_flight[1] = sys.getswitchinterval()
                sys.setswitchinterval(min(in_flight[1], SIMULATOR_SWITCH_INTERVAL))
            in_flight[0] += 1
        try:
            return launch(self, *args)
        finally:
            with lock:
                in_flight[0] -= 1
                if in_flight[0] == 0:
                    sys.setswitchinterval(in_flight[1])

    launch_switching.rnndsl_switching = True
    simulator.FakeCUDAKernel.__call__ = launch_switching


if SIMULATOR:
    DeviceArray = None
    _simulator_makes_each_shared_array_once()
    _simulated_launches_take_turns_faster()
else:
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    class DeviceArray(DeviceNDArray):
        """A numba-cuda device array whose basic slices cost O(ndim) on the host.

        numba-cuda's own `__getitem__` walks every contiguous run of the view in Python
        to find the memory it spans: `mm0[:, :, 0:H]` of a (T, B, 4H) array is T*B
        steps of Python, and the generated drivers take a few such views of their T-long
        arrays a call. Measured on an H100 (benchmarks/gpu_probe.py, "launch"): an LSTM
        forward at T=101, B=64, H=512 spent about 90 ms of its 100 ms there, around a
        10 ms kernel. Here a view of slices with unit steps is made from its shape,
        strides and the span they imply; anything else goes to numba-cuda's way."""

        def __getitem__(self, item):
            view = _basic_view(self, item, DeviceArray)
            return view if view is not None else super().__getitem__(item)


def _basic_view(array, item, make):
    """The view `array[item]` for a tuple of unit-step slices, made by `make(shape,
    strides, dtype, stream=, gpu_data=)` on the span of memory it covers; None for
    another kind of index (an integer, a step, an empty or reversed axis)."""
    items = item if isinstance(item, tuple) else (item,)
    if len(items) > len(array.shape) or not all(
            isinstance(s, slice) and s.step in (None, 1) for s in items):
        return None
    items = items + (slice(None),) * (len(array.shape) - len(items))
    shape, offset, span = [], 0, array.dtype.itemsize
    for s, n, stride in zip(items, array.shape, array.strides):
        start, stop, _ = s.indices(n)
        size = stop - start
        if size <= 0 or stride < 0:
            return None                    # empty or reversed: numba-cuda's way
        shape.append(size)
        offset += start * stride
        span += (size - 1) * stride
    data = array.gpu_data.view(offset, offset + span)
    view = make(tuple(shape), array.strides, array.dtype, stream=array.stream, gpu_data=data)
    # numba-cuda's memory views hold the allocation's owner, not the pointer a pooled
    # workspace is tracked by: holding the array keeps a pooled buffer out of the pool
    # while any view of it lives
    view.viewed = array
    return view


def fast_views(array):
    """`array` as a DeviceArray (the same memory), so that its slices are cheap."""
    if SIMULATOR or isinstance(array, DeviceArray) or not hasattr(array, "gpu_data"):
        return array
    return DeviceArray(array.shape, array.strides, array.dtype, stream=array.stream,
                       gpu_data=array.gpu_data)


def device_array(shape, dtype):
    """An uninitialised device array (a DeviceArray on a GPU)."""
    return fast_views(cuda.device_array(shape, dtype))


def workspace(shape, dtype):
    """An uninitialised device array for a driver's own use or a run's tape."""
    shape = (int(shape),) if isinstance(shape, int) else tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize * math.prod(shape)
    if not POOL or nbytes == 0:
        return device_array(shape, dtype)
    free = _FREE.setdefault(nbytes, [])
    buf = free.pop() if free else cuda.device_array(nbytes, np.uint8)
    pointer = buf.gpu_data.view(0, nbytes)
    strides = tuple(dtype.itemsize * math.prod(shape[k + 1:]) for k in range(len(shape)))
    array = DeviceArray(shape, strides, dtype, gpu_data=pointer)
    weakref.finalize(pointer, free.append, buf)     # back to the pool when unused
    return array


def workspace_like(array):
    return workspace(array.shape, array.dtype)


# ---------------------------------------------------------------------------- copies, fills
@cuda.jit
def _copy1(dst, src):
    j = cuda.grid(1)
    if j < dst.shape[0]:
        dst[j] = src[j]


@cuda.jit
def _copy2(dst, src):
    j, r = cuda.grid(2)
    if r < dst.shape[0] and j < dst.shape[1]:
        dst[r, j] = src[r, j]


@cuda.jit
def _copy_rows(dst, src):
    # every row of dst gets the vector src
    j, r = cuda.grid(2)
    if r < dst.shape[0] and j < dst.shape[1]:
        dst[r, j] = src[j]


@cuda.jit
def _copy_t(dst, src):
    # dst = src transposed; x runs along dst's rows' columns
    j, i = cuda.grid(2)
    if i < dst.shape[0] and j < dst.shape[1]:
        dst[i, j] = src[j, i]


@cuda.jit
def _fill1(dst, value):
    j = cuda.grid(1)
    if j < dst.shape[0]:
        dst[j] = value


@cuda.jit
def _fill2(dst, value):
    j, r = cuda.grid(2)
    if r < dst.shape[0] and j < dst.shape[1]:
        dst[r, j] = value


@cuda.jit
def _add_into1(dst, src):
    j = cuda.grid(1)
    if j < dst.shape[0]:
        dst[j] += src[j]


@cuda.jit
def _add_into2(dst, src):
    j, r = cuda.grid(2)
    if r < dst.shape[0] and j < dst.shape[1]:
        dst[r, j] += src[r, j]


def copy1(dst, src):
    _copy1[launch(dst.shape[0])](dst, src)


def copy2(dst, src):
    _copy2[launch(*dst.shape)](dst, src)


def copy_rows(dst, src):
    _copy_rows[launch(*dst.shape)](dst, src)


def copy_t(dst, src):
    _copy_t[launch(*dst.shape)](dst, src)


def transposed(src):
    out = workspace((src.shape[1], src.shape[0]), src.dtype)
    copy_t(out, src)
    return out


def fill1(dst, value):
    _fill1[launch(dst.shape[0])](dst, value)


def fill2(dst, value):
    _fill2[launch(*dst.shape)](dst, value)


def add_into1(dst, src):
    _add_into1[launch(dst.shape[0])](dst, src)


def add_into2(dst, src):
    _add_into2[launch(*dst.shape)](dst, src)


def clone(src):
    """A fresh device array holding a copy of src (1-D or 2-D)."""
    out = workspace(src.shape, src.dtype)
    (copy1 if len(src.shape) == 1 else copy2)(out, src)
    return out


# ---------------------------------------------------------------------------- fingerprints
_FP_BITS = 52
_FP_MASK = (1 << _FP_BITS) - 1
_FP_WEIGHT_MASK = (1 << (_FP_BITS - 32)) - 1     # word (< 2**32) * weight < 2**52
_FP_BLOCKS = 8                  # partial sums a fingerprint adds atomically: 8 * THREADS


@cuda.jit
def _fingerprint(words, out, k):
    # out[k] += this thread's partial sum of words[i] * weight(i) mod 2**52, over a
    # grid-stride loop; weight(i) = (2i + 1) mod 2**20, odd. The partials stay under
    # 2**52 and there are at most 8 * 256 of them, so out[k] never wraps: the same
    # total whatever order the atomic adds land in (and the simulator, which does
    # uint64 arithmetic on NumPy scalars, never warns of an overflow)
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    acc = numba.uint64(0)
    while i < words.shape[0]:
        weight = numba.uint64((2 * i + 1) & _FP_WEIGHT_MASK)
        acc = (acc + numba.uint64(words[i]) * weight) & numba.uint64(_FP_MASK)
        i += step
    cuda.atomic.add(out, k, acc)


def fingerprints(arrays) -> np.ndarray:
    """rnndsl.cells.seen's fingerprints of C-contiguous device arrays, taken on the device and
    copied back together (one synchronisation). Not the host's function (device memory
    would have to cross to the host for that): a weighted sum of single 32-bit words mod
    2**52 in partials, compared only with itself, at a run's forward and backward."""
    out = cuda.to_device(np.zeros(len(arrays), np.uint64))
    for k, array in enumerate(arrays):
        words = array.reshape(int(np.prod(array.shape))).view(np.uint32)
        n = words.shape[0]
        if SIMULATOR:
            blocks, threads = launch(min(n, 64))
        else:
            threads = min(THREADS, _pow2(n))
            blocks = ((min(n, _FP_BLOCKS * threads) + threads - 1) // threads,)
            threads = (threads,)
        _fingerprint[blocks, threads](words, out, k)
    return out.copy_to_host()


@cuda.jit
def _gather_last(dst, src, last):
    # dst[b, j] = src[last[b], b, j]: a `final` output at each sequence's last step
    j, b = cuda.grid(2)
    if b < dst.shape[0] and j < dst.shape[1]:
        dst[b, j] = src[last[b], b, j]


@cuda.jit
def _scatter_last(dst, src, last):
    # dst[last[b], b, j] = src[b, j] (dst filled with zeros first): its cotangent
    j, b = cuda.grid(2)
    if b < src.shape[0] and j < src.shape[1]:
        dst[last[b], b, j] = src[b, j]


def gather_last(src, last):
    """(T, B, n) device array and B last-step indices -> (B, n), on the device."""
    out = device_array(src.shape[1:], src.dtype)
    _gather_last[launch(*out.shape)](out, src, last)
    return out


def scatter_last(src, last, T: int):
    """(B, n) device array -> (T, B, n), src at each sequence's last step, 0 elsewhere."""
    out = device_array((T,) + tuple(src.shape), src.dtype)
    fill1(out.reshape((out.size,)), out.dtype.type(0))
    _scatter_last[launch(*src.shape)](out, src, last)
    return out


# ---------------------------------------------------------------------------- products
def _make_gemm(nb_type, tile: int):
    """C = A @ B for 2-D arrays of any strides, one TILE x TILE block of C a block.

    Each step of the k loop stages a TILE x TILE block of A and of B in shared memory
    (zero-padded at the edges), so each element of A and B is read from global memory
    once a block instead of once a thread.
    """

    def gemm_kernel(a, b, c):
        sa = cuda.shared.array((tile, tile), nb_type)
        sb = cuda.shared.array((tile, tile), nb_type)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * tile + ty
        col = cuda.blockIdx.x * tile + tx
        m = c.shape[0]
        n = c.shape[1]
        depth = a.shape[1]
        acc = nb_type(0)
        for k0 in range(0, depth, tile):
            if row < m and k0 + tx < depth:
                sa[ty, tx] = a[row, k0 + tx]
            else:
                sa[ty, tx] = nb_type(0)
            if k0 + ty < depth and col < n:
                sb[ty, tx] = b[k0 + ty, col]
            else:
                sb[ty, tx] = nb_type(0)
            cuda.syncthreads()
            for kk in range(tile):
                acc += sa[ty, kk] * sb[kk, tx]
            cuda.syncthreads()
        if row < m and col < n:
            c[row, col] = acc

    return gemm_kernel


_GEMM_F32 = cuda.jit(_make_gemm(numba.float32, TILE))
_GEMM_F64 = cuda.jit(_make_gemm(numba.float64, TILE))


@cuda.jit
def _gemv(a, x, y):
    # y = A x: unbatched (parameter-only) products, once per call
    i = cuda.grid(1)
    if i < y.shape[0]:
        acc = a[i, 0] * x[0]
        for k in range(1, x.shape[0]):
            acc += a[i, k] * x[k]
        y[i] = acc


@cuda.jit
def _vecmat(x, b, y):
    # y = x B
    j = cuda.grid(1)
    if j < y.shape[0]:
        acc = x[0] * b[0, j]
        for k in range(1, x.shape[0]):
            acc += x[k] * b[k, j]
        y[j] = acc


def gemm(a, b, out):
    """out = a @ b on the device (the CPU target's np.dot(a, b, out)); any strides."""
    if len(a.shape) == 2 and len(b.shape) == 2:
        assert a.shape[1] == b.shape[0] and out.shape == (a.shape[0], b.shape[1]), \
            (a.shape, b.shape, out.shape)
        kernel = _GEMM_F32 if out.dtype.itemsize == 4 else _GEMM_F64
        blocks = ((out.shape[1] + TILE - 1) // TILE, (out.shape[0] + TILE - 1) // TILE)
        kernel[blocks, (TILE, TILE)](a, b, out)
    elif len(a.shape) == 2:
        assert a.shape[1] == b.shape[0] and out.shape == (a.shape[0],)
        _gemv[launch(out.shape[0])](a, b, out)
    else:
        assert len(b.shape) == 2 and a.shape[0] == b.shape[0] and out.shape == (b.shape[1],)
        _vecmat[launch(out.shape[0])](a, b, out)


# Each kernel with its argument kinds: "aN" an N-D array of the cell's float type, "f" a
# scalar of it, "i" an int64, "ia1" a 1-D int64 array, "u32a1" / "u64a1" 1-D uint32 /
# uint64 arrays (tests/cells/test_cuda_backend.py compiles them all to PTX).
KERNEL_SIGNATURES = {
    "copy1": (_copy1, ("a1", "a1")), "copy2": (_copy2, ("a2", "a2")),
    "copy_rows": (_copy_rows, ("a2", "a1")), "copy_t": (_copy_t, ("a2", "a2")),
    "fill1": (_fill1, ("a1", "f")), "fill2": (_fill2, ("a2", "f")),
    "add_into1": (_add_into1, ("a1", "a1")), "add_into2": (_add_into2, ("a2", "a2")),
    "gemv": (_gemv, ("a2", "a1", "a1")), "vecmat": (_vecmat, ("a1", "a2", "a1")),
    "gather_last": (_gather_last, ("a2", "a3", "ia1")),
    "scatter_last": (_scatter_last, ("a3", "a2", "ia1")),
    "fingerprint": (_fingerprint, ("u32a1", "u64a1", "i")),
}
GEMM_KERNELS = {"float32": _GEMM_F32, "float64": _GEMM_F64}


def kernel_ptx(kernel, kinds, float_type, cc=(9, 0)) -> str:
    """PTX for `kernel`, its arguments of `kinds` (as in KERNEL_SIGNATURES and a built
    module's <Cell>_KERNELS) in `float_type` (numba's float32 or float64), for compute
    capability `cc`: what tests/cells/test_cuda_backend.py and benchmarks/cuda_compile_time.py
    compile, with or without a GPU (not under the simulator). cuda.cg.this_grid() (the
    persistent kernels) is a device function that numba-cuda compiles for the current
    device; where there is none, its lookup is pointed at a stand-in for `cc`."""
    from types import SimpleNamespace

    import numba.cuda.dispatcher
    from numba import types
    if not cuda.is_available():
        numba.cuda.dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    unsigned = {"u32": types.uint32, "u64": types.uint64}
    sig = tuple(types.int64 if k == "i" else float_type if k == "f" else
                types.Array(types.int64, int(k[2:]), "A") if k.startswith("ia") else
                types.Array(unsigned[k[:3]], int(k[4:]), "A") if k[:3] in unsigned else
                types.Array(float_type, int(k[1:]), "A") for k in kinds)
    return cuda.compile_ptx(kernel.py_func, sig, cc=cc)[0]
