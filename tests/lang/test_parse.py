"""The front end's first stage: text -> AST, syntax errors, and the printer's round trip.

Each construct of the language is parsed into the AST it must give; each labelled syntax
error is pinned (message, line, column) on inputs written fresh here, not the canonical
examples the labels are matched against; Hypothesis feeds the parser random text, random
token sequences and mutated specs, and holds `printer.unparse` to `parse` on every spec
and on random ASTs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnndsl.lang import ast
from rnndsl.lang.ast import (BinOp, Call, Cell, ConstInit, DimsDecl, Equation, InputDecl, Module,
                        NamedInit, Name, Neg, Number, Output, ParamDecl, ParamRefInit, Pow,
                        Primed, Slice, StateDecl, Use, Var)
from rnndsl.core.errors import Span, SpecSyntaxError
from rnndsl.core.ops import FUNCTIONS
from rnndsl.lang.parse import HINTS, SYNTAX_EXAMPLES, parse
from rnndsl.lang.printer import unparse
from rnndsl.core.shapes import Dim

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import strategies_ast as strategies  # noqa: E402

# the shipped specs, and those in PyTorch's names that rnndsl.torch uses (specs/torch/)
SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").rglob("*.rnn"))
H, I = Dim.of("H"), Dim.of("I")

a, b, c, h, W, x = (Name(n) for n in ("a", "b", "c", "h", "W", "x"))


def n(value: float) -> Number:
    return Number(float(value))


def body(text: str) -> tuple:
    """The statements of the one cell in `cell C { text }`."""
    module = parse(f"cell C {{\n{text}\n}}", "x.rnn")
    (cell,) = module.cells
    return cell.body


def stmt(text: str):
    (only,) = body(text)
    return only


def expr(text: str) -> ast.Expr:
    return stmt(f"y = {text}").expr


def syntax_error(text: str) -> SpecSyntaxError:
    with pytest.raises(SpecSyntaxError) as info:
        parse(text, "x.rnn")
    assert len(info.value.diagnostics) == 1
    return info.value


# ----------------------------------------------------------------------------- module shape

def test_uses_and_cells_in_order():
    text = 'use "a.rnn"\nuse "lib/b c.rnn"\ncell A { }\ncell B {\n}\n'
    assert parse(text) == Module((Use("a.rnn"), Use("lib/b c.rnn")),
                                 (Cell("A", ()), Cell("B", ())))


def test_use_after_a_cell_still_counts_as_a_use():
    assert parse('cell A { }\nuse "b.rnn"').uses == (Use("b.rnn"),)


@pytest.mark.parametrize("text", ["", "   \n\t\n", "# only a comment", "# one\n# two\n"])
def test_a_file_without_cells_or_uses_is_an_error_at_its_start(text):
    error = syntax_error(text)
    assert error.message == "the file defines no cell"
    assert (error.span.line, error.span.column) == (1, 1)


def test_the_file_path_is_the_one_reported():
    error = syntax_error("cell")
    assert error.diagnostics[0].source.path == "x.rnn"


# ----------------------------------------------------------------------------- declarations

def test_dims():
    assert stmt("dims I, H, O") == DimsDecl(("I", "H", "O"))


def test_input_with_several_vars():
    assert stmt("input x[I], y[H], z[3]") == InputDecl(
        (Var("x", (I,)), Var("y", (H,)), Var("z", (Dim.lit(3),))))


def test_state_initial_values():
    assert stmt("state h[H], c[H] = 0.5, s[H] = h0, t[H] = -2") == StateDecl((
        Var("h", (H,)), Var("c", (H,), ConstInit(0.5)), Var("s", (H,), ParamRefInit("h0")),
        Var("t", (H,), ConstInit(-2.0))))


def test_param_shapes_matrix_vector_scalar():
    assert stmt("param W[H, I], b[H], alpha ~ 0.9, beta") == ParamDecl((
        Var("W", (H, I)), Var("b", (H,)), Var("alpha", (), ConstInit(0.9)), Var("beta", ())))


@pytest.mark.parametrize("size, dim", [
    ("3", Dim.lit(3)),
    ("H", H),
    ("2 * H", H.scaled(2)),
    ("A + G", Dim.of("A") + Dim.of("G")),
    ("H - 1", H - Dim.lit(1)),
    ("4 * H + I - 2", H.scaled(4) + I - Dim.lit(2)),
    ("(A + G)", Dim.of("A") + Dim.of("G")),
    ("H - (I - 1)", H - I + Dim.lit(1)),
    ("0 - H", -H),
    ("H + H", H.scaled(2)),
])
def test_sizes_are_linear_in_the_dims(size, dim):
    (var,) = stmt(f"param P[{size}, H]").vars
    assert var.shape == (dim, H)


@pytest.mark.parametrize("text, init", [
    ("1.5", ConstInit(1.5)),
    ("-0.5", ConstInit(-0.5)),
    ("+2", ConstInit(2.0)),
    ("1e-3", ConstInit(0.001)),
    ("zeros", NamedInit("zeros")),
    ("glorot", NamedInit("glorot")),
    ("glorot()", NamedInit("glorot")),
    ("orthogonal", NamedInit("orthogonal")),
    ("uniform(-0.1, 0.1)", NamedInit("uniform", (-0.1, 0.1))),
    ("normal(0, 0.01)", NamedInit("normal", (0.0, 0.01))),
    ("constant(-3)", NamedInit("constant", (-3.0,))),
])
def test_initialisers(text, init):
    (var,) = stmt(f"param W[H, H] ~ {text}").vars
    assert var.init == init


def test_equations_intermediate_and_primed():
    assert body("a = x\nh' = a") == (Equation("a", False, x), Equation("h", True, a))


def test_the_three_output_forms():
    assert body("output y = h'\noutput h'\noutput g") == (
        Output("y", Primed("h"), False), Output("h", None, True), Output("g", None, False))


def test_keywords_only_as_whole_words():
    assert body("input inputs[I]\noutput_x = cellar") == (
        InputDecl((Var("inputs", (I,)),)), Equation("output_x", False, Name("cellar")))


# ----------------------------------------------------------------------------- expressions

@pytest.mark.parametrize("op", ["+", "-", "*", "/", "@"])
def test_each_binary_operator(op):
    assert expr(f"a {op} b") == BinOp(op, a, b)


@pytest.mark.parametrize("text, tree", [
    ("a + b * c", BinOp("+", a, BinOp("*", b, c))),
    ("a * b + c", BinOp("+", BinOp("*", a, b), c)),
    ("a - b - c", BinOp("-", BinOp("-", a, b), c)),
    ("a - (b - c)", BinOp("-", a, BinOp("-", b, c))),
    ("a / b / c", BinOp("/", BinOp("/", a, b), c)),
    ("a / (b * c)", BinOp("/", a, BinOp("*", b, c))),
    ("W @ x * 2", BinOp("*", BinOp("@", W, x), n(2))),
    ("W @ (x * 2)", BinOp("@", W, BinOp("*", x, n(2)))),
    ("2 * W @ x", BinOp("@", BinOp("*", n(2), W), x)),
    ("W @ x + b", BinOp("+", BinOp("@", W, x), b)),
    ("(1 - a) * b", BinOp("*", BinOp("-", n(1), a), b)),
    ("-a", Neg(a)),
    ("- -a", Neg(Neg(a))),
    ("-a * b", BinOp("*", Neg(a), b)),
    ("a - -b", BinOp("-", a, Neg(b))),
    ("-W @ x", BinOp("@", Neg(W), x)),
    ("a ** 2", Pow(a, n(2))),
    ("a ** -2", Pow(a, Neg(n(2)))),
    ("-a ** 2", Neg(Pow(a, n(2)))),
    ("a ** 2 ** 3", Pow(a, Pow(n(2), n(3)))),
    ("(a ** 2) ** 3", Pow(Pow(a, n(2)), n(3))),
    ("2 * a ** 2", BinOp("*", n(2), Pow(a, n(2)))),
    ("(a - b) ** 0.5", Pow(BinOp("-", a, b), n(0.5))),
    ("h' * 2", BinOp("*", Primed("h"), n(2))),
    ("((a))", a),
])
def test_precedence_and_grouping(text, tree):
    assert expr(text) == tree


@pytest.mark.parametrize("text, value", [
    ("1", 1.0), ("0.5", 0.5), (".5", 0.5), ("3.", 3.0), ("1e-5", 1e-5), ("2E+3", 2000.0),
])
def test_numbers(text, value):
    assert expr(text) == Number(value)


@pytest.mark.parametrize("fn", sorted(FUNCTIONS))
def test_every_function_is_a_call(fn):
    arity = FUNCTIONS[fn][1] or 3
    args = ", ".join(f"a{i}" for i in range(arity))
    assert expr(f"{fn}({args})") == Call(fn, tuple(Name(f"a{i}") for i in range(arity)))


def test_calls_nest_and_take_expressions():
    assert expr("tanh(W @ x + b)") == Call("tanh", (BinOp("+", BinOp("@", W, x), b),))
    assert expr("concat(a, h', (b))") == Call("concat", (a, Primed("h"), b))
    assert expr("f()") == Call("f", ())


@pytest.mark.parametrize("text, tree", [
    ("x[0:H]", Slice(x, Dim.lit(0), H)),
    ("x[H:2 * H]", Slice(x, H, H.scaled(2))),
    ("x[:H]", Slice(x, None, H)),
    ("x[H:]", Slice(x, H, None)),
    ("x[:]", Slice(x, None, None)),
    ("x[H - 1:H + I]", Slice(x, H - Dim.lit(1), H + I)),
    ("h'[0:H]", Slice(Primed("h"), Dim.lit(0), H)),
    ("(a + b)[H:]", Slice(BinOp("+", a, b), H, None)),
    ("concat(a, b)[:H]", Slice(Call("concat", (a, b)), None, H)),
    ("x[0:H][1:2]", Slice(Slice(x, Dim.lit(0), H), Dim.lit(1), Dim.lit(2))),
    ("-x[:H]", Neg(Slice(x, None, H))),
    ("x[:H] ** 2", Pow(Slice(x, None, H), n(2))),
])
def test_slices(text, tree):
    assert expr(text) == tree


def test_comments_anywhere():
    plain = "cell C {\ndims H\ninput x[H]\nstate h[H]\nh' = tanh(x + h)\noutput h'\n}\n"
    commented = """# a file comment
    cell C {     # after the brace
      dims H     # sizes
      input x[H] # the input
      # a line of its own
      state h[H]
      h' = tanh(  # inside a call
          x +     # inside a sum
          h)
      output h'  # at the end
    }  # after the cell
    # last line, no newline"""
    assert parse(commented) == parse(plain)


