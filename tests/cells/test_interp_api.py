"""The Python API contract of DESIGN.md, held by the interpreter (target="interp").

    cell = Cell(I=.., H=.., dtype=np.float32, seed=0)    # dims bound, params initialised
    run = cell.forward(x, state={...})                   # x: (T, B, I); state optional
    g = cell.backward(run, d_outputs={...}, d_state={...})

Every array that crosses the API is checked, and every mistake ends in a `BindError` (or a
`TargetError`) whose message names what was expected; the key phrases are pinned here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.core.errors import BindError, TargetError

SPECS = Path(__file__).resolve().parents[2] / "specs"
T, B = 5, 2

# A learned initial state (h = h0, a param), a constant one (c = 0.5), a scalar output.
INIT_TEXT = """
cell Inits {
  dims I, H
  input x[I]
  state h[H] = h0, c[H] = 0.5
  param W[H, I], U[H, H], h0[H] ~ uniform(-1, 1)
  c' = tanh(W @ x + U @ h) * c
  h' = tanh(c' + h)
  output h'
  output energy = sum(h' * h')
}
"""


def load(name: str):
    return rnndsl.load(SPECS / f"{name}.rnn", target="interp")


@pytest.fixture(scope="module")
def Elman():
    return load("elman")


@pytest.fixture(scope="module")
def LSTM():
    return load("lstm")


@pytest.fixture(scope="module")
def TwoStreams():
    return load("two_streams")


@pytest.fixture(scope="module")
def Inits():
    return rnndsl.load_text(INIT_TEXT, target="interp")


@pytest.fixture
def elman(Elman):
    return Elman(I=3, H=4, O=2, dtype=np.float64, seed=0)


def normal(*shape, dtype=np.float64, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ------------------------------------------------------------------ params
def test_params_are_named_and_shaped_as_the_spec(LSTM):
    cell = LSTM(I=3, H=4, dtype=np.float64)
    assert list(cell.params) == [d.name for d in LSTM.spec.params]
    for gate in "ifgo":
        assert cell.params[f"W_{gate}"].shape == (4, 3)
        assert cell.params[f"U_{gate}"].shape == (4, 4)
        assert cell.params[f"b_{gate}"].shape == (4,)
    assert all(p.dtype == np.float64 for p in cell.params.values())


def test_final_states_come_in_the_specs_order(LSTM):
    """The interpreter gave run.state in evaluation order (c, h for lstm.rnn), the
    compiled targets in the spec's (h, c): a loop over the dict drew its cotangents in
    an order that depended on the target."""
    run = LSTM(I=2, H=3).forward(np.ones((2, 1, 2), np.float32))
    assert list(run.state) == [d.name for d in LSTM.spec.states] == ["h", "c"]


def test_params_follow_their_initialisers(Elman, TwoStreams):
    cell = Elman(I=3, H=5, O=2, dtype=np.float64, seed=3)
    W_hh = cell.params["W_hh"]                           # ~ orthogonal
    np.testing.assert_allclose(W_hh.T @ W_hh, np.eye(5), atol=1e-12)
    limit = np.sqrt(6 / (5 + 3))                         # W_xh ~ glorot, [H, I]
    assert np.all(np.abs(cell.params["W_xh"]) <= limit)
    assert np.all(cell.params["b_h"] == 0) and np.all(cell.params["b_y"] == 0)
    two = TwoStreams(A=2, G=3, H=4, K=5, dtype=np.float64)
    assert two.params["alpha"].shape == () and two.params["alpha"] == 0.9   # alpha ~ 0.9
    assert two.params["W_in"].shape == (8, 5)            # [2 * H, A + G]


def test_a_param_written_in_place_changes_forward(elman):
    x = normal(T, B, 3)
    before = elman.forward(x).outputs["y"]
    elman.params["W_hy"][...] = 0.0
    elman.params["b_y"] += 1.0
    after = elman.forward(x).outputs["y"]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, 1 / (1 + np.exp(-1.0)))   # sigmoid(0 @ h + 1)


def test_a_param_replaced_by_a_wrong_array_is_reported(elman):
    elman.params["W_hh"] = np.zeros((3, 3))
    with pytest.raises(BindError, match=r"param W_hh has shape \(3, 3\); expected \(4, 4\)"):
        elman.forward(normal(T, B, 3))
    elman.params["W_hh"] = np.zeros((4, 4), np.float32)
    with pytest.raises(BindError, match="param W_hh is float32 but the cell is float64"):
        elman.forward(normal(T, B, 3))


def test_a_misspelt_param_is_named_not_ignored(elman):
    elman.params["W_hh_typo"] = np.zeros((4, 4))
    with pytest.raises(BindError, match="Elman has no param W_hh_typo; its params are: "):
        elman.forward(normal(T, B, 3))


@pytest.mark.parametrize("seed", [-1, "a", 1.5, True])
def test_a_bad_seed_is_a_bind_error(LSTM, seed):
    with pytest.raises(BindError, match="seed must be a non-negative integer or None"):
        LSTM(I=3, H=4, seed=seed)


def test_dims_too_large_to_allocate_are_a_bind_error(LSTM):
    with pytest.raises(BindError, match=r"LSTM\(I=100000000000000000000, H=4\): its params "
                                        r"would take .* GiB"):
        LSTM(I=10**20, H=4)


def test_seed_reproducibility(LSTM):
    a, b = LSTM(I=3, H=4, seed=7), LSTM(I=3, H=4, seed=7)
    c = LSTM(I=3, H=4, seed=8)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["W_i"], c.params["W_i"])
    assert not np.array_equal(a.params["U_f"], c.params["U_f"])
    x = normal(T, B, 3, dtype=np.float32)
    np.testing.assert_array_equal(a.forward(x).outputs["h"], b.forward(x).outputs["h"])


# ------------------------------------------------------------------ forward
def test_outputs_and_final_state_shapes(Elman):
    cell = Elman(I=3, H=4, O=2, dtype=np.float64)
    run = cell.forward(normal(T, B, 3))
    assert run.outputs["y"].shape == (T, B, 2)
    assert run.outputs["h"].shape == (T, B, 4)
    assert run.state["h"].shape == (B, 4)
    assert run.T == T and run.B == B
    np.testing.assert_array_equal(run.state["h"], run.outputs["h"][-1])


def test_forward_matches_the_equations_written_out(Elman):
    """The mirror image: Elman's equations in NumPy, step by step."""
    cell = Elman(I=3, H=4, O=2, dtype=np.float64, seed=2)
    p = {k: v + 0.1 for k, v in cell.params.items()}   # nonzero biases
    cell.params.update(p)
    x, h = normal(T, B, 3), normal(B, 4, seed=5)
    run = cell.forward(x, state={"h": h})
    for t in range(T):
        h = np.tanh(h @ p["W_hh"].T + x[t] @ p["W_xh"].T + p["b_h"])
        y = 1 / (1 + np.exp(-(h @ p["W_hy"].T + p["b_y"])))
        np.testing.assert_allclose(run.outputs["h"][t], h, rtol=1e-13)
        np.testing.assert_allclose(run.outputs["y"][t], y, rtol=1e-13)


