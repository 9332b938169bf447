"""Stage 3: checked cell -> IR graph of one step; unrolling over T steps.

Input: a `CheckedCell`. Output: a `StepGraph`, a networkx DiGraph of the ops of one time
step, and from it, for any T, an `Unrolled` graph over the whole sequence with the
params shared between steps.

Invariants:
- One node type, one op enum. Nodes are hash-consed: adding an op with the same operands
  and attrs twice returns the same id, so common subexpressions are shared for free
  (across steps too: work that reads only params is computed once in an unrolled graph).
- Operand order lives in the node (`Node.args`); the networkx edges are derived from it,
  labelled with the operand positions, and exist for graph algorithms and drawing.
- Ids are given in creation order and operands exist before their users, so increasing
  id order is a topological order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..lang import ast
from ..core.errors import CheckError, Diagnostic
from ..lang.checked import CheckedCell
from ..core.ops import BINARY_OPS, CONSTANT_ARGS, FUNCTIONS, LEAVES, Op, constant_attrs, infer
from ..core.shapes import Dim, Type


@dataclass(frozen=True)
class Node:
    op: Op
    args: tuple[int, ...]
    attrs: tuple
    type: Type


class Graph:
    """A hash-consed DAG of `Node`s, mirrored into a networkx DiGraph.

    Two optimisation passes live in `add`, where every node is made: `cse` (hash-consing
    of every op; with it off only leaves are shared, so each occurrence of an expression
    is its own node) and `simplify` (constant folding and algebraic identities, see
    `simplify.peephole`). The compiled path asks for them through its passes; the
    interpreter, the reference, uses a plain hash-consed graph.
    """

    def __init__(self, cse: bool = True, simplify: bool = False) -> None:
        import networkx as nx    # here, not at the top: a warm load makes no graph
        self.nodes: list[Node] = []
        self.nx = nx.DiGraph()
        self._index: dict[tuple, int] = {}
        self.names: dict[int, str] = {}   # a readable name for dumps: the spec's names
        # cotangent node -> the node whose VJP made it (grad.backward), so that generated
        # backward code can name the equations it differentiates
        self.adjoint_of: dict[int, int] = {}
        self.cse, self.simplify = cse, simplify

    def add(self, op: Op, args: tuple[int, ...] = (), attrs: tuple = ()) -> int:
        if self.simplify and op not in LEAVES:
            from .simplify import peephole
            found = peephole(self, op, tuple(args), tuple(attrs))
            if found is not None:
                return found
        key = (op, tuple(args), tuple(attrs))
        found = self._index.get(key) if (self.cse or op in LEAVES) else None
        if found is not None:
            return found
        for a in args:
            assert 0 <= a < len(self.nodes), f"operand {a} of {op} does not exist"
        node = Node(op, tuple(args), tuple(attrs), infer(op, [self.nodes[a].type for a in args],
                                                          tuple(attrs)))
        nid = len(self.nodes)
        self.nodes.append(node)
        self._index[key] = nid
        self.nx.add_node(nid)
        for pos, a in enumerate(args):
            if self.nx.has_edge(a, nid):
                self.nx.edges[a, nid]["positions"] += (pos,)
            else:
                self.nx.add_edge(a, nid, positions=(pos,))
        return nid

    def __getitem__(self, nid: int) -> Node:
        return self.nodes[nid]

    def __len__(self) -> int:
        return len(self.nodes)

    def const(self, value: float) -> int:
        return self.add(Op.CONST, (), (float(value),))

    def name(self, nid: int, name: str) -> None:
        self.names.setdefault(nid, name)

    def needed(self, roots) -> list[int]:
        """The roots and everything they read, in topological (id) order."""
        seen: set[int] = set()
        stack = [r for r in roots if r is not None]
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            stack.extend(self.nodes[nid].args)
        return sorted(seen)

    def check_edges(self) -> None:
        """Assert that the networkx edges are exactly the nodes' operand lists."""
        for nid, node in enumerate(self.nodes):
            want: dict[int, tuple[int, ...]] = {}
            for pos, a in enumerate(node.args):
                want[a] = want.get(a, ()) + (pos,)
            have = {a: self.nx.edges[a, nid]["positions"] for a in self.nx.predecessors(nid)}
            assert want == have, f"edges of node {nid} ({node.op}) disagree: {want} vs {have}"

    # ---------------------------------------------------------------- text form
    def label(self, nid: int) -> str:
        node = self.nodes[nid]
        if node.op in (Op.INPUT,):
            name, t = node.attrs[0], node.attrs[1]
            return name if t is None else f"{name}[t={t}]"
        if node.op in (Op.STATE, Op.PARAM):
            return node.attrs[0]
        if node.op == Op.CONST:
            return repr(node.attrs[0])
        if node.op == Op.DIM:
            return f"size({node.attrs[0]})"
        if node.op == Op.SEED:
            kind, name, t, _ = node.attrs
            return f"d_{name}" + ("" if t is None else f"[t={t}]") + \
                ("" if kind == "output" else f" ({kind})")
        return node.op.value

    def dump(self, roots, titles: dict[int, list[str]] | None = None) -> str:
        """One line a node: `%id : type = op(args) [attrs]   # name`."""
        lines = []
        titles = titles or {}
        for nid in self.needed(roots):
            node = self.nodes[nid]
            t = ("B x " if node.type.batched else "") + str(node.type)
            if node.op in LEAVES:
                rhs = f"{node.op.value} {self.label(nid)}"
            else:
                rhs = f"{node.op.value}(" + ", ".join(f"%{a}" for a in node.args) + ")"
                extra = [str(a) for a in node.attrs]
                if extra:
                    rhs += " {" + ", ".join(extra) + "}"
            note = [self.names[nid]] if nid in self.names else []
            note += titles.get(nid, [])
            lines.append(f"%{nid:<4} : {t:<12} = {rhs}" + (f"   # {', '.join(note)}"
                                                           if note else ""))
        return "\n".join(lines)


