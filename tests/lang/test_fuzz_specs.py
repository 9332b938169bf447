"""Fuzzing the front end: real specs mutated at random, and what must hold of every result.

Every shipped spec (and random cells from `strategies_cells`) is cut into tokens and
characters and mutated: tokens deleted, duplicated, swapped or replaced by another spec's
(names by names and operators by operators too, for errors past the parser); whole lines
deleted, duplicated or moved; character runs deleted or duplicated; the text truncated;
random characters inserted (look-alikes pasted from papers, a BOM, NUL and other controls,
a lone surrogate, any Unicode); very long names and numbers; `use` lines with odd paths;
operands wrapped in expressions nested about `parse.MAX_NESTING` deep. Whatever comes out:

- `read_spec` succeeds or raises an `RnnError`, never another exception;
- a `SpecError` renders every one of its places as `NAME:LINE:COL:` inside the text,
  stays short however long the text, and holds no control character but newlines;
- a spec that checks also lowers, differentiates (`grad_step`), prints back to itself and
  has a digest (which `rnndsl.load` keys its cache on);
- `rnndsl check FILE` (with any `--dump-after`) exits 0 or 2, never 3 (an internal error).

The default Hypothesis profile (tests/conftest.py, "fast") keeps this file to seconds;
HYPOTHESIS_PROFILE=long runs 500 examples a test. Bugs found here have an `@example`.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rnndsl.cli.main import main
from rnndsl.core.errors import MAX_SHOWN, RnnError, SpecError
from rnndsl.ir.grad import grad_step
from rnndsl.ir.graph import lower
from rnndsl.lang.parse import LOOKALIKES, MAX_NESTING, parse
from rnndsl.lang.printer import unparse
from rnndsl.lang.specfile import read_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from strategies_cells import cells  # noqa: E402

SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"
SPECS = {p.name: p.read_text() for p in sorted(SPECS_DIR.glob("*.rnn"))}

# Whitespace runs are tokens too, so that joining the tokens gives the text back.
_TOKEN = re.compile(r"\s+|\*\*|[A-Za-z_]\w*|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|"
                    r"\"[^\"\n]*\"|#[^\n]*|.", re.S)
SPEC_TOKENS = sorted({t for text in SPECS.values() for t in _TOKEN.findall(text)
                      if not t.isspace()})
_NAME = re.compile(r"[A-Za-z_]\w*")
OPERATORS = ["+", "-", "*", "/", "@", "**"]
SPEC_NAMES = [t for t in SPEC_TOKENS if _NAME.fullmatch(t)]

ODD = ["\ufeff", "\x00", "\x07", "\x1b", "\r", "\f", "\v", "\x85", "\u2028", "\u200b",
       "\ud800", "\U0001f600", "\u5b57", "\u0301", "\uff12", "$", "`", "!", "?", "\\", ";",
       "\t", *LOOKALIKES]
odd_characters = st.one_of(st.sampled_from(ODD), st.characters())
use_paths = st.one_of(
    st.sampled_from(["lstm.rnn", "elman.rnn", "missing.rnn", "", ".", "..", "/", "specs",
                     "a" * 300, "a/" * 2_100, "x\x00y.rnn", "../specs/gru.rnn"]),
    st.text(st.characters(blacklist_characters='"\n', blacklist_categories=("Cs",)),
            max_size=12))


@st.composite
def deep_expressions(draw, operand: str) -> str:
    """`operand` inside an expression nesting about MAX_NESTING levels, on either side of
    the limit; each keeps the operand's shape, so the spec may still check."""
    n = draw(st.integers(MAX_NESTING - 3, MAX_NESTING + 3))
    shape = draw(st.sampled_from(["calls", "sum", "minus", "parens", "max"]))
    if shape == "calls":
        return "tanh(" * n + operand + ")" * n
    if shape == "sum":
        return " + ".join([operand] * (n + 1))
    if shape == "minus":
        return "-" * n + operand
    if shape == "parens":
        return f"({operand} - " * n + operand + ")" * n
    return f"max({operand}, " * n + operand + ")" * n


