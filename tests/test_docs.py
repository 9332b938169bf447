"""docs/language.md is checked: every example in it loads, fails or runs as the page says.

Fenced blocks are picked by their info string:

- ```rnn          a valid file: it must load (parse, check, lower) with no warnings. Every
                  cell it defines is loaded. Checked as if saved as example.rnn in the
                  repository root, so `use "specs/..."` resolves.
- ```rnn warning  valid, with warnings; the ```text block right after it shows them (its
                  first line must be the first warning's first line).
- ```rnn error    must raise rnndsl.SpecError; the ```text block right after it, if any,
                  shows the rendered error (its first line must match exactly).
- ```python       runs, from the repository root, in a fresh namespace.
- an rnn block whose first line is `# specs/NAME.rnn` must be that spec's cell, verbatim.

The page must also name every function, every initialiser and the hard_sigmoid slope, and
its relative links must resolve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import rnndsl
from rnndsl.lang.check import INITIALISERS
from rnndsl.core.ops import FUNCTIONS, HARD_SIGMOID_SLOPE
from rnndsl.lang.specfile import read_spec

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "language.md"
SPEC_PATH = "example.rnn"   # where the doc's rnn blocks are "saved", relative to REPO

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    info: str       # the info string: "rnn", "rnn error", "python", ...
    text: str
    line: int       # 1-based line of the opening fence in the doc
    following: "Block | None" = None

    @property
    def tags(self) -> list[str]:
        return self.info.split()

    def __str__(self) -> str:
        return f"{DOC.name}:{self.line} ({self.info})"


def blocks() -> list[Block]:
    doc = DOC.read_text()
    found = [Block(m.group(1).strip(), m.group(2), doc.count("\n", 0, m.start()) + 1)
             for m in FENCE.finditer(doc)]
    return [Block(b.info, b.text, b.line, found[i + 1] if i + 1 < len(found) else None)
            for i, b in enumerate(found)]


def of_kind(first: str, second: str | None = None) -> list[Block]:
    out = []
    for b in blocks():
        tags = b.tags
        if tags and tags[0] == first and (second is None and len(tags) == 1
                                          or second is not None and tags[1:2] == [second]):
            out.append(b)
    return out


def ids(bs: list[Block]) -> list[str]:
    return [f"line{b.line}" for b in bs]


def shown_text(block: Block) -> str | None:
    """The ```text block right after `block`, if there is one."""
    nxt = block.following
    return nxt.text if nxt is not None and nxt.tags[:1] == ["text"] else None


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)


def load_all(text: str) -> list[type]:
    """Load every cell the text defines (a file with several needs cell=)."""
    names = list(read_spec(SPEC_PATH, text=text).cells)
    assert names, "the block defines no cell"
    return [rnndsl.load_text(text, path=SPEC_PATH, cell=name) for name in names]


# ----------------------------------------------------------------------------- rnn blocks

VALID = of_kind("rnn")
WARNING = of_kind("rnn", "warning")
ERROR = of_kind("rnn", "error")


def test_the_doc_has_examples():
    assert len(VALID) >= 15 and ERROR and WARNING and of_kind("python")
    known = {("rnn",), ("rnn", "error"), ("rnn", "warning"), ("python",), ("text",), ()}
    for b in blocks():
        assert tuple(b.tags) in known, f"{b}: unknown block tag"


@pytest.mark.parametrize("block", VALID, ids=ids(VALID))
def test_valid_rnn_block_loads_without_warnings(block):
    for cls in load_all(block.text):
        warnings = [w.render() for w in cls.spec.warnings]
        assert not warnings, f"{block}: unexpected warnings:\n" + "\n".join(warnings)


@pytest.mark.parametrize("block", WARNING, ids=ids(WARNING))
def test_warning_rnn_block_loads_and_warns_as_shown(block):
    warnings = [w for cls in load_all(block.text) for w in cls.spec.warnings]
    assert warnings, f"{block}: expected warnings, got none"
    shown = shown_text(block)
    if shown is not None:
        assert shown.splitlines()[0] == warnings[0].render().splitlines()[0], str(block)
        for w in warnings:   # every warning shown, in order
            assert w.render().splitlines()[0] in shown.splitlines(), str(block)


@pytest.mark.parametrize("block", ERROR, ids=ids(ERROR))
def test_error_rnn_block_is_rejected_as_shown(block):
    with pytest.raises(rnndsl.SpecError) as info:
        load_all(block.text)
    rendered = info.value.render()
    shown = shown_text(block)
    if shown is not None:
        assert shown.splitlines()[0] == rendered.splitlines()[0], (
            f"{block}: the doc shows\n{shown}\nbut the checker says\n{rendered}")


SPEC_COPIES = [b for b in VALID if b.text.startswith("# specs/")]


@pytest.mark.parametrize("block", SPEC_COPIES, ids=ids(SPEC_COPIES))
def test_spec_copies_match_the_specs(block):
    first, _, body = block.text.partition("\n")
    path = REPO / first[2:].strip()
    assert path.is_file(), f"{block}: no such spec {path}"
    spec = path.read_text()
    cell_at = re.search(r"^cell ", spec, re.M)
    assert cell_at, path
    assert body.strip() == spec[cell_at.start():].strip(), (
        f"{block}: the doc's copy of {path.name} differs from the file")


# ----------------------------------------------------------------------------- python blocks

PYTHON = of_kind("python")


@pytest.mark.parametrize("block", PYTHON, ids=ids(PYTHON))
def test_python_block_runs(block):
    # padded so that a traceback's line numbers are the doc's
    code = compile("\n" * block.line + block.text, str(DOC), "exec")
    exec(code, {"__name__": "__doc_example__"})


# ----------------------------------------------------------------------------- completeness

def test_every_function_has_a_row_in_the_table():
    doc = DOC.read_text()
    for name in FUNCTIONS:
        assert re.search(rf"^\| `{name}\(", doc, re.M), f"function {name} is not documented"


def test_every_initialiser_is_documented():
    doc = DOC.read_text()
    for name in INITIALISERS:
        assert re.search(rf"^\| `{name}[`(]", doc, re.M), f"initialiser {name} is missing"


def test_hard_sigmoid_slope_is_the_one_in_the_doc():
    doc = DOC.read_text()
    row = re.search(r"^\| `hard_sigmoid\(a\)` \| `clip\(([\d.]+) \* a \+ 0\.5, 0, 1\)`", doc,
                    re.M)
    assert row and float(row.group(1)) == HARD_SIGMOID_SLOPE


def test_relative_links_resolve():
    doc = DOC.read_text()
    for target in re.findall(r"\]\((?!https?:|#)([^)#]+)", doc):
        assert (DOC.parent / target).exists(), f"broken link {target}"


def test_anchors_resolve():
    doc = DOC.read_text()
    outside = FENCE.sub("", doc)
    headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", outside, re.M)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", doc):
        assert anchor in headings, f"broken anchor #{anchor}"


