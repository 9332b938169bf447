"""rnndsl cells as PyTorch modules (the optional extra `pip install 'rnndsl[torch]'`).

    import rnndsl.torch
    m = rnndsl.torch.Module("specs/lstm.rnn", I=8, H=16)     # a torch.nn.Module
    lstm = rnndsl.torch.from_torch(torch.nn.LSTM(8, 16))     # torch's weights, rnndsl's cells

The code is in rnndsl/interop/ (torch.py, torch_rnn.py); docs/interop.md shows it in use.
This face only re-exports it, so that `import rnndsl` never imports torch.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:          # say what to install, not just what is missing
    raise ImportError("rnndsl.torch needs PyTorch: pip install 'rnndsl[torch]'") from exc

from .interop.torch import DIRECTIONS, CellFunction, Module, run_cell
from .interop.torch_rnn import TorchRNN, from_torch, torch_spec

__all__ = ["Module", "from_torch", "TorchRNN", "torch_spec", "CellFunction", "run_cell",
           "DIRECTIONS"]
