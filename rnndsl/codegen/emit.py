"""Stage 6: plan -> Python source of Numba kernels (the CPU target).

Input: a `Plan`. Output: `Emitted`, the text of a module with two `@njit` kernels,
`forward` and `backward`, and the argument lists the runtime marshals for them.

Layout conventions inside the kernels (see plan.py for the stages):
- a full-sequence array is 3-D (T, B, size); `X[t]` is step t, and `X_r`, its 2-D
  (T*B, size) alias, is what the row stages (pre, post) work on;
- a loop value is a 2-D work array (B, size), allocated once before its loop;
- unbatched values are 1-D (size,) or (1,) for scalars; constants are typed scalars
  `k<i>` read from the `consts` array, so float32 kernels stay float32.

Every generated name is a fixed prefix plus a spec identifier that the grammar already
restricts to [A-Za-z_][A-Za-z0-9_]*, so nothing from a spec reaches the source except
as an identifier, a number the emitter formats itself, or a sanitised comment.
"""

from __future__ import annotations

import ast
import re
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass

from ..core.version import __version__
from ..lang import printer
from ..kernels.tile_sizes import MR, NR
from ..core.ops import HARD_SIGMOID_SLOPE, LEAVES, Op
from ..schedule.explain import explain_lines
from ..schedule.plan import ELEMENTWISE, LOOP_STAGES, MatmulGroup, Plan, passes_for
from .printer_py import Printer, safe_comment, safe_docstring
from ..core.shapes import Dim

CONSTS_PLACEHOLDER = "<<constants>>"


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
    imports: tuple[str, ...] = ()    # further import lines of its modules
    tile_imports: tuple[str, ...] = ()   # names from kernels.gemm (the register tiles)


HELPER_NAMES = ("copy1", "copy2", "copy_rows", "copy_t", "transposed", "fill1", "fill2",
                "add_into1", "add_into2", "tanh", "sigmoid", "softplus", "sign", "row_sum",
                "kernel_jit")
# the cuda kernels sum a row in a plain loop, and are compiled by numba-cuda
CPU_ONLY_HELPERS = ("row_sum", "kernel_jit")

CPU = Dialect(
    # nogil: the runtime runs blocks of batch rows on threads of its own (runtime.py)
    target="cpu", decorator='@kernel_jit(cache=True, error_model="numpy", nogil=True)',
    empty="np.empty",
    empty_like="np.empty_like", dot="np.dot", contiguous="np.ascontiguousarray",
    clone="{}.copy()", helpers="rnndsl.kernels.loops", helper_names=HELPER_NAMES,
    runtime="rnndsl.cells.compiled:compiled_cell_class", engine="Numba @njit",
    debug_hint="Run it as plain Python for debugging with NUMBA_DISABLE_JIT=1.",
    transposed_views=True, vector_row_sums=True, register_tiles=True,
    small_batch_splits=True, skips_input_grads=True,
    tile_imports=("MR", "NR", "pack_cols_t", "pack_rows", "packed_gemm", "parallel_dot",
                  "parallel_dot_tn"))


@dataclass
class Emitted:
    source: str
    forward_args: list[tuple]
    backward_args: list[tuple]
    consts: list[tuple]            # ("value", float) or ("dim", Dim)
    tapes: list[tuple[int, object]]   # (node id, size Dim) of tapes the runtime allocates



# OpenBLAS multiplies small products (M*N*K up to about 2^18 here) with a direct kernel
# that is twice as fast a flop as its packed path: four (16 x 128) @ (128 x 128) took
# 1.83 ms a 100 steps, one (16 x 128) @ (128 x 512) 3.99 ms (benchmarks/RESULTS.md). A
# stacked per-step GEMM below this size is therefore run member by member.
SMALL_PRODUCT = 1 << 18


_ENDS_LIKE_A_VIEW = re.compile(r"_r_*\Z")


def ident(name) -> str:
    """The Python identifier for a spec name, one to one. Names of a stacked layer's
    params and states are qualified (`l1.W_i`); the dot becomes a double underscore,
    which the checker keeps out of names a user writes, so two names never meet.

    A kernel names an array's 2-D rows view by adding `_r` (`in_x` -> `in_x_r`), so a
    name that ends in `_r` (then any underscores) gets one more underscore: inputs
    `x` and `x_r` are `in_x`, `in_x_r` (x's view) and `in_x_r_`, never one variable.
    Such names are the only ones the rule moves, and they stay among themselves."""
    text = str(name).replace(".", "__")
    return text + "_" if _ENDS_LIKE_A_VIEW.search(text) else text

def _dim(d: Dim) -> str:
    """A size as a Python expression over the kernel's dim arguments."""
    parts = [f"{c} * dim_{n}" if c != 1 else f"dim_{n}" for n, c in d.terms]
    if d.const or not parts:
        parts.append(str(d.const))
    return " + ".join(parts).replace("+ -", "- ")


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
    if op == Op.MIN:
        return f"min({a[0]}, {a[1]})"
    if op == Op.MAX:
        return f"max({a[0]}, {a[1]})"
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
        return f"min(max({a[0]} * {k(HARD_SIGMOID_SLOPE)} + {k(0.5)}, {k(0.0)}), {k(1.0)})"
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


