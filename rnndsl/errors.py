"""User-facing errors and warnings, and how they are shown.

Every mistake a person can make in a spec or at the API ends in one of the classes here.
Spec errors carry a `Span` and render as

    specs/lstm.rnn:12:7: error: unknown name 'c_prev'
       12 |   c' = f * c_prev + i * g
          |            ^^^^^^
    hint: declared names are: h, c, x, ...

Internal invariants are plain `assert`s: they are bugs, not user errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def line(self, number: int) -> str:
        lines = self.text.splitlines()
        return lines[number - 1] if 1 <= number <= len(lines) else ""


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
        if self.source is None or self.span is None:
            head = f"{self.source.path if self.source else '<spec>'}: {self.severity}: "
            text = head + self.message
        else:
            sp = self.span
            text = f"{self.source.path}:{sp.line}:{sp.column}: {self.severity}: {self.message}"
            line = self.source.line(sp.line)
            if line:
                gutter = f"{sp.line:>5} | "
                width = (sp.end_column - sp.column if sp.end_line == sp.line
                         else len(line) - sp.column + 1)
                width = max(1, width)
                caret = " " * (len(gutter) - 2) + "| " + " " * (sp.column - 1) + "^" * width
                text += "\n" + gutter + line.expandtabs(1) + "\n" + caret
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


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
        return "\n".join(d.render() for d in self.diagnostics)

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
