"""rnndsl.torch on the cuda target: CPU tensors (numba-cuda's simulator, here and in CI)
and CUDA tensors (a real GPU only: RNNDSL_REAL_GPU=1 with torch built for CUDA, which
`.ci/gpu` runs where a session is lent one).

On a GPU the kernels read and write torch's device memory through
`__cuda_array_interface__`; each result is checked against the same module's weights run
on the cpu target, in float64, outputs, final states and every gradient.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba_cuda")

import rnndsl  # noqa: E402
import rnndsl.torch as rt  # noqa: E402
from rnndsl.interop.torch import one_device  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"
T, B, I, H = 3, 2, 2, 3

GPU = os.environ.get("RNNDSL_REAL_GPU") == "1" and torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU and RNNDSL_REAL_GPU=1 "
                               "(.ci/gpu runs these where a session is lent one)")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-30))


def twins(spec: str, device: str, **kw):
    """The same weights in a cuda-target module on `device` and a cpu-target module."""
    gpu = rt.Module(SPECS / spec, target="cuda", dtype=torch.float64, **kw)
    cpu = rt.Module(SPECS / spec, target="cpu", dtype=torch.float64, **kw)
    cpu.load_state_dict(gpu.state_dict())
    return gpu.to(device), cpu


def outputs_and_grads(module, x, state=None, lengths=None):
    """Outputs, final states, and the gradients of a fixed weighting of all of them
    with respect to the input, the initial states and every param."""
    x = x.detach().clone().requires_grad_(True)
    state = {k: v.detach().clone().requires_grad_(True) for k, v in (state or {}).items()}
    y, finals = module(x, state or None, lengths)
    ys = y if isinstance(y, dict) else {"y": y}
    loss = sum((v * torch.linspace(-1, 1, v.numel(), dtype=v.dtype, device=v.device)
                .reshape(v.shape)).sum() for v in (*ys.values(), *finals.values()))
    loss.backward()
    grads = {"x": x.grad, **{f"state {k}": v.grad for k, v in state.items()},
             **{n: p.grad for n, p in module.named_parameters()}}
    return ys, finals, grads


def assert_same(a, b, tol: float = 1e-10):
    """(outputs, finals, grads) of two runs agree, name by name."""
    for part_a, part_b in zip(a, b):
        assert part_a.keys() == part_b.keys()
        for k in part_a:
            assert rel_err(part_a[k], part_b[k]) < tol, k


# ---------------------------------------------------------------------- here (simulator)
def test_cpu_tensors_on_the_cuda_target_match_the_cpu_target():
    """CPU tensors on the cuda target (copied to the device and back each call): the
    same outputs, states and gradients as the cpu target's kernels."""
    gpu, cpu = twins("lstm.rnn", "cpu", I=I, H=H)
    x = torch.randn(T, B, I, dtype=torch.float64)
    state = {"h": torch.randn(B, H, dtype=torch.float64)}
    got = outputs_and_grads(gpu, x, state, lengths=[3, 2])
    assert all(v.device.type == "cpu" for v in got[0].values())
    assert_same(got, outputs_and_grads(cpu, x, state, lengths=[3, 2]))


def test_a_bidirectional_module_on_the_cuda_target_matches_the_cpu_target():
    """The cuda target runs a call a direction (reversed by torch ops), the cpu target
    one call over both (rnndsl.interop.torch.both_at_once): the same results."""
    gpu, cpu = twins("gru.rnn", "cpu", I=I, H=H, direction="bidirectional")
    x = torch.randn(T, B, I, dtype=torch.float64)
    state = {"h_reverse": torch.randn(B, H, dtype=torch.float64)}
    assert_same(outputs_and_grads(gpu, x, state, lengths=[1, 3]),
                outputs_and_grads(cpu, x, state, lengths=[1, 3]))


def test_tensors_on_a_device_the_target_does_not_run_on_are_refused():
    m = rt.Module(SPECS / "gru.rnn", target="cpu", I=I, H=H)
    with pytest.raises(rnndsl.TargetError, match=r"meta.*run on CPU tensors, and on CUDA "
                       r"tensors with target='cuda'"):
        m(torch.zeros(T, B, I, device="meta"))
    with pytest.raises(rnndsl.BindError, match="is on meta"):
        rt.from_torch(torch.nn.GRU(I, H, device="meta"), target="interp")


