"""The Lark parser of grammars/rnn.lark, shared by the parser (parse.py) and its syntax
errors (syntax_errors.py), which replay a failed parse to place a mistake."""

from __future__ import annotations

import functools

from lark import Lark, Token

from ..core.errors import Span
from .shipped import grammar_path


@functools.lru_cache(maxsize=None)
def lalr_parser() -> Lark:
    """The grammar's LALR(1) parser, made once a process."""
    # cache=True keeps the LALR tables in a temporary file keyed by the grammar's hash:
    # building them took 0.12 s of every new process's warm load
    return Lark(grammar_path().read_text(), parser="lalr", propagate_positions=True,
                maybe_placeholders=True, cache=True)


def span_of(item) -> Span:
    """Where a token or a tree (with propagated positions) is in the text."""
    if isinstance(item, Token):
        return Span(item.line, item.column, item.end_line, item.end_column)
    return Span(item.line, item.column, item.end_line, item.end_column)
