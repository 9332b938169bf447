"""ONNX export of a network cell: a cell with layers run over whole sequences
(`layer l1 = bidirectional LSTM(...)`, cells/network.py) -> one ONNX model.

Input: a `NetworkCell` instance and the exporter of one cell (onnx_export.to_model,
which calls this for a network). Output: an `onnx.ModelProto` whose graph runs the
network's parts in turn, as `NetworkCell.forward` does. Each part is exported on its
own, as any cell is (a segment: an operator or a Scan; a layer
run: a `Directional`, its direction's operator or a Scan per direction), and its graph
is then copied into the network's graph with its names rewritten:
- the network's inputs, its params (`l1.W_i`, `l1.W_i_reverse`, a segment's `W`), its
  states' `initial_<state>` and `final_<state>` (the network's state names, dots kept,
  which ONNX allows: `initial_l1.h`, `final_l1.h_reverse`) and the one `sequence_lens`,
  which every part reads, take the network's names;
- every other name (a part's nodes, constants, Scan bodies, outputs) is prefixed by the
  part's name and a slash (`l1/`, `Tagger_part3/`), which no spec name can contain;
- a sequence that one part makes and a later one reads (the network's `part.inputs`
  and `part.outputs` say which) is the maker's output (`l1/h`): the reader's input of
  that name is renamed to it, so the reader's nodes read the maker's.
A param that several segments read is one initializer. The interface is a plain
cell's (onnx_export.py): the network's inputs, then the optional `initial_<state>` for
every network state and `sequence_lens`; outputs as `forward` returns them, then
`final_<state>`. The metadata `rnndsl.exported_as` lists what each part became, in
order: "network: LSTM(bidirectional), LSTM(reverse), Scan".

Each part keeps what every exported cell starts with (T and B read from its first
input, the lengths cut to T, the mask): a few small nodes repeated, the price of
writing each part exactly as the cell it is. So a segment must read a per-step value
like any exported cell: one whose only inputs are `input once` is refused, the part
named.
"""

from __future__ import annotations

import numpy as np

from ..lang.network import LayerRun
from .onnx_interface import (FULL_LENGTH, LENGTHS, NETWORK, ExportError, claim_names,
                             exported_as, input_info, package)
from .onnx_nodes import Builder, elem_type


def network_model(cell, export_part):
    """The ONNX model of the NetworkCell `cell` (module docstring); `export_part(c)` is
    the model of the part's cell `c` (a Cell or a Directional)."""
    from onnx import helper, numpy_helper
    spec = cell.spec
    claim_names(cell, Builder())      # a name the network's interface would use twice
    nodes, initializers = [], []
    initials: dict[str, object] = {}         # initial_<state> -> its graph input
    made: dict = {}                          # a Value -> the maker's graph output
    finals: dict[str, object] = {}           # final_<state> -> its graph output
    kinds = []
    rows: dict[str, str] = {}                # a token input -> its one-hot rows' name

    def one_hot(name: str) -> str:
        """The one-hot rows (T, B, V) of token input `name`, for a part whose cell reads
        vectors (a bidirectional layer's LSTM), as NetworkCell.forward makes them: a
        Gather of the ids from an identity matrix, once an input."""
        if name not in rows:
            decl = next(d for d in spec.inputs if d.name == name)
            eye = f"{name}/one_hot_rows"
            initializers.append(numpy_helper.from_array(
                np.eye(cell._size(decl)[0], dtype=cell.dtype), eye))
            rows[name] = f"{name}/one_hot"
            nodes.append(helper.make_node("Gather", [eye, name], [rows[name]], axis=0,
                                          name=rows[name]))
        return rows[name]

    for k, part in enumerate(cell.network.parts):
        part_cell = cell.part_cell(k)
        try:
            model = export_part(part_cell)
        except ExportError as exc:
            raise ExportError(f"{spec.name} is exported part by part (`rnndsl explain` "
                              f"lists them), and {_describe(part)} cannot be: {exc}") from None
        graph, prefix = model.graph, _prefix(part) + "/"
        fixed = _fixed_names(part, part_cell, made)
        for local, v in part.inputs:
            if v[0] == "input" and _reads_ids_as_vectors(spec, part_cell, local, v[1]):
                fixed[local] = one_hot(v[1])
        _rename(graph, lambda n: fixed.get(n, prefix + n) if n else n)
        nodes += graph.node
        initials.update((i.name, i) for i in graph.input if i.name.startswith("initial_"))
        initializers += [t for t in graph.initializer
                         if t.name != LENGTHS and t.name not in cell.params]
        outputs = {info.name: info for info in graph.output}
        for local, v in part.outputs:
            made[v] = outputs[prefix + local]
        finals.update((n, info) for n, info in outputs.items() if n.startswith("final_"))
        kind = exported_as(model)
        kinds.append(f"{kind}({part.layer.direction})" if isinstance(part, LayerRun) else kind)

    for name, value in cell.params.items():
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
    initializers.append(numpy_helper.from_array(np.array([FULL_LENGTH], np.int32), LENGTHS))
    inputs = [input_info(d, cell.dims, cell.dtype) for d in spec.inputs]
    inputs += [initials["initial_" + d.name] for d in spec.states]
    inputs.append(helper.make_tensor_value_info(LENGTHS, elem_type(np.int32), ["B"]))
    by_name = dict(cell.network.outputs)
    outputs = []
    for o in spec.outputs:       # a network output is the part's, under the spec's name
        info = made[by_name[o.name]]
        nodes.append(helper.make_node("Identity", [info.name], [o.name],
                                      name=f"output/{o.name}"))
        outputs.append(_named(info, o.name))
    outputs += [finals["final_" + d.name] for d in spec.states]
    graph = helper.make_graph(nodes, spec.name, inputs, outputs, initializer=initializers,
                              doc_string=f"network cell {spec.name} from {spec.source.path}")
    return package(graph, cell, NETWORK + ", ".join(kinds))