def test_scalar_outputs_are_T_by_B(Inits):
    cell = Inits(I=3, H=4, dtype=np.float64)
    run = cell.forward(normal(T, B, 3))
    assert run.outputs["energy"].shape == (T, B)
    np.testing.assert_allclose(run.outputs["energy"], (run.outputs["h"] ** 2).sum(axis=-1))
    g = cell.backward(run, d_outputs={"energy": np.ones((T, B))})
    assert g.params["W"].shape == (4, 3)
    with pytest.raises(BindError, match=r"d_outputs\['energy'\] has shape \(5, 2, 1\); "
                                        r"expected \(5, 2\) = \(T, B\)"):
        cell.backward(run, d_outputs={"energy": np.ones((T, B, 1))})


def test_state_is_optional_and_starts_at_zero(elman):
    x = normal(T, B, 3)
    np.testing.assert_array_equal(elman.forward(x).outputs["y"],
                                  elman.forward(x, state={"h": np.zeros((B, 4))}).outputs["y"])
    assert not np.allclose(elman.forward(x).outputs["y"],
                           elman.forward(x, state={"h": np.ones((B, 4))}).outputs["y"])


def test_declared_initial_values_are_honoured(Inits, TwoStreams):
    cell = Inits(I=3, H=4, dtype=np.float64)
    x = normal(T, B, 3)
    implicit = cell.forward(x).outputs["h"]
    explicit = cell.forward(x, state={"h": np.tile(cell.params["h0"], (B, 1)),
                                      "c": np.full((B, 4), 0.5)}).outputs["h"]
    np.testing.assert_array_equal(implicit, explicit)
    only_h = cell.forward(x, state={"h": np.tile(cell.params["h0"], (B, 1))}).outputs["h"]
    np.testing.assert_array_equal(only_h, implicit)       # c still starts at 0.5
    cell.params["h0"][...] = 0.0                           # and h follows its param
    assert not np.allclose(cell.forward(x).outputs["h"], implicit)

    two = TwoStreams(A=2, G=1, H=3, K=2, dtype=np.float64)
    xs = {"a": normal(T, B, 2), "g": normal(T, B, 1)}
    np.testing.assert_array_equal(
        two.forward(xs).outputs["probs"],
        two.forward(xs, state={"slow": np.full((B, 3), 0.5)}).outputs["probs"])


