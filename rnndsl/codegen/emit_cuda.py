"""Stage 6, cuda target: plan -> Python source of numba-cuda kernels and their drivers.

Input: a `Plan`, the same one the CPU target gets. Output: `Emitted`, whose source holds
`@cuda.jit` kernels and two plain-Python drivers, `forward_<Cell>` and
`backward_<Cell>`, with the CPU kernels' signatures and argument lists.

This is not a second compiler. `emit.py` walks the plan and writes the program; the cuda
target changes two things:
- the dialect (`CUDA`): device allocation, `gemm` for `np.dot`, no contiguity copies
  (the GEMM kernel takes strided views), launchers named like the CPU helpers;
- the skeleton of each loop nest (`_CudaKernel.loops`): the body the CPU emitter prints
  inside `for r ...: for j ...:` becomes the body of a module-level `@cuda.jit` kernel
  whose thread grid covers the parallel axes (x = the innermost, for coalescing), with a
  bounds guard; the reduction axes stay loops inside a thread. The driver launches it.
A kernel's parameters are the free names of its body (arrays, the step `t`, sizes,
typed constants), found with `ast` on the generated text, so whatever the shared
emitter writes into a body reaches the kernel as an argument.

The drivers print their time loops on the host: each step a few launches over
device-resident state, tapes and work arrays (the recurrent GEMM, one fused elementwise
kernel, copies). The `persistent` pass (emit_persistent.py) then moves each loop into one
cooperative kernel: the same phases, one launch for all steps. With the pass off, the
host loop is what runs.
"""

from __future__ import annotations

import ast
import re
from contextlib import contextmanager

from .emit import (
    CPU_ONLY_HELPERS,
    ELEMENTWISE_FORMATS,
    HELPER_NAMES,
    Dialect,
    Emitted,
    _elementwise_expr,
    _Emitter,
    _Kernel,
)
from .emit_persistent import KernelInfo, PersistentLoop
from ..core.ops import Op
from ..schedule.plan import Plan
from .printer_py import Printer, signature

KERNEL_FUNCTIONS = ("tanh", "sigmoid", "softplus", "sign")   # inline in CUDA kernels


def _cuda_expr(op: Op, a: list[str], attrs: tuple, k) -> str:
    """Scalar functions written inline with `math`: a call to a device-function dispatcher
    would compile it for the current device, which compile_ptx without a GPU cannot do.
    1 / (1 + exp(-x)) is exact in IEEE arithmetic at both ends (exp overflows to inf and
    the quotient to 0), so the GPU needs no branch for it."""
    if op == Op.TANH:
        return f"math.tanh({a[0]})"
    if op == Op.SIGMOID:
        return f"{k(1.0)} / ({k(1.0)} + math.exp(-{a[0]}))"
    if op == Op.SOFTPLUS:
        return f"max({a[0]}, {k(0.0)}) + math.log1p(math.exp(-abs({a[0]})))"
    if op == Op.SIGN:
        return (f"{k(1.0)} if {a[0]} > {k(0.0)} else "
                f"(-{k(1.0)} if {a[0]} < {k(0.0)} else {k(0.0)})")
    return _elementwise_expr(op, a, attrs, k)


CUDA_FORMATS = {**ELEMENTWISE_FORMATS,
                **{op: _cuda_expr for op in (Op.TANH, Op.SIGMOID, Op.SOFTPLUS, Op.SIGN)}}

CUDA = Dialect(
    target="cuda", decorator=None, empty="workspace",
    empty_like="workspace_like", dot="gemm", contiguous="", clone="clone({})",
    helpers="rnndsl.kernels.cuda",
    helper_names=tuple(n for n in HELPER_NAMES
                       if n not in KERNEL_FUNCTIONS + CPU_ONLY_HELPERS)
    + ("clone", "gemm", "held_grid_fits", "held_threads", "launch", "launch_persistent",
       "workspace", "workspace_like"),
    runtime="rnndsl.cells.cuda:cuda_cell_class",
    engine="numba-cuda @cuda.jit kernels driven from Python",
    debug_hint="Run it on the CUDA simulator for debugging with NUMBA_ENABLE_CUDASIM=1.",
    imports=("from numba import cuda",))

