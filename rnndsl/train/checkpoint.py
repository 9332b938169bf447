"""Checkpoints: a cell's params, its optimiser's state and a caller's meta in one .npz.

    checkpoint.save("run/step_1000.npz", cell, optimizer=opt, meta={"step": 1000})
    meta = checkpoint.load("run/step_1000.npz", cell, optimizer=opt)
    info = checkpoint.peek("run/step_1000.npz")          # no cell needed

The file is an ordinary NumPy .npz readable without pickle. It holds one JSON header
(`__header__`, as UTF-8 bytes) and arrays named `a0`, `a1`, ...; the header says which
param, optimiser buffer or meta value each array is. Names therefore never become zip
member names, so any param name (`l1.W_i`, names with `/`, names that differ only in
case) round-trips.

The header carries what identifies the model: the cell's class name, its dims and dtype,
and its spec: the text of the file that defines the cell and of every file it `use`s,
with the cell's canonical form (rnndsl.lang.canonical: the model without comments or layout)
and that form's hash. `load` refuses a checkpoint whose class, canonical form or dims
differ from the cell's with a `CheckpointError` that says what changed and what to do:
params of another model would load without complaint and mean nothing. A comment added
to the spec, or the spec moved or reformatted, changes nothing. A different dtype is
allowed (train in float64, run in float32): values are cast. Checkpoints written before
the spec was carried (no "spec" section) are compared by the hash of the raw spec text.

`cell_class(info)` rebuilds the cell class from the texts a checkpoint carries, so a
checkpoint loads from any folder after its spec moved or was deleted.
`load` writes into the cell's existing param arrays, so whoever holds them (an optimiser,
a compiled kernel, a trainer) sees the loaded values.

Writes are atomic (`build.write_atomically`): the whole file is built in memory, then
written to a temporary file in the same folder and renamed over the target, so a failed
save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.version import __version__
from ..core.files import write_atomically
from ..lang.canonical import (canonical_digest, canonical_form, describe_change, form_digest,
                              network_form)
from ..core.errors import RnnError

FORMAT = "rnndsl-checkpoint"
FORMAT_VERSION = 1
_ARRAY = "__rnndsl_array__"     # marks an array reference inside the JSON header


class CheckpointError(RnnError):
    """A checkpoint is missing, corrupt, or belongs to another spec, dims or optimiser."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What `peek` finds in a checkpoint, without a cell."""

    path: str
    cell: str
    digest: str
    dims: dict[str, int]
    dtype: str
    params: dict[str, tuple[int, ...]]
    optimizer: str | None       # the optimiser's class name, None when not saved
    meta: dict
    rnndsl_version: str
    spec: dict | None = None    # path, text, files (used texts), cell, canonical, ...