class _Kernel:
    """Emits one kernel (forward or backward) of a plan."""

    formats = ELEMENTWISE_FORMATS      # op -> scalar expression; a target may override some

    def __init__(self, em: "_Emitter", which: str):
        self.em, self.which = em, which
        self.d: Dialect = em.dialect
        self.p = Printer()
        self.transposes: dict[tuple, str] = {}
        self.stacked_done: set[int] = set()

    # ------------------------------------------------------------------ references
    def ref(self, nid: int, stage: str) -> tuple[str, str]:
        """How `stage` reads node nid: (array expression, mode); see the module doc."""
        em, G = self.em, self.em.G
        if nid in em.same_as:
            return self.ref(em.same_as[nid], stage)
        node = G[nid]
        loop = stage in LOOP_STAGES
        if node.op == Op.PARAM:
            return f"p_{ident(node.attrs[0])}", "ub"
        if node.op in (Op.CONST, Op.DIM):
            return em.const_of(nid), "k"
        if node.op == Op.INPUT:
            name = ident(node.attrs[0])
            return (f"in_{name}", "step3") if loop else (f"in_{name}_r", "rows2")
        if node.op == Op.STATE:
            name = ident(node.attrs[0])
            if stage == "fwd":
                return f"s_{name}", "rows2"
            return (f"hist_{name}", "step3") if loop else (f"hist_{name}_r", "rows2")
        if node.op == Op.SEED:
            kind, name = node.attrs[0], ident(node.attrs[1])
            if kind == "output":
                return (f"dout_{name}", "step3") if loop else (f"dout_{name}_r", "rows2")
            return (f"ds_{name}", "rows2") if loop else (f"dnext_{name}_r", "rows2")
        src = em.plan.stage[nid]
        if not node.type.batched:
            return (f"w{nid}" if src in LOOP_STAGES else f"v{nid}"), "ub"
        taped = nid in em.plan.saved and em.writes_tape_directly(nid)
        if src == "pre" and self.which == "backward" and nid in em.forward_nodes:
            # computed by the forward kernel: the backward kernel reads its tape
            return (f"tape{nid}", "step3") if loop else (f"tape{nid}_r", "rows2")
        if src == stage:
            if loop:
                return (f"tape{nid}", "step3") if taped else (f"w{nid}", "rows2")
            return (f"tape{nid}_r" if taped else f"v{nid}_r"), "rows2"
        if src == "pre":
            name = f"tape{nid}" if taped else f"v{nid}"
            return (name, "step3") if loop else (name + "_r", "rows2")
        assert nid in em.plan.saved, f"node {nid} ({src}) read from {stage} but not saved"
        return (f"tape{nid}", "step3") if loop else (f"tape{nid}_r", "rows2")

    def block_element(self, nid: int, expr: str, t) -> str | None:
        """A stacked cotangent's element, read or written in its group's contiguous
        buffer at a column offset rather than through a strided view."""
        block = self.em.cg_block.get(nid)
        if block is None or t.rank != 1:
            return None
        i, start, _ = block
        if expr == f"tape{nid}":
            return f"tgc{i}[t, r, {start} + j]"
        if expr == f"tape{nid}_r":
            return f"tgc{i}_r[r, {start} + j]"
        if expr == f"w{nid}":
            return f"gc{i}[r, {start} + j]"
        return None

    def mirror_elements(self, nid: int, stage: str) -> list[str]:
        """The element (row r, feature j) of a stacked cotangent in each group that holds
        it besides its home (see plan.CotangentGroup)."""
        found = []
        for i, start in self.em.cg_mirrors.get(nid, ()):
            if not self.em.plan.cotangent_groups[i].taped:
                found.append(f"gc{i}[r, {start} + j]")
            elif stage in LOOP_STAGES:
                found.append(f"tgc{i}[t, r, {start} + j]")
            else:
                found.append(f"tgc{i}_r[r, {start} + j]")
        return found

    def whole(self, nid: int, stage: str) -> str:
        expr, mode = self.ref(nid, stage)
        return f"{expr}[t]" if mode == "step3" else expr

    def at(self, nid: int, stage: str, local: dict[int, str]) -> str:
        """The scalar of node nid at row r, feature j (loops over r and j are open)."""
        if nid in self.em.same_as:
            return self.at(self.em.same_as[nid], stage, local)
        if nid in local:
            return local[nid]
        if self.em.zero_term(nid) or nid in self.em.zero_sums:
            return self.em.k(0.0)
        expr, mode = self.ref(nid, stage)
        t = self.em.G[nid].type
        direct = self.block_element(nid, expr, t)
        if direct is not None:
            return direct
        block = self.em.member_block.get(nid)
        if block is not None and expr in (f"w{nid}", f"v{nid}", f"v{nid}_r"):
            # a matmul result: read the GEMM's C-contiguous output at a column offset,
            # not through a strided view, so the loop over j can vectorise
            g, offset = block
            if expr == f"w{nid}":
                return f"mm{g}[r, {offset} + j]"
            if expr == f"v{nid}":
                return f"mm{g}[t, r, {offset} + j]"
            return f"mm{g}_r[r, {offset} + j]"
        if mode == "k":
            return expr
        if mode == "ub":
            return {0: f"{expr}[0]", 1: f"{expr}[j]", 2: f"{expr}[i, j]"}[t.rank]
        col = "j" if t.rank == 1 else "0"
        return f"{expr}[t, r, {col}]" if mode == "step3" else f"{expr}[r, {col}]"

    # ------------------------------------------------------------------ skeleton
    @contextmanager
    def loops(self, axes: list[tuple[str, str, bool]], about=()):
        """The skeleton of one loop nest; the body is printed inside the `with`.

        axes: (variable, extent, parallel) from the outermost loop in. A parallel axis has
        independent iterations (each writes its own elements); a reduction axis is not
        parallel. The CPU writes every axis as a `for` loop, in the order given; the CUDA
        target (emit_cuda.py) makes the parallel axes its thread grid instead.
        """
        p = self.p
        for title in about:
            p.comment(title)
        depth = p.depth
        for var, extent, _ in axes:
            p.line(f"for {var} in range({extent}):")
            p.depth += 1
        try:
            yield
        finally:
            p.depth = depth

    # ------------------------------------------------------------------ allocation
    def rows(self, stage: str) -> str:
        return "B" if stage in LOOP_STAGES else "R"

    def size(self, nid: int) -> str:
        t = self.em.G[nid].type
        return _dim(t.shape[0]) if t.shape else "1"

    def alloc(self, nid: int, stage: str) -> None:
        """Allocate the destination of a node that is not a view."""
        G = self.em.G
        t = G[nid].type
        if t.rank == 2:
            shape = f"({_dim(t.shape[0])}, {_dim(t.shape[1])})"
            self.p.line(f"{self.dest(nid, stage)} = {self.d.empty}({shape}, dtype)")
        elif not t.batched:
            self.p.line(f"{self.dest(nid, stage)} = {self.d.empty}({self.size(nid)}, dtype)")
        elif stage in LOOP_STAGES:
            self.p.line(f"w{nid} = {self.d.empty}((B, {self.size(nid)}), dtype)")
        else:
            self.p.line(f"v{nid} = {self.d.empty}((T, B, {self.size(nid)}), dtype)")
            self.p.line(f"v{nid}_r = v{nid}.reshape((R, {self.size(nid)}))")

    def dest(self, nid: int, stage: str) -> str:
        """The whole-array name a node's value is written to in its own stage."""
        t = self.em.G[nid].type
        if not t.batched:
            return f"w{nid}" if stage in LOOP_STAGES else f"v{nid}"
        return f"w{nid}" if stage in LOOP_STAGES else f"v{nid}_r"

    # ------------------------------------------------------------------ stages
    def emit_stage(self, stage: str, nodes: list[int]) -> None:
        """Emit the nodes of one stage (already filtered to this kernel), in plan order."""
        em, G = self.em, self.em.G
        done: set[int] = set()
        group_of = {n: g for g in em.plan.fused[stage] for n in g}
        matmul_of = {m: grp for grp in em.plan.matmuls.get(stage, []) for m in grp.members}
        mine = set(nodes)
        for nid in nodes:
            if nid in done:
                continue
            op = G[nid].op
            if op in ELEMENTWISE:
                group = [n for n in group_of.get(nid, [nid]) if n in mine and n not in done]
                self.emit_elementwise(group, stage)
                done.update(group)
            elif nid in matmul_of:
                grp = matmul_of[nid]
                self.emit_matmul_group(grp, stage)
                done.update(grp.members)
            else:
                self.emit_other(nid, stage)
                done.add(nid)
            for n in (group_of.get(nid, [nid]) if op in ELEMENTWISE else
                      (matmul_of[nid].members if nid in matmul_of else [nid])):
                if n in mine and n in em.plan.saved and not em.writes_tape_directly(n):
                    if stage in LOOP_STAGES:
                        self.p.line(f"copy2(tape{n}[t], {self.dest(n, stage)})")
                    else:
                        self.p.line(f"copy2(tape{n}_r, {self.dest(n, stage)})")

    def emit_elementwise(self, group: list[int], stage: str) -> None:
        em, G = self.em, self.em.G
        group = [n for n in group if not em.folded(n)]
        if not group:
            return
        first = G[group[0]].type
        members = set(group)
        stored = [n for n in group if em.needs_array(n, members)]
        for n in stored:
            if stage not in LOOP_STAGES and not (n in em.plan.saved and
                                                 em.writes_tape_directly(n)):
                self.alloc(n, stage)
        axes = []
        if first.batched:
            axes.append(("r", self.rows(stage), True))
        if first.rank == 2:      # weight gradients added together: a matrix
            axes.append(("i", _dim(first.shape[0]), True))
            axes.append(("j", _dim(first.shape[1]), True))
        else:
            axes.append(("j", self.size(group[0]), True))
        with self.loops(axes, em.titles(group)):
            self.elementwise_body(group, stage, stored)

    def elementwise_body(self, group: list[int], stage: str, stored: list[int]) -> None:
        """One element (row r, feature j) of every node of a fused group."""
        em, G, p = self.em, self.em.G, self.p
        local: dict[int, str] = {}
        for n in group:
            node = G[n]
            args = [self.at(a, stage, local) for a in node.args]
            expr = self.formats[node.op](node.op, args, node.attrs, em.k)
            # the spec's name for the value, where it has one (`e12 = ...  # i`)
            named = f"  # {safe_comment(G.names[n])}" if n in G.names else ""
            p.line(f"e{n} = {expr}{named}")
            local[n] = f"e{n}"
            if n in stored:
                expr_, _ = self.ref(n, stage)
                direct = self.block_element(n, expr_, node.type)
                if direct is not None:
                    p.line(f"{direct} = e{n}")
                    for copy in self.mirror_elements(n, stage):
                        p.line(f"{copy} = e{n}   # also stacked with another group")
                    continue
                if n in em.plan.saved and em.writes_tape_directly(n):
                    target = (f"tape{n}[t, r, {'j' if node.type.rank else '0'}]"
                              if stage in LOOP_STAGES else
                              f"tape{n}_r[r, {'j' if node.type.rank else '0'}]")
                else:
                    dest = self.dest(n, stage)
                    col = "j" if node.type.rank else "0"
                    target = f"{dest}[r, {col}]" if node.type.batched else (
                        {0: f"{dest}[0]", 1: f"{dest}[j]", 2: f"{dest}[i, j]"}[node.type.rank])
                p.line(f"{target} = e{n}")

    def step_gemm(self, a: str, panels: str, b: str, out: str) -> None:
        """out = a @ B for one step: in the register tiles over B's panels, or with a
        batch under MR rows (`tiles` is False) one BLAS call on B as an array."""
        p = self.p
        with p.indent("if tiles:"):
            p.line(f"packed_gemm({a}, {panels}, {out}, threads)")
        with p.indent("else:"):
            p.line(f"{self.d.dot}({a}, {b}, {out})")

    def gemm(self, a: str, b: str, out: str, stage: str, rows: bool = True) -> str:
        """The call computing out = a @ b: over all T*B rows with the microkernel pass,
        rnndsl.kernels.gemm.parallel_dot (the kernel's threads, one BLAS thread each)."""
        if rows and self.em.micro and stage not in LOOP_STAGES:
            return f"parallel_dot({a}, {b}, {out}, threads)"
        return f"{self.d.dot}({a}, {b}, {out})"

    def gemm_tn(self, g: str, x: str, out: str, stage: str, tname: str) -> str:
        """out = g^T @ x, a weight gradient summed over rows, with no transposed copy of
        g: cpu kernels pass BLAS the transposed view (g must be C-contiguous)."""
        if not self.d.transposed_views:
            key = (stage, g)
            if key not in self.transposes:      # one transpose serves every weight
                self.transposes[key] = tname
                self.p.line(f"{self.transposes[key]} = transposed({g})")
            return f"{self.d.dot}({self.transposes[key]}, {x}, {out})"
        if self.em.micro and stage not in LOOP_STAGES:
            return f"parallel_dot_tn({g}, {x}, {out}, threads)"
        return f"{self.d.dot}({g}.T, {x}, {out})"

    def emit_matmul_group(self, grp: MatmulGroup, stage: str) -> None:
        em, G, p = self.em, self.em.G, self.p
        g = em.matmul_index[id(grp)]
        vec = self.whole(grp.vector, stage)
        if not G[grp.vector].type.batched:
            for m in grp.members:
                self.alloc(m, stage)
                p.line(f"{self.d.dot}(p_{ident(G[G[m].args[0]].attrs[0])}, {vec}, "
                       f"{self.dest(m, stage)})")
            return
        if em.is_view(grp.vector):
            vec = self.contiguous(vec)
        names = ", ".join(G[G[m].args[0]].attrs[0] for m in grp.members)
        p.comment(f"{names} @ {G.names.get(grp.vector, 'v')}: one GEMM"
                  + (" over all T*B rows" if stage == "pre" else ""))
        target = f"mm{g}" if stage in LOOP_STAGES else f"mm{g}_r"
        if stage not in LOOP_STAGES:
            total = em.group_total(grp)
            p.line(f"mm{g} = {self.d.empty}((T, B, {total}), dtype)")
            p.line(f"mm{g}_r = mm{g}.reshape((R, {total}))")
            self.bind_members(grp, stage)
        if em.micro and stage in LOOP_STAGES:
            self.step_gemm(vec, f"wp{g}", f"wt{g}", target)
            return
        if em.splits_small(grp, stage):
            with p.indent(f"if split{g}:"):
                p.comment("small: member by member, in OpenBLAS's direct kernel")
                offset = Dim.lit(0)
                for k, m in enumerate(grp.members):
                    stop = offset + G[m].type.shape[0]
                    p.line(f"{self.d.dot}({vec}, wt{g}_{k}, mm{g}_{k})")
                    p.line(f"copy2(mm{g}[:, {_dim(offset)}:{_dim(stop)}], mm{g}_{k})")
                    offset = stop
            with p.indent("else:"):
                p.line(f"{self.d.dot}({vec}, wt{g}, {target})")
            return
        p.line(self.gemm(vec, f"wt{g}", target, stage))

    def bind_members(self, grp: MatmulGroup, stage: str) -> None:
        em, G, p = self.em, self.em.G, self.p
        g = em.matmul_index[id(grp)]
        offset = Dim.lit(0)
        for m in grp.members:
            stop = offset + G[m].type.shape[0]
            if stage in LOOP_STAGES:
                p.line(f"w{m} = mm{g}[:, {_dim(offset)}:{_dim(stop)}]")
            else:
                p.line(f"v{m} = mm{g}[:, :, {_dim(offset)}:{_dim(stop)}]")
                p.line(f"v{m}_r = mm{g}_r[:, {_dim(offset)}:{_dim(stop)}]")
            offset = stop

    def emit_other(self, nid: int, stage: str) -> None:
        em, G, p = self.em, self.em.G, self.p
        node = G[nid]
        op, t = node.op, node.type
        loop = stage in LOOP_STAGES
        if op == Op.SLICE:
            start, stop = node.attrs
            src = self.whole(node.args[0], stage)
            if not t.batched:
                p.line(f"v{nid} = {src}[{_dim(start)}:{_dim(stop)}]")
            elif loop:
                p.line(f"w{nid} = {src}[:, {_dim(start)}:{_dim(stop)}]")
            else:
                full, _ = self.ref(node.args[0], stage)
                assert full.endswith("_r"), full
                p.line(f"v{nid}_r = {full}[:, {_dim(start)}:{_dim(stop)}]")
                p.line(f"v{nid} = {full[:-2]}[:, :, {_dim(start)}:{_dim(stop)}]")
            return
        if nid in em.mt_use:
            self.emit_stacked_matvec_t(nid, stage)
            return
        if nid in em.outer_use:
            self.emit_stacked_outer(nid, stage)
            return
        for title in em.titles([nid]):
            p.comment(title)
        if not loop or not t.batched:
            if not (loop and not t.batched and nid in em.loop_allocated):
                self.alloc(nid, stage)
        out = self.dest(nid, stage)
        a = [self.whole(x, stage) for x in node.args]
        if op == Op.MATVEC_T:
            g = a[1]
            if em.is_view(node.args[1]):
                g = self.contiguous(g)
            if em.packs_single(nid):
                self.step_gemm(g, f"wpt{nid}", a[0], out)
            else:
                p.line(self.gemm(g, a[0], out, stage, t.batched))
        elif op == Op.OUTER:
            gt, xt = G[node.args[0]].type, G[node.args[1]].type
            if gt.batched:
                what = G.names.get(node.args[1], G.label(node.args[1]))
                p.comment(f"a weight gradient, g^T {what}, as one GEMM"
                          + (" over all T*B rows" if stage == "post" else ""))
                x = a[1] if not em.is_view(node.args[1]) else self.contiguous(a[1])
                g = a[0] if not em.is_view(node.args[0]) else self.contiguous(a[0])
                p.line(self.gemm_tn(g, x, out, stage, f"gT{node.args[0]}"))
            else:
                axes = [("i", _dim(gt.shape[0]), True), ("j", _dim(xt.shape[0]), True)]
                with self.loops(axes):
                    p.line(f"{out}[i, j] = {a[0]}[i] * {a[1]}[j]")
        elif op == Op.UNBROADCAST:
            self.emit_unbroadcast(nid, stage, a[0], out)
        elif op in (Op.SUM, Op.MEAN):
            self.emit_reduce(nid, stage, a[0], out, op == Op.MEAN)
        elif op in (Op.SOFTMAX, Op.LOG_SOFTMAX):
            self.emit_softmax(nid, stage, a[0], out, op == Op.LOG_SOFTMAX)
        elif op == Op.CONCAT:
            offset = Dim.lit(0)
            for x, arg in zip(a, node.args):
                at = G[arg].type
                stop = offset + at.shape[0]
                if t.batched and not at.batched:
                    p.line(f"copy_rows({out}[:, {_dim(offset)}:{_dim(stop)}], {x})")
                elif t.batched:
                    p.line(f"copy2({out}[:, {_dim(offset)}:{_dim(stop)}], {x})")
                else:
                    p.line(f"copy1({out}[{_dim(offset)}:{_dim(stop)}], {x})")
                offset = stop
        elif op == Op.PAD:
            start, total = node.attrs
            stop = start + G[node.args[0]].type.shape[0]
            if t.batched:
                p.line(f"fill2({out}, {em.k(0.0)})")
                p.line(f"copy2({out}[:, {_dim(start)}:{_dim(stop)}], {a[0]})")
            else:
                p.line(f"fill1({out}, {em.k(0.0)})")
                p.line(f"copy1({out}[{_dim(start)}:{_dim(stop)}], {a[0]})")
        elif op == Op.MATVEC:
            p.line(f"{self.d.dot}({a[0]}, {a[1]}, {out})")
        else:
            raise AssertionError(f"no CPU emitter for {op}")

    def cotangent_buffer(self, i: int, stage: str) -> str:
        """The stacked cotangents of group i: this step's rows, or all T*B rows."""
        cg = self.em.plan.cotangent_groups[i]
        if stage in LOOP_STAGES:
            return f"tgc{i}[t]" if cg.taped else f"gc{i}"
        return f"tgc{i}_r"

    def emit_stacked_matvec_t(self, nid: int, stage: str) -> None:
        """sum_k g_k @ W_k as one GEMM into the last term computed; the others stay zero."""
        em, p = self.em, self.p
        i, u = em.mt_use[nid]
        use = em.plan.cotangent_groups[i].uses[u]
        first = use.matvec_t[0]
        if em.elided_zero(nid):
            return
        if stage not in LOOP_STAGES:
            self.alloc(nid, stage)
            if nid != first:
                p.line(f"fill2({self.dest(nid, stage)}, {em.k(0.0)})")
        if nid != first:
            return
        names = ", ".join(em.G[w].attrs[0] for w in use.weights)
        p.comment(f"sum of g_k @ W_k for W_k in [{names}]: one GEMM (the other terms stay 0)")
        buffer, dest = self.cotangent_buffer(i, stage), self.dest(nid, stage)
        if em.micro and em.per_step_cotangent_gemm(i, u):
            self.step_gemm(buffer, f"wsp{i}_{u}", f"ws{i}_{u}", dest)
            return
        if stage in LOOP_STAGES and em.splits_cotangents(i, u):
            with p.indent(f"if splitc{i}_{u}:"):
                p.comment("small: term by term, in OpenBLAS's direct kernel")
                cg = em.plan.cotangent_groups[i]
                for k, g in enumerate(cg.cotangents):
                    start, stop = em.cg_cols[(i, g)]
                    p.line(f"copy2(gk{i}_{u}_{k}, {buffer}[:, {start}:{stop}])")
                    if k == 0:
                        p.line(f"{self.d.dot}(gk{i}_{u}_{k}, wsk{i}_{u}_{k}, {dest})")
                    else:
                        p.line(f"{self.d.dot}(gk{i}_{u}_{k}, wsk{i}_{u}_{k}, mt{i}_{u})")
                        p.line(f"add_into2({dest}, mt{i}_{u})")
            with p.indent("else:"):
                p.line(f"{self.d.dot}({buffer}, ws{i}_{u}, {dest})")
            return
        p.line(self.gemm(buffer, f"ws{i}_{u}", dest, stage))

    def emit_stacked_outer(self, nid: int, stage: str) -> None:
        """Every dW_k = g_k^T v of one GEMM group as one GEMM, split by row blocks."""
        em, G, p = self.em, self.em.G, self.p
        i, u = em.outer_use[nid]
        use = em.plan.cotangent_groups[i].uses[u]
        if use.outers[0] in self.stacked_done:
            return
        self.stacked_done.add(use.outers[0])
        names = ", ".join(G[w].attrs[0] for w in use.weights)
        cols = _dim(G[use.vector].type.shape[0])
        p.comment(f"the gradients of [{names}] as one GEMM over all T*B rows")
        buf = self.cotangent_buffer(i, stage)
        vec = self.whole(use.vector, stage)
        if em.is_view(use.vector):
            vec = self.contiguous(vec)
        p.line(f"dwc{i}_{u} = {self.d.empty}(({em.cg_total[i]}, {cols}), dtype)")
        p.line(self.gemm_tn(buf, vec, f"dwc{i}_{u}", stage, f"gT{i}"))
        for o, g in zip(use.outers, em.plan.cotangent_groups[i].cotangents):
            start, stop = em.cg_cols[(i, g)]
            p.line(f"v{o} = dwc{i}_{u}[{start}:{stop}, :]")

    def emit_unbroadcast(self, nid, stage, src, out) -> None:
        G, p, k = self.em.G, self.p, self.em.k
        node = G[nid]
        target, gt = node.attrs[0], G[node.args[0]].type
        if gt.rank and (target.batched or not gt.batched):
            # a sum over the features only, (rows, n) -> (rows, 1) or (n,) -> (): `sum`
            self.emit_reduce(nid, stage, src, out, mean=False)
            return
        p.line(f"fill{2 if node.type.batched else 1}({out}, {k(0.0)})")
        gcol = "j" if gt.rank else "0"
        rows, n = self.rows(stage), self.size(node.args[0])
        if self.d.vector_row_sums and gt.rank and not target.rank:
            # (rows, n) -> a scalar: each row in vector partial sums (kernels.row_sum)
            with self.loops([("r", rows, False)]):
                p.line(f"{out}[0] += row_sum({src}[r], {k(0.0)})")
            return
        if gt.batched:
            # the summed axes are reductions: a parallel target keeps them in one thread
            if target.batched:      # feature sum only: (rows, n) -> (rows, 1)
                with self.loops([("r", rows, True), ("j", n, False)]):
                    p.line(f"{out}[r, 0] += {src}[r, {gcol}]")
            elif target.rank:       # batch sum: (rows, n) -> (n,)
                with self.loops([("r", rows, False), ("j", n, True)]):
                    p.line(f"{out}[j] += {src}[r, {gcol}]")
            else:
                with self.loops([("r", rows, False), ("j", n, False)]):
                    p.line(f"{out}[0] += {src}[r, {gcol}]")
        else:
            with self.loops([("j", n, False)]):
                p.line(f"{out}[0] += {src}[j]")

    def emit_reduce(self, nid, stage, src, out, mean: bool) -> None:
        G, p, k = self.em.G, self.p, self.em.k
        node = G[nid]
        n = self.size(node.args[0])
        scale = f" / {k(('dim', G[node.args[0]].type.shape[0]))}" if mean else ""
        if self.d.vector_row_sums:      # in vector partial sums (kernels.row_sum)
            if node.type.batched:
                with self.loops([("r", self.rows(stage), True)]):
                    p.line(f"{out}[r, 0] = row_sum({src}[r], {k(0.0)}){scale}")
            else:
                p.line(f"{out}[0] = row_sum({src}, {k(0.0)}){scale}")
            return
        if node.type.batched:
            with self.loops([("r", self.rows(stage), True)]):
                p.line(f"acc = {k(0.0)}")
                with p.indent(f"for j in range({n}):"):
                    p.line(f"acc += {src}[r, j]")
                p.line(f"{out}[r, 0] = acc{scale}")
        else:
            with self.loops([]):
                p.line(f"acc = {k(0.0)}")
                with p.indent(f"for j in range({n}):"):
                    p.line(f"acc += {src}[j]")
                p.line(f"{out}[0] = acc{scale}")

    def emit_softmax(self, nid, stage, src, out, log: bool) -> None:
        G = self.em.G
        node = G[nid]
        n = self.size(nid)
        batched = node.type.batched
        row = "r, " if batched else ""
        with self.loops([("r", self.rows(stage), True)] if batched else []):
            self.softmax_body(src, out, row, n, log)

    def softmax_body(self, src: str, out: str, row: str, n: str, log: bool) -> None:
        p, k = self.p, self.em.k
        p.line(f"top = {src}[{row}0]")
        with p.indent(f"for j in range(1, {n}):"):
            p.line(f"top = max(top, {src}[{row}j])")
        p.line(f"acc = {k(0.0)}")
        with p.indent(f"for j in range({n}):"):
            p.line(f"acc += math.exp({src}[{row}j] - top)")
        if log:
            p.line("lse = top + math.log(acc)")
            with p.indent(f"for j in range({n}):"):
                p.line(f"{out}[{row}j] = {src}[{row}j] - lse")
        else:
            with p.indent(f"for j in range({n}):"):
                p.line(f"{out}[{row}j] = math.exp({src}[{row}j] - top) / acc")

    def contiguous(self, expr: str) -> str:
        return f"{self.d.contiguous}({expr})" if self.d.contiguous else expr


