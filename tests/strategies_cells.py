"""Hypothesis strategies: random well-formed `.rnn` cells built from the primitive set.

`cells()` draws a `RandomCell`: the spec text, sizes to bind its dims with, and a sequence
length and batch. A cell has 1-3 dims, 1-2 inputs, 1-2 states, params made as they are
needed, a few intermediate equations, every state updated, and 1-2 outputs. Expressions
are random trees over the declared values in which shapes agree by construction:

- every vector expression is drawn for a wanted size (a dim); a matrix param of the right
  shape is declared on the spot for each `@`, sometimes reused by a later `@`;
- reductions (sum, mean, a one-element slice summed) give scalars that broadcast;
- concat and slice meet in pairs: concat(a, b)[0:A] or concat(b, a)[B:B + A];
- functions with a restricted domain only see arguments inside it: log(1 + e ** 2),
  sqrt(softplus(e) + 0.1), (1.5 + tanh(e)) ** -1.5, e / (1 + d ** 2), exp(tanh(e));
- every state update is bounded per step (tanh, sigmoid, a gated mix, softmax), so T
  steps cannot blow up.

relu, abs, min, max and hard_sigmoid have kinks; random values rarely sit within a finite
difference's step of one, and `kink_distance` lets a test tell when one did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from rnndsl.core.ops import HARD_SIGMOID_SLOPE, Op

SCALAR = "scalar"

# One argument `{0}`; each keeps its argument's shape and its result finite.
UNARY = [
    "tanh({0})", "sigmoid({0})", "relu({0})", "softplus({0})", "hard_sigmoid({0})",
    "abs({0})", "exp(tanh({0}))", "log(1 + ({0}) ** 2)", "sqrt(softplus({0}) + 0.1)",
    "(-({0}))", "(tanh({0}) ** 3)", "((1.5 + tanh({0})) ** -1.5)", "((2 + sigmoid({0})) ** 0.5)",
    "log(sigmoid({0}))", "(tanh({0}) ** 2)", "(2 * {0})",
]
VECTOR_ONLY = ["softmax({0})", "log_softmax({0})"]
BINARY = ["({0} + {1})", "({0} - {1})", "({0} * {1})", "({0} / (1 + ({1}) ** 2))",
          "min({0}, {1})", "max({0}, {1})"]
# The next value of a state: bounded whatever the step before left in it.
UPDATES = ["tanh({e})", "sigmoid({e})", "hard_sigmoid({e})", "softmax({e})",
           "(sigmoid({g}) * {s} + (1 - sigmoid({g})) * tanh({e}))",
           "(0.5 * {s} + 0.5 * tanh({e}))"]
NUMBERS = ["0.5", "2", "1.5", "0.25", "3"]


@dataclass(frozen=True)
class RandomCell:
    text: str
    dims: dict[str, int]
    T: int
    B: int

    def __str__(self) -> str:   # shown by Hypothesis on failure
        return f"dims={self.dims} T={self.T} B={self.B}\n{self.text}"


class _Builder:
    """Draws one cell; holds the declarations made so far."""

    def __init__(self, draw, dims: list[str]):
        self.draw = draw
        self.dims = dims
        self.inputs: list[tuple[str, str]] = []       # (name, dim)
        self.states: list[tuple[str, str, str]] = []  # (name, dim, initialiser text)
        self.params: list[str] = []                   # declarations, "W0[D0, D1]"
        self.matrices: dict[tuple[str, str], list[str]] = {}
        self.values: list[tuple[str, str]] = []       # readable (name, size) pairs
        self.lines: list[str] = []                    # equations, in the order drawn
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def pick(self, options):
        return self.draw(st.sampled_from(options))

    # ------------------------------------------------------------ leaves
    def data(self, size: str) -> list[str]:
        """Values of this size that carry the batch: inputs, states, intermediates."""
        return [name for name, s in self.values if s == size and not name.startswith("p")]

    def vector_leaf(self, size: str) -> str:
        data = self.data(size)
        if data and self.draw(st.integers(0, 3)) > 0:
            return self.pick(data)
        found = [name for name, s in self.values if s == size]
        if found and self.draw(st.booleans()):
            return self.pick(found)
        if self.draw(st.integers(0, 2)) == 0:
            name = self.fresh("p")
            self.params.append(f"{name}[{size}]")
            self.values.append((name, size))
            return name
        return self.matvec(size, 0)

    def scalar_leaf(self) -> str:
        kind = self.draw(st.integers(0, 3))
        if kind == 0:
            return self.pick(NUMBERS)
        if kind == 1:
            found = [name for name, s in self.values if s == SCALAR]
            if found:
                return self.pick(found)
            name = self.fresh("a")
            self.params.append(name)
            self.values.append((name, SCALAR))
            return name
        size = self.pick(self.dims)
        if kind == 2:
            return f"{self.pick(['sum', 'mean'])}({self.vector_leaf(size)})"
        return f"sum({self.vector_leaf(size)}[0:1])"

    def matvec(self, size: str, depth: int) -> str:
        """W @ v with W [size, K]: declared here, or one declared before of that shape."""
        fed = [d for d in self.dims if self.data(d)]
        cols = self.pick(fed if fed and self.draw(st.integers(0, 3)) > 0 else self.dims)
        known = self.matrices.setdefault((size, cols), [])
        if known and self.draw(st.booleans()):
            W = self.pick(known)
        else:
            W = self.fresh("W")
            self.params.append(f"{W}[{size}, {cols}]")
            known.append(W)
        arg = self.vector(cols, depth) if depth > 0 else self.vector_leaf_no_matvec(cols)
        return f"({W} @ {arg})"

    def vector_leaf_no_matvec(self, size: str) -> str:
        found = self.data(size) or [name for name, s in self.values if s == size]
        if found:
            return self.pick(found)
        name = self.fresh("p")
        self.params.append(f"{name}[{size}]")
        self.values.append((name, size))
        return name

    # ------------------------------------------------------------ expressions
    def vector(self, size: str, depth: int) -> str:
        if depth <= 0:
            return self.vector_leaf(size)
        kind = self.draw(st.integers(0, 8))
        sub = depth - 1
        if kind == 0:
            return self.vector_leaf(size)
        if kind == 1:
            return self.pick(UNARY + VECTOR_ONLY).format(self.vector(size, sub))
        if kind == 2:
            return self.pick(BINARY).format(self.vector(size, sub), self.vector(size, sub))
        if kind == 3:   # a scalar broadcast against the vector, on either side
            v, s = self.vector(size, sub), self.scalar(sub)
            a, b = (v, s) if self.draw(st.booleans()) else (s, v)
            return self.pick(BINARY).format(a, b)
        if kind == 4:
            return self.matvec(size, sub)
        if kind == 5:   # concat, then slice the part back out
            other = self.pick(self.dims)
            a, b = self.vector(size, sub), self.vector(other, sub)
            if self.draw(st.booleans()):
                return f"concat({a}, {b})[0:{size}]"
            return f"concat({b}, {a})[{other}:{other} + {size}]"
        if kind == 6:   # one vector scaled by a reduction of another
            return f"({self.vector(size, sub)} * {self.pick(['sum', 'mean'])}" \
                   f"({self.vector(self.pick(self.dims), sub)}))"
        if kind == 7:   # centred and scaled, as layer norm does, over an intermediate
            e = self.fresh("e")
            self.lines.append(f"{e} = {self.vector(size, sub)}")
            self.values.append((e, size))
            return f"(({e} - mean({e})) / sqrt(mean(({e} - mean({e})) ** 2) + 1))"
        return self.pick(UNARY).format(self.vector(size, sub))

    def scalar(self, depth: int) -> str:
        if depth <= 0:
            return self.scalar_leaf()
        kind = self.draw(st.integers(0, 3))
        sub = depth - 1
        if kind == 0:
            return self.scalar_leaf()
        if kind == 1:
            return self.pick(UNARY).format(self.scalar(sub))
        if kind == 2:
            return self.pick(BINARY).format(self.scalar(sub), self.scalar(sub))
        fn = self.pick(["sum", "mean"])
        return f"{fn}({self.vector(self.pick(self.dims), sub)})"


@st.composite
def cells(draw, max_depth: int = 3, max_T: int = 4, max_B: int = 3) -> RandomCell:
    n_dims = draw(st.integers(1, 3))
    dims = [f"D{i}" for i in range(n_dims)]
    sizes = {d: draw(st.integers(1, 4)) for d in dims}
    b = _Builder(draw, dims)
    for i in range(draw(st.integers(1, 2))):
        size = b.pick(dims)
        b.inputs.append((f"x{i}", size))
        b.values.append((f"x{i}", size))
    for i in range(draw(st.integers(1, 2))):
        size = b.pick(dims)
        init = b.pick(["", "", " = 0.5", " = -0.25"])
        b.states.append((f"s{i}", size, init))
        b.values.append((f"s{i}", size))

    lines = b.lines
    pending = list(b.states)
    n_lets = draw(st.integers(0, 3))
    order = draw(st.permutations(["let"] * n_lets + ["update"] * len(pending)))
    for what in order:
        depth = draw(st.integers(1, max_depth))
        if what == "let":
            name = b.fresh("e")
            if draw(st.integers(0, 4)) == 0:
                size, expr = SCALAR, b.scalar(depth)
            else:
                size = b.pick(dims)
                expr = b.vector(size, depth)
            lines.append(f"{name} = {expr}")
            b.values.append((name, size))
            continue
        name, size, _ = pending.pop(0)
        recurrent = name if draw(st.booleans()) else b.matvec(size, 0)
        e = f"({recurrent} + {b.vector(size, depth)})"
        update = b.pick(UPDATES).format(e=e, s=name, g=b.vector(size, depth - 1))
        lines.append(f"{name}' = {update}")
        b.values.append((f"{name}'", size))

    outputs = []
    for i in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            name, _, _ = b.pick(b.states)
            if f"output {name}'" not in outputs:
                outputs.append(f"output {name}'")
                continue
        depth = draw(st.integers(0, max_depth))
        if draw(st.integers(0, 3)) == 0:
            expr = b.scalar(depth)
        else:
            expr = b.vector(b.pick(dims), depth)
        outputs.append(f"output y{i} = {expr}")

    text = ["cell Random {", f"  dims {', '.join(dims)}",
            "  input " + ", ".join(f"{n}[{s}]" for n, s in b.inputs),
            "  state " + ", ".join(f"{n}[{s}]{init}" for n, s, init in b.states)]
    if b.params:
        text.append("  param " + ", ".join(b.params))
    text += [f"  {line}" for line in lines] + [f"  {o}" for o in outputs] + ["}"]
    return RandomCell("\n".join(text) + "\n", sizes, draw(st.integers(1, max_T)),
                      draw(st.integers(1, max_B)))


# ------------------------------------------------------------------ kinks
def kink_distance(graph, values) -> float:
    """How close any relu/abs/hard_sigmoid/min/max argument came to its kink."""
    nearest = np.inf
    edge = 0.5 / HARD_SIGMOID_SLOPE
    for nid, node in enumerate(graph.nodes):
        if nid not in values or not node.args:
            continue
        args = [values[a] for a in node.args if a in values]
        if len(args) != len(node.args):
            continue
        if node.op in (Op.RELU, Op.ABS):
            gap = np.abs(args[0])
        elif node.op == Op.HARD_SIGMOID:
            gap = np.minimum(np.abs(args[0] - edge), np.abs(args[0] + edge))
        elif node.op in (Op.MIN, Op.MAX):
            if node.args[0] == node.args[1] or all(
                    graph[a].op in (Op.CONST, Op.DIM) for a in node.args):
                continue    # min(e, e) is e, min(1, 2) is 1: no kink that moves
            gap = np.abs(args[0] - args[1])
        else:
            continue
        nearest = min(nearest, float(np.min(gap)))
    return nearest
