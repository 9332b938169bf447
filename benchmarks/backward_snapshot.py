"""What it costs a run to keep what its forward read for its backward (rnndsl/seen.py).

    .venv/bin/python benchmarks/backward_snapshot.py [--repeat 2000] [--spec specs/lstm.rnn]

Backward must give the gradients of the forward that was run, though the caller may
change a param or the input in place in between. At the benchmark's char shape (T=100,
B=1, I=65, H=128, float32, cpu target) this times, warm, as medians:

- a forward and its backward as rnndsl runs them, and the same calls with the mechanism
  switched off (nothing fingerprinted: the kernels given an empty `seen`, `_seen_of`
  made to take none), alternating call by call; the median of the pairs' differences
  is what the mechanism costs (the kernels fingerprint what they read as they start);
- the mechanism as the runtime takes it where a kernel cannot (row blocks, modules
  from rnndsl 0.1.0): the fingerprints in a compiled call of their own (`_seen_of`)
  and the check a backward then makes (`Seen.check`: the same call again, and a
  comparison);
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

    by_kernel = False

    @staticmethod
    def check():
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=2000,
                    help="forward+backward pairs timed with the mechanism on and off")
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
    copy_into(arrays, buffers)
    for fn in (forward, backward):          # warm: compiled, caches and heap settled
        for _ in range(30):
            fn()

    real, in_kernel = cell._seen_of, cell._kernel_seen

    def step(on: bool) -> tuple[float, float]:
        """A forward and its backward, as training runs them, with the mechanism on or
        switched off (nothing fingerprinted, in the kernels or beside them)."""
        if not on:
            cell._seen_of = lambda p, r: _Nothing
            cell._kernel_seen = lambda: None
        try:
            t0 = time.perf_counter()
            run = cell.forward(x)
            t1 = time.perf_counter()
            cell.backward(run, dy)
            return t1 - t0, time.perf_counter() - t1
        finally:
            cell._seen_of, cell._kernel_seen = real, in_kernel

    for _ in range(30):
        step(True), step(False)
    # on and off alternate call by call (each first half the time), and the differences
    # of each pair are taken: a busy machine's slow spells then weigh on both alike
    off_f, off_b, d_f, d_b = [], [], [], []
    for i in range(args.repeat):
        order = (True, False) if i % 2 else (False, True)
        timed = {on: step(on) for on in order}
        off_f.append(timed[False][0])
        off_b.append(timed[False][1])
        d_f.append(timed[True][0] - timed[False][0])
        d_b.append(timed[True][1] - timed[False][1])
    fwd_off, bwd_off = (1e6 * statistics.median(v) for v in (off_f, off_b))
    fwd_diff, bwd_diff = (1e6 * statistics.median(v) for v in (d_f, d_b))
    pair_off = 1e6 * statistics.median(f + b for f, b in zip(off_f, off_b))
    pair_diff = 1e6 * statistics.median(f + b for f, b in zip(d_f, d_b))
    take = median_us(lambda: cell._seen_of(params, {"x": x}), args.repeat)
    check = median_us(seen.check, args.repeat)
    copy = median_us(lambda: copy_into(arrays, buffers), args.repeat)
    batched = median_us(lambda: compiled_fingerprints(arrays), args.repeat)
    one_by_one = median_us(lambda: [kernels.fingerprint(a) for a in arrays], args.repeat)

    nbytes = sum(a.nbytes for a in arrays)
    print(f"CPU: {cpu_model()}")
    print(f"{Path(args.spec).name}, cpu target, float32, T={T} B={B} I={I} H={H}: "
          f"{len(arrays)} arrays the forward reads from the caller, {nbytes / 1024:.0f} KB")
    print(f"{'':48}{'us':>9}{'% fwd':>9}{'% bwd':>9}")

    def row(name, us, of=("f", "b")):
        f = f"{100 * us / fwd_off:8.2f}%" if "f" in of else f"{'':9}"
        b = f"{100 * us / bwd_off:8.2f}%" if "b" in of else f"{'':9}"
        print(f"{name:48}{us:9.1f}{f}{b}")

    row("forward, mechanism off", fwd_off, ())
    row("  with it: the median pair's difference" + (" (kernels)" if in_kernel() else ""),
        fwd_diff, ("f",))
    row("backward, mechanism off", bwd_off, ())
    row("  with it: the median pair's difference", bwd_diff, ("b",))
    print(f"{'a training call: forward and its backward, off':48}{pair_off:9.1f}")
    print(f"{'  with it: the median pair difference':48}{pair_diff:9.1f}"
          f"{100 * pair_diff / pair_off:8.2f}% of the pair")
    row("fingerprints in a call of their own", take, ("f",))
    row("check at backward (Seen.check)", check, ("b",))
    print("candidates:")
    row("  fingerprints alone, one call", batched, ("f", "b"))
    row("  fingerprints, one call an array", one_by_one, ("f", "b"))
    row("  copy into kept buffers, one call", copy, ("f",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
