"""The structured kernel form: what the emitters build and the later passes read, printed
to Python text once, at the end (printer_py.Printer builds it and prints it).

Input: the emitters' calls (printer_py.Printer: `assign`, `call`, `add`, `indent`,
...). Output: a tree of statements whose operands are data, and its text. The passes on
it: `prune_dead_views`, `fill_consts` (the typed constants' block), `free_syms` (a device
kernel's parameters, emit_cuda.py), and the persistent pass (emit_persistent.py), which
reads a driver's time loop as statements and operands.

- Code is an expression's text together with the symbols it reads (`syms`). It is a
  `str`, so that the emitters' formats (dialect.py's elementwise formats) keep composing
  text; what they compose from Code is wrapped again with the symbols of its parts
  (`code`, or a statement's `reads`), never recovered from the text.
- A Sym is a name the emitter made, with its kind fixed where it made it: "i" an int64
  size, step or index, "f" a scalar of the cell's float type, "aN" an N-D array, "x" a
  host-side value no device kernel takes (a dtype, a flag).
- An Arr is an array operand: a base (a Sym, or another Arr) and index items,
  ("fix", Code) | ("slice", lo, hi) with either side Code or None | ("all",).
- A statement knows what it reads (`reads`) and which names it binds (`binds`) from
  its operands. Blocks (`Block`: a loop, an if/else, a function) hold statements.

Text made from Code by plain string operations (an f-string, `+`) has no symbols: a
statement reads only what its operands say, so the emitters build operands with `code`,
`Arr` and `Reshape`, and tests/codegen/golden_form.py checks that the parameters and the
pruning this gives are the ones the text needs.

Why a str subclass and not a separate expression tree: the emitted expressions are
templates over operand texts (`f"{a[0]} * {k(1.0)}"`), shared by both targets and by
the persistent pass; the passes need each statement's names and operands, not an
expression algebra, so the form records those beside the text instead of rewriting
every format as a tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


class Code(str):
    """An expression's text and the symbols it reads (a tuple of Sym, in order)."""

    syms: tuple

    def __new__(cls, text: str, syms=()):
        self = super().__new__(cls, text)
        self.syms = tuple(syms)
        return self


class Sym(Code):
    """A name with its kind ("i", "f", "aN", "x"): see the module docstring."""

    kind: str

    def __new__(cls, name: str, kind: str):
        self = super().__new__(cls, name)
        self.syms = (self,)
        self.kind = kind
        return self

    @property
    def name(self) -> str:
        return str.__str__(self)


def syms_of(*parts) -> tuple:
    """The symbols of Code parts (plain text and numbers have none), each once."""
    seen: dict[tuple, Sym] = {}
    for part in parts:
        for s in getattr(part, "syms", ()):
            seen.setdefault((s.name, s.kind), s)
    return tuple(seen.values())


def code(template: str, *parts) -> Code:
    """template.format(*parts), reading what the parts read."""
    return Code(template.format(*parts), syms_of(*parts))


def _item_text(item: tuple) -> str:
    if item[0] == "fix":
        return str(item[1])
    if item[0] == "all":
        return ":"
    _, lo, hi = item
    return f"{'' if lo is None else lo}:{'' if hi is None else hi}"


class Arr(Code):
    """An array operand: base[items] (base alone where items is empty)."""

    base: Code
    items: tuple

    def __new__(cls, base: Code, items=()):
        items = tuple(items)
        text = f"{base}[{', '.join(_item_text(it) for it in items)}]" if items else str(base)
        parts = [base] + [x for it in items for x in it[1:] if x is not None]
        self = super().__new__(cls, text, syms_of(*parts))
        self.base, self.items = base, items
        return self

    @property
    def array(self) -> Sym:
        """The named array under any views."""
        base = self.base
        while isinstance(base, Arr):
            base = base.base
        return base


def fix(*indices) -> tuple:
    return tuple(("fix", i) for i in indices)


class Reshape(Code):
    """base.reshape(shape): a view of a whole array."""

    def __new__(cls, base: Sym, shape: Code):
        self = super().__new__(cls, f"{base}.reshape({shape})", syms_of(base, shape))
        self.base = base
        return self


# ---------------------------------------------------------------------- statements
@dataclass
class Stmt:
    """A statement: the names it reads and the ones it binds."""

    def reads(self) -> tuple:
        return ()

    def binds(self) -> tuple:
        return ()

    def is_statement(self) -> bool:     # comments are not (Python sees no block)
        return True

    def lines(self, depth: int) -> list[str]:
        raise NotImplementedError


