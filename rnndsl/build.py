"""Stage 7: spec -> generated module on disk -> imported module.

`build_source` runs plan and emit for every cell of a spec file and assembles one module.
`write_module` validates the text (ast.parse, compile) and writes it atomically (a
temporary file, then a rename), so a failed build never leaves a half-written module
and the previous build stays in place. `load_built` imports a module file under a name
derived from its path, the same in every process, which Numba's on-disk cache needs.
`cached_module` keeps built modules in a cache folder keyed by the spec's hash, the
rnndsl version and the passes, and reuses them across processes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from . import __version__
from .emit import CPU, emit, module_footer, module_header
from .compose import with_lengths
from .errors import RnnError
from .ir import lower
from .plan import PASSES, make_plan
from .spec import SpecFile


class BuildError(RnnError):
    """The build could not be written (the spec itself was fine)."""


def backend(target: str):
    """(emit, dialect) of a compiled target. The cuda emitter is imported only when asked
    for: it needs nothing beyond emit.py, but its modules need numba-cuda to run."""
    if target == "cpu":
        return emit, CPU
    if target == "cuda":
        from .emit_cuda import CUDA, emit as emit_cuda
        return emit_cuda, CUDA
    raise BuildError(f"no compiled target '{target}'; targets: cpu, cuda")


def build_source(spec_file: SpecFile, passes=PASSES, target: str = "cpu",
                 variant: str | None = None) -> str:
    """The full text of the generated module for every cell defined in a spec file.
    variant="lengths" builds each cell's variable-length form (compose.with_lengths)."""
    emit_cell, dialect = backend(target)
    cells = list(spec_file.cells.values())
    if variant == "lengths":
        cells = [with_lengths(c) for c in cells]
    elif variant is not None:
        raise BuildError(f"unknown build variant '{variant}'")
    names = [c.name for c in cells]
    parts = [module_header(str(spec_file.source.path), spec_file.digest, names, target,
                           dialect)]
    for cell in cells:
        plan = make_plan(lower(cell), passes)
        parts.append(f"\n\n# {'-' * 70} cell {cell.name}\n\n")
        parts.append(emit_cell(plan, cell.source.path, cell.source.text,
                               spec_file.digest).source)
    parts.append("\n\n# The files this spec uses, so that its cells' layers resolve wherever this\n"
                 "# module is imported from.\n"
                 f"SPEC_FILES = {dict(sorted(spec_file.used_files.items()))!r}\n"
                 f"VARIANT = {variant!r}\n")
    parts.append(module_footer(names, dialect))
    return "".join(parts)


def module_file_name(spec_file: SpecFile) -> str:
    """specs/lstm.rnn -> lstm.py; a stem that is not an identifier is made one."""
    stem = Path(spec_file.source.path).stem
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in stem)
    if not name or name[0].isdigit():
        name = "cell_" + name
    return name + ".py"


def validate(source: str, filename: str) -> None:
    """The generated text must be Python: a failure here is a bug, reported as one."""
    try:
        compile(source, filename, "exec")
    except SyntaxError as exc:  # pragma: no cover - a bug in the emitter
        raise AssertionError(f"rnndsl generated invalid Python in {filename}: {exc}") from exc


def write_atomically(path: Path, data: bytes) -> None:
    """Write a temporary file in the same folder, then rename: a failure at any point
    leaves the previous file intact and no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_module(source: str, path: Path) -> None:
    """Validate, then write atomically."""
    validate(source, str(path))
    write_atomically(path, source.encode())


def module_name_for(path: Path) -> str:
    """A stable module name for a built file: its stem plus a hash of its folder."""
    folder = hashlib.sha256(str(path.resolve().parent).encode()).hexdigest()[:10]
    return f"_rnndsl_{path.stem}_{folder}"


def load_built(path: Path):
    """Import a built module file (or return it if this process already has it)."""
    name = module_name_for(path)
    mod = sys.modules.get(name)
    if mod is not None and getattr(mod, "__file__", None) == str(path):
        return mod
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def cache_dir() -> Path:
    """$RNNDSL_CACHE_DIR, else $XDG_CACHE_HOME/rnndsl, else ~/.cache/rnndsl."""
    env = os.environ.get("RNNDSL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnndsl"


_COMPILER_HASH: str | None = None


def compiler_hash() -> str:
    """A hash of rnndsl's own code: a changed compiler never serves an old build."""
    global _COMPILER_HASH
    if _COMPILER_HASH is None:
        h = hashlib.sha256(__version__.encode())
        here = Path(__file__).resolve().parent
        for path in sorted(here.glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
        _COMPILER_HASH = h.hexdigest()[:16]
    return _COMPILER_HASH


def cached_module(spec_file: SpecFile, passes=PASSES, target: str = "cpu",
                  variant: str | None = None):
    """The built module of a spec file, from the cache or built into it now.

    The key is the spec's hash (with the files it uses), rnndsl's own code, the target
    and the passes, so an edited spec or an upgraded rnndsl is rebuilt, never served
    stale; Numba's cache beside each module keeps its machine code across processes.
    """
    passes = tuple(sorted(passes))
    key = hashlib.sha256(
        f"{spec_file.digest}|{compiler_hash()}|{target}|{passes}|{variant}".encode())
    stem = "".join(ch if ch.isalnum() else "_" for ch in Path(spec_file.source.path).stem)
    path = cache_dir() / f"{stem}_{key.hexdigest()[:16]}.py"
    if not path.is_file():
        try:
            write_module(build_source(spec_file, passes, target, variant), path)
        except OSError as exc:
            raise BuildError(f"cannot write the build cache at {path}: {exc.strerror}; "
                             "set RNNDSL_CACHE_DIR to a writable folder") from None
    return load_built(path)
