"""Issue 3's compile targets: a spec's cold compile (under 5 s) and its warm load in a
new process (under 0.3 s), for the cpu target.

    .venv/bin/python benchmarks/compile_time.py [SPEC ...]     # default: lstm gru

Each measurement is a fresh process. "cold": empty rnndsl and Numba caches, then build,
load, and the first forward and backward (which is when Numba compiles them, float32).
"warm": the same again in a new process over the caches the cold run filled. Specs
after the first share Numba's cache of rnndsl.kernels.loops, as they do on a user's machine.

The backward kernel compiles in a second process beside the forward
(rnndsl.build.compile_ahead; RNNDSL_COMPILE_AHEAD=1 here, so that the load average of the
runs before does not decide). --one-process compiles both in the one process
(RNNDSL_COMPILE_AHEAD=0), to compare: run it with fresh caches too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys, time
t0 = time.perf_counter()
import numpy as np, rnndsl
t1 = time.perf_counter()
Cell = rnndsl.load(f"specs/{sys.argv[1]}.rnn", target="cpu")
cell = Cell(dtype=np.float32, **{d: 8 for d in Cell.spec.dims})
t2 = time.perf_counter()
x = {d.name: np.ones((3, 2, 8), np.float32) for d in Cell.spec.inputs}
run = cell.forward(x if len(x) > 1 else next(iter(x.values())))
t3 = time.perf_counter()
cell.backward(run, d_outputs={k: np.ones_like(v) for k, v in run.outputs.items()})
t4 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f} {t4 - t3:.2f}")
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Cold compile and warm load of specs/<SPEC>.rnn for the cpu target, "
                    "each in a fresh process (issue 3: under 5 s cold, 0.3 s warm).")
    ap.add_argument("specs", nargs="*", default=["lstm", "gru"], metavar="SPEC",
                    help="names of files in specs/, without .rnn (default: lstm gru)")
    ap.add_argument("--one-process", action="store_true",
                    help="compile the backward in the same process (RNNDSL_COMPILE_AHEAD=0)")
    args = ap.parse_args(argv)
    specs = args.specs
    missing = [s for s in specs if not (ROOT / "specs" / f"{s}.rnn").is_file()]
    if missing:
        known = " ".join(sorted(p.stem for p in (ROOT / "specs").glob("*.rnn")))
        ap.error(f"no specs/{missing[0]}.rnn; the specs: {known}")
    cache = Path(tempfile.mkdtemp(prefix="rnndsl-compile-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), RNNDSL_CACHE_DIR=str(cache / "rnndsl"),
               NUMBA_CACHE_DIR=str(cache / "numba"),
               RNNDSL_COMPILE_AHEAD="0" if args.one_process else "1")
    print(f"# backward compiled {'in the same process' if args.one_process else 'beside'}")
    print("| spec | run | import s | build + load s | first forward s | first backward s "
          "| total s |")
    print("|---|---|---|---|---|---|---|")
    for spec in specs:
        for label in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", CHILD, spec], cwd=ROOT, env=env,
                                 text=True, capture_output=True)
            if out.returncode:
                print(f"compile_time.py: {spec} ({label}) failed:\n{out.stderr[-3000:]}",
                      file=sys.stderr)
                return 1
            parts = [float(v) for v in out.stdout.split()]
            print(f"| {spec} | {label} | " + " | ".join(f"{v:.2f}" for v in parts)
                  + f" | {sum(parts):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
