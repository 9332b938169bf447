"""The command line end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "specs").glob("*.rnn"))


def rnndsl(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "rnndsl", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_check_every_spec_succeeds():
    done = rnndsl("check", *SPECS)
    assert done.returncode == 0, done.stderr
    for spec in SPECS:
        assert f"{spec}: ok: cell " in done.stdout
    assert "Traceback" not in done.stderr


def test_check_broken_spec_shows_place_caret_and_exits_2(tmp_path):
    bad = tmp_path / "bad.rnn"
    bad.write_text("cell C {\n  dims H\n  state h[H]\n  h' = tanh(h) + q\n}\n")
    done = rnndsl("check", bad)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    head = next(i for i, line in enumerate(lines) if "unknown name 'q'" in line)
    assert lines[head].startswith(f"{bad}:4:18: error: unknown name 'q'")
    assert lines[head + 1].endswith("h' = tanh(h) + q")
    caret_line = lines[head + 2]
    source_line = lines[head + 1]
    assert caret_line.index("^") == source_line.index("q")
    assert "Traceback" not in done.stderr


def test_check_syntax_error_exits_2_with_label(tmp_path):
    bad = tmp_path / "syntax.rnn"
    bad.write_text("cell C {\n  dims H\n  h' = tanh(h\n}\n")
    done = rnndsl("check", bad)
    assert done.returncode == 2
    assert f"{bad}:4:1: error: unclosed parenthesis" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_mixed_good_and_bad_reports_both(tmp_path):
    bad = tmp_path / "bad.rnn"
    bad.write_text("cell C { dims H }")
    done = rnndsl("check", REPO / "specs" / "lstm.rnn", bad)
    assert done.returncode == 2
    assert "lstm.rnn: ok" in done.stdout
    assert "has no states and no outputs" in done.stderr


def test_missing_file_is_a_clear_error():
    done = rnndsl("check", "no/such/file.rnn")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no/such/file.rnn: no such file"


def test_warnings_go_to_stderr_and_do_not_fail(tmp_path):
    spec = tmp_path / "w.rnn"
    spec.write_text("cell C {\n  dims H, K\n  input x[H]\n  state h[H]\n  param unused[H]\n"
                    "  h' = tanh(h + x)\n  output h'\n}\n")
    done = rnndsl("check", spec)
    assert done.returncode == 0
    assert "warning: param 'unused' is never used" in done.stderr
    assert "warning: dim 'K' is never used" in done.stderr
    quiet = rnndsl("check", "-q", spec)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""


@pytest.mark.parametrize("stage,expect", [
    ("ast", "cell LSTM {"),
    ("check", "next   c' : B x [H]"),
    ("ir", "= matvec(%"),
    ("unroll", "unrolled over T=2"),
    ("grad", "# d_param W_i"),
])
def test_dump_after_each_stage(stage, expect):
    done = rnndsl("check", REPO / "specs" / "lstm.rnn", "--dump-after", stage)
    assert done.returncode == 0, done.stderr
    assert expect in done.stdout.replace("   # d_param", "# d_param") or expect in done.stdout


def test_graph_writes_dot(tmp_path):
    out = tmp_path / "gru.dot"
    done = rnndsl("graph", REPO / "specs" / "gru.rnn", "--grad", "-o", out)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith('digraph "GRU: one step, and its adjoint"')
    assert "d_W_r" in text and "h'" in text
    # a label's lines are DOT's line breaks (\n), not an escaped backslash and an n (\\n,
    # which Graphviz drew as the two characters)
    assert "\\\\n" not in text and "\\n=> h'" in text
    unrolled = rnndsl("graph", REPO / "specs" / "elman.rnn", "--unroll", "3", "--grad")
    assert unrolled.returncode == 0
    assert "output y[t=2]" in unrolled.stdout and "d_W_hh" in unrolled.stdout


def test_an_unrolled_graph_says_what_final_outputs_and_once_inputs_are(tmp_path):
    """`--unroll 3` drew a `final` output as an output at every step, and an `input
    once` as a fresh input at every step, neither what the cell computes."""
    spec = tmp_path / "modes.rnn"
    spec.write_text("cell Classifier {\n  dims I, H, K\n  input x[I]\n  state h[H]\n"
                    "  param W[H, I], U[H, H], V[K, H]\n  h' = tanh(W @ x + U @ h)\n"
                    "  final logits = V @ h'\n}\n"
                    "cell Generator {\n  dims Z, H\n  input once z[Z]\n  state h[H]\n"
                    "  param W[H, Z], U[H, H], v[1, H]\n  h' = tanh(W @ z + U @ h)\n"
                    "  output y = v @ h'\n}\n")
    done = rnndsl("graph", spec, "--cell", "Classifier", "--unroll", "3")
    assert done.returncode == 0, done.stderr
    assert "output logits" not in done.stdout
    assert all(f"=> final logits if the sequence ends at t={t}" in done.stdout
               for t in range(3))
    done = rnndsl("graph", spec, "--cell", "Generator", "--unroll", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('digraph "Generator unrolled over T=3 (input once z: '
                                  'given at t=0, zeros after)"')


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graph_writes_svg(tmp_path):
    out = tmp_path / "lstm.svg"
    done = rnndsl("graph", REPO / "specs" / "lstm.rnn", "-o", out)
    assert done.returncode == 0, done.stderr
    svg = out.read_text()
    assert "<svg" in svg
    # each line of a node's label is a text element of its own: none holds a "\\n"
    assert "\\n" not in svg and ">=&gt; output h<" in svg


def test_graph_svg_without_graphviz_is_a_clear_error(tmp_path, monkeypatch):
    out = tmp_path / "x.svg"
    done = subprocess.run([sys.executable, "-m", "rnndsl", "graph",
                           str(REPO / "specs" / "lstm.rnn"), "-o", str(out)],
                          cwd=REPO, capture_output=True, text=True,
                          env={"PATH": str(tmp_path), "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert "needs Graphviz's `dot`" in done.stderr
    assert not out.exists()


def test_graph_unknown_suffix(tmp_path):
    done = rnndsl("graph", REPO / "specs" / "lstm.rnn", "-o", tmp_path / "x.png")
    assert done.returncode == 2 and "use a .dot, .gv or .svg name" in done.stderr


def test_gradcheck_passes_on_lstm():
    done = rnndsl("gradcheck", REPO / "specs" / "lstm.rnn", "-T", "2", "--dims", "I=3,H=4")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed: 15 gradients" in done.stdout
    assert "cell LSTM(I=3, H=4), T=2" in done.stdout


def test_gradcheck_fails_where_a_gradient_is_not_finite(tmp_path):
    """log of the random (partly negative) inputs: NaN on both sides, which once
    compared as "not above the tolerance" and passed with exit 0."""
    spec = tmp_path / "nan.rnn"
    spec.write_text("cell L {\n  dims H\n  input x[H]\n  state h[H]\n"
                    "  h' = tanh(x + h) + log(x)\n  output h'\n}\n")
    done = rnndsl("gradcheck", spec, "-T", "3")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: 2 of 2 gradients" in done.stdout and "passed" not in done.stdout


def test_gradcheck_bad_dims_argument():
    done = rnndsl("gradcheck", REPO / "specs" / "lstm.rnn", "--dims", "H:4")
    assert done.returncode == 2
    assert "--dims: takes NAME=SIZE pairs" in done.stderr


def test_gradcheck_unknown_dim_is_a_bind_error():
    done = rnndsl("gradcheck", REPO / "specs" / "lstm.rnn", "--dims", "Q=4")
    assert done.returncode == 2
    assert "LSTM has no dim Q" in done.stderr


def test_help_teaches_and_no_command_exits_2():
    done = rnndsl("--help")
    assert done.returncode == 0
    for word in ("check", "graph", "gradcheck", "examples:", "exit status"):
        assert word in done.stdout
    assert rnndsl().returncode == 2


def test_unknown_command_exits_2():
    done = rnndsl("frobnicate")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


def test_build_writes_an_importable_module_and_keeps_it_on_failure(tmp_path):
    out = tmp_path / "build"
    done = rnndsl("build", REPO / "specs" / "elman_relu.rnn", "-o", out)
    assert done.returncode == 0, done.stderr
    assert "import with: from elman_relu import ElmanReLU" in done.stdout
    module = out / "elman_relu.py"
    first = module.read_text()
    probe = ("import numpy as np\nfrom elman_relu import ElmanReLU\n"
             "c = ElmanReLU(I=2, H=3, dtype=np.float64, seed=0)\n"
             "r = c.forward(np.ones((4, 2, 2)))\n"
             "g = c.backward(r, d_outputs={'h': np.ones((4, 2, 3))})\n"
             "print(type(c).__mro__[1].__name__, r.outputs['h'].shape, g.params['W_hh'].shape)\n")
    run = subprocess.run([sys.executable, "-c", probe], cwd=out, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["CompiledCell", "(4,", "2,", "3)", "(3,", "3)"]
    broken = tmp_path / "elman_relu.rnn"      # same module name, now broken
    broken.write_text((REPO / "specs" / "elman_relu.rnn").read_text().replace("relu(", "relu(q + "))
    failed = rnndsl("build", broken, "-o", out)
    assert failed.returncode == 2 and "unknown name 'q'" in failed.stderr
    assert module.read_text() == first, "a failed build touched the previous module"
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".py") == ["elman_relu.py"]


def test_build_keeps_files_it_did_not_write_and_names_modules_safely(tmp_path):
    """A user's own gru.py in the output folder is kept unless --force (a module an
    earlier build wrote is replaced: the first test above); a folder of the module's
    name stops the build before anything is written. A spec named like a keyword or a
    module Python imports gets a prefix, so that the import line works."""
    out = tmp_path / "build"
    out.mkdir()
    mine = out / "gru.py"
    mine.write_text("# my own code\n")
    done = rnndsl("build", REPO / "specs" / "elman.rnn", REPO / "specs" / "gru.rnn",
                  "-o", out)
    assert done.returncode == 2 and "gru.py exists and was not written by rnndsl build" \
        in done.stderr
    assert mine.read_text() == "# my own code\n" and not (out / "elman.py").exists()
    done = rnndsl("build", REPO / "specs" / "gru.rnn", "-o", out, "--force")
    assert done.returncode == 0, done.stderr
    assert mine.read_text().startswith('"""rnndsl kernels for GRU')
    (out / "elman.py").mkdir()
    done = rnndsl("build", REPO / "specs" / "gru.rnn", REPO / "specs" / "elman.rnn",
                  "-o", out)
    assert done.returncode == 2 and "elman.py is a folder" in done.stderr
    for stem in ("import", "math", "__init__"):     # __init__.py: the folder a package
        spec = tmp_path / f"{stem}.rnn"
        spec.write_text((REPO / "specs" / "elman_relu.rnn").read_text())
        done = rnndsl("build", spec, "-o", tmp_path / "named")
        assert done.returncode == 0, done.stderr
        assert f"import with: from cell_{stem} import ElmanReLU" in done.stdout
    assert not (tmp_path / "named" / "__init__.py").exists()
    run = subprocess.run([sys.executable, "-c", "from cell_import import ElmanReLU; "
                          "from cell_math import ElmanReLU; import math; print(math.pi)"],
                         cwd=tmp_path / "named", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("3.14"), run.stderr


def test_build_rejects_an_unknown_pass_and_a_file_as_output(tmp_path):
    done = rnndsl("build", REPO / "specs" / "lstm.rnn", "-o", tmp_path, "--no-pass", "unroll")
    assert done.returncode == 2 and "unknown pass 'unroll'" in done.stderr
    target = tmp_path / "file"
    target.write_text("x")
    done = rnndsl("build", REPO / "specs" / "lstm.rnn", "-o", target)
    assert done.returncode == 2 and "exists and is not a folder" in done.stderr


@pytest.mark.parametrize("name", ["lstm", "elman", "gru"])
def test_explain_counts_what_the_forward_kernel_tapes(name):
    """`save 9 values for BPTT` under LSTM's forward loop counted the backward loop's
    saved cotangents too: the count is now the forward kernel's own tapes (`tape_*`
    arguments it writes) and the states whose previous values it keeps (`hist_*`)."""
    import re
    from rnndsl.lang.specfile import read_spec
    from rnndsl.pipeline import build_source
    source = build_source(read_spec(REPO / "specs" / f"{name}.rnn"))
    header = source.split("def forward_", 1)[1].split('"""')[0]
    tapes = re.findall(r"\n    tape\w+, ", header)
    histories = sorted(re.findall(r"\n    hist_(\w+), ", header))
    done = rnndsl("explain", REPO / "specs" / f"{name}.rnn")
    forward = done.stdout.split("backward:")[0]
    saved = re.search(r"\n    save (\d+) values? and the previous (.*) for BPTT\n", forward)
    kept = re.search(r"\n  kept for BPTT: (\d+) of the T\*B-row values above\n", forward)
    assert saved and saved.group(2) == ", ".join(histories), forward
    assert int(saved.group(1)) + (int(kept.group(1)) if kept else 0) == len(tapes)


def test_explain_shows_the_plan_and_follows_the_passes():
    on = rnndsl("explain", REPO / "specs" / "lstm.rnn")
    assert on.returncode == 0, on.stderr
    assert "all T*B rows: GEMM [W_i, W_f, W_g, W_o] @ x" in on.stdout
    assert "GEMM g @ [U_i, U_f, U_g, U_o] (stacked cotangents)" in on.stdout
    off = rnndsl("explain", REPO / "specs" / "lstm.rnn", "--no-pass", "hoist",
                 "--no-pass", "fuse_matmul")
    assert off.returncode == 0
    assert "all T*B rows: GEMM" not in off.stdout.split("backward:")[0]
    assert "GEMM [U_i] @ h" in off.stdout


def test_a_spec_path_cannot_put_code_into_the_module(tmp_path):
    """The spec's path is printed into the module's docstring: quotes and backslashes in
    it must not end the string. The module imports, runs nothing of the path's, and gets
    the mode open() would give it."""
    import os
    import stat
    folder = tmp_path / "dir\\"
    folder.mkdir()
    spec = folder / 'a"""; open("injected", "w").close(); """b\\.rnn'
    spec.write_text((REPO / "specs" / "elman.rnn").read_text())
    out = tmp_path / "build"
    done = rnndsl("build", spec, "-o", out)
    assert done.returncode == 0, done.stderr
    (module,) = out.glob("*.py")
    text = module.read_text()
    assert '"""' not in text.split("\n", 1)[0][3:], "the path's quotes reached the docstring"
    run = subprocess.run([sys.executable, "-c", f"import {module.stem} as m; print(m.CELLS)"],
                         cwd=out, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "('Elman',)"
    assert not (out / "injected").exists(), "text from the spec's path ran at import"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(module.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("text,name,line", [
    ("cell tanh {\n  dims I\n  input x[I]\n  state h[I]\n  h' = x\n}\n", "tanh", 1),
    (("cell A {\n  dims I\n  input x[I]\n  state h[I]\n  h' = x\n}\n"
      "cell forward_A {\n  dims I\n  input x[I]\n  state h[I]\n  h' = x\n}\n"),
     "forward_A", 7),
], ids=["a helper", "another cell's kernel"])
def test_a_cell_named_like_the_modules_own_code_is_an_error(tmp_path, text, name, line):
    spec = tmp_path / "names.rnn"
    spec.write_text(text)
    out = tmp_path / "build"
    done = rnndsl("build", spec, "-o", out)
    assert done.returncode == 2, done.stderr
    assert f"names.rnn:{line}:6: error: '{name}' cannot name a cell" in done.stderr
    assert not out.exists() or not list(out.glob("*.py"))


def test_an_error_in_one_spec_of_a_build_writes_none(tmp_path):
    broken = tmp_path / "broken.rnn"
    broken.write_text((REPO / "specs" / "elman.rnn").read_text().replace("tanh(", "tanh(q + "))
    out = tmp_path / "build"
    done = rnndsl("build", REPO / "specs" / "elman.rnn", broken, "-o", out)
    assert done.returncode == 2 and "unknown name 'q'" in done.stderr
    assert not out.exists() or not list(out.iterdir())
