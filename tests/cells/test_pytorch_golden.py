"""rnndsl's reference interpreter against PyTorch golden cases (float64).

The cases in tests/golden/*.npz were made by tests/golden/make_golden.py with
torch 2.13 (see tests/golden/README.md); this test needs numpy only, no torch.

Each case maps torch's packed weights onto the spec's parameters, runs forward and
backward, and checks the outputs, final states and every gradient (parameters, input x,
initial states) to a max relative error below 1e-9.
"""

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
SPECS = REPO / "specs"
RTOL = 1e-9
TINY = 1e-300

CASES = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
SPEC_OF = {
    "rnn_tanh": "elman.rnn",
    "rnn_relu": "elman_relu.rnn",
    "lstm": "lstm.rnn",
    "gru": "gru.rnn",
}
STATES_OF = {"rnn_tanh": ["h"], "rnn_relu": ["h"], "lstm": ["h", "c"], "gru": ["h"]}


def rel_err(a, b):
    """max|a - b| / max(max|b|, tiny): the error of a relative to the reference b."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return np.inf
    if b.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), TINY))


def load_case(name):
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def chunks(a, n, H):
    """Split torch's packed gate rows (n*H leading rows) into n blocks of H."""
    assert a.shape[0] == n * H, (a.shape, n, H)
    return [a[k * H:(k + 1) * H] for k in range(n)]


def torch_to_spec(name, d):
    """Spec parameters and their expected gradients, from torch's packed weights.

    Returns (params, grads): dicts spec-param-name -> array.
    """
    H = int(d["H"])
    w_ih, w_hh, b_ih, b_hh = d["weight_ih_l0"], d["weight_hh_l0"], d["bias_ih_l0"], d["bias_hh_l0"]
    gw_ih, gw_hh = d["grad_weight_ih_l0"], d["grad_weight_hh_l0"]
    gb_ih, gb_hh = d["grad_bias_ih_l0"], d["grad_bias_hh_l0"]
    params, grads = {}, {}
    if name in ("rnn_tanh", "rnn_relu"):
        params.update(W_xh=w_ih, W_hh=w_hh, b_h=b_ih + b_hh)
        # b_h = b_ih + b_hh, so dL/db_h = dL/db_ih = dL/db_hh.
        grads.update(W_xh=gw_ih, W_hh=gw_hh, b_h=gb_ih)
    elif name == "lstm":
        for key, w, u, bi, bh, gw, gu, gbi in zip(
            "ifgo", chunks(w_ih, 4, H), chunks(w_hh, 4, H), chunks(b_ih, 4, H),
            chunks(b_hh, 4, H), chunks(gw_ih, 4, H), chunks(gw_hh, 4, H), chunks(gb_ih, 4, H),
        ):
            params.update({f"W_{key}": w, f"U_{key}": u, f"b_{key}": bi + bh})
            grads.update({f"W_{key}": gw, f"U_{key}": gu, f"b_{key}": gbi})
    elif name == "gru":
        W_r, W_z, W_n = chunks(w_ih, 3, H)
        U_r, U_z, U_n = chunks(w_hh, 3, H)
        b_ir, b_iz, b_in = chunks(b_ih, 3, H)
        b_hr, b_hz, b_hn = chunks(b_hh, 3, H)
        gW_r, gW_z, gW_n = chunks(gw_ih, 3, H)
        gU_r, gU_z, gU_n = chunks(gw_hh, 3, H)
        gb_ir, gb_iz, gb_in = chunks(gb_ih, 3, H)
        _, _, gb_hn = chunks(gb_hh, 3, H)
        params.update(W_r=W_r, W_z=W_z, W_n=W_n, U_r=U_r, U_z=U_z, U_n=U_n,
                      b_r=b_ir + b_hr, b_z=b_iz + b_hz, b_in=b_in, b_hn=b_hn)
        grads.update(W_r=gW_r, W_z=gW_z, W_n=gW_n, U_r=gU_r, U_z=gU_z, U_n=gU_n,
                     b_r=gb_ir, b_z=gb_iz, b_in=gb_in, b_hn=gb_hn)
    else:
        raise KeyError(name)
    return params, grads


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", CASES)
def test_golden_file_made_by_torch_2_13_float64(name):
    path = GOLDEN / f"{name}.npz"
    assert path.is_file(), f"{path} is missing; run /work/torchvenv/bin/python tests/golden/make_golden.py"
    d = load_case(name)
    assert str(d["torch_version"]).startswith("2.13"), str(d["torch_version"])
    assert str(d["case"]) == name
    T, B, I, H = (int(d[k]) for k in "TBIH")
    states = STATES_OF[name]
    gates = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[name]
    shapes = {
        "x": (T, B, I), "dY": (T, B, H), "out": (T, B, H), "grad_x": (T, B, I),
        "weight_ih_l0": (gates * H, I), "weight_hh_l0": (gates * H, H),
        "bias_ih_l0": (gates * H,), "bias_hh_l0": (gates * H,),
    }
    for s in states:
        for k in (f"{s}0", f"d{s}T", f"{s}T", f"grad_{s}0"):
            shapes[k] = (B, H)
    for p in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        shapes["grad_" + p] = shapes[p]
    for key, shape in shapes.items():
        assert key in d, f"{name}: missing {key}"
        assert d[key].dtype == np.float64, f"{name}: {key} is {d[key].dtype}"
        assert d[key].shape == shape, f"{name}: {key} has shape {d[key].shape}, want {shape}"
        assert np.all(np.isfinite(d[key])), f"{name}: {key} not finite"
    # Inputs and weights were drawn with no zero entries.
    for key in ["x", "dY", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"] + [
        f"{s}0" for s in states
    ] + [f"d{s}T" for s in states]:
        assert np.all(d[key] != 0), f"{name}: {key} has zeros"
    # The gradients of torch's two biases agree (up to torch's round-off) where only their
    # sum matters, which is what lets the spec's single bias take either as its gradient.
    gb_ih, gb_hh = d["grad_bias_ih_l0"], d["grad_bias_hh_l0"]
    shared = slice(0, 2 * H) if name == "gru" else slice(None)
    e = rel_err(gb_ih[shared], gb_hh[shared])
    assert e < 1e-13, f"{name}: grad_bias_ih_l0 and grad_bias_hh_l0 differ by {e:.3g}"


