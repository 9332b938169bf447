"""Loops and scalar functions that every generated CPU module imports.

Kept in one real module so that Numba compiles each once per array type and caches it on
disk for all cells (`cache=True`), instead of once per generated module. Copies, fills
and transposes are explicit loops: Numba's slice assignment costs about half a second of
compile time at every place it is written.
"""

import math
import os
import time
from contextlib import contextmanager

import numpy as np
from numba import literal_unroll, njit, types
from numba.core import config, sigutils
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import CPUDispatcher
from numba.extending import overload


# ---------------------------------------------------------------------------- Numba's cache
def serialise_numba_cache_saves() -> None:
    """Make Numba's saves to its on-disk cache one at a time for each function, across
    processes (process-wide, once: below, before anything here or in a generated module
    compiles).

    Numba keeps the compiled versions of a function in an index (signature -> data file
    name) and numbered data files beside it. A save reads the index, takes the first
    number not in it, writes the index, then the data (numba.core.caching,
    IndexDataCacheFile.save). Two processes saving two different signatures of one
    function at once (rnndsl's shared helpers, `copy2` and the like, compiled for the
    array kinds each needs: two processes building different specs or dtypes, or a
    process and its compile_ahead child) can both read the index before either writes
    it and take the same number. One entry is then lost, and the data file can end up
    holding the other signature's machine code under the surviving entry: nothing checks
    the data against its key, so the next process to load it runs code compiled for
    other types. Here each save holds an exclusive lock on a file beside the index
    (`<index>.lock`), so it reads the index the last save wrote. Loads take no lock:
    both files are replaced by renames, and a save never reuses a number in the index.
    Where there is no fcntl (Windows) this does nothing."""
    try:
        import fcntl
    except ImportError:
        return
    from numba.core import caching
    save = caching.IndexDataCacheFile.save
    if getattr(save, "rnndsl_serialised", False):
        return

    def serialised_save(self, key, data):
        try:
            fd = os.open(self._index_path + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:          # a folder we cannot write to: Numba's save says so
            return save(self, key, data)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return save(self, key, data)
        finally:
            os.close(fd)         # and with it the lock

    serialised_save.rnndsl_serialised = True
    caching.IndexDataCacheFile.save = serialised_save


serialise_numba_cache_saves()


def tolerate_damaged_numba_cache() -> None:
    """Read a damaged file of Numba's on-disk cache as a miss (process-wide, once).

    Numba unpickles a function's index (`.nbi`) and data files (`.nbc`) unguarded: one
    cut short by a full disk or a crash, or garbled, raised UnpicklingError at every
    later call of the kernel (`rnndsl gradcheck`: internal error, exit 3) until the
    user found and deleted it. Here an index that does not unpickle reads as an empty
    one, and a data file as a missing one: the kernel is compiled again, and the save
    that follows writes both afresh (as for a stale index)."""
    from numba.core import caching
    cls = caching.IndexDataCacheFile
    if getattr(cls._load_index, "rnndsl_tolerant", False):
        return
    load_index, load_data = cls._load_index, cls._load_data

    # Unpickling garbled bytes can raise nearly anything (UnpicklingError, EOFError,
    # OverflowError, RecursionError, MemoryError, ...): any Exception is a damaged file.
    def tolerant_load_index(self):
        try:
            return load_index(self)
        except FileNotFoundError:
            raise
        except Exception:        # noqa: BLE001
            return {}

    def tolerant_load_data(self, name):
        try:
            return load_data(self, name)
        except OSError:
            raise
        except Exception:        # noqa: BLE001
            raise OSError(f"damaged Numba cache file {name}") from None   # load(): a miss

    tolerant_load_index.rnndsl_tolerant = True
    cls._load_index, cls._load_data = tolerant_load_index, tolerant_load_data


tolerate_damaged_numba_cache()


# ---------------------------------------------------------------------------- the kernels' jit
# A fused elementwise loop reads and writes many arrays (a layer-normalised LSTM's first
# backward loop, 43). LLVM cannot prove Numba's arrays apart, so it vectorises such a
# loop only behind run-time overlap checks, and gives up past 128 of them: that loop ran
# one element at a time (103 us a step at B = 32, H = 256, against 52 us vectorised:
# benchmarks/overlap_checks.py). rnndsl's
# kernels are compiled with that limit raised; the checks stay, so an overlap (there is
# none in a kernel: every array it writes is its own) would still take the scalar path.
_ALIAS_CHECKS = 4096
_LLVM_DEFAULT_ALIAS_CHECKS = 128


@contextmanager
def _many_alias_checks():
    import llvmlite.binding as llvm
    llvm.set_option("", f"-vectorize-memory-check-threshold={_ALIAS_CHECKS}")
    try:
        yield
    finally:   # back to LLVM's default for everything else the process compiles
        llvm.set_option("", f"-vectorize-memory-check-threshold={_LLVM_DEFAULT_ALIAS_CHECKS}")


# How long a process waits for another compiling the same kernel before it compiles it
# itself (a compile takes seconds; a process that died lets go of its lock at once).
COMPILE_WAIT_SECONDS = 600.0


@contextmanager
def _one_compiler(dispatcher):
    """Hold an exclusive lock on `<the kernel's Numba cache index>.compile` while it
    compiles: of several processes that meet a kernel neither compiled nor cached at
    once (the workers of a data-parallel run or a sweep starting on a cold cache, a
    test run's workers), one compiles it and writes Numba's cache, and the others wait
    and then load it from there (Dispatcher.compile looks in the cache first) instead of
    each spending the same seconds of a core. Nothing is held where there is no fcntl
    (Windows), no on-disk cache, or a folder we cannot write to; after
    COMPILE_WAIT_SECONDS the waiter compiles anyway."""
    try:
        import fcntl
        path = dispatcher._cache._cache_file._index_path + ".compile"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except (ImportError, AttributeError, OSError):
        yield
        return
    try:
        deadline = time.monotonic() + COMPILE_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)             # and with it the lock


