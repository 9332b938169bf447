"""Stage 6, cuda target: a driver's time loop as one persistent, cooperative kernel.

Driven from the host, every step of the time loop costs several kernel launches (the
recurrent GEMM, the fused elementwise kernel, copies), and a launch from Python costs
20-160 us on an H200 (measured, benchmarks/RESULTS.md), growing with the number of array
arguments: more than a step's arithmetic at the sizes people train at. This pass moves
the whole loop onto the device: one launch runs every step, with the grid kept resident
(a cooperative launch) and `grid.sync()` (about 1.4 us there) between dependent phases.
It is the skeleton of Diamos et al., "Persistent RNNs" (2016). Their main trick, the
recurrent weights kept on chip across the steps, is the `hold_weights` pass (on by
default): each block holds its own columns of them in shared memory (not in registers,
which Numba cannot index), where they fit and where that reads less memory a step than
streaming them (HOLD_RULE below, and cuda_kernels.held_threads: at small batches).
Elsewhere the weights are read from global memory at each step (4 MB for an LSTM at
H = 512, which an H100's L2 can hold).

Input: a driver that emit_cuda.py built, in the structured form (form.py), with its
device kernels' bodies and axes (KernelInfo). Each statement of the time loop becomes
one phase of the persistent kernel, run by all of the grid's threads in a grid-stride
loop:
  - a Launch of a generated loop-nest kernel: its body is inlined, its parallel axes
    flattened onto the grid;
  - a Call of `copy1/2`, `copy_rows`, `fill1/2`, `add_into1/2`: the same loops written
    out;
  - a Call of `gemm(a, b, out)`: out = a @ b, a block a tile of `out`, through shared
    memory;
  - a view assignment `x = y[...]` inside the loop: composed into the indices of later
    phases.
Operands such as `hist_c[t]` or `w[:, H:2 * H]` (form.Arr: an array and its index
items, as data) become index arithmetic on the whole array, so every array reaches the
kernel whole and is indexed at its full rank. What each phase reads and writes, and the
names its text uses (the kernel's parameters, with their kinds), come from the form's
operands; the phases' text is printed from them, never read back.

The phases' own temporaries (flat, tile, kb, acc0, ...) never take the names the emitter
gives (k<n> constants, the values' e_<name> and e<n>, arrays: naming.py), which a
phase must not overwrite.

A phase waits behind `grid.sync()` only when it touches memory that a phase since the
last barrier wrote, or writes memory that one read (arrays are followed to the array they
view); every step ends with one. A loop holding anything else is left on the host.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from . import form
from .form import Arr, Assign, Call, Code, Comment, Launch, Sym
from .printer_py import LinePrinter as Printer
from .printer_py import signature

ROWS_PER_THREAD = 4          # rows of a GEMM's output one thread computes ("tiles")
K_TILE = 16                  # depth of the slices a GEMM phase stages in shared memory
THREADS_CAP = 256            # threads a block at most (cuda_kernels.THREADS)
# How a GEMM phase is written: "tiles" (measured on an H100: benchmarks/RESULTS.md) or
# "splitk" (16 x 16 tiles whose K is split among a block's 16-thread groups; built for
# the backward's product, which "tiles" leaves to 32 of 128 blocks, and not yet measured
# on a GPU: gpu_probe.py's "gemm_scheme" probe compares the two).
GEMM_SCHEME = "tiles"
SPLITK_TILE = 16             # "splitk": a block's tile of the output is 16 x 16
SPLITK_DEPTH = 8             # "splitk": K rows a 16-thread group takes a round
# Diamos et al.'s trick, the `hold_weights` pass: a step's GEMM whose right operand the
# loop never writes (the recurrent weights, U forward and U^T backward) reads it from
# shared memory, where each block loaded its own columns once before the first step,
# instead of from global memory at every step. It is a second kernel for the loop, which
# the host launches where a block's columns fit in its share of the shared memory the
# kernel's other arrays leave, on the grid the GPU gives, and (HOLD_RULE "traffic")
# where holding pays (cuda_kernels.held_grid_fits); elsewhere it launches the streamed
# kernel, GEMM_SCHEME's phases. Only the kernel launched is compiled. "fit" holds
# wherever the columns fit (for gpu_probe.py to time the rule against).
HOLD_RULE = "traffic"
RESIDENT_CAP = 6144          # elements a held GEMM holds at most (a tuning knob)
# A block's static shared memory may not pass 48 KiB (CUDA's limit without opting in to
# more); a kernel's arrays are counted at 8 bytes an element, so that one kernel text
# fits in float64 and in float32.
SHARED_ELEMENTS = 48 * 1024 // 8
RESIDENT_ROWS = 4            # output rows a thread sums, sharing each weight it reads


@dataclass
class KernelInfo:
    """What a generated loop-nest kernel is made of, for inlining."""
    parallel: list[tuple[Sym, Code]]         # (variable, extent), outermost first
    serial: list[tuple[Sym, Code]]
    body: list                               # its statements (form.py)
    about: str


@dataclass
class _Phase:
    lines: list[str]
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    work: str = "1"                           # how many grid-stride items it has
    prologue: list[str] = field(default_factory=list)   # run once, before the first step
    gemm: list[Code] | None = None            # a GEMM phase's (a, b, out)
    uses: list = field(default_factory=list)  # the names its text takes from outside
    # its shared arrays: (name, shape, dtype text), declared once for every phase
    shared: list[tuple[str, tuple | int, str]] = field(default_factory=list)


@dataclass
class HeldKernel:
    """The kernel that holds the loop's weights in shared memory (hold_weights)."""
    name: str
    text: str
    work: str
    checks: list[tuple[str, str, str, str]]   # a held GEMM's (depth, columns, cap, rows)
    params: list[Sym]