def test_newlines_are_insignificant():
    one_line = "cell C { dims H input x[H] state h[H] h' = tanh(x + h) output h' }"
    split = "\n".join(["cell", "C", "{", "dims", "H", "input", "x", "[", "H", "]", "state h[H]",
                       "h'", "=", "tanh(", "x", "+", "h", ")", "output", "h'", "}"])
    assert parse(split) == parse(one_line)
    assert stmt("a = W @ x\n  + b") == Equation("a", False, BinOp("+", BinOp("@", W, x), b))


def test_whitespace_does_not_change_a_spec():
    for path in SPECS:
        text = path.read_text()
        squeezed = re.sub(r"#[^\n]*", "", text)
        squeezed = re.sub(r"\s+", " ", squeezed)
        assert parse(squeezed) == parse(text), path.name


# ----------------------------------------------------------------------------- spans

SPAN_TEXT = """cell Elman {
  dims H, I
  param W[H, I] ~ glorot, b[H]
  h' = tanh(W @ x + b)  # the update
  output y = h'
}
"""


def test_spans_of_declarations():
    (cell,) = parse(SPAN_TEXT).cells
    assert cell.span == Span(1, 1, 6, 2)
    assert cell.name_span == Span(1, 6, 1, 11)
    dims, params, _, _ = cell.body
    assert dims.span == Span(2, 3, 2, 12)
    assert dims.name_spans == (Span(2, 8, 2, 9), Span(2, 11, 2, 12))
    w, bias = params.vars
    assert w.span == Span(3, 9, 3, 25)
    assert w.shape_span == Span(3, 10, 3, 16)
    assert w.init.span == Span(3, 19, 3, 25)
    assert bias.span == Span(3, 27, 3, 31)