@contextmanager
def _ctrl_c_after_compiling():
    """Ctrl-C while a kernel compiles, kept for its end: a KeyboardInterrupt raised inside
    LLVM's callbacks into Python (ctypes ignores it there) left Numba's library without
    its compiled object, and the next step failed with 'no compiled object yet', an
    internal error (status 3) instead of an interruption. The first Ctrl-C says so and
    is raised once the compile is done (seconds); a second one is raised at once. Only
    in the main thread (the one Python delivers signals to) and over Python's own
    handler or a callable one, which are then run as they would have been."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    if not callable(before):         # ignored, or the default action: nothing to defer
        yield
        return
    pressed = []

    def later(signum, frame):
        if pressed:                  # a second Ctrl-C: the user insists
            before(signum, frame)
            return
        pressed.append((signum, frame))
        os.write(2, b"\nrnndsl: Ctrl-C: stopping when the kernel being compiled is done "
                    b"(press it again to stop now)\n")
    signal.signal(signal.SIGINT, later)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
    if pressed:
        before(*pressed[0])


class _KernelDispatcher(CPUDispatcher):
    """A Numba dispatcher whose compilations (a generated kernel, and what it inlines)
    may vectorise loops behind more run-time overlap checks (see above), one process at
    a time (`_one_compiler`). The LLVM setting is process-wide, so it is made under
    Numba's compiler lock: a compilation on another thread never sees it, and never
    resets it under ours. The file lock is taken first, so that a thread waiting on
    another process does not hold this one's compiler lock."""

    def compile(self, sig):
        args, _ = sigutils.normalize_signature(sig)
        if args in self.overloads:             # compiled here already: no lock to take
            return self.overloads[args].entry_point
        with _ctrl_c_after_compiling(), _one_compiler(self), global_compiler_lock, \
                _many_alias_checks():
            return super().compile(sig)


def jit_with(dispatcher: type, func, cache: bool, options: dict):
    """What `njit(**options)(func)` makes, but a `dispatcher` (a CPUDispatcher subclass
    that changes how it compiles). Under NUMBA_DISABLE_JIT=1, func itself, as njit."""
    if config.DISABLE_JIT:
        return func
    disp = dispatcher(py_func=func, locals={}, targetoptions=dict(nopython=True, **options))
    if cache:
        disp.enable_caching()
    return disp


def kernel_jit(cache: bool = True, **options):
    """`njit` for generated kernels: the same options, compiled by `_KernelDispatcher`."""
    return lambda func: jit_with(_KernelDispatcher, func, cache, options)


