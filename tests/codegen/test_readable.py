"""Generated modules are read by people: every kernel's signature has one parameter a
line with a note saying what it is, saved values by their names in the spec."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from rnndsl.lang.specfile import read_spec
from rnndsl.pipeline import build_source

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("stem", ["lstm", "char_lstm"])
def test_signatures_have_one_parameter_a_line(stem, target):
    source = build_source(read_spec(SPECS / f"{stem}.rnn"), target=target)
    lines = source.splitlines()
    defs = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)
            and n.name.startswith(("forward_", "backward_"))]
    assert defs
    for fn in defs:
        params = [a.arg for a in fn.args.args]
        if not params:
            continue
        head = lines[fn.lineno - 1]
        assert head == f"def {fn.name}(", head
        for k, name in enumerate(params):
            assert re.match(rf"    {re.escape(name)},( +# .+)?$", lines[fn.lineno + k]), \
                lines[fn.lineno + k]


def test_driver_parameters_say_what_they_are_in_the_specs_words():
    source = build_source(read_spec(SPECS / "char_lstm.rnn"))
    start = source.index("def forward_CharLSTM(")
    forward = source[start:source.index('"""', start)]     # up to its docstring
    assert re.search(r"    in_x, +# input x: ids, \(T, B\)", forward)      # a token input
    assert re.search(r"    tape_l1__i, +# l1\.i at every step, written", forward)
    backward = source[source.index("def backward_CharLSTM("):]
    assert re.search(r"    tape_l1__i, +# l1\.i at every step, read", backward)
    assert re.search(r"    dp_W_y, +# d param W_y, written", backward)
    assert max(len(line) for line in forward.splitlines()) <= 100
