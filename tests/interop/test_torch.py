"""rnndsl.torch.Module: a spec's cell as a torch.nn.Module.

Its gradients come from the cell's own BPTT through a torch.autograd.Function; they are
checked by torch.autograd.gradcheck (float64, finite differences, on the interpreter and
the compiled cpu kernels), and directions against the cell run by hand on reversed
sequences. `import rnndsl` must not import torch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnndsl  # noqa: E402
import rnndsl.torch as rt  # noqa: E402
from tiny_cells import GENERATOR  # noqa: E402  (tests/ is on sys.path)

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "specs"
T, B = 4, 3


def test_import_rnndsl_does_not_import_torch():
    """The core never imports torch: only rnndsl.torch (and rnndsl/interop) do."""
    probe = ("import sys, numpy as np, rnndsl\n"
             f"cell = rnndsl.load({str(SPECS / 'gru.rnn')!r}, target='interp')(I=2, H=3)\n"
             "cell.forward(np.ones((2, 1, 2), np.float32))\n"
             "assert 'torch' not in sys.modules, 'rnndsl imported torch'\n"
             "import rnndsl.torch\n"
             "assert 'torch' in sys.modules\n")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-30))


def _params(module):
    return {n: p.detach().clone().requires_grad_(True) for n, p in module.named_parameters()}


def _gradcheck(module, x, state=None, lengths=None):
    """gradcheck over x, the initial states and every param, through functional_call."""
    params = _params(module)
    names = list(params)
    state = state or {}
    keys = list(state)

    def f(x, *rest):
        p = dict(zip(names, rest[:len(names)]))
        s = dict(zip(keys, rest[len(names):]))
        out, final = torch.func.functional_call(module, p, (x,),
                                                {"state": s or None, "lengths": lengths})
        outs = list(out.values()) if isinstance(out, dict) else [out]
        return tuple(outs) + tuple(final.values())

    inputs = (x.requires_grad_(True), *params.values(),
              *(v.requires_grad_(True) for v in state.values()))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_interp_two_outputs_bidirectional_with_lengths():
    """Elman (outputs y and h: a dict), both directions, lengths, given initial states."""
    m = rt.Module(SPECS / "elman.rnn", target="interp", dtype=torch.float64,
                  direction="bidirectional", I=2, H=3, O=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, 2, dtype=torch.float64, generator=g)
    state = {"h": torch.randn(B, 3, dtype=torch.float64, generator=g),
             "h_reverse": torch.randn(B, 3, dtype=torch.float64, generator=g)}
    _gradcheck(m, x, state, lengths=[T, 2, 1])


def test_gradcheck_stacked_layers_batch_first():
    """A stacked spec (params l1.W_i, ...: a submodule per layer), batch_first, reverse;
    its token input given as ids (B, T), which have no gradient."""
    m = rt.Module(SPECS / "char_lstm.rnn", target="interp", dtype=torch.float64,
                  direction="reverse", batch_first=True, V=3, H=2)
    assert "l1.W_i" in m.state_dict() and isinstance(m.l1, torch.nn.Module)
    ids = torch.randint(0, 3, (B, T), generator=torch.Generator().manual_seed(2))
    out, _ = m(ids)
    assert out.shape == (B, T, 3)
    one_hot = torch.nn.functional.one_hot(ids, 3).double()       # the same, as rows
    assert torch.equal(m(one_hot)[0], out)
    params = _params(m)
    names = list(params)

    def f(*ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (ids,))[0]
    assert torch.autograd.gradcheck(f, tuple(params.values()), eps=1e-6, atol=1e-7)


def test_the_cell_reads_the_parameters_memory():
    """Zero copy: the cell's params are views of the nn.Parameters, rebound each call."""
    m = rt.Module(SPECS / "gru.rnn", target="interp", I=2, H=3)
    m(torch.zeros(T, B, 2))
    cell = m._cell(np.dtype(np.float32), "")
    for name, p in m.named_parameters():
        assert np.shares_memory(cell.params[name], p.detach().numpy()), name


