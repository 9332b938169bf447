"""What differs between the compiled targets, as data: a `Dialect` record per target
(allocation, GEMM call, helpers, what its kernels can do), the names generated code
takes from a spec (`ident`), and the per-op expression formats of elementwise code.
emit.py's CPU dialect is here; emit_cuda.py holds the CUDA one."""

from __future__ import annotations

import re
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass

from ..core.version import __version__
from ..lang import printer
from ..kernels.tile_sizes import MICRO_SPLIT_PRODUCT, MICRO_TILE_PRODUCT, NR, SMALL_PRODUCT  # noqa: F401
from ..core.ops import LEAVES, Op, hard_sigmoid_coefficients
from ..schedule.explain import explain_lines
from ..schedule.plan import ELEMENTWISE, LOOP_STAGES, MatmulGroup, Plan, passes_for
from .form import Code, Sym
from .printer_py import Printer, safe_comment, safe_docstring
from ..core.shapes import Dim





@dataclass(frozen=True)
class Dialect:
    """What a target writes differently in a kernel's host-side code; nothing else.

    The plan, the references, the fused expressions and the stage order are shared by
    every target. A target differs in how it allocates and multiplies (these strings) and
    in the skeleton of a loop nest (`_Kernel.loops`, overridden by emit_cuda.py).
    """

    target: str
    decorator: str | None      # on the forward/backward drivers (None: plain Python)
    empty: str                 # allocate (shape, dtype)
    empty_like: str
    dot: str                   # dot(a, b, out): GEMM, GEMV or vector-matrix
    contiguous: str            # wraps a strided view before a GEMM ("": views are fine)
    clone: str                 # a fresh copy of an array, "{}" is the array
    helpers: str               # the module of array helpers and scalar functions
    helper_names: tuple[str, ...]
    runtime: str               # "module:function" that turns META into a cell class
    engine: str                # for the header: what compiles the kernels
    debug_hint: str            # for the header: how to step through the kernels
    # what the target's kernels can do, which the shared emitter asks instead of its name
    transposed_views: bool = False   # its dot takes a transposed view (no transposed copy)
    vector_row_sums: bool = False    # a row's sum in vector partial sums (kernels.row_sum)
    register_tiles: bool = False     # per-step GEMMs in kernels.gemm's tiles (microkernel)
    small_batch_splits: bool = False  # a stacked GEMM split member by member at small B
    skips_input_grads: bool = False  # the backward takes `want_din` and may skip d_inputs
    gathers_tokens: bool = False     # `input token x` as ids: W @ x a gather, dW a scatter
    fingerprints: bool = False       # the forward takes `seen` and fingerprints what it reads
    flat_stacks: bool = False        # stacks [W_1; W_2; ...] by flat copies (kernels.stack_rows)
    imports: tuple[str, ...] = ()    # further import lines of its modules
    tile_imports: tuple[str, ...] = ()   # names from kernels.gemm (the register tiles)
    row_gemvs: bool = False          # one row: a step's GEMM a GEMV a member, on the params
    # fewer tokens than ids: a token's W @ x read down W's columns, no transposed copy
    token_columns: bool = False


def gathered_tokens(cell, dialect: Dialect) -> tuple[str, ...]:
    """The cell's `input token` inputs that `dialect`'s kernels take as ids (a gather
    of weight columns); none where the dialect has no gather (one-hot rows instead)."""
    return tuple(d.name for d in cell.inputs if d.token) if dialect.gathers_tokens else ()


HELPER_NAMES = ("copy1", "copy2", "copy_rows", "copy_t", "transposed", "fill1", "fill2",
                "add_into1", "add_into2", "tanh", "sigmoid", "softplus", "sign", "maximum",
                "minimum", "row_sum",
                "kernel_jit", "gather_rows", "gather_cols", "scatter_cols", "fingerprint",
                "stack_rows", "stack_rows_seen")
# the cuda kernels sum a row in a plain loop, and are compiled by numba-cuda
CPU_ONLY_HELPERS = ("row_sum", "kernel_jit", "gather_rows", "gather_cols", "scatter_cols",
                    "fingerprint", "stack_rows", "stack_rows_seen")

