"""docs/interop.md's examples run as the page shows them, each in a fresh namespace:
every ```python block that uses rnndsl.torch (from the repository root), rnndsl.jax or
safetensors (from a scratch folder)."""

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


def other_blocks() -> list[tuple[int, str]]:
    """The JAX and safetensors examples (each skipped where its package is missing)."""
    text = DOC.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)
            if "rnndsl.jax" in m.group(1) or "safetensors" in m.group(1)]


def test_the_page_has_jax_and_safetensors_examples():
    blocks = [b for _, b in other_blocks()]
    assert any("rnndsl.jax" in b for b in blocks) and any("safetensors" in b for b in blocks)


@pytest.mark.parametrize("line, block", other_blocks(), ids=[f"line {n}" for n, _ in
                                                             other_blocks()])
def test_the_jax_and_safetensors_examples_run(line, block, monkeypatch, tmp_path):
    """In a scratch folder with specs/ in it (what they write stays out of the
    repository); JAX's float64 switch, which an example turns on, is put back."""
    needs = "jax" if "rnndsl.jax" in block else "safetensors"
    package = pytest.importorskip(needs)
    (tmp_path / "specs").symlink_to(REPO / "specs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    x64 = package.config.jax_enable_x64 if needs == "jax" else None
    try:
        exec(compile(block, f"{DOC}:{line}", "exec"), {})
    finally:
        if needs == "jax":
            package.config.update("jax_enable_x64", x64)