class _HelperDispatcher(CPUDispatcher):
    """A Numba dispatcher for the helpers that kernels call (copies, packing, GEMM
    drivers): a constant integer a kernel passes (a row offset 0, a param's index 6 in
    `stack_rows_seen(ws, 0, W, seen, 6)`) is typed by Numba as Literal[int](6), and a
    plain dispatcher compiles the helper once for each such value, each linked into the
    kernel: 51 versions of `stack_rows_seen` in one test run, 0.35-1.2 s each, 4 s of a
    two-layer LSTM's backward. Here a call from compiled code is typed by the argument
    types alone (int64), so there is one version for all values. No helper here needs
    a literal (nothing indexes a tuple by an argument)."""

    def get_call_template(self, args, kws):
        return super().get_call_template(
            tuple(types.unliteral(a) for a in args),
            {name: types.unliteral(t) for name, t in kws.items()})


def helper_jit(cache: bool = True, **options):
    """`njit` for the helpers generated kernels call: the same options, one version a
    type signature whatever constants the callers pass (`_HelperDispatcher`)."""
    return lambda func: jit_with(_HelperDispatcher, func, cache, options)


@helper_jit(cache=True, error_model="numpy")
def copy1(dst, src):
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@helper_jit(cache=True, error_model="numpy")
def copy2(dst, src):
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] = src[r, j]


# A stack of weights [W_1; W_2; ...] is built row block by row block into a fresh C-order
# array. copy2 into the block's view (a row slice, which Numba types as of any layout)
# does not vectorise: 9.2 us for four (128, 65) float32 blocks here, against 2.4 us for
# the same bytes as one flat loop (a (128, 128) block: 4.5 against 1.2 us). The loops
# below index slices from 0, never `base + j`: an index Numba cannot prove is not
# negative gets a wraparound branch, and the loop stops vectorising (4x slower again).
@helper_jit(cache=True, error_model="numpy", nogil=True)
def stack_rows(dst, r0, src):
    """dst[r0:r0 + len(src), :] = src, for C-order dst and src of one width: a flat copy."""
    n = src.size
    at = r0 * dst.shape[1]
    out = dst.reshape(dst.size)[at:at + n]
    values = src.reshape(n)
    for j in range(n):
        out[j] = values[j]


STACK_CHUNK = 2048      # elements copied, then fingerprinted from L1, at a time


@helper_jit(cache=True, error_model="numpy", nogil=True)
def _fingerprint_words(w, m0):
    """The share in `fingerprint`'s sum of words w, which are the words m0, m0+1, ...
    (m0 even) of the array fingerprinted."""
    total = np.uint64(0)
    weight = np.uint64(m0 + 1)
    two = np.uint64(2)
    shift = np.uint64(32)
    n = w.shape[0]
    for i in range(n // 2):
        total += (np.uint64(w[2 * i]) | (np.uint64(w[2 * i + 1]) << shift)) * weight
        weight += two
    if n % 2:
        total += np.uint64(w[n - 1]) * weight
    return total


@helper_jit(cache=True, error_model="numpy", nogil=True)
def stack_rows_seen(dst, r0, src, seen, k):
    """stack_rows, and where `seen` is not empty seen[k] = fingerprint(src), taken in
    the same pass: each chunk is fingerprinted just after it is copied, from L1, so
    src is read from memory once (rnndsl.cells.seen: the backward's fingerprints)."""
    if seen.shape[0] == 0:
        stack_rows(dst, r0, src)
        return
    n = src.size
    at = r0 * dst.shape[1]
    out = dst.reshape(dst.size)[at:at + n]
    values = src.reshape(n)
    w = values.view(np.uint32)
    per = w.shape[0] // n if n else 1       # 32-bit words an element
    total = np.uint64(0)
    for c0 in range(0, n, STACK_CHUNK):     # STACK_CHUNK even: each chunk's m0 is even
        c1 = min(c0 + STACK_CHUNK, n)
        o = out[c0:c1]
        v = values[c0:c1]
        for j in range(c1 - c0):
            o[j] = v[j]
        total += _fingerprint_words(w[c0 * per:c1 * per], c0 * per)
    seen[k] = total


@helper_jit(cache=True, error_model="numpy")
def copy_rows(dst, src):
    # every row of dst gets the vector src
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] = src[j]


@helper_jit(cache=True, error_model="numpy")
def copy_t(dst, src):
    # dst = src transposed
    for i in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[i, j] = src[j, i]