def test_tensors_of_one_call_on_two_devices_are_refused_in_torchs_words():
    with pytest.raises(rnndsl.BindError, match=r"same device, but found at least two "
                       r"devices, cpu \(input x\) and meta \(param W\)"):
        one_device({"input x": torch.zeros(1), "param W": torch.zeros(1, device="meta")})
    assert one_device({"input x": torch.zeros(1)}) == torch.device("cpu")


# ---------------------------------------------------------------------- on a GPU
@needs_gpu
def test_cuda_tensors_in_cuda_tensors_out_matching_the_cpu_target():
    gpu, cpu = twins("lstm.rnn", "cuda", I=I, H=H)
    x = torch.randn(T, B, I, dtype=torch.float64)
    state = {"c": torch.randn(B, H, dtype=torch.float64)}
    got = outputs_and_grads(gpu, x.cuda(), {k: v.cuda() for k, v in state.items()})
    assert all(v.is_cuda for part in got for v in part.values())
    assert_same(got, outputs_and_grads(cpu, x, state))


@needs_gpu
def test_a_bidirectional_module_with_lengths_on_the_gpu():
    gpu, cpu = twins("gru.rnn", "cuda", I=I, H=H, direction="bidirectional")
    x = torch.randn(T, B, I, dtype=torch.float64)
    got = outputs_and_grads(gpu, x.cuda(), lengths=torch.tensor([2, 3]))
    assert_same(got, outputs_and_grads(cpu, x, lengths=torch.tensor([2, 3])))


@needs_gpu
def test_token_ids_on_the_gpu():
    """An `input token`'s ids may be CUDA tensors too (they go through the host)."""
    spec = SPECS / "char_lstm.rnn"
    gpu = rt.Module(spec, target="cuda", dtype=torch.float64, V=5, H=4).cuda()
    cpu = rt.Module(spec, target="cpu", dtype=torch.float64, V=5, H=4)
    cpu.load_state_dict(gpu.state_dict())
    ids = torch.randint(0, 5, (T, B))
    y_gpu, _ = gpu(ids.cuda())
    y_cpu, _ = cpu(ids)
    for k in (y_cpu if isinstance(y_cpu, dict) else {"y": y_cpu}):
        a = y_gpu[k] if isinstance(y_gpu, dict) else y_gpu
        b = y_cpu[k] if isinstance(y_cpu, dict) else y_cpu
        assert a.is_cuda and rel_err(a, b) < 1e-10


@needs_gpu
def test_gradcheck_on_the_gpu():
    m = rt.Module(SPECS / "elman.rnn", target="cuda", dtype=torch.float64,
                  I=2, H=3, O=2).cuda()
    x = torch.randn(T, B, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: m(x)[0]["y"], (x,))


@needs_gpu
def test_from_torch_on_the_gpu_matches_torch_and_stays_there():
    torch.backends.cudnn.allow_tf32 = False
    m = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64).cuda()
    r = rt.from_torch(m, target="cuda")
    assert all(p.is_cuda for p in r.parameters())
    x = torch.randn(T, B, I, dtype=torch.float64, device="cuda")
    (y_r, (h_r, c_r)), (y_m, (h_m, c_m)) = r(x), m(x)
    for a, b in ((y_r, y_m), (h_r, h_m), (c_r, c_m)):
        assert a.is_cuda and rel_err(a, b) < 1e-10
    y_r.sum().backward()
    y_m.sum().backward()
    for (name, p), q in zip(r.named_parameters(), m.parameters()):
        assert rel_err(p.grad, q.grad) < 1e-10, name
    back = r.to_torch()
    assert all(p.is_cuda for p in back.parameters())


@needs_gpu
def test_a_mixed_call_and_the_cpu_target_are_refused_with_cuda_tensors():
    m = rt.Module(SPECS / "gru.rnn", target="cuda", I=I, H=H).cuda()
    with pytest.raises(rnndsl.BindError, match="same device"):
        m(torch.zeros(T, B, I))                      # params on the GPU, input on the CPU
    cpu = rt.Module(SPECS / "gru.rnn", target="cpu", I=I, H=H)
    with pytest.raises(rnndsl.TargetError, match="target='cuda'"):
        cpu(torch.zeros(T, B, I, device="cuda"))


@needs_gpu
def test_trains_on_the_gpu_with_torch_optim():
    torch.manual_seed(0)
    m = rt.Module(SPECS / "lstm.rnn", target="cuda", I=I, H=H).cuda()
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    x = torch.randn(8, 4, I, device="cuda")
    target = torch.randn(8, 4, H, device="cuda").tanh()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = ((m(x)[0] - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert np.isfinite(losses).all()
