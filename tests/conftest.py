"""Hypothesis profiles: `fast` by default, `long` with HYPOTHESIS_PROFILE=long (500 examples)."""

import os
import sys

# The cuda target runs on numba-cuda's simulator unless RNNDSL_REAL_GPU=1: the flag must be
# set before numba is first imported (set later, numba silently picks the real target).
# pytest itself imports numba.core.errors first (pyproject's filterwarnings names a Numba
# warning): numba's config is then re-read, which works while numba.cuda is not imported.
if os.environ.get("RNNDSL_REAL_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    if "numba" in sys.modules:
        assert "numba.cuda" not in sys.modules, "numba.cuda was imported before conftest.py"
        from numba.core import config as _numba_config
        _numba_config.reload_config()

# tests/ holds shared helpers (strategies_*.py, grid_emulator.py) beside the per-stage
# folders of test files (tests/lang/, tests/cells/, ...: the package's layout)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hypothesis import settings  # noqa: E402

# The suite runs one worker per core; kernels' BLAS threads would oversubscribe them.
os.environ.setdefault("RNNDSL_BLAS_THREADS", "1")
# Nor is there a core to spare for compiling a backward kernel in a second process
# (rnndsl.build.compile_ahead); tests/build/test_compile_ahead.py switches it on where it tests it.
os.environ.setdefault("RNNDSL_COMPILE_AHEAD", "0")

# Which way a step's GEMM takes below 8 rows is chosen for the machine, from timings
# (rnndsl.build.machine); the suite runs with the built-in marks, so that it does not
# depend on this machine's noise (tests/build/test_machine.py times them for real).
os.environ.setdefault("RNNDSL_TUNING", "default")
# Likewise the register tile's rows (8 with AVX-512, 4 without: rnndsl.kernels.tile_sizes):
# the suite's batches are sized around 8; tests/kernels/test_tile_choice.py runs the other.
os.environ.setdefault("RNNDSL_TILES", "8x16")

settings.register_profile("fast", max_examples=40, deadline=None)
settings.register_profile("long", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
