"""One row of batch (B = 1: a sampling step, a char model's forward): the kernels as they
are, against kernels built with the copies one row used to make (each step's stacked
weights transposed into a copy at every call, and a token's W^T too), alternating call
by call in one process. The old way is rebuilt by switching the cpu dialect's
`row_gemvs` and `token_columns` off for one compile of the same spec (a comment added to
its text, so that it gets a module of its own).

    .venv/bin/python benchmarks/one_row.py
    .venv/bin/python benchmarks/one_row.py --steps 1,10,100 --calls 300
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rnndsl  # noqa: E402
from ab_calls import alternating_s  # noqa: E402
from rnndsl.codegen import emit  # noqa: E402

CELLS = [("specs/elman.rnn", {"I": 65, "H": 128, "O": 128}, False),
         ("specs/lstm.rnn", {"I": 65, "H": 128}, False),
         ("specs/char_lstm.rnn", {"V": 163, "H": 128}, True)]


@contextlib.contextmanager
def _old_kernels():
    """The cpu dialect as it was: no per-member GEMVs for one row, no column gathers."""
    flags = {"row_gemvs": emit.CPU.row_gemvs, "token_columns": emit.CPU.token_columns}
    for name in flags:
        object.__setattr__(emit.CPU, name, False)    # a frozen dataclass: for this build
    try:
        yield
    finally:
        for name, value in flags.items():
            object.__setattr__(emit.CPU, name, value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="1,100", help="T of the calls, comma-separated")
    ap.add_argument("--calls", type=int, default=300, help="calls of each way")
    args = ap.parse_args()
    print("| cell | T | old us (median) | new us (median) | old / new |")
    print("|---|---|---|---|---|")
    for spec, dims, token in CELLS:
        path = str(HERE.parent / spec)
        text = Path(path).read_text()
        with _old_kernels():
            Old = rnndsl.load_text(text + f"\n# old kernels {uuid.uuid4().hex}\n", path=path)
        New = rnndsl.load(path)
        old, new = (C(**dims, dtype=np.float32, seed=0) for C in (Old, New))
        for T in (int(t) for t in args.steps.split(",")):
            rng = np.random.default_rng(0)
            x = (rng.integers(0, dims.get("V", 1), (T, 1)) if token else
                 rng.standard_normal((T, 1, dims["I"])).astype(np.float32))
            a, b = old.forward(x, grad=False), new.forward(x, grad=False)
            for name in a.outputs:
                np.testing.assert_allclose(a.outputs[name], b.outputs[name], atol=1e-5)
            current = {}
            ways = {way: (lambda c=cell: contextlib.nullcontext(current.update(cell=c)))
                    for way, cell in (("old", old), ("new", new))}
            times = alternating_s(ways, lambda: current["cell"].forward(x, grad=False),
                                  args.calls)
            mo, mn = (statistics.median(times[w]) for w in ("old", "new"))
            print(f"| {Path(spec).stem} | {T} | {1e6 * mo:.1f} | {1e6 * mn:.1f} | "
                  f"{mo / mn:.2f} |", flush=True)


if __name__ == "__main__":
    main()
