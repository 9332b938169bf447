"""rnndsl.cuda_runtime, now rnndsl.cells.cuda: the cuda cell class.

Kept so that modules written by `rnndsl build` in rnndsl 0.1.0 still import and run;
new builds import rnndsl.cells.cuda. Deprecated: it will go in a later release.
"""

import warnings

from .cells.cuda import cuda_cell_class  # noqa: F401

warnings.warn("rnndsl.cuda_runtime moved to rnndsl.cells.cuda; rebuild the module with rnndsl build to import it from there", DeprecationWarning, stacklevel=2)