def _reads_ids_as_vectors(spec, part_cell, local: str, name: str) -> bool:
    """Whether the network's `input token` `name` reaches the part as its input `local`,
    which the part's cell declares a plain vector input."""
    outer = next(d for d in spec.inputs if d.name == name)
    inner = next((d for d in part_cell.spec.inputs if d.name == local), None)
    return bool(outer.token) and inner is not None and not inner.token


def _describe(part) -> str:
    if isinstance(part, LayerRun):
        return f"layer {part.layer.name} ({part.layer.direction} {part.name})"
    return f"the segment {part.name}"


def _prefix(part) -> str:
    """What the part's own names start with, before a slash: the layer's name, or the
    segment's (both unique in the network)."""
    return part.layer.name if isinstance(part, LayerRun) else part.name


def _fixed_names(part, part_cell, made) -> dict[str, str]:
    """The part's names that become the network's: its inputs (the network's input it
    reads, or the name of the output of the earlier part that makes it), its params,
    initial and final states."""
    def network_name(local: str) -> str:
        return f"{part.layer.name}.{local}" if isinstance(part, LayerRun) else local
    fixed = {LENGTHS: LENGTHS}
    for local, v in part.inputs:
        fixed[local] = v[1] if v[0] == "input" else made[v].name
    for name in part_cell.params:
        fixed[name] = network_name(name)
    suffixes = [c[0] for c in getattr(part_cell, "cells", [("",)])]
    for d in part_cell.spec.states:
        for suffix in suffixes:
            for end in ("initial_", "final_"):
                fixed[end + d.name + suffix] = end + network_name(d.name + suffix)
    return fixed


def _rename(graph, rename) -> None:
    """Every name in `graph` and in its subgraphs (a Scan's body reads the outer graph's
    names) through `rename`, in place."""
    from onnx import AttributeProto
    for node in graph.node:
        for field in (node.input, node.output):
            names = [rename(n) for n in field]
            del field[:]
            field.extend(names)
        node.name = rename(node.name)
        for a in node.attribute:
            if a.type == AttributeProto.GRAPH:
                _rename(a.g, rename)
            elif a.type == AttributeProto.GRAPHS:
                for g in a.graphs:
                    _rename(g, rename)
    for info in (*graph.input, *graph.output, *graph.value_info):
        info.name = rename(info.name)
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)


def _named(info, name: str):
    """A copy of a ValueInfoProto under another name."""
    from onnx import ValueInfoProto
    out = ValueInfoProto()
    out.CopyFrom(info)
    out.name = name
    return out


__all__ = ["network_model"]