@st.composite
def mutated(draw, text: str) -> str:
    """`text` after one to four random edits of its tokens or characters."""
    tokens = _TOKEN.findall(text)
    for _ in range(draw(st.integers(1, 4))):
        if not tokens:
            tokens = [""]
        i = draw(st.integers(0, len(tokens) - 1))
        edit = draw(st.sampled_from(
            ["delete", "duplicate", "swap", "replace", "rename", "rename", "truncate",
             "insert", "cut chars", "copy chars", "long name", "long number", "deepen",
             "deepen", "use", "lines", "lines", "operator"]))
        if edit == "delete":
            del tokens[i]
        elif edit == "duplicate":
            tokens.insert(i, tokens[i])
        elif edit == "swap" and i + 1 < len(tokens):
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        elif edit == "replace":
            tokens[i] = draw(st.sampled_from(SPEC_TOKENS))
        elif edit == "rename":      # another spec's name: errors of the checker, not syntax
            names = [j for j, t in enumerate(tokens) if _NAME.fullmatch(t)]
            if names:
                tokens[draw(st.sampled_from(names))] = draw(st.sampled_from(SPEC_NAMES))
        elif edit == "truncate":
            del tokens[i:]
        elif edit == "insert":
            tokens.insert(i, "".join(draw(st.lists(odd_characters, min_size=1, max_size=3))))
        elif edit in ("cut chars", "copy chars"):
            flat = "".join(tokens)
            start = draw(st.integers(0, len(flat)))
            stop = min(len(flat), start + draw(st.integers(1, 40)))
            flat = flat[:start] + (flat[start:stop] * 2 if edit == "copy chars" else "") + \
                flat[stop:]
            tokens = _TOKEN.findall(flat)
        elif edit == "long name":
            tokens.insert(i, draw(st.sampled_from(["a", "h", "W_"])) * draw(
                st.sampled_from([300, 5_000, 100_000])))
        elif edit == "long number":     # in place of a token: a size, a number, a name
            tokens[i] = draw(st.sampled_from(["9", "0.", "1e"])) + "9" * draw(
                st.sampled_from([17, 18, 20, 400, 5_000]))
        elif edit == "lines":       # whole statements: errors of the checker, not syntax
            lines = "".join(tokens).split("\n")
            j, k = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            how = draw(st.sampled_from(["delete", "duplicate", "move"]))
            if how == "delete":
                del lines[j]
            elif how == "duplicate":
                lines.insert(k, lines[j])
            else:
                lines.insert(k, lines.pop(j))
            tokens = _TOKEN.findall("\n".join(lines))
        elif edit == "operator":
            operators = [j for j, t in enumerate(tokens) if t in OPERATORS]
            if operators:
                tokens[draw(st.sampled_from(operators))] = draw(st.sampled_from(OPERATORS))
        elif edit == "use":
            tokens[:0] = [f'use "{draw(use_paths)}"', "\n"]
        elif edit == "deepen":
            names = [j for j, t in enumerate(tokens) if _NAME.fullmatch(t)]
            if names:
                j = draw(st.sampled_from(names))
                tokens[j] = draw(deep_expressions(tokens[j]))
    return "".join(tokens)


shipped_mutants = st.sampled_from(sorted(SPECS)).flatmap(
    lambda name: st.tuples(st.just(name), mutated(SPECS[name])))
random_cell_mutants = cells(max_depth=2).flatmap(
    lambda cell: st.tuples(st.just("random.rnn"), mutated(cell.text)))


def outcome(name: str, text: str):
    """Read `text` as `specs/NAME`; hold the result to the promises in the docstring. A
    spec that reads may still be refused, placed, by the checks made on its step graph
    (a token input fed to anything but a product, through a layer's argument, say)."""
    path = SPECS_DIR / name
    try:
        spec_file = read_spec(path, text)
        for cell in spec_file.cells.values():
            grad_step(lower(cell))
    except SpecError as error:
        _placed(error, path, text)
        return None
    except RnnError:
        return None
    assert parse(unparse(spec_file.module)) == spec_file.module
    assert spec_file.digest
    return spec_file


