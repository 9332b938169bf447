"""What a compiled call gains from more threads, and from splitting its batch rows.

    .venv/bin/python benchmarks/threads.py [--cells lstm,gru,elman] [--shapes small,mid,large]
    .venv/bin/python benchmarks/threads.py --busy 2     # beside two busy loops

For each cell and shape (DESIGN.md's, float32) it times forward and forward+BPTT (no
input gradients, as bench.py does) in three set-ups, each in a fresh process:

    1 thread      RNNDSL_BLAS_THREADS=1
    one block     RNNDSL_BLAS_THREADS=all, RNNDSL_ROW_BLOCKS=0: one kernel call, its
                  GEMMs split among Numba's threads (rnndsl.kernels.gemm)
    row blocks    RNNDSL_BLAS_THREADS=all: each thread runs the whole time loop on its
                  own block of batch rows (runtime.CompiledCell._row_blocks)

With RNNDSL_BLAS_THREADS unset, a call runs row blocks on every core where the batch
has 8 rows a core, and one thread otherwise: "row blocks" at the small, mid and large
shapes, "1 thread" at the char one.

--busy N runs N processes of a busy Python loop for the whole measurement: a machine
whose cores are taken by other work, which is where thread pools that spin lose.

The set-ups take turns, --rounds times, so that a noisy spell on a shared machine hits
all of them; each cell of the table is the best (min) and the median over every call
of every round. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset, as in bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import CELLS, SHAPES

SETUPS = {
    "1 thread": {"RNNDSL_BLAS_THREADS": "1"},
    "one block": {"RNNDSL_BLAS_THREADS": "all", "RNNDSL_ROW_BLOCKS": "0"},
    "row blocks": {"RNNDSL_BLAS_THREADS": "all", "RNNDSL_ROW_BLOCKS": "1"},
}

CHILD = """
import json, sys, time
import numpy as np
import rnndsl
spec, T, B, I, H, calls = sys.argv[1], *map(int, sys.argv[2:7])
Cell = rnndsl.load(spec, target="cpu")
cell = Cell(dtype=np.float32, seed=0, **{d: I if d == "I" else H for d in Cell.spec.dims})
x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
blocks = len(cell.forward(x)._tape.blocks)

def forward():
    cell.forward(x)

def forward_bptt():
    run = cell.forward(x)
    cell.backward(run, d_outputs={k: np.ones_like(v) for k, v in run.outputs.items()},
                  input_grads=False)

times = {}
for name, f in (("fwd", forward), ("fwd+bwd", forward_bptt)):
    f(); f()
    times[name] = []
    for _ in range(calls):
        t = time.perf_counter(); f(); times[name].append(time.perf_counter() - t)
print(json.dumps({"blocks": blocks, "times": times}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="lstm,gru,elman")
    ap.add_argument("--shapes", default="small,mid,large")
    ap.add_argument("--rounds", type=int, default=3, help="turns each set-up takes (3)")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="keep N other processes busy while measuring (0)")
    args = ap.parse_args(argv)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    try:
        return _measure(args)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _measure(args) -> int:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["PYTHONPATH"] = str(ROOT)
    print(f"# {os.cpu_count()} cores; {args.busy} busy processes beside; float32; ms, "
          f"best / median over {args.rounds} rounds")
    print("| cell | shape | pass | " + " | ".join(SETUPS) + " | row blocks vs one block |")
    print("|---|---|---|" + "---|" * (len(SETUPS) + 1))
    for cell in args.cells.split(","):
        for shape in args.shapes.split(","):
            T, B, I, H = SHAPES[shape]
            calls = 6 if shape == "large" else 20
            got = {s: {"fwd": [], "fwd+bwd": []} for s in SETUPS}
            blocks = {}
            for _ in range(args.rounds):
                for setup, extra in SETUPS.items():
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, str(CELLS[cell][0]), str(T), str(B),
                         str(I), str(H), str(calls)], cwd=ROOT, env={**env, **extra},
                        text=True, capture_output=True, check=False)
                    if out.returncode:
                        print(out.stderr[-3000:], file=sys.stderr)
                        return 1
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    blocks[setup] = result["blocks"]
                    for name, ts in result["times"].items():
                        got[setup][name] += ts
            for name in ("fwd", "fwd+bwd"):
                cells = [f"{1e3 * min(got[s][name]):.2f} / "
                         f"{1e3 * float(np.median(got[s][name])):.2f}" for s in SETUPS]
                gain = np.median(got["one block"][name]) / np.median(got["row blocks"][name])
                print(f"| {cell} | {shape} (B={B}, {blocks['row blocks']} blocks) | {name} | "
                      + " | ".join(cells) + f" | {gain:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