def test_spans_inside_an_expression():
    (cell,) = parse(SPAN_TEXT).cells
    equation, output = cell.body[2:]
    assert equation.span == Span(4, 3, 4, 23)
    assert equation.target_span == Span(4, 3, 4, 5)
    call = equation.expr
    assert call.span == Span(4, 8, 4, 23)
    assert call.fn_span == Span(4, 8, 4, 12)
    (total,) = call.args
    assert total.span == Span(4, 13, 4, 22)
    matvec = total.left
    assert matvec.span == Span(4, 13, 4, 18)
    assert matvec.right == Name("x") and matvec.right.span == Span(4, 17, 4, 18)
    assert total.right.span == Span(4, 21, 4, 22)
    assert output.name_span == Span(5, 10, 5, 11)
    assert output.expr.span == Span(5, 14, 5, 16)


def test_span_of_a_name_after_a_multiline_expression():
    (equation,) = body("a = tanh(\n    x\n  ) + b")
    assert equation.expr.right.span == Span(4, 7, 4, 8)   # the text's line 1 is `cell C {`
    assert equation.expr.left.args[0].span == Span(3, 5, 3, 6)


# ----------------------------------------------------------------------------- syntax errors

def _label_of(message: str) -> str:
    labels = [label for label in SYNTAX_EXAMPLES if message.startswith(label)]
    assert len(labels) <= 1
    return labels[0] if labels else None