def _placed(error: SpecError, path: Path, text: str) -> None:
    """The error renders short, without control characters, each diagnostic at its
    place in its file."""
    rendered = error.render()
    assert len(rendered) < 1_200 * (MAX_SHOWN + 1), len(rendered)
    assert not _CONTROL.search(rendered), repr(_CONTROL.search(rendered))
    lines = text.removeprefix("\ufeff").split("\n")
    for d in error.diagnostics[:MAX_SHOWN]:
        assert d.span is not None and d.source is not None, d
        place = f"{d.source.path}:{d.span.line}:{d.span.column}:"
        assert place in rendered, (place, rendered[:2_000])
        if d.source.path == str(path):
            assert 1 <= d.span.line <= len(lines), (d.span, len(lines))
            assert 1 <= d.span.column <= len(lines[d.span.line - 1]) + 1, (
                d.span, lines[d.span.line - 1][:200])


_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
ELMAN = SPECS["elman.rnn"]
LSTM = SPECS["lstm.rnn"]
# Bugs this file found, and the ones found by hand while writing it, each kept as an example:
REGRESSIONS = [
    # a size of more than 4300 digits: int() raised ValueError inside the AST builder
    ("elman.rnn", ELMAN.replace("b_h[H]", "b_h[" + "9" * 5_000 + "]")),
    ("elman.rnn", ELMAN.replace("b_y[O]", "b_y[" + "9" * 5_000 + " * O]")),
    # a `use` path longer than a file name may be: the OS refused to look it up (OSError)
    ("elman.rnn", 'use "' + "a" * 300 + '"\n' + ELMAN),
    # a lone surrogate in a comment parsed, then the digest could not encode the text
    ("elman.rnn", "# \ud800\n" + ELMAN),
    # a NUL in a `use` path reached the terminal raw inside the message
    ("elman.rnn", 'use "x\x00y.rnn"\n' + ELMAN),
    # a carriage return alone (an old Mac line end) was echoed raw, moving the cursor
    ("lstm.rnn", LSTM.replace("\n", "\r").replace("}", "$}")),
    # deep nesting: RecursionError in lark's transformer, the checker or the printer
    ("elman.rnn", ELMAN.replace("W_xh @ x", "W_xh @ " + "tanh(" * 400 + "x" + ")" * 400)),
    ("elman.rnn", ELMAN.replace("b_h)", " + ".join(["b_h"] * 1_000) + ")")),
    # a huge name in an error: rendered whole, twice (the message and the source line)
    ("elman.rnn", ELMAN.replace("W_hy @ h'", "W_hy @ " + "q" * 300_000)),
    ("elman.rnn", ELMAN + "a" * 100_000),
    # an empty file: nothing said by `check`, StopIteration from `build`
    ("elman.rnn", ""),
    ("elman.rnn", "# nothing but a comment\n"),
    # a BOM: refused as an unexpected character; after it, a pasted prime (a hint, placed)
    ("elman.rnn", "\ufeff" + ELMAN),
    ("elman.rnn", "\ufeff" + ELMAN.replace("h' = tanh", "h\u2032 = tanh")),
    # a token input fed to a layer through tanh: it reads, and the step graph's check
    # refuses it (placed); the test lowered outside its handler and failed on it
    ("char_lstm.rnn", SPECS["char_lstm.rnn"].replace("h1 = l1(x)", "h1 = l1(tanh(x))")),
]


def examples(test):
    for case in REGRESSIONS:
        test = example(case)(test)
    return test


FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(shipped_mutants)
@examples
def test_mutated_shipped_specs_end_in_a_spec_or_a_placed_error(case):
    outcome(*case)


@FUZZ
@given(random_cell_mutants)
def test_mutated_random_cells_end_in_a_spec_or_a_placed_error(case):
    outcome(*case)


@FUZZ
@given(shipped_mutants, st.sampled_from([None, "ast", "check", "ir", "unroll", "grad"]))
@example(REGRESSIONS[0], None)
@example(REGRESSIONS[2], "ast")
@example(REGRESSIONS[6], "grad")
@example(("elman.rnn", ""), None)
@example(("elman.rnn", "\ufeff" + ELMAN), "grad")
def test_the_command_line_never_reports_an_internal_error(case, stage):
    name, text = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(text.encode("utf-8", "surrogatepass"))    # a lone one: not UTF-8
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["check", str(path)] + (["--dump-after", stage] if stage else []))
    assert status in (0, 2), err.getvalue()[-3_000:]
    assert "internal error" not in err.getvalue()
    if status == 2:
        assert f"{path}:" in err.getvalue() or "error:" in err.getvalue()
