"""The arrays a kernel allocates before its loops, for `_Emitter` (emit.py, a mixin):
the stacked and packed weights of the GEMM groups, the stacked cotangents' buffers, a
loop stage's work arrays, and (T, B, size) sequences with their rows views. Input: the
emitter's plan and layout (its attributes); output: statements of the structured form
(form.py), through the kernel's printer."""

from __future__ import annotations

from contextlib import nullcontext as _nothing

from ..core.ops import Op
from ..core.shapes import Dim
from ..kernels.tile_sizes import ROW_CALL_ELEMENTS
from ..schedule.plan import ELEMENTWISE, LOOP_STAGES, MatmulGroup
from .dialect import _dim, ident
from .form import Arr, Code, Reshape, Sym, code, fix
from .kernel import B, DTYPE, R, T, _Kernel, array

TILES = Sym("tiles", "x")       # whether the per-step GEMMs run in the register tiles
SEEN = Sym("seen", "a1")        # the fingerprints a kernel takes (rnndsl.cells.seen)


class Buffers:
    """The allocations of a kernel's prologue and loop stages (see the module doc)."""

    def _sequence(self, kern: _Kernel, name: str, size: Code) -> None:
        """A (T, B, size) array and its (R, size) rows view."""
        whole = array(name, 3)
        kern.p.assign(whole, kern.empty(code("({}, {}, {})", T, B, size)))
        kern.p.assign(array(name + "_r", 2), Reshape(whole, code("({}, {})", R, size)))

    def _cotangent_buffers(self, kern: _Kernel) -> None:
        """One buffer per group of stacked cotangents (views for each g_k), and the
        stacked weights [W_1; ...; W_n] their GEMMs multiply by."""
        G, p = self.G, kern.p
        for i, cg in enumerate(self.plan.cotangent_groups):
            total = self.cg_total[i]
            if cg.taped:
                self._sequence(kern, f"tgc{i}", total)
            else:
                p.assign(array(f"gc{i}", 2), kern.empty(code("({}, {})", B, total)))
            for g in cg.cotangents:
                if self.cg_block[g][0] != i:
                    continue    # a mirror: g's views name its home group's columns
                _, start, stop = self.cg_block[g]
                cols = ("slice", start, stop)
                if cg.taped:
                    tape = self.value_name("tape", g)
                    p.assign(array(tape, 3),
                             Arr(array(f"tgc{i}", 3), (("all",), ("all",), cols)))
                    p.assign(array(tape + "_r", 2), Arr(array(f"tgc{i}_r", 2), (("all",), cols)))
                else:
                    p.assign(array(self.value_name("w", g), 2),
                             Arr(array(f"gc{i}", 2), (("all",), cols)))
            for u, use in enumerate(cg.uses):
                if not use.matvec_t:
                    continue
                cols = _dim(G[use.vector].type.shape[0])
                if self.micro and self.per_step_cotangent_gemm(i, u):
                    self._packed_cotangent_weights(kern, i, u, total, cols)
                    continue
                ws = array(f"ws{i}_{u}", 2)
                p.assign(ws, kern.empty(code("({}, {})", total, cols)))
                for w, g in zip(use.weights, cg.cotangents):
                    start, stop = self.cg_cols[(i, g)]
                    self._stack(kern, ws, start, stop, w)
                if not self.splits_cotangents(i, u):
                    continue
                sizes = [_dim(G[g].type.shape[0]) for g in cg.cotangents]
                mark = self.tuned("small_product")
                small = code(" and ".join(dict.fromkeys(
                    f"B * {n} * {cols} <= {mark}" for n in sizes)), sizes + [cols, mark])
                p.comment("term by term when the stacked product is too big for OpenBLAS's "
                          "small-matrix kernel and the terms are not")
                split = Sym(f"splitc{i}_{u}", "x")
                p.assign(split, code("{} * {} * {} > {} and {}", B, total, cols, mark, small))
                self._term_buffers(kern, i, u, cols, split)

    def _tiled_flag(self, kern: _Kernel, flag: Sym, cols: Code, sizes: list[Code]) -> Sym:
        """flag = whether a per-step GEMM runs in the register tiles: at MR rows and more
        (`tiles`), and below them where even its parts would be too big a product for
        OpenBLAS's direct kernel (the machine's micro_tile_product: rnndsl.build.machine); a single row stays a GEMV."""
        widths = list({str(n): n for n in sizes}.values())
        widest = (widths[0] if len(widths) == 1 else
                  code("max({})".format(", ".join("{}" for _ in widths)), *widths))
        kern.p.assign(flag, code("{} or {} >= 2 and {} * {} * {} >= {}", TILES, B, B, cols,
                                 widest, self.tuned("micro_tile_product")),
                      "   # below MR rows too, past BLAS's direct kernel")
        return flag

    def _split_flag(self, kern: _Kernel, flag: Sym, tiled: Sym, rows: Code, cols: Code,
                    how: str) -> Sym:
        """flag = whether a per-step GEMM below MR rows runs part by part (`how`): where
        one BLAS call on the stacked product would be slow (the machine's micro_split_product)."""
        kern.p.comment(f"below MR rows, {how} where one BLAS call would be slow")
        kern.p.assign(flag, code("not {} and {} >= 2 and {} * {} * {} >= {}", tiled, B, B,
                                 rows, cols, self.tuned("micro_split_product")))
        return flag

    def _term_buffers(self, kern: _Kernel, i: int, u: int, cols: Code, split: Sym) -> None:
        """The term-by-term path's arrays of a stacked cotangent GEMM (empty unless
        `split`): each g_k apart, a product buffer, and each W_k (the param itself)."""
        G, p = self.G, kern.p
        cg = self.plan.cotangent_groups[i]
        p.assign(array(f"mt{i}_{u}", 2),
                 kern.empty(code("({} if {} else 0, {})", B, split, cols)))
        for k, (w, g) in enumerate(zip(cg.uses[u].weights, cg.cotangents)):
            n = _dim(G[g].type.shape[0])
            p.assign(array(f"gk{i}_{u}_{k}", 2),
                     kern.empty(code("({} if {} else 0, {})", B, split, n)))
            p.assign(array(f"wsk{i}_{u}_{k}", 2),     # a kernel's params are C-order
                     code("{} if {} else {}", param(G, w), split, kern.empty("(0, 0)")))

    def _weights(self, kern: _Kernel, stages) -> None:
        """Stacked, transposed weights for each matmul group (once per call)."""
        G, p = self.G, kern.p
        for s in stages:
            for grp in self.plan.matmuls.get(s, []):
                if not G[grp.vector].type.batched:
                    continue
                g = self.matmul_index[id(grp)]
                cols = _dim(G[grp.vector].type.shape[0])
                # a token's product is a gather of stacked weights, never in the tiles (the
                # hoist pass off leaves it in the time loop)
                if self.micro and s in LOOP_STAGES and grp.vector not in self.token_nodes:
                    self._packed_weights(kern, grp, g, cols, s)
                    continue
                wt = array(f"wt{g}", 2)
                # over T*B rows BLAS multiplies by W through its transposed view as fast
                # as by a transposed copy, which costs 4x a flat one (kernels.stack_rows);
                # a step's GEMM below MR rows runs slower on the view, and a token's
                # gather reads rows of W^T, so those keep the transposed copy
                flat = (self.dialect.flat_stacks and s not in LOOP_STAGES
                        and grp.vector not in self.token_nodes)
                few = None        # fewer tokens than ids: gathers down W's own columns
                if self.dialect.token_columns and grp.vector in self.token_nodes:
                    few = Sym(f"few{g}", "x")
                    p.assign(few, code("{} < {}", R if s not in LOOP_STAGES else B, cols),
                             "   # fewer tokens than ids: no transposed copy")
                if len(grp.members) == 1:
                    w = param(G, G[grp.members[0]].args[0])
                    p.assign(wt, code("{}.T", w) if flat else
                             code("transposed({})", w) if few is None else
                             code("{} if {} else transposed({})", kern.empty("(0, 0)"), few, w))
                    continue
                total = self.group_total(grp)
                wr = array(f"wr{g}", 2)    # [W_1; W_2; ...] by flat copies, read as its view
                if flat:
                    p.assign(wr, kern.empty(code("({}, {})", total, cols)))
                elif few is not None:
                    p.assign(wt, kern.empty(code("(0 if {} else {}, {})", few, cols, total)))
                else:
                    p.assign(wt, kern.empty(code("({}, {})", cols, total)))
                offset = Dim.lit(0)
                with p.indent(code("if not {}:", few)) if few is not None else _nothing():
                    for m in grp.members:
                        start, stop = _dim(offset), _dim(offset + G[m].type.shape[0])
                        if flat:
                            self._stack(kern, wr, start, stop, G[m].args[0])
                        else:
                            p.call("copy_t", Arr(wt, (("all",), ("slice", start, stop))),
                                   param(G, G[m].args[0]))
                        offset = offset + G[m].type.shape[0]
                if flat:
                    p.assign(wt, code("{}.T", wr))
                if self.splits_small(grp, s):
                    sizes = [_dim(G[m].type.shape[0]) for m in grp.members]
                    mark = self.tuned("small_product")
                    small = code(" and ".join(dict.fromkeys(
                        f"B * {cols} * {n} <= {mark}" for n in sizes)), sizes + [cols, mark])
                    p.comment("member by member when the stacked product is too big for "
                              "OpenBLAS's small-matrix kernel and the members are not")
                    split = Sym(f"split{g}", "x")
                    p.assign(split, code("{} * {} * ({}) > {} and {}", B, cols, total, mark,
                                         small))
                    for k, m in enumerate(grp.members):
                        p.assign(array(f"wt{g}_{k}", 2),
                                 code("transposed({}) if {} else {}", param(G, G[m].args[0]),
                                      split, kern.empty("(0, 0)")))

    def _seen_arg(self, w: int) -> tuple:
        """Param node w's argument, as `seen_index` keys it."""
        return ("param", self.G[w].attrs[0])

    def _take_fingerprints(self, kern: _Kernel, args: list[tuple]) -> None:
        """seen[k] = fingerprint(the array of each ("param" | "input", name) argument)."""
        cell = self.plan.step.cell
        ranks = {d.name: (2 if d.type.rank == 2 else 1) for d in cell.params}
        for arg in args:
            rank = (ranks[arg[1]] if arg[0] == "param" else
                    2 if arg[1] in self.token_names else 3)
            kern.p.assign(Arr(SEEN, fix(str(kern.seen_index[arg]))),
                          code("fingerprint({})", array(self.arg_name(arg), rank)))

    def _stack(self, kern: _Kernel, ws: Sym, start: Code, stop: Code, w: int) -> None:
        """ws[start:stop, :] = param w, for a C-order stack ws: by a flat copy where the
        dialect has one, which also takes w's fingerprint for `seen` the first time a
        kernel that takes them stacks w (emit._fingerprints takes the rest)."""
        p, arg = kern.p, self._seen_arg(w)
        if not self.dialect.flat_stacks:
            p.call("copy2", Arr(ws, (("slice", start, stop), ("all",))), param(self.G, w))
        elif arg in kern.seen_index and arg not in kern.seen_taken:
            kern.seen_taken.add(arg)
            p.call("stack_rows_seen", ws, start, param(self.G, w), SEEN,
                   code(str(kern.seen_index[arg])))
        else:
            p.call("stack_rows", ws, start, param(self.G, w))

    def _packed_weights(self, kern: _Kernel, grp: MatmulGroup, g: int, cols: str,
                        stage: str) -> None:
        """A per-step GEMM's stacked weights [W_1^T, ..., W_n^T], packed once into
        rnndsl.kernels.gemm's panels; below MR rows of batch, stacked for one BLAS call a step."""
        G, p = self.G, kern.p
        total = self.group_total(grp)
        members = [(m, G[G[m].args[0]].attrs[0]) for m in grp.members]
        p.comment(f"{', '.join(w for _, w in members)}, packed once for the per-step GEMM's")
        p.comment("register tiles (rnndsl.kernels.gemm), or stacked for BLAS")
        wp, wt = array(f"wp{g}", 3), array(f"wt{g}", 2)
        tiled = self._tiled_flag(kern, Sym(f"tiled{g}", "x"), cols,
                                 [_dim(G[m].type.shape[0]) for m in grp.members])
        split = None
        if self.splits_small(grp, stage):
            split = self._split_flag(kern, Sym(f"split{g}", "x"), tiled, cols,
                                     code("({})", total), "member by member")
            for k, m in enumerate(grp.members):
                p.assign(array(f"wt{g}_{k}", 2),
                         code("transposed({}) if {} else {}", param(G, G[m].args[0]), split,
                              kern.empty("(0, 0)")))
        p.assign(wp, code("np.zeros((({} + NR - 1) // NR if {} else 0, {}, NR), {})", total,
                          tiled, cols, DTYPE))
        stacked = code("({} or {})", tiled, split) if split is not None else tiled
        if self.dialect.row_gemvs:
            row = Sym(f"row{g}", "x")
            extra = len(grp.members) - 1
            p.comment("one row: a GEMV a member on the params as they are, no stacked copy, "
                      "where the")
            p.comment("copy costs more than the further calls (kernels.tile_sizes."
                      "ROW_CALL_ELEMENTS)")
            p.assign(row, code("{} == 1", B) if not extra else
                     code("{} == 1 and {} * {} <= {} * ({})", B, T,
                          str(extra * ROW_CALL_ELEMENTS), cols, total))
            stacked = code("({} or {})", stacked, row)
        p.assign(wt, kern.empty(code("(0 if {} else {}, {})", stacked, cols, total)))
        offset = Dim.lit(0)
        with p.indent(code("if {}:", tiled)):
            for m, w in members:
                p.call("pack_cols_t", wp, param(G, G[m].args[0]), _dim(offset))
                offset = offset + G[m].type.shape[0]
        offset = Dim.lit(0)
        with p.indent(code("elif not {}:", stacked)):
            for m, w in members:
                stop = offset + G[m].type.shape[0]
                p.call("copy_t", Arr(wt, (("all",), ("slice", _dim(offset), _dim(stop)))),
                       param(G, G[m].args[0]))
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
        wsp, ws = array(f"wsp{i}_{u}", 3), array(f"ws{i}_{u}", 2)
        tiled = self._tiled_flag(kern, Sym(f"tiledc{i}_{u}", "x"), cols,
                                 [_dim(G[g].type.shape[0]) for g in cg.cotangents])
        split = None
        if self.splits_cotangents(i, u):
            split = self._split_flag(kern, Sym(f"splitc{i}_{u}", "x"), tiled, total, cols,
                                     "term by term")
            self._term_buffers(kern, i, u, cols, split)
        p.assign(wsp, code("np.zeros((({} + NR - 1) // NR if {} else 0, {}, NR), {})", cols,
                           tiled, total, DTYPE))
        p.assign(ws, kern.empty(code("(0 if {} else {}, {})", tiled if split is None else
                                     code("{} or {}", tiled, split), total, cols)))
        blocks = [(w, self.cg_cols[(i, g)]) for w, g in zip(use.weights, cg.cotangents)]
        # the flat copies below fingerprint these (_stack): packed, they are taken apart
        fused = [self._seen_arg(w) for w, _ in blocks]
        fused = [a for a in dict.fromkeys(fused)
                 if a in kern.seen_index and a not in kern.seen_taken]
        with p.indent(code("if {}:", tiled)):
            for w, (start, _) in blocks:
                p.call("pack_rows", wsp, param(G, w), start)
            if fused:
                with p.indent(code("if {}.shape[0]:", SEEN)):
                    self._take_fingerprints(kern, fused)
        with p.indent("else:" if split is None else code("elif not {}:", split)):
            for w, (start, stop) in blocks:
                self._stack(kern, ws, start, stop, w)
        if split is not None and fused:     # the terms read the params themselves
            with p.indent(code("if {} and {}.shape[0]:", split, SEEN)):
                self._take_fingerprints(kern, fused)

    def _packed_single_weights(self, kern: _Kernel, nodes: list[int]) -> None:
        """Panels for each lone g @ W of the backward loop (see packs_single)."""
        p = kern.p
        for n in nodes:
            if not self.packs_single(n):
                continue
            w = param(self.G, self.G[n].args[0])
            p.comment(f"{ident(self.G[self.G[n].args[0]].attrs[0])}, packed once for the "
                      "backward step's register tiles (rnndsl.kernels.gemm)")
            wpt = array(self.value_name("wpt", n), 3)
            tiled = Sym(f"tiledw{len(kern.single_tiled)}", "x")
            kern.single_tiled[n] = tiled
            p.assign(tiled, code("{} or {} >= 2 and {} * {}.shape[0] * {}.shape[1] >= {}",
                                 TILES, B, B, w, w, self.tuned("micro_tile_product")),
                     "   # below MR rows too, past BLAS's direct kernel")
            p.assign(wpt, code("np.zeros((({}.shape[1] + NR - 1) // NR if {} else 0, "
                               "{}.shape[0], NR), {})", w, tiled, w, DTYPE))
            with p.indent(code("if {}:", tiled)):
                p.call("pack_rows", wpt, w, 0)

    def _loop_arrays(self, kern: _Kernel, stage: str, nodes: list[int]) -> None:
        """Work arrays of a loop stage, allocated once before the loop."""
        G, p = self.G, kern.p
        mine = set(nodes)
        for grp in self.plan.matmuls.get(stage, []):
            if G[grp.vector].type.batched and any(m in mine for m in grp.members):
                g = self.matmul_index[id(grp)]
                p.assign(array(f"mm{g}", 2),
                         kern.empty(code("({}, {})", B, self.group_total(grp))))
                if self.splits_small(grp, stage):
                    for k, m in enumerate(grp.members):
                        size = _dim(G[m].type.shape[0])
                        p.assign(array(f"mm{g}_{k}", 2), kern.empty(
                            code("({} if {} else 0, {})", B, Sym(f"split{g}", "x"), size)))
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
                    p.call("fill2", array(self.value_name("w", n), 2), self.k(0.0),
                           note="   # its term is in the stacked GEMM")
                continue
            if node.op in ELEMENTWISE:
                if self.folded(n) or not self.needs_array(n, group_of.get(n, {n})):
                    continue
                if n in self.plan.saved and self.writes_tape_directly(n):
                    continue
            kern.alloc(n, stage)
            if not node.type.batched:
                self.loop_allocated.add(n)


def param(G, nid: int) -> Sym:
    """The array of param node nid (`p_<name>`)."""
    return array(f"p_{ident(G[nid].attrs[0])}", 2 if G[nid].type.rank == 2 else 1)
