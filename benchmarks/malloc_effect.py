"""What rnndsl/malloc.py buys: forward times with glibc's malloc tuned and as it comes.

    .venv/bin/python benchmarks/malloc_effect.py [--runs 3]

Each configuration runs in its own process (the setting is process-wide and cannot be
undone), alternating, with one BLAS thread and the machine's OPENBLAS_CORETYPE unset as
bench.py does: LSTM and layer-normalised LSTM forward at the benchmark's small shape
(T=100, B=16, I=64, H=128) and at T=1, float32, median of 15 calls, milliseconds; and,
with no cell involved, allocating and filling 29 arrays of 100x16x128 float32 (the
layer-normalised LSTM's tapes at that shape).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import time, numpy as np, rnndsl
def median_ms(f, n=15):
    f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2] * 1e3
def allocate_and_fill():
    arrays = [np.empty((100, 16, 128), np.float32) for _ in range(29)]
    for a in arrays:
        a[:] = 1
if __import__("os").environ.get("RNNDSL_MALLOC") != "system":
    import rnndsl.kernels.malloc
    rnndsl.kernels.malloc.keep_freed_memory()
print("29-arrays", 0, median_ms(allocate_and_fill))
for spec in ("lstm", "layernorm_lstm"):
    cell = rnndsl.load(f"specs/{spec}.rnn", target="cpu")(I=64, H=128, dtype=np.float32)
    for T in (1, 100):
        x = np.random.default_rng(0).normal(size=(T, 16, 64)).astype(np.float32)
        print(spec, T, median_ms(lambda: cell.forward(x)))
"""


def run(malloc: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "RNNDSL_MALLOC")}
    env.update(RNNDSL_BLAS_THREADS="1", PYTHONPATH=str(ROOT))
    if malloc == "system":
        env["RNNDSL_MALLOC"] = "system"
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, text=True,
                         capture_output=True, check=True)
    rows = {}
    for line in out.stdout.splitlines():
        spec, T, ms = line.split()
        rows[(spec, int(T))] = float(ms)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    results: dict[str, list[dict]] = {"system": [], "tuned": []}
    for _ in range(args.runs):
        for malloc in results:
            results[malloc].append(run(malloc))
    print("| cell | T | malloc as it comes, ms | tuned (rnndsl/malloc.py), ms |")
    print("|---|---|---|---|")
    for key in results["system"][0]:
        cols = []
        for malloc in ("system", "tuned"):
            values = sorted(r[key] for r in results[malloc])
            cols.append(" / ".join(f"{v:.2f}" for v in values))
        print(f"| {key[0]} | {key[1]} | {cols[0]} | {cols[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