# ---------------------------------------------------------------------------- encoding
def _pack(value: Any, arrays: list[np.ndarray], where: str) -> Any:
    """JSON-able form of value: arrays become references into `arrays`."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError(f"{where} is an object array, which cannot be saved without "
                             "pickle; convert it to numbers or strings")
        arrays.append(value)
        return {_ARRAY: len(arrays) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"{where} has a key {key!r} of type {type(key).__name__}; "
                                 "checkpoint dicts need string keys")
        return {k: _pack(v, arrays, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pack(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"{where} has type {type(value).__name__}, which a checkpoint cannot "
                     "hold; use numbers, strings, lists, dicts with string keys or NumPy arrays")


def _unpack(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return arrays[f"a{value[_ARRAY]}"]
        return {k: _unpack(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v, arrays) for v in value]
    return value


def _cell_name(cell) -> str:
    return type(cell).spec.name


def spec_record(cls) -> dict:
    """What a checkpoint carries of a cell class's spec: the text of the file defining
    the cell (and its path, as it was given), the texts of the files it uses, the cell's
    name and its canonical form and hash (memoised on the class)."""
    cached = cls.__dict__.get("_spec_record")
    if cached is not None:
        return cached
    spec = cls.spec
    path, text = str(spec.source.path), spec.source.text
    files = getattr(cls, "spec_files", None)
    if files is None:
        files = getattr(getattr(cls, "kernels", None), "SPEC_FILES", None)
    if files is None:                  # a class made some other way: follow its uses now
        from ..lang.specfile import read_spec
        try:
            files = read_spec(path, text).used_files
        except (RnnError, OSError):
            files = {}
    form = _model_form(cls)
    record = {"path": path, "text": text, "files": dict(files), "cell": spec.name,
              "canonical": form, "canonical_digest": form_digest(form)}
    cls._spec_record = record
    return record


# ---------------------------------------------------------------------------- save
def save(path: str | Path, cell, optimizer=None, meta: dict | None = None) -> None:
    """Write the cell's params (and optimiser state, and meta) to `path`, atomically.

    meta is the caller's: step counters, a vocabulary, an RNG's state, arrays... anything
    made of numbers, strings, lists, string-keyed dicts and NumPy arrays.
    """
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    if not hasattr(type(cell), "spec"):     # a two-way cell (cells/directions.py)
        raise CheckpointError(
            f"a checkpoint holds a cell of one spec class; this {type(cell).__name__} "
            f"(direction={getattr(cell, 'direction', '?')!r}) is not one: save its params "
            "with np.savez, or write the directions in the spec (layer l = bidirectional "
            "...), whose network cells save")
    arrays: list[np.ndarray] = []
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "rnndsl_version": __version__,
        "cell": _cell_name(cell), "digest": str(getattr(cell, "digest", "")),
        "spec": spec_record(type(cell)),
        "dims": dict(cell.dims), "dtype": np.dtype(cell.dtype).name,
        "params": _pack(dict(cell.params), arrays, "params"),
        "optimizer": None if optimizer is None else _pack(optimizer.state_dict(), arrays,
                                                          "optimizer state"),
        "meta": _pack(meta or {}, arrays, "meta"),
    }
    members = {f"a{i}": a for i, a in enumerate(arrays)}
    members["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    write_atomically(Path(path), buffer.getvalue())


# ---------------------------------------------------------------------------- read
def _read(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and the arrays, or a CheckpointError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}" + (
            ": it is a folder" if path.is_dir() else
            ": it is not a regular file (a device, pipe or socket)" if path.exists() else
            " (no such file)"))
    not_ours = CheckpointError(f"{path} is not an rnndsl checkpoint (no rnndsl header): "
                               "checkpoints are written by rnndsl train or "
                               "rnndsl.train.checkpoint.save")
    if not zipfile.is_zipfile(path):
        if _looks_like_text(path):       # the spec, or a corpus, given for the checkpoint
            raise CheckpointError(f"{path} is a text file" + (
                " (a .rnn spec)" if path.suffix == ".rnn" else "") + ", not a checkpoint: "
                "checkpoints are .npz archives that rnndsl train writes")
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt, truncated or "
                              "not an .npz archive)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):   # a bare .npy array
            raise not_ours
        with loaded as npz:
            if "__header__" not in npz.files:      # before reading what may need pickle
                raise not_ours
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        if "allow_pickle" in str(exc):             # pickled members: not ours either
            raise not_ours from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt, truncated or "
                              f"not an .npz: {type(exc).__name__}: {exc})") from None
    raw = arrays.pop("__header__", None)
    try:
        header = json.loads(raw.tobytes().decode()) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise not_ours
    version = header.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path} is corrupt: its header's format_version is "
                              f"{version!r}, not a number")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by rnndsl {header.get('rnndsl_version')} "
                              f"in checkpoint format {header['format_version']}; this rnndsl "
                              f"({__version__}) reads format {FORMAT_VERSION}: upgrade rnndsl")
    try:
        for part in ("params", "optimizer", "meta"):
            header[part] = _unpack(header.get(part), arrays)
    except KeyError as exc:
        raise CheckpointError(f"{path} is corrupt: its header names array {exc} which the "
                              "file does not hold") from None
    _check_header(path, header)
    return header, arrays


# what a header must hold (a hand-edited one may not): key -> (test, what it should be)
_HEADER = {
    "cell": (lambda v: isinstance(v, str) and v.isidentifier(), "a cell name"),
    "digest": (lambda v: isinstance(v, str), "a string"),
    "dims": (lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n > 0
        for k, n in v.items()), "sizes by dim name, positive integers"),
    "dtype": (lambda v: v in ("float32", "float64"), "float32 or float64"),
    "params": (lambda v: isinstance(v, dict) and all(
        isinstance(a, np.ndarray) for a in v.values()), "arrays by param name"),
    "meta": (lambda v: v is None or isinstance(v, dict), "a dict"),
}


# what the spec record a header carries (spec_record) must hold, where it holds the key
_SPEC_RECORD = {
    **{key: (lambda v: isinstance(v, str), "a string")
       for key in ("path", "text", "cell", "canonical", "canonical_digest")},
    "files": (lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(t, str) for k, t in v.items()),
        "spec texts by file name"),
}


def _check_header(path, header: dict) -> None:
    for key, (test, what) in _HEADER.items():
        if key not in header:
            raise CheckpointError(f"{path} is corrupt: its header has no '{key}'")
        if not test(header[key]):
            raise CheckpointError(f"{path} is corrupt: its header's '{key}' is "
                                  f"{header[key]!r:.80}, not {what}")
    spec = header.get("spec")          # absent in checkpoints older than carried specs
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path} is corrupt: its header's 'spec' is {spec!r:.80}, not "
                              "a spec record")
    for key, (test, what) in _SPEC_RECORD.items():
        if key in spec and not test(spec[key]):
            raise CheckpointError(f"{path} is corrupt: its header's spec '{key}' is "
                                  f"{spec[key]!r:.80}, not {what}")


def peek(path: str | Path) -> CheckpointInfo:
    """What a checkpoint holds (cell, digest, dims, dtype, param shapes, meta), no cell."""
    header, _ = _read(path)
    optimizer = header["optimizer"]
    return CheckpointInfo(
        path=str(path), cell=header["cell"], digest=header["digest"],
        dims=dict(header["dims"]), dtype=header["dtype"],
        params={n: tuple(a.shape) for n, a in header["params"].items()},
        optimizer=optimizer.get("kind") if isinstance(optimizer, dict) else None,
        meta=header["meta"], rnndsl_version=header.get("rnndsl_version", "?"),
        spec=header.get("spec") if isinstance(header.get("spec"), dict) else None)


def cell_class(info: "CheckpointInfo | str | Path", target: str = "cpu",
               spec_path: str | Path | None = None) -> type:
    """The cell class a checkpoint was saved from, rebuilt from the spec texts it
    carries (never from a file of the same name elsewhere); with `spec_path`, from that
    file instead (its cell must describe the same model: `load` checks). A checkpoint
    written before specs were carried needs `spec_path`, or finds the spec where its
    trainer recorded it."""
    from ..cells.load import load, load_text
    if not isinstance(info, CheckpointInfo):
        info = peek(info)
    if spec_path is not None:
        return load(spec_path, target=target, cell=_own_cell(spec_path, info.cell))
    spec = info.spec
    if spec and isinstance(spec.get("text"), str):
        files = spec.get("files") if isinstance(spec.get("files"), dict) else {}
        return load_text(spec["text"], target=target, cell=spec.get("cell", info.cell),
                         path=str(spec.get("path", "<checkpoint>")), files=files)
    recorded = info.meta.get("user", {}).get("spec") if isinstance(info.meta, dict) else None
    if isinstance(recorded, str) and Path(recorded).is_file():
        return load(recorded, target=target, cell=info.cell)
    raise CheckpointError(
        f"{info.path} carries no spec text (it was written by rnndsl "
        f"{info.rnndsl_version}, before checkpoints carried their spec)"
        + (f" and its spec {recorded} is not there" if recorded else "")
        + "; give the spec it was trained with (rnndsl sample --spec FILE, or "
        "checkpoint.cell_class(..., spec_path=FILE))")


def _looks_like_text(path: Path) -> bool:
    """Whether the file's first 4 KB are UTF-8 text without NUL bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        head.decode("utf-8")
    except (OSError, UnicodeDecodeError):     # a multi-byte char cut at 4096 reads as not
        return False
    return bool(head) and b"\0" not in head


