"""Stage 1: text -> AST.

Input: the text of a .rnn file and the path it is reported under. Output: an
`ast.Module` of frozen dataclasses carrying source spans. The grammar is
`grammars/rnn.lark` (LALR(1)); syntax errors are placed and worded by syntax_errors.py
(the parser's state matched against canonical bad inputs, as lark's `match_examples`
does, and a failed parse replayed to find a misread mistake) and reported as
`SpecSyntaxError` with file:line:col and a caret. Nothing else ever escapes `parse`.

Whatever the text, the outcome is an AST or a placed error: a leading UTF-8 BOM is dropped;
a file that defines no cell and uses none is an error at 1:1; a character pasted from a
paper (a typographic prime or minus, a non-breaking space) gets a hint naming the ASCII
character to type (LOOKALIKES); and an expression nesting more than MAX_NESTING levels is
refused before any recursive stage (this module's transformer, the checker, lowering,
the printer) can meet Python's recursion limit.
"""

from __future__ import annotations

import re
from dataclasses import replace

import lark
from lark import Token, Transformer, v_args

from . import ast
from ..core.errors import Diagnostic, Source, Span, SpecSyntaxError
from ..core.shapes import Dim
from .lark_parser import lalr_parser as _parser
from .lark_parser import span_of as _span_of
from .shipped import grammar_path  # noqa: F401  (re-exported)
from .syntax_errors import HINTS, LOOKALIKES, SYNTAX_EXAMPLES  # noqa: F401  (re-exported)
from .syntax_errors import _syntax_error


