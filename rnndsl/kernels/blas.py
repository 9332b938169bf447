"""How many threads compiled kernels may use: their BLAS, and their own parallel loops.

Numba's `np.dot` calls SciPy's OpenBLAS (not NumPy's: they are separate libraries).
On a machine whose cores are busy (other processes, test workers, a data loader),
OpenBLAS's spinning thread pool on the small per-step GEMMs is a disaster: a 70 ms
2-layer LSTM forward took 3 s here with the load average at 7, and a 5 ms LSTM forward
400-800 ms. So each kernel call holds that library (never NumPy's) to ONE thread,
restored afterwards, unless RNNDSL_BLAS_THREADS says otherwise (a count, or `all`:
leave the BLAS as it is).

Kernels built with the `microkernel` pass (the default) parallelise themselves instead,
in one of two ways:

- **Row blocks.** With 8 batch rows or more a thread, the runtime splits the batch into
  blocks of rows, and each thread runs the whole time loop on its block
  (`runtime.CompiledCell._row_blocks`). The threads wait on a lock, never spin, so a
  busy machine costs them no more than it costs one thread: with both cores of this
  machine taken by two other processes, LSTM forward+BPTT at the mid shape took 80.8
  ms (median) in two row blocks against 106.2 ms on one thread
  (`benchmarks/threads.py --busy 2`). This is the default, one block a core the
  process may run on (`os.sched_getaffinity`).
- **Parallel GEMMs in one call.** Under MR rows a thread (the register tile's), one kernel call can split its
  GEMMs among Numba's threads (rnndsl.kernels.gemm). Under load that lost to one thread (the
  same run: 168.2 ms), so it happens only when asked for.

RNNDSL_BLAS_THREADS unset: row blocks on every core, otherwise one thread. A count N
(or `all`: one a core, unless NUMBA_NUM_THREADS says otherwise): up to N row blocks,
and under MR rows a thread, parallel GEMMs on N threads. RNNDSL_BLAS_THREADS=1: one
thread always. RNNDSL_ROW_BLOCKS=0 switches the row blocks off, for comparison. Either
way every BLAS call stays at one thread, so that OpenBLAS's spinning pool never shares
the cores with ours.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

_controllers = None


def _kernel_blas():
    """The thread controllers of the BLAS that Numba's np.dot calls (found once)."""
    global _controllers
    if _controllers is None:
        try:
            import scipy.linalg.cython_blas  # noqa: F401  loads the library Numba binds
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controllers = []
            return _controllers
        scipy_dir = os.path.dirname(os.path.dirname(scipy.linalg.cython_blas.__file__))
        found = ThreadpoolController().lib_controllers
        _controllers = [c for c in found
                        if "scipy.libs" in c.filepath or c.filepath.startswith(scipy_dir)]
    return _controllers


def threads_configured() -> bool:
    """Whether RNNDSL_BLAS_THREADS is set (else the defaults: row blocks on every core,
    one thread otherwise)."""
    return bool(os.environ.get("RNNDSL_BLAS_THREADS", "").strip())


_cores: tuple[int, int] | None = None     # (pid, cores) once a process


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one), read
    once a process: every kernel call asks (for its row blocks), and the system call
    costs 1-2 us of a 100 us call."""
    global _cores
    pid = os.getpid()
    if _cores is None or _cores[0] != pid:
        try:
            n = max(1, len(os.sched_getaffinity(0)))
        except AttributeError:    # macOS, Windows
            n = max(1, os.cpu_count() or 1)
        _cores = (pid, n)
    return _cores[1]


def configured_threads() -> int | None:
    """RNNDSL_BLAS_THREADS as a positive int (default 1), or None for "all" (leave the
    BLAS as it is)."""
    value = os.environ.get("RNNDSL_BLAS_THREADS", "").strip().lower()
    if not value:
        return 1
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        from ..core.errors import BindError
        raise BindError(f"RNNDSL_BLAS_THREADS must be a positive integer or 'all', got "
                        f"{value!r}")
    return int(value)


def kernel_thread_count() -> int:
    """How many threads rnndsl's own parallel loops (the register-tiled GEMMs of
    rnndsl.kernels.gemm) may use in a kernel call: RNNDSL_BLAS_THREADS, or for "all" every
    thread Numba has (NUMBA_NUM_THREADS, by default one a core)."""
    n = configured_threads()
    if n is None:
        import numba
        return numba.get_num_threads()
    return n


def row_block_threads() -> int:
    """How many blocks of rows a call may split its batch into: RNNDSL_BLAS_THREADS
    (`all`: Numba's thread count), or, unset, one a usable core."""
    if not threads_configured():
        return usable_cores()
    return kernel_thread_count()


def row_blocks_enabled() -> bool:
    """Whether a compiled call may split its batch rows among threads (RNNDSL_ROW_BLOCKS,
    on unless it is 0: the switch is there to measure what the split gains)."""
    value = os.environ.get("RNNDSL_ROW_BLOCKS", "").strip()
    if value not in ("", "0", "1"):
        from ..core.errors import BindError
        raise BindError(f"RNNDSL_ROW_BLOCKS must be 0 or 1, got {value!r}")
    return value != "0"


_switches = None


def _blas_switches() -> list:
    """(get, set) of each controller's thread count, as the library's own functions,
    found once: threadpoolctl's properties look the symbol up again on every call."""
    global _switches
    if _switches is None:
        found = []
        for c in _kernel_blas():
            try:      # threadpoolctl's OpenBLAS controller: the library's symbols, prefixed
                get = c._get_symbol("openblas_get_num_threads")
                put = c._get_symbol("openblas_set_num_threads")
            except Exception:
                get = put = None
            if get is None or put is None:
                get, put = (lambda c=c: c.num_threads), c.set_num_threads
            found.append((get, put))
        _switches = found
    return _switches


def hold_blas(n: int) -> list | None:
    """Set the kernels' BLAS to n threads for a call: what `release_blas` restores after
    it, or None where nothing changed. kernel_threads(n) does the same as a context
    manager; this pair is for the per-call path, where the context manager's generator
    cost more than the switch itself."""
    changed = None
    for get, put in _blas_switches():
        before = get()
        if before != n:
            put(n)
            if changed is None:
                changed = []
            changed.append((put, before))
    return changed


def release_blas(changed: list | None) -> None:
    if changed:
        for put, before in changed:
            put(before)


@contextmanager
def kernel_threads(n: int | None = None):
    """Hold the kernels' BLAS to n threads (default: RNNDSL_BLAS_THREADS) for a call."""
    if n is None:
        n = configured_threads()
    if n is None:
        yield
        return
    changed = hold_blas(n)
    try:
        yield
    finally:
        release_blas(changed)


@contextmanager
def numba_threads(n: int | None):
    """Numba's thread count for this thread's parallel loops held to n for a call (a
    parallel loop of one thread then runs inline, waking no other thread)."""
    if n is None:
        yield
        return
    import numba
    before = numba.get_num_threads()
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    if n != before:
        numba.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            numba.set_num_threads(before)