def test_forward_leaves_its_arguments_alone(elman):
    x, h = normal(T, B, 3), normal(B, 4)
    x0, h0 = x.copy(), h.copy()
    run = elman.forward(x, state={"h": h})
    elman.backward(run, d_outputs={"y": np.ones((T, B, 2))})
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(h, h0)


# ------------------------------------------------------------------ backward
def _loss(cell, x, state, d_out, d_st):
    run = cell.forward(x, state=state)
    total = sum(np.sum(run.outputs[n] * d) for n, d in d_out.items())
    return total + sum(np.sum(run.state[n] * d) for n, d in d_st.items())


def test_learned_initial_state_gradient_goes_to_its_param(Inits):
    cell = Inits(I=3, H=4, dtype=np.float64, seed=1)
    x = normal(T, B, 3)
    run = cell.forward(x)
    d_out = {"h": normal(T, B, 4, seed=2), "energy": normal(T, B, seed=3)}
    g = cell.backward(run, d_outputs=d_out)
    assert g.state["h"].shape == (B, 4)
    assert np.abs(g.state["h"]).max() > 1e-3
    # h0 is read nowhere else: its gradient is the initial state's, summed over the batch
    np.testing.assert_allclose(g.params["h0"], g.state["h"].sum(axis=0), rtol=1e-12)
    v = normal(4, seed=4)
    p = cell.params["h0"]
    base = p.copy()
    eps = 1e-6
    p[...] = base + eps * v
    plus = _loss(cell, x, None, d_out, {})
    p[...] = base - eps * v
    minus = _loss(cell, x, None, d_out, {})
    p[...] = base
    assert abs((plus - minus) / (2 * eps) - np.sum(g.params["h0"] * v)) < 1e-7


def test_an_explicit_state_cuts_the_path_to_its_param(Inits):
    cell = Inits(I=3, H=4, dtype=np.float64)
    run = cell.forward(normal(T, B, 3), state={"h": normal(B, 4)})
    g = cell.backward(run, d_outputs={"h": normal(T, B, 4)})
    np.testing.assert_array_equal(g.params["h0"], 0.0)
    assert np.abs(g.state["h"]).max() > 1e-3


def test_backward_shapes_and_dtypes(LSTM):
    cell = LSTM(I=3, H=4, dtype=np.float64)
    run = cell.forward(normal(T, B, 3))
    g = cell.backward(run, d_outputs={"h": normal(T, B, 4)})
    assert set(g.params) == set(cell.params)
    for name, value in g.params.items():
        assert value.shape == cell.params[name].shape and value.dtype == np.float64
    assert g.inputs["x"].shape == (T, B, 3)
    assert g.state["h"].shape == g.state["c"].shape == (B, 4)


def test_backward_with_outputs_only_state_only_or_both(LSTM):
    cell = LSTM(I=3, H=4, dtype=np.float64, seed=1)
    run = cell.forward(normal(T, B, 3), state={"h": normal(B, 4), "c": normal(B, 4, seed=9)})
    dY, dc, dh = normal(T, B, 4, seed=2), normal(B, 4, seed=3), normal(B, 4, seed=4)
    outs = cell.backward(run, d_outputs={"h": dY})
    states = cell.backward(run, d_state={"c": dc, "h": dh})
    both = cell.backward(run, d_outputs={"h": dY}, d_state={"c": dc, "h": dh})
    none = cell.backward(run)
    zeros = cell.backward(run, d_outputs={"h": dY}, d_state={"c": np.zeros((B, 4))})
    for part in ("params", "inputs", "state"):
        for name, value in getattr(both, part).items():
            a, b = getattr(outs, part)[name], getattr(states, part)[name]
            np.testing.assert_allclose(value, a + b, rtol=1e-10, atol=1e-13)
            assert np.abs(a).max() > 0 and np.abs(b).max() > 0
            np.testing.assert_array_equal(getattr(none, part)[name], 0.0)
            np.testing.assert_array_equal(getattr(zeros, part)[name], a)