EXPRESSION = "expected an expression"
PAREN = "unclosed parenthesis: expected ')'"
OPERAND = "an operator is missing between two operands (a matrix product reads W @ x)"
OUTSIDE = "a statement outside a cell: statements go inside `cell Name { ... }`"
UNMATCHED = "an unmatched '}': the cell before it is already closed"
SHAPE = "a declared name needs a shape in brackets, like `x[I]`"
STATE_INIT = "a state starts at a number or at a param: `state h[H] = 0.5` or `state h[H] = h0`"
EQUALS = "expected '=' after the name: an equation reads `name = expr` or `state' = expr`"
CELL = "a cell needs a name and a body: `cell Name { ... }`"
SIZE = "a size is a dim, a whole number, or a sum of them, like `H`, `4 * H`, `I + H`"
COLON = "a slice needs a colon, like `x[0:H]`, `x[H:]` or `x[i:i + 1]` for one feature"
INIT = ("an initialiser follows `~`: a number, or a name like `glorot` or "
        "`uniform(-0.1, 0.1)`")
USE = "`use` takes a quoted path: `use \"other.rnn\"`"
MISSING_BRACE = "missing '}' at the end of the cell"
DECLARATION = "a declaration needs at least one name, like `dims I, H` or `input x[I]`"
OPERATOR = "an operator is missing between two operands (a matrix product reads W @ x)"
TRAILING = "a name must follow the ',': remove a trailing ','"

# (label, text, line, column, what the message says was found)
BAD_INPUTS = [
    (EXPRESSION, "cell A {\n  dims H\n  a = exp(b) *\n}", 4, 1, "'}'"),
    (EXPRESSION, "cell A {\n  input x[I]\n  state h[H]\n  h' = x -\n}", 5, 1, "'}'"),
    (EXPRESSION, "cell A { a = b + * c }", 1, 18, "'*'"),
    (EXPRESSION, "cell A { a = b /\n\n}", 3, 1, "'}'"),
    (EXPRESSION, "cell A { dims H\n a = W @ }", 2, 10, "'}'"),
    (EXPRESSION, "cell A { dims H a = b ** }", 1, 26, "'}'"),
    (EXPRESSION, "cell A { a = (}", 1, 15, "'}'"),
    (EXPRESSION, "cell A { a = -}", 1, 15, "'}'"),
    (EXPRESSION, "cell A { output z = max(a, ) }", 1, 28, "')'"),
    (EXPRESSION, "cell A { output z = }", 1, 21, "'}'"),
    (EXPRESSION, "cell A { a = b +", 1, 17, "the end of the file"),
    (PAREN, "cell A {\n  a = sigmoid(x\n}", 3, 1, "'}'"),
    (PAREN, "cell A { dims H\n  a = ((x + y) * z\n}", 3, 1, "'}'"),
    (OPERAND, "cell A { a = f(x y) }", 1, 18, "'y'"),
    (OPERAND, "cell A {\n  h' = tanh(W x + h)\n}", 2, 15, "'x'"),
    # a declaration given another kind's initialiser: "unexpected '='" before
    ("a param's initialiser follows `~`, not `=`: `param W[H, I] ~ glorot`, `param b[H] ~ 0`",
     "cell A {\n  param p[H] = 3\n}", 2, 14, "'='"),
    ("a state starts at `= value`, not `~`: `state h[H] = 0.5` or `state h[H] = h0`",
     "cell A {\n  state g[H] ~ zeros\n}", 2, 14, "'~'"),
    ("an input takes no initialiser: the caller gives it", "cell A {\n  input x[I] = 0\n}",
     2, 14, "'='"),
    (PAREN, "cell A {\n  a = (b\n", 2, 9, "the end of the file"),
    (PAREN, "cell A {\n  a = f(g(b", 2, 12, "the end of the file"),
    (OUTSIDE, "state h[H]", 1, 1, "'state'"),
    (OUTSIDE, "\n\noutput y = x", 3, 1, "'output'"),
    (OUTSIDE, "cell A { dims H }\n  input x[I]", 2, 3, "'input'"),
    (OUTSIDE, "cell A {\n  a = b }\n  h' = a\n}", 3, 3, "'h'"),
    (OUTSIDE, 'use "a.rnn"\nparam W[H]', 2, 1, "'param'"),
    (UNMATCHED, "cell A {\n  dims H\n}\n}", 4, 1, "'}'"),
    (SHAPE, "cell A { state s, t[H] }", 1, 17, "','"),
    (SHAPE, "cell A {\n  dims H\n  input x\n}", 4, 1, "'}'"),
    (SHAPE, "cell A { input x[I], y\n  state h[H] }", 2, 3, "'state'"),
    (STATE_INIT, "cell A { state h[H] = ones() }", 1, 27, "'('"),
    (STATE_INIT, "cell A {\n  state h[H] = -h0\n}", 2, 16, "'-'"),
    (EQUALS, "cell A { c tanh(x) }", 1, 12, "'tanh'"),
    (EQUALS, "cell A {\n  a = b\n  c d\n}", 3, 5, "'d'"),
    (EQUALS, "cell A {\n  dims H\n  h' = tanh(x)\n  c' c\n}", 4, 6, "'c'"),
    (MISSING_BRACE, "cell A { input x[H]", 1, 20, "the end of the file"),
    (MISSING_BRACE, "cell A {\n  a = b\n", 2, 8, "the end of the file"),
    (MISSING_BRACE, "cell A {\n  h' = x\n  output h'", 3, 12, "the end of the file"),
    (MISSING_BRACE, "cell A { param W[H] ~ glorot", 1, 29, "the end of the file"),
    (CELL, "cell\n{ }", 2, 1, "'{'"),
    (CELL, "cell A input x[I] }", 1, 8, "'input'"),
    (CELL, "cell 1 { }", 1, 6, "'1'"),
    (SIZE, "cell A { param W[H, 0.5] }", 1, 22, "'.5'"),
    (SIZE, "cell A { input x[H / 2] }", 1, 20, "'/'"),
    (SIZE, "cell A {\n  a = x[1.5:]\n}", 2, 10, "'.5'"),
    (SIZE, "cell A { a = x[H:H * 2] }", 1, 20, "'*'"),
    (COLON, "cell A {\n  a = x[H]\n}", 2, 10, "']'"),
    (COLON, "cell A { a = x[2 * H] }", 1, 21, "']'"),
    (INIT, "cell A { param b[H] ~ }", 1, 23, "'}'"),
    (INIT, "cell A {\n  param b[H] ~ glorot(x)\n}", 2, 23, "'x'"),
    (INIT, "cell A { param b[H] ~ (1) }", 1, 23, "'('"),
    (USE, "use a.rnn", 1, 5, "'a'"),
    (USE, "\nuse\n'a.rnn'", 3, 1, "\"'\""),
    (USE, "use", 1, 4, "the end of the file"),
    (DECLARATION, "cell A {\n  input\n}", 3, 1, "'}'"),
    (DECLARATION, "cell A { param }", 1, 16, "'}'"),
    (TRAILING, "cell A { dims H, }", 1, 18, "'}'"),
    (TRAILING, "cell A {\n  state h[H], c[H],\n}", 3, 1, "'}'"),
]


