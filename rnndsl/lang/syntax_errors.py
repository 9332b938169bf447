"""Syntax errors of stage 1 (parse.py), placed and worded for the person who typed them.

Lark stops at the first token that does not fit; what it expected there is rarely what
the user left out. Three layers turn its error into a `SpecSyntaxError` with file:line:col,
a caret and a hint:
- labels: the parser's state at the error is matched against canonical bad inputs
  (SYNTAX_EXAMPLES), as Lark's `match_examples` does, and a missing closer is found by
  feeding one;
- characters: a character pasted from a paper (a typographic prime or minus, a
  non-breaking space) is named with the ASCII one to type (LOOKALIKES);
- misreadings: a mistake that the parser read as something else (`~ 0x10`, `2b`, `h' =`
  followed by the next line's keyword) stops it a few tokens later; the tokens before the
  error are replayed to report the mistake where it is.
"""

from __future__ import annotations

import copy
import functools
import re
import unicodedata

import lark
from lark import Token
from lark.parsers.lalr_interactive_parser import InteractiveParser

from ..core.errors import Diagnostic, Source, Span, SpecSyntaxError, shorten
from ..core.ops import FUNCTIONS
from .lark_parser import lalr_parser as _parser
from .lark_parser import span_of as _span_of


MISSING_BRACE = "missing '}' at the end of the cell"
UNCLOSED_PAREN = "unclosed parenthesis: expected ')'"
OPERATOR_MISSING = "an operator is missing between two operands (a matrix product reads W @ x)"
EXPRESSION = "expected an expression"

# Canonical bad inputs, one list per labelled message. `_label` matches the parser state at
# an error against these; an example failing on the same token wins, else the first label
# whose example fails in the same state. A test checks that each example gets its label.
SYNTAX_EXAMPLES: dict[str, list[str]] = {
    EXPRESSION: [
        "cell C { h' = }",
        "cell C { h' = tanh(x) + }",
        "cell C { h' = x - }",
        "cell C { h' = 2 * }",
        "cell C { h' = x / }",
        "cell C { h' = W @ }",
        "cell C { h' = x ** }",
        "cell C { h' = - }",
        "cell C { h' = ( }",
        "cell C { output y = }",
        "cell C { h' = tanh( , x) }",
        "cell C { h' = max(x, ) }",
    ],
    UNCLOSED_PAREN: [
        "cell C { h' = tanh(x }",
        "cell C { h' = (a + b }",
        "cell C { h' = max(a, b }",
    ],
    # two operands in a row inside parentheses: the ')' was not missing
    OPERATOR_MISSING: [
        "cell C { h' = tanh(W x) }",
        "cell C { h' = tanh(W x + h) }",
        "cell C { h' = (a b) }",
        "cell C { h' = max(a b, c) }",
        "cell C { h' = tanh(2 x) }",
    ],
    "a statement outside a cell: statements go inside `cell Name { ... }`": [
        "dims H",
        "input x[I]",
        "h' = x",
        "param W[H, H]",
        "cell C { } dims H",
        "cell C { dims H } input x[I]",
        "cell C { } state h[H]",
        "cell C { dims H } h' = x",
        "cell C { dims H } output y",
        "use \"a.rnn\" input x[I]",
    ],
    "an unmatched '}': the cell before it is already closed": [
        "cell C { } }",
        "cell C { dims H } }",
        "}",
    ],
    "a declared name needs a shape in brackets, like `x[I]`": [
        "cell C { input x }",
        "cell C { input x, y[I] }",
        "cell C { state h }",
        "cell C { state h, c[H] }",
    ],
    "a state starts at a number or at a param: `state h[H] = 0.5` or `state h[H] = h0`": [
        "cell C { state h[H] = }",
        "cell C { state h[H] = -h0 }",
        "cell C { state h[H] = zeros() }",
    ],
    "expected '=' after the name: an equation reads `name = expr` or `state' = expr`": [
        "cell C { h' tanh(x) }",
        "cell C { a tanh(x) }",
        "cell C { h' = a \n b }",
    ],
    MISSING_BRACE: [
        "cell C { dims H",
        "cell C { h' = tanh(x)",
        "cell C { input x[I]",
    ],
    "a cell needs a name and a body: `cell Name { ... }`": [
        "cell { }",
        "cell C dims H }",
    ],
    "a size is a dim, a whole number, or a sum of them, like `H`, `4 * H`, `I + H`": [
        "cell C { input x[1.5] }",
        "cell C { input x[H * 2] }",
        "cell C { param W[H,] }",
        "cell C { h' = x[0.5:] }",
        "cell C { h' = x[:0.5] }",
        "cell C { h' = x[H * 2:] }",
        "cell C { h' = x[:H * 2] }",
    ],
    "a slice needs a colon, like `x[0:H]`, `x[H:]` or `x[i:i + 1]` for one feature": [
        "cell C { h' = x[0] }",
        "cell C { h' = x[H] }",
    ],
    "an initialiser follows `~`: a number, or a name like `glorot` or `uniform(-0.1, 0.1)`": [
        "cell C { param W[H] ~ }",
        "cell C { param W[H] ~ [1] }",
        "cell C { param W[H] ~ f(x) }",
        "cell C { param a ~ }",
        "cell C { param a ~ f(x) }",
    ],
    # a declared name followed by what another kind of declaration takes
    "a param's initialiser follows `~`, not `=`: `param W[H, I] ~ glorot`, `param b[H] ~ 0`": [
        "cell C { param p[H] = 3 }",
        "cell C { param p = 3 }",
    ],
    "a state starts at `= value`, not `~`: `state h[H] = 0.5` or `state h[H] = h0`": [
        "cell C { state h[H] ~ zeros }",
    ],
    "an input takes no initialiser: the caller gives it": [
        "cell C { input x[I] ~ zeros }",
        "cell C { input x[I] = 0 }",
    ],
    "`use` takes a quoted path: `use \"other.rnn\"`": [
        "use other.rnn",
        "use other",
    ],
    "a declaration needs at least one name, like `dims I, H` or `input x[I]`": [
        "cell C { dims }",
        "cell C { input }",
        "cell C { state }",
        "cell C { param }",
    ],
    "a name must follow the ',': remove a trailing ','": [
        "cell C { dims H, }",
        "cell C { input x[I], }",
        "cell C { state h[H], }",
        "cell C { param W[H], }",
        "cell C { dims I, H, }",
        "cell C { input x[I], y[I], }",
        "cell C { state h[H], c[H], }",
        "cell C { param W[H], U[H], }",
    ],
}

