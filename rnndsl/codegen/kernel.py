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
from .form import Arr, Code, Reshape, Sym, code, fix, for_loop, syms_of
from .printer_py import Printer, safe_comment

# the names every kernel has: sizes, steps, rows, and the loop variables
T, B, R = Sym("T", "i"), Sym("B", "i"), Sym("R", "i")
STEP, ROW, COL, I = Sym("t", "i"), Sym("r", "i"), Sym("j", "i"), Sym("i", "i")
DTYPE = Sym("dtype", "x")
THREADS = Sym("threads", "i")
LOOP_VARS = {"r": ROW, "j": COL, "i": I, "t": STEP}


def array(name: str, rank: int) -> Sym:
    return Sym(name, f"a{rank}")


def plus(a, b) -> Code:
    """`a + b` of two index or size expressions."""
    return code("{} + {}", a, b)


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
        self.seen_index: dict[tuple, int] = {}   # ("param", name) -> k in `seen` (emit.py)
        self.seen_taken: set[tuple] = set()      # those a stacking copy fingerprints
        self.stacked_done: set[int] = set()
        self.outputs_written: set[str] = set()   # outputs an "after" stage's loop wrote
        self.single_tiled: dict[int, Sym] = {}   # a lone g @ W's tiles flag (buffers.py)

    # ------------------------------------------------------------------ references
    def ref(self, nid: int, stage: str) -> tuple[Sym, str]:
        """How `stage` reads node nid: (the array, or a typed constant, and the mode);
        see the module doc. The array's rank is its kind."""
        em, G = self.em, self.em.G
        if nid in em.same_as:
            return self.ref(em.same_as[nid], stage)
        node = G[nid]
        name, mode = self._ref(nid, stage)
        if mode == "k":
            return name, mode
        if mode == "ub":
            rank = 2 if node.type.rank == 2 else 1
        elif mode == "step3":
            rank = 3
        elif mode == "ids1":     # token ids, one a row (kernels that gather by id)
            rank, mode = 1, "rows2"
        elif mode == "ids2":
            rank, mode = 2, "step3"
        else:
            rank = 2
        return array(name, rank), mode

    def _ref(self, nid: int, stage: str) -> tuple[str, str]:
        em, G = self.em, self.em.G
        node = G[nid]
        loop = stage in LOOP_STAGES
        if node.op == Op.PARAM:
            return f"p_{ident(node.attrs[0])}", "ub"
        if node.op in (Op.CONST, Op.DIM):
            return em.const_of(nid), "k"
        if node.op == Op.INPUT:
            name = ident(node.attrs[0])
            if nid in em.token_nodes:
                return (f"in_{name}", "ids2") if loop else (f"in_{name}_r", "ids1")
            return (f"in_{name}", "step3") if loop else (f"in_{name}_r", "rows2")
        if node.op == Op.STATE:
            name = ident(node.attrs[0])
            if stage == "fwd":
                return f"s_{name}", "rows2"
            return (f"hist_{name}", "step3") if loop else (f"hist_{name}_r", "rows2")
        if stage == "last" and nid in em.next_state_of:
            # after the loop: the state buffer holds the final states, each sequence's
            # next state at its last step
            return f"s_{ident(em.next_state_of[nid])}", "rows2"
        if node.op == Op.SEED:
            kind, name = node.attrs[0], ident(node.attrs[1])
            if kind == "output":
                return (f"dout_{name}", "step3") if loop else (f"dout_{name}_r", "rows2")
            return (f"ds_{name}", "rows2") if loop else (f"dnext_{name}_r", "rows2")
        src = em.plan.stage[nid]
        w, v, tape = (em.value_name(prefix, nid) for prefix in ("w", "v", "tape"))
        if not node.type.batched:
            return (w if src in LOOP_STAGES else v), "ub"
        taped = nid in em.plan.saved and em.writes_tape_directly(nid)
        if src in ("pre", "after") and self.which == "backward" and nid in em.forward_nodes:
            # computed by the forward kernel: the backward kernel reads its tape
            return (tape, "step3") if loop else (tape + "_r", "rows2")
        if src == stage:
            if loop:
                return (tape, "step3") if taped else (w, "rows2")
            return (tape + "_r" if taped else v + "_r"), "rows2"
        if src == "pre":
            name = tape if taped else v
            return (name, "step3") if loop else (name + "_r", "rows2")
        assert nid in em.plan.saved, f"node {nid} ({src}) read from {stage} but not saved"
        return (tape, "step3") if loop else (tape + "_r", "rows2")

    def block_element(self, nid: int, expr: str, t) -> str | None:
        """A stacked cotangent's element, read or written in its group's contiguous
        buffer at a column offset rather than through a strided view."""
        block = self.em.cg_block.get(nid)
        if block is None or t.rank != 1:
            return None
        i, start, _ = block
        tape = self.em.value_name("tape", nid)
        if expr == tape:
            return Arr(array(f"tgc{i}", 3), fix(STEP, ROW, plus(start, COL)))
        if expr == tape + "_r":
            return Arr(array(f"tgc{i}_r", 2), fix(ROW, plus(start, COL)))
        if expr == self.em.value_name("w", nid):
            return Arr(array(f"gc{i}", 2), fix(ROW, plus(start, COL)))
        return None

    def mirror_elements(self, nid: int, stage: str) -> list[str]:
        """The element (row r, feature j) of a stacked cotangent in each group that holds
        it besides its home (see plan.CotangentGroup)."""
        found = []
        for i, start in self.em.cg_mirrors.get(nid, ()):
            if not self.em.plan.cotangent_groups[i].taped:
                found.append(Arr(array(f"gc{i}", 2), fix(ROW, plus(start, COL))))
            elif stage in LOOP_STAGES:
                found.append(Arr(array(f"tgc{i}", 3), fix(STEP, ROW, plus(start, COL))))
            else:
                found.append(Arr(array(f"tgc{i}_r", 2), fix(ROW, plus(start, COL))))
        return found

    def whole(self, nid: int, stage: str) -> Code:
        expr, mode = self.ref(nid, stage)
        return Arr(expr, fix(STEP)) if mode == "step3" else expr

    def at(self, nid: int, stage: str, local: dict[int, Code]) -> Code:
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
        w, v = self.em.value_name("w", nid), self.em.value_name("v", nid)
        if block is not None and expr in (w, v, v + "_r"):
            # a matmul result: read the GEMM's C-contiguous output at a column offset,
            # not through a strided view, so the loop over j can vectorise
            g, offset = block
            if expr == w:
                return Arr(array(f"mm{g}", 2), fix(ROW, plus(offset, COL)))
            if expr == v:
                return Arr(array(f"mm{g}", 3), fix(STEP, ROW, plus(offset, COL)))
            return Arr(array(f"mm{g}_r", 2), fix(ROW, plus(offset, COL)))
        if mode == "k":
            return expr
        if mode == "ub":
            return Arr(expr, {0: fix("0"), 1: fix(COL), 2: fix(I, COL)}[t.rank])
        col = COL if t.rank == 1 else "0"
        return Arr(expr, fix(STEP, ROW, col) if mode == "step3" else fix(ROW, col))

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
        with self.nest(axes):
            yield

    @contextmanager
    def nest(self, axes):
        """`for` loops over axes (variable, extent, ...), outermost first."""
        if not axes:
            yield
            return
        (var, extent, *_), rest = axes[0], axes[1:]
        over = code("range({})", extent)
        with self.p.indent(for_loop(LOOP_VARS[var], over)), self.nest(rest):
            yield

    # ------------------------------------------------------------------ allocation
    def rows(self, stage: str) -> Sym:
        return B if stage in LOOP_STAGES else R

    def size(self, nid: int) -> Code:
        t = self.em.G[nid].type
        return _dim(t.shape[0]) if t.shape else Code("1")

    def empty(self, shape) -> Code:
        """A fresh array of `shape` (a Code), in the kernel's float type."""
        return code("{}({}, {})", self.d.empty, shape, DTYPE)

    def alloc(self, nid: int, stage: str) -> None:
        """Allocate the destination of a node that is not a view."""
        G, p = self.em.G, self.p
        t = G[nid].type
        if t.rank == 2:
            shape = code("({}, {})", _dim(t.shape[0]), _dim(t.shape[1]))
            p.assign(self.dest(nid, stage), self.empty(shape))
        elif not t.batched:
            p.assign(self.dest(nid, stage), self.empty(self.size(nid)))
        elif stage in LOOP_STAGES:
            p.assign(self.dest(nid, stage), self.empty(code("({}, {})", B, self.size(nid))))
        else:
            v = array(self.em.value_name("v", nid), 3)
            p.assign(v, self.empty(code("({}, {}, {})", T, B, self.size(nid))))
            p.assign(self.dest(nid, stage), Reshape(v, code("({}, {})", R, self.size(nid))))

    def dest(self, nid: int, stage: str) -> Sym:
        """The whole array a node's value is written to in its own stage."""
        t = self.em.G[nid].type
        w, v = self.em.value_name("w", nid), self.em.value_name("v", nid)
        if not t.batched:
            return array(w if stage in LOOP_STAGES else v, 2 if t.rank == 2 else 1)
        return array(w, 2) if stage in LOOP_STAGES else array(v + "_r", 2)

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
                    tape = em.value_name("tape", n)
                    if stage in LOOP_STAGES:
                        self.p.call("copy2", Arr(array(tape, 3), fix(STEP)),
                                    self.dest(n, stage))
                    else:
                        self.p.call("copy2", array(tape + "_r", 2), self.dest(n, stage))

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
        local: dict[int, Code] = {}
        for n in group:
            node = G[n]
            args = [self.at(a, stage, local) for a in node.args]
            expr = self.format(node.op, args, node.attrs)
            # the spec's name as written, where it has one (`e_c__next = ...  # c'`)
            named = f"  # {safe_comment(G.names[n])}" if n in G.names else ""
            value = Sym(em.value_name("e", n), "f")
            p.assign(value, expr, named)
            local[n] = value
            if stage == "after":     # an output computed after the loop: straight into it
                col = COL if node.type.rank else "0"
                for name in em.after_outputs.get(n, ()):
                    p.assign(Arr(array(f"out_{ident(name)}_r", 2), fix(ROW, col)), value)
                    self.outputs_written.add(name)
            if n in stored:
                expr_, _ = self.ref(n, stage)
                direct = self.block_element(n, expr_, node.type)
                if direct is not None:
                    p.assign(direct, value)
                    for copy in self.mirror_elements(n, stage):
                        p.assign(copy, value, "   # also stacked with another group")
                    continue
                col = COL if node.type.rank else "0"
                if n in em.plan.saved and em.writes_tape_directly(n):
                    tape = em.value_name("tape", n)
                    target = (Arr(array(tape, 3), fix(STEP, ROW, col))
                              if stage in LOOP_STAGES else
                              Arr(array(tape + "_r", 2), fix(ROW, col)))
                else:
                    dest = self.dest(n, stage)
                    target = Arr(dest, fix(ROW, col) if node.type.batched else
                                 {0: fix("0"), 1: fix(COL), 2: fix(I, COL)}[node.type.rank])
                p.assign(target, value)

    def format(self, op: Op, args: list[Code], attrs: tuple) -> Code:
        """One op's scalar expression (the target's format over the operands' texts),
        reading the operands and the typed constants the format asked for."""
        consts = []

        def k(value) -> Sym:
            name = self.em.k(value)
            consts.append(name)
            return name
        expr = self.formats[op](op, args, attrs, k)
        return expr if isinstance(expr, Arr) else Code(expr, syms_of(*args, *consts))

    def step_gemm(self, a: str, panels: str, b: str, out: str, tiled: Sym,
                  split=None, row=None) -> None:
        """out = a @ B for one step: in the register tiles over B's panels (`tiled`: at
        MR rows and more, or where BLAS would be slower), else one BLAS call on B as an
        array, or where that is slow (`split`: (flag, a function emitting the split))
        part by part, or with one row (`row`: the same) a GEMV a part."""
        p = self.p
        with p.indent(code("if {}:", tiled)):
            p.call("packed_gemm", a, panels, out, THREADS)
        if row is not None:
            flag, emit_row = row
            with p.indent(code("elif {}:", flag)):
                emit_row()
        if split is not None:
            flag, emit_parts = split
            with p.indent(code("elif {}:", flag)):
                emit_parts()
        with p.indent("else:"):
            p.call(self.d.dot, a, b, out)

    def gemm(self, a: Code, b: Code, out: Code, stage: str, rows: bool = True) -> None:
        """The call computing out = a @ b: over all T*B rows with the microkernel pass,
        rnndsl.kernels.gemm.parallel_dot (the kernel's threads, one BLAS thread each)."""
        if rows and self.em.micro and stage not in LOOP_STAGES:
            self.p.call("parallel_dot", a, b, out, THREADS)
        else:
            self.p.call(self.d.dot, a, b, out)

    def gemm_tn(self, g: Code, x: Code, out: Code, stage: str, tname: str) -> None:
        """out = g^T @ x, a weight gradient summed over rows, with no transposed copy of
        g: cpu kernels pass BLAS the transposed view (g must be C-contiguous)."""
        if not self.d.transposed_views:
            key = (stage, str(g))
            if key not in self.transposes:      # one transpose serves every weight
                self.transposes[key] = array(tname, 2)
                self.p.assign(self.transposes[key], code("transposed({})", g))
            self.p.call(self.d.dot, self.transposes[key], x, out)
        elif self.em.micro and stage not in LOOP_STAGES:
            self.p.call("parallel_dot_tn", g, x, out, THREADS)
        else:
            self.p.call(self.d.dot, code("{}.T", g), x, out)

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
                w = self.ref(G[m].args[0], stage)[0]
                p.call(self.d.dot, w, vec, self.dest(m, stage))
            return
        if em.is_view(grp.vector):
            vec = self.contiguous(vec)
        names = ", ".join(G[G[m].args[0]].attrs[0] for m in grp.members)
        p.comment(f"{names} @ {G.names.get(grp.vector, 'v')}: one GEMM"
                  + (" over all T*B rows" if stage == "pre" else ""))
        target = array(f"mm{g}", 2) if stage in LOOP_STAGES else array(f"mm{g}_r", 2)
        wt = array(f"wt{g}", 2)
        if stage not in LOOP_STAGES:
            total = em.group_total(grp)
            whole = array(f"mm{g}", 3)
            p.assign(whole, self.empty(code("({}, {}, {})", T, B, total)))
            p.assign(target, Reshape(whole, code("({}, {})", R, total)))
            self.bind_members(grp, stage)
        if self.token(grp.vector):
            p.comment(f"{G.names.get(grp.vector, 'x')} is a token: the GEMM against its "
                      "one-hot rows is a gather of rows of the stacked W^T")
            if not em.dialect.token_columns:
                p.call("gather_rows", wt, vec, target)
                return
            with p.indent(code("if {}:", Sym(f"few{g}", "x"))):
                p.comment("(or, for fewer tokens than ids, of columns of each W)")
                offset = Dim.lit(0)
                for m in grp.members:
                    p.call("gather_cols", self.ref(G[m].args[0], stage)[0], vec, target,
                           _dim(offset))
                    offset = offset + G[m].type.shape[0]
            with p.indent("else:"):
                p.call("gather_rows", wt, vec, target)
            return
        def by_member():
            p.comment("small: member by member, in OpenBLAS's direct kernel")
            offset = Dim.lit(0)
            for k, m in enumerate(grp.members):
                stop = offset + G[m].type.shape[0]
                part = array(f"mm{g}_{k}", 2)
                p.call(self.d.dot, vec, array(f"wt{g}_{k}", 2), part)
                cols = ("slice", _dim(offset), _dim(stop))
                p.call("copy2", Arr(array(f"mm{g}", 2), (("all",), cols)), part)
                offset = stop

        def by_row():
            p.comment("one row: a GEMV a member, on the param as it is (no stacked copy)")
            offset = Dim.lit(0)
            for m in grp.members:
                stop = offset + G[m].type.shape[0]
                p.call(self.d.dot, self.ref(G[m].args[0], stage)[0], Arr(vec, fix("0")),
                       Arr(target, (("fix", "0"), ("slice", _dim(offset), _dim(stop)))))
                offset = stop

        split = Sym(f"split{g}", "x") if em.splits_small(grp, stage) else None
        if em.micro and stage in LOOP_STAGES:
            self.step_gemm(vec, array(f"wp{g}", 3), wt, target, Sym(f"tiled{g}", "x"),
                           None if split is None else (split, by_member),
                           (Sym(f"row{g}", "x"), by_row) if em.dialect.row_gemvs else None)
            return
        if split is not None:
            with p.indent(code("if {}:", split)):
                by_member()
            with p.indent("else:"):
                p.call(self.d.dot, vec, wt, target)
            return
        self.gemm(vec, wt, target, stage)

    def bind_members(self, grp: MatmulGroup, stage: str) -> None:
        em, G, p = self.em, self.em.G, self.p
        g = em.matmul_index[id(grp)]
        offset = Dim.lit(0)
        for m in grp.members:
            stop = offset + G[m].type.shape[0]
            cols = ("slice", _dim(offset), _dim(stop))
            if stage in LOOP_STAGES:
                p.assign(self.dest(m, stage), Arr(array(f"mm{g}", 2), (("all",), cols)))
            else:
                p.assign(array(em.value_name("v", m), 3),
                         Arr(array(f"mm{g}", 3), (("all",), ("all",), cols)))
                p.assign(self.dest(m, stage), Arr(array(f"mm{g}_r", 2), (("all",), cols)))
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
        cols = ("slice", _dim(start), _dim(stop))
        if not node.type.batched:    # named as `ref` reads it: w in a loop, v outside
            p.assign(self.dest(nid, stage), Arr(src, (cols,)))
        elif stage in LOOP_STAGES:
            p.assign(self.dest(nid, stage), Arr(src, (("all",), cols)))
        else:
            full, _ = self.ref(node.args[0], stage)
            assert full.endswith("_r"), full
            p.assign(self.dest(nid, stage), Arr(full, (("all",), cols)))
            p.assign(array(self.em.value_name("v", nid), 3),
                     Arr(array(full.name[:-2], 3), (("all",), ("all",), cols)))

    def emit_matvec(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """W @ x alone (a matvec in no GEMM group: an unbatched vector; a token input,
        always batched, is in a group and gathered there)."""
        assert not self.token(self.em.G[nid].args[1]), "a token's product is in a group"
        self.p.call(self.d.dot, a[0], a[1], out)

    def emit_matvec_t(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """g @ W, a cotangent through W @ x, where it is in no stacked GEMM."""
        em, node = self.em, self.em.G[nid]
        g = a[1]
        if em.is_view(node.args[1]):
            g = self.contiguous(g)
        if em.packs_single(nid):
            self.step_gemm(g, array(em.value_name("wpt", nid), 3), a[0], out,
                           self.single_tiled[nid])
        else:
            self.gemm(g, a[0], out, stage, node.type.batched)

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
                p.call("scatter_cols", g, x, out)
                return
            self.gemm_tn(g, x, out, stage, em.value_name("gT", node.args[0]))
        else:
            axes = [("i", _dim(gt.shape[0]), True), ("j", _dim(xt.shape[0]), True)]
            with self.loops(axes):
                p.assign(Arr(out, fix(I, COL)),
                         code("{} * {}", Arr(a[0], fix(I)), Arr(a[1], fix(COL))))

    def emit_concat(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """Each operand copied into its columns (an unbatched one into every row)."""
        G, p = self.em.G, self.p
        t = G[nid].type
        offset = Dim.lit(0)
        for x, arg in zip(a, G[nid].args):
            at = G[arg].type
            stop = offset + at.shape[0]
            cols = ("slice", _dim(offset), _dim(stop))
            if t.batched and not at.batched:
                p.call("copy_rows", Arr(out, (("all",), cols)), x)
            elif t.batched:
                p.call("copy2", Arr(out, (("all",), cols)), x)
            else:
                p.call("copy1", Arr(out, (cols,)), x)
            offset = stop

    def emit_pad(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """The operand at its columns in zeros (a slice's cotangent)."""
        G, p, k = self.em.G, self.p, self.em.k
        node = G[nid]
        start, total = node.attrs
        stop = start + G[node.args[0]].type.shape[0]
        cols = ("slice", _dim(start), _dim(stop))
        if node.type.batched:
            p.call("fill2", out, k(0.0))
            p.call("copy2", Arr(out, (("all",), cols)), a[0])
        else:
            p.call("fill1", out, k(0.0))
            p.call("copy1", Arr(out, (cols,)), a[0])

    def cotangent_buffer(self, i: int, stage: str) -> Code:
        """The stacked cotangents of group i: this step's rows, or all T*B rows."""
        cg = self.em.plan.cotangent_groups[i]
        if stage in LOOP_STAGES:
            return Arr(array(f"tgc{i}", 3), fix(STEP)) if cg.taped else array(f"gc{i}", 2)
        return array(f"tgc{i}_r", 2)

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
                p.call("fill2", self.dest(nid, stage), em.k(0.0))
        if nid != first:
            return
        names = ", ".join(em.G[w].attrs[0] for w in use.weights)
        p.comment(f"sum of g_k @ W_k for W_k in [{names}]: one GEMM (the other terms stay 0)")
        buffer, dest = self.cotangent_buffer(i, stage), self.dest(nid, stage)
        ws = array(f"ws{i}_{u}", 2)
        def by_term():
            p.comment("small: term by term, in OpenBLAS's direct kernel")
            cg = em.plan.cotangent_groups[i]
            mt = array(f"mt{i}_{u}", 2)
            for k, g in enumerate(cg.cotangents):
                start, stop = em.cg_cols[(i, g)]
                gk = array(f"gk{i}_{u}_{k}", 2)
                p.call("copy2", gk, Arr(buffer, (("all",), ("slice", start, stop))))
                if k == 0:
                    p.call(self.d.dot, gk, array(f"wsk{i}_{u}_{k}", 2), dest)
                else:
                    p.call(self.d.dot, gk, array(f"wsk{i}_{u}_{k}", 2), mt)
                    p.call("add_into2", dest, mt)

        split = (Sym(f"splitc{i}_{u}", "x")
                 if stage in LOOP_STAGES and em.splits_cotangents(i, u) else None)
        if em.micro and em.per_step_cotangent_gemm(i, u):
            self.step_gemm(buffer, array(f"wsp{i}_{u}", 3), ws, dest,
                           Sym(f"tiledc{i}_{u}", "x"),
                           None if split is None else (split, by_term))
            return
        if split is not None:
            with p.indent(code("if {}:", split)):
                by_term()
            with p.indent("else:"):
                p.call(self.d.dot, buffer, ws, dest)
            return
        self.gemm(buffer, ws, dest, stage)

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
        dwc = array(f"dwc{i}_{u}", 2)
        p.assign(dwc, self.empty(code("({}, {})", em.cg_total[i], cols)))
        if self.token(use.vector):
            p.comment("a token vector: each row's cotangents added into its id's column")
            p.call("scatter_cols", buf, vec, dwc)
        else:
            self.gemm_tn(buf, vec, dwc, stage, f"gTc{i}")
        for o, g in zip(use.outers, em.plan.cotangent_groups[i].cotangents):
            start, stop = em.cg_cols[(i, g)]
            p.assign(array(em.value_name("v", o), 2),
                     Arr(dwc, (("slice", start, stop), ("all",))))

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
        p.call(f"fill{2 if node.type.batched else 1}", out, k(0.0))
        gcol = COL if gt.rank else "0"
        rows, n = self.rows(stage), self.size(node.args[0])
        if self.d.vector_row_sums and gt.rank and not target.rank:
            # (rows, n) -> a scalar: each row in vector partial sums (kernels.row_sum)
            with self.loops([("r", rows, False)]):
                p.assign(Arr(out, fix("0")),
                         code("row_sum({}, {})", Arr(src, fix(ROW)), k(0.0)), op="+=")
            return
        if gt.batched:
            # the summed axes are reductions: a parallel target keeps them in one thread
            if target.batched:      # feature sum only: (rows, n) -> (rows, 1)
                with self.loops([("r", rows, True), ("j", n, False)]):
                    p.assign(Arr(out, fix(ROW, "0")), Arr(src, fix(ROW, gcol)), op="+=")
            elif target.rank:       # batch sum: (rows, n) -> (n,)
                with self.loops([("r", rows, False), ("j", n, True)]):
                    p.assign(Arr(out, fix(COL)), Arr(src, fix(ROW, gcol)), op="+=")
            else:
                with self.loops([("r", rows, False), ("j", n, False)]):
                    p.assign(Arr(out, fix("0")), Arr(src, fix(ROW, gcol)), op="+=")
        else:
            with self.loops([("j", n, False)]):
                p.assign(Arr(out, fix("0")), Arr(src, fix(COL)), op="+=")

    def emit_reduce(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """sum or mean over the features of each row (and unbroadcast's feature sums)."""
        G, p, k = self.em.G, self.p, self.em.k
        node = G[nid]
        src, mean = a[0], node.op == Op.MEAN
        n = self.size(node.args[0])
        scale = code(" / {}", k(("dim", G[node.args[0]].type.shape[0]))) if mean else ""
        if self.d.vector_row_sums:      # in vector partial sums (kernels.row_sum)
            if node.type.batched:
                with self.loops([("r", self.rows(stage), True)]):
                    p.assign(Arr(out, fix(ROW, "0")),
                             code("row_sum({}, {}){}", Arr(src, fix(ROW)), k(0.0), scale))
            else:
                p.assign(Arr(out, fix("0")), code("row_sum({}, {}){}", src, k(0.0), scale))
            return
        acc = Sym("acc", "f")
        row = fix(ROW) if node.type.batched else ()
        with self.loops([("r", self.rows(stage), True)] if node.type.batched else []):
            p.assign(acc, k(0.0))
            with p.indent(for_loop(COL, code("range({})", n))):
                p.assign(acc, Arr(src, row + fix(COL)), op="+=")
            p.assign(Arr(out, row + fix("0")), code("{}{}", acc, scale))

    def emit_softmax(self, nid: int, stage: str, a: list[str], out: str) -> None:
        """softmax or log_softmax of each row, one row a thread."""
        node = self.em.G[nid]
        n = self.size(nid)
        batched = node.type.batched
        row = fix(ROW) if batched else ()
        with self.loops([("r", self.rows(stage), True)] if batched else []):
            self.softmax_body(a[0], out, row, n, node.op == Op.LOG_SOFTMAX)

    def softmax_body(self, src: Code, out: Code, row: tuple, n: Code, log: bool) -> None:
        p, k = self.p, self.em.k
        top, acc, lse = Sym("top", "f"), Sym("acc", "f"), Sym("lse", "f")
        x = Arr(src, row + fix(COL))
        every = for_loop(COL, code("range({})", n))
        p.assign(top, Arr(src, row + fix("0")))
        with p.indent(for_loop(COL, code("range(1, {})", n))):
            p.assign(top, code("max({}, {})", top, x))
        p.assign(acc, k(0.0))
        with p.indent(every):
            p.assign(acc, code("math.exp({} - {})", x, top), op="+=")
        if log:
            # (x - top) - log(acc), as the interpreter: x - (top + log(acc)) loses
            # log(acc) to rounding where top is large (log_softmax([1e17, 1e17, 0])
            # gave 0, not -log 2, and its gradient was wrong with it)
            p.assign(lse, code("math.log({})", acc))
            with p.indent(for_loop(COL, code("range({})", n))):
                p.assign(Arr(out, row + fix(COL)), code("({} - {}) - {}", x, top, lse))
        else:
            with p.indent(for_loop(COL, code("range({})", n))):
                p.assign(Arr(out, row + fix(COL)),
                         code("math.exp({} - {}) / {}", x, top, acc))

    def contiguous(self, expr: Code) -> Code:
        return code("{}({})", self.d.contiguous, expr) if self.d.contiguous else expr


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
