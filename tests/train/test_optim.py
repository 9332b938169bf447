"""Optimisers against a scalar mirror of torch.optim's documented pseudo-code; clipping.

The mirror runs the documented algorithms one Python float at a time (no NumPy in the
update), over several steps with gradients that change every step, so buffers, bias
corrections and the first-step special cases all matter. Known closed forms pin the
rest: Adam's first step moves each weight by lr * sign(g); heavy-ball momentum on a
constant gradient moves by lr * g * (1 + mu + ... + mu**(t-1)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnndsl.train.optim import OPTIMIZERS, SGD, Adam, RMSprop, clip_elementwise, clip_global_norm


class MirrorSGD:
    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.mu, self.nesterov, self.wd = lr, momentum, nesterov, weight_decay
        self.b, self.t = {}, 0

    def step(self, theta: list[float], grad: list[float], key) -> list[float]:
        out = []
        for i, (p, g) in enumerate(zip(theta, grad, strict=True)):
            if self.wd != 0:
                g = g + self.wd * p
            if self.mu != 0:
                if (key, i) in self.b:
                    b = self.mu * self.b[key, i] + g
                else:
                    b = g
                self.b[key, i] = b
                g = g + self.mu * b if self.nesterov else b
            out.append(p - self.lr * g)
        return out


class MirrorRMSprop:
    def __init__(self, lr, alpha, eps, momentum=0.0, weight_decay=0.0, centered=False):
        self.lr, self.alpha, self.eps, self.mu = lr, alpha, eps, momentum
        self.wd, self.centered = weight_decay, centered
        self.v, self.b, self.g_ave = {}, {}, {}

    def step(self, theta, grad, key):
        out = []
        for i, (p, g) in enumerate(zip(theta, grad, strict=True)):
            k = (key, i)
            if self.wd != 0:
                g = g + self.wd * p
            self.v[k] = self.alpha * self.v.get(k, 0.0) + (1 - self.alpha) * g * g
            v_tilde = self.v[k]
            if self.centered:
                self.g_ave[k] = self.g_ave.get(k, 0.0) * self.alpha + (1 - self.alpha) * g
                v_tilde = v_tilde - self.g_ave[k] ** 2
            if self.mu > 0:
                self.b[k] = self.mu * self.b.get(k, 0.0) + g / (math.sqrt(v_tilde) + self.eps)
                out.append(p - self.lr * self.b[k])
            else:
                out.append(p - self.lr * g / (math.sqrt(v_tilde) + self.eps))
        return out


class MirrorAdam:
    def __init__(self, lr, betas, eps, weight_decay=0.0):
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.m, self.v, self.t = {}, {}, {}

    def step(self, theta, grad, key):
        self.t[key] = t = self.t.get(key, 0) + 1
        out = []
        for i, (p, g) in enumerate(zip(theta, grad, strict=True)):
            k = (key, i)
            if self.wd != 0:
                g = g + self.wd * p
            self.m[k] = self.b1 * self.m.get(k, 0.0) + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v.get(k, 0.0) + (1 - self.b2) * g * g
            m_hat = self.m[k] / (1 - self.b1 ** t)
            v_hat = self.v[k] / (1 - self.b2 ** t)
            out.append(p - self.lr * m_hat / (math.sqrt(v_hat) + self.eps))
        return out


CASES = [
    (lambda: SGD(0.1), lambda: MirrorSGD(0.1)),
    (lambda: SGD(0.1, momentum=0.9), lambda: MirrorSGD(0.1, 0.9)),
    (lambda: SGD(0.05, momentum=0.8, nesterov=True), lambda: MirrorSGD(0.05, 0.8, True)),
    (lambda: SGD(0.1, momentum=0.5, weight_decay=0.01), lambda: MirrorSGD(0.1, 0.5, False, 0.01)),
    (lambda: RMSprop(0.01), lambda: MirrorRMSprop(0.01, 0.99, 1e-8)),
    (lambda: RMSprop(0.01, alpha=0.9, eps=1e-6, momentum=0.7),
     lambda: MirrorRMSprop(0.01, 0.9, 1e-6, 0.7)),
    (lambda: RMSprop(0.02, centered=True, weight_decay=0.1, momentum=0.3),
     lambda: MirrorRMSprop(0.02, 0.99, 1e-8, 0.3, 0.1, True)),
    (lambda: Adam(), lambda: MirrorAdam(1e-3, (0.9, 0.999), 1e-8)),
    (lambda: Adam(0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.02),
     lambda: MirrorAdam(0.05, (0.8, 0.99), 1e-6, 0.02)),
]
IDS = ["sgd", "momentum", "nesterov", "sgd-wd", "rmsprop", "rmsprop-momentum",
       "rmsprop-centered", "adam", "adam-wd"]


def grads_at(rng) -> dict[str, np.ndarray]:
    return {"l1.W": rng.normal(size=(3, 2)), "b": rng.normal(size=(3,)),
            "alpha": np.array(rng.normal())}


@pytest.mark.parametrize("make, make_mirror", CASES, ids=IDS)
def test_optimizer_matches_documented_update_over_several_steps(make, make_mirror):
    rng = np.random.default_rng(0)
    params = {"l1.W": rng.normal(size=(3, 2)), "b": rng.normal(size=(3,)),
              "alpha": np.array(0.5)}
    held = dict(params)                          # a cell's references
    mirror = {k: [float(v) for v in a.ravel()] for k, a in params.items()}
    opt, ref = make(), make_mirror()
    for _ in range(6):
        grads = grads_at(rng)
        opt.step(params, grads)
        for k, g in grads.items():
            mirror[k] = ref.step(mirror[k], [float(v) for v in g.ravel()], k)
        for k in params:
            assert params[k] is held[k]          # updated in place
            np.testing.assert_allclose(params[k].ravel(), mirror[k], rtol=1e-12, atol=1e-14)


def test_known_closed_forms():
    g = np.array([3.0, -0.01, 2e-3])
    p = np.zeros(3)
    Adam(lr=0.1).step({"w": p}, {"w": g.copy()})
    np.testing.assert_allclose(p, -0.1 * np.sign(g), rtol=1e-5)   # m^ / sqrt(v^) = sign(g)
    p = np.zeros(3)
    opt = SGD(lr=0.1, momentum=0.5)
    for _ in range(3):
        opt.step({"w": p}, {"w": g.copy()})
    # velocities g, 1.5 g, 1.75 g: the sum is 4.25 g
    np.testing.assert_allclose(p, -0.1 * 4.25 * g)


@pytest.mark.parametrize("make, make_mirror", CASES, ids=IDS)
def test_state_dict_resumes_exactly(make, make_mirror):
    rng = np.random.default_rng(3)
    start = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=4)}
    grads = [{"w": rng.normal(size=(4, 3)), "b": rng.normal(size=4)} for _ in range(5)]
    straight, opt = {k: v.copy() for k, v in start.items()}, make()
    for g in grads:
        opt.step(straight, {k: v.copy() for k, v in g.items()})
    resumed, first = {k: v.copy() for k, v in start.items()}, make()
    for g in grads[:2]:
        first.step(resumed, {k: v.copy() for k, v in g.items()})
    second = make()
    second.load_state_dict(first.state_dict())
    for g in grads[2:]:
        second.step(resumed, {k: v.copy() for k, v in g.items()})
    for k in start:
        np.testing.assert_array_equal(resumed[k], straight[k])


def test_float32_params_stay_float32_in_place():
    p = np.ones((2, 2), np.float32)
    for opt in (SGD(0.1, momentum=0.9), RMSprop(), Adam()):
        opt.step({"w": p}, {"w": np.full((2, 2), 0.5, np.float64)})
        assert p.dtype == np.float32
        assert all(b.dtype == np.float32 for bufs in opt.buffers.values() for b in bufs.values())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="lr must be in"):
        SGD(-1.0)
    with pytest.raises(ValueError, match="nesterov=True needs a momentum"):
        SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0.0, 1.0\)"):
        Adam(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="betas must be a pair"):
        Adam(betas=0.9)
    opt = Adam()
    with pytest.raises(ValueError, match="gradient for 'v', which is not a param"):
        opt.step({"w": np.zeros(2)}, {"v": np.zeros(2)})
    with pytest.raises(ValueError, match=r"gradient 'w' has shape \(3,\); the param is \(2,\)"):
        opt.step({"w": np.zeros(2)}, {"w": np.zeros(3)})
    with pytest.raises(ValueError, match="state is for 'Adam'; this optimiser is SGD"):
        SGD(0.1).load_state_dict(opt.state_dict())


def test_clip_global_norm():
    rng = np.random.default_rng(2)
    grads = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5), "c": np.array(2.0)}
    before = {k: v.copy() for k, v in grads.items()}
    expected = np.linalg.norm(np.concatenate([v.ravel() for v in before.values()]))
    held = grads["a"]
    assert clip_global_norm(grads, 1.0) == pytest.approx(expected, rel=1e-12)
    assert grads["a"] is held
    after = np.linalg.norm(np.concatenate([v.ravel() for v in grads.values()]))
    assert after == pytest.approx(1.0, rel=1e-12)
    for k in grads:                              # same direction
        np.testing.assert_allclose(grads[k], before[k] / expected, rtol=1e-12)
    small = {k: v.copy() for k, v in grads.items()}
    assert clip_global_norm(small, 10.0) == pytest.approx(1.0)
    for k in grads:                              # below the limit: untouched
        np.testing.assert_array_equal(small[k], grads[k])
    with pytest.raises(ValueError, match="non-finite gradients in b"):
        clip_global_norm({"a": np.ones(2), "b": np.array([np.nan])}, 1.0)


def test_clip_elementwise():
    g = {"a": np.array([-3.0, -0.5, 0.0, 0.7, 9.0]), "b": np.array([[2.0]], np.float32)}
    held = g["a"]
    clip_elementwise(g, 1.0)
    assert g["a"] is held
    np.testing.assert_array_equal(g["a"], [-1.0, -0.5, 0.0, 0.7, 1.0])
    assert g["b"].dtype == np.float32 and g["b"][0, 0] == 1.0


def test_table():
    assert OPTIMIZERS == {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}


# ---------------------------------------------------------------------------- flat buffers
def _model(rng, flat: bool, dtype):
    """Params as views of one flat buffer (as a cell holds them) or as separate arrays."""
    from rnndsl.core.flat import flat_views
    values = {"W": rng.normal(size=(5, 3)), "b": rng.normal(size=5), "s": np.array(0.3)}
    if not flat:
        return {k: v.astype(dtype) for k, v in values.items()}
    _, views = flat_views([v.shape for v in values.values()], dtype)
    for view, v in zip(views, values.values()):
        view[...] = v
    return dict(zip(values, views))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, make_mirror", CASES, ids=IDS)
def test_one_call_over_a_flat_model_equals_one_call_a_param(make, make_mirror, dtype):
    """The same update rule, element for element: a model in one flat buffer (one
    compiled call a step) ends bit for bit where separate arrays (a call each) do."""
    from rnndsl.core.flat import flat_span
    rng = np.random.default_rng(5)
    flat, apart = _model(rng, True, dtype), _model(np.random.default_rng(5), False, dtype)
    assert flat_span(list(flat.values())) is not None
    assert flat_span(list(apart.values())) is None
    opt_flat, opt_apart = make(), make()
    for _ in range(4):
        g = _model(rng, True, dtype)
        opt_flat.step(flat, g)
        opt_apart.step(apart, {k: v.copy() for k, v in g.items()})
    for k in flat:
        assert flat[k].dtype == dtype
        np.testing.assert_array_equal(flat[k], apart[k])
    # its buffers are flat too, and survive a state_dict round trip as such
    for kind, bufs in opt_flat.buffers.items():
        if bufs:
            assert flat_span(list(bufs.values())) is not None, kind
    again = make()
    again.load_state_dict(opt_flat.state_dict())
    for kind, bufs in again.buffers.items():
        if bufs:
            assert flat_span(list(bufs.values())) is not None, kind


def test_a_replaced_param_falls_back_to_one_call_a_param():
    """A user who rebinds one param of a flat model still trains every param."""
    rng = np.random.default_rng(6)
    params = _model(rng, True, np.float64)
    params["b"] = params["b"].copy()            # no longer a view of the flat buffer
    mirror = {k: [float(v) for v in a.ravel()] for k, a in params.items()}
    opt, ref = Adam(0.01), MirrorAdam(0.01, (0.9, 0.999), 1e-8)
    for _ in range(3):
        grads = _model(rng, True, np.float64)
        opt.step(params, grads)
        for k, g in grads.items():
            mirror[k] = ref.step(mirror[k], [float(v) for v in g.ravel()], k)
    for k in params:
        np.testing.assert_allclose(params[k].ravel(), mirror[k], rtol=1e-12, atol=1e-14)


def test_non_contiguous_params_are_updated_in_place():
    base = np.arange(12.0).reshape(3, 4)
    view = base.T                               # a param the caller holds transposed
    Adam(lr=0.1).step({"w": view}, {"w": np.ones((4, 3))})
    np.testing.assert_allclose(base, np.arange(12.0).reshape(3, 4) - 0.1, rtol=1e-6)


def test_norm_and_clipping_over_a_flat_model_match_separate_arrays():
    rng = np.random.default_rng(7)
    flat = _model(rng, True, np.float32)
    apart = {k: v.copy() for k, v in flat.items()}
    assert clip_global_norm(flat, 0.5) == pytest.approx(clip_global_norm(apart, 0.5),
                                                         rel=1e-6)
    clip_elementwise(flat, 0.05)
    clip_elementwise(apart, 0.05)
    for k in flat:
        np.testing.assert_allclose(flat[k], apart[k], rtol=1e-6)
        assert np.abs(flat[k]).max() <= 0.05


# Modules that run in every training step. A NumPy BLAS call there (`a @ b`, np.dot, ...)
# wakes NumPy's OpenBLAS thread pool, whose spinning threads then take the cores from
# the next kernel call's threads (issue 19: Trainer.step 50.9 ms against 27.5 ms).
STEP_MODULES = ["rnndsl/train/optim.py", "rnndsl/train/losses.py", "rnndsl/train/trainer.py",
                "rnndsl/cells/base.py", "rnndsl/cells/compiled.py", "rnndsl/cells/blocks.py",
                "rnndsl/cells/seen.py",
                "rnndsl/core/flat.py", "rnndsl/kernels/losses.py", "rnndsl/kernels/optim.py"]
BLAS_CALLS = {"dot", "vdot", "inner", "outer", "matmul", "tensordot", "einsum", "kron",
              "norm", "linalg"}


@pytest.mark.parametrize("path", STEP_MODULES)
def test_no_numpy_blas_call_in_a_training_step(path):
    import ast
    from pathlib import Path
    tree = ast.parse((Path(__file__).resolve().parents[2] / path).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.MatMult):
            found.append(f"line {node.lineno}: @")
        elif isinstance(node, ast.Attribute) and node.attr in BLAS_CALLS:
            found.append(f"line {node.lineno}: .{node.attr}")
    assert not found, f"{path} calls NumPy's BLAS: {found}"


@pytest.mark.parametrize("make", [lambda: Adam(0.01), lambda: RMSprop(0.01, momentum=0.5,
                                                                     centered=True)],
                         ids=["adam", "rmsprop"])
def test_float32_updates_round_as_numpy_float32_with_double_scalars(make):
    """In float32 every product rounds: (1 - beta1) must be the float32 of the double
    1 - 0.9, as PyTorch's Python scalars are (1f - 0.9f is 3.6e-7 off). An example's
    100-step training ended at 3.4x the loss from that difference alone."""
    rng = np.random.default_rng(9)
    p = rng.normal(size=50).astype(np.float32)
    ref = p.copy()
    opt, m, v, a, b = make(), np.zeros(50, np.float32), np.zeros(50, np.float32), \
        np.zeros(50, np.float32), np.zeros(50, np.float32)
    f = np.float32
    for t in range(1, 31):
        g = rng.normal(size=50).astype(np.float32)
        opt.step({"w": p}, {"w": g})
        if isinstance(opt, Adam):
            m = f(0.9) * m + f(1 - 0.9) * g
            v = f(0.999) * v + f(1 - 0.999) * g * g
            ref -= f(0.01 / (1 - 0.9 ** t)) * m / (np.sqrt(v / f(1 - 0.999 ** t)) + f(1e-8))
        else:
            v = f(0.99) * v + f(1 - 0.99) * g * g
            a = f(0.99) * a + f(1 - 0.99) * g
            b = f(0.5) * b + g / (np.sqrt(v - a * a) + f(1e-8))
            ref -= f(0.01) * b
        np.testing.assert_array_equal(p, ref)