HINTS = {
    "expected '=' after the name: an equation reads `name = expr` or `state' = expr`":
        "is an operator missing between two operands on the line before?",
    MISSING_BRACE: "every `cell Name {` needs a closing `}`",
}


@functools.lru_cache(maxsize=None)
def _example_errors() -> tuple[tuple[str, int, frozenset, str, str], ...]:
    """Where each of SYNTAX_EXAMPLES fails: (label, parser state, accepts, token type, text)."""
    found = []
    for label, examples in SYNTAX_EXAMPLES.items():
        for text in examples:
            try:
                _parser().parse(text)
            except lark.exceptions.UnexpectedToken as exc:
                found.append((label, exc.state.position, frozenset(exc.accepts),
                              exc.token.type, str(exc.token)))
            else:
                raise AssertionError(f"the syntax example {text!r} parses")
    return tuple(found)


def _label(exc: lark.exceptions.UnexpectedToken) -> str | None:
    """The label of the canonical bad input that fails in the same parser state.

    Like lark's `match_examples`, but the state is compared by its LALR state and the set of
    tokens it accepts, not by the depth of the parser's stack: lark's comparison counts the
    statements before the error, so an example only matched errors in a cell's first
    statement. Examples that fail at the end of the file label only errors there.
    """
    if exc.token.type == "$END":
        closer = _missing_closer(exc)
        if closer is not None:
            return closer
    return _label_at(exc.state.position, frozenset(exc.accepts), exc.token)


def _label_at(position: int, accepts: frozenset, token: Token) -> str | None:
    """The label of an error on `token` in the LALR state `position` accepting `accepts`."""
    at_end = token.type == "$END"
    candidate = same_kind = None
    for label, state, example_accepts, token_type, token_text in _example_errors():
        if state != position or example_accepts != accepts:
            continue
        if token_type == "$END" and not at_end:
            continue
        if (token_type, token_text) == (token.type, str(token)):
            return label
        if token_type == token.type:      # a name where the example has another name
            same_kind = same_kind or label
        candidate = candidate or label
    return same_kind or candidate


_CLOSERS = (("}", MISSING_BRACE), (")}", UNCLOSED_PAREN), ("))}", UNCLOSED_PAREN),
            (")))}", UNCLOSED_PAREN), ("]}", "unclosed bracket: expected ']'"))