@dataclass
class PersistentKernel:
    """A time loop as a persistent kernel: its text, its work (threads its widest phase
    can keep busy), its parameters (names with their kinds, sorted), the driver's loop it
    replaces (a form.Block), and the kernel that holds the weights, if any."""
    text: str
    work: str
    params: list[Sym]
    loop: form.Block
    held: HeldKernel | None = None


def shared_elements(phases: list[_Phase]) -> int:
    """How many elements the phases' shared arrays hold, a name counted once
    (hoist_shared keeps one array a name)."""
    sizes = {name: math.prod(shape if isinstance(shape, tuple) else (shape,))
             for ph in phases for name, shape, _ in ph.shared}
    return sum(sizes.values())


def hoist_shared(phases: list[_Phase]) -> list[str]:
    """The phases' shared arrays, declared once each before the loop, instead of in each
    phase. Numba gives every declaration its own memory, and two GEMM phases' staging
    buffers could pass the 48 KiB a block may have; one buffer a name serves them all,
    since a block runs its phases one after another and each phase's last read of
    shared memory is followed by a cuda.syncthreads() that every thread of the block
    reaches (the tile loops' trip counts are the same for a block's threads)."""
    decls: dict[str, tuple] = {}
    for ph in phases:
        for name, shape, dtype in ph.shared:
            first = decls.setdefault(name, (shape, dtype))
            # the same shape; the dtype may be read off another array, but one kernel
            # runs in one float type
            assert first[0] == shape, (name, first, shape)
    return [f"{name} = cuda.shared.array({shape}, {dtype})"
            for name, (shape, dtype) in decls.items()]


def touched(body: list) -> tuple[set[str], set[str]]:
    """The arrays a kernel body reads and the ones it writes (an element stored into is
    written; one added into, `+=`, read too), from its statements' operands."""
    reads, writes = set(), set()

    def arrays(*parts) -> set[str]:
        return {s.name for s in form.syms_of(*parts) if s.kind.startswith("a")}
    for st in form.walk(body):
        if isinstance(st, Assign) and isinstance(st.target, Arr):
            writes.add(st.target.array.name)
            if st.op != "=":
                reads.add(st.target.array.name)
            reads |= arrays(st.value, *(x for it in st.target.items for x in it[1:]))
        else:
            reads |= arrays(*st.reads())
    return reads, writes


class Unsupported(Exception):
    """A statement this pass cannot put on the device: the loop stays on the host."""


def _times(n: int, expr: str) -> str:
    """`n * expr`, written as `expr` when n is 1."""
    return expr if n == 1 else f"{n} * {expr}"


def _atom(expr: str) -> str:
    """expr, parenthesised unless it is a name, a number or a `.shape[k]`."""
    return expr if re.fullmatch(r"[\w.]+(\[\d+\])?", expr) else f"({expr})"


def _view_items(operand: Code) -> tuple[Sym, list[tuple]]:
    """(array, items) of an array operand: a name, or a basic-index view of one (an
    item is ("fix", index), ("slice", lo, hi) with either side None, or ("all",))."""
    if isinstance(operand, Sym):
        return operand, []
    if not (isinstance(operand, Arr) and isinstance(operand.base, Sym)):
        raise Unsupported(operand)
    return operand.base, list(operand.items)


