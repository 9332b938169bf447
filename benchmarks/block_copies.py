"""Where a call split into row blocks copies its rows: on each block's thread (today:
cells.blocks._with_copies) or in the caller, one copy after the other, before and after
the blocks' kernels (before 2026-12-06's eighth session). The caller's way is put back
for the comparison by a stand-in for `_launch_jobs` that makes every block's copies on
the calling thread around the same kernel calls; the two ways alternate call by call in
one process, float32, and this prints the best and the median of each and their ratio.

    .venv/bin/python benchmarks/block_copies.py                  # bench.py's Elman, LSTM at small, mid
    .venv/bin/python benchmarks/block_copies.py elman:mid lstm:large

Rows: forward(x, grad=False), and forward then backward (the inputs' gradients too).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

import rnndsl
from rnndsl.cells import blocks, compiled

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ab_calls import alternating_s, best_median_cells  # noqa: E402
from bench import CELLS, SHAPES  # noqa: E402

CALLS = {"char": 300, "small": 150, "mid": 60, "large": 12}


def _in_the_caller(self, jobs):
    """The blocks' copies made here, one after the other; only the kernels on the
    blocks' threads (the old way)."""
    plain = []
    for function, args in jobs:
        if function is not blocks._with_copies:
            plain.append((function, args))
            continue
        driver, kernel_args, before, _ = args
        blocks._copy_pairs(before)
        plain.append((driver, kernel_args))
    _launch_jobs(self, plain)
    for function, args in jobs:
        if function is blocks._with_copies:
            blocks._copy_pairs(args[3])


_launch_jobs = compiled.CompiledCell._launch_jobs


@contextmanager
def _copies_in_the_caller():
    """The old way in place for the calls inside."""
    compiled.CompiledCell._launch_jobs = _in_the_caller
    try:
        yield
    finally:
        compiled.CompiledCell._launch_jobs = _launch_jobs


def main(argv: list[str]) -> int:
    cases = argv or [f"{c}:{s}" for c in ("elman", "lstm") for s in ("small", "mid")]
    print("| cell, shape | call | in the caller best / median ms | on the blocks' threads "
          "best / median ms | median ratio |")
    print("|---|---|---|---|---|")
    for case in cases:
        cell, shape = case.split(":")
        T, B, I, H = SHAPES[shape]
        dims = {"I": I, "H": H}
        c = rnndsl.load(CELLS[cell][0], target="cpu")(dtype=np.float32, seed=0, **dims)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        if len(c._row_blocks(B)) < 2:
            print(f"| {cell} {shape} | one row block here: nothing to compare | | | |")
            continue
        d = {k: rng.standard_normal(v.shape).astype(np.float32)
             for k, v in c.forward(x).outputs.items()}
        calls = {"forward": lambda: c.forward(x, grad=False),
                 "forward+backward": lambda: c.backward(c.forward(x), d)}
        for name, call in calls.items():
            times = alternating_s({"caller": _copies_in_the_caller, "blocks": nullcontext},
                                  call, CALLS[shape])
            print(f"| {cell} {shape} | {name} | "
                  f"{best_median_cells(times['caller'], times['blocks'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
