"""TorchRNN as a drop-in for torch.nn.RNN / LSTM / GRU at its edges: torch's RNNBase
attributes, the configurations and arguments torch refuses, and what its errors name.

All on the interpreter, in float64, with tiny sizes: no compiled kernel.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnndsl.torch as rt  # noqa: E402
from rnndsl.core.errors import BindError  # noqa: E402


def test_rnnbase_attributes_are_there():
    m = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    r = rt.from_torch(m, target="interp")
    r.flatten_parameters()                  # what many models call in their forward: no-op
    assert [[p.shape for p in ws] for ws in r.all_weights] == \
        [[p.shape for p in ws] for ws in m.all_weights]
    assert all(torch.equal(a, b) for ws, vs in zip(r.all_weights, m.all_weights)
               for a, b in zip(ws, vs))
    assert r.all_weights[1][0] is r.weight_ih_l0_reverse
    assert [p.shape for p in r._flat_weights] == [p.shape for p in m._flat_weights]
    relu = rt.from_torch(torch.nn.RNN(3, 4, nonlinearity="relu"), target="interp")
    assert relu.nonlinearity == "relu"
    assert rt.TorchRNN("RNN_TANH", 3, 4, target="interp").nonlinearity == "tanh"
    assert not hasattr(r, "nonlinearity") and not hasattr(m, "nonlinearity")


@pytest.mark.parametrize("mode, kwargs, words", [
    ("LSTM", {"num_layers": 0}, "num_layers is 0 but must be at least 1"),
    ("LSTM", {"num_layers": 2, "dropout": 2.0}, "dropout is 2.0 but must be a number in [0, 1]"),
    ("GRU", {"dropout": -0.1}, "dropout is -0.1"),
    ("LSTM", {"proj_size": 4}, "proj_size is 4 but must be smaller than hidden_size (4)"),
    ("LSTM", {"proj_size": 5}, "proj_size is 5 but must be smaller than hidden_size (4)"),
    ("LSTM", {"proj_size": -1}, "proj_size is -1 but must be at least 0"),
    ("GRU", {"proj_size": 2}, "proj_size is for mode 'LSTM' only"),
    ("LSTM", {"hidden_size": 0}, "hidden_size is 0 but must be at least 1"),
    ("LSTM", {"input_size": 0}, "input_size is 0 but must be at least 1"),
    ("LSTM", {"hidden_size": 4.0}, "hidden_size must be an int, got float"),
    ("LSTM", {"bias": 1}, "bias must be a bool, got int"),
    ("RNN", {}, "mode 'RNN' is not one of"),
])
def test_configurations_torch_refuses_are_refused_at_construction(mode, kwargs, words):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(BindError) as info:
        rt.TorchRNN(mode, target="interp", **args)
    assert words in str(info.value)


@pytest.mark.parametrize("extra", [0, 1])
def test_an_lstm_hx_of_the_wrong_length_is_refused(extra):
    r = rt.from_torch(torch.nn.LSTM(3, 4, dtype=torch.float64), target="interp")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    h0, c0 = torch.randn(1, 2, 4, dtype=torch.float64), torch.randn(1, 2, 4, dtype=torch.float64)
    hx = (h0, c0, torch.randn(7))[:2 + extra] if extra else (h0,)
    with pytest.raises(BindError, match=rf"hx must be a tuple \(h_0, c_0\) for an LSTM, got "
                                        rf"a tuple of {len(hx)}"):
        r(x, hx)


def test_a_numpy_input_is_a_bind_error():
    r = rt.from_torch(torch.nn.GRU(3, 4), target="interp")
    with pytest.raises(BindError, match="input must be a torch.Tensor or a PackedSequence, "
                                        "got ndarray"):
        r(np.zeros((5, 2, 3), np.float32))


def test_a_layer_that_overflows_is_named_not_the_callers_input():
    torch.manual_seed(0)
    m = torch.nn.RNN(3, 4, num_layers=2, nonlinearity="relu", dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            p.abs_().mul_(1e80)
    r = rt.from_torch(m, target="interp")
    x = torch.rand(8, 2, 3, dtype=torch.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(BindError, match=r"layer 0's output \(the input of layer 1\) has a "
                                            r"non-finite value \(inf\) at index \(\d+, \d+, "
                                            r"\d+\)"):
            r(x)
