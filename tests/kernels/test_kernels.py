"""The compiled activation functions against NumPy, over the whole float range.

float32 tanh/sigmoid are a rational approximation (rnndsl/kernels.py); float64 ones call
libm. Both are checked on a dense grid, at saturation, at the float extremes, and on
NaN and +-inf, inside an @njit loop exactly as generated kernels call them.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from rnndsl.kernels import loops as kernels
@njit(error_model="numpy")
def _apply_tanh(x, out):
    for i in range(x.shape[0]):
        out[i] = kernels.tanh(x[i])


@njit(error_model="numpy")
def _apply_sigmoid(x, one, out):
    for i in range(x.shape[0]):
        out[i] = kernels.sigmoid(x[i], one)


@njit(error_model="numpy")
def _apply_softplus(x, zero, one, out):
    for i in range(x.shape[0]):
        out[i] = kernels.softplus(x[i], zero, one)


def grid(dtype) -> np.ndarray:
    info = np.finfo(dtype)
    dense = np.linspace(-20, 20, 400_001)
    wide = np.geomspace(1e-30, float(info.max) / 2, 2000)
    tiny = np.array([0.0, info.tiny, info.eps, 1e-7, 1e-4])
    values = np.concatenate([dense, wide, -wide, tiny, -tiny])
    return values.astype(dtype)


def sigmoid_ref(x):
    x = x.astype(np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


@pytest.mark.parametrize("dtype,abs_tol", [(np.float32, 4e-7), (np.float64, 1e-15)])
def test_tanh_matches_numpy_everywhere(dtype, abs_tol):
    x = grid(dtype)
    out = np.empty_like(x)
    _apply_tanh(x, out)
    assert out.dtype == dtype
    err = np.abs(out.astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() < abs_tol, f"worst at x={x[err.argmax()]}: {err.max():.3g}"
    assert np.all(np.abs(out) <= 1), "tanh left [-1, 1]"
    assert out[x == 0].max() == 0 and np.all(np.sign(out) == np.sign(x))


@pytest.mark.parametrize("dtype,abs_tol", [(np.float32, 4e-7), (np.float64, 1e-15)])
def test_sigmoid_matches_numpy_everywhere(dtype, abs_tol):
    x = grid(dtype)
    out = np.empty_like(x)
    _apply_sigmoid(x, dtype(1), out)
    assert out.dtype == dtype
    err = np.abs(out.astype(np.float64) - sigmoid_ref(x))
    assert err.max() < abs_tol, f"worst at x={x[err.argmax()]}: {err.max():.3g}"
    assert np.all((out >= 0) & (out <= 1))
    # monotone up to the approximation's own error (float32 wiggles by a few ulps near 1)
    steps = np.diff(out[np.argsort(x, kind="stable")].astype(np.float64))
    assert steps.min() >= -2 * abs_tol, f"sigmoid decreases by {-steps.min():.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_is_stable_at_both_ends(dtype):
    x = grid(dtype)
    out = np.empty_like(x)
    _apply_softplus(x, dtype(0), dtype(1), out)
    ref = np.logaddexp(0, x.astype(np.float64))
    rel = np.abs(out - ref) / np.maximum(np.abs(ref), np.finfo(dtype).tiny)
    assert np.isfinite(out).all()
    assert rel.max() < 8 * np.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_infinities(dtype):
    x = np.array([np.nan, np.inf, -np.inf], dtype)
    t, s = np.empty_like(x), np.empty_like(x)
    _apply_tanh(x, t)
    _apply_sigmoid(x, dtype(1), s)
    assert t[1] == 1 and t[2] == -1 and s[1] == 1 and s[2] == 0
    # NaN in must come out as NaN, never as a plausible number
    assert np.isnan(t[0]) and np.isnan(s[0])


def test_plain_python_bodies_agree_with_numpy():
    """NUMBA_DISABLE_JIT=1 runs these bodies: they must mean the same."""
    for v in (-30.0, -2.5, 0.0, 1e-8, 3.0, 30.0):
        assert abs(kernels.tanh(v) - np.tanh(v)) < 1e-15
        assert abs(kernels.sigmoid(v, 1.0) - sigmoid_ref(np.array([v]))[0]) < 1e-15


def test_blas_threads_setting(monkeypatch):
    from rnndsl.kernels import blas
    from rnndsl.core.errors import BindError
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "1")
    controllers = blas._kernel_blas()
    assert controllers, "SciPy's OpenBLAS, which Numba's np.dot calls, was not found"
    before = [c.num_threads for c in controllers]
    with blas.kernel_threads():
        assert all(c.get_num_threads() == 1 for c in controllers)
    assert [c.get_num_threads() for c in controllers] == before
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "zero")
    with pytest.raises(BindError, match="RNNDSL_BLAS_THREADS must be a positive integer"):
        with blas.kernel_threads():
            pass
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "all")
    assert blas.configured_threads() is None        # the BLAS left as it is
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "3")
    assert blas.configured_threads() == 3
    monkeypatch.delenv("RNNDSL_BLAS_THREADS")
    assert blas.configured_threads() == 1           # the default: one thread a call


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_sum_matches_numpy_and_keeps_nan_and_infinities(dtype):
    rng = np.random.default_rng(0)
    zero = dtype(0)
    for n in (0, 1, 7, 16, 255, 1000):
        x = rng.standard_normal(n).astype(dtype)
        want = float(np.sum(x, dtype=np.float64))
        got = kernels.row_sum(x, zero)
        assert type(got) in (dtype, float) and abs(got - want) <= 1e-5 * max(1.0, np.abs(x).sum())
    x = np.ones(40, dtype)
    x[17] = np.inf
    assert kernels.row_sum(x, zero) == np.inf
    x[3] = -np.inf
    assert np.isnan(kernels.row_sum(x, zero))
    x[:] = 1
    x[30] = np.nan
    assert np.isnan(kernels.row_sum(x, zero))
    assert kernels.row_sum(np.arange(6, dtype=dtype)[::2], zero) == 6   # a strided view


def test_row_sum_compiles_to_vector_adds():
    """Why row_sum exists: with its adds free to reassociate, LLVM sums in vector
    registers. A fresh, uncached compile must hold packed float32 adds on vector
    registers (a plain `acc += x[j]` loop holds only scalar ones, vaddss)."""
    import re

    from numba.core import config
    if config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    options = {k: v for k, v in kernels.row_sum.targetoptions.items()
               if k not in ("cache", "nopython")}
    fresh = njit(**options)(kernels.row_sum.py_func)
    assert fresh(np.ones(100, np.float32), np.float32(0)) == 100
    asm = "\n".join(fresh.inspect_asm().values())
    assert re.search(r"\bvaddps\s[^\n]*%[yz]mm", asm), "no packed float32 adds"


def _many_streams_loop():
    """A loop over 16 arrays read and 16 written, as a big fused elementwise loop is:
    vectorising it needs more run-time overlap checks than LLVM allows by default."""
    n = 16
    ins = ", ".join(f"a{i}" for i in range(n))
    outs = ", ".join(f"b{i}" for i in range(n))
    body = "\n".join(f"        b{i}[j] = a{i}[j] * a{(i + 1) % n}[j] + a{(i + 2) % n}[j]"
                     for i in range(n))
    namespace: dict = {}
    exec(f"def loop({ins}, {outs}):\n    for j in range(a0.shape[0]):\n{body}\n", namespace)
    return namespace["loop"], n


def test_kernel_jit_vectorises_loops_over_many_arrays_and_only_its_own():
    """Generated kernels compile through kernel_jit, which lets LLVM vectorise loops
    behind more run-time overlap checks. The same loop through plain njit, compiled
    after it, stays scalar: the limit is back to LLVM's default outside kernel_jit."""
    import re

    from numba.core import config
    if config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    loop, n = _many_streams_loop()
    arrays = [np.full(64, i + 1.0, np.float32) for i in range(2 * n)]
    packed = {}
    for name, jit in (("kernel_jit", kernels.kernel_jit(cache=False, error_model="numpy")),
                      ("njit", njit(error_model="numpy"))):
        fn = jit(loop)
        fn(*arrays)
        assert np.allclose(arrays[n], arrays[0] * arrays[1] + arrays[2])
        asm = "\n".join(fn.inspect_asm().values())
        packed[name] = len(re.findall(r"\bv(?:fmadd\d+|mul|add)ps\s[^\n]*%[yz]mm", asm))
    assert packed["kernel_jit"] >= n and packed["njit"] == 0, packed