def _pad(depth: int, text: str) -> str:
    return "    " * depth + text if text else ""


@dataclass
class Raw(Stmt):
    """A line that reads no symbol the passes follow (a docstring's line, a decorator)."""
    text: str

    def lines(self, depth):
        return [_pad(depth, self.text)]

    def is_statement(self):
        return bool(self.text.strip())


@dataclass
class Comment(Stmt):
    text: str

    def lines(self, depth):
        return [_pad(depth, "# " + self.text)]

    def is_statement(self):
        return False


@dataclass
class Assign(Stmt):
    """target op value (op "=" or "+="), an optional comment after it. A target that is
    an Arr stores into that array: it reads its indices and uses the array."""
    target: Code
    value: Code
    op: str = "="
    note: str = ""
    unpack: bool = False          # the target is names, `x, r = ...`, which it binds

    def reads(self):
        if isinstance(self.target, Sym) or self.unpack:
            return syms_of(self.value)
        return syms_of(self.target, self.value)

    def binds(self):
        if self.unpack:
            return self.target.syms
        return (self.target,) if isinstance(self.target, Sym) else ()

    def is_view(self) -> bool:
        """A name bound to part of an array (a subscript or a reshape): prunable."""
        return isinstance(self.target, Sym) and isinstance(self.value, (Arr, Reshape))

    def lines(self, depth):
        return [_pad(depth, f"{self.target} {self.op} {self.value}{self.note}")]


@dataclass
class Call(Stmt):
    """fn(args): a helper of the kernels' modules (copy2, fill1, gemm, np.dot, ...)."""
    fn: str
    args: tuple
    note: str = ""

    def reads(self):
        return syms_of(*self.args)

    def lines(self, depth):
        return [_pad(depth, f"{self.fn}({', '.join(map(str, self.args))}){self.note}")]


@dataclass
class Launch(Stmt):
    """kernel[launch(extents)](args): a device kernel's launch from a driver."""
    kernel: str
    extents: tuple
    args: tuple
    note: str = ""

    def reads(self):
        return syms_of(*self.extents, *self.args)

    def lines(self, depth):
        extents = ", ".join(map(str, self.extents))
        names = ", ".join(map(str, self.args))
        return [_pad(depth, f"{self.kernel}[launch({extents})]({names}){self.note}")]


@dataclass
class Consts(Stmt):
    """Where the typed constants k0, k1, ... are read from `consts`: the emitter's list,
    filled while the kernels are emitted, becomes their assignments at the end
    (`fill_consts`), one a constant, each a view that pruning drops where unread."""
    consts: list
    array: Sym

    def reads(self):
        return (self.array,)

    def assignments(self) -> list:
        out = []
        for i, (kind, value) in enumerate(self.consts):
            what = (f"size {value}" if kind == "dim" else
                    f"this machine's {value} (rnndsl explain)" if kind == "tuning" else
                    repr(value))
            out.append(Assign(Sym(f"k{i}", "f"), Arr(self.array, fix(str(i))),
                              note=f"  # {what}"))
        return out

    def lines(self, depth):
        return [_pad(depth, "pass")]      # a statement of its own until filled


def fill_consts(body: list) -> list:
    """The body with each Consts replaced by its assignments."""
    out = []
    for st in body:
        if isinstance(st, Consts):
            out += st.assignments()
            continue
        if isinstance(st, Block):
            st.body = fill_consts(st.body)
        out.append(st)
    return out


@dataclass
class Block(Stmt):
    """A header line (`for t in range(T):`, `if tiles:`, `else:`, `def f(...):`) and
    the statements under it; `bound` are the names the header binds (loop variables,
    parameters)."""
    header: Code
    body: list = field(default_factory=list)
    bound: tuple = ()
    var: Sym | None = None         # a `for` loop's variable
    iter: Code | None = None       # and what it runs over

    def reads(self):
        return syms_of(self.header)

    def binds(self):
        return self.bound

    def lines(self, depth):
        if self.header is None:          # an indented run of lines (a continuation)
            return [line for st in self.body for line in st.lines(depth + 1)]
        out = [_pad(depth, line) for line in str(self.header).split("\n")]
        for st in self.body:
            out += st.lines(depth + 1)
        return out


def for_loop(var: Sym, over: Code) -> Block:
    """`for var in over:`."""
    return Block(code("for {} in {}:", var, over), bound=(var,), var=var, iter=over)


def walk(body: list):
    """Every statement of a body, blocks' bodies included, outermost first."""
    for st in body:
        yield st
        if isinstance(st, Block):
            yield from walk(st.body)


