"""rnndsl.runtime, now rnndsl.cells.compiled: the classes generated modules export.

Kept so that modules written by `rnndsl build` in rnndsl 0.1.0 still import and run;
new builds import rnndsl.cells.compiled. Deprecated: it will go in a later release.
"""

import warnings

from .cells.compiled import CompiledCell, compiled_cell_class  # noqa: F401
from .cells.base import Cell, Grads, Run  # noqa: F401
from .cells.reference import InterpCell  # noqa: F401

warnings.warn("rnndsl.runtime moved to rnndsl.cells.compiled; rebuild the module with rnndsl build to import it from there", DeprecationWarning, stacklevel=2)
