"""The forward kernel's twin for inference (grad=False: sampling, evaluation): the same
code without the stores into tapes and histories that only BPTT reads
(form.drop_unread_stores), the same outputs bit for bit, and no backward after it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.codegen.form import (Arr, Assign, Block, Call, Raw, Reshape, Sym, code,
                                 drop_unread_stores, fix, for_loop, text)
from rnndsl.core.errors import BindError
from rnndsl.lang.specfile import read_spec
from rnndsl.pipeline import build_source

ROOT = Path(__file__).resolve().parents[2]
T_, R, J = Sym("t", "i"), Sym("r", "i"), Sym("j", "i")


def a(name: str, n: int = 3) -> Sym:
    return Sym(name, f"a{n}")


def test_stores_nothing_reads_go_and_the_rest_stay():
    tape_i, tape_h, hist_c, out, s_c = a("tape_i"), a("tape_h"), a("hist_c"), a("out"), \
        a("s_c", 2)
    e, x = Sym("e", "f"), Sym("x", "f")
    tape_h_r = a("tape_h_r", 2)
    loop = for_loop(T_, code("range(T)"))
    loop.body = [
        Call("copy2", (Arr(hist_c, fix(T_)), s_c)),                   # a history: unread
        Assign(Arr(tape_i, fix(T_, R, J)), e),                        # a tape: unread
        Assign(Arr(tape_h, fix(T_, R, J)), x),                        # a tape read below
        Call("copy2", (Arr(out, fix(T_)), Arr(tape_h, fix(T_)))),
    ]
    body = [Assign(tape_h_r, Reshape(tape_h, code("(R, H)"))), loop,
            Call("parallel_dot", (tape_h_r, a("w", 2), a("y", 2), Sym("threads", "i")))]
    kept, gone = drop_unread_stores(body, {"tape_i", "tape_h", "hist_c"})
    assert gone == {"tape_i", "hist_c"}
    out_text = text(kept)
    assert "tape_i[" not in out_text and "hist_c[" not in out_text
    assert "tape_h[t, r, j] = x" in out_text and "parallel_dot(tape_h_r" in out_text


def test_an_add_into_a_tape_is_a_read_and_an_emptied_block_passes():
    tape, g = a("tape"), Sym("g", "f")
    only = Block(code("if tiles:"), [Assign(Arr(tape, fix(T_, R, J)), g)])
    kept, gone = drop_unread_stores([only], {"tape"})
    assert gone == {"tape"} and text(kept).splitlines() == ["if tiles:", "    pass"]
    summed = [Assign(Arr(tape, fix(T_, R, J)), g, op="+=")]
    assert drop_unread_stores(summed, {"tape"})[1] == set()
    # a store whose value reads the tape itself is no pure store
    self_read = [Assign(Arr(tape, fix(T_, R, J)), Arr(tape, fix(T_, R, J)))]
    assert drop_unread_stores(self_read, {"tape"})[1] == set()
    assert isinstance(kept[0].body[0], Raw)


def test_the_generated_twin_writes_only_what_the_forward_reads():
    source = build_source(read_spec(ROOT / "specs" / "char_lstm.rnn"))
    forward = source.split("def forward_CharLSTM(")[1].split("\ndef ")[0]
    twin = source.split("def forward_inference_CharLSTM(")[1].split("\ndef ")[0]
    assert "forward_inference=forward_inference_CharLSTM," in source
    for stored in ("tape_l1__i[t, r, j] =", "copy2(hist_l1__c[t]", "tape_l2__o[t, r, j] ="):
        assert stored in forward and stored not in twin, stored
    # h1 and h2 are read in the loop (layer 2's GEMM, the states) and by the readout
    # after the loop: their tapes are written in both
    for stored in ("tape_l1__h__next[t, r, j] =", "tape_l2__h__next[t, r, j] ="):
        assert stored in forward and stored in twin, stored
    assert "parallel_dot(tape_l2__h__next_r" in twin
    assert re.search(r"\n    tape_l1__i, +# unused here: kept for BPTT only\n", twin)
    assert "for inference (grad=False):" in twin
    assert not re.search(r"save .* for BPTT|kept for BPTT:", twin)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_forward_without_grad_is_the_same_forward(threads, monkeypatch):
    """The main job's cell (a token input, two layers, a readout after the loop) and
    the LSTM, with lengths (the variable-length twin has its own) and with two row
    blocks (B = 17, RNNDSL_BLAS_THREADS=2): outputs and states bit for bit; the twin
    kernel is what ran; its run refuses a backward."""
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", threads)
    rng = np.random.default_rng(0)
    for spec, dims, x in [
        ("char_lstm.rnn", {"V": 7, "H": 5}, rng.integers(0, 7, (6, 17))),
        ("lstm.rnn", {"I": 3, "H": 4}, rng.standard_normal((6, 17, 3))),
    ]:
        cell = rnndsl.load(ROOT / "specs" / spec)(dtype=np.float64, seed=2, **dims)
        ran = []
        twin = cell.meta["forward_inference"]
        monkeypatch.setitem(cell.meta, "forward_inference",
                            lambda *args, twin=twin: (ran.append(1), twin(*args)))
        for lengths in (None, [6, 1, 3] + [5] * 14):
            a = cell.forward(x, lengths=lengths)
            b = cell.forward(x, lengths=lengths, grad=False)
            for name in a.outputs:
                np.testing.assert_array_equal(b.outputs[name], a.outputs[name], err_msg=name)
            for name in a.state:
                np.testing.assert_array_equal(b.state[name], a.state[name], err_msg=name)
            with pytest.raises(BindError, match="grad=False"):
                cell.backward(b, {n: np.ones_like(v) for n, v in b.outputs.items()})
        assert ran, f"{spec}: forward(grad=False) did not run the inference twin"


@pytest.mark.parametrize("stand_in", ["forward kernel", "wrapper"])
def test_only_the_twin_gets_empty_arrays_for_the_tapes_it_leaves(stand_in, monkeypatch):
    """With grad=False the twin gets empty arrays for the tapes it leaves unwritten; the
    forward kernel put in its place (benchmarks/inference_twin.py does), or a wrapper,
    writes them all, and the kernels check no bounds: it wrote past those empty arrays
    and corrupted the heap ('corrupted size vs. prev_size', exit 134 or 139)."""
    cell = rnndsl.load(ROOT / "specs" / "lstm.rnn")(dtype=np.float64, seed=2, I=3, H=4)
    x = np.random.default_rng(0).standard_normal((6, 17, 3))
    want = cell.forward(x)
    unused = cell.meta.get("inference_unused")
    assert unused, "the twin leaves no tape unwritten"
    forward, seen = cell.meta["forward"], []

    def wrapper(*args):
        seen.append(min(args[i].size for i in unused))
        return forward(*args)
    monkeypatch.setitem(cell.meta, "forward_inference",
                        forward if stand_in == "forward kernel" else wrapper)
    for _ in range(3):
        got = cell.forward(x, grad=False)
        np.testing.assert_array_equal(got.outputs["h"], want.outputs["h"])
    assert all(size > 0 for size in seen)
    monkeypatch.undo()
    assert cell._twins_unused() == unused      # the module's own twin: empty arrays