def test_backward_can_run_twice_on_one_run(elman):
    run = elman.forward(normal(T, B, 3))
    dY = normal(T, B, 2)
    first = elman.backward(run, d_outputs={"y": dY})
    second = elman.backward(run, d_outputs={"y": dY})
    for name in first.params:
        np.testing.assert_array_equal(first.params[name], second.params[name])


def test_an_omitted_output_gets_no_cotangent(elman):
    """Elman has outputs y and h; giving only y equals giving h zeros."""
    run = elman.forward(normal(T, B, 3))
    dY = normal(T, B, 2)
    a = elman.backward(run, d_outputs={"y": dY})
    b = elman.backward(run, d_outputs={"y": dY, "h": np.zeros((T, B, 4))})
    np.testing.assert_array_equal(a.params["W_xh"], b.params["W_xh"])


def test_T_equal_one(LSTM):
    cell = LSTM(I=3, H=4, dtype=np.float64)
    run = cell.forward(normal(1, B, 3))
    assert run.outputs["h"].shape == (1, B, 4)
    g = cell.backward(run, d_state={"c": normal(B, 4)})
    assert g.inputs["x"].shape == (1, B, 3)


def test_several_inputs_as_a_dict(TwoStreams):
    cell = TwoStreams(A=2, G=3, H=4, K=5, dtype=np.float64)
    run = cell.forward({"a": normal(T, B, 2), "g": normal(T, B, 3, seed=2)})
    assert run.outputs["probs"].shape == (T, B, 5)
    assert run.outputs["forecast"].shape == (T, B, 2)
    np.testing.assert_allclose(run.outputs["probs"].sum(axis=-1), 1.0)
    g = cell.backward(run, d_outputs={"forecast": normal(T, B, 2)})
    assert g.inputs["a"].shape == (T, B, 2) and g.inputs["g"].shape == (T, B, 3)
    assert np.abs(g.inputs["g"]).max() > 0
    assert set(g.state) == {"fast", "slow"}


# ------------------------------------------------------------------ dtypes
def test_float32_stays_float32_end_to_end(LSTM, Inits):
    for Cell, dims, outs in ((LSTM, dict(I=3, H=4), {"h": (4,)}),
                             (Inits, dict(I=3, H=4), {"h": (4,), "energy": ()})):
        cell = Cell(dtype=np.float32, **dims)
        assert all(p.dtype == np.float32 for p in cell.params.values())
        run = cell.forward(normal(T, B, 3, dtype=np.float32))
        assert all(y.dtype == np.float32 for y in run.outputs.values())
        assert all(s.dtype == np.float32 for s in run.state.values())
        g = cell.backward(run, d_outputs={n: normal(T, B, *s, dtype=np.float32)
                                          for n, s in outs.items()})
        for part in (g.params, g.inputs, g.state):
            assert all(v.dtype == np.float32 for v in part.values()), part


@pytest.mark.parametrize("name,dims", [("lstm", dict(I=3, H=4)), ("gru", dict(I=3, H=4)),
                                       ("layernorm_lstm", dict(I=3, H=4)),
                                       ("two_streams", dict(A=2, G=3, H=4, K=5))])
def test_float32_matches_float64(name, dims):
    Cell = load(name)
    c32, c64 = Cell(dtype=np.float32, seed=0, **dims), Cell(dtype=np.float64, seed=0, **dims)
    for key in c64.params:
        c64.params[key][...] = c32.params[key]               # the same values exactly
    spec = Cell.spec
    sizes = {d.name: tuple(s.evaluate(c64.dims) for s in d.type.shape) for d in spec.inputs}
    x64 = {n: normal(T, B, *s, seed=i) for i, (n, s) in enumerate(sizes.items())}
    x32 = {n: v.astype(np.float32) for n, v in x64.items()}
    r32, r64 = c32.forward(x32), c64.forward(x64)
    for n in r64.outputs:
        assert rel(r32.outputs[n], r64.outputs[n]) < 1e-4, n
    d = {n: normal(*y.shape, seed=7) for n, y in r64.outputs.items()}
    g32 = c32.backward(r32, d_outputs={n: v.astype(np.float32) for n, v in d.items()})
    g64 = c64.backward(r64, d_outputs=d)
    for part in ("params", "inputs", "state"):
        for n, v in getattr(g64, part).items():
            assert rel(getattr(g32, part)[n], v) < 1e-4, (part, n)


