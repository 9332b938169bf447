"""rnndsl: recurrent cells written as equations, checked, differentiated and compiled.

    import rnndsl
    LSTM = rnndsl.load("specs/lstm.rnn", target="interp")
    cell = LSTM(I=65, H=128, dtype=np.float32, seed=0)
    run = cell.forward(x)                    # x: (T, B, I)
    g = cell.backward(run, d_outputs={"h": dY})

The package's folders are the pipeline's stages, each owning one thing, with imports
running only downward (tests/test_layering.py; docs/architecture.md draws the house):
core (errors, shapes, ops) <- lang (parse, check) <- ir (lower, grad, interp) <- schedule
(plan) <- codegen (emit) <- pipeline <- build (modules, cache) <- cells (the Cell API) <-
train, cli. kernels/ holds what generated modules call at run time.
"""

from __future__ import annotations

from .cells.load import DEFAULT_TARGET, load, load_text
from .core.errors import (BindError, CheckError, RnnError, SpecError, SpecFileError,
                          SpecSyntaxError, TargetError)
from .core.version import __version__

__all__ = ["load", "load_text", "RnnError", "SpecError", "SpecSyntaxError", "CheckError",
           "SpecFileError", "BindError", "TargetError", "__version__", "DEFAULT_TARGET"]
