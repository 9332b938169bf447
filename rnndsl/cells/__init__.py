"""The Python API: load.py (rnndsl.load), runtime.py (Cell, Run, Grads, the reference
cell and the compiled CPU cell, the target registry), cuda.py (the cuda cell),
modes.py (lengths, final outputs), seen.py (what a forward read, for its backward),
gradcheck.py.
"""