# ----------------------------------------------------------------------------- README

README = REPO / "README.md"
README_PYTHON = [(m.group(2), README.read_text().count("\n", 0, m.start()) + 1)
                 for m in FENCE.finditer(README.read_text()) if m.group(1).strip() == "python"]


@pytest.mark.parametrize("text,line", README_PYTHON, ids=[f"README.md:{n}" for _, n in
                                                          README_PYTHON])
def test_readme_python_block_runs(text, line, tmp_path, monkeypatch):
    """Run where a user of the repository would, a folder with specs/ in it, but not
    the repository itself: what a block writes (mgu.onnx) lands in a temporary folder."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "specs").symlink_to(REPO / "specs", target_is_directory=True)
    monkeypatch.chdir(work)
    _run_block(README, text, line, tmp_path, monkeypatch)


def _run_block(path, text, line, tmp_path, monkeypatch):
    """Run a page's python block; tracebacks name the page. The block shares the test
    run's kernel cache: the kernels it compiles are the ones other tests compile too
    (a cache of its own cost the suite about 50 s of compiling)."""
    code = compile("\n" * line + text, str(path), "exec")
    exec(code, {"__name__": "__doc_example__"})


def test_readme_has_its_two_setup_commands():
    text = README.read_text()
    assert "bash .ci/main" in text and "bash .ci/test" in text
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == "bash .ci/test", ".ci/run must end by running the README's test command"
    assert "bash .ci/setup" in ci[:-1], ".ci/run must install (from pyproject.toml) first"


# ----------------------------------------------------------------------------- docs/cpu.md

CPU_DOC = REPO / "docs" / "cpu.md"
CPU_DOC_PYTHON = [(m.group(2), CPU_DOC.read_text().count("\n", 0, m.start()) + 1)
                  for m in FENCE.finditer(CPU_DOC.read_text())
                  if m.group(1).strip() == "python" and not m.group(2).startswith("    ")]


def test_cpu_doc_has_a_runnable_example():
    assert CPU_DOC_PYTHON, "docs/cpu.md lost its example"


@pytest.mark.parametrize("text,line", CPU_DOC_PYTHON, ids=[f"cpu.md:{n}" for _, n in
                                                           CPU_DOC_PYTHON])
def test_cpu_doc_python_block_runs(text, line, at_repo_root, tmp_path, monkeypatch):
    _run_block(CPU_DOC, text, line, tmp_path, monkeypatch)


def test_cpu_doc_shows_the_current_plan_and_passes():
    """The explain output and the generated loop quoted in docs/cpu.md are what rnndsl
    prints and writes today; every pass has a row in its table."""
    from rnndsl.build.modules import build_source
    from rnndsl.schedule.explain import explain_lines
    from rnndsl.pipeline import plan_cell
    from rnndsl.schedule.plan import PASSES, TARGET_PASSES
    from rnndsl.lang.specfile import read_spec
    doc = CPU_DOC.read_text()
    spec = read_spec(REPO / "specs" / "lstm.rnn")
    plan = plan_cell(spec.cells["LSTM"], PASSES)
    for line in explain_lines(plan)[:14]:
        assert line in doc, line
    source = build_source(spec)
    quoted = doc.split("In the generated module, the step reads")[1].split("```python\n")[1]
    for line in quoted.split("        ...")[0].splitlines():
        assert line in source, line
    cuda_doc = (REPO / "docs" / "cuda.md").read_text()
    for name in PASSES:     # each pass named in its target's document
        assert f"`{name}`" in (cuda_doc if TARGET_PASSES.get(name) == "cuda" else doc), name


def _console_commands() -> list[tuple[str, int, str, list[str]]]:
    """(doc, line, command, shown output lines) of every `$ rnndsl check|explain|build`
    in README.md and docs/*.md whose files are in the repository."""
    import glob
    import shlex
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            if m.group(1).strip() != "console":
                continue
            first = text.count("\n", 0, m.start()) + 2
            lines = m.group(2).splitlines()
            for i, line in enumerate(lines):
                if not line.startswith("$ rnndsl "):
                    continue
                command = line[2:].split("  #")[0].strip()
                words = shlex.split(command)
                if words[1] not in ("check", "explain", "build"):
                    continue
                files = [w for w in words[2:] if w.endswith(".rnn")]
                if not all(glob.glob(str(REPO / f)) for f in files):
                    continue        # a file the reader makes (broken.rnn)
                shown = []
                for out in lines[i + 1:]:
                    if out.startswith("$ "):
                        break
                    shown.append(out)
                found.append((doc.name, first + i, command, shown))
    return found


@pytest.mark.parametrize("doc,line,command,shown", _console_commands(),
                         ids=[f"{d}:{n}" for d, n, _, _ in _console_commands()])
def test_console_output_in_the_docs_is_what_rnndsl_prints(doc, line, command, shown, tmp_path):
    """What a page shows after `$ rnndsl ...` is that command's output today: the lines
    before a `...` begin it, and each run of lines after one appears later, in order."""
    import glob
    import shlex
    import shutil
    import subprocess
    import sys
    shutil.copytree(REPO / "specs", tmp_path / "specs")
    words = shlex.split(command)
    args = [a for w in words[1:] for a in (sorted(glob.glob(w, root_dir=tmp_path))
                                           if "*" in w else [w])]
    done = subprocess.run([sys.executable, "-m", "rnndsl", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    actual = done.stdout.splitlines()
    runs = [[]]
    for out in shown:
        if out.strip() == "...":
            runs.append([])
        else:
            runs[-1].append(out)
    assert actual[:len(runs[0])] == runs[0], f"{doc}:{line}: {command}\n" + "\n".join(actual)
    at = len(runs[0])
    for run in runs[1:]:
        if not run:
            continue
        starts = [k for k in range(at, len(actual)) if actual[k:k + len(run)] == run]
        assert starts, f"{doc}:{line}: not in the output of {command}: {run}"
        at = starts[0] + len(run)
