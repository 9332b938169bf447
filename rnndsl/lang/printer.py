"""The AST's text form: `unparse(module)` prints canonical .rnn source.

Parsing the printed text gives back an equal AST (spans aside); the round-trip tests
hold the printer and the grammar to that. Parentheses are printed only where the
grammar's precedence needs them.
"""

from __future__ import annotations

import math

from . import ast
from ..core.shapes import Dim

# precedence levels of the grammar: sum < product < unary < power < postfix/atom
_SUM, _PRODUCT, _UNARY, _POWER, _POSTFIX = range(1, 6)
_LEVEL = {"+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT, "@": _PRODUCT}


def dim(d: Dim) -> str:
    """A size in the grammar's dim syntax; a leading negative term is written `0 - ...`."""
    text = str(d)
    return "0 " + text[0] + " " + text[1:].lstrip() if text.startswith("-") else text


def number(value: float) -> str:
    """`repr` gives the shortest text that reads back as the same float; an overflowed
    literal (1e999 parses as inf) is printed as one that overflows again, not as `inf`,
    which would read back as a name."""
    value = float(value)
    assert value == value, "NaN has no literal in the grammar"
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    return repr(value)


def expr(e: ast.Expr, context: int = 0) -> str:
    text, level = _expr(e)
    return f"({text})" if level < context else text


def _expr(e: ast.Expr) -> tuple[str, int]:
    if isinstance(e, ast.Number):
        return number(e.value), _POSTFIX
    if isinstance(e, ast.Name):
        return e.name, _POSTFIX
    if isinstance(e, ast.Primed):
        return e.name + "'", _POSTFIX
    if isinstance(e, ast.BinOp):
        level = _LEVEL[e.op]
        return f"{expr(e.left, level)} {e.op} {expr(e.right, level + 1)}", level
    if isinstance(e, ast.Neg):
        return "-" + expr(e.operand, _UNARY), _UNARY
    if isinstance(e, ast.Pow):
        return f"{expr(e.base, _POSTFIX)} ** {expr(e.exponent, _UNARY)}", _POWER
    if isinstance(e, ast.Call):
        return f"{e.fn}(" + ", ".join(expr(a) for a in e.args) + ")", _POSTFIX
    if isinstance(e, ast.Slice):
        start = dim(e.start) if e.start is not None else ""
        stop = dim(e.stop) if e.stop is not None else ""
        return f"{expr(e.operand, _POSTFIX)}[{start}:{stop}]", _POSTFIX
    if isinstance(e, ast.Member):
        return f"{expr(e.operand, _POSTFIX)}.{e.name}", _POSTFIX
    raise AssertionError(f"cannot print {e!r}")


def init(i: ast.Init) -> str:
    if isinstance(i, ast.ConstInit):
        return number(i.value)
    if isinstance(i, ast.ParamRefInit):
        return i.name
    if i.args:
        return f"{i.name}(" + ", ".join(number(a) for a in i.args) + ")"
    return i.name


def var(v: ast.Var, marker: str) -> str:
    text = v.name
    if v.shape or marker != "~":
        text += "[" + ", ".join(dim(d) for d in v.shape) + "]"
    if v.init is not None:
        text += f" {marker} {init(v.init)}"
    return text


def stmt(s: ast.Stmt) -> str:
    if isinstance(s, ast.DimsDecl):
        return "dims " + ", ".join(s.names)
    if isinstance(s, ast.InputDecl):
        word = "once " if s.once else "token " if s.token else ""
        return "input " + word + ", ".join(var(v, "=") for v in s.vars)
    if isinstance(s, ast.StateDecl):
        return "state " + ", ".join(var(v, "=") for v in s.vars)
    if isinstance(s, ast.ParamDecl):
        return "param " + ", ".join(var(v, "~") for v in s.vars)
    if isinstance(s, ast.LayerDecl):
        binds = ", ".join(f"{b.name} = {dim(b.size)}" for b in s.dims)
        way = "" if s.direction == "forward" else s.direction + " "
        return f"layer {s.name} = {way}{s.cell}({binds})"
    if isinstance(s, ast.Equation):
        return f"{s.target}{chr(39) if s.primed else ''} = {expr(s.expr)}"
    if isinstance(s, ast.Output):
        word = "final" if s.final else "output"
        if s.expr is not None:
            return f"{word} {s.name} = {expr(s.expr)}"
        return f"{word} {s.name}" + ("'" if s.primed else "")
    raise AssertionError(f"cannot print {s!r}")


def cell(c: ast.Cell) -> str:
    body = "".join(f"  {stmt(s)}\n" for s in c.body)
    return f"cell {c.name} {{\n{body}}}\n"


def unparse(module: ast.Module) -> str:
    parts = [f'use "{u.path}"\n' for u in module.uses]
    if parts and module.cells:
        parts.append("\n")
    parts += ["\n".join(cell(c) for c in module.cells)]
    return "".join(parts)
