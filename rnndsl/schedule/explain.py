"""A plan as a loop nest in pseudocode: `rnndsl explain`, and the docstring that opens
each generated kernel. Input: a `Plan` (and the target, whose passes decide the notes:
register tiles, persistent kernels). Output: lines of text; nothing is generated."""

from __future__ import annotations

from ..core.ops import Op
from .plan import ELEMENTWISE, LOOP_STAGES, Plan, passes_for


# under a time loop with no work of its own: a cell without states (a network's readout
# segment) runs all of it over the T*B rows at once
NOTHING_A_STEP = "(nothing: no state carries a step to the next, so all runs over T*B rows)"


def explain_lines(plan: Plan, which: str = "both", target: str = "cpu",
                  tokens=frozenset()) -> list[str]:
    """The loop nest in pseudocode: what runs where, in order, on `target` (whose passes
    among the plan's decide the notes: register tiles, persistent kernels). `tokens`:
    the `input token` nodes the target's kernels take as ids (a gather, not a GEMM)."""
    G = plan.graph
    lines: list[str] = []
    active = set(passes_for(plan.passes, target))

    stacked_mt: dict[int, list[int]] = {}     # MATVEC_T -> all terms of its stacked GEMM
    stacked_outer: dict[int, list[int]] = {}
    for cg in plan.cotangent_groups:
        for use in cg.uses:
            for m in use.matvec_t or []:
                stacked_mt[m] = use.weights
            for o in use.outers or []:
                stacked_outer[o] = use.weights

    forward_nodes = set(G.needed(plan.step.roots()))

    def describe(stage: str, part=None) -> list[str]:
        """The lines of one stage; `part`: only its forward (True) or backward (False)
        nodes (the pre stage holds both: the backward's are computed in its kernel)."""
        out = []
        tiles = (" in register tiles" if stage in LOOP_STAGES and "microkernel" in active
                 else "")
        mm = {m: grp for grp in plan.matmuls.get(stage, []) for m in grp.members}
        seen: set[int] = set()
        for group in plan.fused.get(stage, []):
            seen.update(group)
        shown: set[int] = set()
        for nid in plan.order[stage]:
            if nid in shown or (part is not None and (nid in forward_nodes) != part):
                continue
            node = G[nid]
            if nid in mm:
                grp = mm[nid]
                ws = ", ".join(G[G[m].args[0]].attrs[0] for m in grp.members)
                batched = G[grp.vector].type.batched
                vec = G.names.get(grp.vector, G.label(grp.vector))
                if grp.vector in tokens:
                    out.append(f"gather [{ws}] columns by the ids of token {vec}")
                else:
                    out.append(f"GEMM [{ws}] @ {vec}" + (tiles if batched else ""))
                shown.update(grp.members)
            elif node.op in ELEMENTWISE:
                group = next(g for g in plan.fused[stage] if nid in g)
                names = [G.names[n] for n in group if n in G.names]
                label = f"elementwise x{len(group)}" + (f" ({', '.join(names)})" if names else "")
                out.append(("fused " if len(group) > 1 else "") + label)
                shown.update(group)
            elif nid in stacked_outer or nid in stacked_mt:
                weights = stacked_outer.get(nid) or stacked_mt[nid]
                names = ", ".join(G[w].attrs[0] for w in weights)
                if nid in stacked_outer and node.args[1] in tokens:
                    out.append(f"scatter d[{names}] columns by the ids of token "
                               f"{G.names.get(node.args[1], 'v')} (stacked cotangents)")
                    members = [o for o, w in stacked_outer.items() if w is weights]
                elif nid in stacked_outer:
                    out.append(f"GEMM d[{names}] = g^T {G.names.get(node.args[1], 'v')} "
                               "(stacked cotangents)")
                    members = [o for o, w in stacked_outer.items() if w is weights]
                else:
                    out.append(f"GEMM g @ [{names}] (stacked cotangents){tiles}")
                    members = [m for m, w in stacked_mt.items() if w is weights]
                shown.update(members)
            elif node.op == Op.OUTER and node.args[1] in tokens:
                out.append(f"scatter d_W columns by the ids of token "
                           f"{G.names.get(node.args[1], 'v')} ({G[nid].type})")
                shown.add(nid)
            elif node.op == Op.OUTER:
                out.append(f"GEMM d_W = g^T {G.names.get(node.args[1], 'v')} ({G[nid].type})")
                shown.add(nid)
            elif node.op == Op.MATVEC_T:
                lone = node.type.batched and G[node.args[0]].op == Op.PARAM
                out.append(f"GEMM g @ {G[node.args[0]].attrs[0]}" + (tiles if lone else ""))
                shown.add(nid)
            elif node.op == Op.UNBROADCAST:
                t = G[nid].type
                if t.batched:     # one value a row, used across the row's features
                    out.append(f"sum over each row's features ({t}: the gradient of a "
                               "value used across the row)")
                elif t.rank:
                    out.append(f"sum over rows ({t}: a bias or scale gradient)")
                else:
                    out.append(f"sum over rows and features ({t}: the gradient of a "
                               "scalar)")
                shown.add(nid)
            elif node.op in (Op.SUM, Op.MEAN) and node.type.batched:
                out.append(f"{node.op.value} of each row's features")
                shown.add(nid)
            else:
                out.append(node.op.value)
                shown.add(nid)
        return out

    def taped(stage: str, among=None) -> int:
        """How many of the plan's saved values (each on a tape of T*B rows) `stage`
        computes (of `among` only, where given)."""
        return sum(1 for n in plan.saved if plan.stage.get(n) == stage
                   and (among is None or n in among))

    loop_note = ("   (one persistent cooperative kernel"
                 + (", recurrent weights held in shared memory where they fit"
                    if "hold_weights" in active else "") + ")"
                 if "persistent" in active else "")
    if which in ("forward", "both"):
        lines.append("forward:")
        if plan.order["const"]:
            lines.append(f"  once: {len(plan.order['const'])} parameter-only ops")
        for item in describe("pre", part=True):
            lines.append(f"  all T*B rows: {item}")
        lines.append("  for t in 0 .. T-1:" + loop_note)
        steps = describe("fwd")
        for item in steps:
            lines.append(f"    {item}")
        kept = taped("fwd")
        histories = sorted(plan.saved_states)
        if kept or histories:
            what = [f"{kept} value{'s' if kept != 1 else ''}"] if kept else []
            what += [f"the previous {', '.join(histories)}"] if histories else []
            lines.append(f"    save {' and '.join(what)} for BPTT")
        elif not steps:
            lines.append(f"    {NOTHING_A_STEP}")
        if plan.at_end:
            lines.append(f"  after the loop, from the final states, B rows: final "
                         f"{', '.join(plan.at_end)}")
            for item in describe("last"):
                lines.append(f"    {item}")
        for item in describe("after"):
            lines.append(f"  after the loop, all T*B rows: {item}")
        kept = taped("after") + taped("pre", forward_nodes)
        if kept:
            lines.append(f"  kept for BPTT: {kept} of the T*B-row values above")
    if which in ("backward", "both"):
        lines.append("backward:")
        for item in describe("pre", part=False):
            lines.append(f"  all T*B rows: {item}")
        lines.append("  for t in T-1 .. 0:" + loop_note)
        steps = describe("bwd")
        for item in steps:
            lines.append(f"    {item}")
        kept = taped("bwd")
        if kept:
            lines.append(f"    save {kept} value{'s' if kept != 1 else ''} for the GEMMs "
                         "after the loop")
        if not steps:
            lines.append(f"    {NOTHING_A_STEP}")
        for item in describe("post"):
            lines.append(f"  all T*B rows: {item}")
    return lines
