"""Every generated module's text, written to a folder or checked against one: the
byte-for-byte check of a codegen refactor (issue 18's structured kernel form).

    python tests/codegen/golden_form.py write /tmp/sk-golden    # before the change
    python tests/codegen/golden_form.py check /tmp/sk-golden    # after each step

(The "before" of another commit: `git worktree add /tmp/old <commit>`, then the write
from /tmp/old with PYTHONPATH=/tmp/old, this script given by its path here.)

The corpus: every spec under specs/ and specs/torch/, and every spec text the tests
define (string constants in tests/ that read as a spec), on both compiled targets, with
the default passes, none, each of a few passes left out, and the "lengths" variant. A
spec that fails to build records its error instead, so a changed error shows too. Run it
from the repository root (the header names the spec's path as given)."""

from __future__ import annotations

import ast
import hashlib
import sys
import tempfile
from pathlib import Path

from rnndsl.lang.specfile import read_spec
from rnndsl.pipeline import build_source
from rnndsl.schedule.plan import PASSES

ROOT = Path(__file__).resolve().parents[2]
DROPPED = {"cpu": ("microkernel", "fuse_elementwise", "fuse_matmul", "hoist", "defer_grads"),
           "cuda": ("persistent", "hold_weights", "fuse_elementwise", "fuse_matmul",
                    "hoist", "defer_grads")}


def test_spec_texts() -> list[str]:
    """String constants of tests/ that look like a spec (whether or not they check)."""
    found: dict[str, None] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if "golden" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and "cell " in node.value and "{" in node.value):
                found[node.value] = None
    return list(found)


def corpus():
    """(name, spec file) for every spec that reads and checks."""
    specs = sorted((ROOT / "specs").glob("*.rnn")) + sorted((ROOT / "specs/torch").glob("*.rnn"))
    for path in specs:
        rel = path.relative_to(ROOT)
        yield str(rel).replace("/", "_"), read_spec(rel)
    scratch = Path(tempfile.mkdtemp(prefix="golden-form-"))
    for i, text in enumerate(test_spec_texts()):
        path = scratch / f"t{i}.rnn"
        path.write_text(text)
        try:
            spec = read_spec(path)
        except Exception:
            continue
        # named by its text, not its place: a test added elsewhere renames nothing
        yield f"test_{hashlib.sha256(text.encode()).hexdigest()[:8]}", spec


def variants(target: str):
    yield "default", PASSES, None
    yield "none", (), None
    for name in DROPPED[target]:
        yield f"no-{name}", tuple(p for p in PASSES if p != name), None
    yield "lengths", PASSES, "lengths"


def modules():
    for name, spec in corpus():
        for target in ("cpu", "cuda"):
            for label, passes, variant in variants(target):
                try:
                    text = build_source(spec, passes, target, variant)
                except Exception as exc:
                    text = f"ERROR {type(exc).__name__}: {exc}\n"
                # the scratch path of a test's spec differs between runs
                text = text.replace(str(spec.source.path), f"<{name}>")
                yield f"{name}.{target}.{label}.py", text


def main(mode: str, folder: str) -> int:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    n = differ = 0
    for fname, text in modules():
        n += 1
        if mode == "write":
            (out / fname).write_text(text)
            continue
        before = out / fname
        if not before.exists() or before.read_text() != text:
            differ += 1
            (out / (fname + ".after")).write_text(text)
            print("DIFFERS", fname)
    print(f"{mode}: {n} modules, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
