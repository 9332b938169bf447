"""Hypothesis strategies for the front end: random ASTs, and random text made of the
language's own tokens.

`modules()` draws well-formed ASTs: every node the parser can build, with the invariants
the parser guarantees (a `Number` is never negative, inputs have no initialiser, a state
starts at a number or a param name, a param at a number or an initialiser name). They need
not make sense to the checker: they exist to hold the printer and the grammar to each
other. `token_texts()` draws sequences of the grammar's tokens, which reach far deeper
into the parser than random characters do.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from hypothesis import strategies as st

from rnndsl.lang import ast
from rnndsl.core.ops import FUNCTIONS
from rnndsl.core.shapes import Dim

KEYWORDS = ("cell", "dims", "input", "state", "param", "output", "use")
INITIALISER_NAMES = ("zeros", "ones", "constant", "uniform", "normal", "glorot", "orthogonal")

# A small pool makes names collide (h and h', a name reused as a function), random names
# reach the lexer's corners (leading underscores, digits, names that start like keywords).
names = st.one_of(
    st.sampled_from(["x", "h", "c", "W", "b_1", "H", "I", "tanh", "cellar", "inputs", "_"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True),
).filter(lambda n: n not in KEYWORDS)

dim_names = st.sampled_from(["H", "I", "K", "G2", "n_h"])

# A literal in an expression is never negative (`-1` is Neg(1)); 1e999 parses as inf.
numbers = st.floats(min_value=0.0, allow_nan=False).filter(
    lambda v: math.copysign(1.0, v) > 0)
# Initialisers carry a sign: `~ -0.5`, `uniform(-0.1, 0.1)`, `= -1e999`.
signed_numbers = st.floats(allow_nan=False)


@st.composite
def dims(draw, names=dim_names) -> Dim:
    """A size linear in the dims: `H`, `2 * H - 1`, `0 - K + 3`, `4`."""
    terms = draw(st.dictionaries(names, st.integers(-3, 3), max_size=2))
    size = Dim.lit(draw(st.integers(-4, 9)))
    for name, coef in terms.items():
        size = size + Dim.of(name).scaled(coef)
    return size


shapes = st.lists(dims(), max_size=3).map(tuple)
exponents_numeric = st.one_of(st.builds(ast.Number, numbers),
                              st.builds(ast.Neg, st.builds(ast.Number, numbers)))


def expressions(names=names, primed_names=names, functions=None, sizes=None,
                max_leaves: int = 14):
    """Random expression trees: every BinOp, Neg, Pow, Call and Slice over the given names."""
    functions = functions if functions is not None else st.one_of(
        st.sampled_from(sorted(FUNCTIONS)), names)
    sizes = sizes if sizes is not None else dims()

    def extend(children):
        return st.one_of(
            st.builds(ast.BinOp, st.sampled_from(["+", "-", "*", "/", "@"]), children,
                      children),
            st.builds(ast.Neg, children),
            st.builds(ast.Pow, children, st.one_of(exponents_numeric, children)),
            st.builds(ast.Call, functions, st.lists(children, max_size=3).map(tuple)),
            st.builds(ast.Slice, children, st.none() | sizes, st.none() | sizes),
        )

    leaves = st.one_of(st.builds(ast.Number, numbers), st.builds(ast.Name, names),
                       st.builds(ast.Primed, primed_names))
    return st.recursive(leaves, extend, max_leaves=max_leaves)


exprs = expressions()


def _vars(init):
    return st.lists(st.builds(ast.Var, names, shapes, init), min_size=1, max_size=3).map(tuple)


state_inits = st.one_of(st.none(), st.builds(ast.ConstInit, signed_numbers),
                        st.builds(ast.ParamRefInit, names))
param_inits = st.one_of(
    st.none(), st.builds(ast.ConstInit, signed_numbers),
    st.builds(ast.NamedInit, st.one_of(st.sampled_from(INITIALISER_NAMES), names),
              st.lists(signed_numbers, max_size=3).map(tuple)))

statements = st.one_of(
    st.builds(ast.DimsDecl, st.lists(dim_names | names, min_size=1, max_size=3).map(tuple)),
    st.builds(ast.InputDecl, _vars(st.none())),
    st.builds(ast.StateDecl, _vars(state_inits)),
    st.builds(ast.ParamDecl, _vars(param_inits)),
    st.builds(ast.Equation, names, st.booleans(), exprs),
    st.builds(ast.Output, names, exprs, st.just(False)),
    st.builds(ast.Output, names, st.none(), st.booleans()),
)

cells = st.builds(ast.Cell, names, st.lists(statements, max_size=6).map(tuple))
# A path is anything between double quotes on one line.
paths = st.text(st.characters(blacklist_characters='"\n', blacklist_categories=("Cs",)),
                max_size=12)
modules = st.builds(ast.Module, st.lists(st.builds(ast.Use, paths), max_size=2).map(tuple),
                    st.lists(cells, max_size=2).map(tuple))


# ----------------------------------------------------------------------------- token text

TOKENS = (
    list(KEYWORDS)
    + ["{", "}", "(", ")", "[", "]", ",", ":", "=", "~", "+", "-", "*", "/", "@", "**", "'"]
    + ["x", "h", "W", "H", "I", "tanh", "concat", "glorot", "uniform", "a_1", "cellar"]
    + ["0", "1", "2", "0.5", ".5", "3.", "1e-3", "2E+2", "-0.5", "+1", "1e999"]
    + ['"a.rnn"', '""', "# a comment\n", "\n", "\t"]
)
ODD_CHARACTERS = ["$", "`", '"', "!", "é", "\x00", "\\", "?"]

@st.composite
def token_texts(draw) -> str:
    """Tokens joined by spaces (or by nothing, which glues some together), often inside
    a cell's braces so that the parser gets past the top level."""
    tokens = draw(st.lists(st.one_of(st.sampled_from(TOKENS), st.sampled_from(ODD_CHARACTERS)),
                           max_size=30))
    odd = draw(st.integers(0, 9)) == 0
    if not odd:
        tokens = [t for t in tokens if t not in ODD_CHARACTERS]
    separator = draw(st.sampled_from([" ", " ", "\n", ""]))
    body = separator.join(tokens)
    prefix = draw(st.sampled_from(["", "cell C {\n", "cell C { dims H\n input x[H]\n"]))
    suffix = draw(st.sampled_from(["", "\n}", "}"])) if prefix else ""
    return prefix + body + suffix


