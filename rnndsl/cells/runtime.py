"""The cell classes under the names rnndsl 0.1.0's generated modules and callers import
(`from rnndsl.cells.runtime import compiled_cell_class`); they live in base.py (Cell,
Run, Grads), reference.py (InterpCell) and compiled.py (CompiledCell)."""

from .base import DTYPES, Cell, Grads, Run, check_seen  # noqa: F401
from .blocks import _CompiledTape  # noqa: F401
from .compiled import CompiledCell, compiled_cell_class  # noqa: F401
from .reference import InterpCell, make_cell_class  # noqa: F401
