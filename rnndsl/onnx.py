"""ONNX export and import of rnndsl cells (the optional extra `pip install 'rnndsl[onnx]'`).

    import rnndsl, rnndsl.onnx
    cell = rnndsl.load("specs/lstm.rnn", target="interp")(I=8, H=16, seed=0)
    rnndsl.onnx.export(cell, "lstm.onnx")        # one ONNX LSTM node; a custom cell: a Scan
    session = rnndsl.onnx.InferenceSession("lstm.onnx")   # back: run as onnxruntime would
    session.cells                                # the spec text of each cell it built

The code is in rnndsl/interop/ (export: onnx_export.py, onnx_network.py,
onnx_interface.py, onnx_match.py, onnx_operator.py, onnx_nodes.py; import:
onnx_import.py, onnx_cells.py, onnx_glue.py); docs/onnx.md says what each cell becomes
and what each model runs as. This face only re-exports it, so that `import rnndsl`
never imports onnx.
"""

from __future__ import annotations

try:
    import onnx  # noqa: F401
except ImportError as exc:          # say what to install, not just what is missing
    raise ImportError("rnndsl.onnx needs onnx (and onnxruntime to run the models): "
                      "pip install 'rnndsl[onnx]'") from exc

from .interop.onnx_export import export, to_model
from .interop.onnx_interface import ExportError, exported_as
from .interop.onnx_import import InferenceSession, NodeArg
from .interop.onnx_cells import OnnxImportError
from .interop.onnx_match import TEMPLATES, match_operator

__all__ = ["export", "to_model", "exported_as", "ExportError", "match_operator", "TEMPLATES",
           "InferenceSession", "NodeArg", "OnnxImportError"]