# ----------------------------------------------------------------------------- mutated specs

SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"
_TOKEN = re.compile(r"\*\*|[A-Za-z_]\w*|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|\"[^\"\n]*\"|"
                    r"#[^\n]*|\S")


def _tokens(text: str) -> list[str]:
    return [t + "\n" if t.startswith("#") else t for t in _TOKEN.findall(text)]


SPEC_TOKENS = [_tokens(p.read_text()) for p in sorted(SPECS_DIR.glob("*.rnn"))]


@st.composite
def mutated_specs(draw) -> str:
    """A real spec with a few tokens deleted, inserted, swapped or replaced: errors deep
    inside cells, after many statements, in every parser state the specs visit."""
    tokens = list(draw(st.sampled_from(SPEC_TOKENS)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(tokens) - 1))
        edit = draw(st.sampled_from(["delete", "insert", "replace", "swap", "truncate"]))
        if edit == "delete":
            del tokens[i]
        elif edit == "insert":
            tokens.insert(i, draw(st.sampled_from(TOKENS + ODD_CHARACTERS)))
        elif edit == "replace":
            tokens[i] = draw(st.sampled_from(TOKENS))
        elif edit == "swap" and i + 1 < len(tokens):
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        elif edit == "truncate":
            del tokens[i:]
        if not tokens:
            break
    return " ".join(tokens)


# ----------------------------------------------------------------------------- near-valid cells

CHECK_PREAMBLE = """cell R {
  dims  H, K
  input x[H], u[K]
  state h[H], c[H] = 0.5
  param W[H, H] ~ glorot, V[H, K], a ~ 0.9, b[H] ~ zeros
"""
_value_names = st.sampled_from(["x", "u", "h", "c", "W", "V", "a", "b", "z", "y", "H", "q",
                                "tanh"])
_primed_names = st.sampled_from(["h", "c", "z", "x"])
_sizes = dims(st.sampled_from(["H", "K", "J"]))
_small_exprs = expressions(_value_names, _primed_names,
                           st.sampled_from(sorted(FUNCTIONS) + ["frob"]), _sizes,
                           max_leaves=8)
_targets = st.sampled_from(["h", "c", "z", "y", "x", "a", "W"])
_cell_statements = st.one_of(
    st.builds(ast.Equation, _targets, st.booleans(), _small_exprs),
    st.builds(ast.Output, st.sampled_from(["y", "o", "h", "z"]), _small_exprs, st.just(False)),
    st.builds(ast.Output, st.sampled_from(["h", "c", "z", "x"]), st.none(), st.booleans()),
    st.builds(ast.ParamDecl, st.lists(st.builds(
        ast.Var, st.sampled_from(["P", "z", "h0"]), st.lists(_sizes, max_size=3).map(tuple),
        param_inits), min_size=1, max_size=1).map(tuple)),
)


@st.composite
def checkable_cells(draw) -> str:
    """The text of a cell over a fixed set of declarations with random equations and
    outputs: it parses, and reaches every corner of the checker (names, shapes, slices,
    cycles, updates), mostly with errors and sometimes without."""
    from rnndsl.lang.printer import stmt
    body = draw(st.lists(_cell_statements, min_size=1, max_size=6))
    if draw(st.booleans()):  # often a well-formed update, so that shape errors show
        body += [ast.Equation("h", True, ast.Call("tanh", (ast.BinOp(
            "@", ast.Name("W"), ast.Name("h")),))), ast.Equation("c", True, ast.Name("c"))]
    return CHECK_PREAMBLE + "".join(f"  {stmt(s)}\n" for s in body) + "}\n"
