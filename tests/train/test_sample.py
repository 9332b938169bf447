"""Sampling (rnndsl/sample.py) against independent mirrors.

Every expected value here comes from code that does not share the sampler's path: greedy
rollouts that re-run `cell.forward` from scratch over the whole growing sequence (no
carried state), brute-force enumeration of every sequence for beam search, distributions
written as plain loops over sorted tokens, and scipy's softmax / logsumexp / chi-square.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp, softmax
from scipy.stats import chisquare

import rnndsl
from rnndsl.train.sample import (Greedy, Primed, Sampler, SampleError, Sampling, greedy,
                           temperature, top_k, top_p)

TINY = rnndsl.load_text("""
cell Tiny {
  dims V, H
  input x[V]
  state h[H]
  param W_xh[H, V], W_hh[H, H], b_h[H], W_y[V, H], b_y[V]
  h' = tanh(W_hh @ h + W_xh @ x + b_h)
  output logits = W_y @ h' + b_y
}
""", target="interp")

HIDDEN = rnndsl.load_text("""
cell Hidden {
  dims E, H
  input x[E]
  state h[H]
  param W_xh[H, E], W_hh[H, H], b_h[H]
  h' = tanh(W_hh @ h + W_xh @ x + b_h)
  output h'
}
""", target="interp")

DROP = rnndsl.load_text("""
cell Drop {
  dims V, H
  input x[V], drop[H]
  state h[H]
  param W_xh[H, V], W_hh[H, H], b_h[H], W_y[V, H], b_y[V]
  h' = tanh(W_hh @ (h * drop) + W_xh @ x + b_h)
  output logits = W_y @ h' + b_y
}
""", target="interp")


def randomise(cell, seed, scale=1.2):
    """Random params with enough spread that the token distributions are far from flat."""
    rng = np.random.default_rng(seed)
    for value in cell.params.values():
        value[...] = rng.normal(0.0, scale, size=value.shape)
    return cell


def tiny(V=5, H=8, seed=0, dtype=np.float64, scale=1.2):
    return randomise(TINY(V=V, H=H, dtype=dtype, seed=0), seed, scale)


# ---------------------------------------------------------------------------- mirrors
def onehot(seqs, V, dtype=np.float64):
    """(B, T) ids -> (T, B, V), written with a loop rather than an identity matrix."""
    seqs = np.asarray(seqs)
    x = np.zeros((seqs.shape[1], seqs.shape[0], V), dtype=dtype)
    for b, row in enumerate(seqs):
        for t, tok in enumerate(row):
            x[t, b, tok] = 1.0
    return x


def rerun_logits(cell, seqs, V, extra=None):
    """Logits after every position of every sequence: one fresh forward from zero state."""
    x = onehot(seqs, V, cell.dtype)
    run = cell.forward(x if extra is None else {"x": x, **extra(len(x))})
    return run.outputs["logits"]                      # (T, B, V)


def greedy_mirror(cell, prefix_rows, length, V, extra=None):
    """Argmax rollout that re-runs the whole sequence at every step."""
    seqs = np.array(prefix_rows)
    for _ in range(length):
        nxt = rerun_logits(cell, seqs, V, extra)[-1].argmax(axis=1)
        seqs = np.concatenate([seqs, nxt[:, None]], axis=1)
    return seqs[:, len(prefix_rows[0]):]


def kept_distribution(logits, t=1.0, k=None, p=None):
    """Temperature, top-k, then nucleus, as loops over tokens sorted most likely first."""
    probs = softmax(np.asarray(logits, dtype=np.float64) / t)
    order = sorted(range(len(probs)), key=lambda i: (-logits[i], i))
    keep = order[:k] if k is not None else order
    probs = np.array([probs[i] if i in keep else 0.0 for i in range(len(probs))])
    probs /= probs.sum()
    if p is not None:
        nucleus, total = [], 0.0
        for i in sorted(range(len(probs)), key=lambda i: (-probs[i], i)):
            nucleus.append(i)
            total += probs[i]
            if total >= p:
                break
        probs = np.array([probs[i] if i in nucleus else 0.0 for i in range(len(probs))])
        probs /= probs.sum()
    return probs


def counting(cell):
    """Record the T of every forward call the cell gets."""
    calls, forward = [], cell.forward

    def wrapped(x, state=None, **options):
        calls.append(len(x["x"] if isinstance(x, dict) else x))
        cell.forward_options = options
        return forward(x, state=state, **options)
    cell.forward = wrapped
    return calls


# ---------------------------------------------------------------------------- greedy
@given(seed=st.integers(0, 10 ** 6), rows=st.integers(1, 3), plen=st.integers(1, 4),
       length=st.integers(1, 6), data=st.data())
def test_greedy_equals_a_rollout_that_reruns_everything(seed, rows, plen, length, data):
    cell = tiny(seed=seed)
    prefix = data.draw(st.lists(st.lists(st.integers(0, 4), min_size=plen, max_size=plen),
                                min_size=rows, max_size=rows))
    ids = Sampler(cell).generate(length, greedy(), prime=prefix)
    assert ids.shape == (rows, length) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, greedy_mirror(cell, prefix, length, 5))


def test_a_tiny_temperature_is_greedy():
    cell = tiny(seed=3)
    ids = Sampler(cell).generate(12, temperature(1e-6), prime=[0, 4], batch=3, seed=1)
    expected = greedy_mirror(cell, [[0, 4]] * 3, 12, 5)
    np.testing.assert_array_equal(ids, expected)


def test_float32_cells_sample_in_float64():
    cell = tiny(seed=4, dtype=np.float32)
    sampler = Sampler(cell)
    primed = sampler.prime([1, 2, 3])
    assert primed.logp.dtype == np.float64 and primed.state["h"].dtype == np.float32
    np.testing.assert_allclose(primed.logp[0], np.asarray(
        rerun_logits(cell, [[1, 2, 3]], 5)[-1, 0], np.float64)
        - logsumexp(rerun_logits(cell, [[1, 2, 3]], 5)[-1, 0].astype(np.float64)), atol=1e-12)
    np.testing.assert_array_equal(sampler.generate(8, greedy(), prime=[1, 2, 3]),
                                  greedy_mirror(cell, [[1, 2, 3]], 8, 5))


# ---------------------------------------------------------------------------- distributions
@given(logits=st.lists(st.floats(-20, 20), min_size=1, max_size=8),
       t=st.floats(0.1, 5.0), k=st.one_of(st.none(), st.integers(1, 10)),
       p=st.one_of(st.none(), st.floats(0.01, 1.0)))
def test_probabilities_equal_the_loop_mirror(logits, t, k, p):
    logits = np.array(logits)
    logp = logits - logsumexp(logits)
    got = Sampling(temperature=t, k=k, p=p).probabilities(logp[None])[0]
    np.testing.assert_allclose(got, kept_distribution(logp, t, k, p), atol=1e-12)


@pytest.mark.parametrize("strategy, kw", [
    (temperature(0.7), dict(t=0.7)),
    (top_k(3), dict(k=3)),
    (top_k(2, t=1.5), dict(t=1.5, k=2)),
    (top_p(0.6), dict(p=0.6)),
    (top_p(0.8, t=0.5), dict(t=0.5, p=0.8)),
])
def test_many_draws_at_one_step_follow_the_renormalised_distribution(strategy, kw):
    cell, n = tiny(V=6, seed=11, scale=0.6), 20000   # here: .06 .42 .09 .01 .32 .10
    ids = Sampler(cell).generate(1, strategy, prime=[2, 5, 1], batch=n, seed=7)[:, 0]
    expected = kept_distribution(rerun_logits(cell, [[2, 5, 1]], 6)[-1, 0], **kw)
    counts = np.bincount(ids, minlength=6)
    assert not counts[expected == 0].any(), "drew a token outside the kept set"
    kept = expected > 0
    assert kept.sum() >= 2 and (kept.all() == ("k" not in kw and "p" not in kw))
    assert chisquare(counts[kept], n * expected[kept]).pvalue > 1e-3


@given(seed=st.integers(0, 10 ** 6), k=st.integers(1, 4), p=st.floats(0.05, 0.95))
def test_top_k_and_top_p_never_leave_their_set_over_many_steps(seed, k, p):
    cell, prefix = tiny(V=6, seed=seed), [[3, 1]] * 4
    for strategy, kw in ((top_k(k), dict(k=k)), (top_p(p), dict(p=p))):
        ids = Sampler(cell).generate(5, strategy, prime=prefix, seed=seed)
        logits = rerun_logits(cell, np.concatenate([prefix, ids], axis=1), 6)
        for s in range(5):
            for b in range(4):
                allowed = kept_distribution(logits[1 + s, b], **kw) > 0
                assert allowed[ids[b, s]], (strategy, s, b)


def test_seeds_repeat_and_differ():
    sampler = Sampler(tiny(seed=5))
    a = sampler.generate(20, top_p(0.9), prime=[1], batch=4, seed=123)
    np.testing.assert_array_equal(a, sampler.generate(20, top_p(0.9), prime=[1], batch=4,
                                                      seed=123))
    assert not np.array_equal(a, sampler.generate(20, top_p(0.9), prime=[1], batch=4, seed=9))
    gen = np.random.default_rng(123)
    np.testing.assert_array_equal(a, sampler.generate(20, top_p(0.9), prime=[1], batch=4,
                                                      seed=gen))


def test_a_final_logits_output_samples_as_the_per_step_one():
    """A cell whose logits are `final` (one value a sequence, (B, V)) was refused with
    "readout returned shape (5,)" though no readout was given: the sampler took [-1] of
    it, a row, as of a per-step output."""
    text = ("cell Tok {\n  dims V, H\n  input token x[V]\n  state h[H]\n"
            "  param W[H, V], U[H, H], W_y[V, H]\n  h' = tanh(W @ x + U @ h)\n"
            "  output logits = W_y @ h'\n}\n")
    per_step = rnndsl.load_text(text, target="interp")(V=5, H=4, dtype=np.float64, seed=0)
    final = rnndsl.load_text(text.replace("output logits", "final logits"),
                             target="interp")(V=5, H=4, dtype=np.float64, seed=0)
    for strategy in (greedy(), Sampling(temperature=0.7)):
        got = Sampler(final).generate(8, strategy, prime=[1, 2], seed=3, batch=2)
        want = Sampler(per_step).generate(8, strategy, prime=[1, 2], seed=3, batch=2)
        np.testing.assert_array_equal(got, want)


def test_a_strategy_can_be_a_plain_function():
    cell = tiny(seed=6)
    least = Sampler(cell).generate(4, lambda logp, rng: logp.argmin(axis=1), prime=[0])
    seqs = np.array([[0]])
    for _ in range(4):
        nxt = rerun_logits(cell, seqs, 5)[-1].argmin(axis=1)
        seqs = np.concatenate([seqs, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(least, seqs[:, 1:])
    with pytest.raises(SampleError, match="expected 1 integer ids in 0..4"):
        Sampler(cell).generate(2, lambda logp, rng: np.array([7]), prime=[0])


# ---------------------------------------------------------------------------- beam search
def brute_force(cell, prefix, V, length, stop=None, alpha=0.0):
    """Every sequence of `length` tokens (cut at the first stop), scored by its log-prob."""
    seqs = np.array([prefix + list(s) for s in itertools.product(range(V), repeat=length)])
    logits = rerun_logits(cell, seqs, V)
    found = {}
    for b, seq in enumerate(seqs[:, len(prefix):]):
        total, ids = 0.0, []
        for i, tok in enumerate(seq):
            row = logits[len(prefix) - 1 + i, b]
            total += row[tok] - logsumexp(row)
            ids.append(int(tok))
            if tok in np.atleast_1d(stop if stop is not None else []):
                break
        found[tuple(ids)] = total
    return sorted(found.items(), key=lambda kv: -kv[1] / len(kv[0]) ** alpha)


def test_beam_of_width_one_is_greedy():
    cell = tiny(seed=8)
    (best,) = Sampler(cell).beam_search(1, 9, [4, 0, 2])
    np.testing.assert_array_equal(best.ids, greedy_mirror(cell, [[4, 0, 2]], 9, 5)[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_wide_beam_is_brute_force(seed):
    cell = tiny(V=3, H=6, seed=seed)
    beams = Sampler(cell).beam_search(27, 4, [0, 2])
    expected = brute_force(cell, [0, 2], 3, 4)[:27]
    assert [tuple(h.ids) for h in beams] == [ids for ids, _ in expected]
    np.testing.assert_allclose([h.logprob for h in beams], [lp for _, lp in expected],
                               rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_beam_with_a_stop_token_is_brute_force(alpha):
    cell = tiny(V=3, H=6, seed=21)
    beams = Sampler(cell).beam_search(81, 4, [1], stop=1, length_penalty=alpha)
    expected = brute_force(cell, [1], 3, 4, stop=1, alpha=alpha)
    assert len(beams) == len(expected) == 31
    assert [tuple(h.ids) for h in beams] == [ids for ids, _ in expected]
    np.testing.assert_allclose([h.logprob for h in beams], [lp for _, lp in expected],
                               rtol=1e-12)


# ---------------------------------------------------------------------------- priming, state
def test_the_prefix_runs_once_and_each_step_once():
    cell = tiny(seed=9)
    calls = counting(cell)
    sampler = Sampler(cell)
    sampler.generate(6, top_k(2), prime=[1, 2, 3, 4], batch=3, seed=0)
    assert calls == [4] + [1] * 5     # the last token is chosen, not fed
    calls.clear()
    sampler.generate(6, greedy(), prime=[1, 2, 3, 4], return_state=True)
    assert calls == [4] + [1] * 6     # fed, so that sampling can continue
    calls.clear()
    sampler.beam_search(3, 5, [0, 1, 2])
    assert calls == [3] + [1] * 4
    assert cell.forward_options == {"grad": False}    # no backward follows a sample


def test_carried_state_continues_like_one_long_rollout():
    cell = tiny(seed=10)
    sampler = Sampler(cell)
    expected = greedy_mirror(cell, [[2, 2, 0]], 9, 5)
    first, primed = sampler.generate(4, greedy(), prime=[2, 2, 0], return_state=True)
    np.testing.assert_array_equal(first, expected[:, :4])
    np.testing.assert_array_equal(sampler.generate(5, greedy(), state=primed), expected[:, 4:])
    chained = sampler.prime([0], state=sampler.prime([2, 2]))
    assert chained.steps == 3
    np.testing.assert_array_equal(sampler.generate(9, greedy(), state=chained), expected)
    h0 = {"h": np.zeros((1, 8))}
    np.testing.assert_array_equal(sampler.generate(9, greedy(), prime=[2, 2, 0], state=h0),
                                  expected)


def test_a_stop_token_ends_a_row_and_pads_the_rest():
    cell = tiny(seed=12)
    rollout = greedy_mirror(cell, [[3]], 10, 5)[0]
    stop = int(rollout[2])
    cut = list(rollout).index(stop)
    calls = counting(cell)
    ids, primed = Sampler(cell).generate(10, greedy(), prime=[3], stop=stop, pad=-1,
                                         return_state=True)
    np.testing.assert_array_equal(ids[0], list(rollout[:cut + 1]) + [-1] * (9 - cut))
    assert calls == [1] + [1] * (cut + 1)       # nothing runs once every row has stopped
    after_stop = cell.forward(onehot([[3] + list(rollout[:cut + 1])], 5)).state["h"]
    np.testing.assert_allclose(primed.state["h"], after_stop, rtol=1e-12)
    calls.clear()
    padded = Sampler(cell).generate(10, greedy(), prime=[3], stop=stop)
    assert (padded[0, cut:] == stop).all()
    assert calls == [1] + [1] * cut             # the stop token itself is not fed


def test_rows_stop_independently():
    cell = tiny(seed=12)      # with this seed, rows stop at 3, 10 or never
    sampler = Sampler(cell)
    free = sampler.generate(15, temperature(1.0), prime=[0], batch=6, seed=4)
    ids, primed = sampler.generate(15, temperature(1.0), prime=[0], batch=6, seed=4, stop=2,
                                   pad=-1, return_state=True)
    cuts = [list(row).index(2) + 1 if 2 in row else 15 for row in free]
    assert min(cuts) < 15 and max(cuts) > min(cuts), "the seed should stop rows apart"
    for b, (row, got, cut) in enumerate(zip(free, ids, cuts)):
        np.testing.assert_array_equal(got[:cut], row[:cut])
        assert (got[cut:] == -1).all()
        # an ended row's state stays where its stop token left it
        fed = cell.forward(onehot([[0] + list(row[:cut])], 5)).state["h"][0]
        np.testing.assert_allclose(primed.state["h"][b], fed, rtol=1e-12, atol=1e-15)


def test_ties_and_exact_boundaries_follow_the_definitions():
    flat = np.zeros((1, 4))                  # four tokens of probability 1/4 each
    np.testing.assert_allclose(top_k(2).probabilities(flat), [[0.5, 0.5, 0, 0]])
    np.testing.assert_allclose(top_k(3).probabilities(flat), [[1 / 3, 1 / 3, 1 / 3, 0]])
    np.testing.assert_allclose(top_k(9).probabilities(flat), [[0.25] * 4])
    # the smallest set reaching p = 1/2 is two tokens, not three: reaching is enough
    np.testing.assert_allclose(top_p(0.5).probabilities(flat), [[0.5, 0.5, 0, 0]])
    np.testing.assert_allclose(top_p(0.51).probabilities(flat), [[1 / 3, 1 / 3, 1 / 3, 0]])
    np.testing.assert_allclose(top_p(1.0).probabilities(flat), [[0.25] * 4])
    assert greedy()(flat, None)[0] == 0


# ---------------------------------------------------------------------------- other models
def test_a_readout_head_maps_a_hidden_state_to_logits():
    cell = randomise(HIDDEN(E=5, H=7, dtype=np.float64), 14)
    rng = np.random.default_rng(14)
    W, b = rng.normal(0, 1.5, size=(5, 7)), rng.normal(size=5)
    sampler = Sampler(cell, readout=lambda h: h @ W.T + b)
    seqs = np.array([[1, 4]])
    for _ in range(6):
        h = cell.forward(onehot(seqs, 5)).outputs["h"][-1]
        nxt = np.array([int(np.argmax(W @ row + b)) for row in h])
        seqs = np.concatenate([seqs, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(sampler.generate(6, greedy(), prime=[1, 4]), seqs[:, 2:])
    with pytest.raises(SampleError, match="output 'h' has 7 features but the vocabulary has "
                                          "V=5"):
        Sampler(cell)
    with pytest.raises(SampleError, match=r"readout returned shape \(1, 3\); expected"):
        Sampler(cell, readout=lambda h: h[:, :3]).prime([0])


def test_an_embedding_encoding():
    V, E = 6, 4
    cell = randomise(TINY(V=E, H=8, dtype=np.float64), 15)
    cell = randomise(rnndsl.load_text(TINY.spec.source.text.replace(
        "W_y[V, H], b_y[V]", "W_y[O, H], b_y[O]").replace("dims V, H", "dims V, H, O"),
        target="interp")(V=E, H=8, O=V, dtype=np.float64), 15)
    table = np.random.default_rng(15).normal(size=(V, E))
    sampler = Sampler(cell, encode=lambda ids: table[ids])
    assert sampler.vocab == V
    seqs = np.array([[5, 0]])
    for _ in range(5):
        x = np.stack([table[seqs[0]]], axis=1)          # (T, 1, E)
        nxt = int(cell.forward(x).outputs["logits"][-1, 0].argmax())
        seqs = np.concatenate([seqs, [[nxt]]], axis=1)
    np.testing.assert_array_equal(sampler.generate(5, greedy(), prime=[5, 0]), seqs[:, 2:])
    with pytest.raises(SampleError, match=r"encode returned shape \(1, 1, 3\)"):
        Sampler(cell, encode=lambda ids: table[ids][..., :3]).prime([0])


def test_extra_inputs_are_named_when_missing_and_fed_per_step():
    cell = randomise(DROP(V=5, H=6, dtype=np.float64), 16)
    with pytest.raises(SampleError, match=r"has 2 inputs \(x, drop\); say which carries the "
                                          r"tokens: Sampler\(cell, input='...'\); feed the"):
        Sampler(cell)
    with pytest.raises(SampleError, match=r"besides the tokens 'x': drop\[6\]; give"):
        Sampler(cell, input="x")
    assert Sampler(cell, extra_inputs={"drop": np.ones(6)}).input == "x"
    masks = np.random.default_rng(16).choice([0.0, 2.0], size=(12, 6))

    def per_step(T):
        return {"drop": masks[:T, None, :]}
    expected = greedy_mirror(cell, [[1, 3]], 7, 5, extra=per_step)
    sampler = Sampler(cell, "x", extra_inputs=lambda step, batch: {"drop": masks[step]})
    np.testing.assert_array_equal(sampler.generate(7, greedy(), prime=[1, 3]), expected)
    split = sampler.prime([3], state=sampler.prime([1]))    # steps keep counting
    np.testing.assert_array_equal(sampler.generate(7, greedy(), state=split), expected)
    ones = Sampler(cell, extra_inputs={"drop": np.ones((1, 6))})
    np.testing.assert_array_equal(
        ones.generate(7, greedy(), prime=[1, 3]),
        greedy_mirror(cell, [[1, 3]], 7, 5, extra=lambda T: {"drop": np.ones((T, 1, 6))}))
    with pytest.raises(SampleError, match="exactly drop; unknown: mask; missing: drop"):
        Sampler(cell, "x", extra_inputs={"mask": 1})
    with pytest.raises(SampleError, match=r"expected \(6,\) or \(batch, 6\)"):
        Sampler(cell, extra_inputs={"drop": np.ones(5)}).prime([0])


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make, message", [
    (lambda: top_k(0), r"top-k's k must be an integer >= 1, got 0"),
    (lambda: top_k(2.5), r"must be an integer >= 1, got 2.5"),
    (lambda: top_p(0.0), r"top-p's p must be in \(0, 1\], got 0.0"),
    (lambda: top_p(1.5), r"top-p's p must be in \(0, 1\], got 1.5"),
    (lambda: temperature(0), r"temperature must be in \(0, inf\), got 0"),
    (lambda: temperature(-1.0), r"temperature must be in \(0, inf\)"),
    (lambda: temperature(float("nan")), "temperature must be a finite number"),
    (lambda: top_k(3, t=True), "temperature must be a finite number, got True"),
])
def test_bad_strategy_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("call, message", [
    (lambda s: s.prime([0, 5]), r"prefix id 5 at index \(1,\) is outside the vocabulary "
                                r"0..4 \(V=5\)"),
    (lambda s: s.prime([[0], [-1]]), r"prefix id -1 at index \(1, 0\)"),
    (lambda s: s.prime([]), "prefix is empty"),
    (lambda s: s.prime("abc"), "must hold integer token ids 0..4, got dtype <U3"),
    (lambda s: s.prime([1.0, 2.0]), "got dtype float64"),
    (lambda s: s.prime([[[1]]]), r"expected \(length,\) or \(batch, length\)"),
    (lambda s: s.prime([[1], [2]], batch=3), "batch 3 needs the prefix and each state to "
                                             "have 1 or 3 rows; the prefix has 2"),
    (lambda s: s.generate(3, greedy()), "sampling needs a start: prime="),
    (lambda s: s.generate(-1, greedy(), prime=[0]), "length must be an integer >= 0"),
    (lambda s: s.generate(3, "greedy", prime=[0]), "strategy must be callable"),
    (lambda s: s.generate(3, greedy(), prime=[0], stop=9), "stop id 9"),
    (lambda s: s.generate(3, greedy(), state=s.prime([0], batch=2), batch=3),
     "batch=3 but the given state has 2 rows"),
    (lambda s: s.beam_search(0, 3, [0]), "width must be an integer >= 1"),
    (lambda s: s.beam_search(2, 3, [[0], [1]]), "beam search starts from one sequence"),
    (lambda s: s.beam_search(2, 3, state={"h": np.zeros((1, 8))}), "sampling needs a start"),
    (lambda s: s.prime([0], state=[1]), "state must be a dict of cell states or a Primed"),
    (lambda s: s.generate(3, greedy(), prime=[0], stop=1, pad=1.5), "pad must be an integer"),
    (lambda s: s.beam_search(2, 3, [0], length_penalty=-1), "length_penalty must be in"),
    (lambda s: s.step(s.prime([0]), [1, 2]), "step got 2 ids for 1 rows"),
])
def test_bad_sampling_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call(Sampler(tiny()))


def test_bad_sampler_construction():
    with pytest.raises(SampleError, match=r"got the class Tiny; instantiate it first"):
        Sampler(TINY)
    with pytest.raises(SampleError, match="has no input 'y'; its inputs are: x"):
        Sampler(tiny(), input="y")
    with pytest.raises(SampleError, match="has no output 'h'; its outputs are: logits"):
        Sampler(tiny(), output="h")
    with pytest.raises(SampleError, match="one-hot tokens make V the size of input 'x' "
                                          r"\(5\), but vocab=7"):
        Sampler(tiny(), vocab=7)
    two = rnndsl.load_text(TINY.spec.source.text.replace(
        "output logits = W_y @ h' + b_y", "output logits = W_y @ h' + b_y\n  output h'"),
        target="interp")(V=5, H=8)
    with pytest.raises(SampleError, match=r"has 2 outputs \(logits, h\); say which holds the "
                                          "logits"):
        Sampler(two)
    assert Sampler(two, output="logits").output == "logits"
    with pytest.raises(SampleError, match="extra_inputs given, but cell Tiny has no input"):
        Sampler(tiny(), extra_inputs={"drop": 1})


def test_non_finite_logits_are_reported():
    nan_in_2 = np.array([0.0, 0.0, np.nan, 0.0, 0.0])
    with pytest.raises(SampleError, match=r"logits after step 1 \(row 0\) are not usable"):
        Sampler(tiny(), readout=lambda z: z + nan_in_2).prime([0, 1])
    with pytest.raises(SampleError, match=r"logits after step 0 \(row 1\) are not usable"):
        Sampler(tiny(), readout=lambda z: z - np.array([[0.0], [np.inf]])).prime([[0], [1]])
    masked = Sampler(tiny(), readout=lambda z: z - np.array([0, np.inf, 0, 0, np.inf]))
    ids = masked.generate(30, temperature(2.0), prime=[0], batch=4, seed=0)
    assert not np.isin(ids, [1, 4]).any()          # -inf logits are allowed: masked tokens


def test_primed_rows_and_strategy_reprs():
    sampler = Sampler(tiny(seed=2))
    primed = sampler.prime([1, 2], batch=4)
    assert isinstance(primed, Primed) and primed.batch == 4 and primed.steps == 2
    np.testing.assert_allclose(np.exp(primed.logp).sum(axis=1), 1.0, rtol=1e-14)
    assert isinstance(greedy(), Greedy) and top_k(3) == Sampling(1.0, k=3)


def test_a_compiled_cell_samples_like_the_interpreter():
    compiled = randomise(rnndsl.load_text(TINY.spec.source.text, target="cpu")(
        V=5, H=8, dtype=np.float64), 3)
    sampler = Sampler(compiled)
    np.testing.assert_array_equal(sampler.generate(12, greedy(), prime=[1, 2], batch=2),
                                  greedy_mirror(tiny(seed=3), [[1, 2]] * 2, 12, 5))
    beams = sampler.beam_search(27, 4, [0, 2])
    expected = brute_force(tiny(seed=3), [0, 2], 5, 4)[:27]
    assert [tuple(h.ids) for h in beams] == [ids for ids, _ in expected]
    np.testing.assert_allclose([h.logprob for h in beams], [lp for _, lp in expected],
                               rtol=1e-10)


def test_several_stop_ids_each_end_a_row():
    """stop=[2, 4]: a row ends at the first of either; its later positions repeat the
    id it ended on (or hold pad), and its state stays where that token left it."""
    cell = tiny(seed=12)
    sampler = Sampler(cell)
    free = sampler.generate(15, temperature(1.0), prime=[0], batch=6, seed=4)
    ids, primed = sampler.generate(15, temperature(1.0), prime=[0], batch=6, seed=4,
                                   stop=[2, 4], return_state=True)
    padded = sampler.generate(15, temperature(1.0), prime=[0], batch=6, seed=4,
                              stop=np.array([4, 2]), pad=-1)
    cuts = [next((i + 1 for i, t in enumerate(row) if t in (2, 4)), 15) for row in free]
    assert len({row[cut - 1] for row, cut in zip(free, cuts) if cut < 15}) == 2, \
        "the seed should end rows on both ids"
    for b, (row, got, pads, cut) in enumerate(zip(free, ids, padded, cuts)):
        np.testing.assert_array_equal(got[:cut], row[:cut])
        assert (got[cut:] == row[cut - 1]).all() and (pads[cut:] == -1).all()
        fed = cell.forward(onehot([[0] + list(row[:cut])], 5)).state["h"][0]
        np.testing.assert_allclose(primed.state["h"][b], fed, rtol=1e-12, atol=1e-15)


def test_a_wide_beam_with_two_stop_ids_is_brute_force():
    cell = tiny(V=3, H=6, seed=21)
    beams = Sampler(cell).beam_search(81, 4, [1], stop=[1, 2])
    expected = brute_force(cell, [1], 3, 4, stop=[1, 2])
    assert len(beams) == len(expected) < 81        # sequences end early on either id
    assert [tuple(h.ids) for h in beams] == [ids for ids, _ in expected]


@pytest.mark.parametrize("stop, message", [
    ([], "stop is empty"),
    ([[1, 2]], r"stop has shape \(1, 2\)"),
    (True, "stop must hold integer token ids"),
    ([1, 9], "stop id 9 at index"),
])
def test_bad_stop_ids_are_refused(stop, message):
    with pytest.raises(SampleError, match=message):
        Sampler(tiny(seed=1)).generate(3, greedy(), prime=[0], stop=stop)


@pytest.mark.parametrize("t", [1e-308, 5e-324, 1e-5])
def test_a_tiny_temperature_draws_the_likeliest_token_without_warnings(t):
    """logp / t overflowed every entry to -inf at t = 1e-308 (log-softmax's largest value
    is just below 0), so the draw was made from NaNs: a random token and two NumPy
    RuntimeWarnings, where a temperature near 0 approaches greedy."""
    import warnings
    from rnndsl.train.sample import log_softmax, temperature
    logp = log_softmax(np.random.default_rng(0).normal(size=(5, 9)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probs = temperature(t).probabilities(logp)
        drawn = temperature(t)(logp, np.random.default_rng(1))
    np.testing.assert_array_equal(drawn, logp.argmax(axis=1))
    np.testing.assert_allclose(probs.max(axis=1), 1.0)


# an `input once` beside the tokens: read at the sequence's first step, never again
CONDITIONED = """
cell Cond {
  dims V, Z, H
  input %sx[V]
  input once z[Z]
  state h[H]
  param W[H, V], Q[H, Z], U[H, H], Y[V, H]
  h' = tanh(W @ x + Q @ z + U @ h)
  output logits = Y @ h'
}"""


@pytest.mark.parametrize("token", ["token ", ""], ids=["ids", "one-hot"])
def test_an_input_once_is_read_at_the_first_step_only(token):
    """The sampler stacked an `input once` extra like a per-step one: fed at every
    generated token (ids), or refused inside the cell (one-hot). The mirror re-runs the
    cell over the whole sequence, z read once at its start."""
    cell = rnndsl.load_text(CONDITIONED % token, target="interp")(V=4, Z=2, H=5,
                                                                  dtype=np.float64, seed=0)
    for name in cell.params:
        cell.params[name] *= 2
    z = np.array([[1.0, -2.0]])
    got = Sampler(cell, extra_inputs={"z": z[0]}).generate(6, greedy(), prime=[1, 2])
    seq = [1, 2]
    for _ in range(6):
        run = cell.forward({"x": np.eye(4)[np.array(seq)][:, None], "z": z})
        seq.append(int(np.argmax(run.outputs["logits"][-1, 0])))
    assert got[0].tolist() == seq[2:]