_CLOSER_TOKENS = {"}": "RBRACE", ")": "RPAR", "]": "RSQB"}


def _missing_closer(exc: lark.exceptions.UnexpectedToken) -> str | None:
    """At the end of the file: the label of the closers that would complete the text."""
    for closers, label in _CLOSERS:
        parser = exc.interactive_parser.copy()
        try:
            for c in closers:
                parser.feed_token(Token(_CLOSER_TOKENS[c], c))
            parser.feed_eof()
        except lark.exceptions.UnexpectedInput:
            continue
        return label
    return None


_PRETTY = {
    "NAME": "a name", "NUMBER": "a number", "SIGNED_NUMBER": "a number", "INT": "an integer",
    "STRING": "a quoted path", "$END": "the end of the file",
}


def _pretty(terminal: str) -> str:
    """A terminal as a person reads it: keywords bare, punctuation quoted."""
    if terminal in _PRETTY:
        return _PRETTY[terminal]
    for t in _parser().terminals:
        if t.name == terminal and isinstance(t.pattern, lark.lexer.PatternStr):
            text = t.pattern.value
            return text if text.isalpha() else repr(text) if "'" not in text else f'"{text}"'
    return terminal.lower()


def _describe_expected(expected: set[str]) -> str:
    words = sorted({_pretty(e) for e in expected})
    if len(words) > 8:
        return ", ".join(words[:8]) + ", ..."
    return ", ".join(words)


def _token_text(token: Token) -> str:
    if token.type == "$END":
        return "the end of the file"
    return repr(shorten(str(token)))


# Characters pasted from papers and word processors that look like ASCII the grammar
# knows: character -> (what to type instead, the hint). Looked up when the lexer stops.
_PRIME = ("'", "type ' (the ASCII apostrophe) instead: a next value is written h'")
_MINUS = ("-", "type - (the ASCII hyphen-minus) instead: a - b, -x")
_TIMES = ("*", "type * instead for an elementwise product, or @ for a matrix-vector "
               "product: W @ x * g")
_DIVIDE = ("/", "type / (the ASCII slash) instead: a / b")
_QUOTE = ('"', 'type " (the ASCII double quote) instead: use "other.rnn"')
_SPACE = (" ", "type a plain space instead: this one only looks like a space")
_INVISIBLE = ("", "delete it: an invisible character, often pasted along with text")


def _typed(char: str) -> tuple[str, str]:
    return char, f"type {char} instead"


