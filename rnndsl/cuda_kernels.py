"""rnndsl.cuda_kernels, now rnndsl.kernels.cuda: what generated cuda modules call.

Kept so that modules written by `rnndsl build` in rnndsl 0.1.0 still import and run;
new builds import rnndsl.kernels.cuda. Deprecated: it will go in a later release.
"""

import warnings

from .kernels.cuda import *  # noqa: F401,F403

warnings.warn("rnndsl.cuda_kernels moved to rnndsl.kernels.cuda; rebuild the module with rnndsl build to import it from there", DeprecationWarning, stacklevel=2)
