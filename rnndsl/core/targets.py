"""The targets, one record each: what runs a cell, found by module path and imported
only when asked for.

A record names the target's code generator (its emit function and dialect, for compiled
targets), its cell class, the packages it needs and a check that it can run here. Kept
at the bottom of the house so that the CLI, the driver and the cells agree on one table
without any of them importing another; the paths are strings, so reading the table
imports nothing (the cuda target's numba-cuda included).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import TargetError


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    cell_class: str                 # "module:attribute" of its Cell subclass
    emitter: str | None = None      # "module:function" emitting a cell's kernels
    dialect: str | None = None      # "module:attribute" of its codegen.emit.Dialect
    requires: tuple[str, ...] = ()  # packages (pip names) it needs installed
    ready: str | None = None        # "module:function" raising TargetError if it cannot run

    @property
    def compiled(self) -> bool:
        return self.emitter is not None


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("interp", "the NumPy reference: the unrolled graph, forward and reverse mode",
           cell_class="rnndsl.cells.reference:InterpCell"),
    Target("cpu", "Numba @njit kernels (the default)",
           cell_class="rnndsl.cells.compiled:CompiledCell",
           emitter="rnndsl.codegen.emit:emit", dialect="rnndsl.codegen.emit:CPU",
           requires=("numba", "scipy")),
    Target("cuda", "numba-cuda kernels for NVIDIA GPUs (or NUMBA_ENABLE_CUDASIM=1)",
           cell_class="rnndsl.cells.cuda:CudaCell",
           emitter="rnndsl.codegen.emit_cuda:emit", dialect="rnndsl.codegen.emit_cuda:CUDA",
           requires=("numba-cuda",), ready="rnndsl.cells.cuda:require_cuda"),
)}
COMPILED = tuple(name for name, t in TARGETS.items() if t.compiled)


def target(name: str) -> Target:
    """The record of `name`, or a TargetError listing the targets."""
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r}; targets: " + ", ".join(TARGETS))
    return TARGETS[name]


def resolve(path: str):
    """The object at "module:attribute", imported now."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