LOOKALIKES: dict[str, tuple[str, str]] = {
    **dict.fromkeys("\u2032\u2019\u2018\u02b9\u02bc\u00b4\u201b\uff07", _PRIME),
    **dict.fromkeys("\u2212\u2013\u2014\u2010\u2011\u2012\u2015\ufe63\uff0d", _MINUS),
    **dict.fromkeys("\u00d7\u00b7\u2217\u22c5\u2022\u2219\u2299\u2218\u2715\uff0a",
                    _TIMES),
    **dict.fromkeys("\u00f7\u2215\u2044\uff0f", _DIVIDE),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\uff02", _QUOTE),
    **dict.fromkeys("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                    "\u2008\u2009\u200a\u202f\u205f\u3000", _SPACE),
    **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff\u00ad", _INVISIBLE),
    **dict.fromkeys("\u2028\u2029\u0085", ("\n", "type a plain newline instead")),
    **{wide: _typed(chr(ord(wide) - 0xFEE0)) for wide in "\uff08\uff09\uff0b\uff0c\uff1a"
       "\uff1d\uff20\uff3b\uff3d\uff5b\uff5d"},       # full-width ( ) + , : = @ [ ] { }
    "\u2254": ("=", "type = instead: an equation is written h' = ..."),
    "\u2190": ("=", "type = instead: an equation is written h' = ..."),
    "\u2236": _typed(":"),
    "\u03c3": ("sigmoid", "write sigmoid(x): the logistic function is a call"),
    "\u2211": ("sum", "write sum(v) for the sum of a vector's features"),
    "\u03a3": ("sum", "write sum(v) for the sum of a vector's features"),
    "\u221a": ("sqrt", "write sqrt(x)"),
    "\u00b2": ("**", "write x ** 2"),
    "\u00b3": ("**", "write x ** 3"),
    "\u2295": ("concat", "write concat(a, b) to join two vectors"),
}


def _character_hint(char: str) -> str:
    """The hint for a character that no token starts with."""
    if char in LOOKALIKES:
        return LOOKALIKES[char][1]
    if char == "'":
        return "a prime follows a state name directly, like h'"
    if not char.isascii() and char.isalpha():
        return ("names are ASCII letters, digits and _, starting with a letter: spell it "
                "out (sigma, W_1)")
    if not char.isascii() and char.isdigit():
        return "digits are ASCII: write W_1, not W\u2081"
    return "names are letters, digits and _, starting with a letter; comments start with #"


def _character_text(char: str) -> str:
    """A character in a message: quoted, with its code point and name when not ASCII, so
    that an invisible or look-alike one can be told apart."""
    if char.isascii():
        return repr(char)
    name = unicodedata.name(char, "")
    return f"{char!r} (U+{ord(char):04X}{' ' + name if name else ''})"


def _syntax_error(text: str, source: Source, exc: lark.exceptions.LarkError) -> SpecSyntaxError:
    label = None
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        label = _label(exc)
    # the end of the file is shown after the last line's text, not on the empty line that
    # follows a final newline
    lines = source.lines[:-1] if len(source.lines) > 1 and text.endswith("\n") else \
        source.lines
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        span = Span.point(exc.line, exc.column)
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else "?"
        if char == '"' and '"' not in text[exc.pos_in_stream + 1:].split("\n", 1)[0]:
            return SpecSyntaxError(Diagnostic(
                "unterminated string: the closing quote is missing", source, span,
                'a path is quoted on one line: use "other.rnn"'))
        message = f"unexpected character {_character_text(char)}"
        return SpecSyntaxError(Diagnostic(message, source, span, _character_hint(char)))
    token = getattr(exc, "token", None)
    both = _once_and_token(lines, token)
    if both is not None:
        return SpecSyntaxError(Diagnostic(*both[:1], source, *both[1:]))
    misread = None
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        try:        # replays the parse through Lark's interactive parser: on the error
            misread = _misread(text, exc)    # path only, and never worse than no guess
        except Exception:       # noqa: BLE001 - a Lark that changed its internals
            misread = None
    if misread is not None:
        message, span, hint = misread
        return SpecSyntaxError(Diagnostic(message, source, span, hint))
    if token is None or token.type == "$END" or getattr(token, "line", None) in (None, -1):
        span = Span.point(len(lines), len(lines[-1]) + 1)
        found = "the end of the file"
    else:
        span = _span_of(token)
        found = _token_text(token)
    # `accepts` is what the parser would take here; lark's `expected` is the LALR table's
    # row, which lists ')' where no parenthesis is open and omits the keywords
    expected = getattr(exc, "accepts", None) or getattr(exc, "expected", None) or set()
    generic = f"unexpected {found}"
    if expected:
        generic += f"; expected {_describe_expected(set(expected))}"
    if label:
        message = f"{label} (found {found})"
        hint = HINTS.get(label)
    else:
        message = generic
        hint = None
    return SpecSyntaxError(Diagnostic(message, source, span, hint))


# `input once token x[V]` (or `token once`) stops the parser at x, which it takes for a
# second name after `token` (or `once`): a message of its own, not "a declared name needs
# a shape". A name `token` itself (`input once token[V]`) parses, and is refused as a
# keyword further on.
_ONCE_AND_TOKEN = re.compile(r"^(\s*input\s+(?:once|token)\s+)(once|token)\s+[A-Za-z_]")


def _once_and_token(lines: list[str], token) -> tuple | None:
    """(message, span, hint) where the error is on a line declaring an input both `once`
    and `token`; else None."""
    line = getattr(token, "line", None)
    if not isinstance(line, int) or not 1 <= line <= len(lines):
        return None
    found = _ONCE_AND_TOKEN.match(lines[line - 1])
    if found is None or found.group(1).split()[1] == found.group(2):
        return None
    column = len(found.group(1)) + 1
    return ("an input is `once` or `token`, not both: `input once x[V]` is given once a "
            "sequence, `input token x[V]` an id at every step",
            Span(line, column, line, column + len(found.group(2))),
            "a token given once a sequence (a class id, say) is not supported: give it as "
            "its one-hot row, `input once x[V]`")


# A mistake that the parser reads as something else stops it a few tokens later, where the
# text no longer fits what it took the mistake for: `~ 0x10` is the number 0 and then an
# equation `x10 ...`, `h' =` followed by `output h'` on the next line is `h' = output`. The
# tokens before the error are replayed to find the mistake and report it where it is.
_MISREAD_WINDOW = 3     # tokens between a misread one and the error, at most
_NUMBERS = frozenset({"NUMBER", "SIGNED_NUMBER", "INT"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RADIX = re.compile(r"([xX][0-9a-fA-F]+|[bB][01]+|[oO][0-7]+)")
_RADIX_NAMES = {"x": "hexadecimal", "b": "binary", "o": "octal"}
# `use` and `cell` where a statement of a cell starts: words no statement begins with
MISPLACED = {
    "use": ("`use` goes at the top of the file, outside cells",
            "move the line above the first `cell`"),
    "cell": ("a cell inside a cell: cells do not nest",
             "close the cell before it with '}', then start the next one"),
}


@functools.lru_cache(maxsize=None)
def _keywords() -> frozenset[str]:
    """The grammar's keywords that begin a statement or a file item: dims, use, output, ..."""
    return frozenset(t.pattern.value for t in _parser().terminals
                     if isinstance(t.pattern, lark.lexer.PatternStr) and t.pattern.value.isalpha())


def _replay(text: str) -> tuple[list[Token], dict[int, InteractiveParser]]:
    """The tokens the parser took before its error, and its state before each of the last
    _MISREAD_WINDOW of them and before the error (at index len(tokens)). Two passes, so as
    to copy the parser's stacks only near the error."""
    def tokens_and_states(keep_from: int):
        taken, states = [], {}
        parser = _parser().parse_interactive(text)
        try:
            for token in parser.iter_parse():
                if len(taken) >= keep_from:
                    states[len(taken)] = parser.copy(deepcopy_values=False)
                taken.append(token)
        except lark.exceptions.UnexpectedInput:
            states[len(taken)] = parser
        return taken, states
    taken, _ = tokens_and_states(keep_from=1 << 62)
    return tokens_and_states(keep_from=len(taken) - _MISREAD_WINDOW)


def _between(first: Token, last: Token) -> Span:
    return Span(first.line, first.column, last.end_line, last.end_column)


def _unfinished(parser) -> str | None:
    """What the statement that `parser` is inside lacks to end: the label (or the expected
    tokens) of the error a '}' would make there; None if it may end there."""
    parser = parser.copy(deepcopy_values=False)
    conf = copy.copy(parser.parser_state.parse_conf)
    conf.callbacks = {}     # no trees: only the state matters
    parser.parser_state.parse_conf = conf
    brace = Token("RBRACE", "}")
    try:
        parser.feed_token(brace)
    except lark.exceptions.UnexpectedToken as exc:
        accepts = frozenset(parser.accepts())
        return (_label_at(exc.state.position, accepts, brace)
                or f"expected {_describe_expected(set(accepts))}")
    return None


def _glued(seq: list[Token], error: int) -> tuple | None:
    """A number written against a name (`2b`, `0x10`, `1_000`), or a function name before an
    operand without parentheses (`sigmoid b`), where the name is the error token or the one
    the parser took just before it."""
    for b in (error, error - 1):
        if b < 1:
            continue
        first, second = seq[b - 1], seq[b]
        if not _WORD.fullmatch(str(second)) or second.type == "$END":
            continue
        if first.type in _NUMBERS and second.start_pos == first.end_pos:
            written = f"{first}{second}"
            radix = _RADIX.fullmatch(str(second))
            if str(first) == "0" and radix:
                kind = _RADIX_NAMES[str(second)[0].lower()]
                return (f"'{written}' is a {kind} number: numbers are written in decimal",
                        _between(first, second), f"write {int(written, 0)}")
            if re.fullmatch(r"_[0-9_]+", str(second)):
                return (f"'{written}': digits are not grouped with '_' in a number",
                        _between(first, second), f"write {written.replace('_', '')}")
            return (f"a number followed by a name: write {first} * {second}",
                    _between(first, second), "an operator goes between two operands")
        if (first.type == "NAME" and (str(first) in FUNCTIONS or str(first) == "dropout")
                and second.line == first.line):
            return (f"a function is called with parentheses: {first}({second})",
                    _between(first, second), None)
    return None


# tokens that end an operand: a name, a number, a closing parenthesis, a state's prime
_OPERAND_ENDS = _NUMBERS | {"NAME", "RPAR", "PRIME"}


def _operands_in_a_row(seq: list[Token], error: int, states: dict) -> tuple | None:
    """Two operands with no operator between them on one line, outside parentheses
    (`h' = W x + h`): the parser ends the equation after the first and reads the second
    as the name that starts the next statement, which then lacks its '='. Unless what
    follows that name is a '=' or a "'" (a next statement indeed, on the same line).
    (Inside parentheses the parser stops at the second operand: OPERATOR_MISSING.)"""
    k = error - 1
    if k < 1 or k not in states or seq[error].type in ("EQUAL", "PRIME"):
        return None
    first, second = seq[k - 1], seq[k]
    if second.type != "NAME" or first.type not in _OPERAND_ENDS \
            or second.line != first.end_line or "RBRACE" not in states[k].accepts():
        return None
    if str(first) in _keywords() or str(second) in _keywords():
        return None     # a keyword the parser took for a name: _keyword_read_as_name's
    return (f"{OPERATOR_MISSING} (found '{second}')", _between(first, second),
            f"without one the equation ends at '{first}', and '{second}' reads as the start "
            "of the next statement")


def _keyword_read_as_name(seq: list[Token], error: int, states: dict) -> tuple | None:
    """A keyword the parser had to take for a name, because the statement before it was
    unfinished (`h' =` and then `output h'`), or because no statement starts with it (`use`
    inside a cell); or a keyword just after a stray word (`cell C { qq` and then `dims H`).
    A keyword that is itself the error after a longer unfinished statement (`input x` and
    then `state h[H]`) is left where the parser found it."""
    for k in range(max(1, error - _MISREAD_WINDOW), error + 1):
        word = seq[k]
        if str(word) not in _keywords() or (k < error and word.type != "NAME"):
            continue
        if k == error and not (k - 1 in states and "RBRACE" in states[k - 1].accepts()):
            continue
        parser = states.get(k)
        inside = sum({"LBRACE": 1, "RBRACE": -1}.get(t.type, 0) for t in seq[:k]) > 0
        if parser is None or not inside:    # outside a cell, a keyword is only misplaced
            continue
        if "RBRACE" in parser.accepts():    # a statement could start here: the word is wrong
            if str(word) not in MISPLACED:
                return None
            return (*MISPLACED[str(word)][:1], _span_of(word), MISPLACED[str(word)][1])
        what = _unfinished(parser)
        if what is None:
            return None
        return (f"{what} (found the keyword '{word}')", _span_of(seq[k - 1]),
                f"'{word}' starts the next statement, so the one before it is unfinished")
    return None


def _continued_line(seq: list[Token], error: int, states: dict) -> tuple | None:
    """A name that starts a line, taken as the end of the statement on the line before it,
    just before an error that shows it starting an equation (`h'` or `h =`): the statement
    before it is unfinished (a trailing ',', a `~` with nothing after it)."""
    for k in (error - 1, error - 2):
        if k < 1 or k not in states:
            continue
        word, before = seq[k], seq[k - 1]
        after = [t.type for t in seq[k + 1:error + 1]]
        if (word.type == "NAME" and word.line > before.end_line
                and after in (["PRIME"], ["EQUAL"], ["PRIME", "EQUAL"])):
            what = _unfinished(states[k])
            if what is None:
                return None
            return (f"{what} (found the end of the line)", _span_of(before),
                    f"'{word}' on line {word.line} starts the next statement")
    return None


def _keyword_updated(seq: list[Token], error: int) -> tuple | None:
    """A keyword at the start of a line with a `'` after it (`output' = ...`): a state
    named with a keyword, which its declaration (`state output[H]`) let through because
    the parser reads a declared name anywhere a name goes. The checker names it so at
    the declaration; here the update is what the parser stops at."""
    if error < 2 or seq[error].type != "PRIME":
        return None
    word, before = seq[error - 1], seq[error - 2]
    if str(word) not in _keywords() or word.line == before.end_line:
        return None
    return (f"'{word}' is a keyword of the language and cannot name a state",
            _span_of(word), "rename the state, here and where it is declared")


def _misread(text: str, exc: lark.exceptions.UnexpectedToken) -> tuple | None:
    """(message, span, hint) of the mistake that the parser read as something else a few
    tokens before its error; None if there is none."""
    taken, states = _replay(text)
    seq, error = [*taken, exc.token], len(taken)
    return (_glued(seq, error) or _operands_in_a_row(seq, error, states)
            or _keyword_updated(seq, error)
            or _keyword_read_as_name(seq, error, states) or _continued_line(seq, error, states))