def _own_cell(spec_path, name: str) -> str | None:
    """`name` if the file at spec_path defines or uses a cell of that name, else None
    (then `load` picks the file's only cell, or says which to choose)."""
    from ..lang.specfile import read_spec
    spec_file = read_spec(spec_path)
    everything = {**spec_file.used, **spec_file.cells}
    if name in everything:
        return name
    if len(spec_file.cells) > 1 or (not spec_file.cells and len(spec_file.used) > 1):
        raise CheckpointError(f"{spec_path} has no cell {name}, the cell the checkpoint "
                              f"holds; it has {', '.join(everything)}: give a spec file "
                              f"that defines {name}")
    return None


def _model_form(cls) -> str:
    """The canonical form of the model `cls` computes: for a network cell, with its
    parts' equations (lang.canonical.network_form)."""
    network, parts = getattr(cls, "network", None), getattr(cls, "part_classes", None)
    if network is None or not parts:
        return canonical_form(cls.spec)
    return network_form(cls.spec, [(part, c.spec) for part, c in zip(network.parts, parts)])


def _refuse_other_class(path, header: dict, cls, dims: dict) -> None:
    """Refuse a checkpoint of another cell, model (canonical form) or dims than `cls`
    bound to `dims`."""
    name, digest = cls.spec.name, str(getattr(cls, "digest", ""))
    source = cls.spec.source.path
    if header["cell"] != name:
        raise CheckpointError(
            f"{path} holds a {header['cell']} cell (spec hash {header['digest']}), not a "
            f"{name}: load it into a cell built from the spec that {header['cell']} came "
            "from")
    stored = header.get("spec") if isinstance(header.get("spec"), dict) else {}
    if stored.get("canonical_digest"):
        ours = spec_record(cls)
        # a network's checkpoint written before its form held its parts: the outer form
        # alone (which cannot tell its equations apart) is all there is to compare
        earlier = canonical_digest(cls.spec) if getattr(cls, "network", None) else None
        if stored["canonical_digest"] not in (ours["canonical_digest"], earlier):
            change = describe_change(str(stored.get("canonical", "")), ours["canonical"])
            raise CheckpointError(
                f"{path} was saved from a different {name} model than {source} describes "
                f"(comments and layout aside):\n  {change}\nload it with the spec it was "
                "trained with (a checkpoint carries it: rnndsl sample without --spec), or "
                "train afresh; params of another model would load but mean something else")
    elif header["digest"] != digest:
        raise CheckpointError(
            f"{path} was saved from a different spec of {name}: expected spec hash "
            f"{digest} ({source}), found {header['digest']}. The spec text changed since "
            "the checkpoint was written; load it with the spec it was trained with (or "
            "retrain), since params of another spec would load but mean something else")
    if dict(header["dims"]) != dict(dims):
        shown = ", ".join(f"{k}={v}" for k, v in header["dims"].items())
        ours = ", ".join(f"{k}={v}" for k, v in dims.items())
        raise CheckpointError(f"{path} holds {name}({shown}); this cell is {name}({ours}): "
                              f"create the cell with {shown} to load it")


