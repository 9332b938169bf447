"""Which cells are ONNX's recurrent operators: a cell's step graph against template specs.

Input: a `StepGraph` (rnndsl.ir) and the bound dims. Output: an `OperatorMatch` (which
operator, its attributes, and which of the cell's params make each of its weights), or
None: the cell is then exported as a Scan over its equations.

The rule (docs/onnx.md): a cell is an operator when the equations of its next states are
the operator's, as written in the template specs below, up to
- the names of params, states and the input (the template's are bound to the cell's),
- the order of the terms of a sum and of the factors of a product (+ and * are
  commutative and associative: `W_hh @ h + W_xh @ x + b_h` is `W @ x + R @ h + b`),
- the biases: where a template adds a bias `b...`, the cell may add none, one or two
  bias params (PyTorch's b_ih + b_hh), which become ONNX's Wb and Rb;
- stacking: a slice of a sum or product is the sum or product of the slices, a slice of
  `W @ x` is the product of W's rows, a slice of a param is a param (so PyTorch's form,
  `z = weight_ih @ x + bias_ih + weight_hh @ h + bias_hh; i = sigmoid(z[0:H])`, is the
  template's gate by gate, its weights the params' rows: `unstacked`);
- anything else the cell computes from the operator's hidden output, its input and its
  params (no other state), which becomes a readout after the operator's node.
Both graphs are lowered by `rnndsl.ir.lower` (hash-consed, not simplified), so a match
is structural: a file's name, a cell's name or a param's name never decides it. The
cell must have one input (not a token), exactly the template's states and no dropout.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

from ..core.ops import Op
from ..core.shapes import Type
from ..ir.graph import Graph, StepGraph, lower

# The templates: ONNX's equations (onnx.ai, operators RNN, LSTM, GRU) in rnndsl's
# language, weights named as ONNX names them per gate. A param whose name starts with
# `b` is a bias slot (see the module docstring).
_RNN = """cell OnnxRNN {{
  dims I, H
  input x[I]
  state h[H]
  param W_i[H, I], R_i[H, H], b_i[H]
  h' = {act}(W_i @ x + R_i @ h + b_i)
  output h'
}}"""

_LSTM = """cell OnnxLSTM {{
  dims I, H
  input x[I]
  state h[H], c[H]
  param W_i[H, I], W_o[H, I], W_f[H, I], W_c[H, I]
  param R_i[H, H], R_o[H, H], R_f[H, H], R_c[H, H]
  param b_i[H], b_o[H], b_f[H], b_c[H]{peep_params}
  i = sigmoid(W_i @ x + R_i @ h{peep_i} + b_i)
  f = sigmoid(W_f @ x + R_f @ h{peep_f} + b_f)
  g = tanh(W_c @ x + R_c @ h + b_c)
  c' = f * c + i * g
  o = sigmoid(W_o @ x + R_o @ h{peep_o} + b_o)
  h' = o * tanh(c')
  output h'
}}"""

_GRU = """cell OnnxGRU {{
  dims I, H
  input x[I]
  state h[H]
  param W_z[H, I], W_r[H, I], W_h[H, I]
  param R_z[H, H], R_r[H, H], R_h[H, H]
  param b_z[H], b_r[H], {bias_params}
  z = sigmoid(W_z @ x + R_z @ h + b_z)
  r = sigmoid(W_r @ x + R_r @ h + b_r)
  n = {candidate}
  h' = (1 - z) * n + z * h
  output h'
}}"""

RNN_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}


@dataclass(frozen=True)
class Template:
    operator: str                   # "RNN", "LSTM" or "GRU"
    text: str
    gates: tuple[str, ...]          # ONNX's gate order, as the template's name suffixes
    attrs: tuple[tuple[str, object], ...]
    hidden: str = "h"               # the state ONNX's Y holds
    peepholes: bool = False


def _templates() -> tuple[Template, ...]:
    out = [Template("RNN", _RNN.format(act=act), ("i",), (("activations", [onnx_act]),))
           for act, onnx_act in RNN_ACTIVATIONS.items()]
    out.append(Template("LSTM", _LSTM.format(peep_params="", peep_i="", peep_f="",
                                              peep_o=""), ("i", "o", "f", "c"), ()))
    out.append(Template("LSTM", _LSTM.format(
        peep_params="\n  param P_i[H], P_o[H], P_f[H]", peep_i=" + P_i * c",
        peep_f=" + P_f * c", peep_o=" + P_o * c'"), ("i", "o", "f", "c"), (),
        peepholes=True))
    out.append(Template("GRU", _GRU.format(
        bias_params="bw_h[H], br_h[H]",
        candidate="tanh(W_h @ x + bw_h + r * (R_h @ h + br_h))"),
        ("z", "r", "h"), (("linear_before_reset", 1),)))
    out.append(Template("GRU", _GRU.format(
        bias_params="b_h[H]", candidate="tanh(W_h @ x + R_h @ (r * h) + b_h)"),
        ("z", "r", "h"), (("linear_before_reset", 0),)))
    return tuple(out)


TEMPLATES = _templates()


@lru_cache(maxsize=None)
def template_step(text: str) -> StepGraph:
    from ..lang.specfile import read_spec
    return lower(read_spec("<onnx template>", text=text).pick())


@dataclass(frozen=True)
class OperatorMatch:
    """A cell recognised as `template.operator`. binding maps the template's names
    ("param:W_i", "state:h", "input:x") to the cell's, and each bias slot ("bias:b_i")
    to the tuple of cell params summed there (maybe none)."""

    template: Template
    binding: dict
    rows: dict        # a param name made by `unstacked` -> (param, first row, end row)

    @property
    def operator(self) -> str:
        return self.template.operator

    def param(self, name: str) -> str:
        return self.binding["param:" + name]

    def bias(self, name: str) -> tuple[str, ...]:
        return self.binding["bias:" + name]

    def state(self, name: str) -> str:
        return self.binding["state:" + name]


def match_operator(step: StepGraph, dims: dict[str, int]) -> OperatorMatch | None:
    """The first template the cell's next states match (see the module docstring)."""
    cell = step.cell
    users = list(cell.inputs)
    if len(users) != 1 or users[0].token or users[0].once or cell.dropouts:
        return None
    if any(o.final for o in cell.outputs):
        return None
    flat, rows = unstacked(step, dims)
    for template in TEMPLATES:
        t = template_step(template.text)
        if len(t.states) != len(step.states):
            continue
        for binding in _match_states(t, flat, {}):
            if _readouts_ok(template, binding, step):
                return OperatorMatch(template, binding, rows)
    return None


