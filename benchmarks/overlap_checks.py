"""What rnndsl.kernels.loops.kernel_jit's raised limit on LLVM's run-time overlap checks buys.

    .venv/bin/python benchmarks/overlap_checks.py [SPEC]

It takes the first fused elementwise loop of the backward time loop of SPEC's cpu
kernels (default: specs/layernorm_lstm.rnn, whose loop touches 43 arrays), compiles it
as a function of its own with LLVM's default limit (128 checks) and with kernel_jit's,
each in a fresh process, and prints the microseconds per time step at B = 32 and every
dim 256, float32, one thread, with LLVM's own verdict on the loop (its loop-vectorize
remarks).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import os, sys, time
import numpy as np
import llvmlite.binding as llvm
llvm.set_option("", f"-vectorize-memory-check-threshold={sys.argv[2]}")
llvm.set_option("", "-pass-remarks=loop-vectorize")
llvm.set_option("", "-pass-remarks-missed=loop-vectorize")
llvm.set_option("", "-pass-remarks-analysis=loop-vectorize")
from numba import njit
namespace = {}
exec(open(sys.argv[1]).read(), namespace)
loop, shapes = namespace["loop"], namespace["SHAPES"]
rng = np.random.default_rng(0)
args = [np.float32(0.5) if s == () else rng.uniform(0.5, 1, s).astype(np.float32)
        for s in shapes]
fn = njit(error_model="numpy")(loop)
fn(1, *args)
t0 = time.perf_counter()
for _ in range(2000):
    fn(1, *args)
print(f"{(time.perf_counter() - t0) / 2000 * 1e6:.1f}", flush=True)
"""

ROWS, COLS, STEPS = 32, 256, 4


def first_backward_loop(source: str) -> tuple[str, list[str], list[tuple]]:
    """The loop's text, the names it reads from outside, and their shapes."""
    lines = source[source.index("def backward_"):].split("\n")
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("    for t in range(T - 1")) + 1
    assert lines[start].startswith("        for r in range(B):"), lines[start]
    end = start + 1
    while lines[end].startswith("            "):
        end += 1
    body = "\n".join(line[8:] for line in lines[start:end])
    tree = ast.parse(body)
    stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
              and isinstance(n.ctx, ast.Store)}
    names = sorted(n for n in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
                   - stored - {"r", "j", "t", "B", "range", "sigmoid", "tanh", "math"}
                   if not n.startswith("dim_"))     # the sizes are set below
    shapes = []
    for name in names:
        m = re.search(rf"\b{name}\[([^\]]*)\]", body)
        extent = {"t": STEPS, "r": ROWS, "j": COLS, "0": 1}
        shapes.append(() if m is None else
                      tuple(extent.get(i.strip().split()[0], COLS)
                            for i in m.group(1).split(",")))
    return body, names, shapes


def main(argv=None) -> int:
    from rnndsl.build.modules import build_source
    from rnndsl.kernels.loops import _ALIAS_CHECKS, _LLVM_DEFAULT_ALIAS_CHECKS
    from rnndsl.lang.specfile import read_spec
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "layernorm_lstm.rnn"),
                    help="a .rnn file (default: specs/layernorm_lstm.rnn)")
    args = ap.parse_args(argv)
    body, names, shapes = first_backward_loop(build_source(read_spec(args.spec)))
    code = ("from rnndsl.kernels.loops import sigmoid, tanh\nimport math\n"
            f"SHAPES = {shapes!r}\n"
            f"B = {ROWS}\n"
            + "".join(f"{d} = {COLS}\n" for d in sorted(set(re.findall(r"\bdim_\w+", body))))
            + f"def loop(t, {', '.join(names)}):\n"
            + "\n".join("    " + line for line in body.split("\n")) + "\n")
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "rnndsl_overlap_loop.py"
    path.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    shown = os.path.relpath(args.spec, ROOT) if Path(args.spec).is_absolute() else args.spec
    print(f"{shown}: the backward's first fused loop, {len(names)} arrays and "
          f"scalars, {body.count(' = ')} assignments; B={ROWS}, dims {COLS}, float32")
    print("| overlap-check limit | us a step | LLVM says |")
    print("|---|---|---|")
    for limit in (_LLVM_DEFAULT_ALIAS_CHECKS, _ALIAS_CHECKS):
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(limit)],
                             check=False, capture_output=True, text=True, env=env,
                             cwd=ROOT)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        said = sorted({m.split("remark: <unknown>:0:0: ")[-1]
                       for m in out.stderr.splitlines() if "remark:" in m})
        print(f"| {limit} | {out.stdout.strip()} | {'; '.join(said)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