# Names a kernel body may use that are not its arguments: modules and builtins.
KERNEL_GLOBALS = frozenset({"cuda", "math", "min", "max", "abs", "range"})
_INT_NAME = re.compile(r"^(t|T|B|R|dim_\w+)$")
_FLOAT_NAME = re.compile(r"^k\d+$")
_GRID_NAMES = ("x", "y", "z")


def kernel_params(source: str) -> list[tuple[str, str]]:
    """The free names of a kernel's text, sorted, each with its kind: "i" an int64 size or
    step, "f" a scalar of the cell's float type, "aN" an N-D array of it."""
    tree = ast.parse(source)
    loads: set[str] = set()
    stores: set[str] = set()
    rank: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (stores if isinstance(node.ctx, ast.Store) else loads).add(node.id)
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            index = node.slice
            n = len(index.elts) if isinstance(index, ast.Tuple) else 1
            prev = rank.setdefault(node.value.id, n)
            assert prev == n, f"{node.value.id} indexed with {prev} and {n} subscripts"
    free = sorted(loads - stores - KERNEL_GLOBALS)
    params = []
    for name in free:
        if name in rank:
            params.append((name, f"a{rank[name]}"))
        elif _INT_NAME.match(name):
            params.append((name, "i"))
        elif _FLOAT_NAME.match(name):
            params.append((name, "f"))
        else:
            raise AssertionError(f"kernel argument {name!r} has no known kind")
    return params


def with_params(name: str, text: str) -> tuple[str, list[tuple[str, str]], str]:
    """A kernel's text printed as `def name(<<params>>):`, with its parameters (the free
    names of its body) filled in: (text, params with their kinds, the names joined)."""
    text = text.replace(f"def {name}(<<params>>):", f"def {name}():")
    params = kernel_params(text)
    names = ", ".join(n for n, _ in params)
    return (text.replace(f"def {name}():", signature(name, [n for n, _ in params])),
            params, names)


class _CudaKernel(_Kernel):
    """A driver (forward or backward) whose loop nests become device kernels."""

    formats = CUDA_FORMATS

    @contextmanager
    def loops(self, axes, about=()):
        """Print the body at depth 0, then cut it out of the driver into a kernel."""
        p = self.p
        start, depth = len(p.lines), p.depth
        p.depth = 0
        try:
            yield
        finally:
            body = p.lines[start:]
            del p.lines[start:]
            p.depth = depth
        self.em.add_device_kernel(self, axes, list(about), body)


