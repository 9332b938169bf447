"""Spec files to cell classes: `rnndsl.load` and `rnndsl.load_text`, the public face's
two verbs, and the target check they share.

Input: a path (or a text) and a target. Output: a `Cell` subclass: the interpreter's,
or a compiled module's (from the build cache, built now on a miss). A warm load (a spec
loaded before, nothing it depends on changed) reads no spec (build/cache.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

from ..core import targets
from ..core.errors import Source, TargetError
from ..core.version import __version__

# "cpu" (generated Numba kernels, cached by spec hash) is the default; "interp" is the
# NumPy reference the compiled targets are tested against; "cuda" (generated numba-cuda
# kernels) needs the optional numba-cuda package and a GPU or the CUDA simulator.
DEFAULT_TARGET = "cpu"


def load(path: str | Path, target: str = DEFAULT_TARGET, cell: str | None = None, *,
         no_passes=()) -> type:
    """Read, check and prepare a .rnn spec; return its cell class.

    `cell` picks one cell when the file (with the files it uses) defines several.
    `no_passes` switches optimisation passes off, as `rnndsl build --no-pass` does
    (`rnndsl build --help` lists them): e.g. no_passes=["hold_weights"] on the cuda
    target reads the recurrent weights from global memory at every step.
    """
    _check_target(target)
    off = _passes_off(no_passes)
    compiled = targets.target(target).compiled
    if compiled:
        from ..build.cache import remember_class, warm_class
        found = warm_class(path, target, cell, off)     # a spec loaded before: no reading
        if found is not None:
            cls, shown, files = found
            return _as_loaded(_with_plans(cls), shown, files)
    from ..lang.specfile import read_spec
    spec_file = read_spec(path)
    cls = _cell_class(spec_file, target, cell, off)
    if compiled:
        cls = _as_loaded(cls, str(spec_file.pick(cell).source.path), spec_file.used_files)
        remember_class(path, target, cell, spec_file, cls, off)
    return cls


def _as_loaded(cls: type, shown: str, files: dict[str, str]) -> type:
    """A compiled class as this load reads it: its spec shown by the path this load
    read it from, its used files by theirs. The build cache keys a module by the spec's
    text, so a module's class may come from the load of another file of the same text
    (a copy in another folder, the same file by another path), whose path errors,
    checkpoints (`rnndsl info`) and `rnndsl sample --spec` then named, even once it
    was deleted. Such a class gets a subclass that differs in those only (one for each
    path and files, so that loading again gives the same class). It is bound in the
    module under a name of its own (`Elman_as_1a2b3c4d`), which its __qualname__ says,
    so that pickle finds it there (a cell pickles by its class's module and name)."""
    held = getattr(cls, "spec_files", None)
    if held is None:
        held = getattr(getattr(cls, "kernels", None), "SPEC_FILES", None)
    if cls.spec.source.path == shown and held == files:
        return cls
    key = (cls, shown, tuple(sorted(files.items())))
    made = _AS_LOADED.get(key)
    if made is None:
        spec = dataclasses.replace(cls.spec, source=Source(shown, cls.spec.source.text))
        digest = hashlib.sha256(repr(key[1:]).encode()).hexdigest()[:8]
        qualname = f"{cls.__qualname__}_as_{digest}"
        made = _AS_LOADED[key] = type(cls.__name__, (cls,), {
            "spec": spec, "spec_files": dict(files), "__module__": cls.__module__,
            "__qualname__": qualname, "__doc__": cls.__doc__})
        module = sys.modules.get(cls.__module__)
        if module is not None:
            setattr(module, qualname, made)
    return made


_AS_LOADED: dict[tuple, type] = {}


def load_text(text: str, target: str = DEFAULT_TARGET, cell: str | None = None,
              path: str = "<text>", *, no_passes=(), files: dict[str, str] | None = None
              ) -> type:
    """Like `load`, for a spec held in a string (`use` paths resolve from `path`'s folder,
    the cwd by default). `files` maps the paths of used files (as `use` resolves them
    from `path`) to their texts, which then win over the disk: a checkpoint carries them
    (`rnndsl.train.checkpoint.cell_class`), so that it loads after its spec moved."""
    from ..lang.specfile import read_spec
    _check_target(target)
    return _cell_class(read_spec(path, text=text, files=files), target, cell,
                       _passes_off(no_passes), files)


def _passes_off(no_passes) -> tuple[str, ...]:
    """The pass names in `no_passes`, checked and sorted (none: nothing imported)."""
    if isinstance(no_passes, str):
        no_passes = [no_passes]
    off = tuple(sorted(set(no_passes)))
    if off:
        from ..schedule.plan import PASSES
        unknown = [p for p in off if p not in PASSES]
        if unknown:
            raise TargetError(f"unknown pass '{unknown[0]}' in no_passes; passes: "
                              + ", ".join(PASSES))
    return off


def _check_target(target: str) -> None:
    """A TargetError unless `target` is known and can run here (its record's check)."""
    record = targets.target(target)
    if record.ready is not None:
        targets.resolve(record.ready)()


def _cell_class(spec_file, target: str, cell: str | None, off: tuple[str, ...] = (),
                files: dict[str, str] | None = None) -> type:
    from .reference import make_cell_class
    spec = spec_file.pick(cell)
    if spec.sequence_layers:     # a network of parts, each built like any spec
        from .network import network_class
        def load_part(text: str, name: str, path: str) -> type:
            return load_text(text, target, name, path=path, no_passes=off, files=files)
        return network_class(spec, {**spec_file.used, **spec_file.cells}, target, load_part,
                             spec_file.used_files)
    if not targets.target(target).compiled:
        cls = make_cell_class(spec, target, spec_file.digest)
        cls.spec_files = spec_file.used_files    # what a checkpoint carries (checkpoint.py)
        return cls
    try:
        from ..build.modules import cached_module
    except ImportError as exc:   # numba or scipy missing: say what to install
        raise TargetError(f"target '{target}' needs {exc.name}, which is not installed; "
                          "install rnndsl with its dependencies (pip install rnndsl) or use "
                          "target='interp'") from None
    from ..lang.specfile import read_spec
    if spec.name not in spec_file.cells:      # a cell from a `use`d file: build that file
        carried = (files or {}).get(str(spec.source.path))
        spec_file = read_spec(spec.source.path, carried, files=files)
    from ..schedule.plan import PASSES
    passes = [p for p in PASSES if p not in off]
    cls = getattr(cached_module(spec_file, passes, target=target), spec.name)
    return _with_plans(cls, {**spec_file.used, **spec_file.cells})


def _with_plans(cls: type, library=None) -> type:
    """A compiled class, with the choices made per call on top of its kernels: a stacked
    cell's loop per layer (cells/network.py's LayerLoops)."""
    if getattr(cls, "target", None) != "cpu":
        return cls
    from .network import with_layer_loops
    return with_layer_loops(cls, load_text, library)