class _Emitter:
    kernel_class = _Kernel
    dialect = CPU

    def __init__(self, plan: Plan, spec_path: str, spec_text: str, digest: str):
        self.plan, self.G = plan, plan.graph
        self.spec_path, self.spec_text, self.digest = spec_path, spec_text, digest
        self.consts: list[tuple] = []
        self._const_names: dict[tuple, str] = {}
        step, grads = plan.step, plan.grads
        self.forward_nodes = set(self.G.needed(step.roots()))
        self.matmul_index: dict[int, int] = {}
        for s, groups in plan.matmuls.items():
            for grp in groups:
                self.matmul_index[id(grp)] = len(self.matmul_index)
        self.users: dict[int, set[int]] = {}
        everything = self.G.needed(step.roots() + grads.roots())
        for n in everything:
            for a in self.G[n].args:
                self.users.setdefault(a, set()).add(n)
        self.roots = set(step.roots()) | set(grads.roots())
        self.loop_allocated: set[int] = set()
        self.titles_by_node = self._titles()
        self.equation_of, self.equation_order = self._equations_of_nodes()
        # stacked cotangents (plan.cotangent_groups): g -> its home (group, column range);
        # (group, g) -> g's columns in that group; g -> the other groups' copies of it
        self.cg_block: dict[int, tuple[int, str, str]] = {}
        self.cg_cols: dict[tuple[int, int], tuple[str, str]] = {}
        self.cg_mirrors: dict[int, list[tuple[int, str]]] = {}
        self.cg_total: dict[int, str] = {}
        self.mt_use: dict[int, tuple[int, int]] = {}       # MATVEC_T -> (group, use)
        self.outer_use: dict[int, tuple[int, int]] = {}    # OUTER -> (group, use)
        for i, cg in enumerate(plan.cotangent_groups):
            offset = Dim.lit(0)
            for g in cg.cotangents:
                stop = offset + self.G[g].type.shape[0]
                self.cg_cols[(i, g)] = (_dim(offset), _dim(stop))
                if g in self.cg_block:
                    self.cg_mirrors.setdefault(g, []).append((i, _dim(offset)))
                else:
                    self.cg_block[g] = (i, _dim(offset), _dim(stop))
                offset = stop
            self.cg_total[i] = _dim(offset)
            for u, use in enumerate(cg.uses):
                for m in use.matvec_t or []:
                    self.mt_use[m] = (i, u)
                for o in use.outers or []:
                    self.outer_use[o] = (i, u)
        self.member_block: dict[int, tuple[int, str]] = {}   # matmul result -> (group, column)
        for groups in plan.matmuls.values():
            for grp in groups:
                if not self.G[grp.vector].type.batched:
                    continue
                offset = Dim.lit(0)
                for m in grp.members:
                    self.member_block[m] = (self.matmul_index[id(grp)], _dim(offset))
                    offset = offset + self.G[m].type.shape[0]
        self._fold_zero_sums(everything)

    def _fold_zero_sums(self, everything: list[int]) -> None:
        """Sums whose other terms are zero (the terms of a stacked g_k @ W_k sum whose one
        GEMM wrote the whole sum into its first term) need no code: a sum of zeros is 0
        (`zero_sums`), and a + 0 is a (`same_as`), read wherever a lives. Without this an
        LSTM's backward added three zeros to every element of dh and of dx, in a loop of
        its own and a copy (k1 is a value read at run time: LLVM cannot drop x + 0.0,
        which is not x for x = -0.0, and the fold here changes no value but that sign)."""
        G, plan = self.G, self.plan
        self.zero_sums: set[int] = set()
        self.same_as: dict[int, int] = {}

        def zero(n: int) -> bool:
            return self.zero_term(n) or n in self.zero_sums

        def same_place(a: int, n: int) -> bool:
            """Whether n's readers can read a where they would read n."""
            if a not in plan.stage:        # a leaf: a param, an input, a state, a seed
                return G[a].op not in (Op.CONST, Op.DIM)
            return (plan.stage[a] == plan.stage[n]
                    and (a in self.forward_nodes) == (n in self.forward_nodes))

        for n in sorted(everything):       # ids grow with the graph: operands come first
            node = G[n]
            if node.op != Op.ADD or n in plan.saved:
                continue
            args = [self.same_as.get(a, a) for a in node.args]
            rest = [a for a in args if not zero(a)]
            if not rest:
                if n not in self.roots and all(G[u].op in ELEMENTWISE
                                               for u in self.users.get(n, ())):
                    self.zero_sums.add(n)
            elif len(rest) == 1 and G[rest[0]].type == node.type and same_place(rest[0], n):
                self.same_as[n] = rest[0]
        # what reads an alias reads its target: the target keeps an array for them
        for n, a in self.same_as.items():
            self.users.setdefault(a, set()).update(self.users.get(n, ()))
        self.alias_roots = {self.same_as[r] for r in self.roots if r in self.same_as}

    def views_state_buffer(self, nid: int, leaf: Op) -> bool:
        """Whether node nid's array is a loop's state buffer, or a slice of one: s_* in
        the forward (leaf STATE), ds_* in BPTT (leaf SEED, of a state). Writing the next
        states straight into those buffers would then overwrite what another state's
        copy still reads."""
        while True:
            nid = self.same_as.get(nid, nid)
            node = self.G[nid]
            if node.op != Op.SLICE:
                break
            nid = node.args[0]
        if leaf == Op.SEED:
            return node.op == Op.SEED and node.attrs[0] != "output"
        return node.op == leaf

    def folded(self, nid: int) -> bool:
        """A node that needs no code of its own (see _fold_zero_sums)."""
        return nid in self.same_as or nid in self.zero_sums

    # ---------------------------------------------------------------- helpers
    def k(self, value) -> str:
        """A typed constant: a float, or ("dim", Dim) for a size as a float."""
        key = value if isinstance(value, tuple) else ("value", float(value))
        if key not in self._const_names:
            self._const_names[key] = f"k{len(self.consts)}"
            self.consts.append(key)
        return self._const_names[key]

    def const_of(self, nid: int) -> str:
        node = self.G[nid]
        if node.op == Op.CONST:
            return self.k(node.attrs[0])
        return self.k(("dim", node.attrs[0]))

    def writes_tape_directly(self, nid: int) -> bool:
        return self.G[nid].op in ELEMENTWISE

    def is_view(self, nid: int) -> bool:
        node = self.G[nid]
        # slices, stacked cotangents and matmul results (column blocks of a GEMM's output)
        return node.op == Op.SLICE or nid in self.cg_block or nid in self.member_block

    def inputs_only(self, post: list[int]) -> set[int]:
        """The deferred nodes that only the input sequences' gradients need. Whole units
        (a fused loop, a GEMM group, a stacked GEMM) stay together: a unit any other
        gradient needs is computed always, with everything it reads."""
        grads, G = self.plan.grads, self.G
        units: dict[int, set[int]] = {}
        for group in self.plan.fused.get("post", []):
            for n in group:
                units[n] = set(group)
        for grp in self.plan.matmuls.get("post", []):
            for n in grp.members:
                units[n] = set(grp.members)
        for cg in self.plan.cotangent_groups:
            for use in cg.uses:
                for members in (use.matvec_t, use.outers):
                    for n in members or ():
                        units[n] = set(members)
        mine = set(post)
        roots = [n for n in (*grads.params.values(), *grads.states.values()) if n is not None]
        shared = set(G.needed(roots)) & mine
        while True:
            grown = set(shared)
            for n in shared:
                grown |= units.get(n, set()) & mine
            grown = set(G.needed(sorted(grown))) & mine
            if grown == shared:
                return mine - shared
            shared = grown

    def zero_term(self, nid: int) -> bool:
        """A term g_k @ W_k of a stacked sum whose GEMM wrote the whole sum into the first
        term: its value is zero."""
        use = self.mt_use.get(nid)
        if use is None:
            return False
        return nid != self.plan.cotangent_groups[use[0]].uses[use[1]].matvec_t[0]

    def elided_zero(self, nid: int) -> bool:
        """A zero term that no array needs to hold: only elementwise ops read it (as the
        literal 0, which folds away), and it is neither saved nor a result."""
        return (self.zero_term(nid) and nid not in self.roots and nid not in self.plan.saved
                and all(self.G[u].op in ELEMENTWISE for u in self.users.get(nid, ())))

    def needs_array(self, nid: int, group: set[int]) -> bool:
        """Whether a node of a fused group is written to an array: something outside the
        group reads it. A folded user emits no code and reads nothing itself: a zero sum
        reads nothing, and an alias (same_as) is read through, so its own users count.
        Deciding this the same way whether `group` holds the folded nodes or not keeps
        the loop's allocations (the whole group) and its stores (the nodes emitted) in
        step: they once disagreed and stored into an array never allocated."""
        if self.folded(nid):
            return False
        if nid in self.roots or nid in self.plan.saved or nid in self.alias_roots:
            return True
        return self._read_outside(nid, nid, group, set())

    def _read_outside(self, nid: int, via: int, group: set[int], seen: set[int]) -> bool:
        for user in self.users.get(via, ()):
            if user in seen:
                continue
            seen.add(user)
            if self.folded(user):
                if self._alias_of(user) == nid and self._read_outside(nid, user, group, seen):
                    return True
                continue
            if user not in group:
                return True
        return False

    def _alias_of(self, nid: int) -> int:
        while nid in self.same_as:
            nid = self.same_as[nid]
        return nid

    @property
    def micro(self) -> bool:
        """Whether per-step GEMMs run in rnndsl.kernels.gemm's register tiles (cpu)."""
        return self.dialect.register_tiles and "microkernel" in self.plan.passes

    def packs_single(self, nid: int) -> bool:
        """Whether a lone g @ W in the backward loop (one no stacked group took, like
        GRU's g @ U_n) runs in the register tiles over W packed once per call."""
        node = self.G[nid]
        return (self.micro and node.op == Op.MATVEC_T and nid not in self.mt_use
                and node.type.batched and self.plan.stage.get(nid) in LOOP_STAGES
                and self.G[node.args[0]].op == Op.PARAM)

    def per_step_cotangent_gemm(self, i: int, u: int) -> bool:
        """Whether use u of cotangent group i is a stacked GEMM inside the backward loop."""
        use = self.plan.cotangent_groups[i].uses[u]
        return (bool(use.matvec_t) and self.G[use.vector].type.batched
                and self.plan.stage.get(use.matvec_t[0]) in LOOP_STAGES)

    def splits_cotangents(self, i: int, u: int) -> bool:
        """Whether a stacked cotangent GEMM gets a term-by-term path for small B (the
        BLAS path only: the register tiles have no such cliff)."""
        return (self.dialect.small_batch_splits and not self.micro
                and len(self.plan.cotangent_groups[i].cotangents) > 1
                and self.per_step_cotangent_gemm(i, u))

    def splits_small(self, grp: MatmulGroup, stage: str) -> bool:
        """Whether a per-step stacked GEMM gets a member-by-member path for small B."""
        return (self.dialect.small_batch_splits and not self.micro and stage in LOOP_STAGES
                and len(grp.members) > 1 and self.G[grp.vector].type.batched)

    def group_total(self, grp: MatmulGroup) -> str:
        total = Dim.lit(0)
        for m in grp.members:
            total = total + self.G[m].type.shape[0]
        return _dim(total)

    def _titles(self) -> dict[int, str]:
        """node id -> the equation it completes, as the spec writes it."""
        out = {}
        step = self.plan.step
        for d in step.cell.definitions:
            text = f"{d.name}{chr(39) if d.kind == 'next' else ''} = {printer.expr(d.expr)}"
            nid = step.next_state.get(d.name) if d.kind == "next" else None
            if nid is None:
                for n, name in self.G.names.items():
                    if name == (d.name + "'" if d.kind == "next" else d.name):
                        nid = n
                        break
            if nid is not None:
                out[nid] = text
        return out

    def titles(self, group: list[int]) -> list[str]:
        """The comments over a fused loop: in the forward, the equations its nodes
        complete; in the backward, the equations whose gradients its nodes are (from
        the last equation back, as the backward runs), each once."""
        done = [self.titles_by_node[n] for n in group if n in self.titles_by_node]
        sources = {f for n in group if (f := self.G.adjoint_of.get(n)) is not None}
        through = {self.equation_of[f] for f in sources if f in self.equation_of}
        ordered = [t for t in reversed(self.equation_order) if t in through]
        leaves = sorted({f"{self.G[f].op.value} {self.G[f].attrs[0]}" for f in sources
                         if self.G[f].op in (Op.STATE, Op.INPUT, Op.PARAM)})
        return (done + [f"gradient through {t}" for t in ordered]
                + [f"gradient of {leaf}: its uses summed" for leaf in leaves])

    def _equations_of_nodes(self) -> tuple[dict[int, str], list[str]]:
        """Each forward node that is not a leaf -> the first equation (in the spec's
        order) that needs it; and the equations in that order."""
        owner: dict[int, str] = {}
        order: list[str] = []
        by_text = {t: n for n, t in self.titles_by_node.items()}
        for d in self.plan.step.cell.definitions:
            text = f"{d.name}{chr(39) if d.kind == 'next' else ''} = {printer.expr(d.expr)}"
            nid = by_text.get(text)
            if nid is None:
                continue
            order.append(text)
            for a in self.G.needed([nid]):
                if self.G[a].op not in LEAVES:
                    owner.setdefault(a, text)
        return owner, order

    # ---------------------------------------------------------------- kernels
    def kernel_nodes(self, which: str) -> dict[str, list[int]]:
        plan = self.plan
        if which == "forward":
            wanted = set(self.G.needed(plan.step.roots()))
            stages = ("const", "pre", "fwd")
        else:
            grads_needed = set(self.G.needed(plan.grads.roots()))
            wanted = {n for n in grads_needed
                      if plan.stage.get(n) in ("bwd", "post")
                      or (plan.stage.get(n) in ("pre", "const") and n not in self.forward_nodes)}
            # const nodes are recomputed in each kernel that reads them
            for n in list(wanted):
                for a in self.G.needed([n]):
                    if plan.stage.get(a) == "const":
                        wanted.add(a)
            stages = ("const", "pre", "bwd", "post")
        return {s: [n for n in plan.order[s] if n in wanted] for s in stages}

    def emit(self) -> Emitted:
        step = self.plan.step
        cell = step.cell
        fwd = self.kernel_nodes("forward")
        bwd = self.kernel_nodes("backward")
        fwd_body, fwd_args = self.forward_kernel(fwd)
        bwd_body, bwd_args = self.backward_kernel(bwd)
        fwd_body = prune_dead_views(self._fill_consts(fwd_body))
        bwd_body = prune_dead_views(self._fill_consts(bwd_body))
        name = cell.name
        meta = Printer()
        meta.line(f"{name}_META = dict(")
        with meta.indent():
            meta.line(f"spec_path={self.spec_path!r},")
            meta.line(f"spec_text={self.spec_text!r},")
            meta.line(f"passes={tuple(passes_for(self.plan.passes, self.dialect.target))!r},")
            meta.line(f"consts={[_const_repr(c) for c in self.consts]!r},")
            meta.line(f"tapes={[(n, _dim_repr(d)) for n, d in self._tapes()]!r},")
            meta.line(f"forward_args={fwd_args!r},")
            meta.line(f"backward_args={bwd_args!r},")
            meta.line(f"forward=forward_{name},")
            meta.line(f"backward=backward_{name},")
        meta.line(")")
        source = fwd_body + "\n\n" + bwd_body + "\n\n" + meta.text()
        return Emitted(source, fwd_args, bwd_args, self.consts, self._tapes())

    def _fill_consts(self, body: str) -> str:
        lines = []
        for line in body.splitlines():
            if line.strip() == CONSTS_PLACEHOLDER:
                indent = line[:len(line) - len(line.lstrip())]
                for i, (kind, value) in enumerate(self.consts):
                    what = f"size {value}" if kind == "dim" else repr(value)
                    lines.append(f"{indent}k{i} = consts[{i}]  # {what}")
            else:
                lines.append(line)
        return "\n".join(lines) + "\n"

    def _tapes(self) -> list[tuple[int, Dim]]:
        tapes = sorted(n for n in self.plan.saved if self.plan.stage[n] in ("pre", "fwd"))
        return [(n, self.G[n].type.shape[0] if self.G[n].type.shape else Dim.lit(1))
                for n in tapes]

    def signature(self, which: str) -> list[tuple]:
        step, plan = self.plan.step, self.plan
        cell = step.cell
        args: list[tuple] = [("dim", d) for d in cell.dims]
        args += [("T",), ("B",), ("consts",)]
        if self.micro:
            args += [("threads",)]    # for rnndsl.kernels.gemm's parallel loops
        args += [("param", d.name) for d in cell.params]
        args += [("input", d.name) for d in cell.inputs]
        tapes = sorted(n for n in plan.saved if plan.stage[n] in ("pre", "fwd"))
        if which == "forward":
            args += [("state0", d.name) for d in cell.states]
            args += [("output", name) for name in step.outputs]
            args += [("final", d.name) for d in cell.states]
        else:
            if self.dialect.skips_input_grads:
                args += [("input_grads",)]    # whether to compute the inputs' gradients
            args += [("output_grad", name) for name in step.outputs]
            args += [("final_grad", d.name) for d in cell.states]
            args += [("param_grad", d.name) for d in cell.params]
            args += [("input_grad", d.name) for d in cell.inputs]
            args += [("state0_grad", d.name) for d in cell.states]
        args += [("hist", name) for name in sorted(plan.saved_states)]
        args += [("tape", n) for n in tapes]
        return args

    @staticmethod
    def arg_name(arg: tuple) -> str:
        kind = arg[0]
        names = {"dim": "dim_{}", "param": "p_{}", "input": "in_{}", "state0": "s0_{}",
                 "output": "out_{}", "final": "fin_{}", "output_grad": "dout_{}",
                 "final_grad": "dfin_{}", "param_grad": "dp_{}", "input_grad": "din_{}",
                 "state0_grad": "ds0_{}", "hist": "hist_{}", "tape": "tape{}"}
        if kind in ("T", "B", "consts", "threads"):
            return kind
        if kind == "input_grads":
            return "want_din"
        return names[kind].format(ident(arg[1]))

    def _prologue(self, kern: _Kernel, args: list[tuple]) -> None:
        p = kern.p
        p.line("R = T * B")
        p.line("dtype = consts.dtype")
        if self.micro:
            p.line(f"tiles = B >= MR   # per-step GEMMs in rnndsl.kernels.gemm's tiles ({MR}+ rows)")
        p.line(CONSTS_PLACEHOLDER)   # filled in by emit(): constants are found as we go
        cell = self.plan.step.cell
        sizes = {d.name: d for d in (*cell.inputs, *cell.states)}
        for arg in args:
            kind = arg[0]
            if kind in ("input", "hist", "output", "output_grad", "input_grad"):
                name = self.arg_name(arg)
                if kind in ("output", "output_grad"):
                    size = kern.size(self.plan.step.outputs[arg[1]])
                else:
                    t = sizes[arg[1]].type
                    size = _dim(t.shape[0])
                p.line(f"{name}_r = {name}.reshape((R, {size}))")
            elif kind == "tape":
                n = arg[1]
                p.line(f"tape{n}_r = tape{n}.reshape((R, {kern.size(n)}))")

    def _docstring(self, kern: _Kernel, which: str, args: list[tuple]) -> None:
        plan = self.plan
        p = kern.p
        on = ", ".join(passes_for(plan.passes, self.dialect.target)) or "none"
        p.line('"""' + (f"Forward pass of {plan.step.cell.name} over T steps."
                        if which == "forward" else
                        f"BPTT for {plan.step.cell.name}: gradients of params, inputs and "
                        "initial states."))
        p.line("")
        p.line("Loop nest:")
        for line in explain_lines(plan, which):
            p.line("    " + safe_docstring(line))
        named = [f"tape{n} = {self.G.names[n]}" for n in sorted(self.plan.saved)
                 if ("tape", n) in args and n in self.G.names]
        if named:
            p.line("")
            p.line("Saved values with a name in the spec:")
            # each `tapeN = name` kept whole on a line (no-break spaces while wrapping)
            text = ", ".join(item.replace(" ", "\xa0") for item in named)
            for line in textwrap.wrap(text, 80, initial_indent="  ", subsequent_indent="  "):
                p.line(safe_docstring(line.replace("\xa0", " ")))
        p.line("")
        p.line(f"Optimizations: {on}.")
        p.line('"""')

    def forward_kernel(self, nodes: dict[str, list[int]]) -> tuple[str, list[tuple]]:
        kern = self.kernel_class(self, "forward")
        p = kern.p
        args = self.signature("forward")
        step, plan = self.plan.step, self.plan
        hoisted = {name for name, nid in step.outputs.items()
                   if plan.stage.get(nid) == "pre" or step.graph[nid].op == Op.INPUT}
        with self._open(kern, "forward", args, nodes,
                        "hoisted out of the time loop: no state, all T*B rows at once",
                        weight_stages=("pre", "fwd")):
            for name in hoisted:
                p.line(f"copy2(out_{ident(name)}_r, {kern.whole(step.outputs[name], 'pre')})")
            self._loop_arrays(kern, "fwd", nodes["fwd"])
            # The next states: each straight into s_*, unless one is another state as it
            # stood (a state handed on unchanged: s_*), which needs the new values apart
            # (nx_*) until all are written.
            next_src = {name: kern.whole(nid, "fwd") for name, nid in step.next_state.items()}
            buffered = any(self.views_state_buffer(nid, Op.STATE)
                           for nid in step.next_state.values())
            for d in step.cell.states:
                p.line(f"s_{ident(d.name)} = {self.dialect.clone.format('s0_' + ident(d.name))}")
                if buffered:
                    p.line(f"nx_{ident(d.name)} = {self.dialect.empty_like}(s0_{ident(d.name)})")
            with p.indent("for t in range(T):"):
                for name in sorted(plan.saved_states):
                    p.line(f"copy2(hist_{ident(name)}[t], s_{ident(name)})")
                kern.emit_stage("fwd", nodes["fwd"])
                for name, nid in step.outputs.items():
                    if name not in hoisted:
                        p.line(f"copy2(out_{ident(name)}[t], {kern.whole(nid, 'fwd')})")
                into = "nx_" if buffered else "s_"
                for name, src in next_src.items():
                    p.line(f"copy2({into}{ident(name)}, {src})")
                if buffered:
                    for name in step.next_state:
                        p.line(f"copy2(s_{ident(name)}, nx_{ident(name)})")
            for d in step.cell.states:
                p.line(f"copy2(fin_{ident(d.name)}, s_{ident(d.name)})")
        return p.text(), args

    def backward_kernel(self, nodes: dict[str, list[int]]) -> tuple[str, list[tuple]]:
        kern = self.kernel_class(self, "backward")
        p = kern.p
        args = self.signature("backward")
        step, plan, grads = self.plan.step, self.plan, self.plan.grads
        G = self.G
        with self._open(kern, "backward", args, nodes,
                        "no cotangent and no state: all T*B rows at once"):
            for n in sorted(plan.saved):
                if plan.stage[n] == "bwd" and n not in self.cg_block:
                    p.line(f"tape{n} = {self.dialect.empty}((T, B, {kern.size(n)}), dtype)")
                    p.line(f"tape{n}_r = tape{n}.reshape((R, {kern.size(n)}))")
            self._cotangent_buffers(kern)
            self._packed_single_weights(kern, nodes["bwd"])
            for name in sorted(plan.saved_next_seeds):
                size = _dim(step.graph[step.states[name]].type.shape[0])
                p.line(f"dnext_{ident(name)} = {self.dialect.empty}((T, B, {size}), dtype)")
                p.line(f"dnext_{ident(name)}_r = dnext_{ident(name)}.reshape((R, {size}))")
            self._loop_arrays(kern, "bwd", nodes["bwd"])
            # The state gradients a step hands back: each straight into ds_*, unless one
            # is computed from another state's ds_* as it stood (a state passed on
            # unchanged), which needs the new values apart (nds_*) until all are done.
            state_src = {name: None if nid is None else kern.whole(nid, "bwd")
                         for name, nid in grads.states.items()}
            buffered = any(nid is not None and self.views_state_buffer(nid, Op.SEED)
                           for nid in grads.states.values())
            for d in step.cell.states:
                p.line(f"ds_{ident(d.name)} = {self.dialect.clone.format('dfin_' + ident(d.name))}")
                if buffered:
                    p.line(f"nds_{ident(d.name)} = {self.dialect.empty_like}(ds_{ident(d.name)})")
            with p.indent("for t in range(T - 1, -1, -1):"):
                for name in sorted(plan.saved_next_seeds):
                    p.line(f"copy2(dnext_{ident(name)}[t], ds_{ident(name)})")
                kern.emit_stage("bwd", nodes["bwd"])
                for name, nid in grads.params.items():
                    if nid is not None and plan.stage.get(nid) != "post":
                        nd = 1 if G[nid].type.rank < 2 else 2
                        p.line(f"add_into{nd}(dp_{ident(name)}, {kern.whole(nid, 'bwd')})")
                for name, nid in grads.inputs.items():
                    if nid is not None and plan.stage.get(nid) != "post":
                        p.line(f"copy2(din_{ident(name)}[t], {kern.whole(nid, 'bwd')})")
                into = "nds_" if buffered else "ds_"
                for name, src in state_src.items():
                    if src is None:
                        p.line(f"fill2({into}{ident(name)}, {self.k(0.0)})")
                    else:      # never ds_<name> itself unless buffered (views_state_buffer)
                        p.line(f"copy2({into}{ident(name)}, {src})")
                if buffered:
                    for name in grads.states:
                        p.line(f"copy2(ds_{ident(name)}, nds_{ident(name)})")
            for d in step.cell.states:
                p.line(f"copy2(ds0_{ident(d.name)}, ds_{ident(d.name)})")
            if nodes["post"]:
                p.comment("deferred out of the backward loop: all T*B rows at once")
                inputs_only = self.inputs_only(nodes["post"])
                kern.emit_stage("post", [n for n in nodes["post"] if n not in inputs_only])
                for name, nid in grads.params.items():
                    if nid is not None and plan.stage.get(nid) == "post":
                        nd = 1 if G[nid].type.rank < 2 else 2
                        p.line(f"copy{nd}(dp_{ident(name)}, {kern.whole(nid, 'post')})")
                din = [(name, nid) for name, nid in grads.inputs.items()
                       if nid is not None and plan.stage.get(nid) == "post"]
                if din and self.dialect.skips_input_grads:
                    with p.indent("if want_din:"):
                        p.comment("the input sequences' gradients, when the caller wants them")
                        kern.emit_stage("post", [n for n in nodes["post"] if n in inputs_only])
                        for name, nid in din:
                            p.line(f"copy2(din_{ident(name)}_r, {kern.whole(nid, 'post')})")
                else:
                    kern.emit_stage("post", [n for n in nodes["post"] if n in inputs_only])
                    for name, nid in din:
                        p.line(f"copy2(din_{ident(name)}_r, {kern.whole(nid, 'post')})")
        return p.text(), args

    @contextmanager
    def _open(self, kern: _Kernel, which: str, args, nodes, pre_comment: str,
              weight_stages: tuple = ()):
        """A kernel's decorator, signature, docstring, prologue and stacked weights, then
        its const and hoisted stages; the body follows inside the `with`."""
        p = kern.p
        if self.dialect.decorator:
            p.line(self.dialect.decorator)
        names = ", ".join(self.arg_name(a) for a in args)
        with p.indent(f"def {which}_{self.plan.step.cell.name}({names}):"):
            self._docstring(kern, which, args)
            self._prologue(kern, args)
            self._weights(kern, weight_stages)
            if nodes["const"]:
                p.comment("once per call: parameters only")
                kern.emit_stage("const", nodes["const"])
            if nodes["pre"]:
                p.comment(pre_comment)
                kern.emit_stage("pre", nodes["pre"])
            yield

    def _cotangent_buffers(self, kern: _Kernel) -> None:
        """One buffer per group of stacked cotangents (views for each g_k), and the
        stacked weights [W_1; ...; W_n] their GEMMs multiply by."""
        G, p = self.G, kern.p
        for i, cg in enumerate(self.plan.cotangent_groups):
            total = self.cg_total[i]
            if cg.taped:
                p.line(f"tgc{i} = {self.dialect.empty}((T, B, {total}), dtype)")
                p.line(f"tgc{i}_r = tgc{i}.reshape((R, {total}))")
            else:
                p.line(f"gc{i} = {self.dialect.empty}((B, {total}), dtype)")
            for g in cg.cotangents:
                if self.cg_block[g][0] != i:
                    continue    # a mirror: g's views name its home group's columns
                _, start, stop = self.cg_block[g]
                if cg.taped:
                    p.line(f"tape{g} = tgc{i}[:, :, {start}:{stop}]")
                    p.line(f"tape{g}_r = tgc{i}_r[:, {start}:{stop}]")
                else:
                    p.line(f"w{g} = gc{i}[:, {start}:{stop}]")
            for u, use in enumerate(cg.uses):
                if not use.matvec_t:
                    continue
                cols = _dim(G[use.vector].type.shape[0])
                if self.micro and self.per_step_cotangent_gemm(i, u):
                    self._packed_cotangent_weights(kern, i, u, total, cols)
                    continue
                p.line(f"ws{i}_{u} = {self.dialect.empty}(({total}, {cols}), dtype)")
                for w, g in zip(use.weights, cg.cotangents):
                    start, stop = self.cg_cols[(i, g)]
                    p.line(f"copy2(ws{i}_{u}[{start}:{stop}, :], p_{ident(G[w].attrs[0])})")
                if not self.splits_cotangents(i, u):
                    continue
                sizes = [_dim(G[g].type.shape[0]) for g in cg.cotangents]
                small = " and ".join(dict.fromkeys(
                    f"B * {n} * {cols} <= {SMALL_PRODUCT}" for n in sizes))
                p.comment("term by term when the stacked product is too big for OpenBLAS's "
                          "small-matrix kernel and the terms are not")
                p.line(f"splitc{i}_{u} = B * {total} * {cols} > {SMALL_PRODUCT} and {small}")
                p.line(f"mt{i}_{u} = {self.dialect.empty}((B if splitc{i}_{u} else 0, {cols}), "
                       "dtype)")
                for k, (w, n) in enumerate(zip(use.weights, sizes)):
                    p.line(f"gk{i}_{u}_{k} = {self.dialect.empty}((B if splitc{i}_{u} else 0, "
                           f"{n}), dtype)")
                    p.line(f"wsk{i}_{u}_{k} = np.ascontiguousarray(p_{ident(G[w].attrs[0])}) "
                           f"if splitc{i}_{u} else {self.dialect.empty}((0, 0), dtype)")

    def _weights(self, kern: _Kernel, stages) -> None:
        """Stacked, transposed weights for each matmul group (once per call)."""
        G, p = self.G, kern.p
        for s in stages:
            for grp in self.plan.matmuls.get(s, []):
                if not G[grp.vector].type.batched:
                    continue
                g = self.matmul_index[id(grp)]
                cols = _dim(G[grp.vector].type.shape[0])
                if self.micro and s in LOOP_STAGES:
                    self._packed_weights(kern, grp, g, cols)
                    continue
                if len(grp.members) == 1:
                    w = G[G[grp.members[0]].args[0]].attrs[0]
                    p.line(f"wt{g} = transposed(p_{ident(w)})")
                    continue
                p.line(f"wt{g} = {self.dialect.empty}(({cols}, {self.group_total(grp)}), dtype)")
                offset = Dim.lit(0)
                for m in grp.members:
                    stop = offset + G[m].type.shape[0]
                    w = G[G[m].args[0]].attrs[0]
                    p.line(f"copy_t(wt{g}[:, {_dim(offset)}:{_dim(stop)}], p_{ident(w)})")
                    offset = stop
                if self.splits_small(grp, s):
                    small = " and ".join(dict.fromkeys(
                        f"B * {cols} * {_dim(G[m].type.shape[0])} <= {SMALL_PRODUCT}"
                        for m in grp.members))
                    p.comment("member by member when the stacked product is too big for "
                              "OpenBLAS's small-matrix kernel and the members are not")
                    p.line(f"split{g} = B * {cols} * ({self.group_total(grp)}) > "
                           f"{SMALL_PRODUCT} and {small}")
                    for k, m in enumerate(grp.members):
                        w = G[G[m].args[0]].attrs[0]
                        p.line(f"wt{g}_{k} = transposed(p_{ident(w)}) if split{g} else "
                               f"{self.dialect.empty}((0, 0), dtype)")

    def _packed_weights(self, kern: _Kernel, grp: MatmulGroup, g: int, cols: str) -> None:
        """A per-step GEMM's stacked weights [W_1^T, ..., W_n^T], packed once into
        rnndsl.kernels.gemm's panels; below MR rows of batch, stacked for one BLAS call a step."""
        G, p = self.G, kern.p
        total = self.group_total(grp)
        members = [(m, G[G[m].args[0]].attrs[0]) for m in grp.members]
        p.comment(f"{', '.join(w for _, w in members)}, packed once for the per-step GEMM's")
        p.comment("register tiles (rnndsl.kernels.gemm), or stacked for BLAS")
        p.line(f"wp{g} = np.zeros((({total} + NR - 1) // NR if tiles else 0, {cols}, NR), "
               "dtype)")
        p.line(f"wt{g} = {self.dialect.empty}((0 if tiles else {cols}, {total}), dtype)")
        offset = Dim.lit(0)
        with p.indent("if tiles:"):
            for m, w in members:
                p.line(f"pack_cols_t(wp{g}, p_{ident(w)}, {_dim(offset)})")
                offset = offset + G[m].type.shape[0]
        offset = Dim.lit(0)
        with p.indent("else:"):
            for m, w in members:
                stop = offset + G[m].type.shape[0]
                p.line(f"copy_t(wt{g}[:, {_dim(offset)}:{_dim(stop)}], p_{ident(w)})")
                offset = stop

    def _packed_cotangent_weights(self, kern: _Kernel, i: int, u: int, total: str,
                                  cols: str) -> None:
        """The backward loop's stacked [W_1; ...; W_n], packed once into rnndsl.kernels.gemm's
        panels; below MR rows of batch, stacked for one BLAS call a step."""
        G, p = self.G, kern.p
        cg = self.plan.cotangent_groups[i]
        use = cg.uses[u]
        names = ", ".join(G[w].attrs[0] for w in use.weights)
        p.comment(f"[{names}] stacked, packed once for the backward step's register tiles")
        p.comment("(rnndsl.kernels.gemm), or stacked for BLAS")
        p.line(f"wsp{i}_{u} = np.zeros((({cols} + NR - 1) // NR if tiles else 0, "
               f"{total}, NR), dtype)")
        p.line(f"ws{i}_{u} = {self.dialect.empty}((0 if tiles else {total}, {cols}), dtype)")
        blocks = [(G[w].attrs[0], self.cg_cols[(i, g)])
                  for w, g in zip(use.weights, cg.cotangents)]
        with p.indent("if tiles:"):
            for w, (start, _) in blocks:
                p.line(f"pack_rows(wsp{i}_{u}, p_{ident(w)}, {start})")
        with p.indent("else:"):
            for w, (start, stop) in blocks:
                p.line(f"copy2(ws{i}_{u}[{start}:{stop}, :], p_{ident(w)})")

    def _packed_single_weights(self, kern: _Kernel, nodes: list[int]) -> None:
        """Panels for each lone g @ W of the backward loop (see packs_single)."""
        p = kern.p
        for n in nodes:
            if not self.packs_single(n):
                continue
            w = ident(self.G[self.G[n].args[0]].attrs[0])
            p.comment(f"{w}, packed once for the backward step's register tiles (rnndsl.kernels.gemm)")
            p.line(f"wpt{n} = np.zeros(((p_{w}.shape[1] + NR - 1) // NR if tiles else 0, "
                   f"p_{w}.shape[0], NR), dtype)")
            with p.indent("if tiles:"):
                p.line(f"pack_rows(wpt{n}, p_{w}, 0)")

    def _loop_arrays(self, kern: _Kernel, stage: str, nodes: list[int]) -> None:
        """Work arrays of a loop stage, allocated once before the loop."""
        G, p = self.G, kern.p
        mine = set(nodes)
        for grp in self.plan.matmuls.get(stage, []):
            if G[grp.vector].type.batched and any(m in mine for m in grp.members):
                g = self.matmul_index[id(grp)]
                p.line(f"mm{g} = {self.dialect.empty}((B, {self.group_total(grp)}), dtype)")
                if self.splits_small(grp, stage):
                    for k, m in enumerate(grp.members):
                        size = _dim(G[m].type.shape[0])
                        p.line(f"mm{g}_{k} = {self.dialect.empty}((B if split{g} else 0, "
                               f"{size}), dtype)")
                kern.bind_members(grp, stage)
        grouped = {m for grp in self.plan.matmuls.get(stage, []) for m in grp.members
                   if G[grp.vector].type.batched}
        group_of = {n: set(g) for g in self.plan.fused[stage] for n in g}
        for n in nodes:
            node = G[n]
            if n in grouped or node.op == Op.SLICE or n in self.cg_block:
                continue
            if n in self.mt_use:
                if self.elided_zero(n):
                    continue
                kern.alloc(n, stage)
                i, u = self.mt_use[n]
                if n != self.plan.cotangent_groups[i].uses[u].matvec_t[0]:
                    p.line(f"fill2(w{n}, {self.k(0.0)})   # its term is in the stacked GEMM")
                continue
            if node.op in ELEMENTWISE:
                if self.folded(n) or not self.needs_array(n, group_of.get(n, {n})):
                    continue
                if n in self.plan.saved and self.writes_tape_directly(n):
                    continue
            kern.alloc(n, stage)
            if not node.type.batched:
                self.loop_allocated.add(n)


