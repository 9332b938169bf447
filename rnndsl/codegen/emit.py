"""Stage 6: plan -> Python source of Numba kernels (the CPU target): the emitter.

This module drives the stage: buffer layout, zero folding, the two kernels and their
argument lists. dialect.py holds what differs between targets, kernel.py one kernel's
loop nests, module.py the module's header and footer.

Input: a `Plan`. Output: `Emitted`, the text of a module with two `@njit` kernels,
`forward` and `backward`, and the argument lists the runtime marshals for them.

Layout conventions inside the kernels (see plan.py for the stages):
- a full-sequence array is 3-D (T, B, size); `X[t]` is step t, and `X_r`, its 2-D
  (T*B, size) alias, is what the row stages (pre, post) work on;
- a loop value is a 2-D work array (B, size), allocated once before its loop;
- unbatched values are 1-D (size,) or (1,) for scalars; constants are typed scalars
  `k<i>` read from the `consts` array, so float32 kernels stay float32.

Every generated name is a fixed prefix plus a spec identifier that the grammar already
restricts to [A-Za-z_][A-Za-z0-9_]*, or a number, so nothing from a spec reaches the
source except as an identifier, a number the emitter formats itself, or a sanitised
comment. A node's value is named by naming.py's one rule (`e_i`, `tape_i`, `w_c__next`
where the spec names it, `e17`, `tape38` where it does not), through `value_name`.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, replace

from ..core.version import __version__
from ..lang import printer
from ..kernels.tile_sizes import NR
from ..core.ops import HARD_SIGMOID_SLOPE, LEAVES, Op
from ..schedule.explain import explain_lines
from ..schedule.plan import (ELEMENTWISE, FORWARD_STAGES, LOOP_STAGES, MatmulGroup, Plan,
                              passes_for)
from .args import arg_name, arg_note
from .printer_py import Printer, safe_comment, safe_docstring, signature
from ..core.shapes import Dim

from .dialect import *  # noqa: F401,F403
from .dialect import _dim, _elementwise_expr, _ENDS_LIKE_A_VIEW  # noqa: F401
from .dialect import gathered_tokens
from . import form
from .buffers import TILES, Buffers
from .form import Arr, Consts, Reshape, Sym, code, fix, for_loop, prune_dead_views
from .kernel import B, DTYPE, R, STEP, T, _Kernel, array
from .naming import ValueNames
from .module import _const_repr, _dim_repr, module_footer, module_header  # noqa: F401
from ..kernels.meta import Arg, Tape


class _Emitter(Buffers):
    kernel_class = _Kernel
    dialect = CPU

    def __init__(self, plan: Plan, spec_path: str, spec_text: str, digest: str):
        self.plan, self.G = plan, plan.graph
        self.value_name = ValueNames(self.G.names)    # node id -> its values' names
        self.spec_path, self.spec_text, self.digest = spec_path, spec_text, digest
        self.consts: list[tuple] = []
        self._const_names: dict[tuple, str] = {}
        step, grads = plan.step, plan.grads
        self.forward_nodes = set(self.G.needed(step.roots()))
        # outputs the forward computes after its loop (readout_after): node -> names
        self.after_outputs: dict[int, list[str]] = {}
        for name, nid in step.outputs.items():
            if plan.stage.get(nid) == "after":
                self.after_outputs.setdefault(nid, []).append(name)
        self.next_state_of = {nid: name for name, nid in step.next_state.items()}
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
        # `input token` nodes whose kernels take ids (dialect.gathers_tokens)
        self.token_names = gathered_tokens(step.cell, self.dialect)
        self.token_nodes = {step.inputs[name] for name in self.token_names}
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
    def k(self, value) -> Sym:
        """A typed constant: a float, or ("dim", Dim) for a size as a float."""
        key = value if isinstance(value, tuple) else ("value", float(value))
        if key not in self._const_names:
            self._const_names[key] = Sym(f"k{len(self.consts)}", "f")
            self.consts.append(key)
        return self._const_names[key]

    def tuned(self, name: str) -> Sym:
        """A mark chosen for the machine the kernel runs on (rnndsl.build.machine), read
        from `consts` like a constant: one compiled kernel serves every machine."""
        return self.k(("tuning", name))

    def const_of(self, nid: int) -> Sym:
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
        if nid in self.plan.saved or nid in self.alias_roots:
            return True
        if nid in self.roots and not (nid in self.after_outputs
                                      and self.G[nid].op in ELEMENTWISE):
            return True     # (an output computed after the loop is written straight in)
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
        """Whether a stacked cotangent GEMM gets a term-by-term path for small B: the
        BLAS path's (with the register tiles, the one taken below MR rows)."""
        return (self.dialect.small_batch_splits
                and len(self.plan.cotangent_groups[i].cotangents) > 1
                and self.per_step_cotangent_gemm(i, u))

    def splits_small(self, grp: MatmulGroup, stage: str) -> bool:
        """Whether a per-step stacked GEMM gets a member-by-member path for small B (with
        the register tiles, below MR rows: see MICRO_SPLIT_PRODUCT). A token's is a
        gather, never a GEMM."""
        return (self.dialect.small_batch_splits and stage in LOOP_STAGES
                and len(grp.members) > 1 and self.G[grp.vector].type.batched
                and grp.vector not in self.token_nodes)

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
            stages = ("const", "pre", "fwd", "last", "after")
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
        infer_body = self.inference_twin(fwd_body, fwd_args)
        fwd_body = form.text(prune_dead_views(form.fill_consts(fwd_body)))
        bwd_body = form.text(prune_dead_views(form.fill_consts(bwd_body)))
        if infer_body is not None:
            fwd_body += "\n\n" + form.text(prune_dead_views(form.fill_consts(infer_body)))
        name = cell.name
        meta = Printer()
        meta.line(f"{name}_META = dict(")
        with meta.indent():
            meta.line(f"spec_path={self.spec_path!r},")
            meta.line(f"spec_text={self.spec_text!r},")
            meta.line(f"passes={tuple(passes_for(self.plan.passes, self.dialect.target))!r},")
            self._meta_list(meta, "consts", [_const_repr(c) for c in self.consts])
            self._meta_list(meta, "tapes", [Tape(n, _dim_repr(d)) for n, d in self._tapes()])
            self._meta_list(meta, "forward_args", [Arg(*a) for a in fwd_args])
            self._meta_list(meta, "backward_args", [Arg(*a) for a in bwd_args])
            if self.token_names:     # inputs the kernels take as ids (T, B)
                meta.line(f"token_ids={self.token_names!r},")
            if self.plan.at_end:     # final outputs the forward writes once, (B, size)
                meta.line(f"at_end={tuple(self.plan.at_end)!r},")
            meta.line(f"forward=forward_{name},")
            if infer_body is not None:
                meta.line(f"forward_inference=forward_inference_{name},")
                # the forward_args it leaves unwritten: the runtime hands it empty arrays
                meta.line(f"inference_unused={self.inference_unused!r},")
            meta.line(f"backward=backward_{name},")
        meta.line(")")
        source = fwd_body + "\n\n" + bwd_body + "\n\n" + meta.text()
        return Emitted(source, fwd_args, bwd_args, self.consts, self._tapes())

    def inference_twin(self, body: list, args: list[tuple]) -> list | None:
        """The forward kernel for a forward no backward follows (grad=False: sampling,
        evaluation): the same code and arguments, without the stores into the tapes and
        histories that only BPTT reads (form.drop_unread_stores; a tape the forward reads
        itself, as the readout after the loop reads h', stays). None where it would drop
        nothing. Numba compiles it on its first call, so a process that only trains
        never pays for it."""
        if self.dialect.target != "cpu":   # (the cuda target's host drivers launch kernels)
            return None
        kept = {self.arg_name(a) for a in args if a[0] in ("tape", "hist")}
        twin = form.copy_body(body)
        twin, gone = form.drop_unread_stores(twin, kept)
        if not gone:
            return None
        self.inference_unused = tuple(i for i, a in enumerate(args)
                                      if self.arg_name(a) in gone)
        name = self.plan.step.cell.name
        for k, st in enumerate(twin):
            if isinstance(st, form.Block) and str(st.header).startswith(f"def forward_{name}("):
                notes = [(self.arg_name(a), "unused here: kept for BPTT only"
                          if self.arg_name(a) in gone else self.arg_note(a, "forward"))
                         for a in args]
                header = form.Code(signature(f"forward_inference_{name}", notes),
                                   getattr(st.header, "syms", ()))
                twin[k] = replace(st, header=header, body=self._inference_doc(st.body))
                return twin
        raise AssertionError(f"no forward_{name} in the forward kernel's body")

    def _inference_doc(self, body: list) -> list:
        """The forward's docstring, its first line saying what this twin is for."""
        first = next(k for k, st in enumerate(body) if isinstance(st, form.Raw)
                     and st.text.startswith('"""Forward pass of'))
        head = [form.Raw(body[first].text.replace(" over T steps.", " over T steps, for "
                                                  "inference (grad=False):")),
                form.Raw("the tapes and histories that only BPTT reads are not written.")]
        rest = [st for st in body[first + 1:] if not (
            isinstance(st, form.Raw) and re.fullmatch(r"\s*(save .* for BPTT|kept for BPTT: .*)", st.text))]
        return body[:first] + head + rest

    def _meta_list(self, p, key: str, records: list) -> None:
        """`key=[...],` in the metadata, one named record a line (kernels/meta.py); a
        saved value's record says which value of the spec it is."""
        if not records:
            p.line(f"{key}=[],")
            return
        with p.indent(f"{key}=["):
            for record in records:
                node = (record.node if isinstance(record, Tape) else
                        record[1] if isinstance(record, Arg) and record.kind == "tape"
                        else None)
                name = self.G.names.get(node) if node is not None else None
                p.line(f"{record!r},  # {safe_comment(name)}" if name else f"{record!r},")
        p.line("],")

    def _tapes(self) -> list[tuple[int, Dim]]:
        tapes = sorted(n for n in self.plan.saved if self.plan.stage[n] in FORWARD_STAGES)
        return [(n, self.G[n].type.shape[0] if self.G[n].type.shape else Dim.lit(1))
                for n in tapes]

    def signature(self, which: str) -> list[tuple]:
        step, plan = self.plan.step, self.plan
        cell = step.cell
        args: list[tuple] = [("dim", d) for d in cell.dims]
        args += [("T",), ("B",), ("consts",)]
        if self.micro:
            args += [("threads",)]    # for rnndsl.kernels.gemm's parallel loops
        if self.dialect.fingerprints:
            args += [("seen",)]       # what backward checks (rnndsl.cells.seen)
        args += [("param", d.name) for d in cell.params]
        args += [("input", d.name) for d in cell.inputs]
        tapes = [n for n, _ in self._tapes()]
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
            args += [("input_grad", d.name) for d in cell.inputs if not d.token]
            args += [("state0_grad", d.name) for d in cell.states]
        args += [("hist", name) for name in sorted(plan.saved_states)]
        args += [("tape", n) for n in tapes]
        return args

    def arg_name(self, arg: tuple) -> str:
        return arg_name(arg, self.value_name)

    def arg_note(self, arg: tuple, which: str) -> str:
        if arg[0] == "output" and arg[1] in self.plan.at_end:
            return f"output {arg[1]} at each sequence's end, written, (B, size)"
        return arg_note(arg, which, self.G.names, self.token_names)

    def _prologue(self, kern: _Kernel, args: list[tuple]) -> None:
        p = kern.p
        consts = Sym("consts", "a1")
        p.assign(R, code("{} * {}", T, B))
        p.assign(DTYPE, code("{}.dtype", consts))
        if self.micro:
            p.assign(TILES, code("{} >= MR", B),
                     "   # per-step GEMMs in rnndsl.kernels.gemm's tiles (MR+ rows)")
        p.add(Consts(self.consts, consts))   # printed at the end: found as we go
        # seen[k]: the k-th param or input argument's fingerprint (_fingerprints), where
        # the kernel takes them; a weight stacked by a flat copy takes its own there
        read = [a for a in args if a[0] in ("param", "input")] if ("seen",) in args else []
        kern.seen_index = {arg: k for k, arg in enumerate(read)}
        cell = self.plan.step.cell
        sizes = {d.name: d for d in (*cell.inputs, *cell.states)}
        for arg in args:
            kind = arg[0]
            if kind in ("input", "hist", "output", "output_grad", "input_grad"):
                name = self.arg_name(arg)
                if kind in ("output", "output_grad"):
                    size = kern.size(self.plan.step.outputs[arg[1]])
                elif kind == "input" and arg[1] in self.token_names:
                    p.assign(array(f"{name}_r", 1), Reshape(array(name, 2), R),
                             "   # token ids, one a row")
                    continue
                else:
                    t = sizes[arg[1]].type
                    size = _dim(t.shape[0])
                p.assign(array(f"{name}_r", 2), Reshape(array(name, 3), code("({}, {})", R, size)))
            elif kind == "tape":
                name = self.arg_name(arg)
                p.assign(array(f"{name}_r", 2),
                         Reshape(array(name, 3), code("({}, {})", R, kern.size(arg[1]))))

    def _fingerprints(self, kern: _Kernel) -> None:
        """seen[k] = the fingerprint of the k-th param or input argument, in signature
        order, where the caller asks (a non-empty `seen`): the forward's and the
        backward's are compared, so that a param or input changed in place in between
        is refused (rnndsl.cells.seen). A weight stacked by a flat copy is fingerprinted
        by that copy as it reads it (kernels.stack_rows_seen: its bytes come from memory
        once; `seen_taken`), so this is emitted after the stacking code is, and printed
        before it: the rest in one block, whose reads bring the arrays into cache for the
        transposing copies. A call of their own would cost the dispatch of every array
        and a pass from farther away (benchmarks/backward_snapshot.py)."""
        p = kern.p
        rest = [arg for arg in kern.seen_index if arg not in kern.seen_taken]
        if not rest:
            return
        p.comment("fingerprints of the params and inputs this call reads: the backward's must")
        p.comment("be the forward's (none changed in place in between, rnndsl.cells.seen)")
        with p.indent(code("if {}.shape[0]:", array("seen", 1))):
            self._take_fingerprints(kern, rest)

    def _docstring(self, kern: _Kernel, which: str) -> None:
        plan = self.plan
        p = kern.p
        on = ", ".join(passes_for(plan.passes, self.dialect.target)) or "none"
        p.line('"""' + (f"Forward pass of {plan.step.cell.name} over T steps."
                        if which == "forward" else
                        f"BPTT for {plan.step.cell.name}: gradients of params, inputs and "
                        "initial states."))
        p.line("")
        p.line("Loop nest:")
        for line in explain_lines(plan, which, tokens=self.token_nodes):
            p.line("    " + safe_docstring(line))
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
        at_end = set(plan.at_end)
        after = {name for name, nid in step.outputs.items() if plan.stage.get(nid) == "after"}
        with self._open(kern, "forward", args, nodes,
                        "hoisted out of the time loop: no state, all T*B rows at once",
                        weight_stages=("pre", "fwd", "last", "after")):
            for name in hoisted:
                p.call("copy2", array(f"out_{ident(name)}_r", 2),
                       kern.whole(step.outputs[name], "pre"))
            self._loop_arrays(kern, "fwd", nodes["fwd"])
            # The next states: each straight into s_*, unless one is another state as it
            # stood (a state handed on unchanged: s_*), which needs the new values apart
            # (nx_*) until all are written.
            next_src = {name: kern.whole(nid, "fwd") for name, nid in step.next_state.items()}
            buffered = any(self.views_state_buffer(nid, Op.STATE)
                           for nid in step.next_state.values())
            for d in step.cell.states:
                self._state_buffers(kern, "s0_", "s_", "nx_", d.name, buffered)
            with p.indent(for_loop(STEP, code("range({})", T))):
                for name in sorted(plan.saved_states):
                    p.call("copy2", Arr(array(f"hist_{ident(name)}", 3), fix(STEP)),
                           array(f"s_{ident(name)}", 2))
                kern.emit_stage("fwd", nodes["fwd"])
                for name, nid in step.outputs.items():
                    if name not in hoisted and name not in at_end and name not in after:
                        p.call("copy2", Arr(array(f"out_{ident(name)}", 3), fix(STEP)),
                               kern.whole(nid, "fwd"))
                into = "nx_" if buffered else "s_"
                for name, src in next_src.items():
                    p.call("copy2", array(f"{into}{ident(name)}", 2), src)
                if buffered:
                    for name in step.next_state:
                        p.call("copy2", array(f"s_{ident(name)}", 2),
                               array(f"nx_{ident(name)}", 2))
            for d in step.cell.states:
                p.call("copy2", array(f"fin_{ident(d.name)}", 2), array(f"s_{ident(d.name)}", 2))
            if at_end:
                p.comment(f"{', '.join(sorted(at_end))}: from the final states, once (each "
                          "sequence's last step)")
                self._loop_arrays(kern, "last", nodes["last"])
                kern.emit_stage("last", nodes["last"])
                for name in plan.at_end:
                    p.call("copy2", array(f"out_{ident(name)}", 2),
                           kern.whole(step.outputs[name], "last"))
            if nodes["after"]:
                p.comment("feeding no state: after the time loop, all T*B rows at once")
                kern.emit_stage("after", nodes["after"])
                for name in sorted(after - kern.outputs_written):   # a GEMM's, say
                    p.call("copy2", array(f"out_{ident(name)}_r", 2),
                           kern.whole(step.outputs[name], "after"))
        return p.body, args

    def _state_buffers(self, kern: _Kernel, given: str, into: str, apart: str, name: str,
                       buffered: bool) -> None:
        """A loop's state buffer, a copy of the given array, and its second buffer."""
        name = ident(name)
        src = array(given + name, 2)
        kern.p.assign(array(into + name, 2), code(self.dialect.clone, src))
        if buffered:
            kern.p.assign(array(apart + name, 2), code("{}({})", self.dialect.empty_like,
                                                        array(into + name if into == "ds_"
                                                              else given + name, 2)))

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
                    self._sequence(kern, self.value_name("tape", n), kern.size(n))
            with p.capture() as stacked:
                self._cotangent_buffers(kern)
                self._packed_single_weights(kern, nodes["bwd"])
            self._fingerprints(kern)      # those the stacking copies do not take, first
            for st in stacked:
                p.add(st)
            for name in sorted(plan.saved_next_seeds):
                size = _dim(step.graph[step.states[name]].type.shape[0])
                self._sequence(kern, f"dnext_{ident(name)}", size)
            self._loop_arrays(kern, "bwd", nodes["bwd"])
            # The state gradients a step hands back: each straight into ds_*, unless one
            # is computed from another state's ds_* as it stood (a state passed on
            # unchanged), which needs the new values apart (nds_*) until all are done.
            state_src = {name: None if nid is None else kern.whole(nid, "bwd")
                         for name, nid in grads.states.items()}
            buffered = any(nid is not None and self.views_state_buffer(nid, Op.SEED)
                           for nid in grads.states.values())
            for d in step.cell.states:
                self._state_buffers(kern, "dfin_", "ds_", "nds_", d.name, buffered)
            backwards = code("range({} - 1, -1, -1)", T)
            with p.indent(for_loop(STEP, backwards)):
                for name in sorted(plan.saved_next_seeds):
                    p.call("copy2", Arr(array(f"dnext_{ident(name)}", 3), fix(STEP)),
                           array(f"ds_{ident(name)}", 2))
                kern.emit_stage("bwd", nodes["bwd"])
                for name, nid in grads.params.items():
                    if nid is not None and plan.stage.get(nid) != "post":
                        nd = 1 if G[nid].type.rank < 2 else 2
                        p.call(f"add_into{nd}", array(f"dp_{ident(name)}", nd),
                               kern.whole(nid, "bwd"))
                for name, nid in grads.inputs.items():
                    if nid is not None and plan.stage.get(nid) != "post":
                        p.call("copy2", Arr(array(f"din_{ident(name)}", 3), fix(STEP)),
                               kern.whole(nid, "bwd"))
                into = "nds_" if buffered else "ds_"
                for name, src in state_src.items():
                    if src is None:
                        p.call("fill2", array(f"{into}{ident(name)}", 2), self.k(0.0))
                    else:      # never ds_<name> itself unless buffered (views_state_buffer)
                        p.call("copy2", array(f"{into}{ident(name)}", 2), src)
                if buffered:
                    for name in grads.states:
                        p.call("copy2", array(f"ds_{ident(name)}", 2),
                               array(f"nds_{ident(name)}", 2))
            for d in step.cell.states:
                p.call("copy2", array(f"ds0_{ident(d.name)}", 2),
                       array(f"ds_{ident(d.name)}", 2))
            if nodes["post"]:
                p.comment("deferred out of the backward loop: all T*B rows at once")
                inputs_only = self.inputs_only(nodes["post"])
                kern.emit_stage("post", [n for n in nodes["post"] if n not in inputs_only])
                for name, nid in grads.params.items():
                    if nid is not None and plan.stage.get(nid) == "post":
                        nd = 1 if G[nid].type.rank < 2 else 2
                        p.call(f"copy{nd}", array(f"dp_{ident(name)}", nd),
                               kern.whole(nid, "post"))
                din = [(name, nid) for name, nid in grads.inputs.items()
                       if nid is not None and plan.stage.get(nid) == "post"]
                if din and self.dialect.skips_input_grads:
                    with p.indent(code("if {}:", Sym("want_din", "x"))):
                        p.comment("the input sequences' gradients, when the caller wants them")
                        kern.emit_stage("post", [n for n in nodes["post"] if n in inputs_only])
                        for name, nid in din:
                            p.call("copy2", array(f"din_{ident(name)}_r", 2),
                                   kern.whole(nid, "post"))
                else:
                    kern.emit_stage("post", [n for n in nodes["post"] if n in inputs_only])
                    for name, nid in din:
                        p.call("copy2", array(f"din_{ident(name)}_r", 2),
                               kern.whole(nid, "post"))
        return p.body, args

    @contextmanager
    def _open(self, kern: _Kernel, which: str, args, nodes, pre_comment: str,
              weight_stages: tuple = ()):
        """A kernel's decorator, signature, docstring, prologue and stacked weights, then
        its const and hoisted stages; the body follows inside the `with`."""
        p = kern.p
        if self.dialect.decorator:
            p.line(self.dialect.decorator)
        names = [(self.arg_name(a), self.arg_note(a, which)) for a in args]
        with p.indent(signature(f"{which}_{self.plan.step.cell.name}", names)):
            self._docstring(kern, which)
            self._prologue(kern, args)
            with p.capture() as stacked:
                self._weights(kern, weight_stages)
            if which == "forward":        # the backward's after its cotangents' buffers
                self._fingerprints(kern)  # those the stacking copies do not take, first
            for st in stacked:
                p.add(st)
            if nodes["const"]:
                p.comment("once per call: parameters only")
                kern.emit_stage("const", nodes["const"])
            if nodes["pre"]:
                p.comment(pre_comment)
                kern.emit_stage("pre", nodes["pre"])
            yield


def emit(plan: Plan, spec_path: str, spec_text: str, digest: str) -> Emitted:
    """One cell's kernels and metadata, as a section of a generated module."""
    return _Emitter(plan, spec_path, spec_text, digest).emit()