def test_gradcheck_compiled_cpu_kernels():
    """The compiled cpu kernels (float64): PyTorch's GRU spec, forward and reverse."""
    path, cell = rt.torch_spec("GRU")
    for direction in ("forward", "bidirectional"):
        m = rt.Module(path, cell=cell, target="cpu", dtype=torch.float64,
                      direction=direction, I=2, H=3)
        x = torch.randn(T, B, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        _gradcheck(m, x, {"h": torch.randn(B, 3, dtype=torch.float64)}, lengths=[3, T, 1])


def test_both_directions_in_one_call_match_a_call_a_direction(monkeypatch):
    """A bidirectional layer on the cpu target is one call over both directions (at
    once, each sequence reversed in NumPy); a call a direction (reversed by torch ops,
    the cuda target's way) gives the same outputs, states and gradients, lengths and
    initial states of both directions included, for a Module and a TorchRNN."""
    import rnndsl.interop.torch as glue
    gen = torch.Generator().manual_seed(5)
    module = rt.Module(SPECS / "lstm.rnn", target="cpu", dtype=torch.float64,
                       direction="bidirectional", I=2, H=3)
    stacked = rt.TorchRNN("GRU", 2, 3, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(T, B, 2, dtype=torch.float64, generator=gen)
    cases = [(module, {"h_reverse": torch.randn(B, 3, dtype=torch.float64, generator=gen)}),
             (stacked, torch.randn(4, B, 3, dtype=torch.float64, generator=gen))]

    def run(m, state):
        xs = x.clone().requires_grad_(True)
        y, finals = m(xs, state, lengths=[3, T, 1])
        finals = finals if isinstance(finals, dict) else {"h_n": finals}
        weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        ((y * weights).sum() + sum(f.sum() for f in finals.values())).backward()
        grads = {"x": xs.grad, **{n: p.grad.clone() for n, p in m.named_parameters()}}
        m.zero_grad()
        return [y.detach(), *finals.values(), *grads.values()]

    for m, state in cases:
        together = run(m, state)
        assert (glue.both_at_once("cpu"), glue.both_at_once("cuda")) == (True, False)
        monkeypatch.setattr(glue, "BOTH_AT_ONCE", False)
        apart = run(m, state)
        monkeypatch.setattr(glue, "BOTH_AT_ONCE", True)
        assert len(together) == len(apart)
        for a, b in zip(together, apart):
            assert rel_err(a, b) < 1e-12


def test_reverse_direction_reads_each_sequence_backwards_from_its_end():
    """direction='reverse' with lengths is the cell run by hand on each sequence reversed
    within its length; bidirectional is forward and reverse, concatenated, forward first."""
    kw = dict(target="interp", dtype=torch.float64, I=2, H=3, seed=4)
    bi = rt.Module(SPECS / "gru.rnn", direction="bidirectional", **kw)
    cell = rnndsl.load(SPECS / "gru.rnn", target="interp")(I=2, H=3, dtype=np.float64)
    x = torch.randn(T, B, 2, dtype=torch.float64)
    lengths = [2, T, 3]
    out, state = bi(x, lengths=lengths)
    assert out.shape == (T, B, 6)
    for suffix, half in (("", out[..., :3]), ("_reverse", out[..., 3:])):
        for name in cell.params:
            cell.params[name] = bi.state_dict()[name + suffix].numpy()
        for b, n in enumerate(lengths):
            seq = x[:n, b:b + 1].numpy()
            run = cell.forward(seq[::-1].copy() if suffix else seq)
            want = run.outputs["h"][::-1] if suffix else run.outputs["h"]
            assert np.allclose(half[:n, b:b + 1].detach().numpy(), want, rtol=0, atol=1e-12)
            assert np.all(half[n:, b].detach().numpy() == 0)       # padding: zeros
            assert np.allclose(state["h" + suffix][b].detach().numpy(), run.state["h"][0],
                               rtol=0, atol=1e-12)


def test_trains_with_torch_optim_and_state_dict_round_trips():
    torch.manual_seed(0)
    m = rt.Module(SPECS / "lstm.rnn", target="interp", I=2, H=4)      # float32
    x = torch.randn(T, B, 2)
    target = torch.randn(T, B, 4) * 0.5
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        out, _ = m(x)
        loss = ((out - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    other = rt.Module(SPECS / "lstm.rnn", target="interp", I=2, H=4, seed=9)
    assert not torch.equal(other(x)[0], m(x)[0])
    other.load_state_dict(m.state_dict())
    assert torch.equal(other(x)[0], m(x)[0])
    assert m.state_dict().keys() == other.state_dict().keys()
    m.double()                             # the params' dtype picks the cell's
    assert m(x.double())[0].dtype == torch.float64


def test_changing_a_param_in_place_before_backward_raises():
    m = rt.Module(SPECS / "gru.rnn", target="interp", I=2, H=3)
    out, _ = m(torch.randn(T, B, 2))
    with torch.no_grad():
        m.W_r.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_a_double_backward_is_refused_not_silently_first_order(target="interp"):
    """An input-gradient penalty through a cell: torch.autograd's once_differentiable
    alone let the gradient through with no graph when the cotangents need none (y.sum()'s),
    and the penalty's part of the gradient was dropped in silence. Now the gradient
    taken with create_graph=True can be used, and differentiating it raises. (The
    compiled targets run the same torch Function.)"""
    m = rt.Module(SPECS / "gru.rnn", target=target, dtype=torch.float64, I=2, H=3)
    x = torch.randn(T, B, 2, dtype=torch.float64, requires_grad=True)
    y, _ = m(x)
    g, = torch.autograd.grad(y.sum(), x, create_graph=True)
    assert g.requires_grad
    with pytest.raises(rnndsl.TargetError, match="differentiate once"):
        (y.sum() + g.pow(2).sum()).backward()
    y, _ = m(x)                                       # without create_graph: as before
    g2, = torch.autograd.grad(y.sum(), x)
    assert not g2.requires_grad
    torch.testing.assert_close(g2, g.detach(), rtol=0, atol=0)


def test_torch_func_grad_and_vjp_match_torch_and_vmap_is_refused():
    """torch.func's transforms take the cell's Function (written with setup_context);
    the cotangents they hand its backward are read with their layers off. vmap (and
    jacrev, which batches with it) is refused by name."""
    torch.manual_seed(0)
    m = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    r = rt.from_torch(m, target="interp")
    x = torch.randn(5, 2, 3, dtype=torch.float64)

    def loss(module):
        return lambda p, xx: torch.func.functional_call(module, p, (xx,))[0].pow(2).sum()
    got = torch.func.grad(loss(r), argnums=(0, 1))(
        {k: v.detach() for k, v in r.named_parameters()}, x)
    want = torch.func.grad(loss(m), argnums=(0, 1))(
        {k: v.detach() for k, v in m.named_parameters()}, x)
    for k in want[0]:
        torch.testing.assert_close(got[0][k], want[0][k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-12)
    v = torch.randn(5, 2, 8, dtype=torch.float64)
    (a,), (b,) = (torch.func.vjp(lambda xx: mod(xx)[0], x)[1](v) for mod in (r, m))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(rnndsl.TargetError, match="vmap"):
        torch.func.jacrev(lambda xx: r(xx)[0])(x)
    with pytest.raises(rnndsl.TargetError, match="batched by torch.func.vmap"):
        torch.func.vmap(lambda xx: r(xx)[0])(x[None].expand(2, -1, -1, -1))
    with pytest.raises(rnndsl.TargetError, match="differentiate once"):
        torch.func.grad(lambda xx: torch.func.grad(lambda y: r(y)[0].sum())(xx).sum())(x)


def test_mistakes_are_rnndsl_errors():
    kw = dict(target="interp", I=2, H=3)
    with pytest.raises(rnndsl.BindError, match="direction 'sideways'"):
        rt.Module(SPECS / "gru.rnn", direction="sideways", **kw)
    with pytest.raises(rnndsl.BindError, match="torch.float32 or torch.float64"):
        rt.Module(SPECS / "gru.rnn", dtype=torch.float16, **kw)
    m = rt.Module(SPECS / "gru.rnn", **kw)
    with pytest.raises(rnndsl.BindError, match=r"input x is torch.float64 .* float32"):
        m(torch.zeros(T, B, 2, dtype=torch.float64))
    with pytest.raises(rnndsl.BindError, match="no state c; the states are: h"):
        m(torch.zeros(T, B, 2), state={"c": torch.zeros(B, 3)})
    with pytest.raises(rnndsl.BindError, match=r"state h is torch.float64 .* "
                                               r"convert it with .to\(torch.float32\)"):
        m(torch.zeros(T, B, 2), state={"h": torch.zeros(B, 3, dtype=torch.float64)})
    with pytest.raises(rnndsl.BindError, match="must be a torch.Tensor"):
        m(np.zeros((T, B, 2), np.float32))
    with pytest.raises(rnndsl.BindError, match="shape"):      # the cell's own check
        m(torch.zeros(T, B, 5))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_a_cell_of_input_once_only_runs_for_steps(tmp_path, direction):
    """Module.forward had no steps=: such a cell could not run (its error advised a
    steps= that forward refused), and in reverse a bare StopIteration. Now it runs for
    `steps`, as the cell's own forward does, gradients included."""
    spec = tmp_path / "gen.rnn"
    spec.write_text(GENERATOR)
    m = rt.Module(spec, target="interp", dtype=torch.float64, direction=direction, Z=2, H=3)
    z = torch.randn(B, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with pytest.raises(rnndsl.BindError, match="say how many steps to run with steps=T"):
        m(z)
    cell = rnndsl.load(spec, target="interp")(Z=2, H=3, dtype=np.float64,
                                               direction=direction)
    for name, p in m.named_parameters():
        cell.params[name][...] = p.detach().numpy()
    lengths = [1, 4, 2]
    y, state = m(z, steps=4, lengths=lengths)
    run = cell.forward(z.numpy(), steps=4, lengths=lengths)
    assert y.shape == run.outputs["y"].shape == (4, B, 2 if direction == "bidirectional"
                                                  else 1)
    np.testing.assert_array_equal(y.detach().numpy(), run.outputs["y"])
    assert sorted(state) == sorted(run.state)
    for name in state:
        np.testing.assert_array_equal(state[name].detach().numpy(), run.state[name])
    assert torch.autograd.gradcheck(lambda z: m(z, steps=3, lengths=[3, 1, 2])[0],
                                    (z.requires_grad_(True),))


def test_a_bidirectional_module_cannot_name_two_params_alike(tmp_path):
    spec = tmp_path / "clash.rnn"
    spec.write_text("cell Clash {\n  dims I, H\n  input x[I]\n  state h[H]\n"
                    "  param W[H, I], W_reverse[H, H]\n  h' = tanh(W @ x + W_reverse @ h)\n"
                    "  output h'\n}\n")
    with pytest.raises(rnndsl.BindError, match="its param W_reverse would share its name"):
        rt.Module(spec, target="interp", direction="bidirectional", I=2, H=2)


def test_a_parametrized_module_deep_copies_after_it_has_run():
    """torch's parametrize (weight_norm, orthogonal) deep-copies a module's __dict__,
    the cells it caches with it: that failed once a forward had run (cannot pickle
    'mappingproxy'), and EMA or AveragedModel copies of such a model with it."""
    import copy
    from torch.nn.utils.parametrizations import orthogonal
    m = rt.Module(SPECS / "lstm.rnn", target="interp", dtype=torch.float64, I=2, H=3)
    orthogonal(m, "U_f")
    x = torch.randn(T, B, 2, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)[0]
    twin = copy.deepcopy(m)
    with torch.no_grad():
        assert torch.equal(twin(x)[0], y)
        twin.W_i.zero_()
        assert not torch.equal(twin(x)[0], y) and torch.equal(m(x)[0], y)


def test_bad_lengths_are_refused_before_they_index_anything():
    m = rt.Module(SPECS / "gru.rnn", target="interp", direction="reverse", I=2, H=3)
    with pytest.raises(rnndsl.BindError, match="lengths must lie in 0..T"):
        m(torch.zeros(T, B, 2), lengths=[T + 1, 1, 1])
    with pytest.raises(rnndsl.BindError, match=f"lengths must be {B} integers"):
        m(torch.zeros(T, B, 2), lengths=[1, 1])


def test_to_cell_holds_the_modules_weights_for_each_direction():
    """to_cell(): an rnndsl cell with copies of the module's current weights, which
    computes what the module's direction computes (the reverse one on reversed
    sequences); a bidirectional module needs to be told which."""
    m = rt.Module(SPECS / "gru.rnn", target="interp", dtype=torch.float64,
                  direction="bidirectional", I=2, H=3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.25)                       # trained weights, not the initial ones
    x = torch.randn(T, B, 2, dtype=torch.float64)
    out, _ = m(x)
    fwd, rev = m.to_cell("forward"), m.to_cell("reverse")
    assert np.allclose(fwd.params["W_r"], m.W_r.detach().numpy())
    assert np.allclose(rev.params["W_r"], m.W_r_reverse.detach().numpy())
    H = 3
    y_fwd = fwd.forward(x.numpy()).outputs["h"]
    y_rev = rev.forward(x.numpy()[::-1].copy()).outputs["h"][::-1]
    assert np.allclose(out[..., :H].detach().numpy(), y_fwd, rtol=1e-12, atol=1e-12)
    assert np.allclose(out[..., H:2 * H].detach().numpy(), y_rev, rtol=1e-12, atol=1e-12)
    with pytest.raises(rnndsl.BindError, match="direction='forward' or direction='reverse'"):
        m.to_cell()
    one = rt.Module(SPECS / "gru.rnn", target="interp", I=2, H=3)
    assert one.to_cell().params.keys() == fwd.params.keys()


DROPPED = """cell Dropped {
  dims I, H
  input x[I]
  state h[H]
  param W[H, I], U[H, H], b[H]
  h' = tanh(W @ dropout(x, 0.5) + U @ h + b)
  output h'
}
"""


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_dropout_sites_drop_in_training_mode_only(tmp_path, direction):
    """A spec's dropout(...) drops units while the module trains (masks drawn from
    torch's generator: torch.manual_seed repeats them) and keeps every unit in eval mode;
    the gradient is the one of the masks drawn (finite differences, masks reseeded)."""
    path = tmp_path / "dropped.rnn"
    path.write_text(DROPPED)
    m = rt.Module(path, target="interp", dtype=torch.float64, direction=direction,
                  I=6, H=3)
    x = torch.randn(T, B, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    m.eval()
    kept, _ = m(x)
    cell = m.to_cell() if direction == "forward" else None
    if cell is not None:     # eval mode: the cell with every unit kept
        want = cell.forward(x.numpy()).outputs["h"]
        np.testing.assert_allclose(kept.detach().numpy(), want, rtol=1e-12)
    m.train()
    torch.manual_seed(5)
    a, _ = m(x)
    b, _ = m(x)
    torch.manual_seed(5)
    again, _ = m(x)
    assert not torch.equal(a, b) and not torch.equal(a, kept)
    assert torch.equal(a, again)
    params = _params(m)
    names = list(params)

    def f(xx, *ps):
        torch.manual_seed(7)
        return torch.func.functional_call(m, dict(zip(names, ps)), (xx,))[0]
    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(True), *params.values()),
                                    eps=1e-6, atol=1e-7, rtol=1e-5)