@dataclass
class StepGraph:
    """One time step: leaves for inputs, previous states and params; named results."""

    cell: CheckedCell
    graph: Graph
    inputs: dict[str, int]
    states: dict[str, int]
    params: dict[str, int]
    next_state: dict[str, int]
    outputs: dict[str, int]

    def roots(self) -> list[int]:
        return list(self.next_state.values()) + list(self.outputs.values())

    def dump(self) -> str:
        titles: dict[int, list[str]] = {}
        for name, nid in self.next_state.items():
            titles.setdefault(nid, []).append(f"next state {name}'")
        for name, nid in self.outputs.items():
            titles.setdefault(nid, []).append(f"output {name}")
        return f"# cell {self.cell.name}: one step\n" + self.graph.dump(self.roots(), titles)


def _batched(graph: Graph, nid: int) -> int:
    """States and outputs always carry the batch; repeat a param-only value over it."""
    return nid if graph[nid].type.batched else graph.add(Op.BATCH, (nid,))


def lower(cell: CheckedCell, cse: bool = True, simplify: bool = False) -> StepGraph:
    """Build the one-step graph of a checked cell (see `Graph` for the two flags)."""
    g = Graph(cse=cse, simplify=simplify)
    params = {d.name: g.add(Op.PARAM, (), (d.name, d.type)) for d in cell.params}
    inputs = {d.name: g.add(Op.INPUT, (), (d.name, None, d.type)) for d in cell.inputs}
    states = {d.name: g.add(Op.STATE, (), (d.name, d.type)) for d in cell.states}
    values: dict[str, int] = {**params, **inputs, **states}
    nexts: dict[str, int] = {}

    def emit(expr: ast.Expr) -> int:
        if isinstance(expr, ast.Number):
            return g.const(expr.value)
        if isinstance(expr, ast.Name):
            return values[expr.name]
        if isinstance(expr, ast.Primed):
            return nexts[expr.name]
        if isinstance(expr, ast.BinOp):
            return g.add(BINARY_OPS[expr.op], (emit(expr.left), emit(expr.right)))
        if isinstance(expr, ast.Neg):
            return g.add(Op.NEG, (emit(expr.operand),))
        if isinstance(expr, ast.Pow):
            return g.add(Op.POW, (emit(expr.base),), (_exponent(expr.exponent),))
        if isinstance(expr, ast.Call):
            op, arity = FUNCTIONS[expr.fn]
            if expr.fn in CONSTANT_ARGS and len(expr.args) > arity:
                attrs = constant_attrs(expr.fn, [_exponent(a) for a in expr.args[arity:]])
                return g.add(op, tuple(emit(a) for a in expr.args[:arity]), attrs)
            return g.add(op, tuple(emit(a) for a in expr.args))
        if isinstance(expr, ast.Slice):
            base = emit(expr.operand)
            start = expr.start if expr.start is not None else Dim.lit(0)
            stop = expr.stop if expr.stop is not None else g[base].type.shape[0]
            return g.add(Op.SLICE, (base,), (start, stop))
        raise AssertionError(f"cannot lower {expr!r}")

    for d in cell.definitions:
        nid = emit(d.expr)
        if d.kind == "next":
            nid = _batched(g, nid)
            nexts[d.name] = nid
            g.name(nid, d.name + "'")
        else:
            values[d.name] = nid
            g.name(nid, d.name)
    outputs = {}
    for o in cell.outputs:
        kind, name = o.source
        outputs[o.name] = _batched(g, nexts[name] if kind == "next" else values[name])
    for name, nid in {**params, **inputs, **states}.items():
        g.name(nid, name)
    step = StepGraph(cell, g, inputs, states, params, nexts, outputs)
    _check_token_uses(step)
    return step


