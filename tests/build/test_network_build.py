"""`rnndsl build` of a cell with layers run over whole sequences (a network of parts):
the module holds each part as a cell of its own and makes the network's class of theirs
at import. Checked: the module imports from another folder with its spec files gone and
computes what `rnndsl.load` of the spec does (params, outputs and states with lengths,
gradients); a cuda build imports; a file with a plain cell beside the network writes
both, a part never takes a user's name, and `--no-pass` reaches the parts.

The kernels run as plain Python (NUMBA_DISABLE_JIT=1, in a subprocess): compiling the
parts' kernels for a module in a fresh folder takes half a minute, and what is compared,
the module's parts against `rnndsl.load`'s, is the same generated code either way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.build.cache import load_built
from rnndsl.cli.main import main

SPECS = Path(__file__).resolve().parents[2] / "specs"

# the LSTM of specs/lstm.rnn under a file name that no shipped spec has: no `use` of the
# module can find it once the file is gone
TAGGER = """use "tagger_lstm.rnn"
cell BiTagger {
  dims V, H, K
  input x[V]
  layer l1 = bidirectional LSTM(I = V, H = H)
  layer l2 = reverse LSTM(I = 2 * H, H = H)
  param W[K, H], b[K]
  output scores = W @ l2(l1(x)) + b
}
"""

# a plain cell under the name the network's first part would take
PLAIN = """cell BiTagger_part1_l1 {
  dims V, H
  input x[V]
  state h[H]
  param W[H, V], U[H, H]
  h' = tanh(W @ x + U @ h)
  output h'
}
"""


def _build(tmp_path, text: str, *options) -> Path:
    """Build net.rnn (using a copy of specs/lstm.rnn) with the CLI, move the module to a
    folder of its own and delete the spec files: the module's path."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tagger_lstm.rnn").write_text((SPECS / "lstm.rnn").read_text())
    (specs / "net.rnn").write_text(text)
    assert main(["build", str(specs / "net.rnn"), "-o", str(tmp_path / "out"), *options]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(tmp_path / "out" / "net.py", elsewhere / "net.py")
    shutil.rmtree(specs)
    return elsewhere / "net.py"


# Imports the built module, then loads the same spec from the texts the module carries
# (rnndsl.load_text, no file read), and compares the two on one batch with lengths.
PROBE = """
import numpy as np, numba, rnndsl
assert numba.config.DISABLE_JIT
import net
from net import BiTagger
assert BiTagger.__module__ == "net" and net.CELLS == ("BiTagger",)
record = net.BiTagger_NETWORK
Loaded = rnndsl.load_text(record["spec_text"], cell="BiTagger", path=record["spec_path"],
                          files=net.SPEC_FILES)
built, loaded = BiTagger(V=3, H=2, K=2, seed=4), Loaded(V=3, H=2, K=2, seed=4)
assert list(built.params) == list(loaded.params), (list(built.params), list(loaded.params))
for name in built.params:
    assert np.array_equal(built.params[name], loaded.params[name]), name
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 2, 3)).astype(np.float32)
d_scores = rng.standard_normal((4, 2, 2)).astype(np.float32)
runs = [c.forward(x, lengths=[4, 2]) for c in (built, loaded)]
grads = [c.backward(r, {"scores": d_scores}) for c, r in zip((built, loaded), runs)]
pairs = [("scores", runs[0].outputs["scores"], runs[1].outputs["scores"]),
         ("d x", grads[0].inputs["x"], grads[1].inputs["x"])]
pairs += [(n, runs[0].state[n], runs[1].state[n]) for n in runs[1].state]
pairs += [("d " + n, grads[0].params[n], grads[1].params[n]) for n in grads[1].params]
pairs += [("d " + n, grads[0].state[n], grads[1].state[n]) for n in grads[1].state]
assert set(runs[0].state) == set(runs[1].state) and set(grads[0].params) == set(loaded.params)
for name, a, b in pairs:
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)
print(len(pairs))
"""


def test_a_built_network_imports_anywhere_and_computes_what_load_does(tmp_path):
    module = _build(tmp_path, TAGGER)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", RNNDSL_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=module.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # scores, d x; 6 states (h, c of l1 both ways and of reverse l2), their gradients;
    # 38 param gradients (12 an LSTM direction: l1's two, l2's one; W, b)
    assert int(done.stdout) == 2 + 6 + 6 + 12 * 3 + 2


def test_a_plain_cell_and_a_network_in_one_file_are_both_written(tmp_path):
    module = load_built(_build(tmp_path, PLAIN + TAGGER, "--no-pass", "hoist"))
    parts = [cls.__name__ for cls in module.BiTagger.part_classes]
    assert parts == ["BiTagger_part1_l1_2", "BiTagger_part2_l2", "BiTagger_part3"]
    # the import compiled nothing: the kernels compile at their first call, as in any module
    assert not any(getattr(module, f"{kind}_{name}").signatures
                   for name in ("BiTagger_part1_l1", *parts) for kind in ("forward", "backward"))
    assert module.CELLS == ("BiTagger_part1_l1", "BiTagger")
    assert [d.name for d in module.BiTagger_part1_l1.spec.states] == ["h"]   # the user's
    cell = module.BiTagger(V=3, H=2, K=2)
    assert "l1.W_i_reverse" in cell.params and "l2.W_i_reverse" not in cell.params
    text = Path(module.__file__).read_text()
    assert "# part 1 of BiTagger: layer l1, bidirectional LSTM (cell LSTM from" in text
    for name in ("BiTagger_part1_l1", *parts):
        assert "hoist" not in getattr(module, f"{name}_META")["passes"], name


def test_long_network_and_layer_names_make_parts_within_the_name_limit(tmp_path):
    """From an outside review: a network named in 40 characters with a layer of 24 made
    a part `<network>_part1_<layer>` of 69, past the 64 a cell name may have: `rnndsl
    check` and `rnndsl.load` took it, and `rnndsl build` refused it at line 1 of a text
    the user never wrote. Long part names are cut, with a hash."""
    from rnndsl.lang.check import MAX_CELL_NAME
    net, layer = "BidirectionalSequenceTaggerWithContext", "forward_backward_encoder"
    text = TAGGER.replace("BiTagger", net).replace("l1", layer)
    module = load_built(_build(tmp_path, text))
    parts = [cls.__name__ for cls in getattr(module, net).part_classes]
    assert all(len(p) <= MAX_CELL_NAME for p in parts) and len(set(parts)) == 3, parts
    assert parts[0].startswith(f"{net}_part1_forward_ba")
    cell = getattr(module, net)(V=3, H=2, K=2, dtype=np.float64, seed=0)
    ref = rnndsl.load_text(text.replace('use "tagger_lstm.rnn"', 'use "lstm.rnn"'),
                           target="interp")(V=3, H=2, K=2, dtype=np.float64, seed=0)
    x = np.eye(3)[[0, 2, 1, 1]][:, None, :]
    np.testing.assert_allclose(cell.forward(x).outputs["scores"],
                               ref.forward(x).outputs["scores"], rtol=1e-12)


def test_a_cuda_build_of_a_network_imports(tmp_path):
    pytest.importorskip("numba_cuda")
    from rnndsl.cells.cuda import CudaCell
    module = load_built(_build(tmp_path, TAGGER, "--target", "cuda"))
    assert module.TARGET == "cuda" and module.BiTagger.target == "cuda"
    assert all(issubclass(cls, CudaCell) for cls in module.BiTagger.part_classes)
    interp = rnndsl.load_text(TAGGER, cell="BiTagger", target="interp",
                              path=module.BiTagger_NETWORK["spec_path"],
                              files=module.SPEC_FILES)
    built, loaded = module.BiTagger(V=3, H=2, K=2), interp(V=3, H=2, K=2)
    for name, value in loaded.params.items():
        assert np.array_equal(np.asarray(built.params[name]), value), name


def test_a_module_whose_parts_are_not_this_rnndsls_asks_for_a_rebuild(tmp_path):
    """Another rnndsl may split the spec into other parts: the module's record then
    disagrees with this one's split, and importing it says to rebuild (a BuildError)
    instead of joining parts that do not fit."""
    from rnndsl.pipeline import BuildError
    path = _build(tmp_path, TAGGER)
    text = path.read_text()
    record = text[text.index("BiTagger_NETWORK = dict("):]
    assert "('BiTagger_part3', 'BiTagger_part3')," in record
    for stale in (record.replace("('BiTagger_part3', 'BiTagger_part3'),", "", 1),   # one fewer
                  record.replace("('LSTM', 'BiTagger_part1_l1')", "('GRU', 'BiTagger_part1_l1')",
                                 1)):                                             # another cell
        path.write_text(text.replace(record, stale))
        with pytest.raises(BuildError, match="rebuild it with `rnndsl build`"):
            load_built(path)
