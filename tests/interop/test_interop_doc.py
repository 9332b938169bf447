"""docs/interop.md's PyTorch examples run as the page shows them: every ```python block
that uses rnndsl.torch, from the repository root, each in a fresh namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "interop.md"
FENCE = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.S | re.M)


def torch_blocks() -> list[tuple[int, str]]:
    text = DOC.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)
            if "rnndsl.torch" in m.group(1)]


def test_the_page_has_torch_examples():
    assert len(torch_blocks()) >= 4


@pytest.mark.parametrize("line, block", torch_blocks(), ids=[f"line {n}" for n, _ in
                                                             torch_blocks()])
def test_the_torch_examples_in_docs_interop_md_run(line, block, monkeypatch):
    monkeypatch.chdir(REPO)
    exec(compile(block, f"{DOC}:{line}", "exec"), {})