def check_model(info: CheckpointInfo, cls, dims: dict) -> None:
    """Refuse (CheckpointError) a checkpoint that `cls` bound to `dims` cannot load:
    another cell, another model (what changed is named) or other dims. No cell needed."""
    header = {"cell": info.cell, "digest": info.digest, "dims": info.dims,
              "spec": info.spec or {}}
    _refuse_other_class(info.path, header, cls, dims)


def _refuse_other_model(path, header: dict, cell) -> None:
    _refuse_other_class(path, header, type(cell), cell.dims)
    stored = {n: tuple(a.shape) for n, a in header["params"].items()}
    expected = {n: tuple(np.shape(a)) for n, a in cell.params.items()}
    if stored != expected:
        raise CheckpointError(f"{path} is corrupt: its params {stored} do not match the "
                              f"cell's {expected} although spec hash and dims agree")


def load(path: str | Path, cell, optimizer=None) -> dict:
    """Copy a checkpoint's params into `cell` (in place) and its optimiser state into
    `optimizer`; return the saved meta. Nothing is changed unless everything matches."""
    header, _ = _read(path)
    _refuse_other_model(path, header, cell)
    state = header["optimizer"]
    if optimizer is not None:
        if state is None:
            raise CheckpointError(f"{path} holds no optimiser state (it was saved without "
                                  "optimizer=); load it with optimizer=None and start the "
                                  "optimiser afresh")
        backup = optimizer.state_dict()
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as exc:
            optimizer.load_state_dict(backup)
            raise CheckpointError(f"{path}: cannot restore the optimiser: {exc}") from None
    for name, value in header["params"].items():
        target = cell.params[name]
        if isinstance(target, np.ndarray) and target.flags.writeable:
            target[...] = value.astype(target.dtype)
        else:
            cell.params[name] = value.astype(cell.dtype)
    return header["meta"]
