"""Stage 5: the schedule of a compiled cell, kept as data (`rnndsl explain` prints it).

Input: a `StepGraph` and its one-step adjoint (`grad.grad_step`). Output: a `Plan` that
puts every node in one of five stages and says what crosses between them:

    const   params and constants only: computed once per call (weight transposes too)
    pre     no state: hoisted out of the time loop, computed over all T*B rows at once
    fwd     the forward time loop body, t = 0 .. T-1
    last    after the forward loop, over B rows: `final` outputs read only from the
            final states (a classifier's readout), computed once, not at every step
    bwd     the backward time loop body, t = T-1 .. 0: only what carries the state
            cotangent to the previous step
    post    deferred after the backward loop, over all T*B rows: weight gradients as one
            GEMM each, input gradients, bias sums

A loop value read by a later stage is saved on a tape of T*B rows. Batched values are
2-D arrays (rows, size); a full-sequence array has T*B rows and step t is its row block
[t*B, (t+1)*B). The passes (`PASSES`) can each be switched off; switched off, the
schedule degrades to the plain one (everything per step), never to a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.grad import StepGrads
from ..ir.graph import Graph, StepGraph
from ..core.ops import Op

PASSES = ("cse", "simplify", "hoist", "hoist_outputs", "fuse_matmul", "fuse_elementwise",
          "defer_grads", "final_at_end", "readout_after", "persistent", "hold_weights",
          "microkernel")
# Passes that only one target's emitter acts on; the others emit the same program with
# them on or off. `persistent` runs each time loop as one cooperative kernel (cuda);
# `hold_weights` has those kernels keep the recurrent weights in shared memory across
# the steps, where they fit and where that pays (cuda, with `persistent`);
# `microkernel` runs the per-step GEMMs in rnndsl.kernels.gemm's register tiles over weights
# packed once per call, instead of a BLAS call a step (cpu).
# `final_at_end` computes a `final` output that reads only the final states once, after
# the loop (cpu; the cuda emitters compute every output in the loop). `readout_after`
# computes the forward's work that feeds no state after the loop, over all T*B rows (cpu).
TARGET_PASSES = {"persistent": "cuda", "hold_weights": "cuda", "microkernel": "cpu",
                 "final_at_end": "cpu", "readout_after": "cpu"}


def passes_for(passes, target: str) -> list[str]:
    """The passes among `passes` that change what `target` runs, sorted."""
    return sorted(p for p in passes if TARGET_PASSES.get(p, target) == target)
"""cse: an expression computed twice is computed once (the IR is hash-consed; off, only
leaves are shared). simplify: constant folding and algebraic identities (simplify.py).
hoist: state-independent work leaves the time loop (the W @ x GEMMs over T*B rows).
hoist_outputs: the backward's work that carries no state cotangent, only the outputs'
(a readout's gradient, W_y^T @ d_logits), runs over all T*B rows before the backward loop.
fuse_matmul: matvecs sharing their vector become one GEMM with stacked weights.
fuse_elementwise: a step's elementwise ops share one loop nest, temporaries in registers.
defer_grads: weight and input gradients leave the backward loop, one GEMM each.
final_at_end: a `final` output that reads the step only through the next states (a
readout such as `final logits = V @ h' + b`) is computed once after the loop, from the
final states, over B rows (its gradient still enters BPTT at each sequence's last step).
readout_after: the forward's work that feeds no state (a readout such as
`output logits = W_y @ h' + b_y`) runs after the loop, over all T*B rows (one GEMM
instead of one a step), reading the values it needs from their tapes."""

ELEMENTWISE = frozenset({
    Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.NEG, Op.POW, Op.MIN, Op.MAX, Op.TANH, Op.SIGMOID,
    Op.RELU, Op.EXP, Op.LOG, Op.SQRT, Op.SOFTPLUS, Op.HARD_SIGMOID, Op.ABS, Op.GT, Op.SIGN,
    Op.BATCH, Op.EXPAND})
ROW_STAGES = ("pre", "after", "post")   # all T*B rows (`after`: the forward's, after its loop)
LOOP_STAGES = ("fwd", "bwd", "last")    # B rows a value (`last`: once, after the loop)
FORWARD_STAGES = ("pre", "fwd", "after")   # whose saved values the forward kernel tapes


@dataclass
class MatmulGroup:
    """Matvecs (W_k @ v) sharing v, computed as one GEMM against stacked W_k^T."""

    vector: int
    members: list[int]          # MATVEC node ids, in stacking order


@dataclass
class StackedUse:
    """One forward GEMM group seen from BPTT: v's gradient sum_k g_k @ W_k, and dW_k."""

    weights: list[int]               # PARAM ids W_k, in stacking order
    vector: int                      # the forward vector v
    matvec_t: list[int] | None       # MATVEC_T(W_k, g_k), summed; [0] (the last) does the GEMM
    outers: list[int] | None         # OUTER(g_k, v): the weight gradients


@dataclass
class CotangentGroup:
    """Cotangents g_k of stacked matvecs, kept side by side in one buffer, so that
    sum_k g_k @ W_k is one GEMM against [W_1; ...; W_n] and the dW_k one GEMM g^T v.

    A cotangent may sit in two groups: a GRU's g_r and g_z stack with g_n on the input
    side ([W_r; W_z; W_n]) and with r * g_n on the hidden side ([U_r; U_z; U_n]). Its
    home is the first group that lists it; the loop that computes it also writes it
    into the later groups' buffers (the emitter's mirrors)."""

    cotangents: list[int]
    stage: str
    taped: bool
    uses: list[StackedUse]


@dataclass
class Plan:
    step: StepGraph
    grads: StepGrads
    passes: frozenset[str]
    stage: dict[int, str]                       # non-leaf node -> stage
    order: dict[str, list[int]]                 # stage -> nodes, in execution order
    saved: set[int]                             # loop values kept on a T*B-row tape
    saved_states: set[str]                      # states whose previous values are taped
    saved_next_seeds: set[str]                  # carried cotangents that are taped
    at_end: tuple[str, ...] = ()                # final outputs computed after the loop
    matmuls: dict[str, list[MatmulGroup]] = field(default_factory=dict)
    fused: dict[str, list[list[int]]] = field(default_factory=dict)   # elementwise groups
    cotangent_groups: list[CotangentGroup] = field(default_factory=list)

    @property
    def graph(self) -> Graph:
        return self.step.graph


def _flags(G: Graph, nodes: list[int]) -> dict[int, frozenset[str]]:
    """What each node depends on: 'state', 'input', 'seed' (its cotangent inputs), and
    'next_seed' among those, the next states' cotangents (the outputs' are given)."""
    deps: dict[int, frozenset[str]] = {}
    for nid in nodes:
        node = G[nid]
        found = set()
        if node.op == Op.STATE:
            found.add("state")
        elif node.op == Op.INPUT:
            found.add("input")
        elif node.op == Op.SEED:
            found.add("seed")
            if node.attrs[0] == "next":
                found.add("next_seed")    # a state's cotangent: known only in the loop
        for a in node.args:
            found |= deps[a]
        deps[nid] = frozenset(found)
    return deps


GRAPH_PASSES = ("cse", "simplify")   # act while the graph is built (ir.graph.Graph's flags)


def make_plan(step: StepGraph, grads: StepGrads, passes=PASSES) -> Plan:
    """The schedule of a step graph and its adjoint (both in `step.graph`, as
    `pipeline.differentiate` makes them). The planner neither lowers nor differentiates,
    and adds nothing to the graph: it only reads it."""
    passes = frozenset(passes)
    unknown = passes - set(PASSES)
    assert not unknown, f"unknown passes {sorted(unknown)}"
    built = {"cse": step.graph.cse, "simplify": step.graph.simplify}
    wanted = {name: name in passes for name in GRAPH_PASSES}
    assert built == wanted, (f"the graph was built with {built} but the passes ask for "
                             f"{wanted}: lower it through pipeline.differentiate")
    G = step.graph
    fwd_nodes = G.needed(step.roots())
    all_nodes = G.needed(step.roots() + grads.roots())
    deps = _flags(G, all_nodes)
    fwd_set = set(fwd_nodes)
    carried_roots = [n for n in grads.states.values() if n is not None]
    carries = set(G.needed(carried_roots))
    hoist = "hoist" in passes
    grad_roots = set(grads.roots())
    stage: dict[int, str] = {}
    for nid in all_nodes:
        node = G[nid]
        if node.op in (Op.PARAM, Op.INPUT, Op.STATE, Op.CONST, Op.DIM, Op.SEED):
            continue
        d = deps[nid]
        if not d:
            # params and constants only; a batched one (a constant output repeated over
            # the batch) still needs rows, so it is hoisted rather than made once
            if not node.type.batched:
                stage[nid] = "const"
            elif hoist:
                stage[nid] = "pre"
            else:
                stage[nid] = "fwd" if nid in fwd_set else "bwd"
        elif nid in fwd_set or "seed" not in d:
            # forward values, and adjoint values that need no cotangent (e.g. sigmoid(x))
            if "state" not in d and hoist:
                stage[nid] = "pre"
            else:
                stage[nid] = "fwd" if nid in fwd_set else "bwd"
        elif ("hoist_outputs" in passes and hoist and not d & {"state", "next_seed"}
              and nid not in grad_roots):
            # the gradient of work that feeds no state (a readout): from the outputs'
            # cotangents alone, all T*B rows before the backward loop (the gradients
            # themselves stay with the others, deferred or summed a step)
            stage[nid] = "pre"
        elif nid in carries or "defer_grads" not in passes:
            stage[nid] = "bwd"
        else:
            stage[nid] = "post"
    at_end = _final_at_end(step, G, stage, all_nodes, fwd_set) \
        if "final_at_end" in passes else ()
    if "readout_after" in passes:
        _readout_after(step, G, stage)
    # A post node must not feed a bwd node (bwd runs first). By construction post nodes
    # are not ancestors of the carried cotangents, and bwd nodes are, so this holds.
    for nid, s in stage.items():
        for a in G[nid].args:
            assert not (s == "bwd" and stage.get(a) == "post"), (nid, a)
            assert not (s in ("fwd", "pre", "last", "after")
                        and stage.get(a) in ("bwd", "post")), (nid, a)
            assert not (s in ("fwd", "pre", "last") and stage.get(a) == "after"), (nid, a)
    saved: set[int] = set()
    saved_states: set[str] = set()
    saved_next: set[str] = set()
    state_names = {nid: name for name, nid in step.states.items()}
    for nid, s in stage.items():
        if s == "last":
            continue    # reads the final states and params, which need no tape
        for a in G[nid].args:
            src = stage.get(a)
            if src in LOOP_STAGES and src != s:
                saved.add(a)
            if src == "fwd" and s == "fwd":
                continue
            if src in ("pre", "after") and a in fwd_set and nid not in fwd_set:
                saved.add(a)      # computed in the forward kernel, read by the backward one
            if a in state_names and s != "fwd":
                saved_states.add(state_names[a])
            if G[a].op == Op.SEED and G[a].attrs[0] == "next" and s in ROW_STAGES:
                saved_next.add(G[a].attrs[1])
    # gradients computed in the backward loop but wanted as full sequences
    order = {s: [] for s in ("const", "pre", "fwd", "last", "after", "bwd", "post")}
    for nid in all_nodes:
        if nid in stage:
            order[stage[nid]].append(nid)
    plan = Plan(step, grads, passes, stage, order, saved, saved_states, saved_next,
                at_end=at_end)
    _group_matmuls(plan)
    _schedule(plan)
    if "fuse_matmul" in passes:
        _group_cotangents(plan, all_nodes)
    return plan


def _final_at_end(step: StepGraph, G: Graph, stage: dict[int, str], all_nodes: list[int],
                  fwd_set: set[int]) -> tuple[str, ...]:
    """The `final` outputs that can be computed once after the forward loop, their nodes
    moved to stage "last" (in `stage`, in place); returns their names.

    Such an output reads the step only through the next states (and params): after the
    loop the state buffers hold each sequence's final states (with lengths, the states
    freeze at each sequence's end, and compose.with_lengths leaves final outputs
    unmasked), so the value there is the value at each sequence's last step. A node it
    needs moves only if nothing else needs it at every step: the next states, the
    other outputs, and the backward, which reads forward values from their tapes (the
    output's gradient still enters the backward loop at each sequence's last step)."""
    finals = [o.name for o in step.cell.outputs if o.final]
    if not finals:
        return ()
    next_nodes = set(step.next_state.values())
    backward_reads = {a for n in all_nodes if n not in fwd_set for a in G[n].args
                      if a in fwd_set}
    others = [nid for name, nid in step.outputs.items() if name not in finals]
    moved = list(finals)        # optimistic; an output left in the loop pins its nodes
    while True:
        left = [step.outputs[name] for name in finals if name not in moved]
        pinned = set(G.needed(list(next_nodes) + others + left)) | backward_reads
        movable: dict[int, bool] = {}

        def can_move(nid: int) -> bool:
            if nid not in movable:
                node = G[nid]
                movable[nid] = (
                    stage.get(nid) == "fwd" and nid not in pinned
                    and all(a in next_nodes or stage.get(a) == "const"
                            or G[a].op in (Op.PARAM, Op.CONST, Op.DIM) or can_move(a)
                            for a in node.args))
            return movable[nid]
        chosen = [name for name in moved
                  if step.outputs[name] in next_nodes or can_move(step.outputs[name])]
        if chosen == moved:
            break
        moved = chosen
    for name in moved:
        for nid in G.needed([step.outputs[name]]):
            if movable.get(nid):
                stage[nid] = "last"
    return tuple(moved)


def _readout_after(step: StepGraph, G: Graph, stage: dict[int, str]) -> None:
    """Move the forward loop's work that feeds no state to stage "after" (in `stage`, in
    place): the forward kernel runs it after its time loop, over all T*B rows, so that a
    readout (`output y = W_y @ h' + b_y`) is one GEMM over T*B rows instead of one a
    step. What a next state needs stays in the loop; what moves reads the loop's values
    from their tapes (a moved node's loop arguments are saved, as for the backward)."""
    feeds_state = set(G.needed(list(step.next_state.values())))
    for nid, s in list(stage.items()):
        if s == "fwd" and nid not in feeds_state:
            stage[nid] = "after"


def _sum_chain_end(G: Graph, members: list[int], users: dict[int, list[int]],
                   observed: set[int]) -> int | None:
    """The node where all members meet in a chain of single-use adds, or None.

    If every member flows only into adds that flow only into the next add, up to one
    common node, the members may hold any split of their total: the sum is the same.
    """
    ends = set()
    for m in members:
        cur = m
        while True:
            us = users.get(cur, [])
            if cur in observed or len(us) != 1 or G[us[0]].op != Op.ADD:
                break
            cur = us[0]
        if cur == m:
            return None
        ends.add(cur)
    return ends.pop() if len(ends) == 1 else None


def _group_cotangents(plan: Plan, all_nodes: list[int]) -> None:
    G, grads = plan.graph, plan.grads
    users: dict[int, list[int]] = {}
    for n in all_nodes:
        for a in set(G[n].args):
            users.setdefault(a, []).append(n)
    observed = set(plan.saved) | set(plan.step.roots()) | set(grads.roots())
    position = {n: i for s in plan.order.values() for i, n in enumerate(s)}
    by_cotangents: dict[tuple, CotangentGroup] = {}
    for s in ("pre", "fwd", "after"):
        for grp in plan.matmuls.get(s, []):
            if len(grp.members) < 2 or not G[grp.vector].type.batched:
                continue
            gs = [grads.cotangents.get(m) for m in grp.members]
            if any(g is None or G[g].op not in ELEMENTWISE for g in gs) or len(set(gs)) < len(gs):
                continue
            stages = {plan.stage.get(g) for g in gs}
            taped = {g in plan.saved for g in gs}
            if len(stages) != 1 or stages != {"bwd"} or len(taped) != 1:
                continue
            key = tuple(gs)
            if key not in by_cotangents:
                # a g_k another group holds already is written to both (mirrored)
                by_cotangents[key] = CotangentGroup(list(gs), "bwd", taped.pop(), [])
            weights = [G[m].args[0] for m in grp.members]
            mts = [G._index.get((Op.MATVEC_T, (w, g), ())) for w, g in zip(weights, gs)]
            if any(m is None or m not in plan.stage for m in mts) or \
                    len({plan.stage[m] for m in mts}) != 1 or \
                    _sum_chain_end(G, mts, users, observed) is None:
                mts = None
            else:
                # the GEMM goes where the LAST term is computed: by then every g_k is
                # written (each term reads its own g_k), so matvec_t[0] is the last
                mts.sort(key=lambda m: position[m], reverse=True)
            outs = [G._index.get((Op.OUTER, (g, grp.vector), ())) for g in gs]
            if any(o is None or plan.stage.get(o) != "post" for o in outs) or \
                    not by_cotangents[key].taped:
                outs = None
            by_cotangents[key].uses.append(StackedUse(weights, grp.vector, mts, outs))
    plan.cotangent_groups = [c for c in by_cotangents.values() if c.uses]


def _group_matmuls(plan: Plan) -> None:
    G = plan.graph
    for s, nodes in plan.order.items():
        groups: dict[int, list[int]] = {}
        for nid in nodes:
            node = G[nid]
            if node.op == Op.MATVEC and G[node.args[0]].op == Op.PARAM:
                groups.setdefault(node.args[1], []).append(nid)
        if "fuse_matmul" in plan.passes:
            plan.matmuls[s] = [MatmulGroup(v, m) for v, m in groups.items()]
        else:
            plan.matmuls[s] = [MatmulGroup(v, [m]) for v, ms in groups.items() for m in ms]


def iteration_space(G: Graph, nid: int) -> tuple:
    """Nodes with equal spaces can share one loop nest: (batched, size or None)."""
    t = G[nid].type
    return (t.batched, t.shape)


def _schedule(plan: Plan) -> None:
    """Order each stage: GEMMs as soon as ready, elementwise ops in as few nests as can be.

    Kahn's algorithm: run every ready non-elementwise node first; then take the ready
    elementwise nodes of one iteration space, repeatedly, as one fused group.
    """
    G = plan.graph
    fuse = "fuse_elementwise" in plan.passes
    for s, nodes in plan.order.items():
        members = set(nodes)
        waiting = {n: sum(1 for a in set(G[n].args) if a in members) for n in nodes}
        users: dict[int, list[int]] = {n: [] for n in nodes}
        for n in nodes:
            for a in set(G[n].args):
                if a in members:
                    users[a].append(n)
        ready = sorted(n for n in nodes if waiting[n] == 0)
        ordered: list[int] = []
        groups: list[list[int]] = []

        def finish(n):
            ordered.append(n)
            for u in users[n]:
                waiting[u] -= 1
                if waiting[u] == 0:
                    ready.append(u)
            ready.sort()

        while ready:
            other = [n for n in ready if G[n].op not in ELEMENTWISE]
            if other:
                n = other[0]
                ready.remove(n)
                finish(n)
                continue
            space = iteration_space(G, ready[0])
            group: list[int] = []
            while True:
                pick = [n for n in ready if G[n].op in ELEMENTWISE
                        and iteration_space(G, n) == space]
                if not pick:
                    break
                n = pick[0]
                ready.remove(n)
                group.append(n)
                finish(n)
                if not fuse:
                    break
                if any(G[r].op not in ELEMENTWISE for r in ready) and not fuse:
                    break
            groups.append(group)
        assert len(ordered) == len(nodes), f"stage {s}: a cycle in the plan"
        plan.order[s] = ordered
        plan.fused[s] = groups
