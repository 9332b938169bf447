"""rnndsl.jax: a cell as a JAX function, against the interpreter's own forward and BPTT.

Every expectation is computed here by an interpreter cell (target="interp") with the same
params and inputs, or by JAX's numerical derivatives (check_grads), never written down.
Most cases run the interpreter's cell under JAX, which is quick; the compiled cpu kernels
run in one case a dtype (they compile once a spec and dtype, then come from the cache).
"""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import rnndsl  # noqa: E402
import rnndsl.jax as rj  # noqa: E402
from rnndsl.core.errors import BindError  # noqa: E402
from tiny_cells import GENERATOR  # noqa: E402  (tests/ is on sys.path)

SPECS = Path(__file__).resolve().parents[2] / "specs"
T, B = 4, 3
DIMS = {"elman": {"I": 3, "H": 4, "O": 2}, "lstm": {"I": 3, "H": 4},
        "two_streams": {"A": 2, "G": 3, "H": 4, "K": 3}}


@pytest.fixture
def x64():
    """JAX in float64 for the test, as it was after."""
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def make(name: str, dtype=np.float64, target: str = "interp", seed: int = 0):
    return rnndsl.load(SPECS / f"{name}.rnn", target=target)(dtype=dtype, seed=seed,
                                                              **DIMS[name])


def inputs_of(cell, seed: int = 1, steps: int = T) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {d.name: rng.normal(size=(steps, B) + cell._size(d)).astype(cell.dtype)
            for d in cell.spec.inputs if d.name not in cell.hidden_inputs}


def random_like(arrays: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.normal(size=np.shape(a)).astype(np.asarray(a).dtype)
            for n, a in arrays.items()}


def loss_weights(cell, seed: int = 7):
    """Random cotangents for every output and final state: the loss is their inner
    product with the results, so its gradient is the cell's backward with them."""
    run = cell.forward(inputs_of(cell))
    return random_like(run.outputs, seed), random_like(run.state, seed + 1)


