"""User-facing errors and warnings, and how they are shown.

Every mistake a person can make in a spec or at the API ends in one of the classes here.
Spec errors carry a `Span` and render as

    specs/lstm.rnn:12:7: error: unknown name 'c_prev'
       12 |   c' = f * c_prev + i * g
          |            ^^^^^^
    hint: declared names are: h, c, x, ...

Whatever the text, the rendering stays short: the source line is shown as a window of
at most `WINDOW` columns around the caret (`...` marks a cut end), invisible and control
characters as `<U+XXXX>`, quoted text is cut by `shorten`, and an error lists at most
`MAX_SHOWN` of its diagnostics. A 1 MB line with an error at its end renders in a few
hundred characters.

Internal invariants are plain `assert`s: they are bugs, not user errors.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

WINDOW = 100        # columns of a source line shown around the caret
MAX_QUOTE = 40      # characters of a token or a piece of source quoted in a message
MAX_WORD = 160      # a longer word in a message is cut (a huge name quoted as it is)
MAX_TEXT = 600      # characters of a message or a hint
MAX_SHOWN = 20      # diagnostics rendered by one error; the rest are counted


def shorten(text: str, limit: int = MAX_QUOTE) -> str:
    """`text` cut in its middle to about `limit` characters, for quoting in a message: a
    500 KB identifier is shown by its two ends and its length."""
    if len(text) <= limit:
        return text
    note = f" ({len(text)} characters)"
    room = max(8, limit - len(note) - 3)
    head = room * 2 // 3
    return f"{text[:head]}...{text[len(text) - (room - head):]}{note}"


_LONG_WORD = re.compile(r"\S{%d,}" % (MAX_WORD + 1))
# controls but the newline, zero-width and direction marks, line separators, the BOM
_INVISIBLE = re.compile(
    r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


def _tame(text: str) -> str:
    """A message or hint as shown: control and invisible characters (a NUL in a quoted
    path) escaped, a word longer than MAX_WORD (a huge name that a check quoted whole) cut
    by `shorten`, and the whole held to about MAX_TEXT."""
    text = _INVISIBLE.sub(lambda m: repr(m.group())[1:-1], text)
    if len(text) > MAX_WORD:
        text = _LONG_WORD.sub(lambda m: shorten(m.group(), MAX_QUOTE * 2), text)
    return shorten(text, MAX_TEXT)


@dataclass(frozen=True)
class Span:
    """A place in a source file: 1-based line and column, end exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    @staticmethod
    def point(line: int, column: int) -> "Span":
        return Span(line, column, line, column + 1)

    def __add__(self, other: "Span") -> "Span":
        first, last = sorted([self, other], key=lambda s: (s.line, s.column))
        end = max([self, other], key=lambda s: (s.end_line, s.end_column))
        return Span(first.line, first.column, end.end_line, end.end_column)


@dataclass(frozen=True)
class Source:
    """A spec's text and the path it is reported under."""

    path: str
    text: str

    @property
    def lines(self) -> tuple[str, ...]:
        """The lines as the parser counts them: split at "\\n" only (str.splitlines also
        splits at \\r, \\f, U+2028 and others, which would number lines differently), a
        CRLF's \\r dropped."""
        return _lines(self.text)

    def line(self, number: int) -> str:
        lines = self.lines
        return lines[number - 1] if 1 <= number <= len(lines) else ""


@lru_cache(maxsize=8)
def _lines(text: str) -> tuple[str, ...]:
    # cached apart from Source, which is pickled with a built module's spec: an error per
    # line of a large file splits its text once, not once an error
    return tuple(line[:-1] if line.endswith("\r") else line for line in text.split("\n"))


class RnnError(Exception):
    """Base of every error rnndsl reports to a user (never a bug)."""

    def render(self) -> str:
        return f"error: {self}"