def _is_view(value: ast.expr) -> bool:
    """An expression that only names part of an array: a subscript or a reshape."""
    if isinstance(value, ast.Subscript):
        return True
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "reshape")


def prune_dead_views(source: str) -> str:
    """The source without the one-line view assignments (`v15 = mm0[:, :, 0:H]`) that
    nothing reads. Views are emitted per node whether or not a later stage uses them;
    they cost nothing on the CPU but a host-side call each on the cuda target, and they
    make the generated code harder to read. A block keeps at least one statement."""
    while True:
        tree = ast.parse(source)
        read = {n.id for n in ast.walk(tree)
                if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)}
        dead: list[int] = []
        for node in ast.walk(tree):
            for field in ("body", "orelse"):
                block = getattr(node, field, None)
                if not isinstance(block, list):
                    continue
                gone = [st.lineno for st in block
                        if isinstance(st, ast.Assign) and len(st.targets) == 1
                        and isinstance(st.targets[0], ast.Name)
                        and st.targets[0].id not in read and _is_view(st.value)
                        and st.lineno == st.end_lineno]
                dead += gone[:len(block) - 1] if len(gone) == len(block) else gone
        if not dead:
            return source
        lines = source.split("\n")
        for lineno in sorted(dead, reverse=True):
            del lines[lineno - 1]
        source = "\n".join(lines)


