"""Where the cuda target's time goes, on a GPU (a companion to benchmarks/gpu.py).

    python benchmarks/gpu_probe.py            # needs a GPU; prints one table per probe

1. grid.sync(): microseconds per barrier of a cooperative grid, by the number of blocks
   (256 threads each), in a kernel that does nothing else.
2. The tiled GEMM (rnndsl.kernels.cuda.gemm) at the LSTM's hoisted input projection,
   (T*B x I) @ (I x 4H), in TFLOP/s.
3. The LSTM's forward (specs/lstm.rnn, float32, everything on the device): its
   persistent kernel's grid and registers, and the cost of one time step, taken as
   (time at T=101 - time at T=1) / 100, by B and H, and by the cap on the grid's blocks
   (RNNDSL_CUDA_BLOCKS).
4. Ablation: the same step cost with phases cut out of the persistent kernel (the GEMM,
   the gate arithmetic, the copies, all of them: only the barriers left). The numbers
   it computes are then wrong; only the time is of interest. It times whole calls, so
   host time is in every variant; probes 8-11 time the kernels alone.
5. Allocation: what allocating (and freeing) the arrays of one LSTM forward costs, and
   the step cost with RNNDSL_CUDA_POOL=1 (device buffers kept across calls), in a child
   process since the switch is read at import.
6. The host side of one call at T=1 (7 ms on the H200, far above its launches' cost):
   the functions it spends that in, from cProfile.
7. Breakdown: one LSTM forward and backward (B=64, H=512) at T=1 and T=101, with the
   device synchronised around every helper the generated driver calls (workspace, gemm,
   copies, the persistent launch) and every memory hook of the cell, so each one's time
   is its own; the per-step column, (T=101 - T=1) / 100, shows what grows with T.
8. kernel: the forward's persistent kernel alone, relaunched on a real call's arguments:
   as generated, without its grid.sync() calls, barriers only; and the bare barrier
   kernel on the same grid.
9. launch: one call's persistent launch timed four ways (whole call, the launcher, the
   kernel, the grid query) and the whole call profiled on the host.
10. ktile: the forward and backward kernels alone, built with each K_TILE;
    gemm_scheme: the same with each GEMM_SCHEME ("tiles", "splitk"), at three shapes;
    resident: the same with the recurrent weights held in shared memory across the
    steps (the hold_weights pass, by its traffic rule and wherever they fit) and
    without, at six shapes.
11. phases: the two kernels alone with each of their phases cut out in turn.

    PROBES="launch phases" python benchmarks/gpu_probe.py    # only these probes
    (names: sync gemm steps ablation kernel launch ktile gemm_scheme resident phases
    breakdown pool host)
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


def _barrier_kernel():
    """A cooperative kernel that does nothing but n grid.sync() calls."""
    from numba import cuda

    @cuda.jit
    def barriers(a, n):
        grid = cuda.cg.this_grid()
        for _ in range(n):
            grid.sync()
        if cuda.grid(1) == 0:
            a[0] += 1.0
    return barriers


def probe_sync() -> None:
    from numba import cuda
    barriers = _barrier_kernel()
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

    from rnndsl.kernels.cuda import gemm
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

    from rnndsl.kernels.cuda import LAST_GRID
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

    from rnndsl.build.modules import load_built
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
                "import gpu_probe; print('## with RNNDSL_CUDA_POOL=1'); gpu_probe.probe_breakdown(); "
                "gpu_probe.probe_steps()")
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


def probe_breakdown(B: int = 64, H: int = 512) -> None:
    import collections
    import types

    from numba import cuda
    Cell = rnndsl.load(ROOT / "specs" / "lstm.rnn", target="cuda")
    module = sys.modules[Cell.__module__]
    totals: dict = collections.defaultdict(float)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            cuda.synchronize()
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            cuda.synchronize()
            totals[name] += time.perf_counter() - t0
            return result
        return wrapper

    for name, obj in list(vars(module).items()):
        if isinstance(obj, types.FunctionType) and obj.__module__ == "rnndsl.kernels.cuda":
            setattr(module, name, timed(name, obj))
    cell = Cell(I=H, H=H, seed=0)
    cell.params = {k: cuda.to_device(v) for k, v in cell.params.items()}
    for hook in ("_prepare", "_consts", "_kernel_param", "_empty", "_workspace", "_zeros",
                 "_launch", "_deliver", "_cotangents_for", "_finalise"):
        if hasattr(cell, hook):
            setattr(cell, hook, timed("cell." + hook, getattr(cell, hook)))
    rng = np.random.default_rng(0)
    rows: dict = {}
    for T in (1, 101):
        x = cuda.to_device(rng.normal(size=(T, B, H)).astype(np.float32))
        dy = cuda.to_device(rng.normal(size=(T, B, H)).astype(np.float32))

        def call():
            cuda.synchronize()
            t0 = time.perf_counter()
            run = cell.forward(x)
            cuda.synchronize()
            t1 = time.perf_counter()
            cell.backward(run, d_outputs={"h": dy})
            cuda.synchronize()
            totals["= forward, whole call"] += t1 - t0
            totals["= backward, whole call"] += time.perf_counter() - t1
        call()
        totals.clear()
        for _ in range(3):
            call()
        rows[T] = {k: v / 3 * 1e3 for k, v in totals.items()}
        totals.clear()
    print(f"## breakdown: LSTM B={B} H={H}, synchronised around each helper and hook "
          "(ms a call, inclusive; hooks contain helpers)")
    print(f"  {'':34s} {'T=1 ms':>9} {'T=101 ms':>9} {'us/step':>8}")
    for name in sorted(set(rows[1]) | set(rows[101]), key=lambda n: -rows[101].get(n, 0)):
        a, b = rows[1].get(name, 0.0), rows[101].get(name, 0.0)
        print(f"  {name:34s} {a:9.3f} {b:9.3f} {(b - a) * 10:8.1f}")


def _step_inputs(B: int, H: int) -> dict:
    """LSTM inputs on the device at T=1 and T=101 (one step = the difference / 100)."""
    from numba import cuda
    rng = np.random.default_rng(0)
    return {T: cuda.to_device(rng.normal(size=(T, B, H)).astype(np.float32)) for T in (1, 101)}


def _module_from(text: str, path: Path):
    path.write_text(text)
    from rnndsl.build.modules import load_built
    return load_built(path)


def _kernels_alone(module, xs: dict, backward: bool = True, repeat: int = 5):
    """Each persistent kernel of `module`'s LSTM relaunched alone on the arguments a real
    call gave it, at each T of `xs`: ({kernel: {T: ms}}, {kernel: grid}, and the output
    h (with the gradient of U_i when `backward`) at the last T)."""
    from numba import cuda

    from rnndsl.kernels.cuda import persistent_grid
    captured: dict = {}

    def record(kernel, work, *args):
        captured[kernel.__name__] = (kernel, work, args)
        kernel[persistent_grid(kernel, work, *args)](*args)
    module.launch_persistent = record
    H = next(iter(xs.values())).shape[2]
    cell = module.LSTM(I=H, H=H, seed=0)
    cell.params = {n: cuda.to_device(v) for n, v in cell.params.items()}
    times: dict = {}
    grids: dict = {}
    result = None
    for T, x in xs.items():
        run = cell.forward(x)
        result = (run.outputs["h"].copy_to_host(),)
        if backward:
            grads = cell.backward(run, d_outputs={"h": x})
            result += (grads.params["U_i"].copy_to_host(),)
        for name, (kernel, work, args) in captured.items():
            grid = grids[name] = persistent_grid(kernel, work, *args)
            times.setdefault(name, {})[T] = _median_ms(lambda: kernel[grid](*args), repeat)
    return times, grids, result


def _us_a_step(t: dict) -> float:
    return (t[101] - t[1]) * 10


def probe_kernel(B: int = 64, H: int = 512) -> None:
    """The persistent kernel alone, relaunched on the arguments a real call gave it, in
    variants: as generated, with its grid.sync() calls removed (wrong numbers, the
    phases' cost), and with only its barriers left; beside it the bare barrier kernel of
    probe_sync on the same grid."""
    import tempfile

    from numba import cuda
    Cell = rnndsl.load(ROOT / "specs" / "lstm.rnn", target="cuda")
    source = Path(sys.modules[Cell.__module__].__file__).read_text()
    name = "forward_LSTM_steps"
    no_sync = source.replace("        grid.sync()\n", "        pass\n")
    variants = {
        "as generated": source,
        "no grid.sync()": no_sync,
        "barriers only": drop_phases(source, name, lambda c: not c.startswith("# the next step")),
    }
    xs = _step_inputs(B, H)
    tmp = Path(tempfile.mkdtemp())
    print(f"## the persistent kernel alone: LSTM forward B={B} H={H}, relaunched on a real "
          "call's arguments (ms, median of 5)")
    for k, (label, text) in enumerate(variants.items()):
        module = _module_from(text, tmp / f"lstm_kernel_{k}.py")
        times, grids, _ = _kernels_alone(module, xs, backward=False)
        t = times[name]
        print(f"  {label:20s} T=1 {t[1]:8.3f}  T=101 {t[101]:8.3f}  "
              f"{_us_a_step(t):8.1f} us a step  (grid {grids[name]})")
    barriers = _barrier_kernel()
    a = cuda.to_device(np.zeros(1, np.float32))
    blocks, threads = grids[name]
    t4 = _median_ms(lambda: barriers[blocks, threads](a, 4))
    t404 = _median_ms(lambda: barriers[blocks, threads](a, 404))
    print(f"  {'bare barrier kernel':20s} 4 barriers {t4:8.3f}  404 barriers {t404:8.3f}  "
          f"{(t404 - t4) * 10:8.1f} us a step of 4")


def probe_launch(B: int = 64, H: int = 512, T: int = 101) -> None:
    """Why a call's persistent launch costs more than the kernel relaunched alone: the
    same launch timed four ways, and one whole call profiled on the host."""
    import cProfile
    import io
    import pstats

    from numba import cuda

    from rnndsl.kernels import cuda as cuda_kernels
    Cell = rnndsl.load(ROOT / "specs" / "lstm.rnn", target="cuda")
    module = sys.modules[Cell.__module__]
    captured = {}
    original = module.launch_persistent

    def record(kernel, work, *args):
        captured["call"] = (kernel, work, args)
        captured["before"] = [cuda_kernels.clone(a.reshape(a.size)) if hasattr(a, "copy_to_host")
                              else None for a in args]
        original(kernel, work, *args)
    module.launch_persistent = record
    cell = Cell(I=H, H=H, seed=0)
    cell.params = {n: cuda.to_device(v) for n, v in cell.params.items()}
    x = cuda.to_device(np.random.default_rng(0).normal(size=(T, B, H)).astype(np.float32))
    cell.forward(x)
    kernel, work, args = captured["call"]
    grid = cuda_kernels.persistent_grid(kernel, work, *args)
    def restored():
        for a, before in zip(args, captured["before"]):
            if before is not None:
                cuda_kernels.copy1(a.reshape(a.size), before)
        cuda.synchronize()
        t0 = time.perf_counter()
        kernel[grid](*args)
        cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3
    print(f"## one launch, LSTM forward B={B} H={H} T={T} (ms, median of 5)")
    label = "kernel, inputs restored"
    print(f"  {label:24s} {statistics.median(restored() for _ in range(5)):9.3f}")
    for label, fn in (("whole cell.forward", lambda: cell.forward(x)),
                      ("launch_persistent", lambda: original(kernel, work, *args)),
                      ("kernel[grid](*args)", lambda: kernel[grid](*args)),
                      ("persistent_grid alone", lambda: cuda_kernels.persistent_grid(
                          kernel, work, *args))):
        print(f"  {label:24s} {_median_ms(fn):9.3f}")
    profile = cProfile.Profile()
    cuda.synchronize()
    profile.enable()
    cell.forward(x)
    cuda.synchronize()
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(30)
    print(f"## host side of one cell.forward at T={T} (cProfile, cumulative)")
    print(text.getvalue()[-7000:])


def _kernels_by_build(title: str, builds, B: int, H: int) -> None:
    """The persistent kernels alone (forward and backward), relaunched on a real call's
    arguments, in LSTM modules built each way of `builds`: (label, emit_persistent
    settings, passes switched off); and how far each build's forward output and
    gradient of U_i are from the first's."""
    import tempfile

    from rnndsl.codegen import emit_persistent
    from rnndsl.build.modules import build_source
    from rnndsl.schedule.plan import PASSES
    from rnndsl.lang.specfile import read_spec
    spec = read_spec(ROOT / "specs" / "lstm.rnn")
    xs = _step_inputs(B, H)
    tmp = Path(tempfile.mkdtemp())
    print(f"## persistent kernels alone by {title}: LSTM B={B} H={H}, us a step; "
          "rel. difference from the first build at T=101")
    first = None
    for k, (label, settings, off) in enumerate(builds):
        found = {name: getattr(emit_persistent, name) for name in settings}
        for name, value in settings.items():
            setattr(emit_persistent, name, value)
        try:
            text = build_source(spec, [p for p in PASSES if p not in off], target="cuda")
        finally:
            for name, value in found.items():
                setattr(emit_persistent, name, value)
        module = _module_from(text, tmp / f"lstm_build{k}.py")
        times, grids, result = _kernels_alone(module, xs)
        first = first or result
        diff = max(float(np.abs(r - f).max() / (np.abs(f).max() or 1.0))
                   for r, f in zip(result, first))
        print(f"  {label:14s}: " + ";  ".join(
            f"{name} {_us_a_step(t):7.1f} (grid {grids[name][0]}x{grids[name][1]})"
            for name, t in times.items()) + f";  rel. diff {diff:.1e}")


def _by_setting(setting: str, values) -> list:
    return [(f"{setting} {value}", {setting: value}, ()) for value in values]


def probe_ktile(B: int = 64, H: int = 512) -> None:
    """The kernels alone by the depth of the "tiles" GEMM phases' shared-memory slices
    (emit_persistent.K_TILE): fewer, deeper slices are fewer round trips a step."""
    _kernels_by_build("K_TILE", _by_setting("K_TILE", (16, 32, 64)), B, H)


def probe_gemm_scheme(B: int = 64, H: int = 512) -> None:
    """The kernels alone with each way of writing the step's GEMM phase
    (emit_persistent.GEMM_SCHEME): "tiles" against "splitk"."""
    for b, h in ((B, H), (B, 2 * H), (4 * B, H)):
        _kernels_by_build("GEMM_SCHEME", _by_setting("GEMM_SCHEME", ("tiles", "splitk")),
                          b, h)


def probe_resident(B: int = 64, H: int = 512) -> None:
    """The kernels alone with the recurrent weights read from global memory at every
    step (`--no-pass hold_weights`), held in shared memory across the steps where
    holding pays by the traffic rule (the default, emit_persistent.HOLD_RULE "traffic":
    blocks x B <= N), and held wherever they fit (HOLD_RULE "fit"), at batches on both
    sides of the rule. Which kernel ran shows in its name (`..._steps_held` holds the
    weights) and its grid: ceil(N / floor(cap / (K + 1))) blocks for a K x N weight
    (cap = the elements a block holds, 5120 for the LSTM: 228 blocks forward and 256
    backward at H = 512)."""
    builds = [("streamed", {}, ("hold_weights",)), ("held, traffic", {}, ()),
              ("held, fit", {"HOLD_RULE": "fit"}, ())]
    for b, h in ((1, H), (4, H), (16, H), (B, H), (1, 2 * H), (B // 2, H // 2)):
        _kernels_by_build("hold_weights", builds, b, h)


def probe_phases(B: int = 64, H: int = 512) -> None:
    """What each phase of the persistent kernels costs: the kernels alone (relaunched on
    a real call's arguments, as in probe_kernel), built once as generated, once with
    their grid.sync() calls gone, and once with each phase cut out in turn (variant k
    cuts the k-th phase of the forward kernel and of the backward kernel; each kernel is
    timed on its own). The numbers the cut kernels compute are wrong; only time counts."""
    import itertools
    import tempfile
    Cell = rnndsl.load(ROOT / "specs" / "lstm.rnn", target="cuda")
    source = Path(sys.modules[Cell.__module__].__file__).read_text()
    kernels = ("forward_LSTM_steps", "backward_LSTM_steps")

    def phase_comments(name):
        lines = drop_phases(source, name, lambda c: False).split("\n")
        start = next(i for i, line in enumerate(lines) if line.startswith(f"def {name}("))
        out = []
        for line in lines[start + 1:]:
            if line and not line.startswith(" "):
                break
            if line.startswith(" " * 8) and not line.startswith(" " * 9) and \
                    line.strip().startswith("#"):
                out.append(line.strip()[:60])
        return out
    comments = {k: phase_comments(k) for k in kernels}
    most = max(len(c) for c in comments.values()) - 1        # the last: "the next step"
    variants = {"as generated": source,
                "no grid.sync()": source.replace("        grid.sync()\n", "        pass\n")}
    for k in range(most):
        text = source
        for name in kernels:
            count = itertools.count()
            text = drop_phases(text, name, lambda c, _n=count, _k=k: next(_n) == _k)
        variants[f"without phase {k}"] = text
    xs = _step_inputs(B, H)
    tmp = Path(tempfile.mkdtemp())
    print(f"## persistent kernels by phase: LSTM B={B} H={H}, us a step of each kernel alone")
    for name in kernels:
        for k, c in enumerate(comments[name]):
            print(f"  {name} phase {k}: {c}")
    for v, (label, text) in enumerate(variants.items()):
        module = _module_from(text, tmp / f"lstm_phases_{v}.py")
        times, _, _ = _kernels_alone(module, xs, repeat=3)
        print(f"  {label:18s} " + ";  ".join(
            f"{name.split('_')[0]} {_us_a_step(t):7.1f}" for name, t in times.items()))


PROBES = {"sync": probe_sync, "gemm": probe_gemm, "steps": probe_steps,
          "ablation": probe_ablation, "kernel": probe_kernel, "launch": probe_launch,
          "ktile": probe_ktile, "gemm_scheme": probe_gemm_scheme, "resident": probe_resident,
          "phases": probe_phases,
          "breakdown": probe_breakdown, "pool": probe_allocation, "host": probe_host}


def main() -> int:
    from numba import config, cuda
    if config.ENABLE_CUDASIM or not cuda.is_available():
        print("gpu_probe.py measures a GPU; none is here")
        return 1
    print(f"# rnndsl {rnndsl.__version__} on {cuda.get_current_device().name}")
    chosen = os.environ.get("PROBES", " ".join(PROBES)).split()
    unknown = [p for p in chosen if p not in PROBES]
    if unknown:
        print(f"gpu_probe.py: unknown probe {', '.join(unknown)}; the probes: {' '.join(PROBES)}")
        return 2
    for name in chosen:
        PROBES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
