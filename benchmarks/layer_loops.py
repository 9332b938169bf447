"""One fused time loop, or a loop per layer? The main job's model both ways, side by side.

    .venv/bin/python benchmarks/layer_loops.py                  # the default shapes
    .venv/bin/python benchmarks/layer_loops.py --shapes 64,32,96,128 --repeat 30

rnndsl compiles a stacked cell (specs/char_lstm.rnn: two LSTM layers and a readout) into
one time loop: at each step layer 1, then layer 2, then the readout. cuDNN runs a loop
per layer instead, which lets each layer's input projection (W @ h1 for layer 2) leave
the loop as one GEMM over all T*B rows. rnndsl's compiled class of a stacked cell can
run either (cells/network.py's LayerLoops) and chooses at each call by a cost model
(`rnndsl explain` prints it); this times forward+BPTT of both, forced
(`cell.layer_loops = "fused"` / `"per_layer"`), interleaved, on the cpu target, with
token ids as input. Ratio: per-layer time / fused time (above 1: fused wins), and the
plan the cost model picks at that shape.
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
SHAPES = ["64,32,96,128", "64,8,96,128", "64,4,96,128", "64,1,96,128", "64,1,96,256",
          "100,1,65,128", "50,32,96,256"]


def runners(T: int, B: int, V: int, H: int):
    cell = rnndsl.load(REPO / "specs" / "char_lstm.rnn")(V=V, H=H)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (T, B))
    dy = rng.standard_normal((T, B, V)).astype(np.float32)

    def run(way: str):
        def call():
            cell.layer_loops = way
            cell.backward(cell.forward(ids), {"logits": dy}, input_grads=False)
        return call
    return run("fused"), run("per_layer")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="*", default=SHAPES,
                    help="T,B,V,H each (default: " + " ".join(SHAPES) + ")")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    from rnndsl.cells.network import layer_loops_choice
    print("| T, B, V, H | fused ms | per layer ms | per layer / fused | the cost model's "
          "choice |")
    print("|---|---|---|---|---|")
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
              f"{per_layer / fused:.2f} | {layer_loops_choice(T, B)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
