"""Checkpoints: a cell's params, its optimiser's state and a caller's meta in one .npz.

    checkpoint.save("run/step_1000.npz", cell, optimizer=opt, meta={"step": 1000})
    meta = checkpoint.load("run/step_1000.npz", cell, optimizer=opt)
    info = checkpoint.peek("run/step_1000.npz")          # no cell needed

The file is an ordinary NumPy .npz readable without pickle. It holds one JSON header
(`__header__`, as UTF-8 bytes) and arrays named `a0`, `a1`, ...; the header says which
param, optimiser buffer or meta value each array is. Names therefore never become zip
member names, so any param name (`l1.W_i`, names with `/`, names that differ only in
case) round-trips.

The header carries what identifies the model: the cell's class name, `cell.digest` (the
hash of its spec text), its dims and dtype. `load` refuses a checkpoint whose class, digest
or dims differ from the cell's with a `CheckpointError` that says what was expected, what
was found and what to do: params of another spec would load without complaint and mean
nothing. A different dtype is allowed (train in float64, run in float32): values are cast.
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

from . import __version__
from .build import write_atomically
from .errors import RnnError

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


# ---------------------------------------------------------------------------- save
def save(path: str | Path, cell, optimizer=None, meta: dict | None = None) -> None:
    """Write the cell's params (and optimiser state, and meta) to `path`, atomically.

    meta is the caller's: step counters, a vocabulary, an RNG's state, arrays... anything
    made of numbers, strings, lists, string-keyed dicts and NumPy arrays.
    """
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    arrays: list[np.ndarray] = []
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "rnndsl_version": __version__,
        "cell": _cell_name(cell), "digest": str(getattr(cell, "digest", "")),
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
            ": it is a folder" if path.is_dir() else " (no such file)"))
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt, truncated or "
                              f"not an .npz: {type(exc).__name__}: {exc})") from None
    raw = arrays.pop("__header__", None)
    try:
        header = json.loads(raw.tobytes().decode()) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is an .npz but not an rnndsl checkpoint (no valid "
                              "header); write checkpoints with rnndsl.checkpoint.save")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by rnndsl {header.get('rnndsl_version')} "
                              f"in checkpoint format {header['format_version']}; this rnndsl "
                              f"({__version__}) reads format {FORMAT_VERSION}: upgrade rnndsl")
    try:
        for part in ("params", "optimizer", "meta"):
            header[part] = _unpack(header.get(part), arrays)
    except KeyError as exc:
        raise CheckpointError(f"{path} is corrupt: its header names array {exc} which the "
                              "file does not hold") from None
    return header, arrays


def peek(path: str | Path) -> CheckpointInfo:
    """What a checkpoint holds (cell, digest, dims, dtype, param shapes, meta), no cell."""
    header, _ = _read(path)
    optimizer = header["optimizer"]
    return CheckpointInfo(
        path=str(path), cell=header["cell"], digest=header["digest"],
        dims=dict(header["dims"]), dtype=header["dtype"],
        params={n: tuple(a.shape) for n, a in header["params"].items()},
        optimizer=optimizer.get("kind") if isinstance(optimizer, dict) else None,
        meta=header["meta"], rnndsl_version=header.get("rnndsl_version", "?"))


def _refuse_other_model(path, header: dict, cell) -> None:
    name, digest = _cell_name(cell), str(getattr(cell, "digest", ""))
    source = type(cell).spec.source.path
    if header["cell"] != name:
        raise CheckpointError(
            f"{path} holds a {header['cell']} cell (spec hash {header['digest']}), not a "
            f"{name}: load it into a cell built from the spec that {header['cell']} came "
            "from")
    if header["digest"] != digest:
        raise CheckpointError(
            f"{path} was saved from a different spec of {name}: expected spec hash "
            f"{digest} ({source}), found {header['digest']}. The spec text changed since "
            "the checkpoint was written; load it with the spec it was trained with (or "
            "retrain), since params of another spec would load but mean something else")
    if dict(header["dims"]) != dict(cell.dims):
        shown = ", ".join(f"{k}={v}" for k, v in header["dims"].items())
        ours = ", ".join(f"{k}={v}" for k, v in cell.dims.items())
        raise CheckpointError(f"{path} holds {name}({shown}); this cell is {name}({ours}): "
                              f"create the cell with {shown} to load it")
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
