"""Graphviz DOT text for IR graphs (`rnndsl graph`).

Leaves are coloured by kind (params, inputs, states, seeds), adjoint nodes are drawn
apart from forward ones, and an edge is labelled with its operand position wherever the
order matters. Pure text: Graphviz's `dot` is only needed to render SVG.
"""

from __future__ import annotations

from .graph import Graph
from ..core.ops import Op

_LEAF_STYLE = {
    Op.PARAM: 'shape=box, style=filled, fillcolor="#cfe2f3"',
    Op.INPUT: 'shape=ellipse, style=filled, fillcolor="#fff2cc"',
    Op.STATE: 'shape=ellipse, style=filled, fillcolor="#d9ead3"',
    Op.SEED: 'shape=ellipse, style=filled, fillcolor="#f4cccc"',
    Op.CONST: "shape=plaintext",
    Op.DIM: "shape=plaintext",
}
_COMMUTATIVE = {Op.ADD, Op.MUL, Op.MIN, Op.MAX}


def _quote(text: str) -> str:
    """A DOT string: backslashes and quotes escaped (a name may hold neither, a title's
    path may), and each line break DOT's `\\n`, so that a label's lines show as lines."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(G: Graph, roots, title: str, results: dict[int, list[str]] | None = None,
           adjoint_from: int | None = None) -> str:
    """DOT for `roots` and everything they read; nodes with id >= adjoint_from are adjoint."""
    results = results or {}
    lines = [f"digraph {_quote(title)} {{",
             f"  label={_quote(title)}; labelloc=t; rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=10]; edge [fontsize=8];']
    for nid in G.needed(roots):
        node = G[nid]
        text = G.label(nid)
        if node.op not in _LEAF_STYLE:
            text += f"\n{node.type}" + (" (B)" if node.type.batched else "")
        if nid in G.names and node.op not in _LEAF_STYLE:
            text = f"{G.names[nid]}\n" + text
        for r in results.get(nid, []):
            text += f"\n=> {r}"
        style = _LEAF_STYLE.get(node.op, "shape=box, style=rounded")
        if adjoint_from is not None and nid >= adjoint_from and node.op not in _LEAF_STYLE:
            style = 'shape=box, style="rounded,filled", fillcolor="#eeeeee"'
        if nid in results:
            style += ", penwidth=2"
        lines.append(f"  n{nid} [label={_quote(text)}, {style}];")
    for nid in G.needed(roots):
        node = G[nid]
        show_position = len(node.args) > 1 and node.op not in _COMMUTATIVE
        for pos, a in enumerate(node.args):
            label = f" [label={pos}]" if show_position else ""
            lines.append(f"  n{a} -> n{nid}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"