@pytest.mark.parametrize("label, text, line, column, found", BAD_INPUTS,
                         ids=[f"{i}-{t[0][:18]}" for i, t in enumerate(BAD_INPUTS)])
def test_labelled_syntax_errors(label, text, line, column, found):
    for examples in SYNTAX_EXAMPLES.values():
        assert text not in examples, "write a fresh bad input, not a canonical example"
    error = syntax_error(text)
    assert error.message == f"{label} (found {found})"
    assert (error.span.line, error.span.column) == (line, column)
    assert error.diagnostics[0].hint == HINTS.get(label)


@pytest.mark.parametrize("decl, column, word", [
    ("input once token x[V]", 14, "token"),
    ("input token once x[V]", 15, "once"),
    ("input once token x[V], y[V]", 14, "token"),
])
def test_an_input_both_once_and_token_is_named_as_such(decl, column, word):
    """Not "a declared name needs a shape" at x, which has one: the parser stops there
    because it took `token` (or `once`) for the name."""
    error = syntax_error(f"cell C {{\n  dims V, H\n  {decl}\n}}")
    (d,) = error.diagnostics
    assert d.message.startswith("an input is `once` or `token`, not both")
    assert (d.span.line, d.span.column, d.span.end_column) == (3, column, column + len(word))
    assert "one-hot row" in d.hint


def test_an_input_named_token_is_still_refused_as_a_keyword():
    from rnndsl.core.errors import RnnError
    from rnndsl.lang.specfile import read_spec
    with pytest.raises(RnnError, match="'token' is a keyword"):
        read_spec("x.rnn", text="cell C {\n  dims V\n  input once token[V]\n  output token\n}")


