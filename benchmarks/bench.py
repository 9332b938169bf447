"""rnndsl against PyTorch and JAX on this machine, side by side in one run.

    python benchmarks/bench.py                       # everything installed, all shapes
    python benchmarks/bench.py --cells lstm --shapes small,mid --dtypes float32

For each cell (Elman, LSTM, GRU, layer-normalised LSTM, and LSTM and GRU as written in
PyTorch's convention: specs/torch/) and shape (T, B, I, H) it times
forward and forward+BPTT (median of --repeat runs after a warm-up) for the following.
The forward row is inference on every side: `forward(x, grad=False)` (no fingerprints
kept for a backward), torch under no_grad, JAX's jitted forward.
  rnndsl      the compiled CPU target (rnndsl.load(..., target="cpu"))
  torch-nn    torch.nn.RNN / LSTM / GRU (oneDNN kernels), when PyTorch is installed
  torch-loop  the same cell as a Python loop of torch ops
  jax         lax.scan + jit, and jit(grad) for BPTT, when JAX is installed
and prints the ratio best-peer-time / rnndsl-time (above 1: rnndsl is faster) and the
fraction of this machine's GEMM ceiling (measured here, float32 np.dot) that rnndsl
reaches. This machine sets OPENBLAS_CORETYPE=Haswell, which halves OpenBLAS on its
AVX-512 CPU; the benchmark re-executes itself without OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE and reports which kernel OpenBLAS then runs (threadpoolctl). Tests and
CI leave both alone. Install the peers with `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import os
import sys

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS) and "--keep-blas-env" not in sys.argv:
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import rnndsl  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHAPES = {  # (T, B, I, H), from DESIGN.md
    "char": (100, 1, 65, 128),
    "small": (100, 16, 64, 128),
    "mid": (50, 32, 256, 256),
    "large": (50, 64, 512, 512),
}
CELLS = {  # name: (spec, gates per hidden unit, torch.nn class name)
    "elman": (HERE / "specs" / "elman_tanh.rnn", 1, "RNN"),
    "lstm": (REPO / "specs" / "lstm.rnn", 4, "LSTM"),
    "gru": (REPO / "specs" / "gru.rnn", 3, "GRU"),
    "layernorm_lstm": (REPO / "specs" / "layernorm_lstm.rnn", 4, None),
}
# The same cells written in PyTorch's convention (specs/torch/: the gates' weights
# stacked, two biases each), against the same peers: name -> (the cell it mirrors, the
# spec, the cell's name in it). Issue 19 asks that they run as fast as the shipped ones.
TORCH_CONVENTION = {
    "lstm_torch": ("lstm", REPO / "specs" / "torch" / "lstm.rnn", "TorchLSTM"),
    "gru_torch": ("gru", REPO / "specs" / "torch" / "gru.rnn", "TorchGRU"),
}


def peer_cell(cell: str) -> str:
    """The name the peers and the flop count know a cell by."""
    return TORCH_CONVENTION[cell][0] if cell in TORCH_CONVENTION else cell


def spec_of(cell: str) -> tuple[Path, str | None]:
    """(spec file, cell name in it or None for its only cell) of a benchmark cell."""
    if cell in TORCH_CONVENTION:
        return TORCH_CONVENTION[cell][1], TORCH_CONVENTION[cell][2]
    return CELLS[cell][0], None


def median_ms(fn, repeat: int, budget_s: float = 20.0) -> float:
    fn()  # warm-up (and compile)
    times = []
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    return 1000 * statistics.median(times)


def gemm_ceiling_gflops(dtype) -> float:
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    b = a.copy()
    ms = median_ms(lambda: a @ b, 5)
    return 2 * n ** 3 / (ms / 1000) / 1e9


def cell_flops(cell: str, T: int, B: int, I: int, H: int, backward: bool) -> float:
    """Matmul flops only: the GEMM-bound part the ceiling compares against."""
    gates = CELLS[cell][1]
    fwd = 2 * T * B * (I + H) * gates * H
    # BPTT (no input gradient, as every runner here): d_state, dW and dU
    bwd = 2 * T * B * (2 * H + I) * gates * H
    return fwd + (bwd if backward else 0)


# ---------------------------------------------------------------------------- rnndsl
def rnndsl_runner(cell, T, B, I, H, dtype, rng, passes=None):
    path, name = spec_of(cell)
    if passes is None:
        Cell = rnndsl.load(path, target="cpu", cell=name)
    else:   # a build with some passes switched off, from the same cache
        from rnndsl.build.modules import cached_module
        from rnndsl.lang.specfile import read_spec
        spec_file = read_spec(path)
        Cell = getattr(cached_module(spec_file, passes=passes), spec_file.pick(name).name)
    c = Cell(I=I, H=H, dtype=dtype, seed=0)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    out = next(iter(Cell.spec.outputs)).name
    # Like the peers (torch: x.requires_grad is False; jax: grad over the params only),
    # BPTT computes the params' gradients, not the input sequence's.
    t0 = time.perf_counter()
    c.backward(c.forward(x), d_outputs={out: dy}, input_grads=False)
    compile_s = time.perf_counter() - t0

    def fwd():   # inference, as the peers' forward rows (torch.no_grad, a jitted forward)
        c.forward(x, grad=False)

    def fwdbwd():
        c.backward(c.forward(x), d_outputs={out: dy}, input_grads=False)
    return fwd, fwdbwd, compile_s


# ---------------------------------------------------------------------------- torch
def torch_runners(cell, T, B, I, H, dtype, rng):
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    x = torch.from_numpy(rng.standard_normal((T, B, I)).astype(dtype))
    dy = torch.from_numpy(rng.standard_normal((T, B, H)).astype(dtype))
    runners = {}
    gates = CELLS[cell][1]
    nn_name = CELLS[cell][2]
    if nn_name:
        mod = getattr(torch.nn, nn_name)(I, H).to(tdt)

        def nn_fwd():
            with torch.no_grad():
                mod(x)

        def nn_fwdbwd():
            mod.zero_grad(set_to_none=True)
            y, _ = mod(x)
            y.backward(dy)
        runners["torch-nn"] = (nn_fwd, nn_fwdbwd)
    W = torch.nn.Parameter(torch.randn(gates * H, I, dtype=tdt) * 0.1)
    U = torch.nn.Parameter(torch.randn(gates * H, H, dtype=tdt) * 0.1)
    b = torch.nn.Parameter(torch.zeros(gates * H, dtype=tdt))
    extra = {}
    if cell == "gru":
        extra["b_hn"] = torch.nn.Parameter(torch.zeros(H, dtype=tdt))
    if cell == "layernorm_lstm":
        extra["gamma"] = torch.nn.Parameter(torch.ones(5, H, dtype=tdt))
        extra["beta_c"] = torch.nn.Parameter(torch.zeros(H, dtype=tdt))

    def norm(a):
        m = a.mean(-1, keepdim=True)
        return (a - m) / torch.sqrt(((a - m) ** 2).mean(-1, keepdim=True) + 1e-5)

    def loop():
        h = torch.zeros(B, H, dtype=tdt)
        c = torch.zeros(B, H, dtype=tdt)
        xw = x @ W.T                           # what a careful user hoists by hand
        outs = []
        for t in range(T):
            if cell == "elman":
                h = torch.tanh(xw[t] + h @ U.T + b)
            elif cell == "gru":
                zx, zh = xw[t], h @ U.T
                r = torch.sigmoid(zx[:, :H] + zh[:, :H] + b[:H])
                z = torch.sigmoid(zx[:, H:2 * H] + zh[:, H:2 * H] + b[H:2 * H])
                n = torch.tanh(zx[:, 2 * H:] + b[2 * H:] + r * (zh[:, 2 * H:] + extra["b_hn"]))
                h = (1 - z) * n + z * h
            else:
                a = xw[t] + h @ U.T
                ai, af, ag, ao = a.chunk(4, 1)
                if cell == "layernorm_lstm":
                    g_ = extra["gamma"]
                    ai, af, ag, ao = (norm(ai) * g_[0], norm(af) * g_[1], norm(ag) * g_[2],
                                      norm(ao) * g_[3])
                bi, bf, bg, bo = b.chunk(4)
                i, f = torch.sigmoid(ai + bi), torch.sigmoid(af + bf)
                g, o = torch.tanh(ag + bg), torch.sigmoid(ao + bo)
                c = f * c + i * g
                if cell == "layernorm_lstm":
                    h = o * torch.tanh(norm(c) * extra["gamma"][4] + extra["beta_c"])
                else:
                    h = o * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs)

    def loop_fwd():
        with torch.no_grad():
            loop()

    def loop_fwdbwd():
        for p in (W, U, b, *extra.values()):
            p.grad = None
        loop().backward(dy)
    runners["torch-loop"] = (loop_fwd, loop_fwdbwd)
    return runners


# ---------------------------------------------------------------------------- jax
def jax_runners(cell, T, B, I, H, dtype, rng):
    import jax
    import jax.numpy as jnp
    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    gates = CELLS[cell][1]
    params = {
        "W": jnp.asarray(rng.standard_normal((I, gates * H)).astype(dtype) * 0.1),
        "U": jnp.asarray(rng.standard_normal((H, gates * H)).astype(dtype) * 0.1),
        "b": jnp.zeros(gates * H, dtype), "b_hn": jnp.zeros(H, dtype),
        "gamma": jnp.ones((5, H), dtype), "beta_c": jnp.zeros(H, dtype),
    }
    x = jnp.asarray(rng.standard_normal((T, B, I)).astype(dtype))
    dy = jnp.asarray(rng.standard_normal((T, B, H)).astype(dtype))

    def norm(a):
        m = a.mean(-1, keepdims=True)
        return (a - m) / jnp.sqrt(((a - m) ** 2).mean(-1, keepdims=True) + 1e-5)

    def run(p, x):
        xw = x @ p["W"]

        def step(carry, zx):
            h, c = carry
            zh = h @ p["U"]
            if cell == "elman":
                h = jnp.tanh(zx + zh + p["b"])
            elif cell == "gru":
                r = jax.nn.sigmoid(zx[:, :H] + zh[:, :H] + p["b"][:H])
                z = jax.nn.sigmoid(zx[:, H:2 * H] + zh[:, H:2 * H] + p["b"][H:2 * H])
                n = jnp.tanh(zx[:, 2 * H:] + p["b"][2 * H:] + r * (zh[:, 2 * H:] + p["b_hn"]))
                h = (1 - z) * n + z * h
            else:
                a = zx + zh
                ai, af, ag, ao = jnp.split(a, 4, axis=1)
                if cell == "layernorm_lstm":
                    g_ = p["gamma"]
                    ai, af, ag, ao = (norm(ai) * g_[0], norm(af) * g_[1], norm(ag) * g_[2],
                                      norm(ao) * g_[3])
                bi, bf, bg, bo = jnp.split(p["b"], 4)
                i, f = jax.nn.sigmoid(ai + bi), jax.nn.sigmoid(af + bf)
                g, o = jnp.tanh(ag + bg), jax.nn.sigmoid(ao + bo)
                c = f * c + i * g
                h = o * jnp.tanh(norm(c) * p["gamma"][4] + p["beta_c"]
                                 if cell == "layernorm_lstm" else c)
            return (h, c), h
        zeros = jnp.zeros((B, H), dtype)
        _, hs = jax.lax.scan(step, (zeros, zeros), xw)
        return hs

    fwd = jax.jit(run)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(run(p, x) * dy)))
    return {"jax": (lambda: fwd(params, x).block_until_ready(),
                    lambda: jax.tree_util.tree_map(lambda a: a.block_until_ready(),
                                                   grad(params, x)))}


# ---------------------------------------------------------------------------- main
def blas_report() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    rows = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
            f"x{i.get('num_threads')}" for i in threadpool_info()]
    return "; ".join(rows) or "no BLAS found"


def pass_gains(args) -> int:
    """Each optimisation pass's gain: forward+BPTT time without it / with every pass."""
    from rnndsl.schedule.plan import PASSES as ALL_PASSES
    from rnndsl.schedule.plan import passes_for
    PASSES = tuple(passes_for(ALL_PASSES, "cpu"))      # the cuda-only ones change nothing here
    print("| cell | shape | dtype | all passes ms | " + " | ".join(
        f"no {p}" for p in PASSES) + " |")
    print("|---|---|---|---|" + "---|" * len(PASSES))
    for cell in args.cells.split(","):
        for shape in args.shapes.split(","):
            T, B, I, H = SHAPES[shape]
            for dname in args.dtypes.split(","):
                dtype = np.dtype(dname).type
                times = {}
                for off in (None,) + PASSES:
                    passes = tuple(p for p in PASSES if p != off)
                    _, fwdbwd, _ = rnndsl_runner(cell, T, B, I, H, dtype,
                                                 np.random.default_rng(0), passes)
                    times[off] = median_ms(fwdbwd, args.repeat)
                base = times[None]
                print(f"| {cell} | {shape} | {dname} | {base:.2f} | " + " | ".join(
                    f"{times[p] / base:.2f}x" for p in PASSES) + " |", flush=True)
    print("\n(a pass's column: time without it / time with every pass; above 1 is a gain)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default=",".join([*CELLS, *TORCH_CONVENTION]),
                    help="of " + ", ".join([*CELLS, *TORCH_CONVENTION]) + " (the _torch "
                    "ones: the same cells written in PyTorch's convention, specs/torch/)")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--peers", default="torch-nn,torch-loop,jax",
                    help="comma-separated, of torch-nn, torch-loop, jax; or none (rnndsl "
                         "alone)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--pass-gains", action="store_true",
                    help="instead of the peers: time forward+BPTT with every pass, then "
                         "with each pass switched off, and print each pass's gain")
    ap.add_argument("--keep-blas-env", action="store_true",
                    help="do not unset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    args = ap.parse_args(argv)
    peers = set() if args.peers == "none" else set(args.peers.split(","))
    unknown = peers - {"torch-nn", "torch-loop", "jax"}
    if unknown:
        ap.error(f"unknown peer {', '.join(sorted(unknown))}; the peers: torch-nn, "
                 "torch-loop, jax (or none)")
    versions = {"rnndsl": rnndsl.__version__, "numpy": np.__version__}
    try:
        import numba
        versions["numba"] = numba.__version__
    except ImportError:
        pass
    for mod in ("torch", "jax"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            peers -= {p for p in peers if p.startswith(mod)}
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{platform.python_implementation()} {platform.python_version()}")
    print("# versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"# BLAS: {blas_report()}")
    print(f"# rnndsl's threads: RNNDSL_BLAS_THREADS="
          f"{os.environ.get('RNNDSL_BLAS_THREADS', '(unset: row blocks on every core)')}")
    if args.pass_gains:
        return pass_gains(args)
    ceilings = {d: gemm_ceiling_gflops(np.dtype(d).type) for d in args.dtypes.split(",")}
    print("# GEMM ceiling (np.dot 2048^3): " + ", ".join(
        f"{d} {g:.0f} GFLOP/s" for d, g in ceilings.items()))
    print()
    print("| cell | shape | dtype | pass | rnndsl ms | torch-nn ms | torch-loop ms | jax ms "
          "| best peer / rnndsl | rnndsl GEMM % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for cell in args.cells.split(","):
        for shape in args.shapes.split(","):
            T, B, I, H = SHAPES[shape]
            for dname in args.dtypes.split(","):
                dtype = np.dtype(dname).type
                rng = np.random.default_rng(0)
                fwd, fwdbwd, compile_s = rnndsl_runner(cell, T, B, I, H, dtype, rng)
                timings = {"rnndsl": (median_ms(fwd, args.repeat),
                                      median_ms(fwdbwd, args.repeat))}
                runners = {}
                peer = peer_cell(cell)
                if peers & {"torch-nn", "torch-loop"}:
                    runners.update({k: v for k, v in torch_runners(
                        peer, T, B, I, H, dtype, rng).items() if k in peers})
                if "jax" in peers:
                    runners.update(jax_runners(peer, T, B, I, H, dtype, rng))
                for name, (f, fb) in runners.items():
                    timings[name] = (median_ms(f, args.repeat), median_ms(fb, args.repeat))
                for i, mode in enumerate(("fwd", "fwd+bwd")):
                    ours = timings["rnndsl"][i]
                    others = {k: v[i] for k, v in timings.items() if k != "rnndsl"}
                    best = min(others.values()) if others else float("nan")
                    gflops = cell_flops(peer, T, B, I, H, i == 1) / (ours / 1000) / 1e9
                    frac = 100 * gflops / ceilings[dname]
                    cols = [f"{others[k]:.2f}" if k in others else "-"
                            for k in ("torch-nn", "torch-loop", "jax")]
                    print(f"| {cell} | {shape} | {dname} | {mode} | {ours:.2f} | "
                          + " | ".join(cols) + f" | {best / ours:.2f} | {frac:.0f}% |",
                          flush=True)
                    results.append(dict(cell=cell, shape=shape, dtype=dname, mode=mode,
                                        ms={k: v[i] for k, v in timings.items()},
                                        ratio=best / ours, gemm_fraction=frac / 100,
                                        compile_s=compile_s))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(versions=versions, blas=blas_report(),
                                                   ceilings=ceilings, results=results),
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
