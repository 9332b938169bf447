"""A `final` output computed once after the loop, or at every step? A classifier both ways.

    .venv/bin/python benchmarks/final_at_end.py                   # the default shapes
    .venv/bin/python benchmarks/final_at_end.py --shapes 100,32,64,256,10 --repeat 30

A many-to-one cell reads one output a sequence: `final logits = V @ h' + c`. With the
schedule's `final_at_end` pass (on by default, cpu target) the forward kernel computes
it once, after its time loop, from the final states (B rows); without it, at every
step (T*B rows) and the runtime keeps each sequence's last. This times the cpu
target's forward and forward+BPTT of the Classifier below both ways
(`rnndsl.load_text(..., no_passes=["final_at_end"])`), interleaved call by call, and
prints the medians and off/on (above 1: computing it once wins), with `lscpu`'s model.
Shapes are T, B, I, H, K.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import rnndsl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_calls import ab_cells, interleaved_ms  # noqa: E402
from train_bench import cpu_name  # noqa: E402  lscpu's model name, as the other benchmarks

SPEC = """
cell Classifier {
  dims I, H, K
  input x[I]
  state h[H]
  param W[H, I], U[H, H], V[K, H], c[K]
  h' = tanh(W @ x + U @ h)
  final logits = V @ h' + c
}
"""
SHAPES = ["100,32,64,256,10", "100,32,64,256,1000", "100,4,64,128,1000", "50,8,32,64,10"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=SHAPES, help="T,B,I,H,K each")
    ap.add_argument("--repeat", type=int, default=40, help="calls timed per case and way")
    args = ap.parse_args(argv)
    on = rnndsl.load_text(SPEC, path="benchmarks/classifier.rnn")
    off = rnndsl.load_text(SPEC, path="benchmarks/classifier.rnn", no_passes=["final_at_end"])
    assert on.meta.get("at_end") == ("logits",) and not off.meta.get("at_end")
    print(f"CPU: {cpu_name()}; cpu target, float32, medians of {args.repeat} calls, "
          "the two ways interleaved")
    print("| T, B, I, H, K | forward on ms | off ms | off/on | forward+BPTT on ms | off ms "
          "| off/on |")
    print("|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        T, B, I, H, K = (int(v) for v in shape.split(","))
        cells = {way: cls(I=I, H=H, K=K, seed=0) for way, cls in (("on", on), ("off", off))}
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        d = {"logits": rng.standard_normal((B, K)).astype(np.float32)}
        ms = interleaved_ms(cells, x, d, args.repeat)
        print(f"| {T}, {B}, {I}, {H}, {K} | {ab_cells(ms)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
