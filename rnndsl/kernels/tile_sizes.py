"""The register tile's shape, shared by the tiles' generator (codegen/gemm_gen.py), the
GEMM drivers (kernels/gemm.py), the code generator and the cells that split batches into
row blocks; and the built-in marks where a step's GEMM changes ways (the defaults of
rnndsl.build.machine, which times them for each machine: the kernels read the marks at
each call).

The tile's rows, MR, are chosen for the CPU the kernels are compiled for. A tile keeps
MR x NR sums in vector registers: with AVX-512 (32 registers of 512 bits) 8 rows of 16
float32 take 8 registers, and 8 x 16 runs at the FMA units' pace; with AVX2 or less (16
registers of 256 bits) the same tile needs 16 registers for its sums alone, LLVM spills
them to the stack at every step of k, and the tile runs at about half the speed of one
of 4 rows (`benchmarks/microkernel.py --tiles`, AVX2 code on an AMD EPYC: 8 x 16 at 47-52
GFLOP/s, 4 x 16 at 89-105, float32; 22-28 and 28-32 in float64; whole LSTM calls 2.2-2.5
times faster forward and BPTT, benchmarks/RESULTS.md). NR stays 16 on every machine, so
that the packed weights' layout is one. RNNDSL_TILES=8x16 or 4x16 picks one by hand
(the test suite pins 8x16, so that which way a batch takes does not depend on the
machine); `rnndsl explain` says which was chosen and why.
"""

from __future__ import annotations

import functools
import os

NR = 16         # columns of a panel (one 512-bit vector of float32, two of float64)
TILE_ROWS = (8, 4)      # the MRs rnndsl.kernels.gemm has tiles for (kernels/gemm_tiles.py)
# every tile gemm_tiles.py holds: one a row count, and the one-row tile for the tails
TILE_SHAPES = tuple((mr, NR) for mr in TILE_ROWS) + ((1, NR),)


# Two vector adds, one of 16 float32 (512 bits, kept whole: min-legal-vector-width) and one
# of 8 (256 bits), compiled for the CPU Numba compiles for: its registers show in the code.
_PROBE = """
define <16 x float> @wide(<16 x float> %a, <16 x float> %b) #0 {
  %c = fadd <16 x float> %a, %b
  ret <16 x float> %c
}
define <8 x float> @half(<8 x float> %a, <8 x float> %b) #0 {
  %c = fadd <8 x float> %a, %b
  ret <8 x float> %c
}
attributes #0 = { "min-legal-vector-width"="512" }
"""


def vector_isa() -> str:
    """"avx512", "avx2" or "other": the widest vector registers of the CPU Numba compiles
    for. Asked of LLVM itself, through Numba's own target machine: two vector adds are
    compiled, and their code names zmm (AVX-512) or ymm (AVX, AVX2) registers or neither.
    So NUMBA_CPU_NAME and NUMBA_CPU_FEATURES (a partial list, or an empty one, keeps the
    CPU's own), NUMBA_ENABLE_AVX=0 and Numba's own choices (no AVX on a CPU it does not
    trust with it) count exactly as they do for the kernels. Where that fails (no
    compiler: NUMBA_DISABLE_JIT, say), the host's features as LLVM reports them."""
    try:
        import llvmlite.binding as llvm
        from numba.core.registry import cpu_target
        machine = cpu_target.target_context.codegen()._tm
        module = llvm.parse_assembly(_PROBE)
        module.triple = machine.triple
        code = machine.emit_assembly(module)
    except Exception:          # noqa: BLE001  (no target machine: read the host's features)
        return _host_isa()
    if "zmm" in code:
        return "avx512"
    return "avx2" if "ymm" in code else "other"


def _host_isa() -> str:
    try:
        import llvmlite.binding as llvm
        on = {name for name, value in llvm.get_host_cpu_features().items() if value}
    except Exception:          # noqa: BLE001  (no LLVM to ask: assume the narrow kind)
        on = set()
    if "avx512f" in on:
        return "avx512"
    return "avx2" if "avx2" in on or "avx" in on else "other"