class CudaEmitter(_Emitter):
    kernel_class = _CudaKernel
    dialect = CUDA

    def __init__(self, plan: Plan, spec_path: str, spec_text: str, digest: str):
        super().__init__(plan, spec_path, spec_text, digest)
        self.kernels: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.kernel_info: dict[str, KernelInfo] = {}

    def add_device_kernel(self, kern: _CudaKernel, axes, about: list[str],
                          body: list[str]) -> None:
        """Wrap a loop nest's body as a kernel; launch it from the driver."""
        name = f"{kern.which}_{self.plan.step.cell.name}_k{len(self.kernels)}"
        parallel = [(v, e) for v, e, par in axes if par]
        serial = [(v, e) for v, e, par in axes if not par]
        assert len(parallel) <= 3, axes
        p = Printer()
        p.line("@cuda.jit")
        with p.indent(f"def {name}(<<params>>):"):
            what = "; ".join(about) if about else "a loop nest of the plan"
            p.comment(what)
            if parallel:
                grid = ", ".join(v for v, _ in reversed(parallel))
                p.line(f"{grid} = cuda.grid({len(parallel)})")
                guard = " and ".join(f"{v} < {e}" for v, e in parallel)
                p.line(f"if {guard}:")
                p.depth += 1
            for v, e in serial:
                p.line(f"for {v} in range({e}):")
                p.depth += 1
            for line in body:
                p.line(line)
        text, params, names = with_params(name, p.text())
        self.kernels.append((name, text, params))
        self.kernel_info[name] = KernelInfo(parallel, serial, list(body), what)
        extents = ", ".join(e for _, e in parallel)
        axes_text = " x ".join(f"{v}" for v, _ in parallel) or "one thread"
        kern.p.line(f"{name}[launch({extents})]({names})  # threads: {axes_text}")

    def forward_kernel(self, nodes):
        text, args = super().forward_kernel(nodes)
        return self.persistent(text, "forward"), args

    def backward_kernel(self, nodes):
        text, args = super().backward_kernel(nodes)
        return self.persistent(text, "backward"), args

    def persistent(self, driver: str, which: str) -> str:
        """The `persistent` pass: the driver's time loop as one cooperative kernel
        (emit_persistent.py); the driver is unchanged where the pass is off or the loop
        holds a statement the pass does not handle."""
        if "persistent" not in self.plan.passes:
            return driver
        cell = self.plan.step.cell.name
        name = f"{which}_{cell}_steps"
        about = (f"every step of {which}_{cell}'s time loop in one launch: the grid stays "
                 "resident and waits at grid.sync() where a phase needs the last one's "
                 "results")
        made = PersistentLoop(driver, self.kernel_info, self.k(0.0),
                              hold="hold_weights" in self.plan.passes).kernel(name, about)
        if made is None:
            return driver
        start, stop = made.span
        text, params, names = with_params(name, made.text)
        lines = driver.split("\n")
        indent = lines[start][:len(lines[start]) - len(lines[start].lstrip())]
        launch = [(f"{indent}# the time loop on the device: one launch for all steps, with "
                   "as many threads as its widest phase has items")]
        streamed = f"launch_persistent({name}, {made.work}, {names})"
        held = made.held
        if held is None:
            launch.append(indent + streamed)
        else:
            held_text, held_params, held_names = with_params(held.name, held.text)
            checks = "(" + "".join(f"({', '.join(c)}), " for c in held.checks) + ")"
            launch += [(f"{indent}# the recurrent weights held in shared memory where they "
                        "fit and where holding pays (depth, columns, cap, rows of each held "
                        "GEMM)"),
                       f"{indent}held_work = {held.work}",
                       (f"{indent}if held_grid_fits({held.name}, held_work, {checks}, "
                        f"{held_names}):"),
                       f"{indent}    launch_persistent({held.name}, held_work, {held_names})",
                       f"{indent}else:",
                       f"{indent}    {streamed}"]
        driver = "\n".join(lines[:start] + launch + lines[stop:])
        # the loop's kernels now live inside the persistent one
        self.kernels = [k for k in self.kernels
                        if not k[0].startswith(f"{which}_") or k[0] + "[" in driver]
        self.kernels.append((name, text, params))
        if held is not None:
            self.kernels.append((held.name, held_text, held_params))
        return driver

    def emit(self) -> Emitted:
        out = super().emit()
        cell = self.plan.step.cell.name
        table = Printer()
        table.comment("Every device kernel above with its argument kinds (aN: N-D array, "
                      "f: float, i: int64),")
        table.comment("for tests that compile them to PTX without a GPU.")
        table.line(f"{cell}_KERNELS = (")
        with table.indent():
            for name, _, params in self.kernels:
                kinds = tuple(k for _, k in params)
                table.line(f"({name!r}, {name}, {kinds!r}),")
        table.line(")")
        kernels = "\n\n".join(text for _, text, _ in self.kernels)
        source = kernels + "\n\n" + out.source + "\n" + table.text()
        return Emitted(source, out.forward_args, out.backward_args, out.consts, out.tapes)


def emit(plan: Plan, spec_path: str, spec_text: str, digest: str) -> Emitted:
    """One cell's device kernels, drivers and metadata for the cuda target."""
    return CudaEmitter(plan, spec_path, spec_text, digest).emit()