def weighted_loss(f, w_out, w_state, lengths=None):
    def loss(params, x, state):
        outputs, final = f(params, x, state, lengths=lengths)
        return sum(jnp.sum(outputs[n] * w) for n, w in w_out.items()) + sum(
            jnp.sum(final[n] * w) for n, w in w_state.items())
    return loss


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def test_import_rnndsl_imports_no_jax():
    """Nor do the layers under rnndsl.jax, nor the interop package's other modules."""
    others = "import rnndsl.interop.safetensors; " if find_spec("safetensors") else ""
    code = ("import sys, rnndsl, rnndsl.cells, rnndsl.train.checkpoint, rnndsl.interop; "
            + others +
            "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["elman", "lstm", "two_streams"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_outputs_and_gradients_match_the_interpreter_under_jit(x64, name, with_lengths):
    cell = make(name)
    x = inputs_of(cell)
    state0 = random_like({d.name: np.zeros((B,) + cell._size(d)) for d in cell.spec.states},
                         seed=3)
    lengths = np.array([T, 1, T - 1]) if with_lengths else None
    params = random_like(cell.params, seed=5)      # not the cell's: f must use these
    f = rj.function(cell)
    x_arg = x if len(x) > 1 else next(iter(x.values()))

    outputs, final = jax.jit(lambda p, x, s: f(p, x, s, lengths=lengths))(params, x_arg,
                                                                          state0)
    reference = make(name, seed=9)
    for n, v in params.items():
        reference.params[n] = v
    run = reference.forward(x_arg, state0, lengths=lengths)
    for n, v in run.outputs.items():
        assert rel_err(outputs[n], v) < 1e-12, n
    for n, v in run.state.items():
        assert rel_err(final[n], v) < 1e-12, n

    w_out, w_state = loss_weights(cell)
    grads = jax.jit(jax.grad(weighted_loss(f, w_out, w_state, lengths), argnums=(0, 1, 2)))(
        params, x_arg, state0)
    g = reference.backward(run, d_outputs=w_out, d_state=w_state)
    for n, v in g.params.items():
        assert rel_err(grads[0][n], v) < 1e-10, n
    d_x = grads[1] if isinstance(grads[1], dict) else {next(iter(x)): grads[1]}
    for n, v in g.inputs.items():
        assert rel_err(d_x[n], v) < 1e-10, n
    for n, v in g.state.items():
        assert rel_err(grads[2][n], v) < 1e-10, n
    assert all(np.array_equal(cell.params[n], make(name).params[n]) for n in cell.params), \
        "f changed the cell's own params"


def test_gradients_match_finite_differences(x64):
    cell = make("elman")
    f = rj.function(cell)
    w_out, w_state = loss_weights(cell)
    state0 = {"h": np.random.default_rng(2).normal(size=(B, 4))}
    check_grads(weighted_loss(f, w_out, w_state),
                (rj.params(cell), inputs_of(cell)["x"], state0), order=1, modes=("rev",),
                atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("direction, target", [("reverse", "interp"),
                                               ("bidirectional", "cpu")])
def test_a_two_way_cell_matches_its_own_forward_and_finite_differences(x64, target,
                                                                       direction):
    """A reverse or bidirectional cell (cells.directions): params and states by their
    suffixed names (W_hh_reverse, h_reverse), the outputs of both directions joined on
    the feature axis; within lengths; gradients against finite differences."""
    cell = rnndsl.load(SPECS / "elman.rnn", target=target)(
        dtype=np.float64, seed=2, direction=direction, **DIMS["elman"])
    f = rj.function(cell)
    x = inputs_of(make("elman"))["x"]
    lengths = np.array([T, 1, T - 1])
    state0 = random_like(cell.initial_state(B), seed=3)
    outputs, final = jax.jit(lambda p, x, s: f(p, x, s, lengths=lengths))(
        rj.params(cell), x, state0)
    run = cell.forward(x, state0, lengths=lengths)
    assert sorted(final) == sorted(run.state) == sorted(state0)
    for n, v in {**run.outputs, **run.state}.items():
        assert rel_err({**outputs, **final}[n], v) < 1e-12, n
    w_out, w_state = random_like(run.outputs, 7), random_like(run.state, 8)
    check_grads(weighted_loss(f, w_out, w_state, lengths), (rj.params(cell), x, state0),
                order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


NETWORK = f"""use "{SPECS / 'lstm.rnn'}"
cell Net {{
  dims V, H, K
  input x[V]
  state s[K]
  layer l1 = bidirectional LSTM(I = V, H = H)
  param W[K, 2 * H], U[K, K]
  s' = tanh(W @ l1(x) + U @ s)
  output s'
}}
"""


def test_a_network_cell_matches_its_own_forward_and_finite_differences(x64):
    """A network cell (layers run over whole sequences: cells.network) under its own
    names (`l1.W_i_reverse`, `l1.c`), with lengths and some initial states."""
    cell = rnndsl.load_text(NETWORK, target="interp")(dtype=np.float64, seed=0, V=2, H=3,
                                                      K=2)
    f = rj.function(cell)
    x = np.random.default_rng(1).normal(size=(T, B, 2))
    lengths = np.array([T, 1, T - 1])
    state0 = {n: v for n, v in random_like(cell.initial_state(B), seed=3).items()
              if n in ("s", "l1.c_reverse")}
    outputs, final = jax.jit(lambda p, x, s: f(p, x, s, lengths=lengths))(
        rj.params(cell), x, state0)
    run = cell.forward(x, state0, lengths=lengths)
    assert sorted(final) == sorted(run.state)
    for n, v in {**run.outputs, **run.state}.items():
        assert rel_err({**outputs, **final}[n], v) < 1e-12, n
    w_out, w_state = random_like(run.outputs, 7), random_like(run.state, 8)
    check_grads(weighted_loss(f, w_out, w_state, lengths), (rj.params(cell), x, state0),
                order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_second_derivatives_are_refused_in_rnndsls_words(x64):
    from rnndsl.core.errors import TargetError
    cell = make("elman")
    f, params = rj.function(cell), rj.params(cell)
    x = inputs_of(cell)["x"]

    def loss(x):
        return jnp.sum(f(params, x)[0]["y"])
    for second in (jax.hessian(loss), jax.grad(lambda x: jnp.sum(jax.grad(loss)(x)))):
        with pytest.raises(TargetError, match="rnndsl.jax differentiates once, in reverse "
                                              "mode"):
            second(x)
    assert jax.grad(loss)(x).shape == x.shape          # once is fine


def test_backward_reads_the_params_its_forward_read(x64):
    """Between a forward and its VJP, other calls with other params and a change to the
    cell's own params in place do not reach the gradient."""
    cell = make("lstm")
    f = rj.function(cell)
    x = inputs_of(cell)["x"]
    p1, p2 = random_like(cell.params, 11), random_like(cell.params, 12)
    (outputs, final), vjp = jax.vjp(lambda p: f(p, x), p1)
    f(p2, x)
    for v in cell.params.values():
        v += 1.0
    w_out, w_state = loss_weights(cell)
    (grads,) = vjp((w_out, w_state))

    reference = make("lstm")
    reference.params.update(p1)
    g = reference.backward(reference.forward(x), d_outputs=w_out, d_state=w_state)
    for n, v in g.params.items():
        assert rel_err(grads[n], v) < 1e-12, n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_kernels_under_jit_and_grad(x64, dtype):
    cell = make("elman", dtype=dtype, target="cpu")
    f = rj.function(cell)
    x = inputs_of(cell)["x"]
    params = rj.params(cell)
    w_out, w_state = loss_weights(cell)
    outputs, final = jax.jit(f)(params, x)
    grads = jax.jit(jax.grad(weighted_loss(f, w_out, w_state), argnums=(0, 1)))(
        params, x, None)

    reference = make("elman", dtype=np.float64)
    reference.params.update({n: np.asarray(v, np.float64) for n, v in params.items()})
    run = reference.forward(x.astype(np.float64))
    g = reference.backward(run, d_outputs={n: w.astype(np.float64) for n, w in w_out.items()},
                           d_state={n: w.astype(np.float64) for n, w in w_state.items()})
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert outputs["y"].dtype == dtype
    assert rel_err(outputs["y"], run.outputs["y"]) < tol
    assert rel_err(final["h"], run.state["h"]) < tol
    for n, v in g.params.items():
        assert rel_err(grads[0][n], v) < tol, n
    assert rel_err(grads[1], g.inputs["x"]) < tol


def test_a_few_steps_of_training_follow_the_interpreter(x64):
    """Plain gradient steps in JAX (jit of value_and_grad) and the same steps with the
    interpreter's forward and backward reach the same params; the loss falls."""
    cell = make("elman")
    f = rj.function(cell)
    rng = np.random.default_rng(4)
    x, target = rng.normal(size=(T, B, 3)), rng.uniform(0.1, 0.9, size=(T, B, 2))
    lr, steps = 0.5, 4

    @jax.jit
    def step(params):
        def loss(p):
            return 0.5 * jnp.sum((f(p, x)[0]["y"] - target) ** 2)
        value, grads = jax.value_and_grad(loss)(params)
        return value, {n: params[n] - lr * grads[n] for n in params}

    params, losses = rj.params(cell), []
    for _ in range(steps):
        value, params = step(params)
        losses.append(float(value))

    reference = make("elman")
    for _ in range(steps):
        run = reference.forward(x)
        g = reference.backward(run, d_outputs={"y": run.outputs["y"] - target})
        for n in reference.params:
            reference.params[n] = reference.params[n] - lr * g.params[n]
    assert losses[-1] < losses[0]
    for n, v in reference.params.items():
        assert rel_err(params[n], v) < 1e-10, n


def test_token_inputs_take_ids_and_get_no_gradient(x64):
    Char = rnndsl.load(SPECS / "char_lstm.rnn", target="interp")
    cell = Char(V=5, H=3, dtype=np.float64, seed=0)
    f = rj.function(cell)
    ids = np.random.default_rng(3).integers(0, 5, size=(3, 2))
    w = np.random.default_rng(4).normal(size=(3, 2, 5))

    def loss(p, ids):
        return jnp.sum(f(p, ids)[0]["logits"] * w)

    grads, d_ids = jax.grad(loss, argnums=(0, 1), allow_int=True)(rj.params(cell),
                                                               jnp.asarray(ids))
    assert d_ids.dtype == jax.dtypes.float0
    g = cell.backward(cell.forward(ids), d_outputs={"logits": w})
    for n, v in g.params.items():
        assert rel_err(grads[n], v) < 1e-12, n


def test_vmap_runs_the_cell_once_per_element(x64):
    cell = make("elman")
    f = rj.function(cell)
    xs = np.random.default_rng(5).normal(size=(2, T, B, 3))
    batched = jax.vmap(lambda x: f(rj.params(cell), x)[0]["y"])(xs)
    for i in range(2):
        assert rel_err(batched[i], cell.forward(xs[i]).outputs["y"]) < 1e-12


@pytest.mark.parametrize("change, message", [
    (lambda p, x: ({k: v for k, v in p.items() if k != "b_h"}, x), "missing b_h"),
    (lambda p, x: ({**p, "W_zz": p["b_h"]}, x), "unknown W_zz"),
    (lambda p, x: ({**p, "W_hh": p["W_hh"][:2]}, x), "param W_hh has shape (2, 4)"),
    (lambda p, x: ({**p, "b_h": p["b_h"].astype(np.float32)}, x), "is float32"),
    (lambda p, x: (p, x[..., :2]), "input x has shape (4, 3, 2)"),
    (lambda p, x: (p, {"x": x, "z": x}), "unknown z"),
    # refused by the cell inside the callback, a JaxRuntimeError, until checked here
    (lambda p, x: (p, x[:0]), "the inputs have T = 0, B = 3: a sequence needs T >= 1"),
    (lambda p, x: (p, x[:, :0]), "the inputs have T = 4, B = 0"),
])
def test_mistakes_are_bind_errors_at_trace_time(x64, change, message):
    cell = make("elman")
    params, x = change(rj.params(cell), inputs_of(cell)["x"])
    with pytest.raises(BindError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jax.jit(rj.function(cell))(params, x)


def test_state_and_cell_mistakes(x64):
    cell = make("elman")
    f = rj.function(cell)
    x = inputs_of(cell)["x"]
    with pytest.raises(BindError, match="no state 'c'"):
        f(rj.params(cell), x, {"c": np.zeros((B, 4))})
    with pytest.raises(BindError, match=r"state h has shape \(2, 4\)"):
        f(rj.params(cell), x, {"h": np.zeros((2, 4))})
    with pytest.raises(BindError, match="instantiate the class"):
        rj.function(type(cell))
    with pytest.raises(BindError, match=r"lengths has shape \(2,\)"):
        f(rj.params(cell), x, lengths=np.array([1, 2]))
    with pytest.raises(BindError, match="steps= is for cells whose inputs are all"):
        f(rj.params(cell), x, steps=T)


def test_a_float64_cell_needs_x64():
    if jax.config.read("jax_enable_x64"):
        pytest.skip("x64 is on in this process")
    cell = make("elman")
    with pytest.raises(BindError, match="jax_enable_x64"):
        rj.function(cell)(rj.params(make("elman", dtype=np.float32)), np.zeros((T, B, 3)))


ONCE = """
cell Classifier {
  dims I, H, K
  input x[I]
  state h[H]
  param W[H, I], U[H, H], V[K, H]
  h' = tanh(W @ x + U @ h)
  final y = V @ h'
}
""" + GENERATOR


@pytest.mark.parametrize("name, dims", [("Classifier", {"I": 3, "H": 4, "K": 2}),
                                        ("Generator", {"Z": 3, "H": 4})])
def test_final_outputs_and_once_inputs(x64, name, dims):
    """A `final` output comes back (B, ...) at each sequence's last step; an `input once`
    (B, Z) with steps=T; both differentiate as the interpreter does."""
    cell = rnndsl.load_text(ONCE, target="interp", cell=name)(dtype=np.float64, **dims)
    f = rj.function(cell)
    rng = np.random.default_rng(6)
    if name == "Classifier":
        x, steps, lengths = rng.normal(size=(T, B, 3)), None, np.array([T, 2, 1])
    else:
        x, steps, lengths = rng.normal(size=(B, 3)), T, None
    run = cell.forward(x, lengths=lengths, steps=steps)
    w = random_like(run.outputs, 8)

    def loss(p, x):
        outputs, _ = f(p, x, lengths=lengths, steps=steps)
        return sum(jnp.sum(outputs[n] * v) for n, v in w.items())

    value, (d_p, d_x) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(rj.params(cell), x)
    g = cell.backward(run, d_outputs=w)
    assert abs(float(value) - sum(float(np.sum(run.outputs[n] * v)) for n, v in w.items())) \
        < 1e-12
    for n, v in g.params.items():
        assert rel_err(d_p[n], v) < 1e-12, n
    assert rel_err(d_x, g.inputs[next(iter(g.inputs))]) < 1e-12


def test_what_only_the_values_show_is_the_cells_message(x64):
    """A NaN in x is found by the cell inside the callback; JAX raises it with rnndsl's
    message, and the function works again afterwards."""
    cell = make("elman")
    f = jax.jit(rj.function(cell))
    x = inputs_of(cell)["x"]
    bad = x.copy()
    bad[1, 0, 2] = np.nan
    with pytest.raises(getattr(jax.errors, "JaxRuntimeError", RuntimeError),
                       match="BindError: input x has a non-finite value"):
        f(rj.params(cell), bad)
    assert rel_err(f(rj.params(cell), x)[0]["y"], cell.forward(x).outputs["y"]) < 1e-12
