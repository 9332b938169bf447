"""Stage 7: spec -> generated module on disk -> imported module.

`build_source` runs plan and emit for every cell of a spec file and assembles one module.
`write_module` validates the text (ast.parse, compile) and writes it atomically (a
temporary file, then a rename), so a failed build never leaves a half-written module
and the previous build stays in place. `cached_module` keeps built modules in a cache
folder keyed by the spec's hash, the rnndsl version and the passes, and reuses them
across processes. Where that folder is, how a module file is imported (`load_built`,
under a name derived from its path, the same in every process, which Numba's on-disk
cache needs) and how a warm load skips reading its spec live in `cache.py`.
"""

from __future__ import annotations

import ast
import hashlib
from collections import Counter
from pathlib import Path

from .cache import (cache_dir, compiler_hash, load_built, module_name_for,  # noqa: F401
                    remember_spec, write_atomically)
from .emit import CPU, emit, module_footer, module_header
from .compose import with_lengths
from .errors import CheckError, Diagnostic, RnnError
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
    source = "".join(parts)
    _check_class_names(source, cells)
    return source


def _module_bindings(source: str) -> Counter:
    """How many times each name is bound at the top level of a module's text."""
    bound: Counter = Counter()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound[node.name] += 1
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return bound


def _check_class_names(source: str, cells) -> None:
    """Each cell is a class of its own name in the module, beside the module's imports,
    helpers and every cell's kernels (`forward_LSTM`, `LSTM_META`, ...). A cell named
    like one of those would replace it, or be replaced, and the module would break or
    compute something else: that is the spec's error, reported at the cell's name."""
    bound = _module_bindings(source)
    errors = [Diagnostic(f"'{c.name}' cannot name a cell: the generated module already "
                         f"uses that name for its own code",
                         c.source, c.ast.name_span if c.ast is not None else None,
                         hint="rename the cell")
              for c in cells if bound[c.name] > 1]
    if errors:
        raise CheckError(errors)


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


def write_module(source: str, path: Path) -> None:
    """Validate, then write atomically."""
    validate(source, str(path))
    write_atomically(path, source.encode())


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
    remember_spec(spec_file, path)    # the module's classes read it, not the spec again
    return load_built(path)
