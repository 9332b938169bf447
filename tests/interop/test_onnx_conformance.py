"""ONNX's own conformance cases for the RNN, LSTM and GRU operators, through
rnndsl.onnx.InferenceSession.

The onnx package carries, beside the operators' definitions, the node test cases every
ONNX backend is held to (onnx.backend.test.case.node: test_lstm_with_peepholes,
test_gru_seq_length, test_simple_rnn_batchwise, ...): a model, its inputs, and the
outputs its reference implementation computed. Each runs here on the reference
interpreter, and every output must match to 1e-5 relative (float32). The compiled cpu
kernels run three of them by default (peepholes, the batchwise layout, both directions
of an RNN: each compiles a cell of its own), and every case with RNNDSL_LONG=1. A case
that onnx adds in a later release is picked up as it comes.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

pytest.importorskip("onnx")

import rnndsl.onnx  # noqa: E402

RECURRENT = ("RNN", "LSTM", "GRU")
LONG = os.environ.get("RNNDSL_LONG") == "1"
COMPILED = {"test_lstm_with_peepholes", "test_gru_batchwise", "test_simple_rnn_bidirectional"}


def _cases() -> list:
    """The recurrent operators' cases. Importing a case module makes its cases (its
    classes' export_* run as they are defined) into the package's list; importing the
    three (1 s) rather than all of them (collect_testcases: 8 s, and warnings from other
    operators' cases); the whole collection where that list is not there."""
    import importlib

    from onnx.backend.test.case import node
    for name in ("rnn", "lstm", "gru"):
        importlib.import_module(f"{node.__name__}.{name}")
    cases = getattr(node, "_NodeTestCases", None)
    if not cases:
        with warnings.catch_warnings():    # other operators' cases warn as they are made
            warnings.simplefilter("ignore")
            cases = node.collect_testcases(None)
    return sorted((c for c in cases if any(n.op_type in RECURRENT for n in c.model.graph.node)),
                  key=lambda c: c.name)


CASES = _cases()


def test_the_operators_cases_are_found():
    """At least the cases onnx 1.16-1.23 ship: six a recurrent operator (defaults, an
    initial bias, sequence lengths, batchwise layout, reverse, bidirectional), and the
    LSTM's peepholes."""
    ops = {n.op_type for c in CASES for n in c.model.graph.node}
    assert ops == set(RECURRENT) and len(CASES) >= 18
    assert COMPILED <= {c.name for c in CASES}


RUNS = [(case, target) for case in CASES for target in ("interp", "cpu")
        if target == "interp" or LONG or case.name in COMPILED]


@pytest.mark.parametrize("case,target", RUNS, ids=[f"{c.name}-{t}" for c, t in RUNS])
def test_onnx_conformance_case(case, target):
    names = [i.name for i in case.model.graph.input]
    session = rnndsl.onnx.InferenceSession(case.model, target=target)
    for inputs, expected in case.data_sets:
        got = session.run(None, {n: v for n, v in zip(names, inputs) if n})
        assert len(got) == len(expected)
        for out, g, want in zip(case.model.graph.output, got, expected):
            want = np.asarray(want)
            assert np.asarray(g).shape == want.shape, out.name
            scale = max(float(np.abs(want).max()), 1e-30)
            assert float(np.abs(np.asarray(g) - want).max()) / scale < 1e-5, out.name
