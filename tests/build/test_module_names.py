"""The module name `rnndsl build` gives a spec file: importable as printed, and never one
that would shadow a module rnndsl, its integrations or Python itself imports."""

from __future__ import annotations

import ast
from types import SimpleNamespace

import pytest

from rnndsl.build.modules import module_file_name


def name_for(path: str) -> str:
    return module_file_name(SimpleNamespace(source=SimpleNamespace(path=path)))


@pytest.mark.parametrize("stem", ["threadpoolctl", "tqdm", "yaml", "torch", "math",
                                  "numpy", "pluggy"])
def test_a_stem_that_names_an_imported_module_gets_a_prefix(stem):
    """threadpoolctl.py beside a script shadowed the real one, and the kernels' BLAS ran
    unheld with no error; pluggy is no dependency of rnndsl's but is installed here."""
    assert name_for(f"specs/{stem}.rnn") == f"cell_{stem}.py"


@pytest.mark.parametrize("stem, name", [
    ("x²", "x2.py"),             # `from x² import` is a syntax error
    ("ﬁlter", "filter.py"),      # Python reads `ﬁlter` as `filter` and looked for filter.py
    ("a-b c", "a_b_c.py"),
    ("9lives", "cell_9lives.py"),
    ("été", "été.py"),
    ("lstm", "lstm.py"),
])
def test_the_printed_import_names_the_file(stem, name):
    assert name_for(f"specs/{stem}.rnn") == name
    module = name[:-3]
    # the name Python looks for when `from <module> import ...` is typed is the file's
    assert ast.parse(f"from {module} import C").body[0].module == module
