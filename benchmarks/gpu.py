"""rnndsl's cuda target against its CPU target (correctness) and cuDNN (speed), on a GPU.

    python benchmarks/gpu.py                          # LSTM and GRU, every shape
    python benchmarks/gpu.py --cells lstm --shapes b64_h512 --repeat 20
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu.py --tiny   # the harness itself, no GPU

For each cell and shape (T, B, I, H) it first checks the cuda target against the cpu
target on the same params and inputs (outputs and every gradient, float32, max relative
error), then times, as the median of --repeat runs after a warm-up, with every array on
the device (params too) and a device synchronise around each run:
  rnndsl-cuda   forward, and forward + BPTT
  cudnn         torch.nn.LSTM / torch.nn.GRU on CUDA (cuDNN), when PyTorch with CUDA is
                installed; its GRU is the form of specs/gru.rnn (reset after the matmul)
and prints cuDNN-time / rnndsl-time (above 1: rnndsl is faster). The CPU check runs at
--check-T steps (default 4) so that it stays quick at large B and H. `--json PATH`
writes the rows. `--tiny` runs one tiny shape, for the test that keeps this file working.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import rnndsl

CELLS = {"lstm": ("specs/lstm.rnn", "LSTM"), "gru": ("specs/gru.rnn", "GRU")}
SHAPES = {                              # (T, B, I, H)
    "b64_h512": (100, 64, 512, 512),
    "b128_h512": (200, 128, 512, 512),
    "b256_h512": (500, 256, 512, 512),
    "b64_h1024": (100, 64, 1024, 1024),
    "b256_h1024": (200, 256, 1024, 1024),
    # a small batch, where the hold_weights pass keeps the recurrent weights on chip
    # (blocks x B <= N: B <= 6 forward, B = 1 backward, for the LSTM at H = 512)
    "b4_h512": (100, 4, 512, 512),
}
TINY = {"tiny": (3, 2, 3, 4)}


def _rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def check_against_cpu(spec: str, T: int, B: int, I: int, H: int) -> float:
    """Max relative error of cuda against cpu over outputs, final states and gradients."""
    Cpu = rnndsl.load(ROOT / spec, target="cpu")
    Cuda = rnndsl.load(ROOT / spec, target="cuda")
    cpu, gpu = Cpu(I=I, H=H, seed=0), Cuda(I=I, H=H, seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    a, b = cpu.forward(x), gpu.forward(x)
    dy = rng.normal(size=a.outputs["h"].shape).astype(np.float32)
    ga, gb = cpu.backward(a, d_outputs={"h": dy}), gpu.backward(b, d_outputs={"h": dy})
    errs = [_rel(b.outputs["h"], a.outputs["h"])]
    errs += [_rel(b.state[k], a.state[k]) for k in a.state]
    errs += [_rel(gb.params[k], ga.params[k]) for k in ga.params]
    errs += [_rel(gb.inputs[k], ga.inputs[k]) for k in ga.inputs]
    return max(errs)


def _median_ms(fn, repeat: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_rnndsl(spec: str, T, B, I, H, repeat: int) -> tuple[float, float]:
    from numba import cuda
    Cell = rnndsl.load(ROOT / spec, target="cuda")
    cell = Cell(I=I, H=H, seed=0)
    cell.params = {k: cuda.to_device(v) for k, v in cell.params.items()}
    rng = np.random.default_rng(0)
    x = cuda.to_device(rng.normal(size=(T, B, I)).astype(np.float32))
    dy = cuda.to_device(rng.normal(size=(T, B, H)).astype(np.float32))
    fwd = _median_ms(lambda: cell.forward(x), repeat, cuda.synchronize)
    both = _median_ms(lambda: cell.backward(cell.forward(x), d_outputs={"h": dy}),
                      repeat, cuda.synchronize)
    return fwd, both


def launch_overhead_us(n_arrays: int, launches: int = 2000) -> float:
    """Host time of one launch of an empty kernel taking n_arrays device arrays, in us:
    the floor under every step of a time loop driven from Python."""
    from numba import cuda
    arrays = [cuda.device_array((64, 512), np.float32) for _ in range(n_arrays)]
    src = (f"def probe({', '.join(f'a{i}' for i in range(n_arrays))}):\n"
           f"    i = cuda.grid(1)\n    if i < a0.shape[1]:\n        a0[0, i] = 0.0\n")
    scope = {"cuda": cuda}
    exec(src, scope)
    kernel = cuda.jit(scope["probe"])
    kernel[2, 256](*arrays)
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(launches):
        kernel[2, 256](*arrays)
    cuda.synchronize()
    return (time.perf_counter() - t0) / launches * 1e6


def time_cudnn(name: str, T, B, I, H, repeat: int) -> tuple[float, float] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cudnn.enabled = True
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[name](I, H).cuda()
    x = torch.randn(T, B, I, device="cuda", requires_grad=True)
    dy = torch.randn(T, B, H, device="cuda")

    def fwd():
        with torch.no_grad():
            module(x)

    def both():
        y, _ = module(x)
        y.backward(dy)

    sync = torch.cuda.synchronize
    return _median_ms(fwd, repeat, sync), _median_ms(both, repeat, sync)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--check-T", type=int, default=4, help="steps of the CPU check")
    ap.add_argument("--tiny", action="store_true", help="one tiny shape (simulator)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    shapes = TINY if args.tiny else {s: SHAPES[s] for s in args.shapes.split(",")}
    repeat = 1 if args.tiny else args.repeat
    from numba import config, cuda
    device = "CUDA simulator" if config.ENABLE_CUDASIM else cuda.get_current_device().name
    print(f"# rnndsl {rnndsl.__version__}, cuda target on {device}; float32, median of "
          f"{repeat} runs (ms)")
    if not args.tiny:
        print("# host time of one kernel launch: " + ", ".join(
            f"{n} arrays {launch_overhead_us(n):.1f} us" for n in (2, 8, 18)))
    print(f"{'cell':5} {'shape':11} {'T,B,I,H':>18} {'max rel err':>11} {'fwd':>9} "
          f"{'fwd+bptt':>9} {'cudnn fwd':>9} {'cudnn f+b':>9} {'ratio f+b':>9}")
    rows = []
    for name in args.cells.split(","):
        spec, _ = CELLS[name]
        for label, (T, B, I, H) in shapes.items():
            err = check_against_cpu(spec, min(T, args.check_T), B, I, H)
            fwd, both = time_rnndsl(spec, T, B, I, H, repeat)
            peer = None if args.tiny else time_cudnn(name, T, B, I, H, repeat)
            ratio = f"{peer[1] / both:9.2f}" if peer else f"{'-':>9}"
            pf, pb = (f"{peer[0]:9.2f}", f"{peer[1]:9.2f}") if peer else (f"{'-':>9}",) * 2
            print(f"{name:5} {label:11} {(T, B, I, H)!s:>18} {err:11.1e} {fwd:9.2f} "
                  f"{both:9.2f} {pf} {pb} {ratio}")
            rows.append({"cell": name, "shape": label, "TBIH": [T, B, I, H], "max_rel_err": err,
                         "fwd_ms": fwd, "fwd_bptt_ms": both,
                         "cudnn_ms": list(peer) if peer else None, "device": device})
            if err > 1e-4:
                print(f"  ! {name} {label}: cuda and cpu differ by {err:.1e} (> 1e-4)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 1 if any(r["max_rel_err"] > 1e-4 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
