"""rnndsl.runtime, now rnndsl.cells.runtime: the classes generated modules export.

Kept so that modules written by `rnndsl build` in rnndsl 0.1.0 still import and run;
new builds import rnndsl.cells.runtime. Deprecated: it will go in a later release.
"""

import warnings

from .cells.runtime import compiled_cell_class, CompiledCell, Cell, InterpCell, Run, Grads  # noqa: F401

warnings.warn("rnndsl.runtime moved to rnndsl.cells.runtime; rebuild the module with rnndsl build to import it from there", DeprecationWarning, stacklevel=2)
