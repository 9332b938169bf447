"""One generated kernel's loop nests: how each node of a stage is read and written (the
array names and layouts of emit.py's docstring), its allocations, and the code of each
kind of node (fused elementwise groups, stacked GEMMs, reductions, softmax, views).
`_Emitter` (emit.py) drives one of these for the forward and one for the backward."""

from __future__ import annotations

from contextlib import contextmanager
from ..core.ops import LEAVES, Op
from ..core.shapes import Dim
from ..schedule.plan import ELEMENTWISE, LOOP_STAGES, MatmulGroup
from .dialect import ELEMENTWISE_FORMATS, Dialect, _dim, ident
from .printer_py import Printer, safe_comment


class _Kernel:
    """Emits one kernel (forward or backward) of a plan."""

    formats = ELEMENTWISE_FORMATS      # op -> scalar expression; a target may override some
    # The code of each op that is neither a leaf (read in place, `ref`) nor elementwise
    # (`formats`, in a fused loop nest), as in the tables of the other stages, so that
    # tests/core/test_tables.py finds an op with no code by name. The rows are method
    # names, so that a target changes one op's code by overriding its method; each is
    # called as method(nid, stage, operands, out) after the node's titles and allocation.
    # The plan's groups come first (emit_stage's GEMM groups, emit_other's stacked GEMMs).
    OP_EMITTERS: dict[Op, str] = {
        Op.MATVEC: "emit_matvec",
        Op.MATVEC_T: "emit_matvec_t",
        Op.OUTER: "emit_outer",
        Op.UNBROADCAST: "emit_unbroadcast",
        Op.SUM: "emit_reduce",
        Op.MEAN: "emit_reduce",
        Op.SOFTMAX: "emit_softmax",
        Op.LOG_SOFTMAX: "emit_softmax",
        Op.CONCAT: "emit_concat",
        Op.PAD: "emit_pad",
    }
    # Ops whose value is a view of an operand's array: no titles and no allocation; each
    # is called as method(nid, stage).
    VIEW_EMITTERS: dict[Op, str] = {Op.SLICE: "emit_slice"}

    def __init__(self, em, which: str):       # em: the _Emitter (emit.py) driving it
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

    def token(self, nid: int) -> bool:
        """Whether node nid is an `input token` that these kernels take as ids."""
        return nid in self.em.token_nodes

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
        if self.token(grp.vector):
            p.comment(f"{G.names.get(grp.vector, 'x')} is a token: the GEMM against its "
                      "one-hot rows is a gather of rows of the stacked W^T")
            p.line(f"gather_rows(wt{g}, {vec}, {target})")
            return
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
        """A node that is neither elementwise nor in a GEMM group: a view (no titles, no
        array of its own), a term of a stacked GEMM, or the row of its op in
        `OP_EMITTERS`, after its titles and its allocation."""
        em, p = self.em, self.p
        op, t = em.G[nid].op, em.G[nid].type
        if op in self.VIEW_EMITTERS:
            getattr(self, self.VIEW_EMITTERS[op])(nid, stage)
            return
        if nid in em.mt_use:
            self.emit_stacked_matvec_t(nid, stage)
            return
        if nid in em.outer_use:
            self.emit_stacked_outer(nid, stage)
            return
        if op not in self.OP_EMITTERS:
            raise AssertionError(f"no {self.d.target} code for {op} (node {nid}): "
                                 f"{type(self).__name__}.OP_EMITTERS has no row for it")
        for title in em.titles([nid]):
            p.comment(title)
        loop = stage in LOOP_STAGES
        if not loop or not t.batched:
            if not (loop and not t.batched and nid in em.loop_allocated):
                self.alloc(nid, stage)
        out = self.dest(nid, stage)
        # every op's operands are read here, before its method runs: reading a constant
        # numbers it (`em.k`), and that numbering is part of the generated text
        a = [self.whole(x, stage) for x in em.G[nid].args]
        getattr(self, self.OP_EMITTERS[op])(nid, stage, a, out)

    def emit_slice(self, nid: int, stage: str) -> None:
        """x[start:stop] as a view of x's array (the rows view too, outside the loops)."""
        node, p = self.em.G[nid], self.p
        start, stop = node.attrs
        src = self.whole(node.args[0], stage)
        if not node.type.batched:    # named as `ref` reads it: w in a loop, v outside
            name = f"w{nid}" if stage in LOOP_STAGES else f"v{nid}"
            p.line(f"{name} = {src}[{_dim(start)}:{_dim(stop)}]")
        elif stage in LOOP_STAGES:
            p.line(f"w{nid} = {src}[:, {_dim(start)}:{_dim(stop)}]")
        else:
            full, _ = self.ref(node.args[0], stage)
            assert full.endswith("_r"), full
            p.line(f"v{nid}_r = {full}[:, {_dim(start)}:{_dim(stop)}]")
            p.line(f"v{nid} = {full[:-2]}[:, :, {_dim(start)}:{_dim(stop)}]")

    def emit_matvec(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """W @ x alone (a matvec in no GEMM group: an unbatched vector; a token input,
        always batched, is in a group and gathered there)."""
        assert not self.token(self.em.G[nid].args[1]), "a token's product is in a group"
        self.p.line(f"{self.d.dot}({a[0]}, {a[1]}, {out})")

    def emit_matvec_t(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """g @ W, a cotangent through W @ x, where it is in no stacked GEMM."""
        em, node = self.em, self.em.G[nid]
        g = a[1]
        if em.is_view(node.args[1]):
            g = self.contiguous(g)
        if em.packs_single(nid):
            self.step_gemm(g, f"wpt{nid}", a[0], out)
        else:
            self.p.line(self.gemm(g, a[0], out, stage, node.type.batched))

    def emit_outer(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """g^T x summed over rows (a weight gradient), where it is in no stacked GEMM."""
        em, G, p = self.em, self.em.G, self.p
        node = G[nid]
        gt, xt = G[node.args[0]].type, G[node.args[1]].type
        if gt.batched:
            what = G.names.get(node.args[1], G.label(node.args[1]))
            p.comment(f"a weight gradient, g^T {what}, as one GEMM"
                      + (" over all T*B rows" if stage == "post" else ""))
            x = a[1] if not em.is_view(node.args[1]) else self.contiguous(a[1])
            g = a[0] if not em.is_view(node.args[0]) else self.contiguous(a[0])
            if self.token(node.args[1]):
                p.comment(f"{what} is a token: g's rows added into W's columns by id")
                p.line(f"scatter_cols({g}, {x}, {out})")
                return
            p.line(self.gemm_tn(g, x, out, stage, f"gT{node.args[0]}"))
        else:
            axes = [("i", _dim(gt.shape[0]), True), ("j", _dim(xt.shape[0]), True)]
            with self.loops(axes):
                p.line(f"{out}[i, j] = {a[0]}[i] * {a[1]}[j]")

    def emit_concat(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """Each operand copied into its columns (an unbatched one into every row)."""
        G, p = self.em.G, self.p
        t = G[nid].type
        offset = Dim.lit(0)
        for x, arg in zip(a, G[nid].args):
            at = G[arg].type
            stop = offset + at.shape[0]
            if t.batched and not at.batched:
                p.line(f"copy_rows({out}[:, {_dim(offset)}:{_dim(stop)}], {x})")
            elif t.batched:
                p.line(f"copy2({out}[:, {_dim(offset)}:{_dim(stop)}], {x})")
            else:
                p.line(f"copy1({out}[{_dim(offset)}:{_dim(stop)}], {x})")
            offset = stop

    def emit_pad(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """The operand at its columns in zeros (a slice's cotangent)."""
        G, p, k = self.em.G, self.p, self.em.k
        node = G[nid]
        start, total = node.attrs
        stop = start + G[node.args[0]].type.shape[0]
        if node.type.batched:
            p.line(f"fill2({out}, {k(0.0)})")
            p.line(f"copy2({out}[:, {_dim(start)}:{_dim(stop)}], {a[0]})")
        else:
            p.line(f"fill1({out}, {k(0.0)})")
            p.line(f"copy1({out}[{_dim(start)}:{_dim(stop)}], {a[0]})")

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
        if self.token(use.vector):
            p.comment("a token vector: each row's cotangents added into its id's column")
            p.line(f"scatter_cols({buf}, {vec}, dwc{i}_{u})")
        else:
            p.line(self.gemm_tn(buf, vec, f"dwc{i}_{u}", stage, f"gT{i}"))
        for o, g in zip(use.outers, em.plan.cotangent_groups[i].cotangents):
            start, stop = em.cg_cols[(i, g)]
            p.line(f"v{o} = dwc{i}_{u}[{start}:{stop}, :]")

    def emit_unbroadcast(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """A cotangent summed down to its operand's type, over the batch, the features or
        both; the summed axes stay in one thread (they are reductions)."""
        G, p, k = self.em.G, self.p, self.em.k
        node = G[nid]
        src = a[0]
        target, gt = node.attrs[0], G[node.args[0]].type
        if gt.rank and (target.batched or not gt.batched):
            # a sum over the features only, (rows, n) -> (rows, 1) or (n,) -> (): `sum`
            self.emit_reduce(nid, stage, a, out)
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

    def emit_reduce(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """sum or mean over the features of each row (and unbroadcast's feature sums)."""
        G, p, k = self.em.G, self.p, self.em.k
        node = G[nid]
        src, mean = a[0], node.op == Op.MEAN
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

    def emit_softmax(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """softmax or log_softmax of each row, one row a thread."""
        node = self.em.G[nid]
        n = self.size(nid)
        batched = node.type.batched
        row = "r, " if batched else ""
        with self.loops([("r", self.rows(stage), True)] if batched else []):
            self.softmax_body(a[0], out, row, n, node.op == Op.LOG_SOFTMAX)

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


CODEGEN_KINDS = ("leaf", "elementwise", "view", "op")


def codegen_rules(kernel: type[_Kernel] = _Kernel) -> dict[Op, tuple[str, str]]:
    """How a kernel class writes each op, as (kind, how), for tests and for reading; an
    op it has no code for is left out, so a missing row shows as a missing key.

    - "leaf", "ref": inputs, states, params, constants, dims and seeds have no code; a
      kernel reads their arrays (or typed constants) where they are, see `ref`.
    - "elementwise", the format function's name: one scalar expression inside a fused
      loop nest (`formats`). BATCH and EXPAND are here: their format is the operand,
      since the repetition over rows or features is in how `at` indexes it.
    - "view", a method name: the value is a view of an operand's array (`VIEW_EMITTERS`).
    - "op", a method name: a loop nest or a call of its own (`OP_EMITTERS`).
    A MATVEC in a GEMM group, a MATVEC_T or OUTER in a stacked GEMM and an ADD of zeros
    (emit.py's `_fold_zero_sums`) are written by the plan's groups before these rows.
    """
    rules: dict[Op, tuple[str, str]] = {}

    def add(op: Op, kind: str, how: str) -> None:
        assert op not in rules, f"{op} is both {rules[op][0]} and {kind} in {kernel.__name__}"
        rules[op] = (kind, how)

    for op in LEAVES:
        add(op, "leaf", "ref")
    for op in ELEMENTWISE & set(kernel.formats):
        add(op, "elementwise", kernel.formats[op].__name__)
    for op, method in kernel.VIEW_EMITTERS.items():
        add(op, "view", method)
    for op, method in kernel.OP_EMITTERS.items():
        add(op, "op", method)
    return rules