def _check_token_uses(step: StepGraph) -> None:
    """An `input token x[V]` is given as ids, never as a vector: the compiled kernels
    read column id of W for `W @ x` (and add into that column for dW). Any other use
    would need the one-hot vector itself, so it is refused at the declaration."""
    G, cell = step.graph, step.cell
    roots = step.roots()
    needed = G.needed(roots)
    for d in cell.inputs:
        if not d.token:
            continue
        nid = step.inputs[d.name]
        misuse = None
        if nid in roots:
            misuse = "is an output or a next state as it is"
        for user in needed:
            node = G[user]
            if nid not in node.args:
                continue
            if node.op == Op.MATVEC and node.args[0] != nid:
                continue
            written = {Op.ADD: "'+'", Op.SUB: "'-'", Op.MUL: "'*'", Op.DIV: "'/'",
                       Op.NEG: "a minus sign", Op.POW: "'**'", Op.SLICE: "a slice [a:b]",
                       Op.CONCAT: "concat(...)"}     # as the spec writes them
            misuse = ("is the matrix of a product" if node.op == Op.MATVEC else
                      f"feeds {written.get(node.op, node.op.value + '(...)')}")
            break
        if misuse is not None:
            raise CheckError([Diagnostic(
                f"token input '{d.name}' {misuse}; a token input can only be multiplied "
                f"by a matrix (W @ {d.name}), since it arrives as ids, not as a vector",
                cell.source, d.span,
                hint=f"declare it `input {d.name}[...]` (without `token`) to use it as a "
                     "vector")])


def _exponent(expr: ast.Expr) -> float:
    sign = 1.0
    while isinstance(expr, ast.Neg):
        sign, expr = -sign, expr.operand
    assert isinstance(expr, ast.Number), "the checker admits only constant numbers here"
    return sign * expr.value


@dataclass
class Unrolled:
    """The cell over T steps: inputs[name][t], outputs[name][t], shared params."""

    step: StepGraph
    T: int
    graph: Graph
    params: dict[str, int]
    inputs: dict[str, list[int]]
    initial_state: dict[str, int]
    outputs: dict[str, list[int]]
    final_state: dict[str, int]
    grads: "object | None" = field(default=None, repr=False)

    def roots(self) -> list[int]:
        return [n for seq in self.outputs.values() for n in seq] + \
            list(self.final_state.values())

    def dump(self) -> str:
        titles: dict[int, list[str]] = {}
        for name, seq in self.outputs.items():
            for t, nid in enumerate(seq):
                titles.setdefault(nid, []).append(f"output {name}[t={t}]")
        for name, nid in self.final_state.items():
            titles.setdefault(nid, []).append(f"final state {name}")
        return (f"# cell {self.step.cell.name}: unrolled over T={self.T}\n"
                + self.graph.dump(self.roots(), titles))


def unroll(step: StepGraph, T: int) -> Unrolled:
    """Copy the step graph T times, feeding each step's next state to the following step."""
    assert T >= 1, T
    sg, g = step.graph, Graph()
    params = {name: g.add(Op.PARAM, (), sg[nid].attrs) for name, nid in step.params.items()}
    state = {name: g.add(Op.STATE, (), sg[nid].attrs) for name, nid in step.states.items()}
    initial = dict(state)
    inputs: dict[str, list[int]] = {name: [] for name in step.inputs}
    outputs: dict[str, list[int]] = {name: [] for name in step.outputs}
    order = sg.needed(step.roots())
    for t in range(T):
        mapped: dict[int, int] = {}
        for nid in order:
            node = sg[nid]
            if node.op == Op.INPUT:
                name = node.attrs[0]
                new = g.add(Op.INPUT, (), (name, t, node.attrs[2]))
                inputs[name].append(new)
            elif node.op == Op.STATE:
                new = state[node.attrs[0]]
            elif node.op == Op.PARAM:
                new = params[node.attrs[0]]
            else:
                new = g.add(node.op, tuple(mapped[a] for a in node.args), node.attrs)
            mapped[nid] = new
            if nid in sg.names and node.op not in LEAVES:
                g.name(new, f"{sg.names[nid]}[t={t}]")
        for name, nid in step.outputs.items():
            outputs[name].append(mapped[nid])
        state = {name: mapped[nid] for name, nid in step.next_state.items()}
    for name in step.inputs:  # an input the outputs never read still has its leaves
        if not inputs[name]:
            t_type = sg[step.inputs[name]].attrs[2]
            inputs[name] = [g.add(Op.INPUT, (), (name, t, t_type)) for t in range(T)]
    for name, nid in {**params, **initial}.items():
        g.name(nid, name)
    return Unrolled(step, T, g, params, inputs, initial, outputs, state)
