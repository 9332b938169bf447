"""One generated kernel's loop nests: how each node of a stage is read and written (the
array names and layouts of emit.py's docstring), its allocations, and the code of each
kind of node (fused elementwise groups, stacked GEMMs, reductions, softmax, views).
`_Emitter` (emit.py) drives one of these for the forward and one for the backward."""

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

from .dialect import *  # noqa: F401,F403
from .dialect import _dim, _elementwise_expr, _ENDS_LIKE_A_VIEW  # noqa: F401


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