def test_every_label_is_tested_here():
    assert {label for label, *_ in BAD_INPUTS} == set(SYNTAX_EXAMPLES)


@pytest.mark.parametrize("label, example", [
    (label, example) for label, examples in SYNTAX_EXAMPLES.items() for example in examples])
def test_each_canonical_example_gets_its_own_label(label, example):
    assert _label_of(syntax_error(example).message) == label


@pytest.mark.parametrize("text, label", [
    ("a = b +\n}", EXPRESSION),
    ("a = tanh(b + \n}", EXPRESSION),
    ("a = tanh(max(b, (c * ))) }", EXPRESSION),
    ("a = tanh((x\n}", PAREN),
    ("input z[I], y[I], x\n}", SHAPE),
    ("param W[H], V[H, I, 0.5] }", SIZE),
    ("a = concat(x, y[(H - 1)]) }", COLON),
    ("param P ~ uniform(0, 1), Q ~ }", INIT),
    ("a b\n}", EQUALS),
])
def test_labels_do_not_depend_on_nesting(text, label):
    # lark's own matcher also compares the depth of the parser's stack, which grows with
    # the statements before the error, the items of a list and the parentheses around it
    statements = "".join(f"  a{i} = x\n" for i in range(5))
    deep = syntax_error("cell A {\n  dims H\n  input y[H]\n" + statements + "  " + text)
    assert deep.message.startswith(label), deep.message


@pytest.mark.parametrize("text, message, line, column", [
    ("cell A { a = b ] }", "unexpected ']'; expected \"'\", '(', '*', '**', '+', '-', '.', "
     "'/', ...", 1, 16),
    ("cell A { a = (b] }", "unexpected ']'; expected \"'\", '(', ')', '*', '**', '+', '-', "
     "'.', ...", 1, 16),
    ("cell A { output }", "unexpected '}'; expected a name", 1, 17),
    ("cell A { 1 = x }", "unexpected '1'; expected '}', a name, dims, final, input, layer, "
     "output, param, ...", 1, 10),
    ("cell A {\n  a = x[\n", "unexpected the end of the file; expected '(', ':', a name, "
     "an integer", 2, 9),
])
def test_unlabelled_errors_say_what_was_expected(text, message, line, column):
    error = syntax_error(text)
    assert error.message == message
    assert (error.span.line, error.span.column) == (line, column)


@pytest.mark.parametrize("text, char, line, column", [
    ("cell A {\n  h' = $x\n}", "$", 2, 8),
    ("cell A { a = `b` }", "`", 1, 14),
    ("cell A {\n\n  a = b ! c }", "!", 3, 9),
    ("cell A { a = b\x00 }", "\x00", 1, 15),
])
def test_unexpected_characters(text, char, line, column):
    error = syntax_error(text)
    assert error.message == f"unexpected character {char!r}"
    assert (error.span.line, error.span.column) == (line, column)
    assert error.diagnostics[0].hint.startswith("names are letters, digits and _")


@pytest.mark.parametrize("text, line", [
    ('use "a.rnn', 1),
    ('use "a.rnn\ncell A { }', 1),
    ('use "a.rnn"\nuse "b.rnn\n', 2),
])
def test_an_unterminated_string_is_named_as_such(text, line):
    error = syntax_error(text)
    assert error.message == "unterminated string: the closing quote is missing"
    assert (error.span.line, error.span.column) == (line, 5)
    assert error.diagnostics[0].hint == 'a path is quoted on one line: use "other.rnn"'


ENDS_EARLY = "starts the next statement, so the one before it is unfinished"