@dataclass
class Diagnostic:
    """One message about a place in a spec: an error or a warning."""

    message: str
    source: Source | None
    span: Span | None
    hint: str | None = None
    severity: str = "error"

    def render(self) -> str:
        message = _tame(self.message)
        if self.source is None or self.span is None:
            head = f"{self.source.path if self.source else '<spec>'}: {self.severity}: "
            text = head + message
        else:
            sp = self.span
            text = f"{self.source.path}:{sp.line}:{sp.column}: {self.severity}: {message}"
            line = self.source.line(sp.line)
            if line:
                width = (sp.end_column - sp.column if sp.end_line == sp.line
                         else len(line) - sp.column + 1)
                shown, before, under = _window(line, sp.column - 1, max(1, width))
                gutter = f"{sp.line:>5} | "
                caret = " " * (len(gutter) - 2) + "| " + " " * before + "^" * under
                text += "\n" + gutter + shown + "\n" + caret
        if self.hint:
            text += f"\n  hint: {_tame(self.hint)}"
        return text


def _shown(ch: str) -> str:
    """One character of a source line as shown above a caret: a tab as one space (a caret
    counts one column a character), what is invisible or moves the cursor (controls,
    zero-width and format characters, spaces other than ' ', line separators) by its
    code point, so that the caret has something to stand under."""
    if ch == "\t":
        return " "
    if ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zs",
                                                      "Zl", "Zp"):
        return ch
    return f"<U+{ord(ch):04X}>"


def _columns(shown: str) -> int:
    """Terminal columns of shown text: wide East Asian characters take two, combining
    marks none."""
    if shown.isascii():
        return len(shown)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else
               0 if unicodedata.combining(c) else 1 for c in shown)


def _window(line: str, start: int, width: int) -> tuple[str, int, int]:
    """The part of `line` shown around characters [start, start + width): its text, the
    columns before the caret, and the number of carets. At most WINDOW columns of the line,
    up to a third of them before the caret, with `...` at each end that is cut."""
    start = max(0, min(start, len(line)))

    def cols(i: int) -> int:
        return _columns(_shown(line[i]))

    lo, used = start, 0
    while lo > 0 and used + cols(lo - 1) <= WINDOW // 3:
        lo -= 1
        used += cols(lo)
    hi = start
    while hi < len(line) and used + cols(hi) <= WINDOW:
        used += cols(hi)
        hi += 1
    while lo > 0 and used + cols(lo - 1) <= WINDOW:    # the line ends early: more before
        lo -= 1
        used += cols(lo)
    before = ("..." if lo > 0 else "") + "".join(_shown(c) for c in line[lo:start])
    under = "".join(_shown(c) for c in line[start:min(hi, start + width)])
    shown = before + "".join(_shown(c) for c in line[start:hi]) + ("..." if hi < len(line)
                                                                   else "")
    return shown, _columns(before), max(1, _columns(under))


class SpecError(RnnError):
    """One or more errors in a spec file, each with its place."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        assert diagnostics, "a SpecError needs at least one diagnostic"
        self.diagnostics = diagnostics
        first = diagnostics[0]
        super().__init__(first.message)

    @property
    def message(self) -> str:
        return self.diagnostics[0].message

    @property
    def span(self) -> Span | None:
        return self.diagnostics[0].span

    def render(self) -> str:
        shown = [d.render() for d in self.diagnostics[:MAX_SHOWN]]
        more = len(self.diagnostics) - MAX_SHOWN
        if more > 0:
            shown.append(f"... and {more} more error{'s' if more > 1 else ''} (the first "
                         f"{MAX_SHOWN} are shown)")
        return "\n".join(shown)

    def __str__(self) -> str:
        return self.render()


class SpecSyntaxError(SpecError):
    """The text is not in the .rnn grammar."""


class CheckError(SpecError):
    """The text parses but does not mean a cell: names, shapes, cycles, updates."""


class SpecFileError(RnnError):
    """A spec file cannot be read, or a `use` cannot be resolved."""


class BindError(RnnError):
    """A cell was instantiated or called with the wrong dims, arrays, shapes or dtypes."""


@dataclass
class Warnings:
    """Warnings collected by the checker; shown by the CLI, kept on the loaded cell."""

    items: list[Diagnostic] = field(default_factory=list)

    def add(self, message: str, source: Source, span: Span, hint: str | None = None) -> None:
        self.items.append(Diagnostic(message, source, span, hint, severity="warning"))


class TargetError(RnnError):
    """A backend was asked for that does not exist or cannot run here."""
