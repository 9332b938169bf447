"""Reading spec files: text -> parse -> check, following `use "other.rnn"`.

Input: a path. Output: a `SpecFile` holding each cell of that file checked, and the cells
of the files it uses. A `use` is resolved relative to the file that says it; a missing
file, a cycle of uses, or two cells of one name are errors at the `use` or the cell.
This is the front half of the pipeline that the runtime and the CLI call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .check import CheckedCell, check
from .checked import FailedCell, UsesFailedCell
from ..core.errors import CheckError, Diagnostic, Source, SpecError, SpecFileError
from ..core.files import undecodable_place


@dataclass
class SpecFile:
    path: Path
    source: Source
    module: ast.Module
    cells: dict[str, CheckedCell]                       # defined in this file
    used: dict[str, CheckedCell] = field(default_factory=dict)   # from `use`d files
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """A hash of this file's text and of every file it uses."""
        h = hashlib.sha256(self.source.text.encode())
        for c in self.used.values():
            h.update(c.source.text.encode())
        return h.hexdigest()[:16]

    @property
    def used_files(self) -> dict[str, str]:
        """Path -> text of every file this one uses, directly or not."""
        return {str(c.source.path): c.source.text for c in self.used.values()}

    def pick(self, name: str | None = None) -> CheckedCell:
        """The cell called `name`, or this file's only cell."""
        everything = {**self.used, **self.cells}
        if name is not None:
            if name not in everything:
                raise SpecFileError(f"{self.source.path}: no cell named '{name}'; it has "
                                    + ", ".join(everything))
            return everything[name]
        if len(self.cells) == 1:
            return next(iter(self.cells.values()))
        if not self.cells and len(self.used) == 1:
            return next(iter(self.used.values()))
        if not self.cells and not self.used:
            raise SpecFileError(f"{self.source.path}: the file defines no cell")
        if not self.cells:
            raise SpecFileError(f"{self.source.path} defines no cell of its own and uses "
                                "several (" + ", ".join(self.used) + "); choose one with "
                                "cell=NAME (--cell NAME on the command line)")
        raise SpecFileError(f"{self.source.path} defines several cells ("
                            + ", ".join(self.cells) + "); choose one with cell=NAME "
                            "(--cell NAME on the command line)")