_SPLITS = (Op.ADD, Op.SUB, Op.MUL, Op.DIV)


def unstacked(step: StepGraph, dims: dict[str, int]) -> tuple[StepGraph, dict]:
    """The step graph with every slice pushed down to params: `(a + b)[s:e]` is
    `a[s:e] + b[s:e]`, `(W @ x)[s:e]` is `W[s:e] @ x`, and `W[s:e]`, `b[s:e]` are params
    named so (`weight_ih[0:4]`), listed in the returned dict as (param, s, e)."""
    G, N = step.graph, Graph()
    rows: dict[str, tuple[str, int, int]] = {}
    memo: dict[int, int] = {}

    def copy(nid: int) -> int:
        if nid not in memo:
            node = G[nid]
            if node.op == Op.SLICE:
                memo[nid] = sliced(node.args[0], *node.attrs)
            else:
                memo[nid] = N.add(node.op, tuple(copy(a) for a in node.args), node.attrs)
        return memo[nid]

    def param_rows(node, start, stop) -> int:
        s, e = start.evaluate(dims), stop.evaluate(dims)
        name = f"{node.attrs[0]}[{s}:{e}]"
        rows[name] = (node.attrs[0], s, e)
        t = node.type
        return N.add(Op.PARAM, (), (name, Type((stop - start,) + t.shape[1:], t.batched)))

    def sliced(nid: int, start, stop) -> int:
        node = G[nid]
        if node.op in _SPLITS and node.type.rank == 1:
            return N.add(node.op, tuple(sliced(a, start, stop) if G[a].type.rank == 1
                                        else copy(a) for a in node.args))
        if node.op == Op.MATVEC and G[node.args[0]].op == Op.PARAM:
            w = param_rows(G[node.args[0]], start, stop)
            return N.add(Op.MATVEC, (w, copy(node.args[1])))
        if node.op == Op.PARAM and node.type.rank == 1:
            return param_rows(node, start, stop)
        if node.op == Op.SLICE:
            first = node.attrs[0]
            return sliced(node.args[0], first + start, first + stop)
        return N.add(Op.SLICE, (copy(nid),), (start, stop))

    flat = StepGraph(step.cell, N,
                     {k: copy(v) for k, v in step.inputs.items()},
                     {k: copy(v) for k, v in step.states.items()},
                     {k: copy(v) for k, v in step.params.items()},
                     {k: copy(v) for k, v in step.next_state.items()},
                     {k: copy(v) for k, v in step.outputs.items()})
    return flat, rows