class _View:
    """An operand of a helper call: which array, and how its elements map onto the
    array's own indices."""

    def __init__(self, array: Sym, items: list[tuple], rank: int):
        free = sum(1 for it in items if it[0] != "fix")
        self.array = array
        self.items = items + [("all",)] * (rank - free)   # trailing axes taken whole
        self.rank = rank
        # the names its indices and extents use: parameters of the kernel
        self.syms = form.syms_of(array, *(x for it in self.items for x in it[1:]))

    def at(self, *idx: str) -> str:
        assert len(idx) == self.rank
        out, k = [], 0
        for it in self.items:
            if it[0] == "fix":
                out.append(it[1])
                continue
            i = idx[k]
            k += 1
            out.append(i if it[0] == "all" or it[1] in (None, "0") else f"{it[1]} + {i}")
        return f"{self.array}[{', '.join(out)}]"

    def extent(self, axis: int) -> Code:
        k = -1
        for pos, it in enumerate(self.items):
            if it[0] == "fix":
                continue
            k += 1
            if k == axis:
                whole = form.code("{}.shape[{}]", self.array, pos)
                if it[0] == "all":
                    return whole
                lo, hi = it[1] or Code("0"), it[2] or whole
                return form.code("({} - {})", hi, lo) if lo != "0" else hi
        raise AssertionError(axis)


