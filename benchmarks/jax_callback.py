"""What running a cell under JAX costs (rnndsl.jax): the callbacks and the recomputed
forward that the VJP runs, against the cell called directly.

    .venv/bin/python benchmarks/jax_callback.py [--spec specs/lstm.rnn] [--shape small]

Times, float32, one kernel thread (RNNDSL_BLAS_THREADS=1), best and median of --repeat:
the cell's forward and forward + backward called from NumPy, and `jax.jit` of the
rnndsl.jax function and of its `jax.grad` (a sum of the first output). The gradient
runs the forward twice (once for the primal, once in the backward callback, since a
Run cannot be a JAX residual), so expect about one forward more than the cell's own
forward + backward, plus the copies in and out of the callbacks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RNNDSL_BLAS_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

from bench import SHAPES  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, float]:
    """(best, median) in ms of `repeat` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times), statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "lstm.rnn"))
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import rnndsl
    import rnndsl.jax as rj

    T, B, I, H = SHAPES[args.shape]
    Cell = rnndsl.load(args.spec, target="cpu")
    cell = Cell(dtype=np.float32, seed=0, **{d: I if d == "I" else H for d in Cell.spec.dims})
    x = np.random.default_rng(0).normal(size=(T, B, I)).astype(np.float32)
    first = cell.spec.outputs[0].name
    dy = np.ones_like(cell.forward(x).outputs[first])
    f, params = rj.function(cell), rj.params(cell)
    forward = jax.jit(lambda p, x: f(p, x)[0][first])
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(f(p, x)[0][first])))
    rows = {
        "cell.forward": lambda: cell.forward(x, grad=False),
        "cell.forward + backward": lambda: cell.backward(cell.forward(x),
                                                         d_outputs={first: dy}),
        "jax.jit(f)": lambda: forward(params, x).block_until_ready(),
        "jax.jit(jax.grad(f))": lambda: jax.block_until_ready(grad(params, x)),
    }
    print(f"{cell!r} at {args.shape} (T={T}, B={B}, I={I}, H={H}), float32, ms:")
    for name, fn in rows.items():
        best, median = timed(fn, args.repeat)
        print(f"  {name:<26} best {best:8.2f}  median {median:8.2f}")


if __name__ == "__main__":
    main()