@helper_jit(cache=True, error_model="numpy")
def transposed(src):
    out = np.empty((src.shape[1], src.shape[0]), src.dtype)
    copy_t(out, src)
    return out


@helper_jit(cache=True, error_model="numpy")
def fill1(dst, value):
    for j in range(dst.shape[0]):
        dst[j] = value


@helper_jit(cache=True, error_model="numpy")
def fill2(dst, value):
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] = value


@helper_jit(cache=True, error_model="numpy")
def add_into1(dst, src):
    for j in range(dst.shape[0]):
        dst[j] += src[j]


@helper_jit(cache=True, error_model="numpy")
def add_into2(dst, src):
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] += src[r, j]


@helper_jit(cache=True, error_model="numpy", fastmath={"reassoc"})
def row_sum(x, zero):
    """The sum of a 1-D array. `reassoc` lets LLVM keep vector partial sums: a plain
    `acc += x[j]` loop adds one element at a time, each add waiting for the last (IEEE
    order), 10 times slower here at 256 float32 elements. Only these adds may be
    reordered; nothing else in a kernel is. `zero` is a 0 of the array's dtype."""
    acc = zero
    for j in range(x.shape[0]):
        acc += x[j]
    return acc


# ---------------------------------------------------------------------------- token inputs
# `input token x[V]` arrives as ids: W @ x is column ids[r] of W, and dW = g^T @ x adds
# row r of g into that column. These replace a GEMM against (rows, V) one-hot zeros.
@helper_jit(cache=True, error_model="numpy", nogil=True)
def gather_rows(table, ids, out):
    """out[r, :] = table[ids[r], :]: W @ x for a token x, with table = W^T (V, N) (the
    stacked transposed weights of a GEMM group: one contiguous row a token)."""
    for r in range(ids.shape[0]):
        k = ids[r]
        for j in range(out.shape[1]):
            out[r, j] = table[k, j]


@helper_jit(cache=True, error_model="numpy")
def gather_cols(W, ids, out, j0):
    """out[r, j0:j0+n] = W[:, ids[r]]: W @ x for a token x, read down a column of the
    param W (n, V) itself. For fewer tokens than ids (a sampling step: one) it costs less
    than the transposed copy that gather_rows reads."""
    for r in range(ids.shape[0]):
        k = ids[r]
        for j in range(W.shape[0]):
            out[r, j0 + j] = W[j, k]


@helper_jit(cache=True, error_model="numpy", nogil=True)
def scatter_cols(g, ids, out):
    """out = g^T @ onehot(ids): column v of out (N, V) is the sum of the rows r of g
    (R, N) whose id is v, and the columns of ids no row has are 0. The sums are made in
    a (V, N) buffer, one contiguous row a token, then transposed into out."""
    acc = np.zeros((out.shape[1], out.shape[0]), out.dtype)
    for r in range(ids.shape[0]):
        k = ids[r]
        for j in range(g.shape[1]):
            acc[k, j] += g[r, j]
    for j in range(out.shape[0]):
        for v in range(out.shape[1]):
            out[j, v] = acc[v, j]


# ---------------------------------------------------------------------------- fingerprints
@helper_jit(cache=True, error_model="numpy", nogil=True)
def fingerprint(a):
    """rnndsl.cells.seen's fingerprint of a C-contiguous array (seen.fingerprint is the NumPy
    reference): its bytes as 32-bit words, taken in pairs, each pair times an odd weight,
    summed mod 2**64. In pairs, so that each step is one 64-bit multiply-add: by single
    words the loop ran at half the speed (7.9 against 3.8 us for 400 KB here)."""
    return _fingerprint_words(a.reshape(a.size).view(np.uint32), 0)


if config.DISABLE_JIT:
    def fingerprint(a):     # noqa: F811  plain Python (a generated kernel's debugging run):
        """The same sum in NumPy: the loop above, run as Python, takes milliseconds and
        warns at every wrap of its 64-bit sums."""
        w = np.ascontiguousarray(a).reshape(-1).view(np.uint32)
        half = w.size // 2
        pairs = w[0:2 * half:2].astype(np.uint64) | (w[1:2 * half:2].astype(np.uint64)
                                                      << np.uint64(32))
        weights = np.arange(1, 2 * half, 2, dtype=np.uint64)
        total = (pairs * weights).sum(dtype=np.uint64)
        if w.size % 2:
            total = (total + np.uint64(w[-1]) * np.uint64(2 * half + 1))
        return np.uint64(total)


