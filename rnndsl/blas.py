"""How many threads the BLAS inside compiled kernels may use.

Numba's `np.dot` calls SciPy's OpenBLAS (not NumPy's: they are separate libraries). A
kernel makes one small GEMM per time step (16 x 128 by 128 x 512 at B=16, H=128), where
OpenBLAS's thread pool costs more than it gives and, on a loaded 2-core machine, turned
a 5 ms LSTM forward into 400-800 ms (measured here). So kernels run with that library
held to one thread, restored afterwards; NumPy's own BLAS is never touched.
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


@contextmanager
def kernel_threads(n: int = 1):
    """Hold the kernels' BLAS to n threads for the duration of a kernel call."""
    controllers = _kernel_blas()
    before = [c.num_threads for c in controllers]
    for c in controllers:
        if c.num_threads != n:
            c.set_num_threads(n)
    try:
        yield
    finally:
        for c, old in zip(controllers, before):
            if c.num_threads != old:
                c.set_num_threads(old)
