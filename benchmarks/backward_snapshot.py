"""What it costs a run to keep what its forward read for its backward (rnndsl/seen.py).

    .venv/bin/python benchmarks/backward_snapshot.py [--repeat 400] [--spec specs/lstm.rnn]

Backward must give the gradients of the forward that was run, though the caller may
change a param or the input in place in between. At the benchmark's char shape (T=100,
B=1, I=65, H=128, float32, cpu target) this times, warm, as medians:

- a forward and a backward as rnndsl runs them, and the same calls with the mechanism
  switched off (the cell's `_seen_of` made to fingerprint nothing), interleaved in
  rounds so that a busy machine weighs on both alike;
- the mechanism alone, as the runtime calls it: the fingerprints a forward takes
  (`_seen_of`: one compiled call over the params and the input) and the check a
  backward makes (`Seen.check`: the same call again, and a comparison);
- the candidates it was chosen over: copying the params and the input into snapshot
  buffers kept by the cell (allocated once, so no page faults; one compiled call), and
  fingerprinting each array in a call of its own.

It prints each in microseconds and as a percentage of the call it is added to, and the
CPU (lscpu). Like bench.py it re-executes itself without OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE (the workplace's setting holds OpenBLAS to AVX2 kernels).
"""

from __future__ import annotations

import os
import sys

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS) and "--keep-blas-env" not in sys.argv:
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from numba import literal_unroll, njit  # noqa: E402

import rnndsl  # noqa: E402
from rnndsl import kernels  # noqa: E402
from rnndsl.cells.seen import compiled_fingerprints  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
T, B, I, H = 100, 1, 65, 128       # bench.py's "char" shape


@njit(nogil=True, error_model="numpy")
def _copy_flat(src, dst):
    for j in range(src.shape[0]):
        dst[j] = src[j]


@njit(nogil=True, error_model="numpy")
def copy_into(arrays, buffers):
    """The copy candidate: each array into its snapshot buffer, in one call."""
    k = 0
    for a in literal_unroll(arrays):
        _copy_flat(a.reshape(a.size), buffers[k])
        k += 1


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = fields.get("Flags", "").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {fields.get('CPU(s)', '?').strip()} CPUs, {simd}"


def median_us(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times)


class _Nothing:
    """What `_seen_of` returns with the mechanism off: nothing fingerprinted or checked."""

    @staticmethod
    def check():
        pass


def interleaved(on, off, rounds: int, per_round: int) -> tuple[float, float]:
    """Median us of `on` and of `off`, run alternately in rounds of `per_round` calls."""
    a, b = [], []
    for _ in range(rounds):
        a.append(median_us(on, per_round))
        b.append(median_us(off, per_round))
    return statistics.median(a), statistics.median(b)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=400, help="calls timed per case")
    ap.add_argument("--spec", default=str(REPO / "specs" / "lstm.rnn"))
    ap.add_argument("--keep-blas-env", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    Cell = rnndsl.load(args.spec, target="cpu")
    cell = Cell(dtype=np.float32, seed=0, **{d: I if d == "I" else H for d in Cell.spec.dims})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = {"h": rng.standard_normal((T, B, H)).astype(np.float32)}

    def forward():
        return cell.forward(x)

    run = forward()

    def backward():
        return cell.backward(run, dy)

    # the arrays the forward fingerprints, as it reads them
    params = {d.name: cell._kernel_param(d.name) for d in cell.spec.params}
    arrays = tuple(params[d.name] for d in cell.spec.params) + (x,)
    seen = cell._seen_of(params, {"x": x})
    buffers = tuple(np.empty(a.size, a.dtype) for a in arrays)
    fps = np.empty(len(arrays), np.uint64)
    copy_into(arrays, buffers)
    for fn in (forward, backward):          # warm: compiled, caches and heap settled
        for _ in range(30):
            fn()

    per_round = max(10, args.repeat // 20)
    real = cell._seen_of

    def without(fn):
        def call():
            cell._seen_of = lambda p, r: _Nothing
            try:
                return fn()
            finally:
                cell._seen_of = real
        return call

    def with_(fn):
        def call():
            cell._seen_of = real         # the same attribute traffic as `without`
            try:
                return fn()
            finally:
                cell._seen_of = real
        return call

    fwd_on, fwd_off = interleaved(with_(forward), without(forward), 20, per_round)
    run_off = without(forward)()
    bwd_on, bwd_off = interleaved(backward, lambda: cell.backward(run_off, dy), 20,
                                  per_round)
    take = median_us(lambda: cell._seen_of(params, {"x": x}), 5 * args.repeat)
    check = median_us(seen.check, 5 * args.repeat)
    copy = median_us(lambda: copy_into(arrays, buffers), 5 * args.repeat)
    batched = median_us(lambda: compiled_fingerprints(arrays), 5 * args.repeat)
    one_by_one = median_us(lambda: [kernels.fingerprint(a) for a in arrays], 5 * args.repeat)

    nbytes = sum(a.nbytes for a in arrays)
    print(f"CPU: {cpu_model()}")
    print(f"{Path(args.spec).name}, cpu target, float32, T={T} B={B} I={I} H={H}: "
          f"{len(arrays)} arrays the forward reads from the caller, {nbytes / 1024:.0f} KB")
    print(f"{'':38}{'us':>9}{'% fwd':>9}{'% bwd':>9}")

    def row(name, us, of=("f", "b")):
        f = f"{100 * us / fwd_off:8.2f}%" if "f" in of else f"{'':9}"
        b = f"{100 * us / bwd_off:8.2f}%" if "b" in of else f"{'':9}"
        print(f"{name:38}{us:9.1f}{f}{b}")

    row("forward, mechanism off", fwd_off, ())
    row("forward, with fingerprints", fwd_on, ())
    row("  difference", fwd_on - fwd_off, ("f",))
    row("backward, mechanism off", bwd_off, ())
    row("backward, with the check", bwd_on, ())
    row("  difference", bwd_on - bwd_off, ("b",))
    row("fingerprints at forward (_seen_of)", take, ("f",))
    row("check at backward (Seen.check)", check, ("b",))
    print("candidates:")
    row("  fingerprints alone, one call", batched, ("f", "b"))
    row("  fingerprints, one call an array", one_by_one, ("f", "b"))
    row("  copy into kept buffers, one call", copy, ("f",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
