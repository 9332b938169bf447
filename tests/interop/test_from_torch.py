"""rnndsl.torch.from_torch against the real torch.nn.RNN / LSTM / GRU (torch 2.13).

Each case builds a torch module with random weights, converts it, and compares outputs,
final states and the gradients of every parameter, of x and of the initial states, in
float64 to 1e-10 (the interpreter) and float32 to 1e-5 (the compiled cpu kernels).
The reference is torch itself, never a number written here.
"""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

import rnndsl  # noqa: E402
import rnndsl.lang.shipped  # noqa: E402
import rnndsl.torch as rt  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

KINDS = {   # name -> (torch class, extra kwargs)
    "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
    "lstm": ("LSTM", {}),
    "lstm_proj": ("LSTM", {"proj_size": 2}),
    "gru": ("GRU", {}),
}
I, H, T, B = 3, 4, 4, 3


def rel_err(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-300))


def make(kind, dtype=torch.float64, seed=0, **config):
    cls, extra = KINDS[kind]
    torch.manual_seed(seed)
    m = getattr(torch.nn, cls)(I, H, dtype=dtype, **extra, **config)
    with torch.no_grad():               # larger than torch's starts, so that errors show
        for p in m.parameters():
            p.uniform_(-0.8, 0.8)
    return m


def state_of(m, batch: int, dtype, seed=1):
    """A random hx for m: a tensor, or (h0, c0) for an LSTM."""
    g = torch.Generator().manual_seed(seed)
    n = m.num_layers * (2 if m.bidirectional else 1)
    h_size = getattr(m, "proj_size", 0) or m.hidden_size
    h0 = torch.randn(n, batch, h_size, dtype=dtype, generator=g, requires_grad=True)
    if isinstance(m, torch.nn.LSTM):
        c0 = torch.randn(n, batch, m.hidden_size, dtype=dtype, generator=g,
                         requires_grad=True)
        return (h0, c0)
    return h0


def leaves(hx):
    return list(hx) if isinstance(hx, tuple) else [hx]


def loss_of(output, state, seed=2):
    """A random linear function of everything forward returns: every gradient counts."""
    g = torch.Generator().manual_seed(seed)
    parts = [output] + leaves(state)
    return sum((p * torch.randn(p.shape, dtype=p.dtype, generator=g)).sum() for p in parts)


def compare(m, r, x, hx, tol, lengths=None):
    """Outputs, final states and every gradient of m and r on the same x and hx."""
    results = []
    for module in (m, r):
        xs = x.detach().clone().requires_grad_(True)
        hs = None if hx is None else type(hx)(t.detach().clone().requires_grad_(True)
                                              for t in hx) if isinstance(hx, tuple) else \
            hx.detach().clone().requires_grad_(True)
        feed = xs
        if lengths is not None:
            feed = pack_padded_sequence(xs, lengths, batch_first=m.batch_first,
                                        enforce_sorted=False)
        out, state = module(feed, hs)
        loss_of(out.data if lengths is not None else out, state).backward()
        grads = {n: p.grad for n, p in module.named_parameters()}
        grads["x"] = xs.grad
        if hs is not None:
            grads.update({f"hx{i}": t.grad for i, t in enumerate(leaves(hs))})
        results.append((out.data if lengths is not None else out, leaves(state), grads))
    (o1, s1, g1), (o2, s2, g2) = results
    assert rel_err(o2, o1) < tol
    for a, b in zip(s2, s1):
        assert rel_err(a, b) < tol
    assert g1.keys() == g2.keys()
    for name in g1:
        assert rel_err(g2[name], g1[name]) < tol, name


CONFIGS = [dict(num_layers=n, bias=bias, bidirectional=bi, batch_first=bf)
           for n, bias, bi, bf in itertools.product((1, 2), (True, False), (False, True),
                                                     (False, True))]


@pytest.mark.parametrize("kind", KINDS)
def test_every_configuration_matches_torch_in_float64(kind):
    """Outputs, states and gradients, float64, every num_layers/bias/bidirectional/
    batch_first combination, with and without an initial state (interpreter)."""
    for i, config in enumerate(CONFIGS):
        m = make(kind, seed=i, **config)
        r = rt.from_torch(m, target="interp")
        shape = (B, T, I) if config["batch_first"] else (T, B, I)
        x = torch.randn(shape, dtype=torch.float64)
        hx = state_of(m, B, torch.float64) if i % 2 else None
        compare(m, r, x, hx, 1e-10)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu", "lstm_proj"])
def test_packed_sequences_match_torch(kind):
    """Variable lengths: a PackedSequence into both, unsorted lengths, both directions:
    each reverse pass starts at its own sequence's last step, as torch's does."""
    for batch_first in (False, True):
        m = make(kind, num_layers=2, bidirectional=True, batch_first=batch_first)
        r = rt.from_torch(m, target="interp")
        lengths = torch.tensor([2, T, 1])
        x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=torch.float64)
        compare(m, r, x, state_of(m, B, torch.float64), 1e-10, lengths=lengths)


