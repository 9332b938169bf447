"""A recognised cell (onnx_match.py) -> one ONNX RNN, LSTM or GRU node, and its readouts.

Input: the export's frame (onnx_export.py: the graph's inputs, starts, lengths, mask),
the cell's step graph and its `OperatorMatch`. Output: each output's (T, B, ...)
sequence and each state's final value, as ONNX names.

The operator's weights are built in the graph from the params (initializers named as in
the spec), in ONNX's layout: W [1, gates*H, I] and R [1, gates*H, H] stacked in its gate
order (iofc for LSTM, zrh for GRU), B [1, 2*gates*H] = Wb then Rb (a cell's one bias is
Wb, Rb is zero; two biases are Wb and Rb), P [1, 3*H] (iof) for peepholes. onnxruntime
folds these constant nodes when it loads the model.
"""

from __future__ import annotations

import numpy as np

from ..core.ops import Op
from .onnx_nodes import emit_nodes


def emit_operator(frame, step, match):
    b, t = frame.b, match.template
    G = step.graph
    hidden_state = match.state(t.hidden)
    H = frame.size(next(d for d in step.cell.states if d.name == hidden_state))
    (x_name,) = step.inputs
    X = frame.sequences[x_name]
    zeros = b.const(np.zeros(H, frame.dtype), hint="zeros_H")
    axis0 = b.const(np.array([0], np.int64))

    def ref(name):     # a param, or rows of one (onnx_match.unstacked)
        if name not in match.rows:
            return name
        param, start, stop = match.rows[name]
        return b.op("Slice", [param, b.const(np.array([start], np.int64)),
                              b.const(np.array([stop], np.int64)), axis0], hint=name)

    def stacked(names, hint):
        return b.op("Unsqueeze", [b.op("Concat", [ref(n) for n in names], axis=0), axis0],
                    hint=hint)

    def total(params):
        if not params:
            return zeros
        out = ref(params[0])
        for p in params[1:]:
            out = b.op("Add", [out, ref(p)])
        return out

    W = stacked([match.param("W_" + g) for g in t.gates], "W")
    R = stacked([match.param("R_" + g) for g in t.gates], "R")
    wb, rb = [], []
    for g in t.gates:
        if t.operator == "GRU" and g == "h" and "bias:bw_h" in match.binding:
            wb.append(total(match.bias("bw_h")))      # linear_before_reset=1: apart
            rb.append(total(match.bias("br_h")))
            continue
        params = match.bias("b_" + g)
        wb.append(params[0] if params else zeros)
        rb.append(params[1] if len(params) > 1 else zeros)
    B = stacked(wb + rb, "B")
    lengths = b.op("Cast", [frame.lengths], to=6)     # int32, as the operators take it
    starts = [b.op("Unsqueeze", [frame.starts[match.state(s)], axis0])
              for s in (("h", "c") if t.operator == "LSTM" else ("h",))]
    inputs = [X, W, R, B, lengths] + starts
    if t.peepholes:
        inputs.append(stacked([match.param("P_" + g) for g in "iof"], "P"))
    attrs = dict(t.attrs)
    n_out = 3 if t.operator == "LSTM" else 2
    outs = b.op(t.operator, inputs, hint=t.operator, n_out=n_out, hidden_size=H, **attrs)
    Y = b.op("Squeeze", [outs[0], b.const(np.array([1], np.int64))], hint="Y")
    # a sequence of length 0 keeps its start, as forward's does (onnxruntime's LSTM
    # leaves something else in Y_h and Y_c there)
    empty = b.op("Unsqueeze", [b.op("Equal", [frame.lengths, b.const(np.array(0, np.int64))]),
                               b.const(np.array([1], np.int64))], hint="empty")
    finals = {}
    for k, s in enumerate(("h", "c") if t.operator == "LSTM" else ("h",)):
        name = match.state(s)
        last = b.op("Squeeze", [outs[1 + k], axis0], hint="Y_" + s)
        finals[name] = b.op("Where", [empty, frame.starts[name], last], hint="final_" + s)

    hidden = step.next_state[hidden_state]
    sequences = {}
    e = frame.emit(b.op("Concat", [frame.T, frame.B], axis=0, hint="TB"))
    names = {hidden: Y, step.inputs[x_name]: X}
    zero = e.scalar(0.0)
    for name, nid in step.outputs.items():
        if nid == hidden:
            sequences[name] = Y
            continue
        emit_nodes(e, step, _needed_until(G, nid, set(names)), names)
        sequences[name] = b.op("Where", [frame.mask, names[nid], zero], hint=name)
    return sequences, finals


def _needed_until(G, root: int, known: set[int]) -> list[int]:
    """The nodes `root` reads, not looking past those in `known`, in id order."""
    seen, stack = set(), [root]
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        if nid not in known and G[nid].op not in (Op.PARAM, Op.CONST, Op.DIM):
            stack.extend(G[nid].args)
    return sorted(seen)
