"""What generated modules call at run time: array loops and scalar functions (loops.py),
the per-step GEMMs' register tiles (gemm.py, gemm_tiles.py, tile_sizes.py) and the
timing of a step's GEMM ways (step_paths.py, for rnndsl.build.machine), the cuda
helpers (cuda.py), BLAS thread control (blas.py), the allocator setting (malloc.py), and the
training step's norms, clipping and optimiser updates (optim.py).
Imports nothing of rnndsl above core/, so every layer may import it.

Modules written by rnndsl 0.1.0 import their helpers from `rnndsl.kernels` itself; its
names resolve to loops.py's on first use (not at import: loops.py imports Numba, which a
warm load that needs only tile_sizes.py should not pay for).
"""


import importlib

_SUBMODULES = ("blas", "cuda", "gemm", "gemm_tiles", "loops", "malloc", "optim",
               "step_paths", "tile_sizes")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if not name.startswith("__"):
        loops = importlib.import_module(f"{__name__}.loops")
        if hasattr(loops, name):
            return getattr(loops, name)
    raise AttributeError(f"module 'rnndsl.kernels' has no attribute '{name}'")