# A whole number in a size has at most this many digits: no array has 10**18 features, and
# int() refuses strings of more than 4300 digits.
MAX_SIZE_DIGITS = 18
# The longest file name and path a `use` may give (Linux's NAME_MAX and PATH_MAX - 1): a
# longer one names no file, and the OS would refuse to look it up.
MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4095


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds the dataclasses of `ast` from lark's tree; rule aliases name the classes.
    Text the grammar admits but no spec can mean (a size of 5000 digits) is a
    `SpecSyntaxError`, raised through lark's VisitError and unwrapped by `parse`."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _refuse(self, message: str, where, hint: str | None = None) -> SpecSyntaxError:
        return SpecSyntaxError(Diagnostic(message, self.source, _span_of(where), hint))

    def _size(self, token: Token) -> int:
        if len(token) > MAX_SIZE_DIGITS:
            raise self._refuse(f"a size of {len(token)} digits is too large: sizes are whole "
                               f"numbers below 10**{MAX_SIZE_DIGITS}", token)
        return int(token)

    # ---- module structure
    def start(self, meta, items):
        uses = tuple(i for i in items if isinstance(i, ast.Use))
        cells = tuple(i for i in items if isinstance(i, ast.Cell))
        return ast.Module(uses, cells)

    def use(self, meta, children):
        (token,) = children
        path = str(token)[1:-1]
        longest = max(len(part.encode("utf-8", "replace")) for part in path.split("/"))
        if longest > MAX_NAME_BYTES or len(path.encode("utf-8", "replace")) > MAX_PATH_BYTES:
            raise self._refuse(f"the path in `use` is too long to name a file (a name is at "
                               f"most {MAX_NAME_BYTES} bytes, a path {MAX_PATH_BYTES})", token)
        return ast.Use(path, _span_of(meta))

    def cell(self, meta, children):
        name, *body = children
        return ast.Cell(str(name), tuple(body), _span_of(meta), _span_of(name))

    # ---- declarations
    def dims_decl(self, meta, names):
        return ast.DimsDecl(tuple(str(n) for n in names), _span_of(meta),
                            tuple(_span_of(n) for n in names))

    def input_decl(self, meta, vars_):
        return ast.InputDecl(tuple(vars_), _span_of(meta))

    def once_decl(self, meta, children):
        _once, *vars_ = children
        return ast.InputDecl(tuple(vars_), _span_of(meta), once=True)

    def token_decl(self, meta, children):
        _token, *vars_ = children
        return ast.InputDecl(tuple(vars_), _span_of(meta), token=True)

    def state_decl(self, meta, vars_):
        return ast.StateDecl(tuple(vars_), _span_of(meta))

    def param_decl(self, meta, vars_):
        return ast.ParamDecl(tuple(vars_), _span_of(meta))

    def layer_decl(self, meta, children):
        name, direction, cell, *binds = children
        binds = tuple(b for b in binds if b is not None)
        return ast.LayerDecl(str(name), str(cell), binds, _span_of(meta), _span_of(name),
                             _span_of(cell), str(direction) if direction else "forward")

    def dim_bind(self, meta, children):
        name, size = children
        return ast.DimBind(str(name), size, _span_of(meta))

    def var(self, meta, children):
        name, (shape, shape_span) = children
        return ast.Var(str(name), shape, None, _span_of(meta), shape_span)

    def state_var(self, meta, children):
        name, (shape, shape_span), init = children
        return ast.Var(str(name), shape, init, _span_of(meta), shape_span)

    def param_var(self, meta, children):
        name, shaped, init = children
        shape, shape_span = shaped if shaped is not None else ((), _span_of(name))
        return ast.Var(str(name), shape, init, _span_of(meta), shape_span)

    def shape(self, meta, dims):
        dims = tuple(d for d in dims if d is not None)
        return dims, _span_of(meta)

    def dim_int(self, meta, children):
        return Dim.lit(self._size(children[0]))

    def dim_name(self, meta, children):
        return Dim.of(str(children[0]))

    def dim_scaled(self, meta, children):
        return Dim.of(str(children[1])).scaled(self._size(children[0]))

    def dim_add(self, meta, children):
        return children[0] + children[1]

    def dim_sub(self, meta, children):
        return children[0] - children[1]

    def signed_number(self, meta, children):
        return float(children[0])

    def const_init(self, meta, children):
        return ast.ConstInit(children[0], _span_of(meta))

    def param_ref_init(self, meta, children):
        return ast.ParamRefInit(str(children[0]), _span_of(meta))

    def named_init(self, meta, children):
        return ast.NamedInit(str(children[0]), (), _span_of(meta))

    def called_init(self, meta, children):
        name, *args = children
        return ast.NamedInit(str(name), tuple(a for a in args if a is not None), _span_of(meta))

    # ---- equations and outputs
    def target(self, meta, children):
        name, prime = children
        return str(name), prime is not None, _span_of(meta)

    def equation(self, meta, children):
        (name, primed, target_span), expr = children
        return ast.Equation(name, primed, expr, _span_of(meta), target_span)

    def output_expr(self, meta, children):
        name, expr = children
        return ast.Output(str(name), expr, False, _span_of(meta), _span_of(name))

    def output_state(self, meta, children):
        name, _prime = children
        return ast.Output(str(name), None, True, _span_of(meta), _span_of(name))

    def output_name(self, meta, children):
        (name,) = children
        return ast.Output(str(name), None, False, _span_of(meta), _span_of(name))

    def final_expr(self, meta, children):
        return replace(self.output_expr(meta, children), final=True)

    def final_state(self, meta, children):
        return replace(self.output_state(meta, children), final=True)

    def final_name(self, meta, children):
        return replace(self.output_name(meta, children), final=True)

    # ---- expressions
    def _bin(op):
        def build(self, meta, children):
            left, right = children
            return ast.BinOp(op, left, right, _span_of(meta))
        return build

    add, sub, mul, div, matmul = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("@")

    def neg(self, meta, children):
        return ast.Neg(children[0], _span_of(meta))

    def pow(self, meta, children):
        return ast.Pow(children[0], children[1], _span_of(meta))

    def slice(self, meta, children):
        operand, start, stop = children
        return ast.Slice(operand, start, stop, _span_of(meta))

    def member(self, meta, children):
        operand, name = children
        return ast.Member(operand, str(name), _span_of(meta))

    def number(self, meta, children):
        return ast.Number(float(children[0]), _span_of(meta))

    def name(self, meta, children):
        return ast.Name(str(children[0]), _span_of(meta))

    def primed(self, meta, children):
        return ast.Primed(str(children[0]), _span_of(meta))

    def call(self, meta, children):
        fn, *args = children
        args = tuple(a for a in args if a is not None)
        return ast.Call(str(fn), args, _span_of(meta), _span_of(fn))