@functools.cache
def tile_choice() -> tuple[int, str]:
    """(MR, why): the tile's rows for this process, and a line saying why."""
    wanted = os.environ.get("RNNDSL_TILES", "").strip().lower()
    if wanted not in ("", "auto"):
        shapes = {f"{mr}x{NR}": mr for mr in TILE_ROWS}
        if wanted not in shapes:
            from ..core.errors import BindError
            raise BindError(f"RNNDSL_TILES must be auto or one of {', '.join(shapes)}, got "
                            f"{os.environ.get('RNNDSL_TILES')!r}")
        return shapes[wanted], f"RNNDSL_TILES={wanted}"
    isa = vector_isa()
    if isa == "avx512":
        return 8, "AVX-512: 32 vector registers, 8 rows' sums fit in a quarter of them"
    if isa == "avx2":
        return 4, "AVX2: 16 vector registers, where 8 rows' sums would spill"
    return 4, ("no AVX2 or AVX-512: 16 vector registers or fewer assumed, where 8 rows' "
               "sums would spill")


def __getattr__(name: str):
    """MR, chosen at first use (tile_choice), not when this module is imported. (Modules
    that import MR by name at their own import, rnndsl.kernels.gemm and the machine's
    marks, choose it then: both are imported only to compile or time kernels.)"""
    if name == "MR":
        return tile_choice()[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The built-in marks, measured on a 2-core AMD EPYC (each machine times its own at first
# use: rnndsl.build.machine).
#
# OpenBLAS multiplies small products (M*N*K up to about 2^18 here) with a direct kernel
# that is twice as fast a flop as its packed path: four (16 x 128) @ (128 x 128) took
# 1.83 ms a 100 steps, one (16 x 128) @ (128 x 512) 3.99 ms (benchmarks/RESULTS.md). A
# stacked per-step GEMM below this size is therefore run member by member.
SMALL_PRODUCT = 1 << 18
# With the register tiles (microkernel), a batch under MR rows runs each step's stacked
# GEMM as one BLAS call, which falls off the same cliff: (4 x 256) @ (256 x 1024) took 96
# us a step here against 19 us member by member, (2 x 512) @ (512 x 2048) 371 against 66,
# and the backward's (4 x 1024) @ (1024 x 256) 96 against 22 (OpenBLAS, one thread, a
# 2-core AMD EPYC; B in 2..6, K in 128..512, N = 2..4 K; benchmarks/step_gemm_paths.py
# times the three ways). From 2^20 (B * K * N) splitting won or tied everywhere; from
# 2^19 it won up to 9 us a step and lost up to 2 (K = 384, N = 768, B = 2: 15.6 against
# 17.9 us); below, the one call won by a microsecond. One row (a GEMV) is left whole. So
# from 2^19 the step multiplies member by member.
MICRO_SPLIT_PRODUCT = 1 << 19
# Past 2^20 (B * K * N of one member, or of a lone product) OpenBLAS's direct kernel gives
# up too, and the register tiles, running below MR rows on tiles of one row, win: (4 x
# 512) @ (512 x 2048) member by member 395 us a step against 261 in the tiles, (2 x 768)
# @ (768 x 3072) 867 against 308, while at (6 x 384) @ (384 x 1536) (members of 0.88 x
# 2^20) the members took 73 us and the tiles 209 (the same machine). Two rows and more.
MICRO_TILE_PRODUCT = 1 << 20
# One row of batch (a sampling step, a char model's forward): a step's stacked GEMM is a
# GEMV, as fast on each member's own layout as on the transposed stack, which the kernel
# copies at each call (0.7 ns an element here, 47 us for an LSTM's four 128 x 128). So
# with one row each member is a GEMV of its own, no copy, unless the further BLAS calls
# (about 0.36 us each, as much as 512 elements of the copy) cost more over T steps:
# (members - 1) * T * ROW_CALL_ELEMENTS > K * N. An LSTM (H = 128) forward of one step
# took 118 us against 166, of 100 steps 740 against 680 before this rule (2-core AMD
# EPYC, float32).
ROW_CALL_ELEMENTS = 512
