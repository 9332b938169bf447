"""One fused time loop, or a loop per layer? The main job's model both ways, side by side.

    .venv/bin/python benchmarks/layer_loops.py                  # the default shapes
    .venv/bin/python benchmarks/layer_loops.py --shapes 64,32,96,128 --repeat 30

rnndsl compiles a stacked cell (specs/char_lstm.rnn: two LSTM layers and a readout) into
one time loop: at each step layer 1, then layer 2, then the readout. cuDNN runs a loop
per layer instead, which lets each layer's input projection (W @ h1 for layer 2) leave
the loop as one GEMM over all T*B rows. This times forward+BPTT of both on the cpu
target: "fused" is rnndsl.load("specs/char_lstm.rnn"); "per layer" is the same model as
two cells run one after the other (layer 1 over the whole sequence, then layer 2 and the
readout, its input projection hoisted by the `hoist` pass), with the gradient of layer
2's input handed back to layer 1's backward. Both read token ids (a gather, not a GEMM
against one-hot rows). Ratio: per-layer time / fused time (above 1: fused wins).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import rnndsl

REPO = Path(__file__).resolve().parents[1]
LAYER1 = """use "lstm.rnn"
cell Layer1 {
  dims V, H
  input token x[V]
  layer l1 = LSTM(I = V, H = H)
  output h1 = l1(x)
}
"""
REST = """use "lstm.rnn"
cell Rest {
  dims V, H
  input h1[H]
  layer l2 = LSTM(I = H, H = H)
  param W_y[V, H], b_y[V]
  output logits = W_y @ l2(h1) + b_y
}
"""
SHAPES = ["64,32,96,128", "64,8,96,128", "64,1,96,128", "64,1,96,256", "100,1,65,128",
          "50,32,96,256"]


def runners(T: int, B: int, V: int, H: int):
    specs = str(REPO / "specs" / "x.rnn")        # `use` resolves from specs/
    fused = rnndsl.load(REPO / "specs" / "char_lstm.rnn")(V=V, H=H)
    first = rnndsl.load_text(LAYER1, path=specs)(V=V, H=H)
    rest = rnndsl.load_text(REST, path=specs)(V=V, H=H)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (T, B))
    dy = rng.standard_normal((T, B, V)).astype(np.float32)

    def run_fused():
        fused.backward(fused.forward(ids), {"logits": dy}, input_grads=False)

    def run_per_layer():
        r1 = first.forward(ids)
        r2 = rest.forward({"h1": r1.outputs["h1"]})
        g2 = rest.backward(r2, {"logits": dy})
        first.backward(r1, {"h1": g2.inputs["h1"]}, input_grads=False)
    return run_fused, run_per_layer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="*", default=SHAPES,
                    help="T,B,V,H each (default: " + " ".join(SHAPES) + ")")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    print("| T, B, V, H | fused ms | per layer ms | per layer / fused |")
    print("|---|---|---|---|")
    for shape in args.shapes:
        T, B, V, H = (int(v) for v in shape.split(","))
        fns = runners(T, B, V, H)
        for fn in fns:
            fn()                      # compile and warm up
        times: list[list[float]] = [[], []]
        for _ in range(args.repeat):  # interleaved, so that the machine's drift hits both
            for k, fn in enumerate(fns):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        fused, per_layer = (1000 * statistics.median(t) for t in times)
        print(f"| {T}, {B}, {V}, {H} | {fused:.2f} | {per_layer:.2f} | "
              f"{per_layer / fused:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
