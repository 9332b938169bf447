"""A cell's params in a common format: safetensors files, the spec in their metadata.

    from rnndsl.interop import safetensors as st
    st.save(cell, "lstm.safetensors")
    cell = st.load("lstm.safetensors")                 # the cell class rebuilt from the file
    st.load("lstm.safetensors", cell=other)            # into an existing cell, checked

Input: a bound cell (save), or a file and optionally a cell (load). Output: the file, or
the cell holding the file's params.

The file is a plain safetensors file (the `safetensors` package's NumPy API; the
optional extra `pip install 'rnndsl[safetensors]'`): one tensor a param, named as in the
spec (`W_hh`, a layer's `l1.W_i`), in the cell's dtype, readable by any safetensors
reader (torch, JAX, Rust). Its string metadata says what the params mean, as an rnndsl
checkpoint's header does (rnndsl.train.checkpoint): `format`, `rnndsl_version`, `cell`,
`digest`, `dims` and `dtype` (JSON), and `spec` (JSON: the text of the file defining the
cell and of every file it uses, the cell's canonical form and its hash:
`checkpoint.spec_record`).

Invariants:
- `load` refuses, with a `CheckpointError` naming what changed, a file of another cell,
  model (canonical form: comments and layout aside) or dims than the cell's, through the
  checkpoints' own check (`checkpoint.check_model`); nothing is changed unless all of it
  matches. A float64 file loads into a float32 cell and back: values are cast.
- A safetensors file that rnndsl did not write (no rnndsl metadata) loads into a cell
  given by the caller when its tensors are exactly the cell's params, by name and shape:
  weights from another tool. Without a cell such a file is refused (no spec to build one).
- Writes are atomic (core.files.write_atomically): the whole file in memory, a temporary
  file, a rename.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from ..cells.base import Cell
from ..core.errors import BindError
from ..core.files import write_atomically
from ..core.version import __version__
from ..train.checkpoint import CheckpointError, CheckpointInfo, cell_class, check_model, \
    spec_record

FORMAT = "rnndsl-params"
FORMAT_VERSION = 1


class SafetensorsError(CheckpointError):
    """A safetensors file is missing, unreadable, or not one rnndsl can load here."""


def save(cell: Cell, path: str | Path) -> None:
    """Write the cell's params to `path` as safetensors, the spec in the metadata."""
    if not _one_spec(cell):
        if hasattr(cell, "params") and hasattr(cell, "direction"):   # cells/directions.py
            raise BindError(f"save writes the params of one cell of one spec; this "
                            f"{type(cell).__name__} (direction={cell.direction!r}) holds "
                            "two sets: save its params with np.savez, or write the "
                            "directions in the spec (layer l = bidirectional ...), whose "
                            "network cells save")
        raise BindError(f"save needs a cell (an instance with params), got "
                        f"{type(cell).__name__}")
    cell._check_params()      # as a forward would: a wrong one makes a file load refuses
    path = Path(path)
    if path.is_dir():
        raise SafetensorsError(f"{path}: is a folder; name the file to write, like "
                               f"{path / 'params.safetensors'}")
    # np.ascontiguousarray would make a scalar param (shape ()) a vector (1,)
    tensors = {name: np.require(value, requirements="C") for name, value in cell.params.items()}
    metadata = {
        "format": FORMAT, "format_version": str(FORMAT_VERSION),
        "rnndsl_version": __version__, "cell": cell.spec.name,
        "digest": str(getattr(cell, "digest", "")),
        "dims": json.dumps(dict(cell.dims)), "dtype": np.dtype(cell.dtype).name,
        "spec": json.dumps(spec_record(type(cell))),
    }
    write_atomically(path, safetensors.numpy.save(tensors, metadata=metadata))


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and the metadata of a safetensors file, or a SafetensorsError."""
    path = Path(path)
    if not path.is_file():
        raise SafetensorsError(f"no safetensors file at {path}" + (
            ": it is a folder" if path.is_dir() else " (no such file)"))
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:     # the Rust reader raises its own SafetensorError type
        raise SafetensorsError(f"{path} is not a readable safetensors file (corrupt, "
                               f"truncated or another format: {exc})") from None
    return tensors, metadata


def peek(path: str | Path) -> CheckpointInfo | None:
    """What an rnndsl-written file holds (cell, dims, dtype, spec, param shapes), as a
    checkpoint's `CheckpointInfo`; None for a file without rnndsl's metadata."""
    tensors, metadata = read(path)
    return _info(path, tensors, metadata)


def _info(path, tensors: dict, metadata: dict) -> CheckpointInfo | None:
    if metadata.get("format") != FORMAT:
        return None
    if int(metadata.get("format_version", "0")) > FORMAT_VERSION:
        raise SafetensorsError(f"{path} was written by rnndsl "
                               f"{metadata.get('rnndsl_version')} in format version "
                               f"{metadata['format_version']}; this rnndsl ({__version__}) "
                               f"reads {FORMAT_VERSION}: upgrade rnndsl")
    try:
        dims = json.loads(metadata["dims"])
        spec = json.loads(metadata["spec"])
        cell, dtype = metadata["cell"], metadata["dtype"]
    except (KeyError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"{path} has damaged rnndsl metadata ({type(exc).__name__}: "
                               f"{exc}); load it into a cell of the right spec with "
                               "load(path, cell=...) after rewriting it") from None
    return CheckpointInfo(
        path=str(path), cell=cell, digest=metadata.get("digest", ""), dims=dict(dims),
        dtype=dtype, params={n: tuple(a.shape) for n, a in tensors.items()},
        optimizer=None, meta={}, rnndsl_version=metadata.get("rnndsl_version", "?"),
        spec=spec if isinstance(spec, dict) else None)


def load(path: str | Path, cell: Cell | None = None, target: str = "cpu") -> Cell:
    """The file's params in a cell: `cell` (its arrays written in place, so whoever holds
    them sees the new values), or, without one, a new cell of the class rebuilt from
    the spec the file carries, for `target`, with the file's dims and dtype."""
    tensors, metadata = read(path)
    info = _info(path, tensors, metadata)
    if cell is None:
        if info is None:
            raise SafetensorsError(f"{path} carries no rnndsl spec (it was not written by "
                                   "rnndsl.interop.safetensors.save): give the cell to load "
                                   "it into, load(path, cell=...)")
        cls = cell_class(info, target=target)
        cell = cls(dtype=np.dtype(info.dtype), seed=None, **info.dims)
    elif not _one_spec(cell):
        raise BindError(f"cell must be an rnndsl cell of one spec (an instance with params), "
                        f"got {type(cell).__name__}")
    elif info is not None:
        check_model(info, type(cell), cell.dims)
    _check_tensors(path, tensors, cell)
    for name, value in tensors.items():
        target_array = cell.params[name]
        if isinstance(target_array, np.ndarray) and target_array.flags.writeable:
            target_array[...] = value.astype(target_array.dtype)
        else:
            cell.params[name] = value.astype(cell.dtype)
    return cell


