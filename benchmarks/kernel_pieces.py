"""Where a compiled forward's time goes: the generated inference kernel of a cell, run on
one block of rows on one thread, whole and with one piece taken out at a time; each
piece's cost is the difference. Pieces: the GEMMs hoisted over all T*B rows (out: their
results left at zero), the per-step GEMMs in the register tiles (out: skipped), the
fused elementwise loops of the time loop (out: removed). The rest is what stays: the
packing of the weights, the copies of the state, the call from Python.

    .venv/bin/python benchmarks/kernel_pieces.py                       # LSTM, mid shape
    .venv/bin/python benchmarks/kernel_pieces.py --spec specs/elman.rnn --shape large

It edits the text of the kernel module rnndsl built (its cache) and compiles the edited
kernels apart: nothing of the cache changes. One thread (RNNDSL_BLAS_THREADS=1), the
batch of one row block: bench.py's B over the threads a call would use (2).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

os.environ["RNNDSL_BLAS_THREADS"] = "1"

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rnndsl  # noqa: E402
from bench import SHAPES  # noqa: E402


def _function_text(source: str, name: str) -> str:
    """The decorated function `name` of a generated module, up to the next one."""
    start = source.index(f"def {name}(")
    start = source.rindex("\n@", 0, start) + 1
    end = source.find("\n@", start + 1)
    return source[start:end if end >= 0 else len(source)]


def _without_loops(text: str) -> str:
    """The text less the elementwise loop nests inside the time loop (a `for r in
    range(B):` at the time loop's body's depth, with everything under it)."""
    lines, out, skipping = text.split("\n"), [], None
    for line in lines:
        depth = len(line) - len(line.lstrip())
        if skipping is not None:
            if line.strip() and depth <= skipping:
                skipping = None
            else:
                continue
        if line.strip().startswith("for r in range(B):") and depth == 8:
            skipping = depth
            continue
        out.append(line)
    return "\n".join(out)


def variants(text: str) -> dict[str, str]:
    hoisted = re.sub(r"parallel_dot\((\w+), (\w+), (\w+), threads\)", r"\3[:] = 0", text)
    step = re.sub(r"packed_gemm\((\w+), (\w+), (\w+), threads\)", "pass", text)
    return {"whole": text, "no hoisted GEMMs": hoisted, "no per-step GEMMs": step,
            "no elementwise loops": _without_loops(text)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="specs/lstm.rnn")
    ap.add_argument("--shape", default="mid", choices=list(SHAPES))
    ap.add_argument("--threads", type=int, default=2, help="the threads a call would use: "
                    "one block is B / threads rows")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    T, B, I, H = SHAPES[args.shape]
    B = max(1, B // args.threads)
    Cell = rnndsl.load(HERE.parent / args.spec)
    dims = {"I": I, "H": H, "O": H, "V": I}
    cell = Cell(**{d: dims[d] for d in Cell.spec.dims}, dtype=np.float32, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    kernel = Cell.meta["forward_inference"]
    module = sys.modules[kernel.py_func.__module__]
    source = Path(module.__file__).read_text()
    name = kernel.py_func.__name__
    head = source[:source.index("\n# ----")]
    kernels = {}
    for label, text in variants(_function_text(source, name)).items():
        namespace: dict = {}
        exec(compile(head + "\n" + text.replace("cache=True", "cache=False"),
                     f"<{label}>", "exec"), namespace)
        kernels[label] = namespace[name]
    times: dict = {label: [] for label in kernels}
    try:
        for k in kernels.values():        # compile each first
            Cell.meta["forward_inference"] = k
            cell.forward(x, grad=False)
        for _ in range(args.rounds):
            for label, k in kernels.items():
                Cell.meta["forward_inference"] = k
                for _ in range(10):
                    t0 = time.perf_counter()
                    cell.forward(x, grad=False)
                    times[label].append(time.perf_counter() - t0)
    finally:
        Cell.meta["forward_inference"] = kernel
    best = {label: min(v) for label, v in times.items()}
    whole = best["whole"]
    print(f"{Cell.spec.name}, T={T} B={B} (one block of {args.shape}'s {B * args.threads}) "
          f"I={I} H={H}, float32, one thread; best of {10 * args.rounds} calls each\n")
    print("| kernel | ms | the piece taken out, ms | share |")
    print("|---|---|---|---|")
    print(f"| whole | {1e3 * whole:.3f} | | |")
    rest = whole
    for label, t in best.items():
        if label != "whole":
            rest -= whole - t
            print(f"| {label} | {1e3 * t:.3f} | {1e3 * (whole - t):.3f} | "
                  f"{(whole - t) / whole:.0%} |")
    print(f"| the rest (packing, copies, the call) | | {1e3 * rest:.3f} | {rest / whole:.0%} |")


if __name__ == "__main__":
    main()