def test_kernel_jit_sets_llvm_under_numba_compiler_lock(monkeypatch):
    """The overlap-check limit is process-wide: kernel_jit changes it only while holding
    Numba's compiler lock, so that a compilation on another thread neither sees it nor
    resets it in the middle of a kernel's."""
    from contextlib import contextmanager

    from numba.core import config
    from numba.core.compiler_lock import global_compiler_lock
    if config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    held = []

    @contextmanager
    def recorder():
        held.append(global_compiler_lock.is_locked())
        yield

    monkeypatch.setattr(kernels, "_many_alias_checks", recorder)
    fn = kernels.kernel_jit(cache=False)(lambda a: a + 1)
    assert fn(1) == 2 and held == [True]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 5), (7, 3), (128, 65), (2, 4097)])
def test_stack_rows_copies_a_block_and_takes_its_fingerprint(dtype, rows, cols):
    """stack_rows(_seen) writes rows r0 .. r0+rows of a C-order stack and nothing else;
    the _seen variant's fingerprint, taken chunk by chunk as it copies (odd sizes,
    chunks that end on an odd 32-bit word, more than one chunk), is seen.fingerprint's,
    and with an empty `seen` it writes no fingerprint."""
    from rnndsl.cells.seen import fingerprint
    rng = np.random.default_rng(rows * cols)
    W = rng.standard_normal((rows, cols)).astype(dtype)
    for fn in ("stack_rows", "stack_rows_seen"):
        stack = np.full((2 * rows + 1, cols), 7.0, dtype)
        seen = np.zeros(3, np.uint64)
        if fn == "stack_rows":
            kernels.stack_rows(stack, rows, W)
        else:
            kernels.stack_rows_seen(stack, rows, W, seen, 1)
            assert seen[1] == fingerprint(W) and seen[0] == seen[2] == 0
        assert np.array_equal(stack[rows:2 * rows], W)
        assert (stack[:rows] == 7.0).all() and (stack[2 * rows:] == 7.0).all()
    stack = np.empty((rows, cols), dtype)
    kernels.stack_rows_seen(stack, 0, W, np.empty(0, np.uint64), 0)
    assert np.array_equal(stack, W)


def test_ctrl_c_while_a_kernel_compiles_is_raised_when_the_compile_is_done(capfd):
    """A KeyboardInterrupt inside LLVM's callbacks into Python left Numba's library
    without its compiled object ('no compiled object yet': rnndsl's internal error,
    status 3, two Ctrl-Cs in ten during a cold compile); the compile now finishes first
    and the interrupt comes after it. A second Ctrl-C is raised at once."""
    import os
    import signal
    from rnndsl.kernels.loops import _ctrl_c_after_compiling
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)   # Python's own
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_after_compiling():
            os.kill(os.getpid(), signal.SIGINT)      # delivered at the next bytecode
            sum(range(10000))
            finished.append(True)
    assert finished and "stopping when the kernel being compiled is done" in \
        capfd.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_after_compiling():
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(10000))
            os.kill(os.getpid(), signal.SIGINT)      # the user insists
            sum(range(10000))
            finished.append("not reached")
    assert finished == [True]
    signal.signal(signal.SIGINT, previous)
