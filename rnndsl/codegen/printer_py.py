"""A small printer for generated Python: `line()` and `with indent():`."""

from __future__ import annotations

from contextlib import contextmanager


class Printer:
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
        """Indent what the body prints. A block opened by `opener` that printed no
        statement (a time loop whose every node was hoisted, say) is dropped whole:
        Python rejects an empty block, and an empty loop is nothing to do anyway."""
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