# --------------------------------------------------------------------------- rnndsl


@pytest.mark.parametrize("name", CASES)
def test_interp_matches_pytorch(name):
    import rnndsl

    d = load_case(name)
    T, B, I, H = (int(d[k]) for k in "TBIH")
    states = STATES_OF[name]
    params, want_grads = torch_to_spec(name, d)

    Cell = rnndsl.load(str(SPECS / SPEC_OF[name]), target="interp")
    dims = dict(I=I, H=H)
    extra_params = set()
    if name == "rnn_tanh":
        dims["O"] = 2  # elman.rnn also has the readout y = sigmoid(W_hy @ h' + b_y)
        extra_params = {"W_hy", "b_y"}
    cell = Cell(**dims, dtype=np.float64, seed=0)

    assert set(cell.params) == set(params) | extra_params, (
        f"{name}: spec params {sorted(cell.params)}, mapping sets {sorted(params)}"
    )
    for k, v in params.items():
        assert cell.params[k].shape == v.shape, f"{name}: {k} shape {cell.params[k].shape} != {v.shape}"
        cell.params[k][...] = v
        assert np.array_equal(cell.params[k], v), f"{name}: writing params[{k!r}] in place did not stick"

    run = cell.forward(d["x"], state={s: d[f"{s}0"] for s in states})
    g = cell.backward(
        run,
        d_outputs={"h": d["dY"]},  # no gradient injected on elman's y
        d_state={s: d[f"d{s}T"] for s in states},
    )

    checks = [("outputs['h']", run.outputs["h"], d["out"])]
    checks += [(f"state[{s!r}]", run.state[s], d[f"{s}T"]) for s in states]
    checks += [(f"grad params[{k!r}]", g.params[k], v) for k, v in sorted(want_grads.items())]
    checks += [("grad inputs['x']", g.inputs["x"], d["grad_x"])]
    checks += [(f"grad state[{s!r}]", g.state[s], d[f"grad_{s}0"]) for s in states]

    errors = {label: rel_err(got, want) for label, got, want in checks}
    bad = {label: e for label, e in errors.items() if not e < RTOL}
    assert not bad, f"{name}: max relative error >= {RTOL:g}: " + ", ".join(
        f"{label}: {e:.3g}" for label, e in bad.items()
    )

    if name == "rnn_tanh":
        for k in ("W_hy", "b_y"):
            gk = np.asarray(g.params[k])
            assert gk.shape == cell.params[k].shape, f"grad {k} shape {gk.shape}"
            assert np.all(gk == 0), f"grad {k} should be exactly zero with no gradient on y"