CPU = Dialect(
    # nogil: the runtime runs blocks of batch rows on threads of its own (runtime.py)
    target="cpu", decorator='@kernel_jit(cache=True, error_model="numpy", nogil=True)',
    empty="np.empty",
    empty_like="np.empty_like", dot="np.dot", contiguous="np.ascontiguousarray",
    clone="{}.copy()", helpers="rnndsl.kernels.loops", helper_names=HELPER_NAMES,
    runtime="rnndsl.cells.compiled:compiled_cell_class", engine="Numba @njit",
    debug_hint="Run it as plain Python for debugging with NUMBA_DISABLE_JIT=1.",
    transposed_views=True, vector_row_sums=True, register_tiles=True,
    small_batch_splits=True, skips_input_grads=True, gathers_tokens=True, fingerprints=True,
    flat_stacks=True, row_gemvs=True, token_columns=True,
    tile_imports=("NR", "pack_cols_t", "pack_rows", "packed_gemm", "parallel_dot",
                  "parallel_dot_tn"))


@dataclass
class Emitted:
    source: str
    forward_args: list[tuple]
    backward_args: list[tuple]
    consts: list[tuple]            # ("value", float) or ("dim", Dim)
    tapes: list[tuple[int, object]]   # (node id, size Dim) of tapes the runtime allocates



_ENDS_LIKE_A_VIEW = re.compile(r"_r_*\Z")


def ident(name) -> str:
    """The Python identifier for a spec name, one to one. Names of a stacked layer's
    params and states are qualified (`l1.W_i`); the dot becomes a double underscore,
    which the checker keeps out of names a user writes, so two names never meet (but
    for a layer named with a trailing `_` beside a value with a leading one, `a_.b` and
    `a._b`, which the checker refuses: check.report_spelled_alike).

    A kernel names an array's 2-D rows view by adding `_r` (`in_x` -> `in_x_r`), so a
    name that ends in `_r` (then any underscores) gets one more underscore: inputs
    `x` and `x_r` are `in_x`, `in_x_r` (x's view) and `in_x_r_`, never one variable.
    Such names are the only ones the rule moves, and they stay among themselves."""
    text = str(name).replace(".", "__")
    return text + "_" if _ENDS_LIKE_A_VIEW.search(text) else text

def _dim(d: Dim) -> Code:
    """A size as a Python expression over the kernel's dim arguments (which it reads)."""
    parts = [f"{c} * dim_{n}" if c != 1 else f"dim_{n}" for n, c in d.terms]
    if d.const or not parts:
        parts.append(str(d.const))
    return Code(" + ".join(parts).replace("+ -", "- "),
                [Sym(f"dim_{n}", "i") for n, _ in d.terms])


def _elementwise_expr(op: Op, a: list[str], attrs: tuple, k) -> str:
    if op == Op.ADD:
        return f"{a[0]} + {a[1]}"
    if op == Op.SUB:
        return f"{a[0]} - {a[1]}"
    if op == Op.MUL:
        return f"{a[0]} * {a[1]}"
    if op == Op.DIV:
        return f"{a[0]} / {a[1]}"
    if op == Op.NEG:
        return f"-{a[0]}"
    if op == Op.POW:
        p = attrs[0]
        if p == 2.0:
            return f"{a[0]} * {a[0]}"
        if p == 1.0:
            return a[0]
        return f"{a[0]} ** {k(p)}"
    if op == Op.MIN:        # NumPy's minimum and maximum: a NaN in either is the result
        return f"minimum({a[0]}, {a[1]})"
    if op == Op.MAX:
        return f"maximum({a[0]}, {a[1]})"
    if op == Op.TANH:
        return f"tanh({a[0]})"
    if op == Op.SIGMOID:
        return f"sigmoid({a[0]}, {k(1.0)})"
    if op == Op.RELU:
        return f"max({a[0]}, {k(0.0)})"
    if op == Op.EXP:
        return f"math.exp({a[0]})"
    if op == Op.LOG:
        return f"math.log({a[0]})"
    if op == Op.SQRT:
        return f"math.sqrt({a[0]})"
    if op == Op.SOFTPLUS:
        return f"softplus({a[0]}, {k(0.0)}, {k(1.0)})"
    if op == Op.HARD_SIGMOID:
        alpha, beta = hard_sigmoid_coefficients(attrs)
        return f"min(max({a[0]} * {k(alpha)} + {k(beta)}, {k(0.0)}), {k(1.0)})"
    if op == Op.ABS:
        return f"abs({a[0]})"
    if op == Op.GT:
        return f"{k(1.0)} if {a[0]} > {a[1]} else {k(0.0)}"
    if op == Op.SIGN:
        return f"sign({a[0]}, {k(0.0)}, {k(1.0)})"
    if op in (Op.BATCH, Op.EXPAND):
        return a[0]
    raise AssertionError(f"{op} is not elementwise")


ELEMENTWISE_FORMATS = {op: _elementwise_expr for op in ELEMENTWISE}


