"""Sampling token sequences from a cell: greedy, temperature, top-k, top-p, beam search.

Input: a bound cell (any target) whose token input takes an encoding of one token per row
(one-hot of the vocabulary V by default) and one of whose outputs is, or through a
`readout` becomes, the next token's V logits.
Output: token ids, `(B, length)` from `Sampler.generate`, or ranked hypotheses from
`Sampler.beam_search`.

Invariants:
- The prefix runs through ONE `cell.forward` of T = len(prefix) steps and is never re-run;
  each generated token then advances the carried state with a T = 1 forward (on the cpu
  target, the compiled kernel). The last token of a sequence is not fed unless the caller
  asks for the state to continue from (`return_state=True`).
- Choices are made in float64 from a log-softmax, whatever the cell's dtype, so that a
  float32 model's near-ties and tiny probabilities are not lost to rounding.
- Randomness comes only from the `np.random.Generator` a seed makes; one seed, one result.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from ..core.errors import RnnError
from ..core.numbers import is_whole

__all__ = ["Sampler", "Primed", "Hypothesis", "Greedy", "Sampling", "greedy", "temperature",
           "top_k", "top_p", "SampleError", "log_softmax"]


class SampleError(RnnError, ValueError):
    """A sampler was built or called with arguments it cannot use.

    A ValueError for Python callers, an RnnError so the CLI shows it without a traceback.
    """


def _real(name: str, value, low: float, high: float = np.inf, low_open=True) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
        raise SampleError(f"{name} must be a finite number, got {value!r}")
    if (value <= low if low_open else value < low) or value > high:
        where = f"{'(' if low_open else '['}{low:g}, {'inf)' if high == np.inf else f'{high:g}]'}"
        raise SampleError(f"{name} must be in {where}, got {value!r}")
    return float(value)


def _count(name: str, value, minimum: int) -> int:
    if not is_whole(value, minimum):
        raise SampleError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64; -inf logits (masked tokens) stay -inf."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=-1, keepdims=True)
    z = z - top
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------- strategies
@dataclass(frozen=True)
class Greedy:
    """Always the most likely token (the lowest id among ties): deterministic."""

    def __call__(self, logp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.argmax(logp, axis=1)


@dataclass(frozen=True)
class Sampling:
    """Draw from softmax(logits / temperature), cut to the top k and/or the top-p nucleus.

    The cuts apply in that order (as in HF transformers' logits warpers): temperature, then
    the k most likely tokens (ties go to the lower id), then the smallest set of the most
    likely tokens whose probability reaches p (Holtzman et al. 2020); what survives is
    renormalised.
    """

    temperature: float = 1.0
    k: int | None = None
    p: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "temperature", _real("temperature", self.temperature, 0.0))
        if self.k is not None:
            object.__setattr__(self, "k", _count("top-k's k", self.k, 1))
        if self.p is not None:
            object.__setattr__(self, "p", _real("top-p's p", self.p, 0.0, 1.0))

    def probabilities(self, logp: np.ndarray) -> np.ndarray:
        """The (B, V) float64 distribution each row is drawn from."""
        z = np.asarray(logp, dtype=np.float64)
        # the likeliest token at exactly 0 before dividing: at a tiny temperature the
        # others go to -inf, never all of them (which made NaNs and a random draw)
        with np.errstate(over="ignore"):
            z = log_softmax((z - z.max(axis=1, keepdims=True)) / self.temperature)
        if self.k is not None and self.k < z.shape[1]:
            order = np.argsort(-z, axis=1, kind="stable")
            np.put_along_axis(z, order[:, self.k:], -np.inf, axis=1)
            z = log_softmax(z)          # what survives the cut, normalised again
        probs = np.exp(z)
        if self.p is not None and self.p < 1.0:
            order = np.argsort(-probs, axis=1, kind="stable")
            ranked = np.take_along_axis(probs, order, axis=1)
            before = np.zeros_like(ranked)     # the mass of the more likely tokens, summed
            before[:, 1:] = np.cumsum(ranked, axis=1)[:, :-1]   # in order: no a + b - b
            np.put_along_axis(probs, order, np.where(before < self.p, ranked, 0.0), axis=1)
        return probs / probs.sum(axis=1, keepdims=True)

    def __call__(self, logp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        probs = self.probabilities(logp)
        cdf = np.cumsum(probs, axis=1)
        u = rng.random(len(probs)) * cdf[:, -1]
        # the first token whose cumulative mass exceeds u: never one of probability zero
        return np.minimum((cdf <= u[:, None]).sum(axis=1), probs.shape[1] - 1)


def greedy() -> Greedy:
    """The argmax at every step."""
    return Greedy()


def temperature(t: float) -> Sampling:
    """Sample from softmax(logits / t): t < 1 sharpens, t > 1 flattens."""
    return Sampling(temperature=t)


def top_k(k: int, t: float = 1.0) -> Sampling:
    """Sample among the k most likely tokens only (k >= V keeps them all)."""
    return Sampling(temperature=t, k=k)


def top_p(p: float, t: float = 1.0) -> Sampling:
    """Nucleus sampling: among the fewest most likely tokens whose probability reaches p."""
    return Sampling(temperature=t, p=p)


# ---------------------------------------------------------------------------- state
@dataclass(frozen=True)
class Primed:
    """Where sampling stands: the carried states and the next token's log-probabilities.

    `steps` counts the tokens fed since the first prefix, so that per-step extra inputs
    (dropout masks, say) keep numbering across `prime`, `step` and `generate` calls.
    """

    state: dict[str, np.ndarray]     # (B, size) each, the cell's dtype
    logp: np.ndarray                 # (B, V) float64 log-softmax of the next token
    steps: int

    @property
    def batch(self) -> int:
        return self.logp.shape[0]

    def take(self, rows: np.ndarray) -> "Primed":
        """The rows `rows` (repeats allowed): beams that share a parent share its state."""
        return Primed({k: v[rows] for k, v in self.state.items()}, self.logp[rows], self.steps)

    def freeze(self, rows: np.ndarray, before: "Primed") -> "Primed":
        """Self, but where `rows` is True the values of `before`: rows that ended stay put."""
        def pick(new, old):
            return np.where(rows.reshape((-1,) + (1,) * (new.ndim - 1)), old, new)
        state = {k: pick(v, before.state[k]) for k, v in self.state.items()}
        return Primed(state, pick(self.logp, before.logp), self.steps)


class Hypothesis(NamedTuple):
    """One beam-search result: the ids (through the stop token, if one ended it) and their
    total log-probability under the model given the prefix."""

    ids: np.ndarray
    logprob: float


# ---------------------------------------------------------------------------- sampler
class Sampler:
    """A cell seen as a language model over V tokens.

    `input` names the token input and `output` the logits output; each defaults to the
    cell's only one. `encode(ids) -> ids.shape + (size,)` turns integer ids into the token
    input (default: one-hot, V = that input's size; with another encoding give `vocab`,
    or let it default to the output's size). `readout(out) -> (B, V) logits` maps the
    chosen output when it is a hidden state. `extra_inputs` feeds every other input, as a
    dict of arrays, (size,) or (B, size), the same at every step, or a callable
    `(step, batch) -> dict` (step counts tokens fed since the first prefix).
    """

    def __init__(self, cell, input: str | None = None, output: str | None = None, *,
                 encode: Callable | None = None, vocab: int | None = None,
                 readout: Callable | None = None,
                 extra_inputs: Mapping[str, Any] | Callable | None = None):
        if isinstance(cell, type):
            raise SampleError(f"Sampler needs a bound cell, got the class {cell.__name__}; "
                              f"instantiate it first, e.g. {cell.__name__}(V=..., H=...)")
        if not all(hasattr(cell, a) for a in ("spec", "dims", "dtype", "forward")):
            raise SampleError(f"Sampler needs an rnndsl cell, got {type(cell).__name__}")
        self.cell, spec = cell, cell.spec
        backwards = [s.name for s in getattr(spec, "sequence_layers", ())]
        if backwards or getattr(cell, "direction", "forward") != "forward":
            what = (f"its layer {backwards[0]} runs" if backwards else
                    f"it runs {cell.direction}")
            raise SampleError(f"cannot sample from {spec.name}: {what} over whole sequences "
                              "(a reverse pass reads the last step first), so it cannot "
                              "make one token at a time")
        hidden = getattr(cell, "hidden_inputs", {})   # dropout masks: the runtime fills them
        user_inputs = [d for d in spec.inputs if d.name not in hidden]
        names = [d.name for d in user_inputs]
        if input is None and len(names) > 1 and isinstance(extra_inputs, Mapping):
            rest = [n for n in names if n not in extra_inputs]   # the one extras don't feed
            input = rest[0] if len(rest) == 1 else None
        self.input = self._pick("input", input, names, "which carries the tokens",
                                "; feed the others with extra_inputs=")
        self.output = self._pick("output", output, [o.name for o in spec.outputs],
                                 "which holds the logits")
        in_decl = next(d for d in spec.inputs if d.name == self.input)
        out_decl = next(o for o in spec.outputs if o.name == self.output)
        # a `final` output is (B, ...) already: the last step's value, as wanted
        self._final_output = bool(getattr(out_decl, "final", False))
        self.input_size = self._vector_size("input", in_decl)
        self._token_input = bool(getattr(in_decl, "token", False))   # fed as ids
        out_size = None if readout is not None else self._vector_size("output", out_decl)
        if encode is None:
            if vocab is not None and vocab != self.input_size:
                raise SampleError(f"one-hot tokens make V the size of input '{self.input}' "
                                  f"({self.input_size}), but vocab={vocab!r}; pass encode= "
                                  "for another encoding")
            vocab = self.input_size
        elif vocab is None:
            if out_size is None:
                raise SampleError("with both encode= and readout=, say the vocabulary size: "
                                  "vocab=V")
            vocab = out_size
        self.vocab = _count("vocab", vocab, 1)
        if out_size is not None and out_size != self.vocab:
            raise SampleError(f"output '{self.output}' has {out_size} features but the "
                              f"vocabulary has V={self.vocab} tokens; pick the logits output "
                              f"(output=) or map it to V logits with readout=")
        self.encode, self.readout = encode, readout
        self.extras = {d.name: self._vector_size("input", d)
                       for d in user_inputs if d.name != self.input}
        # `input once` extras: read at a sequence's first step only (the first prefix's)
        self._once = {d.name for d in user_inputs if d.name in self.extras and d.once}
        self.extra_inputs = self._check_extras(extra_inputs)

    # ------------------------------------------------------------------ construction checks
    def _pick(self, what: str, name, names: list[str], role: str, more: str = "") -> str:
        if name is None:
            if len(names) != 1:
                raise SampleError(f"cell {self.cell.spec.name} has {len(names)} {what}s "
                                  f"({', '.join(names) or 'none'}); say {role}: "
                                  f"Sampler(cell, {what}='...'){more}")
            return names[0]
        if name not in names:
            raise SampleError(f"cell {self.cell.spec.name} has no {what} '{name}'; its "
                              f"{what}s are: {', '.join(names) or 'none'}")
        return name

    def _vector_size(self, what: str, decl) -> int:
        shape = tuple(d.evaluate(self.cell.dims) for d in decl.type.shape)
        if len(shape) != 1:
            raise SampleError(f"{what} '{decl.name}' has shape {list(shape)}; sampling needs "
                              "a vector of features per token")
        return shape[0]

    def _check_extras(self, extra):
        if not self.extras:
            if extra:
                raise SampleError(f"extra_inputs given, but cell {self.cell.spec.name} has no "
                                  f"input besides '{self.input}'")
            return None
        wanted = ", ".join(f"{n}[{s}]" for n, s in self.extras.items())
        if extra is None:
            raise SampleError(f"cell {self.cell.spec.name} has inputs besides the tokens "
                              f"'{self.input}': {wanted}; give their values per step with "
                              "extra_inputs={name: array} or extra_inputs=lambda step, "
                              "batch: {...}")
        if isinstance(extra, Mapping):
            self._check_extra_names(extra)
        elif not callable(extra):
            raise SampleError(f"extra_inputs must be a dict or a callable (step, batch) -> "
                              f"dict, got {type(extra).__name__}")
        return extra

    def _check_extra_names(self, given: Mapping) -> None:
        unknown = [n for n in given if n not in self.extras]
        missing = [n for n in self.extras if n not in given]
        if unknown or missing:
            raise SampleError("extra_inputs must give exactly " + ", ".join(self.extras)
                              + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else "")
                              + (f"; missing: {', '.join(missing)}" if missing else ""))

    # ------------------------------------------------------------------ feeding the cell
    def _ids(self, what: str, value, ndim=(1, 2)) -> np.ndarray:
        arr = np.asarray(value)
        if arr.size == 0:
            raise SampleError(f"{what} is empty; it needs at least one token id")
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise SampleError(f"{what} must hold integer token ids 0..{self.vocab - 1}, got "
                              f"dtype {arr.dtype}; map text to ids first")
        if arr.ndim not in ndim:
            raise SampleError(f"{what} has shape {arr.shape}; expected "
                              + " or ".join({1: "(length,)", 2: "(batch, length)"}[n]
                                            for n in ndim))
        bad = (arr < 0) | (arr >= self.vocab)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise SampleError(f"{what} id {arr[where]} at index {where} is outside the "
                              f"vocabulary 0..{self.vocab - 1} (V={self.vocab})")
        return arr.astype(np.int64)

    def _encode(self, ids: np.ndarray) -> np.ndarray:
        dtype = self.cell.dtype
        if self.encode is None:
            if self._token_input:        # `input token x[V]`: the ids themselves
                return ids
            return np.eye(self.vocab, dtype=dtype)[ids]
        x = np.asarray(self.encode(ids))
        if x.shape != ids.shape + (self.input_size,):
            raise SampleError(f"encode returned shape {x.shape} for ids of shape {ids.shape}; "
                              f"expected {ids.shape + (self.input_size,)}, the ids' shape "
                              f"and input '{self.input}''s size")
        return x.astype(dtype, copy=False)

    def _extra_step(self, step: int, batch: int) -> dict[str, np.ndarray]:
        given = self.extra_inputs
        if callable(given) and not isinstance(given, Mapping):
            given = given(step, batch)
            if not isinstance(given, Mapping):
                raise SampleError(f"extra_inputs({step}, {batch}) returned "
                                  f"{type(given).__name__}; it must return a dict")
            self._check_extra_names(given)
        out = {}
        for name, size in self.extras.items():
            value = np.asarray(given[name], dtype=self.cell.dtype)
            if value.shape not in ((size,), (batch, size)):
                raise SampleError(f"extra input '{name}' has shape {value.shape}; expected "
                                  f"({size},) or (batch, {size}) = ({batch}, {size})")
            out[name] = np.broadcast_to(value, (batch, size))
        return out

    def _feed(self, ids: np.ndarray, state, steps: int) -> Primed:
        """Run ids (T, B) through one forward from `state`; the last step's log-probs."""
        T, B = ids.shape
        x = self._encode(ids)
        if self.extras:
            x = {self.input: x}
            per_step = [self._extra_step(steps + t, B) for t in range(T)]
            x.update({n: np.stack([s[n] for s in per_step]) for n in self.extras
                      if n not in self._once})
            # an `input once` is (B, size), which the cell reads at the first step of the
            # call: the sequence's first step when nothing was fed before, else none
            x.update({n: per_step[0][n] if steps == 0 else np.zeros_like(per_step[0][n])
                      for n in self._once})
        run = self.cell.forward(x, state=state, grad=False)   # no backward follows
        out = run.outputs[self.output]
        out = out if self._final_output else out[-1]
        logits = np.asarray(self.readout(out)) if self.readout is not None else out
        if logits.shape != (B, self.vocab):
            what = "readout returned" if self.readout is not None else \
                f"output '{self.output}' has"
            raise SampleError(f"{what} shape {logits.shape}; expected (batch, V) = "
                              f"({B}, {self.vocab})")
        if not np.isfinite(logits).all():       # one pass where all is well
            bad = np.isnan(logits) | (logits == np.inf) | \
                (logits == -np.inf).all(axis=1)[:, None]
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise SampleError(f"the logits after step {steps + T - 1} (row {row}) are "
                                  "not usable (NaN, +inf, or all -inf); check the params")
        return Primed(dict(run.state), log_softmax(logits), steps + T)

    def prime(self, prefix, batch: int | None = None, state=None) -> Primed:
        """Feed a prefix in ONE forward and return where sampling stands after it.

        `prefix` is (length,), shared by every row, or (batch, length). `state` starts it
        from a dict of cell states (B, size) or from an earlier `Primed`. A shared prefix
        and one-row states are repeated to `batch` rows.
        """
        ids = self._ids("prefix", prefix)
        ids = ids[None] if ids.ndim == 1 else ids
        steps = 0
        if isinstance(state, Primed):
            state, steps = state.state, state.steps
        elif state is not None and not isinstance(state, Mapping):
            raise SampleError(f"state must be a dict of cell states or a Primed, got "
                              f"{type(state).__name__}")
        rows = {len(v) for v in (state or {}).values() if isinstance(v, np.ndarray)}
        rows.add(len(ids))
        B = _count("batch", batch, 1) if batch is not None else max(rows)
        if rows - {1, B}:
            sizes = {k: len(v) for k, v in (state or {}).items() if isinstance(v, np.ndarray)}
            raise SampleError(f"batch {B} needs the prefix and each state to have 1 or {B} "
                              f"rows; the prefix has {len(ids)}"
                              + "".join(f", state {k} {n}" for k, n in sizes.items()))
        ids = np.repeat(ids, B // len(ids), axis=0)
        if state is not None:
            state = {k: np.repeat(v, B, axis=0) if isinstance(v, np.ndarray) and len(v) == 1
                     and B > 1 else v for k, v in state.items()}
        return self._feed(ids.T, state, steps)

    def step(self, primed: Primed, ids) -> Primed:
        """Feed one token per row (a T = 1 forward): the state after it."""
        ids = self._ids("ids", ids, ndim=(1,))
        if len(ids) != primed.batch:
            raise SampleError(f"step got {len(ids)} ids for {primed.batch} rows")
        return self._feed(ids[None], primed.state, primed.steps)

    def _start(self, prime, state, batch) -> Primed:
        if prime is not None:
            return self.prime(prime, batch=batch, state=state)
        if not isinstance(state, Primed):
            raise SampleError("sampling needs a start: prime=[ids] (at least one token), or "
                              "state=sampler.prime(...)")
        if batch is not None and batch != state.batch:
            raise SampleError(f"batch={batch!r} but the given state has {state.batch} rows; "
                              f"prime with batch={batch} instead")
        return state

    def _choose(self, strategy, logp: np.ndarray, rng) -> np.ndarray:
        if type(strategy) in (Greedy, Sampling):     # ours: ids in range, one a row
            return strategy(logp, rng)
        ids = np.asarray(strategy(logp, rng))
        if ids.shape != (len(logp),) or not np.issubdtype(ids.dtype, np.integer) \
                or ((ids < 0) | (ids >= self.vocab)).any():
            raise SampleError(f"strategy {strategy!r} returned {ids!r}; expected {len(logp)} "
                              f"integer ids in 0..{self.vocab - 1}")
        return ids.astype(np.int64)

    def _stops(self, stop) -> np.ndarray | None:
        """`stop` (one token id, or several: any of them ends a sequence) as an array."""
        if stop is None:
            return None
        arr = np.asarray(stop)
        return self._ids("stop", arr.reshape(1) if arr.ndim == 0 else arr, ndim=(1,))

    # ------------------------------------------------------------------ generating
    def generate(self, length: int, strategy: Callable, *, prime=None, state=None,
                 batch: int | None = None, seed=None, stop=None,
                 pad: int | None = None, return_state: bool = False):
        """Sample `length` tokens for each row after the prefix: ids (B, length).

        `strategy(logp (B, V) float64, rng) -> ids (B,)`: `greedy()`, `temperature(t)`,
        `top_k(k)`, `top_p(p)` or a function of your own. `stop` is a token id, or a list
        of them (an end-of-text id and a newline, say). After a row emits one, its later
        positions hold `pad` (default: the stop id it emitted) and its state is frozen.
        With `return_state`, also the `Primed` to continue from (the last tokens fed too).
        """
        length = _count("length", length, 0)
        if not callable(strategy):
            raise SampleError(f"strategy must be callable, like greedy() or top_k(40), got "
                              f"{strategy!r}")
        stops = self._stops(stop)
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, (int, np.integer))):
            raise SampleError(f"pad must be an integer (any, -1 say), got {pad!r}")
        if seed is not None and not isinstance(seed, np.random.Generator) \
                and not is_whole(seed):
            raise SampleError(f"seed must be a non-negative integer, a np.random.Generator "
                              f"or None, got {seed!r}")
        rng = np.random.default_rng(seed)
        cur = self._start(prime, state, batch)
        ids = np.full((cur.batch, length), 0 if pad is None else int(pad), dtype=np.int64)
        done = np.zeros(cur.batch, dtype=bool)
        for s in range(length):
            tok = np.where(done, ids[:, s], self._choose(strategy, cur.logp, rng))
            ids[:, s] = tok
            was_done = done
            if stops is not None:
                ended = ~done & np.isin(tok, stops)
                if pad is None:     # an ended row repeats its own stop id
                    ids[ended, s + 1:] = tok[ended, None]
                done = done | ended
            more = s < length - 1 and not done.all()
            if (more or return_state) and not was_done.all():
                # the ids _choose checked: fed as `step` feeds them, without its checks
                nxt = self._feed(np.where(was_done, 0, tok)[None], cur.state, cur.steps)
                cur = nxt.freeze(was_done, cur) if was_done.any() else nxt
            if not more:
                break
        return (ids, cur) if return_state else ids

    def beam_search(self, width: int, length: int, prime=None, *, state=None,
                    stop=None, length_penalty: float = 0.0) -> list[Hypothesis]:
        """The `width` most likely continuations of up to `length` tokens, best first.

        Keeps the `width` best partial sequences at each step (their states gathered from
        their parents). A sequence that emits `stop` (a token id, or any of a list of
        them) ends there. Ranking is by log-prob /
        len ** length_penalty (fairseq's `lenpen`); 0 ranks by log-prob, and matters only
        when `stop` lets lengths differ. Each result holds the raw log-prob.
        """
        width, length = _count("width", width, 1), _count("length", length, 1)
        alpha = _real("length_penalty", length_penalty, 0.0, low_open=False)
        stops = self._stops(stop)
        ends = set() if stops is None else {int(t) for t in stops}
        cur = self._start(prime, state, None)
        if cur.batch != 1:
            raise SampleError(f"beam search starts from one sequence; the prefix or state "
                              f"has {cur.batch} rows")
        V = self.vocab
        tokens, scores = np.zeros((1, 0), dtype=np.int64), np.zeros(1)
        finished: list[Hypothesis] = []
        for s in range(length):
            flat = (scores[:, None] + cur.logp).ravel()
            order = np.argsort(-flat, kind="stable")
            keep = []
            for idx in order[np.isfinite(flat[order])]:   # -inf: an impossible sequence
                if idx % V in ends:
                    finished.append(Hypothesis(np.append(tokens[idx // V], idx % V),
                                               flat[idx]))
                    continue
                keep.append(idx)
                if len(keep) == width:
                    break
            if not keep:
                break
            keep = np.array(keep)
            tokens = np.concatenate([tokens[keep // V], (keep % V)[:, None]], axis=1)
            scores = flat[keep]
            if s < length - 1:
                cur = self.step(cur.take(keep // V), keep % V)
        finished += [Hypothesis(t, lp) for t, lp in zip(tokens, scores)]
        ranked = sorted(finished, key=lambda h: -h.logprob / len(h.ids) ** alpha)
        return [Hypothesis(np.array(h.ids, dtype=np.int64), float(h.logprob))
                for h in ranked[:width]]
