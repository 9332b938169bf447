"""The language: .rnn text -> a checked cell. The grammar (top-level grammars/rnn.lark),
parse.py (Lark -> the AST of ast.py, with placed syntax errors), check.py and
check_layers.py (names, shapes, layers -> checked.py's CheckedCell), compose.py (layers
inlined, lengths), specfile.py (files and `use`), printer.py (the AST as canonical text),
canonical.py (a model's form for checkpoints), shipped.py and catalog.py (the specs
that ship with rnndsl).
"""
