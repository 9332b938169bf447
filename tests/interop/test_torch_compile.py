"""torch.compile of a model holding rnndsl modules: the cell calls run eagerly (a graph
break: rnndsl.interop.torch.run_cell is kept out of dynamo), the torch code around them
compiles, and outputs and gradients are eager's. On the interpreter: no compiled kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import rnndsl.torch as rt  # noqa: E402

ELMAN = Path(__file__).resolve().parents[2] / "specs" / "elman.rnn"


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = rt.from_torch(torch.nn.GRU(3, 4, num_layers=2, bidirectional=True,
                                              dtype=torch.float64), target="interp")
        self.cell = rt.Module(ELMAN, I=8, H=5, O=2, target="interp",
                              dtype=torch.float64)
        self.head = torch.nn.Linear(5, 2, dtype=torch.float64)

    def forward(self, x):
        self.rnn.flatten_parameters()
        y, h_n = self.rnn(x)
        out, state = self.cell(torch.tanh(y))
        return self.head(out["h"]).sum() + out["y"].sum() + h_n.sum() + state["h"].sum()


def test_torch_compile_gives_eagers_outputs_and_gradients():
    torch._dynamo.reset()
    model = Model()
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    want = model(x)
    want_grads = torch.autograd.grad(want, [x, *model.parameters()])
    compiled = torch.compile(model, backend="eager")
    got = compiled(x)
    grads = torch.autograd.grad(got, [x, *model.parameters()])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
