"""The printer of the structured kernel form (form.py): the emitters build the form
through `Printer`, and its text is printed once, at the end."""

from __future__ import annotations

from contextlib import contextmanager

from . import form
from .form import Assign, Block, Call, Comment, Raw, Stmt


class Printer:
    """Builds the structured kernel form (form.py) with `line()`, `assign()`, `call()`
    and `with indent():`; `text()` prints it, once."""

    def __init__(self) -> None:
        self.body: list = []
        self._into = self.body

    def add(self, st: Stmt) -> Stmt:
        self._into.append(st)
        return st

    def line(self, text: str = "") -> None:
        """A line that reads nothing the passes follow (a docstring, a decorator)."""
        self.add(Raw(text))

    def comment(self, text: str) -> None:
        for part in text.splitlines() or [""]:
            self.add(Comment(safe_comment(part)))

    def assign(self, target, value, note: str = "", op: str = "=") -> None:
        self.add(Assign(target, value, op, note))

    def call(self, fn: str, *args, note: str = "") -> None:
        self.add(Call(fn, args, note))

    @contextmanager
    def indent(self, opener=None, bound: tuple = ()):
        """Indent what the body adds under `opener` (a header text or a Block). A block
        that holds no statement (a time loop whose every node was hoisted, say) is
        dropped whole: Python rejects an empty block, and an empty loop is nothing to
        do anyway. With no opener, the body is only indented (a continuation)."""
        block = opener if isinstance(opener, Block) else Block(opener, bound=tuple(bound))
        outer, self._into = self._into, block.body
        try:
            yield block
        finally:
            self._into = outer
        if opener is None or any(st.is_statement() for st in block.body):
            self.add(block)

    @contextmanager
    def capture(self):
        """What the body adds, kept apart (a loop nest that becomes a device kernel)."""
        outer, self._into = self._into, []
        try:
            yield self._into
        finally:
            self._into = outer

    def text(self) -> str:
        return form.text(self.body)


class LinePrinter:
    """Lines of text with `line()` and `with indent():` (the persistent pass's phases)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def line(self, text: str = "") -> None:
        self.lines.append(("    " * self.depth + text) if text else "")

    def comment(self, text: str) -> None:
        for part in text.splitlines() or [""]:
            self.line("# " + safe_comment(part))

    @contextmanager
    def indent(self, opener: str | None = None):
        start = len(self.lines)
        if opener is not None:
            self.line(opener)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        body = self.lines[start + 1:]
        if opener is not None and not any(_is_statement(text) for text in body):
            del self.lines[start:]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def signature(name: str, params) -> str:
    """`def name(...):` with one parameter a line (a kernel takes dozens: one line of
    them is hundreds of characters that nobody reads), or `def name():`. A parameter is
    a name or (name, note): the note follows it as a comment (what the value is)."""
    params = [(p, None) if isinstance(p, str) else p for p in params]
    if not params:
        return f"def {name}():"
    width = max(len(p) for p, _ in params) + 1
    lines = [f"    {p + ',':<{width}}  # {safe_comment(note)}" if note else f"    {p},"
             for p, note in params]
    return f"def {name}(\n" + "\n".join(lines) + "\n):"


def _is_statement(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and not stripped.startswith("#")


def safe_comment(text: str) -> str:
    """Text for a comment: printable ASCII only, so nothing can end the comment early."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


def safe_docstring(text: str) -> str:
    """Text for the inside of a triple-quoted docstring: a comment's text, less the
    double quote (three of them in a spec's path would close the string, and what
    follows would run at import) and the backslash (which could escape the closing
    quotes or start a bad escape)."""
    return "".join("?" if ch in '"\\' else ch for ch in safe_comment(text))
