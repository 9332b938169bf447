"""The house's rules, read from the source: imports run one way between the stages.

Each folder of the package is a layer; a module may import its own layer and the layers
below it, never one above, and no two modules or folders may import each other (even
through other files). `kernels/` (what generated modules call at run time) may be
imported from anywhere and imports only `core/`. Function-level imports count: a lazy
import is still a dependency. The package's face (`rnndsl/__init__.py`, `__main__.py`)
and the compatibility shims that keep 0.1.0's generated modules working sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rnndsl"

# highest first: a layer may import the ones after it
ORDER = ("cli", "interop", "distributed", "train", "cells", "build", "pipeline", "codegen",
         "schedule", "ir", "lang", "core")
# interop and distributed sit above train, in that order: the safetensors files reuse
# train.checkpoint's spec record and model check, and data-parallel training runs the
# trainer on each worker
SIDE: dict[str, str] = {}
ANYWHERE = "kernels"
TOP = "face"       # __init__, __main__ and the 0.1.0 shims: may import anything


def _height(layer: str) -> int:
    return len(ORDER) - ORDER.index(SIDE.get(layer, layer))


def layer_of(module: str) -> str:
    """'rnndsl.lang.parse' -> 'lang'; 'rnndsl.pipeline' -> 'pipeline'."""
    parts = module.split(".")
    assert parts[0] == "rnndsl", module
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return TOP
    name = parts[1]
    if name in ORDER or name == ANYWHERE:
        return name
    return TOP if (PACKAGE / f"{name}.py").is_file() else name


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `module` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()

    def add(name: str) -> None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "rnndsl":
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "rnndsl":
                target = node.module
            else:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                add(full if full in known else target)
    return out


def import_graph(root: Path = PACKAGE) -> nx.DiGraph:
    found = modules(root)
    graph = nx.DiGraph()
    graph.add_nodes_from(found)
    for module, path in found.items():
        for target in imports_of(module, path, set(found)):
            graph.add_edge(module, target)
    return graph


def violations(graph: nx.DiGraph) -> list[str]:
    """Every import against the order, and every cycle between files or folders."""
    bad = []
    for a, b in graph.edges:
        la, lb = layer_of(a), layer_of(b)
        if la == TOP or la == lb:
            continue
        if lb == TOP:
            bad.append(f"{a} imports {b}: the package's face (or a shim) from below")
        elif la == ANYWHERE:
            if lb != "core":
                bad.append(f"{a} imports {b}: kernels/ may import only core/")
        elif lb == ANYWHERE:
            continue
        elif la not in ORDER and la not in SIDE or lb not in ORDER and lb not in SIDE:
            bad.append(f"{a} imports {b}: {la if la not in ORDER else lb} is no known layer")
        elif _height(lb) >= _height(la):
            bad.append(f"{a} imports {b}: {la} may not import {lb} (same height or above)")
    for cycle in nx.simple_cycles(graph):
        bad.append("cycle between files: " + " -> ".join(cycle + cycle[:1]))
    folders = nx.DiGraph()
    for a, b in graph.edges:
        la, lb = layer_of(a), layer_of(b)
        if la != lb and TOP not in (la, lb):
            folders.add_edge(la, lb)
    for cycle in nx.simple_cycles(folders):
        bad.append("cycle between folders: " + " -> ".join(cycle + cycle[:1]))
    return bad


def test_the_package_keeps_its_layers():
    bad = violations(import_graph())
    assert not bad, "\n".join(bad)


def test_every_module_is_in_a_known_layer():
    unknown = sorted({layer_of(m) for m in modules()} - set(ORDER) - {ANYWHERE, TOP})
    assert not unknown, f"folders of no layer: {unknown}; add them to ORDER"


def test_the_check_fails_when_core_imports_the_cli(tmp_path):
    """The test can fail: a copy of the package whose core imports the CLI is caught,
    as is a cycle between two files and between two folders."""
    import shutil
    copy = tmp_path / "rnndsl"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    errors = copy / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _late():\n    from ..cli import main\n")
    bad = violations(import_graph(copy))
    assert any("rnndsl.core.errors imports rnndsl.cli" in b for b in bad), bad
    assert any(b.startswith("cycle between folders") for b in bad), bad


@pytest.mark.parametrize("module", ["rnndsl.kernels"])
def test_kernels_import_only_core(module):
    graph = import_graph()
    below = {layer_of(b) for a, b in graph.edges if layer_of(a) == ANYWHERE}
    assert below <= {"core", ANYWHERE}, below
