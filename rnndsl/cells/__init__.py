"""The Python API: load.py (rnndsl.load), base.py (Cell, Run, Grads), reference.py (the
interpreter's cell), compiled.py (the CPU kernels' cell), cuda.py (the cuda cell),
runtime.py (the names they had in 0.1.0),
modes.py (lengths, final outputs), seen.py (what a forward read, for its backward),
directions.py (a cell run in reverse or both ways), gradcheck.py.
"""

from .base import Cell
from .directions import Directional

Cell._directional = Directional