# ------------------------------------------------------------------ binding errors
@pytest.mark.parametrize("dims,phrase", [
    (dict(I=3, H=4), r"Elman needs dims I, H, O; missing: O \(pass them as Elman\("),
    (dict(I=3, H=4, O=2, Q=1), r"Elman has no dim Q; its dims are I, H, O"),
    (dict(I=3, H=0, O=2), r"dim H must be a positive integer, got 0"),
    (dict(I=3, H=-2, O=2), r"dim H must be a positive integer, got -2"),
    (dict(I=3, H=2.0, O=2), r"dim H must be a positive integer, got 2.0"),
    (dict(I=3, H="4", O=2), r"dim H must be a positive integer, got '4'"),
    (dict(I=3, H=True, O=2), r"dim H must be a positive integer, got True"),
])
def test_bad_dims(Elman, dims, phrase):
    with pytest.raises(BindError, match=phrase):
        Elman(**dims)


def test_numpy_integer_dims_are_fine(Elman):
    cell = Elman(I=np.int64(3), H=np.int32(4), O=2)
    assert cell.dims == {"I": 3, "H": 4, "O": 2}
    assert all(type(v) is int for v in cell.dims.values())


@pytest.mark.parametrize("dtype,phrase", [
    (np.int32, r"dtype int32 is not supported; use np.float32 or np.float64"),
    (np.float16, r"dtype float16 is not supported"),
    ("bogus", r"dtype 'bogus' is not a NumPy dtype; use np.float32 or np.float64"),
])
def test_bad_dtype(Elman, dtype, phrase):
    with pytest.raises(BindError, match=phrase):
        Elman(I=3, H=4, O=2, dtype=dtype)


def test_dtype_names_are_accepted(Elman):
    assert Elman(I=3, H=4, O=2, dtype="float64").dtype == np.float64


@pytest.mark.parametrize("x,phrase", [
    (np.zeros((T, 3)), r"input x has shape \(5, 3\); expected 3 axes, \(T, B, 3\)"),
    (np.zeros((T, B, 1, 3)), r"input x has shape \(5, 2, 1, 3\); expected 3 axes"),
    (np.zeros((T, B, 4)), r"input x has shape \(5, 2, 4\); expected \(5, 2, 3\) = \(T, B, 3\)"),
    (np.zeros((0, B, 3)), r"a sequence needs T >= 1 steps and B >= 1 rows"),
    (np.zeros((T, 0, 3)), r"a sequence needs T >= 1 steps and B >= 1 rows"),
    (np.zeros((T, B, 3), np.float32),
     r"input x is float32 but the cell is float64; convert it with \.astype\(np\.float64\)"),
    (np.zeros((T, B, 3), np.int64), r"input x is int64 but the cell is float64"),
    ([[[0.0, 0.0, 0.0]]], r"input x must be a NumPy array of shape \(T, B, 3\), got list"),
    (None, r"input x must be a NumPy array of shape \(T, B, 3\), got NoneType"),
])
def test_bad_input(elman, x, phrase):
    with pytest.raises(BindError, match=phrase):
        elman.forward(x)


def test_float64_into_a_float32_cell_hints_at_astype(Elman):
    cell = Elman(I=3, H=4, O=2, dtype=np.float32)
    with pytest.raises(BindError, match=r"input x is float64 but the cell is float32; "
                                        r"convert it with \.astype\(np\.float32\)"):
        cell.forward(np.zeros((T, B, 3)))
    with pytest.raises(BindError, match=r"state h is float64 but the cell is float32"):
        cell.forward(np.zeros((T, B, 3), np.float32), state={"h": np.zeros((B, 4))})