def _is_zip(path: Path) -> bool:
    """Whether the file starts as a zip archive does (NumPy's .npz files are zips)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _read(path: Path, shown: str) -> str:
    try:
        return path.read_text(encoding="utf-8")     # whatever the locale: specs are UTF-8
    except FileNotFoundError:
        raise SpecFileError(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise SpecFileError(f"{shown}: is a directory, not a .rnn file") from None
    except UnicodeDecodeError as exc:
        if _is_zip(path):          # an .npz checkpoint given where a spec goes
            raise SpecFileError(
                f"{shown}: a zip archive (an .npz checkpoint or params file?), not a .rnn "
                "spec: give the spec here; a checkpoint is read by `rnndsl sample "
                "CHECKPOINT` and `rnndsl info CHECKPOINT`, and continued by `rnndsl train "
                "SPEC --resume --checkpoint CHECKPOINT`") from None
        line, column = undecodable_place(exc)
        raise SpecFileError(f"{shown}:{line}:{column}: not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start})") from None
    except OSError as exc:
        raise SpecFileError(f"{shown}: cannot read ({exc.strerror})") from None
    except ValueError:      # a NUL in the name: no file can have it
        raise SpecFileError(f"{shown!r}: not a file name (it holds a NUL character)") \
            from None


def _cell_names(path: Path, text: str | None) -> list[str]:
    """The names of the cells a file defines, if it can be read and parsed (a file whose
    check failed); none otherwise."""
    from .parse import parse
    try:
        text = _read(path, str(path)) if text is None else text
        return [c.name for c in parse(text.removeprefix("\ufeff"), str(path)).cells]
    except (SpecError, SpecFileError):
        return []


def _carried_elsewhere(files: dict[str, str] | None, target: Path, name: str) -> Path | None:
    """With carried texts (a checkpoint's or a built module's) and none under `target`:
    the one carried path whose file name is the bare `name`. A shipped spec is carried
    under the path of the install that built it, which another install does not share;
    what was carried must win over any file on this disk."""
    if not files or str(target) in files or Path(name).name != name:
        return None
    found = [k for k in files if Path(k).name == name]
    return Path(found[0]) if len(found) == 1 else None


# how deep `use` chains may go (a file that uses one that uses one ...): far past any
# real spec, and well within Python's recursion limit, which reading each level spends
MAX_USE_DEPTH = 100


def read_spec(path: str | Path, text: str | None = None, _stack: tuple = (),
              files: dict[str, str] | None = None) -> SpecFile:
    """Read, parse and check a spec file and the files it uses. A `use` names a file in
    the using file's folder or, a bare file name not found there, a shipped spec
    (shipped.py). `files` maps the paths of used files (as `use` resolves them from
    `path`) to their texts, which win over both: a built module carries them, so that it
    loads wherever it is copied."""
    shown = str(path)
    path = Path(path)
    if text is None:
        text = _read(path, shown)
    text = text.removeprefix("\ufeff")     # a UTF-8 BOM, which some editors write
    from .parse import parse  # Lark, 0.02 s: not for a warm load (cache.py), which reads no spec
    source = Source(shown, text)
    module = parse(text, shown)
    errors: list[Diagnostic] = []
    used: dict[str, CheckedCell] = {}
    failed: dict[str, FailedCell] = {}    # cells defined where an error was reported
    here = path.resolve()
    for use in module.uses:
        if not use.path.endswith(".rnn"):
            # nor is any other file read (and its first line echoed in a syntax error)
            errors.append(Diagnostic(f"cannot use '{use.path}': not a .rnn file", source,
                                     use.span, "use reads spec files, named NAME.rnn"))
            continue
        # where: a text carried for the path wins over the disk; this file's folder first,
        # then, for a bare file name, the specs shipped with rnndsl (shipped.py)
        target = (path.parent / use.path)
        carried = _carried_elsewhere(files, target, use.path)
        if carried is not None:
            target = carried
        if str(target) not in (files or {}) and not target.is_file():
            from .shipped import shipped_path
            shipped = shipped_path(use.path)
            if shipped is None or (str(shipped) not in (files or {})
                                   and not shipped.is_file()):
                looked, hint = f"{target}", "paths in use are relative to this file"
                if shipped is not None:
                    looked += f", then for the shipped spec {shipped}"
                    hint += ("; a bare file name not found there is looked for among the "
                             "specs shipped with rnndsl")
                what = ("a folder, not a .rnn file" if target.is_dir() else
                        "not a regular file (a device, pipe or socket)" if target.exists()
                        else "no such file")
                errors.append(Diagnostic(f"cannot use '{use.path}': {what} "
                                         f"(looked for {looked})", source, use.span, hint))
                continue
            target = shipped
        if target.resolve() in _stack + (here,):
            errors.append(Diagnostic(f"'{use.path}' is already being read: a cycle of uses",
                                     source, use.span))
            continue
        if len(_stack) + 1 >= MAX_USE_DEPTH:   # each level is Python frames of reading
            errors.append(Diagnostic(f"cannot use '{use.path}': files use one another "
                                     f"{MAX_USE_DEPTH} deep here, the most rnndsl follows",
                                     source, use.span))
            continue
        try:
            other = read_spec(target, (files or {}).get(str(target)), _stack + (here,), files)
        except SpecError as exc:
            errors.extend(exc.diagnostics)
            # its cells are known, but failed: a layer of one here adds no error of its own
            failed.update((name, FailedCell(name)) for name in
                          _cell_names(target, (files or {}).get(str(target))))
            continue
        for name, c in {**other.used, **other.cells}.items():
            # one file reached by two paths (`../c.rnn` and `c.rnn`, a link) is one file
            if name in used and Path(used[name].source.path).resolve() != \
                    Path(c.source.path).resolve():
                errors.append(Diagnostic(f"two used files define a cell '{name}': "
                                         f"{used[name].source.path} and {c.source.path}",
                                         source, use.span))
            used[name] = c
    cells: dict[str, CheckedCell] = {}
    warnings: list[Diagnostic] = []
    for cell in module.cells:
        failed.pop(cell.name, None)
        if cell.name in cells or cell.name in used:
            where = "this file" if cell.name in cells else f"{used[cell.name].source.path}"
            errors.append(Diagnostic(f"cell '{cell.name}' is already defined in {where}",
                                     source, cell.name_span))
            continue
        try:
            checked = check(cell, source, library={**failed, **used, **cells})
        except (SpecError, UsesFailedCell) as exc:
            errors.extend(getattr(exc, "diagnostics", ()))
            failed[cell.name] = FailedCell(cell.name)
            continue
        cells[cell.name] = checked
        warnings.extend(checked.warnings)
    if errors:
        raise CheckError(errors)
    return SpecFile(path, source, module, cells, used, warnings)
