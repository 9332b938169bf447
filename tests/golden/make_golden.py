"""Generate the PyTorch golden reference cases for tests/cells/test_pytorch_golden.py.

Run from the repository root with the separate PyTorch venv:

    /work/torchvenv/bin/python tests/golden/make_golden.py

It (re)writes rnn_tanh.npz, rnn_relu.npz, lstm.npz and gru.npz next to this script.
Everything is float64 with a fixed seed, and the .npz files are written with fixed zip
timestamps, so running it twice gives byte-identical files.

Each case is one single-layer, time-major (batch_first=False) torch module with every
weight, the input and the initial state(s) drawn at random (nothing is zero), a loss

    L = sum(out * dY) + sum(hT * dhT) [+ sum(cT * dcT) for the LSTM]

with random dY, dhT (, dcT), and the gradients of L with respect to the weights, the
input x and the initial state(s). h0/c0/hT/cT are stored without torch's leading
num_layers axis, i.e. shaped (B, H).
"""

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

T, B, I, H = 5, 3, 4, 6
SEED = 20240601
HERE = Path(__file__).resolve().parent

# (file stem, torch module factory, has cell state)
CASES = [
    ("rnn_tanh", lambda: torch.nn.RNN(I, H, num_layers=1, nonlinearity="tanh"), False),
    ("rnn_relu", lambda: torch.nn.RNN(I, H, num_layers=1, nonlinearity="relu"), False),
    ("lstm", lambda: torch.nn.LSTM(I, H, num_layers=1), True),
    ("gru", lambda: torch.nn.GRU(I, H, num_layers=1), False),
]

PARAM_NAMES = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]


def uniform(gen, shape, lo, hi):
    return torch.rand(shape, generator=gen) * (hi - lo) + lo


def nonzero_uniform(gen, shape, lo, hi, margin=0.05):
    """Uniform in [lo, hi] but with |value| >= margin, so nothing is (nearly) zero."""
    v = uniform(gen, shape, lo, hi)
    return torch.where(v.abs() < margin, torch.sign(v + 1e-300) * margin + v, v)


def relu_preactivations(mod, x, h0):
    """Pre-activations of the relu RNN at every step, shape (T, B, H)."""
    w_ih, w_hh, b_ih, b_hh = (getattr(mod, n) for n in PARAM_NAMES)
    h = h0[0]
    pres = []
    for t in range(x.shape[0]):
        a = x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        pres.append(a)
        h = torch.relu(a)
    return torch.stack(pres)


def make_case(name, factory, has_c, gen):
    mod = factory()
    with torch.no_grad():
        for pname in PARAM_NAMES:
            p = getattr(mod, pname)
            p.copy_(nonzero_uniform(gen, p.shape, -0.5, 0.5))

    x = nonzero_uniform(gen, (T, B, I), -1.0, 1.0).requires_grad_(True)
    h0 = nonzero_uniform(gen, (1, B, H), -0.5, 0.5).requires_grad_(True)
    c0 = nonzero_uniform(gen, (1, B, H), -0.5, 0.5).requires_grad_(True) if has_c else None
    dY = nonzero_uniform(gen, (T, B, H), -1.0, 1.0)
    dhT = nonzero_uniform(gen, (1, B, H), -1.0, 1.0)
    dcT = nonzero_uniform(gen, (1, B, H), -1.0, 1.0) if has_c else None

    if has_c:
        out, (hT, cT) = mod(x, (h0, c0))
        loss = (out * dY).sum() + (hT * dhT).sum() + (cT * dcT).sum()
    else:
        out, hT = mod(x, h0)
        loss = (out * dY).sum() + (hT * dhT).sum()
    loss.backward()

    if name == "rnn_relu":
        # Keep every pre-activation clear of relu's kink, so that round-off in another
        # implementation cannot flip a unit between active and inactive.
        with torch.no_grad():
            pre = relu_preactivations(mod, x, h0)
        margin = pre.abs().min().item()
        if margin < 1e-3:
            raise RuntimeError(f"relu pre-activation too close to 0 ({margin:g}); change SEED")
        frac = (pre > 0).double().mean().item()
        print(f"  rnn_relu: min |pre-activation| = {margin:.3g}, active fraction = {frac:.2f}")

    def np_(t):
        a = t.detach().cpu().numpy()
        assert a.dtype == np.float64, (name, a.dtype)
        return np.ascontiguousarray(a)

    arrays = {
        "x": np_(x),
        "h0": np_(h0[0]),
        "dY": np_(dY),
        "dhT": np_(dhT[0]),
        "out": np_(out),
        "hT": np_(hT[0]),
        "grad_x": np_(x.grad),
        "grad_h0": np_(h0.grad[0]),
    }
    if has_c:
        arrays.update(c0=np_(c0[0]), dcT=np_(dcT[0]), cT=np_(cT[0]), grad_c0=np_(c0.grad[0]))
    for pname in PARAM_NAMES:
        p = getattr(mod, pname)
        arrays[pname] = np_(p)
        arrays["grad_" + pname] = np_(p.grad)

    arrays["torch_version"] = np.array(torch.__version__)
    arrays["case"] = np.array(name)
    for k, v in (("T", T), ("B", B), ("I", I), ("H", H), ("seed", SEED)):
        arrays[k] = np.array(v, dtype=np.int64)
    return arrays


def save_npz_deterministic(path, arrays):
    """Like np.savez_compressed, but with fixed member order and timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    path.write_bytes(buf.getvalue())


def main():
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(SEED)
    print(f"torch {torch.__version__}, numpy {np.__version__}, T={T} B={B} I={I} H={H}")
    for name, factory, has_c in CASES:
        arrays = make_case(name, factory, has_c, gen)
        path = HERE / f"{name}.npz"
        save_npz_deterministic(path, arrays)
        print(f"  wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
              f" ({path.stat().st_size} bytes, {len(arrays)} arrays)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