def test_lengths_keyword_is_the_padded_packed_run():
    """lengths= on a padded batch gives what torch gives for it packed, padded back."""
    from torch.nn.utils.rnn import pad_packed_sequence
    m = make("gru", bidirectional=True)
    r = rt.from_torch(m, target="interp")
    x = torch.randn(T, B, I, dtype=torch.float64)
    lengths = torch.tensor([3, 1, T])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    want, h_want = m(packed)
    got, h_got = r(x, lengths=lengths)
    assert rel_err(got, pad_packed_sequence(want, total_length=T)[0]) < 1e-10
    assert rel_err(h_got, h_want) < 1e-10


# float64 GRU: the compile test_torch.py's gradcheck on the cpu target uses too
@pytest.mark.parametrize("kind, dtype, tol", [("lstm", torch.float32, 1e-5),
                                              ("gru", torch.float64, 1e-10)])
def test_compiled_cpu_kernels_match_torch(kind, dtype, tol):
    """The compiled kernels: two layers, both directions, with and without lengths."""
    m = make(kind, dtype=dtype, num_layers=2, bidirectional=True)
    r = rt.from_torch(m, target="cpu")
    x = torch.randn(T, B, I, dtype=dtype)
    compare(m, r, x, state_of(m, B, dtype), tol)
    compare(m, r, x, state_of(m, B, dtype), tol, lengths=torch.tensor([T, 2, 3]))


def test_unbatched_input_matches_torch():
    m = make("lstm", num_layers=2)
    r = rt.from_torch(m, target="interp")
    x = torch.randn(T, I, dtype=torch.float64)
    (o1, (h1, c1)), (o2, (h2, c2)) = m(x), r(x)
    assert o2.shape == o1.shape and h2.shape == h1.shape
    assert max(rel_err(o2, o1), rel_err(h2, h1), rel_err(c2, c1)) < 1e-10


def test_state_dict_round_trips_and_to_torch_goes_back():
    """m.state_dict() loads into the rnndsl module and comes back unchanged, names,
    shapes and values; to_torch() is a torch module computing the same."""
    m = make("lstm_proj", num_layers=2, bidirectional=True, bias=False)
    r = rt.from_torch(m, target="interp")
    theirs, ours = m.state_dict(), r.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    fresh = rt.TorchRNN("LSTM", I, H, num_layers=2, bidirectional=True, bias=False,
                        proj_size=2, target="interp", dtype=torch.float64)
    assert not all(torch.equal(fresh.state_dict()[k], theirs[k]) for k in theirs)
    fresh.load_state_dict(theirs)
    back = fresh.to_torch()
    assert type(back) is torch.nn.LSTM and back.proj_size == 2 and not back.bias
    assert all(torch.equal(back.state_dict()[k], theirs[k]) for k in theirs)
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert rel_err(back(x)[0], m(x)[0]) == 0.0


@pytest.mark.parametrize("kind", ["lstm_proj", "gru"])
def test_a_batch_of_no_sequences_gives_what_torch_gives(kind):
    """B = 0: empty results of torch's shapes, in the graph (a backward runs)."""
    m = make(kind, num_layers=2, bidirectional=True, batch_first=True)
    r = rt.from_torch(m, target="interp")
    x = torch.zeros(0, T, I, dtype=torch.float64, requires_grad=True)

    def flat(result):
        out, state = result
        return [out, *(state if isinstance(state, tuple) else (state,))]
    ours, theirs = flat(r(x)), flat(m(x))
    assert [t.shape for t in ours] == [t.shape for t in theirs]
    sum(t.sum() for t in ours).backward()
    assert x.grad.shape == x.shape and all(p.grad is not None for p in r.parameters())


def test_an_initial_state_in_another_dtype_is_refused_in_torchs_words():
    r = rt.from_torch(make("gru"), target="interp")
    with pytest.raises(rnndsl.BindError, match=r"initial state h is torch.float32 .* "
                                               r"\.to\(torch.float64\)"):
        r(torch.zeros(T, B, I, dtype=torch.float64), torch.zeros(1, B, H))


def test_frozen_weights_stay_frozen_both_ways():
    """A layer frozen in m (requires_grad=False) is frozen in the copy, so an optimiser
    over its parameters() leaves it alone; to_torch() keeps the flags too."""
    m = make("gru", num_layers=2)
    frozen = {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}
    for name in frozen:
        m.get_parameter(name).requires_grad_(False)
    r = rt.from_torch(m, target="interp")
    assert {n for n, p in r.named_parameters() if not p.requires_grad} == frozen
    r(torch.randn(T, B, I, dtype=torch.float64))[0].sum().backward()
    assert all((p.grad is None) == (n in frozen) for n, p in r.named_parameters())
    back = r.to_torch()
    assert {n for n, p in back.named_parameters() if not p.requires_grad} == frozen


