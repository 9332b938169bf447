"""The register tile's shape, shared by the tiles' generator (codegen/gemm_gen.py), the
GEMM drivers (kernels/gemm.py), the code generator and the cells that split batches into
row blocks; and the built-in marks where a step's GEMM changes ways (the defaults of
rnndsl.build.machine, which times them for each machine: the kernels read the marks at
each call).

The tile's rows, MR, are chosen for the CPU the kernels are compiled for. A tile keeps
MR x NR sums in vector registers: with AVX-512 (32 registers of 512 bits) 8 rows of 16
float32 take 8 registers, and 8 x 16 runs at the FMA units' pace; with AVX2 or less (16
registers of 256 bits) the same tile needs 16 registers for its sums alone, LLVM spills
them to the stack at every step of k, and the tile runs at under half the speed of one
of 4 rows (`benchmarks/microkernel.py --tiles`, AVX2 code on an AMD EPYC: 8 x 16 at 48
GFLOP/s, 4 x 16 at 106, float32; 16 and 30 in float64). NR stays 16 on every machine, so
that the packed weights' layout is one. RNNDSL_TILES=8x16 or 4x16 picks one by hand
(the test suite pins 8x16, so that which way a batch takes does not depend on the
machine); `rnndsl explain` says which was chosen and why.
"""

from __future__ import annotations

import functools
import os

NR = 16         # columns of a panel (one 512-bit vector of float32, two of float64)
TILE_ROWS = (8, 4)      # the MRs rnndsl.kernels.gemm has tiles for (kernels/gemm_tiles.py)


def vector_isa() -> str:
    """"avx512", "avx2" or "other": the widest vectors of the CPU Numba compiles for
    (NUMBA_CPU_NAME and NUMBA_CPU_FEATURES when set, as Numba reads them; else the
    host's, as LLVM reports them)."""
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features is None and os.environ.get("NUMBA_CPU_NAME", "").strip().lower() == "generic":
        features = ""
    if features is not None:
        on = {f.strip()[1:] for f in features.split(",") if f.strip().startswith("+")}
    else:
        try:
            import llvmlite.binding as llvm
            on = {name for name, value in llvm.get_host_cpu_features().items() if value}
        except Exception:      # noqa: BLE001  (no LLVM to ask: assume the narrow kind)
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
    """MR, chosen at first use (tile_choice), not when this module is imported."""
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
