"""What writing the tapes costs a compiled forward: the case for rematerialisation.

    .venv/bin/python benchmarks/tape_cost.py [SPEC] [--shape mid]

It builds SPEC's cpu kernels twice, the second time with every store to a tape in the
forward kernel removed (its outputs and final states are still computed; the backward
would read garbage, so only the forward is timed), and times the forward of each in a
fresh process, float32, one thread (RNNDSL_BLAS_THREADS=1), best and median of 30.
Default: specs/layernorm_lstm.rnn, which saves 20 values a step for BPTT.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import SHAPES

CHILD = r"""
import importlib, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
module = importlib.import_module(sys.argv[2])
T, B, I, H = map(int, sys.argv[3:7])
Cell = getattr(module, module.CELLS[0])
cell = Cell(dtype=np.float32, seed=0, **{d: I if d == "I" else H for d in Cell.spec.dims})
x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
cell.forward(x[:2, :2])
times = []
for _ in range(30):
    t = time.perf_counter(); cell.forward(x); times.append(time.perf_counter() - t)
print(f"{1e3 * min(times):.2f} / {1e3 * float(np.median(times)):.2f}")
"""


def without_tape_stores(source: str) -> tuple[str, int]:
    """The module with the forward kernel's `tape_i[t, r, ...] = e_i` lines (`tape38`,
    `e38` where the spec names no value) made `pass`."""
    head, rest = source.split("\ndef backward_", 1)
    head, count = re.subn(r"\n( +)tape\w+\[t, r, (?:j|0)\] = e\w+\n", r"\n\1pass\n", head)
    return head + "\ndef backward_" + rest, count


def main(argv=None) -> int:
    from rnndsl.build.modules import build_source
    from rnndsl.lang.specfile import read_spec
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "layernorm_lstm.rnn"),
                    help="a .rnn file with one input sequence (default: the "
                         "layer-normalised LSTM)")
    ap.add_argument("--shape", default="mid", choices=sorted(SHAPES))
    args = ap.parse_args(argv)
    source = build_source(read_spec(args.spec))
    stripped, count = without_tape_stores(source)
    folder = Path(tempfile.mkdtemp(prefix="rnndsl-tapes-"))
    (folder / "with_tapes.py").write_text(source)
    (folder / "without_tapes.py").write_text(stripped)
    T, B, I, H = SHAPES[args.shape]
    env = dict(os.environ, PYTHONPATH=str(ROOT), RNNDSL_BLAS_THREADS="1",
               NUMBA_CACHE_DIR=str(folder / "numba"))
    print(f"{Path(args.spec).name}, {args.shape} (T={T}, B={B}, I={I}, H={H}), float32, "
          f"one thread: the forward, ms best / median of 30; {count} tape stores removed")
    print("| forward | ms |")
    print("|---|---|")
    for name in ("with_tapes", "without_tapes"):
        out = subprocess.run([sys.executable, "-c", CHILD, str(folder), name,
                              str(T), str(B), str(I), str(H)],
                             capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        print(f"| {name.replace('_', ' ')} | {out.stdout.strip().splitlines()[-1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
