"""rnndsl.gemm, now rnndsl.kernels.gemm: the per-step GEMMs' register tiles.

Kept so that modules written by `rnndsl build` in rnndsl 0.1.0 still import and run;
new builds import rnndsl.kernels.gemm. Deprecated: it will go in a later release.
"""

import warnings

from .kernels.gemm import *  # noqa: F401,F403
from .kernels.gemm import MR, NR, pack_cols_t, pack_rows, packed_gemm, parallel_dot, parallel_dot_tn  # noqa: F401

warnings.warn("rnndsl.gemm moved to rnndsl.kernels.gemm; rebuild the module with rnndsl build to import it from there", DeprecationWarning, stacklevel=2)
