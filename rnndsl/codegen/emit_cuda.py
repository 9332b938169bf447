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
A kernel's parameters are the free names of its body in the structured form (arrays,
the step `t`, sizes, typed constants: form.free_syms), each with the kind the emitter
gave it, so whatever the shared emitter writes into a body reaches the kernel as an
argument.

The drivers print their time loops on the host: each step a few launches over
device-resident state, tapes and work arrays (the recurrent GEMM, one fused elementwise
kernel, copies). The `persistent` pass (emit_persistent.py) then moves each loop into one
cooperative kernel: the same phases, one launch for all steps. With the pass off, the
host loop is what runs.
"""

from __future__ import annotations

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
from . import form
from .emit_persistent import KernelInfo, PersistentLoop
from .form import Assign, Block, Call, Code, Comment, Launch, Raw, Sym, code
from .kernel import LOOP_VARS
from ..core.ops import Op
from ..schedule.plan import Plan
from .printer_py import Printer, signature

# inline in CUDA kernels
KERNEL_FUNCTIONS = ("tanh", "sigmoid", "softplus", "sign", "maximum", "minimum")


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
    if op in (Op.MAX, Op.MIN):   # NumPy's: a NaN in either is the result, ties the first
        keep = ">=" if op == Op.MAX else "<="
        return (f"({a[0]} if {a[0]} {keep} {a[1]} or {a[0]} != {a[0]} else {a[1]})")
    return _elementwise_expr(op, a, attrs, k)


CUDA_FORMATS = {**ELEMENTWISE_FORMATS,
                **{op: _cuda_expr for op in (Op.TANH, Op.SIGMOID, Op.SOFTPLUS, Op.SIGN,
                                             Op.MAX, Op.MIN)}}

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


def kinds(params: list[Sym]) -> list[tuple[str, str]]:
    """(name, kind) of a device kernel's parameters: "i" an int64 size or step, "f" a
    scalar of the cell's float type, "aN" an N-D array of it."""
    for s in params:
        assert s.kind in ("i", "f") or s.kind[0] == "a", \
            f"kernel argument {s.name!r} has no device kind ({s.kind})"
    return [(s.name, s.kind) for s in params]


def device_kernel(name: str, body: list, params: list[Sym]) -> str:
    """The text of `@cuda.jit def name(params): body`."""
    return form.text([Raw("@cuda.jit"),
                      Block(signature(name, [s.name for s in params]), body)])


class _CudaKernel(_Kernel):
    """A driver (forward or backward) whose loop nests become device kernels."""

    formats = CUDA_FORMATS

    @contextmanager
    def loops(self, axes, about=()):
        """The body, kept out of the driver, becomes a device kernel."""
        with self.p.capture() as body:
            yield
        self.em.add_device_kernel(self, axes, list(about), body)


class CudaEmitter(_Emitter):
    kernel_class = _CudaKernel
    dialect = CUDA

    def __init__(self, plan: Plan, spec_path: str, spec_text: str, digest: str):
        super().__init__(plan, spec_path, spec_text, digest)
        self.kernels: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.kernel_info: dict[str, KernelInfo] = {}

    def add_device_kernel(self, kern: _CudaKernel, axes, about: list[str],
                          body: list) -> None:
        """Wrap a loop nest's body as a kernel; launch it from the driver."""
        name = f"{kern.which}_{self.plan.step.cell.name}_k{len(self.kernels)}"
        parallel = [(LOOP_VARS[v], e) for v, e, par in axes if par]
        serial = [(LOOP_VARS[v], e) for v, e, par in axes if not par]
        assert len(parallel) <= 3, axes
        what = "; ".join(about) if about else "a loop nest of the plan"
        inner = body
        for v, e in reversed(serial):
            inner = [Block(code("for {} in range({}):", v, e), inner, bound=(v,))]
        top: list = [Comment(what)]
        if parallel:
            grid = Code(", ".join(v for v, _ in reversed(parallel)),
                        [v for v, _ in reversed(parallel)])
            top.append(Assign(grid, Code(f"cuda.grid({len(parallel)})"), unpack=True))
            guard = " and ".join(f"{v} < {e}" for v, e in parallel)
            top.append(Block(Code(f"if {guard}:", form.syms_of(*(x for ax in parallel
                                                                 for x in ax))), inner))
        else:
            top += inner
        params = form.free_syms(top)
        text = device_kernel(name, top, params)
        self.kernels.append((name, text, kinds(params)))
        self.kernel_info[name] = KernelInfo(parallel, serial, body, what)
        axes_text = " x ".join(f"{v}" for v, _ in parallel) or "one thread"
        kern.p.add(Launch(name, tuple(e for _, e in parallel), tuple(params),
                          f"  # threads: {axes_text}"))

    def forward_kernel(self, nodes):
        body, args = super().forward_kernel(nodes)
        return self.persistent(body, "forward"), args

    def backward_kernel(self, nodes):
        body, args = super().backward_kernel(nodes)
        return self.persistent(body, "backward"), args

    def persistent(self, driver: list, which: str) -> list:
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
        fn = next(st for st in driver if isinstance(st, Block))      # the def
        made = PersistentLoop(fn.body, self.kernel_info, self.k(0.0),
                              hold="hold_weights" in self.plan.passes).kernel(name, about)
        if made is None:
            return driver
        text, params = made.text, made.params
        launch: list = [Comment("the time loop on the device: one launch for all steps, "
                                "with as many threads as its widest phase has items")]
        streamed = Call("launch_persistent", (Code(name), Code(made.work), *params))
        held = made.held
        if held is None:
            launch.append(streamed)
        else:
            held_text, held_params = held.text, held.params
            checks = "(" + "".join(f"({', '.join(c)}), " for c in held.checks) + ")"
            work = Sym("held_work", "x")
            fits = code("if held_grid_fits({}, {}, {}, {}):", held.name, work, checks,
                        Code(", ".join(held_params), held_params))
            launch += [Comment("the recurrent weights held in shared memory where they "
                               "fit and where holding pays (depth, columns, cap, rows of "
                               "each held GEMM)"),
                       Assign(work, Code(held.work)),
                       Block(fits, [Call("launch_persistent",
                                         (Code(held.name), work, *held_params))]),
                       Block(Code("else:"), [streamed])]
        at = next(i for i, st in enumerate(fn.body) if st is made.loop)
        fn.body[at:at + 1] = launch
        # the loop's kernels now live inside the persistent one
        launched = {st.kernel for st in form.walk(driver) if isinstance(st, form.Launch)}
        self.kernels = [k for k in self.kernels
                        if not k[0].startswith(f"{which}_") or k[0] in launched]
        self.kernels.append((name, text, kinds(params)))
        if held is not None:
            self.kernels.append((held.name, held_text, kinds(held_params)))
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
