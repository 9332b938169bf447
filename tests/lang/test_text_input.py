"""Whatever a person types into a spec ends in a placed error, never a Python exception.

Pinned here: an empty file; a UTF-8 BOM; characters pasted from papers (a typographic
prime, minus or space); expressions nested past `parse.MAX_NESTING` (refused at once) and
at it (every stage survives, beneath a deep caller's stack); cells with thousands of
equations; and the rendering of errors on megabyte lines, which stays a few hundred
characters. tests/lang/test_fuzz_specs.py mutates real specs at random for the same promises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.cli.main import main
from rnndsl.core.errors import (MAX_SHOWN, CheckError, Diagnostic, Source, Span, SpecError,
                           SpecSyntaxError, shorten)
from rnndsl.ir.grad import grad_step
from rnndsl.ir.graph import lower
from rnndsl.lang.parse import LOOKALIKES, MAX_NESTING, parse
from rnndsl.lang.printer import unparse
from rnndsl.lang.specfile import read_spec

REPO = Path(__file__).resolve().parents[2]
ELMAN = REPO / "specs" / "elman.rnn"


def error_of(text: str, path: str = "x.rnn") -> SpecError:
    with pytest.raises(SpecError) as info:
        read_spec(path, text)
    return info.value


# ----------------------------------------------------------------------------- empty files

EMPTY = ["", "   \n\t\n", "# only a comment\n", "# one\n\n# two", "\ufeff", "\ufeff# c\n"]


@pytest.mark.parametrize("text", EMPTY, ids=range(len(EMPTY)))
def test_a_file_that_defines_no_cell_is_an_error_at_1_1(text):
    error = error_of(text, "empty.rnn")
    assert isinstance(error, SpecSyntaxError)
    rendered = error.render()
    assert rendered.startswith("empty.rnn:1:1: error: the file defines no cell")
    assert "cell Name { ... }" in error.diagnostics[0].hint


def test_a_file_of_uses_only_re_exports_the_cells_it_uses(tmp_path):
    (tmp_path / "a.rnn").write_text(ELMAN.read_text())
    (tmp_path / "b.rnn").write_text('# the Elman cell, under another file name\nuse "a.rnn"\n')
    spec_file = read_spec(tmp_path / "b.rnn")
    assert not spec_file.cells
    assert spec_file.pick().name == "Elman"


@pytest.fixture
def empty(tmp_path) -> Path:
    path = tmp_path / "empty.rnn"
    path.write_text("# nothing yet\n")
    return path


def test_check_of_an_empty_file_exits_2_with_the_place(empty, capsys):
    assert main(["check", str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"{empty}:1:1: error: the file defines no cell" in err
    assert "internal error" not in err


@pytest.mark.parametrize("order", ["empty first", "empty last"])
def test_build_with_an_empty_file_exits_2_and_writes_nothing(empty, tmp_path, capsys, order):
    out = tmp_path / "out"
    files = [str(empty), str(ELMAN)] if order == "empty first" else [str(ELMAN), str(empty)]
    assert main(["build", *files, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{empty}:1:1:" in err
    assert "internal error" not in err
    assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- the BOM

BOM = "\ufeff"


def test_a_bom_is_dropped_from_a_file_and_from_a_given_text(tmp_path):
    path = tmp_path / "bom.rnn"
    path.write_bytes(b"\xef\xbb\xbf" + ELMAN.read_bytes())
    plain = read_spec(ELMAN)
    for spec_file in (read_spec(path), read_spec("given.rnn", BOM + ELMAN.read_text())):
        assert spec_file.module == plain.module
        assert not spec_file.source.text.startswith(BOM)
        assert spec_file.pick().definitions == plain.pick().definitions
    assert rnndsl.load(path, target="interp").spec.name == "Elman"
    assert rnndsl.load_text(BOM + ELMAN.read_text(), target="interp").spec.name == "Elman"


def test_after_a_bom_columns_on_the_first_line_are_the_ones_an_editor_shows():
    error = error_of(BOM + "cell C { h' = $ }")
    assert (error.span.line, error.span.column) == (1, 15)
    assert error.render().splitlines()[1:3] == [
        "    1 | cell C { h' = $ }",
        "      |               ^"]


def test_after_a_bom_the_checker_quotes_the_right_text():
    text = BOM + "cell C { dims H input x[H] state h[H] param W[H, H] h' = W + tanh(x + h) }"
    error = error_of(text)
    assert isinstance(error, CheckError)
    assert error.message.startswith("W is a matrix [H, H]")
    assert error.span.column == text.index("W + tanh")       # the BOM is not counted


def test_a_bom_inside_the_text_is_an_invisible_character_to_delete():
    error = error_of("cell C {\n  h' = x" + BOM + "\n}")
    assert "U+FEFF" in error.message
    assert (error.span.line, error.span.column) == (2, 9)
    assert error.diagnostics[0].hint.startswith("delete it")
    assert "<U+FEFF>" in error.render()


# ----------------------------------------------------------------------------- look-alikes

PASTED = [
    ("h\u2032 = tanh(x)", "\u2032", "'"),        # prime
    ("h\u2019 = tanh(x)", "\u2019", "'"),        # right single quotation mark
    ("h\u2018 = tanh(x)", "\u2018", "'"),
    ("h\u02b9 = tanh(x)", "\u02b9", "'"),        # modifier letter prime
    ("h' = x \u2212 h", "\u2212", "-"),          # minus sign
    ("h' = x \u2013 h", "\u2013", "-"),          # en dash
    ("h' = x \u2014 h", "\u2014", "-"),          # em dash
    ("h' = x \u00d7 h", "\u00d7", "*"),          # multiplication sign
    ("h' = x \u00b7 h", "\u00b7", "*"),          # middle dot
    ("h' = x \u2217 h", "\u2217", "*"),          # asterisk operator
    ("h' = x \u2299 h", "\u2299", "*"),          # circled dot: the Hadamard product
    ("h' = x \u00f7 h", "\u00f7", "/"),
    ("h' =\u00a0x", "\u00a0", "space"),          # no-break space
    ("h' = x\u2009+ h", "\u2009", "space"),      # thin space
    ("h' = x +\u202fh", "\u202f", "space"),      # narrow no-break space
    ("h' = \u03c3(x)", "\u03c3", "sigmoid"),
]


@pytest.mark.parametrize("line, char, typed", PASTED, ids=[f"U+{ord(c):04X}" for _, c, _ in
                                                             PASTED])
def test_a_character_pasted_from_a_paper_gets_a_hint_naming_what_to_type(line, char, typed):
    text = "cell C {\n  dims H\n  input x[H]\n  state h[H]\n  " + line + "\n}\n"
    error = error_of(text)
    assert isinstance(error, SpecSyntaxError)
    column = line.index(char) + 3
    assert (error.span.line, error.span.column) == (5, column)
    assert f"U+{ord(char):04X}" in error.message
    hint = error.diagnostics[0].hint
    assert typed in hint
    rendered = error.render().splitlines()
    assert rendered[0].startswith(f"x.rnn:5:{column}: error: unexpected character")
    assert rendered[2].index("^") == rendered[1].index("|") + 2 + column - 1


def test_a_curly_quote_around_a_path_gets_a_hint():
    error = error_of("use \u201cother.rnn\u201d\n")
    assert error.diagnostics[0].hint.startswith('type " (the ASCII double quote)')


@pytest.mark.parametrize("char", sorted(LOOKALIKES))
def test_every_look_alike_is_refused_where_it_stands_with_its_hint(char):
    text = "cell C { dims H input x[H] state h[H] h' = x " + char + " h }"
    error = error_of(text)
    assert (error.span.line, error.span.column) == (1, text.index(char) + 1)
    typed, hint = LOOKALIKES[char]
    assert error.diagnostics[0].hint == hint
    assert typed.strip() in hint


def test_a_greek_name_is_told_to_be_spelled_out():
    error = error_of("cell C { dims H input x[H] state h[H] h' = tanh(\u03b8 * x) }")
    assert "ASCII letters" in error.diagnostics[0].hint


# ----------------------------------------------------------------------------- nesting

HEAD = "cell Deep {\n  dims H\n  input x[H]\n  state h[H]\n  param W[H, H]\n  h' = "
SHAPES = {          # n -> an expression nesting exactly n levels
    "calls": lambda n: "tanh(" * n + "h" + ")" * n,
    "two-argument calls": lambda n: "max(x, " * n + "h" + ")" * n,
    "a long sum": lambda n: " + ".join(["h"] * (n + 1)),
    "a long product": lambda n: " * ".join(["h"] * (n + 1)),
    "nested parentheses": lambda n: "(x - " * n + "h" + ")" * n,
    "unary minus": lambda n: "-" * n + "h",
    "slices": lambda n: "h" + "[0:H]" * n,
    "matrix products": lambda n: "W @ (" * n + "h" + ")" * n,
    "an exponent": lambda n: "x ** " + "-" * (n - 1) + "1",
}


def deep(shape: str, n: int) -> str:
    return HEAD + SHAPES[shape](n) + "\n}\n"


def under_a_deep_stack(frames: int, fn):
    """fn() beneath `frames` more Python frames: a caller deep in its own code (a notebook,
    a framework, a test runner) when it loads a spec."""
    return fn() if frames == 0 else under_a_deep_stack(frames - 1, fn)


# The stages need about 4.2 frames a level (see MAX_NESTING); what a caller may have used.
CALLER_FRAMES = 300


def every_stage(text: str, folder: Path) -> None:
    """Parse, check, lower, differentiate, print and re-parse, and run the interpreter
    forward and backward: each stage that walks an expression recursively."""
    path = folder / "deep.rnn"
    path.write_text(text)
    spec_file = read_spec(path)
    step = lower(spec_file.pick())
    grad_step(step)
    printed = unparse(spec_file.module)
    assert parse(printed) == spec_file.module
    assert repr(spec_file.module)
    Cell = rnndsl.load(path, target="interp")
    cell = Cell(H=2, dtype=np.float64, seed=0)
    run = cell.forward(np.full((2, 1, 2), 0.1))
    grads = cell.backward(run, d_state={"h": np.ones((1, 2))})
    assert np.isfinite(grads.state["h"]).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_every_stage_survives_an_expression_at_the_limit(shape, tmp_path):
    under_a_deep_stack(CALLER_FRAMES, lambda: every_stage(deep(shape, MAX_NESTING), tmp_path))


@pytest.mark.parametrize("stage", ["ast", "grad", "unroll"])
def test_the_command_line_dumps_an_expression_at_the_limit(stage, tmp_path, capsys):
    path = tmp_path / "deep.rnn"
    path.write_text(deep("calls", MAX_NESTING))
    status = under_a_deep_stack(CALLER_FRAMES, lambda: main(["check", str(path),
                                                             "--dump-after", stage]))
    assert status == 0, capsys.readouterr().err


@pytest.mark.parametrize("shape", SHAPES)
def test_one_level_past_the_limit_is_a_placed_error_naming_it(shape):
    error = error_of(deep(shape, MAX_NESTING + 1))
    assert isinstance(error, SpecSyntaxError)
    assert error.message == (f"expression nests {MAX_NESTING + 1} levels deep; rnndsl allows "
                             f"at most {MAX_NESTING}: split it into named equations")
    column = 9 if shape == "nested parentheses" else 8     # a span starts inside a '('
    assert (error.span.line, error.span.column) == (6, column)
    assert error.render().startswith(f"x.rnn:6:{column}: error: expression nests")


@pytest.mark.parametrize("text", [
    deep("calls", 400), deep("a long sum", 1000), deep("a long product", 5000),
    deep("unary minus", 20000), deep("nested parentheses", 3000),
], ids=["400 nested calls", "a sum of 1000 terms", "5000 factors", "20000 minus signs",
        "3000 parentheses"])
def test_far_past_the_limit_the_error_is_still_short_and_placed(text, capsys):
    error = error_of(text)
    assert "levels deep; rnndsl allows at most" in error.message
    assert len(error.render()) < 600


def test_far_past_the_limit_the_command_line_reports_it(tmp_path, capsys):
    path = tmp_path / "deep.rnn"
    path.write_text(deep("calls", 400))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:6:8: error: expression nests 400 levels deep" in err
    assert "internal error" not in err


def test_the_error_names_the_first_expression_too_deep_and_only_that():
    text = HEAD + "tanh(x)\n  y = " + SHAPES["calls"](MAX_NESTING + 5) + "\n  output y\n}\n"
    error = error_of(text)
    assert len(error.diagnostics) == 1
    assert (error.span.line, error.span.column) == (7, 7)


def test_a_size_nested_past_the_limit_is_refused():
    size = " + ".join(["H"] * (MAX_NESTING + 2))
    text = f"cell C {{ dims H input x[{size}] state h[H] h' = h }}"
    error = error_of(text)
    assert error.message.startswith(f"this size nests {MAX_NESTING + 1} levels deep")
    assert (error.span.line, error.span.column) == (1, text.index("H + H") + 1)


def test_the_language_page_states_the_limit():
    page = (REPO / "docs" / "language.md").read_text()
    assert f"An expression nests at most {MAX_NESTING} levels" in page
    assert f"nesting more than {MAX_NESTING} levels" in page


def test_parentheses_alone_do_not_nest(tmp_path):
    every_stage(HEAD + "(" * 5000 + "tanh(x + h)" + ")" * 5000 + "\n}\n", tmp_path)


def test_thousands_of_equations_params_and_arguments(tmp_path):
    n = 2000
    text = ("cell Many {\n  dims H\n  input x[H]\n  state h[H]\n"
            + "".join(f"  param p{i}[H] ~ uniform(-0.1, 0.1)\n" for i in range(n))
            + "  a0 = tanh(x + h)\n"
            + "".join(f"  a{i} = a{i - 1} * p{i}\n" for i in range(1, n))
            + f"  s = sum(concat({', '.join(['a0'] * 300)}))\n"
            + f"  h' = tanh(a{n - 1} + s)\n}}\n")
    under_a_deep_stack(CALLER_FRAMES, lambda: every_stage(text, tmp_path))


def test_thousands_of_errors_render_the_first_ones_and_count_the_rest():
    text = ("cell C { dims H input x[H] state h[H] h' = h "
            + "".join(f"y{i} = q " for i in range(2000)) + "}")
    error = error_of(text)
    assert len(error.diagnostics) > MAX_SHOWN
    rendered = error.render()
    assert rendered.count("error: unknown name 'q'") == MAX_SHOWN
    assert rendered.endswith(f"... and {len(error.diagnostics) - MAX_SHOWN} more errors "
                             f"(the first {MAX_SHOWN} are shown)")


# ----------------------------------------------------------------------------- long lines

MEGABYTE = 1_000_000


def rendered_lines(error: SpecError) -> list[str]:
    text = error.render()
    assert len(text) < 700, text[:2000]
    return text.splitlines()


def test_an_error_at_the_end_of_a_megabyte_line_renders_in_a_few_hundred_characters():
    text = ("cell C { dims H input x[H] state h[H] h' = tanh(x" + " " * MEGABYTE
            + "+ h) $ }")
    error = error_of(text)
    column = text.index("$") + 1
    head, source, caret = rendered_lines(error)[:3]
    assert head == f"x.rnn:1:{column}: error: unexpected character '$'"
    assert source.endswith("+ h) $ }") and "..." in source
    assert len(source) <= len("    1 | ") + 3 + 100 + 3
    assert source[caret.index("^")] == "$"


def test_the_window_keeps_the_caret_under_its_token_in_the_middle_of_a_long_line():
    pad = " " * (MEGABYTE // 2)
    text = f"cell C {{ dims H input x[H] state h[H] h' = tanh(x{pad}+ q +{pad}x) }}"
    error = error_of(text)
    head, source, caret = rendered_lines(error)[:3]
    assert head.startswith(f"x.rnn:1:{text.index('q') + 1}: error: unknown name 'q'")
    assert source.startswith("    1 | ...") and source.endswith("...")
    assert source[caret.index("^")] == "q"
    assert caret.count("^") == 1


def test_a_huge_identifier_is_shortened_in_the_message_and_under_the_caret():
    name = "a" * 500_000
    text = f"cell C {{ dims H input x[H] state h[H] h' = {name} }}"
    error = error_of(text)
    head = rendered_lines(error)[0]
    assert head.startswith("x.rnn:1:44: error: unknown name 'aaaa")
    assert "(50000" in head and "characters)" in head


def test_a_huge_unexpected_token_is_shortened():
    text = "cell C { dims H input x[H] state h[H] h' = x " + "1" * 500_000 + " }"
    error = error_of(text)
    assert "(500000 characters)" in rendered_lines(error)[0]


def test_a_huge_operand_quoted_by_the_checker_is_shortened():
    operand = "(" + " + ".join(["x"] * 60) + ")"
    long_line = "h' = " + operand + " * u" + " " * MEGABYTE
    error = error_of("cell C { dims H, K input x[H], u[K] state h[H] " + long_line + "}")
    assert error.message.startswith("shapes do not match in '*': x + x + x")
    assert "characters) is [H] but u is [K]" in error.message
    assert len(error.render()) < 700


def test_shorten_keeps_both_ends_and_the_length():
    assert shorten("short") == "short"
    cut = shorten("x" * 30 + "y" * 1000 + "z" * 30)
    assert cut.startswith("xxxx") and "...zz" in cut and cut.endswith("(1060 characters)")
    assert len(cut) <= 45


@pytest.mark.parametrize("line, column, shown", [
    ("a\tb", 3, ["    1 | a b", "      |   ^"]),
    ("x = \u5b57\u5b57 + $", 10, ["    1 | x = \u5b57\u5b57 + $", "      |            ^"]),
    ("x\u200b = 1", 2, ["    1 | x<U+200B> = 1", "      |  ^^^^^^^^"]),
    ("x\r = 1", 2, ["    1 | x<U+000D> = 1", "      |  ^^^^^^^^"]),
])
def test_the_source_line_is_shown_so_that_the_caret_stands_under_its_character(
        line, column, shown):
    diagnostic = Diagnostic("m", Source("f.rnn", line), Span.point(1, column))
    assert diagnostic.render().splitlines()[1:] == shown


def test_lines_are_counted_as_the_parser_counts_them():
    # U+2028 and a form feed split lines for str.splitlines but not for the parser
    text = "cell C { # a\u2028b\f\n  dims H input x[H] state h[H] h' = $ }"
    error = error_of(text)
    assert error.span.line == 2
    assert error.render().splitlines()[1].endswith("h' = $ }")


def test_crlf_line_ends_are_not_shown():
    error = error_of("cell C {\r\n  dims H\r\n  h' = $\r\n}\r\n")
    assert error.render().splitlines()[1] == "    3 |   h' = $"


def test_an_unreadable_file_name_is_a_spec_file_error():
    with pytest.raises(rnndsl.SpecFileError):
        read_spec("a\x00b.rnn")