def _one_spec(cell) -> bool:
    """A cell of one spec class: a Cell, or a network of parts (cells/network.py: its
    params by the network's names, `l1.W_i_reverse`); not a two-way cell made by
    direction=, whose class is the one-way cell's."""
    from ..cells.network import NetworkCell
    return isinstance(cell, (Cell, NetworkCell))


def _check_tensors(path, tensors: dict[str, np.ndarray], cell: Cell) -> None:
    """The file's tensors are exactly the cell's params, by name and shape, and float."""
    expected = {n: tuple(np.shape(a)) for n, a in cell.params.items()}
    found = {n: tuple(a.shape) for n, a in tensors.items()}
    missing = sorted(set(expected) - set(found))
    unknown = sorted(set(found) - set(expected))
    if missing or unknown:
        raise SafetensorsError(
            f"{path} does not hold {cell.spec.name}'s params: "
            + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                        + ([f"not params of the cell: {', '.join(unknown)}"] if unknown
                           else [])))
    for name, shape in expected.items():
        if found[name] != shape:
            raise SafetensorsError(f"{path}: tensor {name} has shape {found[name]}; "
                                   f"{cell!r} needs {shape}")
        if not np.issubdtype(tensors[name].dtype, np.floating):
            raise SafetensorsError(f"{path}: tensor {name} is {tensors[name].dtype}; params "
                                   "are floating point")


__all__ = ["save", "load", "peek", "read", "SafetensorsError", "FORMAT"]
