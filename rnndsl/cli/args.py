"""Argument types and checks shared by the command line's subcommands.

Each type turns one option's text into a value or refuses it with a message that names
the option's rule; argparse then prints `rnndsl CMD: error: argument --steps: ...` and
exits with status 2 before any work starts. Checks that involve several options (or a
file's content) raise `UsageError`, also status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from ..core.errors import RnnError


class UsageError(RnnError):
    """Bad arguments that argparse could not catch."""


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _bounded(kind, low, strict: bool):
    """A parser of `kind` (int or a finite float) that is above `low` (strict) or at
    least `low`, refusing others with the rule it broke."""
    def parse(text: str):
        value = _number(text, kind)
        if value < low or (strict and value == low):
            shown = value if kind is int else text
            rule = "above" if strict else "at least"
            raise argparse.ArgumentTypeError(f"must be {rule} {low:g}, got {shown}")
        return value
    parse.__name__ = f"{'integer' if kind is int else 'number'} {'>' if strict else '>='} {low:g}"
    return parse


def at_least(low: int):
    """An int >= low."""
    return _bounded(int, low, strict=False)


def above(low: float):
    """A finite float > low."""
    return _bounded(float, low, strict=True)


def at_least_float(low: float):
    """A finite float >= low."""
    return _bounded(float, low, strict=False)


def fraction_open(text: str) -> float:
    """A float strictly between 0 and 1."""
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def fraction_closed(text: str) -> float:
    """A float from 0 to 1, both included."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def probability(text: str) -> float:
    """A float in (0, 1]."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text}")
    return value


def temperatures(text: str) -> list[float]:
    """Comma-separated temperatures, each above 0 (greedy decoding is `sample --greedy`)."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"expected temperatures separated by commas, like "
                                         f"0.5,1.0; got {text!r}")
    values = []
    for p in parts:
        value = _number(p, float)
        if not value > 0:
            raise argparse.ArgumentTypeError(
                f"each temperature must be above 0, got {p} (for the likeliest token at "
                "every step use: rnndsl sample CHECKPOINT --greedy)")
        values.append(value)
    return values


MAX_DIM = 2 ** 31 - 1       # the largest size --dims takes


def dims(text: str) -> dict[str, int]:
    """NAME=SIZE pairs separated by commas, each size a positive integer."""
    out: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise argparse.ArgumentTypeError(f"takes NAME=SIZE pairs separated by commas, "
                                             f"like H=8,I=4; got {part.strip()!r}")
        if not name.isidentifier():
            raise argparse.ArgumentTypeError(f"{name!r} is not a dim name")
        if not value.lstrip("+-").isdigit():
            raise argparse.ArgumentTypeError(f"{name}={value}: the size must be an integer")
        if int(value) < 1:
            raise argparse.ArgumentTypeError(f"{name}={value}: a size must be at least 1")
        if int(value) > MAX_DIM:           # past it, arrays fail inside NumPy
            raise argparse.ArgumentTypeError(f"{name}={value}: a size must be at most "
                                             f"{MAX_DIM:,}")
        if name in out:
            raise argparse.ArgumentTypeError(f"{name} is given twice")
        out[name] = int(value)
    return out


def parse_dims(text: str | None) -> dict[str, int]:
    """`dims` for a value that may be None or come from outside argparse."""
    if not text:
        return {}
    try:
        return dims(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"--dims {exc}") from None


def set_threads(count: int | None) -> None:
    """`--threads N`: the kernels' threads for this process (RNNDSL_BLAS_THREADS, read
    at each kernel call; rnndsl.kernels.blas)."""
    if count is not None:
        os.environ["RNNDSL_BLAS_THREADS"] = str(count)


def writable_file(option: str, value: str | None, error=UsageError) -> None:
    """An output path whose folder exists, can be written in, and that is not a folder
    itself (None: the option was not given; "-": standard output); else `error` naming
    the option. The folder is tried by making a file there and removing it: a folder
    that refuses (read-only, immutable, another owner's) was found out only when the
    output was written, after training, and the model was lost."""
    if value is None or value == "-":
        return
    path = Path(value)
    if path.is_dir():
        raise error(f"{option} {value}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise error(f"{option} {value}: the folder {path.parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rnndsl-probe.", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{option} {value}: cannot write in the folder {path.parent} "
                    f"({exc.strerror})") from None