def free_syms(body: list) -> list[Sym]:
    """The names a body reads and never binds, sorted, each once with its kind: a device
    kernel's parameters. A name seen with two kinds is a bug of the emitter."""
    bound = {s.name for st in walk(body) for s in st.binds()}
    kinds: dict[str, Sym] = {}
    for st in walk(body):
        for s in st.reads():
            prev = kinds.setdefault(s.name, s)
            assert prev.kind == s.kind, f"{s.name} is both {prev.kind} and {s.kind}"
    return [kinds[n] for n in sorted(kinds) if n not in bound]


def prune_dead_views(body: list) -> list:
    """The body without the view assignments (`v15 = mm0[:, :, 0:H]`) that nothing
    reads. Views are emitted per node whether or not a later stage uses them; they cost
    nothing on the CPU but a host-side call each on the cuda target, and they make the
    generated code harder to read. A block keeps at least one statement."""
    while True:
        read = {s.name for st in walk(body) for s in st.reads()}
        dead = [False]

        def keep(block: list) -> list:
            gone = [st for st in block if isinstance(st, Assign) and st.is_view()
                    and st.target.name not in read]
            statements = [st for st in block if st.is_statement()]
            if gone and len(gone) == len(statements):
                gone = gone[:-1]
            if gone:
                dead[0] = True
            out = [st for st in block if not any(st is g for g in gone)]
            for st in out:
                if isinstance(st, Block):
                    st.body = keep(st.body)
            return out

        body = keep(body)
        if not dead[0]:
            return body


def copy_body(body: list) -> list:
    """A copy of a body that the passes may change apart from the original: its blocks
    are new (the passes replace blocks' bodies); statements and Code are not changed in
    place by any pass, and are shared."""
    return [replace(st, body=copy_body(st.body)) if isinstance(st, Block) else st
            for st in body]


_STORES_INTO_FIRST = ("copy1", "copy2")      # helpers that write their first argument


def _array_of(value) -> str | None:
    if isinstance(value, Arr):
        return value.array.name
    if isinstance(value, Reshape):
        return _array_of(value.base)
    return value.name if isinstance(value, Sym) else None


def drop_unread_stores(body: list, arrays: set[str]) -> tuple[list, set[str]]:
    """The body without its stores into those of `arrays` (kernel arguments it writes)
    that nothing in it reads: the forward's tapes and histories, in a forward for
    inference. A store is `X[...] = value` or `copy1/copy2(X..., src)`, into X or a view
    of it (`X_r = X.reshape(...)`); any other mention of X or its views (a GEMM reading
    the tape of h', an `+=`) is a read, and X's stores stay. Blocks left with no
    statement get a `pass`. Returns the body and the arrays whose stores went."""
    group = {name: name for name in arrays}          # array or view -> the array
    for st in walk(body):
        if isinstance(st, Assign) and st.is_view() and _array_of(st.value) in group:
            group[st.target.name] = group[_array_of(st.value)]

    def stored(st) -> str | None:
        """The array a pure store writes, if st is one (and reads none of the group)."""
        if isinstance(st, Assign) and st.op == "=" and isinstance(st.target, Arr):
            into, rest = _array_of(st.target), [st.value, *st.target.syms[1:]]
        elif isinstance(st, Call) and st.fn in _STORES_INTO_FIRST and st.args:
            into, rest = _array_of(st.args[0]), [*st.args[1:], *st.args[0].syms[1:]]
        else:
            return None
        if into not in group or any(s.name in group for s in syms_of(*rest)):
            return None
        return group[into]

    read = set()
    for st in walk(body):
        if stored(st) is not None:
            continue
        if isinstance(st, Assign) and st.is_view() and st.target.name in group:
            continue                                  # a view's definition reads nothing yet
        read |= {group[s.name] for s in st.reads() if s.name in group}
    gone = set(arrays) - read

    def keep(block: list) -> list:
        out = []
        for st in block:
            if stored(st) in gone:
                continue
            if isinstance(st, Assign) and st.is_view() and group.get(st.target.name) in gone:
                continue
            if isinstance(st, Block):
                st.body = keep(st.body)
                if not any(x.is_statement() for x in st.body):
                    st.body.append(Raw("pass"))
            out.append(st)
        return out
    return keep(body), gone


def text(body: list, depth: int = 0) -> str:
    """The body's text, a statement a line (or several: a long header)."""
    return "\n".join(line for st in body for line in st.lines(depth)) + "\n"
