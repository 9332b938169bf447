"""What every model the ONNX export writes shares: the names and defaults of its
optional inputs, its metadata (`rnndsl.exported_as`), the graph inputs of the spec's
inputs, the check that no fixed name is used twice, the user's error (`ExportError`)
and the last step (`package`: the checked model with its metadata). Used by
onnx_export.py (a cell, in one direction or both) and onnx_network.py (a network of
such cells in turn, which onnx_export.py calls), hence apart from both.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import RnnError
from ..core.version import __version__
from .onnx_nodes import IR_VERSION, OPSET, Builder, elem_type

LENGTHS = "sequence_lens"
FULL_LENGTH = 2 ** 31 - 1
EXPORTED_AS = "rnndsl.exported_as"     # metadata: "Scan" or the operator, e.g. "LSTM"
NETWORK = "network: "     # a network cell's exported_as: this, then each part's, in order


class ExportError(RnnError):
    """A cell (or an export option) that rnndsl cannot write as ONNX."""


def exported_as(model) -> str:
    """What `to_model` made of the cell: "Scan", or the operator ("LSTM", ...); for a
    network cell, each part's in order ("network: LSTM(bidirectional), Scan")."""
    return next((p.value for p in model.metadata_props if p.key == EXPORTED_AS), "?")


def package(graph, cell, kind: str, **props):
    """The checked model of `graph`, its metadata saying what `cell` became (`kind`), its
    dims and its spec, and `props` ("rnndsl." + key)."""
    import onnx
    from onnx import helper
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="rnndsl", doc_string=graph.doc_string)
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {
        EXPORTED_AS: kind, "rnndsl.version": __version__,
        **{"rnndsl." + key: value for key, value in props.items()},
        "rnndsl.dims": ",".join(f"{k}={v}" for k, v in cell.dims.items()),
        "rnndsl.spec": cell.spec.source.text})
    onnx.checker.check_model(model)
    return model


def input_info(d, dims: dict[str, int], dtype):
    """The graph input of the spec input `d`: token ids (T, B) int64, an `input once`
    (B, size), any other (T, B, size)."""
    from onnx import helper
    if d.token:
        return helper.make_tensor_value_info(d.name, elem_type(np.int64), ["T", "B"])
    (size,) = d.type.shape
    return helper.make_tensor_value_info(d.name, elem_type(dtype), (["B"] if d.once else [
        "T", "B"]) + [size.evaluate(dims)])


def claim_names(cell, b: Builder) -> None:
    """The model's fixed names, each once: a spec whose param is called like one of its
    outputs (or `final_h`, ...) cannot be written with these names."""
    spec = cell.spec
    hidden = dict(spec.dropouts)
    names = [("input", d.name) for d in spec.inputs if d.name not in hidden]
    suffixes = [c[0] for c in getattr(cell, "cells", [("",)])]
    names += [("initial state", "initial_" + d.name + x) for x in suffixes
              for d in spec.states]
    names += [("lengths", LENGTHS)]
    names += [("param", name) for name in cell.params]
    names += [("output", o.name) for o in spec.outputs]
    names += [("final state", "final_" + d.name + x) for x in suffixes for d in spec.states]
    seen: dict[str, str] = {}
    for what, name in names:
        if name in seen:
            raise ExportError(f"{spec.name}: the {what} and the {seen[name]} would both be "
                              f"called '{name}' in the ONNX graph; rename one in the spec")
        seen[name] = what
        b.claim(name)