def _match_states(t: StepGraph, c: StepGraph, binding: dict) -> Iterator[dict]:
    """Each binding under which every template next state matches a cell next state."""
    names = list(t.next_state)

    def go(i: int, b: dict) -> Iterator[dict]:
        if i == len(names):
            yield b
            return
        tname = names[i]
        for cname, cnid in c.next_state.items():
            bound = b.get("state:" + tname)
            if bound is not None and bound != cname:
                continue
            if bound is None and cname in _bound_values(b, "state:"):
                continue
            b2 = dict(b, **{"state:" + tname: cname})
            for b3 in _match(t, t.next_state[tname], c, cnid, b2):
                yield from go(i + 1, b3)
    return go(0, binding)


def _bound_values(b: dict, prefix: str) -> set:
    return {v for k, v in b.items() if k.startswith(prefix)}


_COMMUTATIVE = (Op.ADD, Op.MUL)


def _terms(G, nid: int, op: Op) -> list[int]:
    """The operands of a chain of `op` (a sum's terms, a product's factors)."""
    node = G[nid]
    if node.op != op:
        return [nid]
    return [x for a in node.args for x in _terms(G, a, op)]


def _is_bias(t: StepGraph, nid: int) -> bool:
    node = t.graph[nid]
    return node.op == Op.PARAM and node.attrs[0].startswith("b")


def _match(t: StepGraph, tn: int, c: StepGraph, cn: int, b: dict) -> Iterator[dict]:
    """Each extension of binding `b` under which template node `tn` is cell node `cn`."""
    T, C = t.graph, c.graph
    tnode, cnode = T[tn], C[cn]
    if tnode.op == Op.PARAM:
        key = "param:" + tnode.attrs[0]
        if cnode.op != Op.PARAM or cnode.type.rank != tnode.type.rank:
            return
        if b.get(key, cnode.attrs[0]) == cnode.attrs[0]:
            yield dict(b, **{key: cnode.attrs[0]})
        return
    if tnode.op in (Op.STATE, Op.INPUT):
        if cnode.op != tnode.op:
            return
        key = ("state:" if tnode.op == Op.STATE else "input:") + tnode.attrs[0]
        prefix = key.split(":")[0] + ":"
        bound = b.get(key)
        if bound == cnode.attrs[0] or (bound is None and
                                       cnode.attrs[0] not in _bound_values(b, prefix)):
            yield dict(b, **{key: cnode.attrs[0]})
        return
    if tnode.op in _COMMUTATIVE:     # the cell's side may be one term: a sum of no bias
        yield from _match_terms(t, _terms(T, tn, tnode.op), c, _terms(C, cn, tnode.op),
                                b, tnode.op)
        return
    if tnode.op != cnode.op or tnode.attrs != cnode.attrs:
        return
    if tnode.op == Op.CONST:
        yield b
        return
    if len(tnode.args) != len(cnode.args):
        return
    yield from _match_args(t, list(tnode.args), c, list(cnode.args), b)


def _match_args(t, targs, c, cargs, b) -> Iterator[dict]:
    if not targs:
        yield b
        return
    for b2 in _match(t, targs[0], c, cargs[0], b):
        yield from _match_args(t, targs[1:], c, cargs[1:], b2)


def _match_terms(t, tterms, c, cterms, b, op) -> Iterator[dict]:
    """A sum's (or product's) terms in any order; a template bias slot in a sum takes
    the cell's leftover terms if they are 0 to 2 bias params (unbatched vectors)."""
    slots = [x for x in tterms if op == Op.ADD and _is_bias(t, x)]
    rest = [x for x in tterms if x not in slots]
    if len(slots) > 1:
        return

    def go(i: int, left: list[int], b: dict) -> Iterator[dict]:
        if i == len(rest):
            if not slots:
                if not left:
                    yield b
                return
            C = c.graph
            if len(left) > 2 or any(C[x].op != Op.PARAM or C[x].type.rank != 1
                                    for x in left):
                return
            key = "bias:" + t.graph[slots[0]].attrs[0]
            value = tuple(C[x].attrs[0] for x in left)
            if b.get(key, value) == value:
                yield dict(b, **{key: value})
            return
        for j, cn in enumerate(left):
            for b2 in _match(t, rest[i], c, cn, b):
                yield from go(i + 1, left[:j] + left[j + 1:], b2)
    yield from go(0, list(cterms), b)


def _readouts_ok(template: Template, binding: dict, step: StepGraph) -> bool:
    """Every output is the hidden state's next value, or reads it, the input and params
    only (then it is computed after the operator over the whole sequence)."""
    G = step.graph
    hidden = step.next_state[binding["state:" + template.hidden]]
    for nid in step.outputs.values():
        if nid == hidden:
            continue
        stack, seen = [nid], set()
        while stack:
            n = stack.pop()
            if n in seen or n == hidden:
                continue
            seen.add(n)
            if G[n].op == Op.STATE:
                return False
            stack.extend(G[n].args)
    return True