# How deep an expression (or a size) may nest: each operator, call, slice, member and
# unary minus is a level, so `tanh(W @ x + b)` is 3 and a sum of n terms n - 1. The stages
# after this one recurse over expressions, the deepest by 4 Python frames a level (the
# printer, and the AST's generated __eq__ and __repr__), so 100 levels take about 420 of
# Python's 1000 frames and leave the rest to the caller; the shipped specs nest at most 7.
# tests/lang/test_text_input.py runs every stage at this limit under a deep caller's stack.
MAX_NESTING = 100

_EXPRESSION_RULES = frozenset({"add", "sub", "mul", "div", "matmul", "neg", "pow", "slice",
                               "member", "call"})
_SIZE_RULES = frozenset({"dim_add", "dim_sub"})


def _nesting(tree: lark.Tree) -> tuple[lark.Tree, int] | None:
    """The first expression or size (in the order of the text) nesting more than
    MAX_NESTING levels, with its depth; None if there is none. Iterative: it must not
    itself meet the recursion limit it protects."""
    height: dict[int, int] = {}
    stack: list[tuple[lark.Tree, bool]] = [(tree, False)]
    while stack:
        node, done = stack.pop()
        subtrees = [c for c in node.children if isinstance(c, lark.Tree)]
        if done:
            height[id(node)] = 1 + max(height[id(c)] for c in subtrees) if subtrees else 0
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in subtrees)
    if height[id(tree)] <= MAX_NESTING:
        return None
    todo = [tree]
    while todo:
        node = todo.pop()
        if node.data in _EXPRESSION_RULES | _SIZE_RULES and height[id(node)] > MAX_NESTING:
            return node, height[id(node)]
        todo.extend(reversed([c for c in node.children if isinstance(c, lark.Tree)]))
    return None     # only the statements around the expressions are deep: never too deep


def _too_deep(source: Source, node: lark.Tree, depth: int) -> SpecSyntaxError:
    meta = node.meta
    span = Span(meta.line, meta.column, meta.end_line, meta.end_column)
    if node.data in _SIZE_RULES:
        message = (f"this size nests {depth} levels deep; rnndsl allows at most "
                   f"{MAX_NESTING}: write it with fewer terms")
        hint = "a sum of n terms nests n - 1 levels: write 4 * H for H + H + H + H"
    else:
        message = (f"expression nests {depth} levels deep; rnndsl allows at most "
                   f"{MAX_NESTING}: split it into named equations")
        hint = ("each operator, call, slice and unary minus is a level, and a sum of n terms "
                "nests n - 1: name the parts, like `a = W @ x + b` then `h' = tanh(a)`")
    return SpecSyntaxError(Diagnostic(message, source, span, hint))


_SURROGATE = re.compile("[\ud800-\udfff]")

EMPTY_HINT = ("a spec holds at least one cell, `cell Name { ... }` with its dims, inputs, "
              "states, params and equations, or `use \"other.rnn\"` lines")


def parse(text: str, path: str = "<spec>") -> ast.Module:
    """Parse the text of a .rnn file into an `ast.Module`, or raise `SpecSyntaxError`."""
    text = text.removeprefix("\ufeff")     # a UTF-8 BOM that some editors write
    source = Source(path, text)
    surrogate = None if text.isascii() else _SURROGATE.search(text)
    if surrogate is not None:   # only a Python caller's str can hold one; no file can
        line = text.count("\n", 0, surrogate.start()) + 1
        column = surrogate.start() - (text.rfind("\n", 0, surrogate.start()) + 1) + 1
        raise SpecSyntaxError(Diagnostic(
            f"a lone surrogate {surrogate.group()!r} in the text: it is not Unicode text",
            source, Span.point(line, column), "decode the file as UTF-8 before passing it"))
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise _syntax_error(text, source, exc) from None
    deepest = _nesting(tree)
    if deepest is not None:
        raise _too_deep(source, *deepest)
    try:
        module = _ToAst(source).transform(tree)
    except lark.exceptions.VisitError as exc:
        if isinstance(exc.orig_exc, SpecSyntaxError):
            raise exc.orig_exc from None
        raise AssertionError(f"AST builder failed on {path}: {exc.orig_exc!r}") from exc
    if not module.cells and not module.uses:
        raise SpecSyntaxError(Diagnostic("the file defines no cell", source, Span.point(1, 1),
                                         EMPTY_HINT))
    return module