_RELOAD = """
import sys, torch
import rnndsl.torch
model = torch.load(sys.argv[1], weights_only=False)
x = torch.load(sys.argv[2])
with torch.no_grad():
    y = model(x)[0]
torch.save(y, sys.argv[3])
"""


def test_a_pickled_module_loads_in_another_process(tmp_path, target="interp"):
    """torch.save(model) of a from_torch module and of a Module (a spec that uses
    another file), torch.load in a fresh process: the same outputs. The cell classes,
    which have no importable name, are made again from the spec texts the pickle holds
    (on any target the same way: the interpreter's keeps the test fast)."""
    import subprocess
    import sys
    m = make("lstm", num_layers=2, bidirectional=True)
    spec = tmp_path / "cells.rnn"            # a spec file that uses another
    (tmp_path / "parts.rnn").write_text((rnndsl.lang.shipped.specs_dir() / "gru.rnn").read_text())
    spec.write_text('use "parts.rnn"\n')
    modules = {"from_torch": rt.from_torch(m, target=target),
               "Module": rt.Module(spec, cell="GRU", target=target, dtype=torch.float64,
                                   I=I, H=H)}
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.save(x, tmp_path / "x.pt")
    for name, module in modules.items():
        torch.save(module, tmp_path / f"{name}.pt")
    for path in (spec, tmp_path / "parts.rnn"):       # the pickle carries their texts
        path.rename(path.with_suffix(".moved"))
    (tmp_path / "gone").mkdir()
    for name, module in modules.items():
        run = subprocess.run([sys.executable, "-c", _RELOAD, str(tmp_path / f"{name}.pt"),
                              str(tmp_path / "x.pt"), str(tmp_path / f"{name}.y.pt")],
                             capture_output=True, text=True, timeout=300,
                             cwd=tmp_path / "gone")
        assert run.returncode == 0, run.stderr[-2000:]
        with torch.no_grad():
            want = module(x)[0]
        assert rel_err(torch.load(tmp_path / f"{name}.y.pt"), want) == 0.0, name


def test_a_training_step_with_torch_optim_matches_torch():
    """One Adam step on each, from the same weights: the same weights after it."""
    m = make("gru", num_layers=2)
    r = rt.from_torch(m, target="interp")
    x = torch.randn(T, B, I, dtype=torch.float64)
    for module in (m, r):
        opt = torch.optim.Adam(module.parameters(), lr=0.05)
        for _ in range(2):
            opt.zero_grad()
            out, h = module(x)
            (out ** 2).mean().backward()
            opt.step()
    for name, p in m.named_parameters():
        assert rel_err(r.state_dict()[name], p) < 1e-10, name


def test_from_torch_refuses_what_it_cannot_convert():
    with pytest.raises(rnndsl.BindError, match="torch.nn.RNN, LSTM or GRU"):
        rt.from_torch(torch.nn.Linear(3, 4))
    r = rt.from_torch(make("lstm"), target="interp")
    with pytest.raises(rnndsl.BindError, match=r"tuple \(h_0, c_0\)"):
        r(torch.zeros(T, B, I, dtype=torch.float64), torch.zeros(1, B, H, dtype=torch.float64))
    with pytest.raises(rnndsl.BindError, match=r"input is torch.float32 .* torch.float64"):
        r(torch.zeros(T, B, I))
    with pytest.raises(rnndsl.BindError, match=r"expected \(num_layers \* num_directions"):
        r(torch.zeros(T, B, I, dtype=torch.float64),
          (torch.zeros(2, B, H, dtype=torch.float64),) * 2)


def test_every_torch_spec_is_reachable_and_loads():
    """Each file of specs/torch/ holds a cell with biases and one without, both named by
    torch_spec, and both check and load."""
    files = sorted(p.name for p in (rnndsl.lang.shipped.specs_dir() / "torch").glob("*.rnn"))
    named = set()
    for mode, proj in [("RNN_TANH", False), ("RNN_RELU", False), ("LSTM", False),
                       ("LSTM", True), ("GRU", False)]:
        for bias in (True, False):
            path, cell = rt.torch_spec(mode, bias, proj)
            named.add(path.name)
            assert rnndsl.load(path, target="interp", cell=cell).__name__ == cell
    assert sorted(named) == files


def test_dropout_between_layers_follows_training_mode():
    """In eval mode dropout is off and the outputs are torch's; in training mode the
    layers' outputs are dropped (torch's generator: other masks than torch's own)."""
    m = make("lstm", num_layers=2, dropout=0.5).eval()
    r = rt.from_torch(m, target="interp")
    assert not r.training
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert rel_err(r(x)[0], m(x)[0]) < 1e-10
    r.train()
    torch.manual_seed(0)
    assert rel_err(r(x)[0], m(x)[0]) > 1e-3


def test_tensors_off_the_cpu_are_refused():
    r = rt.from_torch(make("gru"), target="interp")
    with pytest.raises(rnndsl.TargetError, match="run on CPU tensors"):
        r(torch.zeros(T, B, I, dtype=torch.float64, device="meta"))
