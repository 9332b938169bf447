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
        if opener is not None:
            self.line(opener)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def safe_comment(text: str) -> str:
    """Text for a comment: printable ASCII only, so nothing can end the comment early."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
