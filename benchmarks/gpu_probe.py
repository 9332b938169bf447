"""Where the cuda target's time goes, on a GPU (a companion to benchmarks/gpu.py).

    python benchmarks/gpu_probe.py            # needs a GPU; prints one table per probe

1. grid.sync(): microseconds per barrier of a cooperative grid, by the number of blocks
   (256 threads each), in a kernel that does nothing else.
2. The tiled GEMM (rnndsl.cuda_kernels.gemm) at the LSTM's hoisted input projection,
   (T*B x I) @ (I x 4H), in TFLOP/s.
3. The LSTM's forward (specs/lstm.rnn, float32, everything on the device): its
   persistent kernel's grid and registers, and the cost of one time step, taken as
   (time at T=101 - time at T=1) / 100, by B and H, and by the cap on the grid's blocks
   (RNNDSL_CUDA_BLOCKS).
4. Ablation: the same step cost with phases cut out of the persistent kernel (the GEMM,
   the gate arithmetic, the copies, all of them: only the barriers left). The numbers
   it computes are then wrong; only the time is of interest.
5. Allocation: what allocating (and freeing) the arrays of one LSTM forward costs, and
   the step cost with RNNDSL_CUDA_POOL=1 (device buffers kept across calls), in a child
   process since the switch is read at import.
6. The host side of one call at T=1 (7 ms on the H200, far above its launches' cost):
   the functions it spends that in, from cProfile.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import rnndsl  # noqa: E402


def _median_ms(fn, repeat=5) -> float:
    from numba import cuda
    fn()
    cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def probe_sync() -> None:
    from numba import cuda

    @cuda.jit
    def barriers(a, n):
        grid = cuda.cg.this_grid()
        for _ in range(n):
            grid.sync()
        if cuda.grid(1) == 0:
            a[0] += 1.0

    a = cuda.to_device(np.zeros(1, np.float32))
    n = 2000
    barriers[1, 256](a, 1)
    cap = barriers.overloads[next(iter(barriers.overloads))].max_cooperative_grid_blocks(256)
    print(f"## grid.sync(), 256 threads a block (at most {cap} blocks resident)")
    for blocks in (1, 8, 32, 66, 132, 264, 528):
        if blocks > cap:
            continue
        ms = _median_ms(lambda: barriers[blocks, 256](a, n))
        print(f"  {blocks:4d} blocks: {ms * 1e3 / n:7.2f} us a barrier")


def probe_gemm() -> None:
    from numba import cuda

    from rnndsl.cuda_kernels import gemm
    print("## tiled GEMM (cuda_kernels.gemm), float32")
    rng = np.random.default_rng(0)
    for m, k, n in ((6400, 512, 2048), (64, 512, 2048)):
        a = cuda.to_device(rng.normal(size=(m, k)).astype(np.float32))
        b = cuda.to_device(rng.normal(size=(k, n)).astype(np.float32))
        out = cuda.device_array((m, n), np.float32)
        ms = _median_ms(lambda: gemm(a, b, out))
        print(f"  ({m} x {k}) @ ({k} x {n}): {ms:8.3f} ms, {2 * m * k * n / ms / 1e9:6.2f} TFLOP/s")


def probe_steps() -> None:
    from numba import cuda

    from rnndsl.cuda_kernels import LAST_GRID
    Cell = rnndsl.load(ROOT / "specs" / "lstm.rnn", target="cuda")
    module = sys.modules[Cell.__module__]
    kernel = module.forward_LSTM_steps
    print("## LSTM forward, float32: one time step = (t(T=101) - t(T=1)) / 100")
    print(f"  {'B':>4} {'H':>5} {'cap':>5} {'blocks':>6} {'threads':>7} {'T=1 ms':>8} "
          f"{'T=101 ms':>9} {'us/step':>8}")
    rng = np.random.default_rng(0)
    for B, H, caps in ((64, 512, (None, 8, 32, 66)), (64, 1024, (None,)),
                       (256, 512, (None, 66))):
        cell = Cell(I=H, H=H, seed=0)
        cell.params = {k: cuda.to_device(v) for k, v in cell.params.items()}
        xs = {T: cuda.to_device(rng.normal(size=(T, B, H)).astype(np.float32))
              for T in (1, 101)}
        for cap in caps:
            if cap is None:
                os.environ.pop("RNNDSL_CUDA_BLOCKS", None)
            else:
                os.environ["RNNDSL_CUDA_BLOCKS"] = str(cap)
            t1 = _median_ms(lambda: cell.forward(xs[1]))
            t101 = _median_ms(lambda: cell.forward(xs[101]))
            blocks, threads = LAST_GRID[kernel]
            print(f"  {B:4d} {H:5d} {cap or '-':>5} {blocks:6d} {threads:7d} {t1:8.3f} "
                  f"{t101:9.3f} {(t101 - t1) * 10:8.1f}")
    os.environ.pop("RNNDSL_CUDA_BLOCKS", None)
    try:
        regs = kernel.get_regs_per_thread()
        local = kernel.get_local_mem_per_thread()
        shared = kernel.get_shared_mem_per_block()
    except Exception as exc:          # the queries differ between numba-cuda versions
        regs = local = shared = f"? ({exc})"
    print(f"  forward_LSTM_steps: registers a thread {regs}; local memory a thread "
          f"{local}; shared memory a block {shared}")


def drop_phases(source: str, kernel: str, drop) -> str:
    """`source` with the phases of `kernel` whose opening comment satisfies `drop` cut
    out. A phase starts at a comment at the step loop's depth and runs to the next such
    comment or grid.sync()."""
    lines = source.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"def {kernel}("))
    out, cutting = lines[:start + 1], False
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line and not line.startswith(" "):          # the next top-level statement
            out += lines[i:]
            break
        at_step_depth = line.startswith(" " * 8) and not line.startswith(" " * 9)
        if at_step_depth and line.strip().startswith("#"):
            cutting = drop(line.strip())
        elif at_step_depth and line.strip() == "grid.sync()":
            cutting = False
        if not cutting:
            out.append(line)
    return "\n".join(out)


def probe_ablation() -> None:
    import tempfile

    from numba import cuda

    from rnndsl.build import load_built
    Cell = rnndsl.load(ROOT / "specs" / "lstm.rnn", target="cuda")
    source = Path(sys.modules[Cell.__module__].__file__).read_text()
    variants = {
        "everything": lambda c: False,
        "no GEMM": lambda c: "a block a tile" in c,
        "no gate arithmetic": lambda c: "sigmoid" in c,
        "no copies": lambda c: c.startswith("# copy2"),
        "barriers only": lambda c: not c.startswith("# the next step"),
    }
    B, H = 64, 512
    print(f"## ablation: LSTM forward B={B} H={H}, us a step with phases cut out")
    rng = np.random.default_rng(0)
    xs = {T: cuda.to_device(rng.normal(size=(T, B, H)).astype(np.float32)) for T in (1, 101)}
    tmp = Path(tempfile.mkdtemp())
    for k, (label, drop) in enumerate(variants.items()):
        path = tmp / f"lstm_ablation_{k}.py"
        path.write_text(drop_phases(source, "forward_LSTM_steps", drop))
        cls = load_built(path).LSTM
        cell = cls(I=H, H=H, seed=0)
        cell.params = {n: cuda.to_device(v) for n, v in cell.params.items()}
        t1 = _median_ms(lambda: cell.forward(xs[1]))
        t101 = _median_ms(lambda: cell.forward(xs[101]))
        print(f"  {label:20s} {(t101 - t1) * 10:8.1f} us a step   (T=1: {t1:.3f} ms)")


def probe_allocation() -> None:
    import gc
    import subprocess

    from numba import cuda
    print("## allocation: cuda.device_array + free of one LSTM forward's arrays, float32")
    for B, H, T in ((64, 512, 1), (64, 512, 101), (256, 512, 101)):
        shapes = [(T, B, 4 * H)] + [(T, B, H)] * 8          # mm0, outputs/tapes/histories
        mb = sum(np.prod(s) for s in shapes) * 4 / 2**20

        def allocate():
            arrays = [cuda.device_array(s, np.float32) for s in shapes]
            del arrays
            gc.collect()
        print(f"  T={T:3d} B={B:3d} H={H}: {mb:7.1f} MB, {_median_ms(allocate):8.3f} ms")
    if os.environ.get("RNNDSL_CUDA_POOL") != "1":
        env = dict(os.environ, RNNDSL_CUDA_POOL="1")
        code = ("import sys; sys.argv = ['gpu_probe']; sys.path.insert(0, 'benchmarks'); "
                "import gpu_probe; print('## with RNNDSL_CUDA_POOL=1'); gpu_probe.probe_steps()")
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, text=True,
                             capture_output=True, timeout=600)
        print(out.stdout + out.stderr[-2000:])


def probe_host() -> None:
    import cProfile
    import io
    import pstats

    from numba import cuda
    Cell = rnndsl.load(ROOT / "specs" / "lstm.rnn", target="cuda")
    cell = Cell(I=512, H=512, seed=0)
    cell.params = {k: cuda.to_device(v) for k, v in cell.params.items()}
    x = cuda.to_device(np.zeros((1, 64, 512), np.float32))
    cell.forward(x)
    cuda.synchronize()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(20):
        cell.forward(x)
    cuda.synchronize()
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(15)
    print("## host side of 20 LSTM forwards at T=1, B=64, H=512 (cProfile, by own time)")
    print(text.getvalue()[-6000:])


def main() -> int:
    from numba import config, cuda
    if config.ENABLE_CUDASIM or not cuda.is_available():
        print("gpu_probe.py measures a GPU; none is here")
        return 1
    print(f"# rnndsl {rnndsl.__version__} on {cuda.get_current_device().name}")
    probe_sync()
    probe_gemm()
    probe_steps()
    probe_ablation()
    probe_allocation()
    probe_host()
    return 0


if __name__ == "__main__":
    sys.exit(main())
