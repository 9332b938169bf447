"""The checker: one test per error it reports, message and place pinned; warnings; the
multi-file checks of `spec.read_spec`; and a slice whose validity waits for the dims.

Cells are written with `cell(...)`: the body lines are lines 2, 3, ... of the text, each
indented by two spaces, so a mark at index i of body line k is at line k + 1, column i + 3.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import rnndsl
from rnndsl.lang.check import CheckedCell, check
from rnndsl.core.errors import BindError, CheckError, Source, SpecFileError
from rnndsl.lang.parse import parse
from rnndsl.lang.specfile import read_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import strategies_ast as strategies  # noqa: E402

# the declarations most tests share: lines 2 to 6
DECLS = ("dims  H, I",
         "input x[I]",
         "state h[H]",
         "param W[H, I] ~ glorot, U[H, H] ~ orthogonal, b[H] ~ zeros",
         "param V[I, H]")
UPDATE = "h' = tanh(W @ x + U @ h + b)"


def cell(*lines: str, name: str = "A") -> str:
    return f"cell {name} {{\n" + "".join(f"  {line}\n" for line in lines) + "}\n"


def checked(text: str) -> CheckedCell:
    (c,) = parse(text, "a.rnn").cells
    return check(c, Source("a.rnn", text))


def errors(text: str) -> list:
    with pytest.raises(CheckError) as info:
        checked(text)
    return info.value.diagnostics


def error(text: str):
    """The one error in the text."""
    found = errors(text)
    assert len(found) == 1, [d.message for d in found]
    return found[0]


def at(d) -> tuple[int, int]:
    return d.span.line, d.span.column


def warnings(text: str) -> list[tuple[str, int, int]]:
    return [(w.message, w.span.line, w.span.column) for w in checked(text).warnings]


def test_a_well_formed_cell_checks_clean():
    c = checked(cell(*DECLS, "z = V @ h", UPDATE, "output y = sigmoid(z)"))
    assert c.warnings == ()
    assert [(d.kind, d.name) for d in c.definitions] == [
        ("let", "z"), ("next", "h"), ("output", "y")]


# ----------------------------------------------------------------------------- names

def test_unknown_name_with_a_hint():
    d = error(cell(*DECLS, "h' = tanh(W @ x + U @ hh + b)"))
    assert d.message == "unknown name 'hh'"
    assert at(d) == (7, 25)
    assert d.hint == "did you mean 'h'?"


def test_unknown_name_without_a_close_match():
    d = error(cell(*DECLS, UPDATE, "output y = h' * zebra"))
    assert d.message == "unknown name 'zebra'"
    assert at(d) == (8, 19)
    assert d.hint is None


def test_a_dim_used_as_a_value():
    d = error(cell(*DECLS, "h' = tanh(W @ x) * H"))
    assert d.message == "'H' is a dim (a size), not a value"
    assert at(d) == (7, 22)


def test_a_function_used_as_a_value():
    d = error(cell(*DECLS, "h' = tanh + b"))
    assert d.message == "'tanh' is a function; call it: tanh(...)"
    assert at(d) == (7, 8)


def test_unknown_function_with_a_hint():
    d = error(cell(*DECLS, "h' = tahn(W @ x)"))
    assert d.message == "unknown function 'tahn'"
    assert at(d) == (7, 8)
    assert d.hint == "did you mean 'tanh'?"


def test_unknown_function_lists_the_functions():
    d = error(cell(*DECLS, "h' = b + zzzzzz(b)"))
    assert d.message == "unknown function 'zzzzzz'"
    assert at(d) == (7, 12)
    assert d.hint == ("functions: abs, concat, exp, greater, hard_sigmoid, log, log_softmax, "
                      "max, mean, min, relu, sigmoid, softmax, softplus, sqrt, sum, tanh")


def test_a_value_called_as_a_function():
    d = error(cell(*DECLS, "h' = b(x)"))
    assert d.message == "'b' is a value, not a function"
    assert at(d) == (7, 8)


@pytest.mark.parametrize("call, message", [
    ("max(b)", "max takes 2 arguments, got 1"),
    ("tanh(b, b)", "tanh takes 1 argument, got 2"),
    ("sum()", "sum takes 1 argument, got 0"),
    ("concat()", "concat needs at least one argument"),
    ("hard_sigmoid(b, 0.5)",
     "hard_sigmoid takes 1 argument (or 3, with the constants alpha, beta), got 2"),
    ("greater(b)", "greater takes 2 arguments, got 1"),
])
def test_wrong_arity(call, message):
    d = error(cell(*DECLS, f"h' = b + {call}"))
    assert d.message == message
    assert at(d) == (7, 12)


@pytest.mark.parametrize("call, column, message", [
    ("hard_sigmoid(b, b, 0.5)", 28, "the alpha of hard_sigmoid must be a constant number"),
    ("hard_sigmoid(b, 0.2, sum(b))", 33, "the beta of hard_sigmoid must be a constant number"),
])
def test_hard_sigmoids_constants_must_be_numbers(call, column, message):
    d = error(cell(*DECLS, f"h' = b + {call}"))
    assert d.message == message
    assert at(d) == (7, column)


def test_hard_sigmoid_with_its_default_constants_is_hard_sigmoid():
    from rnndsl.core.ops import Op
    from rnndsl.ir.graph import lower
    text = cell(*DECLS, "h' = hard_sigmoid(b, 0.2, 0.5) + hard_sigmoid(b)"
                        " + hard_sigmoid(b, 1, -0.5)")
    G = lower(read_spec("<t>", text=text).pick()).graph
    found = sorted(n.attrs for n in G.nodes if n.op == Op.HARD_SIGMOID)
    assert found == [(), (1.0, -0.5)]


# ----------------------------------------------------------------------------- declarations

@pytest.mark.parametrize("line, column, message, hint", [
    ("input x[I]", 9, "'x' is already declared as an input",
     "each name is declared once; rename this input"),
    ("state x[H]", 9, "'x' is already declared as an input",
     "each name is declared once; rename this state"),
    ("state h[H]", 9, "'h' is already declared as a state",
     "each name is declared once; rename this state"),
    ("param h[H]", 9, "'h' is already declared as a state",
     "each name is declared once; rename this param"),
    ("param b[H]", 9, "'b' is already declared as a param",
     "each name is declared once; rename this param"),
    ("input U[H]", 9, "'U' is already declared as a param",
     "each name is declared once; rename this input"),
    ("param H[H]", 9, "'H' is already declared as a dim (a size)",
     "rename this param: dims and values share one namespace"),
    ("input I[H]", 9, "'I' is already declared as a dim (a size)",
     "rename this input: dims and values share one namespace"),
    ("param tanh[H]", 9, "'tanh' is a built-in function and cannot name a param", None),
    ("input sum[H]", 9, "'sum' is a built-in function and cannot name an input", None),
])
def test_duplicate_declarations(line, column, message, hint):
    d = error(cell(*DECLS, line, UPDATE))
    assert d.message == message
    assert at(d) == (7, column)
    assert d.hint == hint


def test_duplicate_dim():
    d = error(cell("dims H, I, H", *DECLS[1:], UPDATE))
    assert d.message == "dim 'H' is declared twice"
    assert at(d) == (2, 14)


def test_a_dim_declared_after_a_value_of_its_name():
    d = error(cell(*DECLS, UPDATE, "dims x"))
    assert d.message == "'x' is also declared as a dim (a size), on line 8"
    assert at(d) == (3, 9)


def test_duplicate_equation():
    d = error(cell(*DECLS, "z = W @ x", "z = b", "h' = z"))
    assert d.message == "'z' is already declared as an equation"
    assert at(d) == (8, 3)
    assert d.hint == "each name is declared once; rename this equation"


def test_an_equation_with_the_name_of_an_output():
    d = error(cell(*DECLS, UPDATE, "output y = h'", "y = b"))
    assert d.message == "'y' is already declared as an output"
    assert at(d) == (9, 3)


def test_an_output_with_the_name_of_a_value():
    d = error(cell(*DECLS, UPDATE, "output b = h'"))
    assert d.message == "'b' is already declared as a param"
    assert at(d) == (8, 10)
    assert d.hint == "each name is declared once; rename this output"


@pytest.mark.parametrize("decl, message, hint", [
    ("input z[I, I]", "input 'z' must be a vector, got [I, I]", "matrices can only be params"),
    ("input z[]", "input 'z' must be a vector, got []", "write z[1] for a single feature"),
    ("state z[H, H]", "state 'z' must be a vector, got [H, H]", "matrices can only be params"),
    ("state z[]", "state 'z' must be a vector, got []", "write z[1] for a single feature"),
    ("param z[H, H, H]", "param 'z' has 3 axes; params are scalars, vectors or matrices", None),
    ("param z[H - H]", "size 0 of 'z' is not positive", None),
    ("param z[I, 0 - H]", "size -H of 'z' is not positive", None),
])
def test_declared_shapes(decl, message, hint):
    d = error(cell(*DECLS, decl, UPDATE))
    assert d.message == message
    assert at(d) == (7, 10)
    assert d.hint == hint


def test_unknown_dim_in_a_shape():
    d = error(cell(*DECLS, "param P[H, K]", UPDATE))
    assert d.message == "unknown dim 'K' in the shape of 'P'"
    assert at(d) == (7, 10)
    assert d.hint == "declare it: dims H, I, K"


def test_unknown_dim_in_a_shape_with_a_hint():
    d = error(cell(*DECLS, "param P[HH]", UPDATE))
    assert d.message == "unknown dim 'HH' in the shape of 'P'"
    assert d.hint == "did you mean 'H'?"


# ----------------------------------------------------------------------------- initialisers

def test_unknown_initialiser():
    d = error(cell(*DECLS, "param P[H] ~ xavier", UPDATE))
    assert d.message == "unknown initialiser 'xavier'"
    assert at(d) == (7, 16)
    assert d.hint == "known: zeros, ones, constant, uniform, normal, glorot, orthogonal"


def test_unknown_initialiser_with_a_hint():
    d = error(cell(*DECLS, "param P[H, H] ~ glorit", UPDATE))
    assert d.message == "unknown initialiser 'glorit'"
    assert d.hint == "did you mean 'glorot'?"


@pytest.mark.parametrize("init, message", [
    ("uniform(1)", "'uniform' takes 2 arguments, got 1"),
    ("normal(0, 1, 2)", "'normal' takes 2 arguments, got 3"),
    ("zeros(1)", "'zeros' takes no arguments, got 1"),
    ("glorot(1)", "'glorot' takes no arguments, got 1"),
    ("constant()", "'constant' takes 1 argument, got 0"),
    ("constant", "'constant' takes 1 argument, got 0"),
    ("normal(0, -1)", "normal(mean, std) needs std >= 0"),
    ("uniform(1, -1)", "uniform(low, high) needs low <= high"),
    ("uniform(-1e308, 1e308)", "uniform(low, high): high - low is too large for a float"),
])
def test_initialiser_arguments(init, message):
    d = error(cell(*DECLS, f"param P[H, H] ~ {init}", UPDATE))
    assert d.message == message
    assert at(d) == (7, 19)


@pytest.mark.parametrize("decl, message", [
    ("param P[H] ~ glorot", "'glorot' initialises matrices, but 'P' is [H]"),
    ("param P ~ orthogonal", "'orthogonal' initialises matrices, but 'P' is []"),
])
def test_matrix_initialisers_on_a_vector_or_scalar(decl, message):
    d = error(cell(*DECLS, decl, UPDATE))
    assert d.message == message
    assert d.hint == "use zeros, uniform(a, b) or normal(mean, std) for vectors"


def test_a_state_starting_at_an_initialiser():
    d = error(cell(*DECLS, "state c[H] = zeros", UPDATE, "c' = c"))
    assert d.message == ("state 'c' starts at the initialiser 'zeros'; a state starts at a "
                         "number or at a param")
    assert at(d) == (7, 16)
    assert d.hint == "declare a param c0[H] ~ zeros and write state c[H] = c0"


def test_a_state_starting_at_a_param_of_the_wrong_shape():
    d = error(cell(*DECLS, "param c0[I]", "state c[H] = c0", UPDATE, "c' = c"))
    assert d.message == "state 'c' is [H] but its initial value 'c0' is [I]"
    assert at(d) == (8, 16)


def test_a_state_starting_at_an_unknown_param():
    d = error(cell(*DECLS, "param c_zero[H]", "state c[H] = c_zro", UPDATE, "c' = c + c_zero"))
    assert d.message == "unknown param 'c_zro' as the initial value of 'c'"
    assert at(d) == (8, 16)
    assert d.hint == "did you mean 'c_zero'?"


def test_a_state_starting_at_an_input():
    d = error(cell(*DECLS, "state c[I] = x", UPDATE, "c' = c"))
    assert d.message == ("state 'c' starts at 'x', which is an input; a state starts at a "
                         "number or at a param")
    assert at(d) == (7, 16)


def test_a_state_starting_at_a_param_is_fine():
    c = checked(cell(*DECLS, "param c0[H] ~ normal(0, 0.1)", "state c[H] = c0", UPDATE,
                     "c' = c * h'", "output v = V @ c'"))
    assert c.warnings == ()


def test_a_number_too_large_for_a_float():
    found = errors(cell(*DECLS, "param P ~ 1e999", "h' = tanh(W @ x) * 1e400 + P"))
    assert [(d.message, at(d)) for d in found] == [
        ("a number in the initialiser of 'P' is too large for a float", (7, 13)),
        ("the number 1e400 is too large for a float", (8, 22)),
    ]


def test_a_number_too_small_for_a_float():
    """1e-400 read as 0.0 and was taken silently, where 1e400 is refused."""
    d = error(cell(*DECLS, "h' = tanh(W @ x) + 1e-400 * h"))
    assert d.message == "the number 1e-400 is too small for a float: it would be 0"
    assert at(d) == (7, 22) and d.hint == "write 0 if zero is meant"
    assert checked(cell(*DECLS, "h' = tanh(W @ x) + 0.0e-400 * h + 1e-300 * h",
                        "output v = V @ h'")).name == "A"


# ----------------------------------------------------------------------------- updates

def test_a_state_never_updated():
    d = error(cell(*DECLS, "state c[H]", UPDATE))
    assert d.message == "state 'c' is never updated"
    assert at(d) == (7, 9)
    assert d.hint == "add an equation c' = ... (write c' = c to keep it)"


def test_a_state_updated_twice():
    d = error(cell(*DECLS, UPDATE, "h' = b"))
    assert d.message == "state 'h' is updated twice"
    assert at(d) == (8, 3)
    assert d.hint == "each state gets exactly one next value per step"


@pytest.mark.parametrize("target, message, hint", [
    ("x", "'x' is an input, only states have a next value", None),
    ("b", "'b' is a param, only states have a next value", None),
    ("q", "'q' is not a declared state", "declare it: state q[...]"),
])
def test_a_primed_target_that_is_no_state(target, message, hint):
    d = error(cell(*DECLS, UPDATE, f"{target}' = b"))
    assert d.message == message
    assert at(d) == (8, 3)
    assert d.hint == hint


@pytest.mark.parametrize("name, message", [
    ("x", "'x' is an input, not a state, so x' has no meaning"),
    ("V", "'V' is a param, not a state, so V' has no meaning"),
    ("q", "'q' is not a state, so q' has no meaning"),
])
def test_a_primed_reference_to_no_state(name, message):
    d = error(cell(*DECLS, UPDATE, f"output y = h' + {name}'"))
    assert d.message == message
    assert at(d) == (8, 19)
    assert d.hint == "only a state's next value is written with a prime"


def test_assignment_to_an_unprimed_state():
    d = error(cell(*DECLS, "h = b", UPDATE))
    assert d.message == "cannot assign to state 'h': it is the previous value"
    assert at(d) == (7, 3)
    assert d.hint == "write h' = ... for the next value"


@pytest.mark.parametrize("target, message", [
    ("x", "cannot assign to 'x': it is an input"),
    ("W", "cannot assign to 'W': it is a param"),
])
def test_assignment_to_an_input_or_param(target, message):
    d = error(cell(*DECLS, UPDATE, f"{target} = h'"))
    assert d.message == message
    assert at(d) == (8, 3)


CYCLE_HINT = ("within a step, a value cannot depend on itself; use a state's previous value "
              "(h, not h') to carry it to the next step")


@pytest.mark.parametrize("lines, message, place", [
    (("f = g * 2", "g = k + b", "k = f", "h' = tanh(f)"),
     "a cycle within one step: f uses g, g uses k, k uses f", (7, 3)),
    (("k = f", "g = k + b", "f = g * 2", "h' = tanh(f)"),
     "a cycle within one step: k uses f, f uses g, g uses k", (7, 3)),
    (("a = a + 1", "h' = tanh(a)"), "a cycle within one step: a uses a", (7, 3)),
    (("h' = tanh(h' + b)",), "a cycle within one step: h' uses h'", (7, 3)),
    (("a = h' * 2", "h' = tanh(a)"), "a cycle within one step: a uses h', h' uses a", (7, 3)),
    ((UPDATE, "output y = sum(y)"), "a cycle within one step: y uses y", (8, 10)),
])
def test_cycles_within_a_step(lines, message, place):
    d = error(cell(*DECLS, *lines))
    assert d.message == message
    assert at(d) == place
    assert d.hint == CYCLE_HINT


def test_a_state_read_before_its_equation_is_no_cycle():
    c = checked(cell(*DECLS, "y2 = V @ h'", UPDATE, "output y = y2 + x"))
    assert [d.name for d in c.definitions] == ["h", "y2", "y"]


# ----------------------------------------------------------------------------- shapes

def test_shape_mismatch_in_a_sum_names_both_shapes():
    d = error(cell(*DECLS, "h' = tanh(W @ x + x)"))
    assert d.message == "shapes do not match in '+': W @ x is [H] but x is [I]"
    assert at(d) == (7, 13)


def test_shape_mismatch_in_max():
    d = error(cell(*DECLS, "h' = max(b, x)"))
    assert d.message == "shapes do not match in 'max': b is [H] but x is [I]"
    assert at(d) == (7, 8)


def test_matmul_inner_dim_mismatch():
    d = error(cell(*DECLS, "h' = tanh(W @ h)"))
    assert d.message == ("W @ h: the matrix is [H, I] but the vector is [H]: the matrix's "
                         "I columns must match the vector's size H")
    assert at(d) == (7, 13)


@pytest.mark.parametrize("expr, column, message", [
    ("W * b", 8, "W is a matrix [H, I]; a matrix can only stand left of @"),
    ("b + U", 12, "U is a matrix [H, H]; a matrix can only stand left of @"),
    ("tanh(U)", 13, "U is a matrix [H, H]; a matrix can only stand left of @"),
    ("-U @ h", 9, "U is a matrix [H, H]; a matrix can only stand left of @"),
])
def test_a_matrix_used_elementwise(expr, column, message):
    d = error(cell(*DECLS, f"h' = {expr}"))
    assert d.message == message
    assert at(d) == (7, column)
    assert d.hint == "elementwise operations and functions take vectors and scalars"


@pytest.mark.parametrize("lines, line, name", [
    (["h' = tanh(b)", "output y = U"], 8, "y"),             # an output that is a param
    (["a = U", "h' = tanh(b)", "output z = a"], 7, "a"),   # a value that is one
])
def test_a_bare_matrix_as_a_value_or_output(lines, line, name):
    """No operation sees the matrix, so the check is on the definition itself (it once
    passed, and the backward failed on the (H, H) output's shape)."""
    d = error(cell(*DECLS, *lines))
    assert d.message == f"{name} is a matrix [H, H]; a matrix can only stand left of @"
    assert at(d)[0] == line


@pytest.mark.parametrize("expr, message", [
    ("b @ U", "b @ U: the left of @ must be a matrix, got a vector [H]"),
    ("2 @ b", "2 @ b: the left of @ must be a matrix, got a scalar"),
    ("U @ U", "U @ U: the right of @ must be a vector, got a matrix [H, H]"),
    ("U @ 2", "U @ 2: the right of @ must be a vector, got a scalar"),
])
def test_matvec_operands(expr, message):
    d = error(cell(*DECLS, f"h' = {expr}"))
    assert d.message == message
    assert at(d) == (7, 8)


@pytest.mark.parametrize("fn, message", [
    ("sum", "sum: a reduction over features needs a vector, got a scalar"),
    ("mean", "mean: a reduction over features needs a vector, got a scalar"),
    ("softmax", "softmax: this function needs a vector, got a scalar"),
    ("log_softmax", "log_softmax: this function needs a vector, got a scalar"),
])
def test_reductions_and_softmax_of_a_scalar(fn, message):
    d = error(cell(*DECLS, f"h' = b + {fn}(sum(b))"))
    assert d.message == message
    assert at(d) == (7, 12)


def test_concat_of_a_scalar():
    d = error(cell(*DECLS, "h' = concat(b, 1, x)[0:H]"))
    assert d.message == "concat joins vectors, but 1 is a scalar"
    assert at(d) == (7, 18)


def test_the_next_value_of_the_wrong_shape():
    d = error(cell(*DECLS, "h' = tanh(V @ h)"))
    assert d.message == "h' is [I] but state 'h' is [H]"
    assert at(d) == (7, 3)
    assert d.hint == "the next value must have the state's shape"


def test_a_scalar_next_value_for_a_vector_state():
    d = error(cell(*DECLS, "h' = sum(b)"))
    assert d.message == "h' is [] but state 'h' is [H]"


@pytest.mark.parametrize("slice_, message", [
    ("b[0:H + 1]", "slice [0:H + 1] of a vector of size H ends past the end"),
    ("b[1:H + 1]", "slice [1:H + 1] of a vector of size H ends past the end"),
    ("b[H:H]", "slice [H:H] of a vector of size H is empty"),
    ("b[2:1]", "slice [2:1] of a vector of size H is empty"),
    ("b[0 - 1:H - 1]", "slice [-1:H - 1] of a vector of size H starts before 0"),
    ("concat(b, b)[H:3 * H]", "slice [H:3 * H] of a vector of size 2 * H ends past the end"),
])
def test_a_slice_provably_out_of_range(slice_, message):
    d = error(cell(*DECLS, f"h' = {slice_}"))
    assert d.message == message
    assert at(d) == (7, 8)


def test_a_slice_that_fits_for_every_size():
    c = checked(cell(*DECLS, "z = concat(b, b)", "h' = z[H:] * z[:H] + z[1:H + 1]"))
    assert c.constraints == ()


def test_a_slice_of_a_matrix_or_a_scalar():
    assert error(cell(*DECLS, "h' = U[0:H] @ h")).message == (
        "only vectors can be sliced; this is [H, H]")
    assert error(cell(*DECLS, "h' = b * sum(b)[0:1]")).message == (
        "only vectors can be sliced; this is a scalar")


def test_a_slice_bound_with_an_unknown_dim():
    d = error(cell(*DECLS, "h' = concat(b, b)[K:K + H]"))
    assert d.message == "unknown dim 'K' in a slice bound"
    assert at(d) == (7, 8)
    assert d.hint == "declare it: dims H, I, K"


def test_a_non_constant_exponent():
    d = error(cell(*DECLS, "h' = b ** h"))
    assert d.message == "the exponent of ** must be a constant number"
    assert at(d) == (7, 13)
    assert d.hint == "for a variable exponent write exp(b * log(a))"


def test_constant_exponents():
    checked(cell(*DECLS, "h' = b ** 2 + b ** -0.5 + b ** (3) + b ** - -1"))


# ----------------------------------------------------------------------------- outputs

def test_output_of_an_unprimed_state():
    d = error(cell(*DECLS, UPDATE, "output h"))
    assert d.message == "output 'h' would be the previous value of state 'h'"
    assert at(d) == (8, 10)
    assert d.hint == "write output h' for the value this step computes"


def test_output_of_an_unknown_name():
    d = error(cell(*DECLS, UPDATE, "output hh"))
    assert d.message == "unknown name 'hh' in output"
    assert at(d) == (8, 10)
    assert d.hint == "did you mean 'h'?"


@pytest.mark.parametrize("line, message", [
    ("output x", "output 'x' is an input; outputs are computed values"),
    ("output b", "output 'b' is a param; outputs are computed values"),
    ("output q'", "'q' is not a state, so output q' has no meaning"),
])
def test_output_of_something_not_computed(line, message):
    d = error(cell(*DECLS, UPDATE, line))
    assert d.message == message
    assert at(d) == (8, 10)


@pytest.mark.parametrize("first, second", [
    ("output h'", "output h'"),
    ("output y = h'", "output y = b"),
    ("output h'", "output h = b"),
])
def test_output_declared_twice(first, second):
    d = error(cell(*DECLS, UPDATE, first, second))
    assert re.fullmatch(r"output '(h|y)' is declared twice", d.message)
    assert at(d) == (9, 10)


def test_an_intermediate_as_output():
    c = checked(cell(*DECLS, "g = V @ h'", UPDATE, "output g"))
    assert [(o.name, o.source) for o in c.outputs] == [("g", ("value", "g"))]


def test_a_cell_with_no_states_and_no_outputs():
    d = error(cell("dims H", "input x[H]", "y = x"))
    assert d.message == "cell 'A' has no states and no outputs"
    assert at(d) == (1, 1)


def test_a_cell_with_outputs_and_no_state_is_fine():
    checked(cell("dims H", "input x[H]", "output y = tanh(x)"))


# ----------------------------------------------------------------------------- many errors

def test_several_errors_are_all_reported_sorted_by_position():
    text = cell(
        "dims  H, I",                  # 2
        "input x[I]",                  # 3
        "state h[H], c[H]",            # 4: c is never updated
        "param W[H, I], b[K]",         # 5: unknown dim K
        "y = zz + x",                  # 6: unknown name, inferred last
        "h' = tanh(W @ x) + tahn(h)",  # 7: unknown function
        "output q",                    # 8: unknown output
        "output y2 = W * x",           # 9: matrix elementwise
    )
    found = errors(text)
    assert [(d.message, at(d)) for d in found] == [
        ("state 'c' is never updated", (4, 15)),
        ("unknown dim 'K' in the shape of 'b'", (5, 19)),
        ("unknown name 'zz'", (6, 7)),
        ("unknown function 'tahn'", (7, 22)),
        ("unknown name 'q' in output", (8, 10)),
        ("W is a matrix [H, I]; a matrix can only stand left of @", (9, 15)),
    ]


def test_a_failed_expression_does_not_cascade():
    d = error(cell(*DECLS, "a = qq + b", "a2 = a * 2", "h' = tanh(a2 + a)",
                   "output y = sum(a2) * h'", "output a"))
    assert d.message == "unknown name 'qq'"


def test_independent_errors_in_one_expression_are_all_reported():
    found = errors(cell(*DECLS, "a = qq + b", "h' = tanh(a + zz) * max(rr, a)"))
    assert [d.message for d in found] == [
        "unknown name 'qq'", "unknown name 'zz'", "unknown name 'rr'"]


def test_a_failed_declaration_does_not_cascade():
    found = errors(cell(*DECLS, "state c[K]", "param P[H, J]", "c' = c + P @ c",
                        UPDATE, "output y = c'", "output c'", "output z = P @ x"))
    assert [d.message for d in found] == [
        "unknown dim 'K' in the shape of 'c'", "unknown dim 'J' in the shape of 'P'"]


def test_a_failed_exponent_and_base_both_report():
    found = errors(cell(*DECLS, "h' = qq ** b"))
    assert [d.message for d in found] == [
        "unknown name 'qq'", "the exponent of ** must be a constant number"]


def test_rendered_check_error():
    text = cell(*DECLS, "h' = tanh(W @ x + U @ hh + b)")
    with pytest.raises(CheckError) as info:
        checked(text)
    assert info.value.render() == (
        "a.rnn:7:25: error: unknown name 'hh'\n"
        "    7 |   h' = tanh(W @ x + U @ hh + b)\n"
        "      |                         ^^\n"
        "  hint: did you mean 'h'?")


# ----------------------------------------------------------------------------- warnings

def test_warnings_for_unused_declarations_sorted_by_position():
    text = cell(
        "dims  H, I, K",               # 2: K unused
        "input x[I], u[I]",            # 3: u unused
        "state h[H], s[H]",            # 4: s never read
        "param W[H, I], P[H]",         # 5: P unused
        "t = W @ x",                   # 6: t never used
        "h' = tanh(W @ x)",
        "s' = h'",
        "output h'",
    )
    assert warnings(text) == [
        ("dim 'K' is never used", 2, 15),
        ("input 'u' is never used", 3, 15),
        ("state 'h' is never read, so it carries nothing from one step to the next", 4, 9),
        ("state 's' is never read, so it carries nothing from one step to the next", 4, 15),
        ("param 'P' is never used", 5, 18),
        ("'t' is computed but never used", 6, 3),
    ]


def test_no_warnings_for_a_cell_that_uses_everything():
    assert warnings(cell(*DECLS, "z = V @ h", UPDATE, "output y = z")) == []


def test_a_dim_used_only_in_a_slice_is_used():
    assert warnings(cell("dims H, K", "input x[H]", "state h[H]", "h' = x + h",
                         "output y = h'[0:K]")) == []


@pytest.mark.parametrize("path", sorted(
    (Path(__file__).resolve().parents[2] / "specs").rglob("*.rnn")),
    ids=lambda p: str(p.relative_to(p.parents[1] if p.parent.name == "torch" else p.parent)))
def test_every_spec_checks_without_warnings(path):
    assert read_spec(path).warnings == []


# ----------------------------------------------------------------------------- files

ELMAN = cell("dims H", "input x[H]", "state h[H]", "h' = tanh(x + h)", "output h'",
             name="Elman")


def test_use_of_a_missing_file(tmp_path):
    main = tmp_path / "main.rnn"
    main.write_text('# uses\n  use "lib/nope.rnn"\n' + ELMAN)
    with pytest.raises(CheckError) as info:
        read_spec(main)
    (d,) = info.value.diagnostics
    assert re.fullmatch(r"cannot use 'lib/nope\.rnn': no such file \(looked for .*nope\.rnn\)",
                        d.message)
    assert d.source.path == str(main)
    assert at(d) == (2, 3)
    assert d.hint == "paths in use are relative to this file"
    (tmp_path / "lib" / "nope.rnn").mkdir(parents=True)      # a folder of that name
    with pytest.raises(CheckError) as info:
        read_spec(main)
    assert info.value.diagnostics[0].message.startswith(
        "cannot use 'lib/nope.rnn': a folder, not a .rnn file (looked for ")


@pytest.mark.parametrize("path", ["notes.txt", "../secret", ".", "lib/elman.rnn.bak"])
def test_use_reads_only_rnn_files(tmp_path, path):
    """A file that is not a spec is neither parsed nor echoed in an error."""
    (tmp_path / "notes.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    main = tmp_path / "main.rnn"
    main.write_text(f'use "{path}"\n' + ELMAN)
    with pytest.raises(CheckError) as info:
        read_spec(main)
    (d,) = info.value.diagnostics
    assert d.message == f"cannot use '{path}': not a .rnn file" and at(d) == (1, 1)
    assert d.hint == "use reads spec files, named NAME.rnn"
    assert "root:" not in info.value.render()


def test_use_resolves_relative_to_the_using_file(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "elman.rnn").write_text(ELMAN)
    main = tmp_path / "main.rnn"
    main.write_text('use "lib/elman.rnn"\n' + cell(
        "dims H", "input x[H]", "output y = relu(x)", name="Head"))
    spec = read_spec(main)
    assert set(spec.cells) == {"Head"}
    assert set(spec.used) == {"Elman"}
    assert spec.pick("Elman").name == "Elman"


def test_one_file_used_by_two_paths_is_one_file(tmp_path):
    """A diamond of uses (`sub/s.rnn` uses `../elman.rnn`, main uses both) named one file
    two ways and was refused as two files defining Elman; two files that do are named."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "elman.rnn").write_text(ELMAN)
    (tmp_path / "sub" / "s.rnn").write_text('use "../elman.rnn"\n')
    main = tmp_path / "main.rnn"
    main.write_text('use "sub/s.rnn"\nuse "elman.rnn"\n' + cell(
        "dims H", "input x[H]", "output y = relu(x)", name="Head"))
    assert set(read_spec(main).used) == {"Elman"}
    (tmp_path / "other.rnn").write_text(ELMAN)
    main.write_text('use "sub/s.rnn"\nuse "other.rnn"\n' + cell(
        "dims H", "input x[H]", "output y = relu(x)", name="Head"))
    with pytest.raises(CheckError, match=r"two used files define a cell 'Elman': .*elman"
                                         r"\.rnn and .*other\.rnn"):
        read_spec(main)


def test_a_cycle_of_uses(tmp_path):
    (tmp_path / "a.rnn").write_text('use "b.rnn"\n' + ELMAN)
    (tmp_path / "b.rnn").write_text('\nuse "a.rnn"\n' + cell(
        "dims H", "input x[H]", "output y = x", name="B"))
    with pytest.raises(CheckError) as info:
        read_spec(tmp_path / "a.rnn")
    (d,) = info.value.diagnostics
    assert d.message == "'a.rnn' is already being read: a cycle of uses"
    assert d.source.path == str(tmp_path / "b.rnn")
    assert at(d) == (2, 1)


def test_a_chain_of_uses_too_deep_to_follow_is_placed(tmp_path):
    """Files using one another about 1,000 deep ran Python out of stack: an internal
    error (RecursionError in the AST builder). The chain stops, placed, at 100."""
    from rnndsl.lang.specfile import MAX_USE_DEPTH
    n = 300
    for i in range(n):
        (tmp_path / f"f{i}.rnn").write_text(
            (f'use "f{i + 1}.rnn"\n' if i + 1 < n else "")
            + cell("dims H", "input x[H]", "output y = x", name=f"C{i}"))
    with pytest.raises(CheckError) as info:
        read_spec(tmp_path / "f0.rnn")
    (d,) = info.value.diagnostics
    last = MAX_USE_DEPTH - 1
    assert d.message == (f"cannot use 'f{last + 1}.rnn': files use one another "
                         f"{MAX_USE_DEPTH} deep here, the most rnndsl follows")
    assert d.source.path == str(tmp_path / f"f{last}.rnn") and at(d) == (1, 1)
    assert f"C{n - 1}" in read_spec(tmp_path / f"f{n - MAX_USE_DEPTH}.rnn").used  # 99 deep


def test_a_used_file_that_is_no_regular_file_is_named_so(tmp_path):
    """`use "f.rnn"` where f.rnn is a FIFO said "no such file"."""
    import os
    os.mkfifo(tmp_path / "pipe.rnn")
    (tmp_path / "a.rnn").write_text('use "pipe.rnn"\n' + ELMAN)
    with pytest.raises(CheckError, match="cannot use 'pipe.rnn': not a regular file"):
        read_spec(tmp_path / "a.rnn")


def test_a_dropout_site_that_fails_adds_no_error_of_its_own(tmp_path):
    """dropout(v, p) of a value with an error (a layer given the wrong argument) added
    "unknown name 'dropout.1'" (a generated name, hinting at 'dropout.1.x') before the
    real error; of a matrix, two errors, one in generated names."""
    (tmp_path / "lstm.rnn").write_text(
        (Path(__file__).resolve().parents[2] / "specs" / "lstm.rnn").read_text())
    path = tmp_path / "q.rnn"
    path.write_text('use "lstm.rnn"\n' + cell("dims H, I", "input x[I]",
                                               "layer l = LSTM(I = H, H = H)",
                                               "output y = dropout(l(x), 0.2)", name="C"))
    with pytest.raises(CheckError) as info:
        read_spec(path)
    assert [d.message for d in info.value.diagnostics] == [
        "input 'x' of layer 'l' (LSTM) is [H], but the argument is [I]"]
    (d,) = errors(cell("dims H", "input x[H]", "state h[H]", "param W[H, H]",
                       "h' = dropout(W, 0.1) + 0 * h", "output h'"))
    assert d.message == "dropout needs a vector, got a matrix [H, H]" and at(d) == (6, 8)


def test_a_cell_called_as_a_function_is_named_a_cell(tmp_path):
    """`output z = Elman(x)` said "unknown function 'Elman'", hinting at 'mean'."""
    (tmp_path / "e.rnn").write_text(ELMAN)
    path = tmp_path / "q.rnn"
    path.write_text('use "e.rnn"\n' + cell("dims H", "input x[H]", "output z = Elman(x)",
                                            name="C"))
    with pytest.raises(CheckError) as info:
        read_spec(path)
    (d,) = info.value.diagnostics
    assert d.message == "'Elman' is a cell, not a function: a cell runs as a layer"
    assert d.hint.startswith("declare one, `layer l = Elman(...)`")


def test_a_token_inputs_misuse_is_named_as_written(tmp_path):
    """`x * 2` on a token input said it "feeds mul(...)", an operation's inner name."""
    text = cell("dims V, H", "input token x[V]", "state h[H]", "param W[H, V]",
                "h' = tanh(W @ (x * 2) + h)", "output h'", name="T")
    with pytest.raises(CheckError, match="token input 'x' feeds '\\*'; a token input can "
                                         "only be multiplied by a matrix"):
        rnndsl.load_text(text, target="interp")


BROKEN_SUB = cell("dims I, H", "input x[I]", "state h[H]", "param W[H, I]",
                  "h' = tanh(W @ x + q)", "output h'", name="Sub")
USES_SUB = cell("dims I, H", "input x[I]", "layer l = Sub(I = I, H = H)", "output y = l(x)",
                name="Top")


@pytest.mark.parametrize("where", ["used file", "same file"])
def test_a_layer_of_a_cell_that_failed_adds_no_error_of_its_own(tmp_path, where):
    """A cell with an error, used as a layer: its error was followed by "unknown cell
    'Sub'" at the layer, a second error for the same fault, which pointed away from it."""
    if where == "used file":
        (tmp_path / "sub.rnn").write_text(BROKEN_SUB)
        (tmp_path / "top.rnn").write_text('use "sub.rnn"\n' + USES_SUB)
    else:
        (tmp_path / "top.rnn").write_text(BROKEN_SUB + USES_SUB)
    with pytest.raises(CheckError) as info:
        read_spec(tmp_path / "top.rnn")
    (d,) = info.value.diagnostics
    assert d.message == "unknown name 'q'"
    assert d.source.path.endswith("sub.rnn" if where == "used file" else "top.rnn")
    # a misspelt cell is still unknown, and named
    (tmp_path / "top.rnn").write_text(
        BROKEN_SUB + USES_SUB.replace("= Sub(", "= Subb(").replace("Top", "Top2"))
    with pytest.raises(CheckError) as info:
        read_spec(tmp_path / "top.rnn")
    assert [d.message for d in info.value.diagnostics] == ["unknown name 'q'",
                                                          "unknown cell 'Subb'"]


def test_a_file_that_uses_itself(tmp_path):
    (tmp_path / "a.rnn").write_text('use "./a.rnn"\n' + ELMAN)
    with pytest.raises(CheckError, match="'./a.rnn' is already being read: a cycle of uses"):
        read_spec(tmp_path / "a.rnn")


def test_a_cell_name_defined_twice_in_one_file(tmp_path):
    path = tmp_path / "two.rnn"
    path.write_text(ELMAN + "\n" + ELMAN)
    with pytest.raises(CheckError) as info:
        read_spec(path)
    (d,) = info.value.diagnostics
    assert d.message == "cell 'Elman' is already defined in this file"
    assert at(d) == (9, 6)


def test_a_cell_name_defined_in_a_used_file(tmp_path):
    (tmp_path / "lib.rnn").write_text(ELMAN)
    path = tmp_path / "main.rnn"
    path.write_text('use "lib.rnn"\n' + ELMAN)
    with pytest.raises(CheckError) as info:
        read_spec(path)
    (d,) = info.value.diagnostics
    assert d.message == f"cell 'Elman' is already defined in {tmp_path / 'lib.rnn'}"
    assert at(d) == (2, 6)


def test_errors_in_a_used_file_point_into_that_file(tmp_path):
    (tmp_path / "lib.rnn").write_text(cell("dims H", "input x[H]", "state h[H]", "h' = hh + x"))
    path = tmp_path / "main.rnn"
    path.write_text('use "lib.rnn"\n' + ELMAN)
    with pytest.raises(CheckError) as info:
        read_spec(path)
    (d,) = info.value.diagnostics
    assert (d.source.path, d.message, at(d)) == (
        str(tmp_path / "lib.rnn"), "unknown name 'hh'", (5, 8))


def test_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.rnn"
    path.write_bytes("# caf\xe9\n".encode("latin-1") + ELMAN.encode())
    with pytest.raises(SpecFileError, match=r"latin1\.rnn:1:6: not UTF-8 text \(invalid "
                                            r"continuation byte at byte 5\)"):
        read_spec(path)
    # the place is a line and a column of characters, after multi-byte ones too
    path.write_bytes("# caf\u00e9\n# \u00e9\u00e9 x".encode() + b"\xff\n" + ELMAN.encode())
    with pytest.raises(SpecFileError, match=r"latin1\.rnn:2:7: not UTF-8 text \(invalid "
                                            r"start byte at byte 16\)"):
        read_spec(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(SpecFileError, match=r"nope\.rnn: no such file$"):
        read_spec(tmp_path / "nope.rnn")


# ----------------------------------------------------------------------------- bind time

SLICED = cell("dims H, K", "input x[H]", "state h[H]", "h' = tanh(x + h)",
              "output y = h'[0:K]", name="Sliced")


def test_a_slice_that_depends_on_the_dims_passes_the_checker():
    c = checked(SLICED)
    # 0 <= 0 and K >= 1 hold for every binding; K <= H waits for the dims
    assert [(str(k.size), k.minimum) for k in c.constraints] == [("H - K", 0)]


def test_a_slice_that_depends_on_the_dims_is_checked_when_they_are_bound():
    Sliced = rnndsl.load_text(SLICED, target="interp", path="sliced.rnn")
    run = Sliced(H=3, K=2, dtype=np.float64).forward(np.ones((2, 1, 3)))
    assert run.outputs["y"].shape == (2, 1, 2)
    with pytest.raises(BindError, match=re.escape(
            "slice [0:K] of a vector of size H ends past the end (sliced.rnn:6:14)")):
        Sliced(H=3, K=5)


# ----------------------------------------------------------------------------- fuzzing

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.checkable_cells())
def test_the_checker_never_crashes(text):
    """Random equations over fixed declarations: a checked cell or a CheckError, whose
    errors are sorted and each placed inside the text."""
    try:
        c = checked(text)
    except CheckError as exc:
        places = [at(d) for d in exc.diagnostics]
        assert places == sorted(places)
        assert all(1 <= line <= text.count("\n") for line, _ in places)
        exc.render()
    else:
        assert {d.name for d in c.definitions if d.kind == "next"} == {"h", "c"}


def test_a_cell_needs_an_input():
    text = "cell C {\n  dims H\n  state h[H]\n  h' = tanh(h)\n}\n"
    d = error(text)
    assert d.message == "cell 'C' has no input" and at(d) == (1, 6)
    assert d.hint.startswith("a cell runs over an input sequence")


@pytest.mark.parametrize("word", ["output", "state", "input", "param", "dims", "cell", "use"])
def test_keywords_cannot_name_values(word):
    text = f"cell C {{\n  dims H\n  input x[H]\n  param {word}[H]\n  h = x\n  output h\n}}\n"
    d = error(text)
    assert d.message == f"'{word}' is a keyword of the language and cannot name a param"


@pytest.mark.parametrize("name", ["None", "class", "np", "__name__", "__init__"])
def test_cell_names_must_make_python_classes(name):
    text = f"cell {name} {{\n  dims H\n  input x[H]\n  output y = tanh(x)\n}}\n"
    d = error(text)
    assert d.message.startswith(f"'{name}' cannot name a cell")


@pytest.mark.parametrize("name", ["range", "max", "len", "float"])
def test_cell_names_must_not_hide_python_builtins(name):
    """The generated module's kernels call `range(T)` and `max(...)`: a class named so
    passed the checks and the build, and its kernels then failed to type in Numba."""
    text = f"cell {name} {{\n  dims H\n  input x[H]\n  output y = softmax(x)\n}}\n"
    d = error(text)
    assert d.message == (f"'{name}' cannot name a cell: it is one of Python's builtins, "
                         "which the generated module's code uses")
    assert at(d) == (1, 6)


def test_a_size_that_can_be_zero_is_checked_when_bound():
    import numpy as np
    import rnndsl
    from rnndsl.core.errors import BindError
    text = "cell C {\n  dims H\n  input x[H]\n  param w[H - 1]\n  output y = sum(x) + sum(w)\n}\n"
    C = rnndsl.load_text(text, target="interp")
    C(H=2, dtype=np.float64)
    with pytest.raises(BindError, match=r"with H=1: size H - 1 of 'w' is not positive"):
        C(H=1, dtype=np.float64)


def test_layer_names_that_generated_code_would_spell_alike_are_placed():
    text = ("cell In {\n  dims H\n  input x[H]\n  param _b[H], b[H]\n  output y = x * _b + b\n}\n"
            "cell Out {\n  dims H\n  input x[H]\n  layer a_ = In(H = H)\n"
            "  layer a = In(H = H)\n  output y = a_(x) + a(x)\n}\n")
    with pytest.raises(CheckError) as info:
        read_spec("alike.rnn", text=text)
    shown = info.value.render()
    assert "alike.rnn:11:3: error: 'a_.b' and 'a._b' would be one name in generated code" \
        in shown


@pytest.mark.parametrize("name", ["dtype", "seed", "direction", "self", "cls"])
def test_a_dim_cannot_take_the_name_of_a_cells_own_argument(name):
    """Cell(dtype=..., seed=..., direction=..., **dims): such a dim could never be given."""
    text = (f"cell C {{\n  dims {name}\n  input x[{name}]\n  state h[{name}]\n"
            f"  h' = tanh(x + h)\n  output h'\n}}\n")
    d = error(text)                  # the only error: the dim's uses add none
    assert d.message.startswith(f"'{name}' cannot name a dim: a cell takes its dims as "
                                "keyword arguments beside its own")
    assert (d.span.line, d.span.column) == (2, 8)


def test_a_cell_name_is_at_most_64_characters():
    name = "C" + "x" * 64
    text = f"cell {name} {{\n  dims H\n  input x[H]\n  output y = tanh(x)\n}}\n"
    d = error(text)
    assert d.message.startswith("a cell name of 65 characters is too long: at most 64")
    assert checked(text.replace(name, name[:64])).name == name[:64]


def test_a_layer_given_a_next_value_is_placed_not_an_internal_error():
    """`l' = x` for a layer l: it was a KeyError inside the checker (rnndsl check's
    'internal error', status 3)."""
    text = ("cell In {\n  dims H\n  input x[H]\n  state h[H]\n  h' = tanh(x + h)\n"
            "  output h'\n}\n"
            "cell Out {\n  dims H\n  input x[H]\n  layer l = In(H = H)\n  output y = l(x)\n"
            "  l' = x\n}\n")
    with pytest.raises(CheckError) as info:
        read_spec("layer_next.rnn", text=text)
    assert "layer_next.rnn:13:3: error: 'l' is a layer, only states have a next value" \
        in info.value.render()


@pytest.mark.parametrize("decls, message", [
    ("input once x[H]\n  state h[H]\n  h' = tanh(x + h)\n  output h'",
     "cell 'In' cannot be a layer: its input 'x' is given once a sequence, and a layer is "
     "called at every step with that step's argument"),
    ("input x[H]\n  state h[H]\n  h' = tanh(x + h)\n  final y = h'",
     "cell 'In' cannot be a layer: its output 'y' is final, one value a sequence, and a "
     "layer's outputs are read at every step"),
])
def test_a_step_layer_of_a_cell_with_once_or_final_is_refused(decls, message):
    """Inlined as a step layer, the `once` input was fed the argument at every step and
    the `final` output read at every step: accepted without a word, meaning otherwise."""
    text = (f"cell In {{\n  dims H\n  {decls}\n}}\n"
            "cell Out {\n  dims H\n  input x[H]\n  layer l = In(H = H)\n  output y = l(x)\n}\n")
    with pytest.raises(CheckError) as info:
        read_spec("step_layer.rnn", text=text)
    assert f"step_layer.rnn:11:13: error: {message}" in info.value.render()


def test_an_unknown_dim_that_is_a_keyword_gets_no_hint_to_declare_it():
    """`dims input, H` is refused at `input`; its use in a shape hinted 'declare it:
    dims H, input', which the first error says cannot be."""
    text = "cell C {\n  dims input, H\n  input x[input]\n  output y = x\n}\n"
    unknown = [d for d in errors(text) if d.message.startswith("unknown dim 'input'")]
    assert len(unknown) == 1 and unknown[0].hint is None


@pytest.mark.parametrize("name", ["reverse", "bidirectional"])
def test_a_direction_word_cannot_name_a_cell(name):
    """Such a cell checked, but no layer could use it (`layer l = reverse(...)` failed
    to parse, far from the cause)."""
    with pytest.raises(CheckError, match=f"'{name}' cannot name a cell: a layer of it "
                                         "would read as the direction"):
        checked(cell("dims H", "input x[H]", "output y = x", name=name))



@pytest.mark.parametrize("decls, what", [
    ("state h[H]\n  param W[H, I], W_reverse[H, H]\n  h' = tanh(W @ x + W_reverse @ h)",
     "param W_reverse"),
    ("state h[H], h_reverse[H]\n  param W[H, I]\n  h' = tanh(W @ x + h)\n"
     "  h_reverse' = tanh(h_reverse)", "state h_reverse"),
])
def test_a_bidirectional_layer_cannot_name_two_arrays_alike(decls, what):
    """The reverse direction's copy of W is l.W_reverse: a cell that already has a
    W_reverse ran with the two tied into one array (and a final state lost)."""
    text = ("cell Clash {\n  dims I, H\n  input x[I]\n  " + decls + "\n  output h'\n}\n"
            "cell Net {\n  dims I, H\n  input x[I]\n"
            "  layer l = bidirectional Clash(I = I, H = H)\n  output y = l(x)\n}\n")
    from rnndsl.lang.specfile import read_spec
    with pytest.raises(CheckError) as info:
        read_spec("net.rnn", text)
    found = [d for d in info.value.diagnostics if "cannot be a bidirectional layer" in d.message]
    assert len(found) == 1
    assert found[0].message.endswith(f"its {what} would share its name with the reverse "
                                     f"direction's copy of {what[:-8]}")
    assert found[0].span.line == text.split("\n").index(
        "  layer l = bidirectional Clash(I = I, H = H)") + 1