# A mistake the parser reads as something else stops it a few tokens later, where the text
# no longer fits: each is reported where the mistake is. (text, message, line, column, hint)
MISREAD = [
    ("cell A {\n  param b[H] ~ 0x1F\n  h' = b\n}",
     "'0x1F' is a hexadecimal number: numbers are written in decimal", 2, 16, "write 31"),
    ("cell A { a = b * 0x10 }",
     "'0x10' is a hexadecimal number: numbers are written in decimal", 1, 18, "write 16"),
    ("cell A { a = 0b101\n}", "'0b101' is a binary number: numbers are written in decimal",
     1, 14, "write 5"),
    ("cell A { a = x * 1_000 }", "'1_000': digits are not grouped with '_' in a number",
     1, 18, "write 1000"),
    ("cell A {\n  a = tanh(3x)\n}", "a number followed by a name: write 3 * x", 2, 12,
     "an operator goes between two operands"),
    ("cell A { a = 2b\n  output a }", "a number followed by a name: write 2 * b", 1, 14,
     "an operator goes between two operands"),
    ("cell A {\n  a = max(tanh x, y)\n}",
     "a function is called with parentheses: tanh(x)", 2, 11, None),
    ("cell A { a = sigmoid b\n  output a }",
     "a function is called with parentheses: sigmoid(b)", 1, 14, None),
    # two operands in a row outside parentheses: "expected '=' after the name", with a
    # hint about the line before, where the mistake is on this one
    ("cell A {\n  h' = W x + h\n}", f"{OPERATOR} (found 'x')", 2, 8,
     "without one the equation ends at 'W', and 'x' reads as the start of the next "
     "statement"),
    ("cell A {\n  h' = tanh(W @ x) h\n  output h'\n}", f"{OPERATOR} (found 'h')", 2, 18,
     "without one the equation ends at ')', and 'h' reads as the start of the next "
     "statement"),
    ("cell A {\n  a =\n  output a\n}",
     f"{EXPRESSION} (found the keyword 'output')", 2, 5, f"'output' {ENDS_EARLY}"),
    ("cell A {\n  state h[H]\n  h' = tanh(h) +\n  output h'\n}",
     f"{EXPRESSION} (found the keyword 'output')", 3, 16, f"'output' {ENDS_EARLY}"),
    ("cell A {\n  dims\n  input x[I]\n}",
     f"{DECLARATION} (found the keyword 'input')", 2, 3, f"'input' {ENDS_EARLY}"),
    ("cell A { qq\n  dims H\n}", f"{EQUALS} (found the keyword 'dims')", 1, 10,
     f"'dims' {ENDS_EARLY}"),
    ("cell A {\n  param W[H], b[H],\n  h' = W\n}", f"{TRAILING} (found the end of the line)",
     2, 19, "'h' on line 3 starts the next statement"),
    ("cell A {\n  param b[H] ~\n  a = b\n}", f"{INIT} (found the end of the line)",
     2, 14, "'a' on line 3 starts the next statement"),
    ("cell A {\n  dims H\n  use \"b.rnn\"\n}",
     "`use` goes at the top of the file, outside cells", 3, 3,
     "move the line above the first `cell`"),
    ("cell A {\n  cell B { }\n}", "a cell inside a cell: cells do not nest", 2, 3,
     "close the cell before it with '}', then start the next one"),
    # a state named with a keyword: its declaration passes, its update is where it stops
    ("cell A {\n  state output[H]\n  output' = tanh(output)\n}",
     "'output' is a keyword of the language and cannot name a state", 3, 3,
     "rename the state, here and where it is declared"),
    ("cell A {\n  state dims[H]\n  h = x\n  dims' = h\n}",
     "'dims' is a keyword of the language and cannot name a state", 4, 3,
     "rename the state, here and where it is declared"),
]


@pytest.mark.parametrize("text, message, line, column, hint", MISREAD,
                         ids=[f"{i}-{t[1][:20]}" for i, t in enumerate(MISREAD)])
def test_a_misread_mistake_is_reported_where_it_is(text, message, line, column, hint):
    error = syntax_error(text)
    assert error.message == message
    assert (error.span.line, error.span.column) == (line, column)
    assert error.diagnostics[0].hint == hint


def test_rendered_error_shows_place_line_and_caret():
    text = "cell A {\n  dims H\n  h' = tanh(W @ x +)\n}\n"
    error = syntax_error(text)
    assert error.render() == (
        "x.rnn:3:20: error: expected an expression (found ')')\n"
        "    3 |   h' = tanh(W @ x +)\n"
        "      |                    ^")
    assert str(error) == error.render()


def test_rendered_error_underlines_the_whole_token_and_gives_the_hint():
    error = syntax_error("cell A {\n  a = b\n  c tanh(x)\n}")
    lines = error.render().splitlines()
    assert lines[0].startswith("x.rnn:3:5: error: expected '=' after the name")
    assert lines[1] == "    3 |   c tanh(x)"
    assert lines[2] == "      |     ^^^^"
    assert lines[3] == ("  hint: is an operator missing between two operands on the line "
                        "before?")


def test_rendered_error_at_the_end_of_the_file():
    error = syntax_error("cell A {\n  h' = x\n")
    assert error.render().splitlines() == [
        "x.rnn:2:9: error: missing '}' at the end of the cell (found the end of the file)",
        "    2 |   h' = x",
        "      |         ^",
        "  hint: every `cell Name {` needs a closing `}`",
    ]


# ----------------------------------------------------------------------------- fuzzing

