"""The marks where the kernels' per-step GEMMs change ways, chosen for the machine they
run on: measured at first use and cached per CPU and BLAS, like the kernel cache.

Below MR rows of batch (the register tile's: 8 with AVX-512, 4 without;
rnndsl.kernels.tile_sizes) the register tiles step aside and a step's stacked GEMM,
(B, K) @ (K, N), goes to BLAS: one call on the stack, or one a member from the
`micro_split_product` (B * K * N), or back to the tiles, a row at a time, from the
`micro_tile_product` (B * K * n of one member), where BLAS's small-matrix kernel gives
up. Without the tiles (`--no-pass microkernel`) a stack runs member by member past the
`small_product` while its members stay under it. Where those cliffs fall is OpenBLAS's
own choice for the CPU it finds (its direct kernel, its packed path), so it differs from
machine to machine; the defaults (rnndsl.kernels.tile_sizes) were measured on one.

The kernels read the marks from their `consts` argument (codegen: `tuned`), so one
compiled kernel serves every machine. The first process on a machine that needs them
times the ways on a small grid of shapes (rnndsl.kernels.step_paths: about a second,
after a few seconds' compile the first time) and writes what it chose, with the timings
it chose from, to <cache>/machine/<cpu>-<hash>.json; every later process reads that
file. `rnndsl explain` prints the marks and where they came from.

RNNDSL_TUNING: unset or `auto` (the above), `default` (the built-in marks: the test
suite runs with these, so that which way a shape takes does not depend on the machine's
noise), `measure` (measure again now and rewrite the file).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import BindError
from ..core.files import write_atomically
from ..kernels.tile_sizes import MICRO_SPLIT_PRODUCT, MICRO_TILE_PRODUCT, MR, NR, SMALL_PRODUCT
from .cache import cache_dir

DEFAULTS = {"small_product": SMALL_PRODUCT, "micro_split_product": MICRO_SPLIT_PRODUCT,
            "micro_tile_product": MICRO_TILE_PRODUCT}
NEVER = 1 << 60         # a mark no product reaches: the way is never worth switching to
# Switching is charged 3% extra: where both ways tie within the timings' noise the mark
# would wander from run to run, and the way below it stays.
MARGIN = 0.03
RECORD_VERSION = 1

# (mark, the way below it, the way from it, members, (B, K) shapes; n = K): the grids
# span the defaults by a factor of 4 or more on each side
# (the two marks under MR rows time batches under the machine's MR: tile_sizes)
_UNDER_MR = (2, 4, 6) if MR >= 8 else (2, 3)
GRIDS = {
    "micro_split_product": ("one call", "by member", 4,
                            [(b, k) for b in _UNDER_MR for k in (64, 96, 128, 192, 256, 384)]),
    "micro_tile_product": ("by member", "tiles", 4,
                           [(b, k) for b in _UNDER_MR for k in (256, 384, 512, 768)]),
    "small_product": ("one call", "by member", 4,
                      [(b, k) for b in (8, 16, 32) for k in (32, 64, 96, 128)]),
}
# the product each mark is compared with: the stack's (B * K * N) or one member's
PER_MEMBER = {"micro_tile_product"}


@dataclass(frozen=True)
class Tuning:
    values: dict[str, int]
    source: str                       # how they were chosen, for `rnndsl explain`
    path: Path | None = None          # the cached record, if any
    timings: dict = field(default_factory=dict, compare=False)

    def describe(self) -> list[str]:
        """Lines for `rnndsl explain`."""
        v = self.values

        def mark(name: str) -> str:
            if v[name] >= NEVER:
                return "never"
            power = v[name].bit_length() - 1
            return f"{v[name]:,} (2^{power}{'' if v[name] == 1 << power else '+'})"
        return [f"per-step GEMMs under {MR} rows on this machine ({self.source}):",
                f"  one BLAS call, member by member from B*K*N >= "
                f"{mark('micro_split_product')},",
                f"  in the register tiles from B*K*n >= {mark('micro_tile_product')} "
                "(n: a member's width);",
                f"  without the tiles (--no-pass microkernel): member by member past "
                f"B*K*N > {mark('small_product')}"]


def machine_key() -> dict[str, str]:
    """What the marks depend on: the CPU (its model and the instruction set LLVM
    compiles for), the BLAS Numba calls (library, version, and the kernel it chose
    for this CPU: OPENBLAS_CORETYPE changes it) and the register tile's shape (the
    marks below MR rows are timed under it)."""
    from ..kernels.blas import _kernel_blas
    try:
        import llvmlite.binding as llvm
        llvm_cpu = llvm.get_host_cpu_name()
    except Exception:           # noqa: BLE001  (no llvmlite: the model name alone)
        llvm_cpu = "?"
    blas = ", ".join(f"{c.internal_api} {c.version} {getattr(c, 'architecture', '?')}"
                     for c in _kernel_blas()) or "none found"
    return {"cpu": cpu_model(), "llvm_cpu": llvm_cpu, "blas": blas,
            "machine": platform.machine(), "tiles": f"{MR}x{NR}"}


def cpu_model() -> str:
    """/proc/cpuinfo's "model name", else the platform's processor name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def record_path(key: dict[str, str]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", key["cpu"]).strip("-")[:40] or "cpu"
    return cache_dir() / "machine" / f"{slug}-{digest}.json"


def crossover(rows: list[tuple[int, float, float]]) -> int:
    """The mark that costs least over the grid: for each candidate (each measured
    product, or NEVER), every shape takes the way its product says, and its cost is its
    time over its best way's; the candidate with the smallest sum wins (on a tie, the
    larger mark: fewer shapes switch). A product alone does not decide the faster way
    (here (2 x 256) @ (256 x 1024) ran 1.7x faster member by member, (6 x 192) @ (192 x
    768), a larger product, 1.1x slower), so the mark weighs the gains against the
    losses (a switch charged MARGIN more). `rows`: (product, seconds the way below, seconds the way from the mark)."""
    rows = sorted(rows)
    best_mark, best_cost = NEVER, None
    for mark in [NEVER] + [product for product, _, _ in reversed(rows)]:
        cost = sum((switched * (1 + MARGIN) if product >= mark else below)
                   / min(below, switched) for product, below, switched in rows)
        if best_cost is None or cost < best_cost - 1e-12:
            best_mark, best_cost = mark, cost
    return best_mark


def measure(grids=None) -> tuple[dict[str, int], dict[str, list]]:
    """Time each mark's two ways on its grid (the BLAS held to one thread, as in the
    kernels); the marks and the timings, in microseconds a call."""
    from ..kernels.blas import hold_blas, release_blas
    from ..kernels.step_paths import StepOperands
    grids = GRIDS if grids is None else grids
    values, timings = {}, {}
    held = hold_blas(1)
    try:
        for name, (below, above, members, shapes) in grids.items():
            rows, shown = [], []
            for B, K in shapes:
                ops = StepOperands(B, K, K, members)
                calls = max(2, min(200, 4_000_000 // ops.product))
                t_below = ops.seconds(below, calls)
                t_above = ops.seconds(above, calls)
                product = B * K * K if name in PER_MEMBER else ops.product
                rows.append((product, t_below, t_above))
                shown.append([B, K, members * K, round(1e6 * t_below, 2),
                              round(1e6 * t_above, 2)])
            values[name] = crossover(rows)
            timings[name] = {"ways": [below, above], "B, K, N, us": shown}
    finally:
        release_blas(held)
    return values, timings


_LOCK = threading.Lock()
_CHOSEN: dict[str, Tuning] = {}


def tuning() -> Tuning:
    """This process's marks (RNNDSL_TUNING says how they are chosen; see above)."""
    how = os.environ.get("RNNDSL_TUNING", "").strip().lower() or "auto"
    found = _CHOSEN.get(how)
    if found is not None:
        return found
    with _LOCK:
        if how not in _CHOSEN:
            _CHOSEN[how] = _choose(how)
        return _CHOSEN[how]


def _choose(how: str) -> Tuning:
    if how == "default":
        return Tuning(dict(DEFAULTS), "the built-in marks, RNNDSL_TUNING=default")
    if how not in ("auto", "measure"):
        raise BindError(f"RNNDSL_TUNING must be auto, default or measure, got "
                        f"{os.environ.get('RNNDSL_TUNING')!r}")
    key = machine_key()
    path = record_path(key)
    if how == "auto":
        cached = _read(path, key)
        if cached is not None:
            return cached
    print(f"rnndsl: timing this machine's per-step GEMM paths, once (cached in {path})",
          file=sys.stderr, flush=True)
    try:
        values, timings = measure()
    except Exception as exc:       # noqa: BLE001  (a machine we cannot time: the defaults)
        return Tuning(dict(DEFAULTS), f"the built-in marks: timing failed ({exc})")
    when = datetime.datetime.now().isoformat(timespec="seconds")
    record = {"version": RECORD_VERSION, "key": key, "measured": when, "values": values,
              "timings": timings}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(record, indent=1).encode())
    except OSError:
        pass                        # a read-only cache: measured again next process
    return Tuning(values, f"measured on {key['cpu']} ({key['blas']}) at {when}", path,
                  timings)


def _read(path: Path, key: dict[str, str]) -> Tuning | None:
    try:
        record = json.loads(path.read_text())
        if record.get("version") != RECORD_VERSION or record.get("key") != key:
            return None
        values = {name: int(record["values"][name]) for name in DEFAULTS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None     # missing, unreadable, or not a record (`null`, a list): measure again
    return Tuning(values, f"measured on {key['cpu']} ({key['blas']}) at "
                          f"{record.get('measured', '?')}", path, record.get("timings", {}))