class PersistentLoop:
    """Turns one driver's time loop into a cooperative kernel and its launch."""

    def __init__(self, body: list, kernels: dict[str, KernelInfo], zero: Sym,
                 hold: bool = False):
        self.body = body                     # the driver function's statements
        self.kernels = kernels
        self.zero = zero                     # the typed constant holding 0.0
        self.hold = hold                     # the hold_weights pass
        self.root: dict[str, str] = {}      # view -> the array it views (before the loop)
        self.local_views: dict[str, Arr] = {}

    # ------------------------------------------------------------------ analysis
    def loop(self) -> form.Block | None:
        for st in self.body:
            if isinstance(st, form.Block) and st.var is not None and st.var.name == "t":
                return st
        return None

    def _follow_views(self, upto) -> None:
        """Which array each name views, from the driver's assignments before the loop."""
        for st in self.body:
            if st is upto:
                break
            if isinstance(st, Assign) and st.is_view() and isinstance(st.value.base, Sym):
                base = st.value.base.name
                self.root[st.target.name] = self.root.get(base, base)

    def _root(self, name: str) -> str:
        return self.root.get(name, name)

    def _operand(self, operand: Code, rank: int) -> _View:
        array, items = _view_items(operand)
        if array in self.local_views:
            if items:
                raise Unsupported(f"a view of the in-loop view {array}")
            array, items = _view_items(self.local_views[array])
        if array in self.local_views:
            raise Unsupported(f"a view of the in-loop view {array}")
        return _View(array, items, rank)

    # ------------------------------------------------------------------ phases
    @staticmethod
    def _grid_loop(p: Printer, axes: list[tuple[str, str]]) -> str:
        """Open a grid-stride loop over `axes` (outermost first), neighbouring threads on
        neighbouring elements of the innermost axis; returns the work (items)."""
        if not axes:
            p.line("if tid == 0:")
            p.depth += 1
            return "1"
        extents = [_atom(e) for _, e in axes]
        work = " * ".join(extents)
        if len(axes) == 1:
            p.line(f"for {axes[0][0]} in range(tid, {work}, nthreads):")
            p.depth += 1
            return work
        p.line(f"for flat in range(tid, {work}, nthreads):")
        p.depth += 1
        rest = "flat"
        for k, (v, _) in enumerate(axes[:-1]):
            inner = " * ".join(extents[k + 1:])
            inner = inner if len(extents) - k == 2 else f"({inner})"
            p.line(f"{v} = {rest} // {inner}")
            if k == len(axes) - 2:
                p.line(f"{axes[-1][0]} = {rest} - {v} * {inner}")
            else:
                p.line(f"rem{k} = {rest} - {v} * {inner}")
                rest = f"rem{k}"
        return work

    def _kernel_phase(self, launch: Launch) -> _Phase:
        info = self.kernels.get(launch.kernel)
        if info is None:
            raise Unsupported(launch.kernel)
        p = Printer()
        p.comment(info.about)
        work = self._grid_loop(p, info.parallel)
        for v, e in info.serial:
            p.line(f"for {v} in range({e}):")
            p.depth += 1
        for line in form.text(info.body).rstrip("\n").split("\n"):
            p.line(line)
        reads, writes = touched(info.body)
        axes = info.parallel + info.serial
        uses = [s for s in form.free_syms(info.body) if s not in [v for v, _ in axes]]
        uses += form.syms_of(*(e for _, e in axes))
        return _Phase(p.lines, {self._root(n) for n in reads}, {self._root(n) for n in writes},
                      work, uses=uses)

    def _helper_phase(self, call: Call) -> _Phase:
        fname, args = call.fn, list(call.args)
        p = Printer()
        if fname == "gemm":
            phase = (self._gemm_phase_splitk if GEMM_SCHEME == "splitk"
                     else self._gemm_phase)(args)
            phase.gemm = args
            return phase
        rank = {"copy1": 1, "fill1": 1, "add_into1": 1}.get(fname, 2)
        dst = self._operand(args[0], rank)
        idx = ("j",) if rank == 1 else ("r", "j")
        axes = list(zip(idx, (dst.extent(k) for k in range(rank))))
        p.comment(f"{fname}({', '.join(args)})")
        work = self._grid_loop(p, axes)
        reads = set()
        uses = list(dst.syms)
        if fname in ("copy1", "copy2", "add_into1", "add_into2"):
            src = self._operand(args[1], rank)
            op = "+=" if fname.startswith("add_into") else "="
            p.line(f"{dst.at(*idx)} {op} {src.at(*idx)}")
            reads.add(src.array.name)
            uses += src.syms
            if op == "+=":
                reads.add(dst.array.name)
        elif fname == "copy_rows":
            src = self._operand(args[1], 1)
            p.line(f"{dst.at(*idx)} = {src.at('j')}")
            reads.add(src.array.name)
            uses += src.syms
        elif fname in ("fill1", "fill2"):
            if not isinstance(args[1], Sym):
                raise Unsupported(call)
            p.line(f"{dst.at(*idx)} = {args[1]}")
            uses.append(args[1])
        else:
            raise Unsupported(fname)
        return _Phase(p.lines, {self._root(n) for n in reads}, {self._root(dst.array.name)},
                      work, uses=uses)

    def _gemm_phase(self, args: list[Code]) -> _Phase:
        """out = a @ b, a block a tile of out: the block stages a K_TILE-deep slice of
        a's rows and b's columns in shared memory (a thread's loads all issued before
        its stores, so that they are in flight together; coalesced), then each thread
        sums ROWS_PER_THREAD rows of one column from it. A tile is
        ROWS_PER_THREAD * (threads / columns) rows by min(threads, 64) columns."""
        a, b, out = (self._operand(x, 2) for x in args)
        m, n, depth = out.extent(0), out.extent(1), a.extent(1)
        rows, kt, z = ROWS_PER_THREAD, K_TILE, self.zero
        tile_rows = rows * THREADS_CAP // 64       # a tile's rows at THREADS_CAP threads
        # loads of a's and of b's slice a thread makes at THREADS_CAP threads a block
        la = max(1, kt * tile_rows // THREADS_CAP)
        lb = max(1, kt * 64 // THREADS_CAP)
        p = Printer()
        p.comment(f"{args[2]} = {args[0]} @ {args[1]}: a block a tile, staged in shared memory")
        shared = [("sa", (kt, tile_rows), f"{out.array}.dtype"),
                  ("sb", (kt, 64), f"{out.array}.dtype")]
        p.line(f"gm = {m}")
        p.line(f"gn = {n}")
        p.line(f"gk = {depth}")
        p.line("tn = min(cuda.blockDim.x, 64)")
        p.line(f"tm = cuda.blockDim.x // tn * {rows}")
        p.line("col = cuda.threadIdx.x % tn")
        p.line(f"row = cuda.threadIdx.x // tn * {rows}")
        p.line("ntn = (gn + tn - 1) // tn")
        with p.indent("for tile in range(cuda.blockIdx.x, (gm + tm - 1) // tm * ntn, "
                      "cuda.gridDim.x):"):
            p.line("i0 = tile // ntn * tm")
            p.line("c0 = (tile - tile // ntn * ntn) * tn")
            for q in range(rows):
                p.line(f"acc{q} = {z}")
            with p.indent(f"for kb in range(0, gk, {kt}):"):
                # every load of the slice is issued before the first store to shared
                # memory: a thread waits for a load only where it uses it, so the loads
                # are in flight together and a slice costs one trip to memory. (A loop
                # of load-then-store waited a trip for each; measured on an H100, that
                # was 85 of the forward kernel's 100 us a step: gpu_probe.py "phases".)
                # At THREADS_CAP threads a block this is one round; fewer threads (the
                # simulator) take more rounds.
                per_a, per_b = (_times(n, "cuda.blockDim.x") for n in (la, lb))
                p.line(f"rounds = max(({kt} * tm + {per_a} - 1) // ({per_a}), "
                       f"({kt} * tn + {per_b} - 1) // ({per_b}))")
                with p.indent("for rnd in range(rounds):"):
                    for q in range(la):
                        p.line(f"ea{q} = cuda.threadIdx.x + ({_times(la, 'rnd')} + {q}) * "
                               "cuda.blockDim.x")
                        p.line(f"ra{q} = ea{q} // {kt}")
                        p.line(f"ka{q} = ea{q} - ra{q} * {kt}")
                        p.line(f"va{q} = {a.at(f'i0 + ra{q}', f'kb + ka{q}')} if ea{q} < {kt} * tm "
                               f"and i0 + ra{q} < gm and kb + ka{q} < gk else {z}")
                    for q in range(lb):
                        p.line(f"eb{q} = cuda.threadIdx.x + ({_times(lb, 'rnd')} + {q}) * "
                               "cuda.blockDim.x")
                        p.line(f"db{q} = eb{q} // tn")
                        p.line(f"cb{q} = eb{q} - db{q} * tn")
                        p.line(f"vb{q} = {b.at(f'kb + db{q}', f'c0 + cb{q}')} if eb{q} < {kt} * tn "
                               f"and kb + db{q} < gk and c0 + cb{q} < gn else {z}")
                    for q in range(la):
                        with p.indent(f"if ea{q} < {kt} * tm:"):
                            p.line(f"sa[ka{q}, ra{q}] = va{q}")
                    for q in range(lb):
                        with p.indent(f"if eb{q} < {kt} * tn:"):
                            p.line(f"sb[db{q}, cb{q}] = vb{q}")
                p.line("cuda.syncthreads()")
                with p.indent(f"for kk in range({kt}):"):
                    p.line("bv = sb[kk, col]")
                    for q in range(rows):
                        p.line(f"acc{q} += sa[kk, row + {q}] * bv")
                p.line("cuda.syncthreads()")
            with p.indent("if c0 + col < gn:"):
                for q in range(rows):
                    with p.indent(f"if i0 + row + {q} < gm:"):
                        p.line(f"{out.at(f'i0 + row + {q}', 'c0 + col')} = acc{q}")
        work = (f"(({_atom(m)} + {tile_rows - 1}) // {tile_rows}) * (({_atom(n)} + 63) // 64)"
                f" * {THREADS_CAP}")
        return _Phase(p.lines, {self._root(a.array.name), self._root(b.array.name)},
                      {self._root(out.array.name)}, work, uses=[*a.syms, *b.syms, *out.syms, z],
                      shared=shared)

    def _gemm_phase_splitk(self, args: list[Code]) -> _Phase:
        """out = a @ b, a block a 16 x 16 tile of out, with K split among the block's
        groups of 16 threads. Each thread holds a 4 x 4 register tile of the output; a
        round stages SPLITK_DEPTH rows of K a group (every load issued before the first
        store), the groups multiply their own rows, and at the tile's end the groups'
        partial sums are added in shared memory. Small tiles keep every block busy when
        the output is small and K long (the backward's (B x 4H) @ (4H x H)); the split
        keeps the rounds few. Needs blockDim a multiple of 16, at least 16: the phase's
        work is whole blocks of 256 threads, so a persistent grid has 256 (64 on the
        simulator)."""
        a, b, out = (self._operand(x, 2) for x in args)
        m, n, depth = out.extent(0), out.extent(1), a.extent(1)
        ts, kg, z = SPLITK_TILE, SPLITK_DEPTH, self.zero
        # loads of a's and of b's slice a thread makes a round: a group of 16 threads
        # stages kg rows of K for 16 rows of a and 16 columns of b
        per = kg * ts // 16
        regs = [(i, j) for i in range(4) for j in range(4)]
        p = Printer()
        p.comment(f"{args[2]} = {args[0]} @ {args[1]}:"
                  f" a block a {ts} x {ts} tile, K split among its {ts}-thread groups")
        # staging: a's slice at [0, stage), b's after it; later, the groups' partial sums
        stage = kg * (THREADS_CAP // 16) * ts
        shared = [("sbuf", 2 * stage, f"{out.array}.dtype")]
        p.line(f"gm = {m}")
        p.line(f"gn = {n}")
        p.line(f"gk = {depth}")
        p.line("ngrp = cuda.blockDim.x // 16")
        p.line("grp = cuda.threadIdx.x // 16")
        p.line("lane = cuda.threadIdx.x - grp * 16")
        p.line("tr = lane // 4 * 4")
        p.line("tc = (lane - lane // 4 * 4) * 4")
        p.line(f"kdepth = ngrp * {kg}")
        p.line(f"ntn = (gn + {ts - 1}) // {ts}")
        with p.indent(f"for tile in range(cuda.blockIdx.x, (gm + {ts - 1}) // {ts} * ntn, "
                      "cuda.gridDim.x):"):
            p.line(f"i0 = tile // ntn * {ts}")
            p.line(f"c0 = (tile - tile // ntn * ntn) * {ts}")
            for i, j in regs:
                p.line(f"acc{i}{j} = {z}")
            with p.indent("for kb in range(0, gk, kdepth):"):
                # a[i0 + r, kb + kr] to sbuf[kr * 16 + r]: neighbouring threads read
                # neighbouring kr (a's rows are contiguous); b[kb + kr, c0 + c] to
                # sbuf[stage + kr * 16 + c]
                for q in range(per):
                    p.line(f"ea{q} = cuda.threadIdx.x + {q} * cuda.blockDim.x")
                    p.line(f"ra{q} = ea{q} // kdepth")
                    p.line(f"ka{q} = ea{q} - ra{q} * kdepth")
                    p.line(f"va{q} = {a.at(f'i0 + ra{q}', f'kb + ka{q}')} if i0 + ra{q} < gm "
                           f"and kb + ka{q} < gk else {z}")
                for q in range(per):
                    p.line(f"eb{q} = cuda.threadIdx.x + {q} * cuda.blockDim.x")
                    p.line(f"db{q} = eb{q} // {ts}")
                    p.line(f"cb{q} = eb{q} - db{q} * {ts}")
                    p.line(f"vb{q} = {b.at(f'kb + db{q}', f'c0 + cb{q}')} if kb + db{q} < gk "
                           f"and c0 + cb{q} < gn else {z}")
                for q in range(per):
                    p.line(f"sbuf[ka{q} * {ts} + ra{q}] = va{q}")
                for q in range(per):
                    p.line(f"sbuf[{stage} + db{q} * {ts} + cb{q}] = vb{q}")
                p.line("cuda.syncthreads()")
                with p.indent(f"for kk in range({kg}):"):
                    p.line(f"kr = grp * {kg} + kk")
                    for i in range(4):
                        p.line(f"av{i} = sbuf[kr * {ts} + tr + {i}]")
                    for j in range(4):
                        p.line(f"bv{j} = sbuf[{stage} + kr * {ts} + tc + {j}]")
                    for i, j in regs:
                        p.line(f"acc{i}{j} += av{i} * bv{j}")
                p.line("cuda.syncthreads()")
            p.comment("the groups' partial sums, added in shared memory")
            for i, j in regs:
                p.line(f"sbuf[grp * {ts * ts} + (tr + {i}) * {ts} + tc + {j}] = acc{i}{j}")
            p.line("cuda.syncthreads()")
            with p.indent(f"for o in range(cuda.threadIdx.x, {ts * ts}, cuda.blockDim.x):"):
                p.line(f"total = {z}")
                with p.indent("for g in range(ngrp):"):
                    p.line(f"total += sbuf[g * {ts * ts} + o]")
                p.line(f"ro = o // {ts}")
                p.line(f"co = o - ro * {ts}")
                with p.indent("if i0 + ro < gm and c0 + co < gn:"):
                    p.line(f"{out.at('i0 + ro', 'c0 + co')} = total")
            p.line("cuda.syncthreads()")
        work = (f"(({_atom(m)} + {ts - 1}) // {ts}) * (({_atom(n)} + {ts - 1}) // {ts})"
                f" * {THREADS_CAP}")
        return _Phase(p.lines, {self._root(a.array.name), self._root(b.array.name)},
                      {self._root(out.array.name)}, work, uses=[*a.syms, *b.syms, *out.syms, z],
                      shared=shared)

    def _resident_phase(self, k: int, args: list[Code], cap: int,
                        streamed: _Phase) -> tuple[_Phase, tuple[str, str, str, str]]:
        """out = a @ b with b (the loop never writes it) held in shared memory across the
        steps, Diamos et al.'s trick; and the check (b's depth and columns, cap, out's
        rows) the host makes before it launches the kernel that holds it.

        Before the first step, block g loads columns [g * n, (g + 1) * n) of b, n =
        ceil(columns / blocks), into `held<k>`, a column after another, each padded by
        one element (so that neighbouring threads reading neighbouring columns at the
        same depth hit different banks). At each step the block computes those columns of
        out for every row: an item is RESIDENT_ROWS rows of one column, reading each
        weight once for its rows. Where the block has fewer items than threads (the
        backward's product, 4H deep and H wide, gives each block one or two columns),
        each item's depth is split among `split` neighbouring threads, which read
        neighbouring elements of a's rows and of the held column, and their partial sums
        are added through shared memory (`held_sum`, one for all the kernel's held
        phases). The kernel has no other way to compute the product: the host launches
        it only on a grid where every block's columns fit in `cap` elements
        (cuda_kernels.held_grid_fits), and the streamed kernel elsewhere."""
        a, b, out = (self._operand(x, 2) for x in args)
        held, z, rows = f"held{k}", self.zero, RESIDENT_ROWS
        cols, c0 = f"{held}_n", f"{held}_c0"
        bk, bn, gm = b.extent(0), b.extent(1), out.extent(0)
        stride = f"({bk} + 1)"
        pro = Printer()
        pro.comment(f"{args[1]}, held in shared memory for every step: this "
                    f"block's {cols} columns from {c0}, a column after another, each padded "
                    "by one (the host chose a grid on which they fit)")
        pro.line(f"{held} = cuda.shared.array({cap}, {out.array}.dtype)")
        pro.line(f"{cols} = max(1, ({bn} + cuda.gridDim.x - 1) // cuda.gridDim.x)")
        pro.line(f"{c0} = cuda.blockIdx.x * {cols}")
        # the product's shape and how its items fall on the block's threads: the same at
        # every step
        gm_k, gk_k, items, split = (f"{held}_rows", f"{held}_depth", f"{held}_items",
                                    f"{held}_split")
        pro.line(f"{gm_k} = {gm}")
        pro.line(f"{gk_k} = {bk}")
        pro.line(f"{items} = ({gm_k} + {rows - 1}) // {rows} * {cols}")
        pro.line(f"{split} = max(1, cuda.blockDim.x // max(1, {items}))")
        with pro.indent(f"for e in range(cuda.threadIdx.x, {_atom(bk)} * {cols}, "
                        "cuda.blockDim.x):"):
            pro.line(f"kr = e // {cols}")
            pro.line(f"kc = e - kr * {cols}")
            pro.line(f"{held}[kc * {stride} + kr] = {b.at('kr', f'{c0} + kc')} "
                     f"if {c0} + kc < {bn} else {z}")
        pro.line("cuda.syncthreads()")
        p = Printer()
        p.comment(f"{args[2]} = {args[0]} @ {args[1]}:"
                  f" this block's columns, {args[1]} from shared memory")
        shared = [("held_sum", THREADS_CAP * rows, f"{out.array}.dtype")]
        with p.indent(f"for base in range(0, {items} * {split}, cuda.blockDim.x):"):
            p.line("w = base + cuda.threadIdx.x")
            p.line(f"item = w // {split}")
            p.line(f"part = w - item * {split}")
            p.line(f"ro = item // {cols}")
            p.line(f"co = item - ro * {cols}")
            p.line(f"live = item < {items} and {c0} + co < {bn}")
            p.line(f"i0 = ro * {rows}")
            for q in range(1, rows):      # rows past the end read the last row
                p.line(f"i{q} = min(i0 + {q}, {gm_k} - 1)")
            for q in range(rows):
                p.line(f"acc{q} = {z}")
            with p.indent("if live:"), p.indent(f"for kk in range(part, {gk_k}, {split}):"):
                p.line(f"wv = {held}[co * ({gk_k} + 1) + kk]")
                for q in range(rows):
                    p.line(f"acc{q} += {a.at(f'i{q}', 'kk')} * wv")
            with p.indent(f"if {split} > 1:"):
                p.comment("the partial sums of an item's threads, added by its first")
                # acc<q> of thread x at held_sum[q * blockDim + x]
                slot = ["cuda.threadIdx.x"] + [
                    f"{_times(q, 'cuda.blockDim.x')} + cuda.threadIdx.x"
                    for q in range(1, rows)]
                for q in range(rows):
                    p.line(f"held_sum[{slot[q]}] = acc{q}")
                p.line("cuda.syncthreads()")
                with p.indent("if live and part == 0:"), \
                        p.indent(f"for s in range(1, {split}):"):
                    for q in range(rows):
                        p.line(f"acc{q} += held_sum[{slot[q]} + s]")
                p.line("cuda.syncthreads()")
            with p.indent("if live and part == 0:"):
                for q in range(rows):
                    store = f"{out.at(f'i0 + {q}' if q else 'i0', f'{c0} + co')} = acc{q}"
                    if q == 0:
                        p.line(store)
                    else:
                        with p.indent(f"if i0 + {q} < {gm_k}:"):
                            p.line(store)
        # enough blocks that each holds at most `cap` elements of b
        work = f"held_threads({bk}, {bn}, {cap})"
        check = (bk, bn, str(cap), gm if HOLD_RULE == "traffic" else "0")
        return (_Phase(p.lines, streamed.reads, streamed.writes, work, pro.lines, args,
                       uses=[*a.syms, *b.syms, *out.syms, z], shared=shared), check)

    def _hold_weights(self, phases: list[_Phase]
                      ) -> tuple[list[_Phase], list[tuple[str, str, str, str]]] | None:
        """The phases of the kernel that holds its weights, and the host's checks for it;
        None where no phase qualifies. The GEMM phases whose right operand the loop never
        writes, and which names nothing the loop sets (t, an in-loop view), become
        _resident_phase's; they share what the kernel's other shared arrays leave of
        SHARED_ELEMENTS, each at most RESIDENT_CAP. The output's rows must be known before
        the loop too: the host weighs them (HOLD_RULE "traffic")."""
        written = set().union(*(ph.writes for ph in phases))
        local = {"t", *self.local_views}

        def names(expr: Code) -> set[str]:
            return {s.name for s in expr.syms}

        def held(ph: _Phase) -> bool:
            if ph.gemm is None:
                return False
            b = ph.gemm[1]
            rows = self._operand(ph.gemm[2], 2).extent(0)
            return (not (names(b) | names(rows)) & local
                    and self._root(_view_items(b)[0].name) not in written)
        chosen = [i for i, ph in enumerate(phases) if held(ph)]
        if not chosen:
            return None
        # what the other phases' arrays and the held phases' partial sums leave, shared
        others = [ph for i, ph in enumerate(phases) if i not in chosen]
        left = SHARED_ELEMENTS - shared_elements(others) - THREADS_CAP * RESIDENT_ROWS
        cap = min(RESIDENT_CAP, left // len(chosen))
        if cap < 1:
            return None
        out, checks = list(phases), []
        for k, i in enumerate(chosen):
            out[i], check = self._resident_phase(k, phases[i].gemm, cap, phases[i])
            checks.append(check)
        return out, checks

    def _phase(self, st) -> _Phase:
        if isinstance(st, Assign) and st.is_view() and isinstance(st.value, Arr):
            name = st.target.name
            base, _ = _view_items(st.value)
            self.local_views[name] = st.value
            self.root[name] = self._root(base.name)
            # kept as a statement too: the inlined kernels name the view
            return _Phase([f"{st.target} = {st.value}"], work="1",
                          uses=list(st.value.syms))
        if isinstance(st, Launch):
            return self._kernel_phase(st)
        if isinstance(st, Call) and st.fn.isidentifier():
            return self._helper_phase(st)
        raise Unsupported(st)

    # ------------------------------------------------------------------ output
    def kernel(self, name: str, about: str) -> PersistentKernel | None:
        """The loop as a persistent kernel (and, with the hold_weights pass, as a second
        one that holds its weights), or None when the loop holds something this pass
        does not handle."""
        loop = self.loop()
        if loop is None:
            return None
        self._follow_views(loop)
        try:
            phases = [self._phase(st) for st in loop.body if not isinstance(st, Comment)]
        except Unsupported:
            return None
        if not phases:
            return None
        text, work, params = self._text(name, about, loop, phases)
        made = PersistentKernel(text, work, params, loop)
        held = self._hold_weights(phases) if self.hold else None
        if held is not None:
            held_phases, checks = held
            text, work, params = self._text(
                f"{name}_held", about + "; the recurrent weights held in shared memory "
                "across the steps (the hold_weights pass)", loop, held_phases)
            made.held = HeldKernel(f"{name}_held", text, work, checks, params)
        return made

    def _text(self, name: str, about: str, loop, phases: list[_Phase]
              ) -> tuple[str, str, list[Sym]]:
        """(kernel text, its work: how many threads its widest phase can keep busy, its
        parameters: the names its phases take from outside, but the step and the in-loop
        views, which the kernel sets itself)."""
        shared = hoist_shared(phases)
        bodies = [ph.lines for ph in phases]
        local = {loop.var.name, *self.local_views}
        uses = [*loop.iter.syms, *(s for ph in phases for s in ph.uses)]
        params = form.free_syms([Call("", tuple(s for s in uses if s.name not in local))])
        p = Printer()
        p.line("@cuda.jit")
        with p.indent(signature(name, [s.name for s in params])):
            p.comment(about)
            p.line("grid = cuda.cg.this_grid()")
            p.line("tid = cuda.grid(1)")
            p.line("nthreads = cuda.gridsize(1)")
            if shared:
                p.comment("shared memory for the GEMM phases, one array a name for them all")
            for line in shared:
                p.line(line)
            for ph in phases:
                for line in ph.prologue:
                    p.line(line)
            with p.indent(f"for t in {loop.iter}:"):
                reads: set[str] = set()
                writes: set[str] = set()
                for ph, body in zip(phases, bodies):
                    if writes & (ph.reads | ph.writes) or reads & ph.writes:
                        p.line("grid.sync()")
                        reads, writes = set(), set()
                    reads |= ph.reads
                    writes |= ph.writes
                    for line in body:
                        p.line(line)
                p.comment("the next step reads what this one wrote")
                p.line("grid.sync()")
        work = "max(" + ", ".join([*dict.fromkeys(ph.work for ph in phases), "1"]) + ")"
        return p.text(), work, params