def _parses_or_reports(text: str):
    """Parse; the only failure allowed is a SpecSyntaxError that renders with its place."""
    try:
        return parse(text, "fuzz.rnn")
    except SpecSyntaxError as error:
        (diagnostic,) = error.diagnostics
        lines = text.splitlines() or [""]
        assert 1 <= diagnostic.span.line <= len(lines)
        assert diagnostic.span.column >= 1
        assert error.render().startswith(
            f"fuzz.rnn:{diagnostic.span.line}:{diagnostic.span.column}: error: ")
        return None


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=80))
def test_random_text_never_crashes_the_parser(text):
    _parses_or_reports(text)


@FUZZ
@given(st.text(alphabet="cellusdimpt xhHW0123.e{}()[],:=~+-*/@'\"#\n", max_size=80))
def test_random_text_over_the_language_alphabet(text):
    _parses_or_reports(text)


@FUZZ
@given(strategies.token_texts())
def test_random_token_sequences_never_crash_the_parser(text):
    module = _parses_or_reports(text)
    if module is not None:
        assert parse(unparse(module)) == module


@FUZZ
@given(strategies.mutated_specs())
def test_mutated_specs_never_crash_the_parser(text):
    module = _parses_or_reports(text)
    if module is not None:
        assert parse(unparse(module)) == module


# ----------------------------------------------------------------------------- printer

@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_printer_round_trip_on_every_spec(path):
    module = parse(path.read_text(), str(path))
    printed = unparse(module)
    assert parse(printed) == module
    assert unparse(parse(printed)) == printed


def test_printer_output_is_canonical():
    module = parse("cell C{dims H input x[H] state h[H]=0.5 param W[2*H,H]~uniform(-1,1),a~2 "
                   "h'=-(W@x)[H:]**2+ -a*(h-x)/ (a-1)  output y=h'[:H] output h'}")
    assert unparse(module) == (
        "cell C {\n"
        "  dims H\n"
        "  input x[H]\n"
        "  state h[H] = 0.5\n"
        "  param W[2 * H, H] ~ uniform(-1.0, 1.0), a ~ 2.0\n"
        "  h' = -(W @ x)[H:] ** 2.0 + -a * (h - x) / (a - 1.0)\n"
        "  output y = h'[:H]\n"
        "  output h'\n"
        "}\n")


@pytest.mark.parametrize("tree", [
    BinOp("-", a, BinOp("-", b, c)),
    BinOp("/", a, BinOp("*", b, c)),
    BinOp("*", BinOp("+", a, b), c),
    BinOp("@", W, BinOp("@", W, x)),
    Pow(Pow(a, n(2)), n(3)),
    Pow(Neg(a), n(2)),
    Neg(Pow(a, n(2))),
    Pow(a, BinOp("+", b, c)),
    Slice(Neg(x), None, H),
    Slice(Number(1e-5), -H, H.scaled(2) - Dim.lit(1)),
    Slice(x, Dim.lit(-2), H - I.scaled(3)),
    Number(float("inf")),
])
def test_printer_parenthesises_where_the_grammar_needs_it(tree):
    module = Module((), (Cell("C", (Equation("y", False, tree),)),))
    assert parse(unparse(module)) == module


def test_an_overflowing_literal_prints_as_one():
    module = parse("cell C { param a ~ -1e999\n y = 1e999 }")
    assert unparse(module) == "cell C {\n  param a ~ -1e999\n  y = 1e999\n}\n"
    assert parse(unparse(module)) == module


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.modules.filter(lambda m: m.cells or m.uses))   # an empty file is an error
def test_printer_round_trip_on_random_asts(module):
    printed = unparse(module)
    assert parse(printed) == module, printed
    assert unparse(parse(printed)) == printed


def test_a_layer_direction_parses_prints_back_and_leaves_the_words_free_elsewhere():
    from rnndsl.lang import ast as A
    text = ("cell Net {\n  dims I, H\n  input x[I]\n"
            "  layer a = bidirectional LSTM(I = I, H = H)\n"
            "  layer b = reverse LSTM(I = 2 * H, H = H)\n  layer c = LSTM(I = H, H = H)\n"
            "  reverse = b(a(x))\n  bidirectional = c(reverse)\n  output y = bidirectional\n}\n")
    module = parse(text)
    layers = [s for s in module.cells[0].body if isinstance(s, A.LayerDecl)]
    assert [s.direction for s in layers] == ["bidirectional", "reverse", "forward"]
    printed = unparse(module)
    assert "layer a = bidirectional LSTM(I = I, H = H)" in printed
    assert "layer c = LSTM(I = H, H = H)" in printed
    assert parse(printed) == module and unparse(parse(printed)) == printed