if config.DISABLE_JIT:
    def stack_rows_seen(dst, r0, src, seen, k):     # noqa: F811  as fingerprint above
        """stack_rows, and seen[k] = fingerprint(src) where `seen` is not empty."""
        stack_rows(dst, r0, src)
        if seen.shape[0]:
            seen[k] = fingerprint(src)


@helper_jit(cache=True, error_model="numpy", nogil=True)
def fingerprints(arrays, out):
    """out[k] = fingerprint(arrays[k]) for a tuple of C-contiguous arrays of any kinds:
    one call for all of a run's params and inputs (a call an array took 1.5 us more
    for an LSTM's 13, benchmarks/backward_snapshot.py). Compiled once a tuple type:
    0.4-0.6 s for a new cell and dtype, then cached."""
    k = 0
    for a in literal_unroll(arrays):
        out[k] = fingerprint(a)
        k += 1


# ---------------------------------------------------------------------------- activations
# tanh and sigmoid are specialised by precision. float64 calls libm (math.tanh, math.exp):
# exact to an ulp, as the 1e-10 agreement with the interpreter needs. float32 uses the
# 13/6 rational approximation of tanh that Eigen and XLA use (clamped where float32 tanh
# rounds to +-1), in float32 arithmetic only: it vectorises, where libm calls stay scalar
# (about 10 ns an element here). tests/kernels/test_kernels.py holds it to NumPy over the whole
# float32 range. The plain-Python bodies below are what NUMBA_DISABLE_JIT=1 runs.

_TANH_CLAMP = np.float32(7.90531110763549805)
_TANH_P = tuple(np.float32(c) for c in (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
_TANH_Q = tuple(np.float32(c) for c in (
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))
_F32_HALF = np.float32(0.5)
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = _TANH_P
_Q0, _Q1, _Q2, _Q3 = _TANH_Q


@njit(cache=True, error_model="numpy", inline="always")
def _tanh_f32(x):
    # clamp without min/max, whose Python semantics would turn a NaN into a bound
    if x > _TANH_CLAMP:
        x = _TANH_CLAMP
    elif x < -_TANH_CLAMP:
        x = -_TANH_CLAMP
    x2 = x * x
    p = x2 * _P0 + _P1
    p = x2 * p + _P2
    p = x2 * p + _P3
    p = x2 * p + _P4
    p = x2 * p + _P5
    p = x2 * p + _P6
    p = x * p
    q = x2 * _Q0 + _Q1
    q = x2 * q + _Q2
    q = x2 * q + _Q3
    return p / q


@njit(cache=True, error_model="numpy")
def _sigmoid_f64(x, one):
    # 1 / (1 + exp(-x)), written so that exp never overflows
    if x >= 0:
        return one / (one + math.exp(-x))
    e = math.exp(x)
    return e / (one + e)


def tanh(x):
    return math.tanh(x)


def sigmoid(x, one):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@overload(tanh, jit_options={"error_model": "numpy"})
def _tanh_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: _tanh_f32(x)
    return lambda x: math.tanh(x)


@overload(sigmoid, jit_options={"error_model": "numpy"})
def _sigmoid_impl(x, one):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x, one: _F32_HALF * _tanh_f32(_F32_HALF * x) + _F32_HALF
    return lambda x, one: _sigmoid_f64(x, one)


@njit(cache=True, error_model="numpy")
def softplus(x, zero, one):
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), stable at both ends
    return max(x, zero) + math.log1p(math.exp(-abs(x)))


@njit(cache=True, error_model="numpy", inline="always")
def maximum(a, b):
    # NumPy's maximum: a NaN in either is the result (Python's max(a, b) is a when b is
    # NaN, which let a NaN param vanish on the cpu target); ties give the first, as the
    # gradient rule takes them
    return a if a >= b or a != a else b


@njit(cache=True, error_model="numpy", inline="always")
def minimum(a, b):
    return a if a <= b or a != a else b


@njit(cache=True, error_model="numpy")
def sign(x, zero, one):
    if x > zero:
        return one
    if x < zero:
        return -one
    return zero