@pytest.mark.parametrize("bad,where", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_input_or_state(elman, bad, where):
    x = np.zeros((T, B, 3))
    x[2, 1, 0] = bad
    with pytest.raises(BindError, match=rf"input x has a non-finite value \({where}\) at "
                                        rf"index \(2, 1, 0\)"):
        elman.forward(x)
    h = np.zeros((B, 4))
    h[1, 3] = bad
    with pytest.raises(BindError, match=rf"state h has a non-finite value \({where}\) at "
                                        rf"index \(1, 3\)"):
        elman.forward(np.zeros((T, B, 3)), state={"h": h})


@pytest.mark.parametrize("state,phrase", [
    ({"q": np.zeros((B, 4))}, r"Elman has no state 'q'; its states are: h"),
    ({"h": np.zeros((3, 4))}, r"state h has shape \(3, 4\); expected \(2, 4\) = \(B, 4\)"),
    ({"h": np.zeros((B, 5))}, r"state h has shape \(2, 5\); expected \(2, 4\) = \(B, 4\)"),
    ({"h": np.zeros((T, B, 4))}, r"state h has shape \(5, 2, 4\); expected \(2, 4\)"),
    ({"h": [[0.0] * 4] * B}, r"state h must be a NumPy array of shape \(B, 4\), got list"),
    (np.zeros((B, 4)), r"state must be a dict keyed by name \(h\), got ndarray"),
])
def test_bad_state(elman, state, phrase):
    with pytest.raises(BindError, match=phrase):
        elman.forward(np.zeros((T, B, 3)), state=state)


def test_several_inputs_need_a_dict(TwoStreams):
    cell = TwoStreams(A=2, G=3, H=4, K=5, dtype=np.float64)
    a, g = np.zeros((T, B, 2)), np.zeros((T, B, 3))
    with pytest.raises(BindError, match=r"TwoStreams has 2 inputs \(a, g\); pass them as a dict"):
        cell.forward(a)
    with pytest.raises(BindError, match=r"missing input g"):
        cell.forward({"a": a})
    with pytest.raises(BindError, match=r"TwoStreams has no input 'z'; its inputs are: a, g"):
        cell.forward({"a": a, "g": g, "z": g})
    with pytest.raises(BindError, match=r"input g has shape \(5, 3, 3\); expected \(5, 2, 3\)"):
        cell.forward({"a": a, "g": np.zeros((T, 3, 3))})
    with pytest.raises(BindError, match=r"input g has shape \(4, 2, 3\); expected \(5, 2, 3\)"):
        cell.forward({"a": a, "g": np.zeros((T - 1, B, 3))})


def test_one_input_may_also_come_as_a_dict(elman):
    x = normal(T, B, 3)
    np.testing.assert_array_equal(elman.forward({"x": x}).outputs["y"],
                                  elman.forward(x).outputs["y"])


def test_bad_cotangents(elman):
    run = elman.forward(np.zeros((T, B, 3)))
    with pytest.raises(BindError, match=r"Elman has no output 'z'; its outputs are: y, h"):
        elman.backward(run, d_outputs={"z": np.zeros((T, B, 2))})
    with pytest.raises(BindError, match=r"d_outputs\['y'\] has shape \(5, 2, 4\); "
                                        r"expected \(5, 2, 2\) = \(T, B, 2\)"):
        elman.backward(run, d_outputs={"y": np.zeros((T, B, 4))})
    with pytest.raises(BindError, match=r"d_outputs\['y'\] has a non-finite value"):
        elman.backward(run, d_outputs={"y": np.full((T, B, 2), np.nan)})
    with pytest.raises(BindError, match=r"d_outputs\['y'\] is float32 but the cell is float64"):
        elman.backward(run, d_outputs={"y": np.zeros((T, B, 2), np.float32)})
    with pytest.raises(BindError, match=r"Elman has no state 'c'; its states are: h"):
        elman.backward(run, d_state={"c": np.zeros((B, 4))})
    with pytest.raises(BindError, match=r"d_state\['h'\] has shape \(2, 3\); "
                                        r"expected \(2, 4\) = \(B, 4\)"):
        elman.backward(run, d_state={"h": np.zeros((B, 3))})
    with pytest.raises(BindError, match=r"d_outputs must be a dict keyed by name, got ndarray"):
        elman.backward(run, d_outputs=np.zeros((T, B, 2)))


def test_backward_needs_this_cells_run(Elman, elman):
    other = Elman(I=3, H=4, O=2, dtype=np.float64)
    run = other.forward(np.zeros((T, B, 3)))
    for bad in (run, "run", None):
        with pytest.raises(BindError,
                           match=r"backward needs the Run that this cell's forward returned"):
            elman.backward(bad, d_outputs={"y": np.zeros((T, B, 2))})


# ------------------------------------------------------------------ targets
def test_unknown_target():
    for load_it in (lambda: rnndsl.load(SPECS / "elman.rnn", target="gpu"),
                    lambda: rnndsl.load_text(INIT_TEXT, target="gpu")):
        with pytest.raises(TargetError, match=r"unknown target 'gpu'; targets: interp"):
            load_it()


def test_cuda_loads_where_it_can_run():
    """The cuda target is built: it loads on a GPU or the simulator (tests run on the
    simulator, see conftest.py); elsewhere it is refused as a TargetError that says why."""
    try:
        Cell = rnndsl.load(SPECS / "elman.rnn", target="cuda")
    except TargetError as exc:
        assert re.search(r"numba-cuda|no usable CUDA GPU", str(exc)), str(exc)
        return
    assert Cell.target == "cuda"


@pytest.mark.parametrize("name", ["interp", "cpu", "cuda"])
def test_every_target_has_one_record_that_resolves(name):
    """The registry (core/targets.py) names each target's cell class, and a compiled
    target's emitter and dialect, by module path: each resolves, and agrees with it."""
    from rnndsl.core import targets
    record = targets.target(name)
    cls = targets.resolve(record.cell_class)
    assert cls.target == name
    if record.compiled:
        assert callable(targets.resolve(record.emitter))
        assert targets.resolve(record.dialect).target == name


@pytest.mark.parametrize("init", ["~ 1e300", "~ uniform(-1e300, 1e300)", "~ normal(0, 1e308)"])
def test_an_initialiser_beyond_the_dtypes_range_is_refused_by_name(init):
    """Such a start became inf in float32 (the default dtype) with only NumPy's cast
    warning, and every forward gave NaN; float64 holds it."""
    import warnings
    text = (f"cell C {{\n  dims H\n  input x[H]\n  param k[H] {init}\n"
            "  output y = x * 0 + k\n}\n")
    C = rnndsl.load_text(text, target="interp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BindError, match=r"C\(H=3\): param k's initialiser gives values "
                           r"beyond float32's range \(largest 3.4e\+38\); give smaller "
                           r"values, or use dtype=np.float64"):
            C(H=3)
    if "normal" not in init:        # a normal of std 1e308 overflows float64 too, at times
        assert np.isfinite(C(H=3, dtype=np.float64).params["k"]).all()


@pytest.mark.parametrize("text, message, name, value", [
    # `state q[H] = 1e39` started at inf in float32, silently (a param so was refused)
    ("cell Q {\n  dims H\n  input x[H]\n  state q[H] = 1e39\n  q' = q * 0.5 + x\n"
     "  output q'\n}\n", r"Q\(H=2\): state q starts at 1e\+39, beyond float32's range",
     "q", 5e38),
    # `h' * 1e300` in float32 was inf, and the outputs NaN, with no word
    ("cell Q {\n  dims H\n  input x[H]\n  state h[H]\n  h' = tanh(h + x)\n"
     "  output y = h' * 1e300\n}\n",
     r":6:19: Q\(H=2\): the constant 1e\+300 is beyond float32's range", "y", None),
    # `h' * 1e-50` in float32 was 0 with no word (1e-400 is refused by the checker)
    ("cell Q {\n  dims H\n  input x[H]\n  state h[H]\n  h' = tanh(h + x)\n"
     "  output y = h' * 1e-50\n}\n",
     r":6:19: Q\(H=2\): the constant 1e-50 is too small for float32: it would be 0", "y",
     None),
], ids=["state start", "constant", "vanishing constant"])
def test_a_number_beyond_the_dtypes_range_is_refused_by_name(text, message, name, value):
    import warnings
    C = rnndsl.load_text(text, target="interp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BindError, match=message):
            C(H=2)
    run = C(H=2, dtype=np.float64).forward(np.ones((1, 1, 2)) if value is None
                                           else np.zeros((1, 1, 2)))
    got = run.state[name] if value is not None else run.outputs[name]
    if value is not None:
        np.testing.assert_array_equal(got, value)
    assert np.isfinite(got).all()