def _dim_repr(d: Dim) -> tuple:
    return (d.terms, d.const)


def _const_repr(c: tuple) -> tuple:
    kind, value = c
    return (kind, _dim_repr(value)) if kind == "dim" else (kind, value)


def module_header(spec_path: str, digest: str, cells: list[str], target: str = "cpu",
                  dialect: Dialect = CPU) -> str:
    """The generated module's docstring, imports and scalar helpers."""
    assert target == dialect.target, (target, dialect.target)
    p = Printer()
    p.line(f'"""rnndsl kernels for {", ".join(cells)}, from {safe_docstring(spec_path)}.')
    p.line("")
    p.line(f"Generated by rnndsl {__version__} for the {target} target ({dialect.engine});")
    p.line(f"spec hash {digest}. Do not edit: rebuild with `rnndsl build`.")
    p.line(dialect.debug_hint)
    p.line('"""')
    p.line("")
    p.line("import math")
    p.line("import sys")
    p.line("")
    p.line("import numpy as np")
    for line in dialect.imports:
        p.line(line)
    p.line("")
    p.line(f"from {dialect.helpers} import (  # noqa: F401  array loops and scalar functions")
    with p.indent():
        names = list(dialect.helper_names)
        for i in range(0, len(names), 6):
            p.line(", ".join(names[i:i + 6]) + ",")
    p.line(")")
    if dialect.tile_imports:
        p.line("from rnndsl.kernels.gemm import (  # noqa: F401  the per-step GEMMs' register tiles")
        with p.indent():
            p.line(", ".join(dialect.tile_imports) + ",")
        p.line(")")
    p.line("")
    p.line(f"RNNDSL_VERSION = {__version__!r}")
    p.line(f"SPEC_HASH = {digest!r}")
    p.line(f"TARGET = {target!r}")
    p.line(f"CELLS = {tuple(cells)!r}")
    return p.text()


def module_footer(cells: list[str], dialect: Dialect = CPU) -> str:
    p = Printer()
    p.line("")
    p.comment("The cell classes: the Python API of rnndsl over the kernels above.")
    module, function = dialect.runtime.split(":")
    p.line(f"from {module} import {function}  # noqa: E402")
    p.line("")
    for name in cells:
        p.line(f"{name} = {function}(sys.modules[__name__], {name!r})")
    return p.text()


def emit(plan: Plan, spec_path: str, spec_text: str, digest: str) -> Emitted:
    """One cell's kernels and metadata, as a section of a generated module."""
    return _Emitter(plan, spec_path, spec_text, digest).emit()
