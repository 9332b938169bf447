"""From text to the arrays a cell trains on: vocabularies, truncated-BPTT chunks, one-hot.

    corpus = stdlib_corpus()                        # or shakespeare_corpus(), abc_tunes()
    vocab = Vocab.from_text(corpus.text)            # sorted characters
    train, val = split(vocab.encode(corpus.text), val_fraction=0.1)
    for x_ids, y_ids in tbptt_batches(train, batch=32, steps=100):
        x = one_hot(x_ids, len(vocab))              # (T, B, V) float32; targets y_ids (T, B)

Input: text (or tokens) and id streams. Output: int32 id arrays and time-major float
arrays `(T, B, features)`, the layout every cell takes. `tbptt_batches` keeps char-rnn's
stream layout, so a state carried from one chunk to the next continues the same text.
Small synthetic tasks (made here, seeded) serve the many-to-one and one-to-many examples.
The corpora live in `corpora.py` and are re-exported, so `rnndsl.train.data` is the one place
to import from.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..core.numbers import is_whole
from .corpora import (Corpus, DataError, PackageMissingError, abc_tunes, normal_tune,
                      shakespeare_corpus, stdlib_corpus)

__all__ = ["Corpus", "DataError", "PackageMissingError", "stdlib_corpus", "shakespeare_corpus",
           "abc_tunes", "normal_tune", "Vocab", "split", "tbptt_batches", "TBPTTBatches",
           "one_hot", "token_feed", "PAD", "SequenceSet", "GenerationSet", "most_frequent_task",
           "parity_task", "sine_task"]

ID_DTYPE = np.int32
_JSON_FORMAT = "rnndsl.vocab/1"


def _code_points(text: str) -> np.ndarray:
    """A str's code points as uint32, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")


def _show(token: str) -> str:
    """A token as a message shows it: repr plus its code point, so '\\t' is not a mystery."""
    if len(token) == 1:
        return f"{token!r} (U+{ord(token):04X})"
    return repr(token)


class Vocab:
    """An ordered list of tokens (characters, or any strings) and their integer ids.

    Ids are positions in `tokens`. `fallback`, when given, is a token of the vocabulary
    that stands for everything outside it when encoding; without one, encoding an unknown
    token is an error that names it and its position, so a checkpoint used on the wrong
    text fails loudly instead of training on garbage.
    """

    def __init__(self, tokens: Sequence[str], fallback: str | None = None):
        if not isinstance(tokens, Iterable):     # (a hand-edited checkpoint's `5`)
            raise DataError(f"Vocab: tokens must be a sequence of str, got "
                            f"{type(tokens).__name__}")
        tokens = tuple(tokens)
        for i, token in enumerate(tokens):
            if not isinstance(token, str) or not token:
                raise DataError(f"Vocab: token {i} is {token!r}; expected a non-empty str")
        if len(set(tokens)) != len(tokens):
            twice = sorted({t for t in tokens if tokens.count(t) > 1})
            raise DataError(f"Vocab: tokens must be distinct, but {', '.join(map(_show, twice))}"
                            " occur more than once")
        if not tokens:
            raise DataError("Vocab: no tokens; expected at least one (was the text empty?)")
        if fallback is not None and fallback not in tokens:
            raise DataError(f"Vocab: fallback {_show(fallback)} is not one of the tokens; "
                            "add it to the tokens or use Vocab.from_text(..., fallback=...)")
        self.tokens = tokens
        self.fallback = fallback
        self._ids = {token: i for i, token in enumerate(tokens)}
        self._chars = all(len(t) == 1 for t in tokens)
        if self._chars:
            points = np.array([ord(t) for t in tokens], dtype=np.uint32)
            self._point_order = np.argsort(points)
            self._sorted_points = points[self._point_order]

    @classmethod
    def from_text(cls, text: str, min_count: int = 1, fallback: str | None = None) -> Vocab:
        """The sorted set of a text's characters; those seen fewer than `min_count` times
        are left out (they then encode as `fallback`, which is added if the text lacks it)."""
        if not isinstance(text, str):
            raise DataError(f"Vocab.from_text: expected a str, got {type(text).__name__}; "
                            "for a list of tokens use Vocab.from_tokens")
        return cls.from_tokens(text, min_count, fallback)

    @classmethod
    def from_tokens(cls, tokens: Iterable[str], min_count: int = 1,
                    fallback: str | None = None) -> Vocab:
        """The sorted set of a token sequence (e.g. ABC symbols), as `from_text` for chars."""
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise DataError(f"min_count must be an int >= 1, got {min_count!r}")
        if isinstance(tokens, str):         # code points, counted in C: 10 MB in a second
            points, counts = np.unique(_code_points(tokens), return_counts=True)
            counted = dict(zip(map(chr, points.tolist()), counts.tolist()))
        else:
            counted = collections.Counter(tokens)
        kept = {t for t, n in counted.items() if n >= min_count}
        if len(kept) < len(counted) and fallback is None:
            raise DataError(f"min_count={min_count} leaves out {len(counted) - len(kept)} "
                            "tokens; give a fallback token for them, e.g. fallback='?'")
        if fallback is not None:
            kept.add(fallback)
        return cls(sorted(kept), fallback)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def __eq__(self, other) -> bool:
        return (isinstance(other, Vocab) and self.tokens == other.tokens
                and self.fallback == other.fallback)

    def __repr__(self) -> str:
        return f"Vocab({len(self.tokens)} tokens, fallback={self.fallback!r})"

    def encode(self, text: str | Sequence[str]) -> np.ndarray:
        """Ids (int32, 1-D) of a text's characters or of a sequence of tokens."""
        if isinstance(text, str) and not self._chars:
            raise DataError("Vocab.encode: this vocabulary has multi-character tokens, so a "
                            "str is ambiguous; pass the sequence of tokens instead")
        if isinstance(text, str):           # vectorised: a sorted table of code points
            points = _code_points(text)
            at = np.minimum(np.searchsorted(self._sorted_points, points),
                            len(self.tokens) - 1)
            known = self._sorted_points[at] == points
            ids = self._point_order[at].astype(ID_DTYPE)
        else:
            text = list(text)
            known = np.fromiter((t in self._ids for t in text), dtype=bool, count=len(text))
            ids = np.fromiter((self._ids.get(t, 0) for t in text), dtype=ID_DTYPE,
                              count=len(text))
        if known.all():
            return ids
        if self.fallback is None:
            where = int(np.argmin(known))
            raise DataError(
                f"Vocab.encode: {_show(text[where])} at position {where} is not in the "
                f"vocabulary of {len(self)} tokens; build the vocabulary from this text, "
                "or give one a fallback token (Vocab.from_text(text, fallback='?'))")
        ids[~known] = self._ids[self.fallback]
        return ids

    def decode(self, ids) -> str:
        """The text of a 1-D sequence of ids (tokens joined with nothing between them)."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise DataError(f"Vocab.decode: expected a 1-D array of integer ids, got shape "
                            f"{ids.shape} and dtype {ids.dtype}")
        ids = ids.astype(np.intp)
        bad = np.flatnonzero((ids < 0) | (ids >= len(self.tokens)))
        if bad.size:
            raise DataError(f"Vocab.decode: id {int(ids[bad[0]])} at position {int(bad[0])} "
                            f"is out of range; ids run from 0 to {len(self.tokens) - 1}")
        if self._chars:
            points = np.array([ord(t) for t in self.tokens], dtype="<u4")[ids]
            return points.tobytes().decode("utf-32-le", errors="surrogatepass")
        return "".join(self.tokens[i] for i in ids.tolist())

    def to_json(self) -> str:
        """The vocabulary as JSON, for a checkpoint: ids must mean the same when reloaded."""
        return json.dumps({"format": _JSON_FORMAT, "tokens": list(self.tokens),
                           "fallback": self.fallback}, ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        """A vocabulary saved by `to_json`."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise DataError(f"Vocab.from_json: not JSON ({exc}); expected the output of "
                            "Vocab.to_json()") from None
        if not isinstance(data, dict) or data.get("format") != _JSON_FORMAT:
            raise DataError(f"Vocab.from_json: expected an object with format "
                            f"'{_JSON_FORMAT}' (from Vocab.to_json()), got {str(data)[:80]}")
        return cls(data.get("tokens", ()), data.get("fallback"))


def val_size(n: int, val_fraction: float) -> int:
    """How many of n items `split` holds out for validation."""
    return int(round(n * val_fraction))


def split(ids, val_fraction: float = 0.1):
    """(train, val): the stream's head and its contiguous tail of `val_fraction` of it.

    A contiguous tail (not random positions) keeps validation text unseen by training,
    even through a character model's context.
    """
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise DataError(f"split: val_fraction must be a number in [0, 1), got {val_fraction!r}")
    n = len(ids)
    n_val = val_size(n, val_fraction)
    if (val_fraction > 0 and n_val == 0) or n_val >= n:
        raise DataError(f"split: a stream of {n} items cannot give a non-empty train and "
                        f"validation part with val_fraction={val_fraction}; use more data")
    return ids[:n - n_val], ids[n - n_val:]


@dataclass(frozen=True)
class TBPTTBatches:
    """Chunks of an id stream laid out as char-rnn lays it out; iterate for (x, y).

    The stream's first `batch * length + 1` ids are cut into `batch` contiguous rows of
    `length`; chunk k holds steps [k*steps, (k+1)*steps) of every row as `(T, B)` arrays,
    and y is x shifted by one id in the stream. Row b of chunk k+1 continues row b of
    chunk k, so a cell's final state from chunk k is the right initial state for k+1.
    """

    x_rows: np.ndarray
    y_rows: np.ndarray
    steps: int
    drop_last: bool

    @property
    def length(self) -> int:
        """Steps per row over the whole stream."""
        return self.x_rows.shape[1]

    def __len__(self) -> int:
        full, rest = divmod(self.length, self.steps)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for k in range(len(self)):
            cols = slice(k * self.steps, (k + 1) * self.steps)
            yield (np.ascontiguousarray(self.x_rows[:, cols].T),
                   np.ascontiguousarray(self.y_rows[:, cols].T))


def _positive_int(name: str, value) -> int:
    if not is_whole(value, 1):
        raise DataError(f"tbptt_batches: {name} must be a positive int, got {value!r}")
    return int(value)


def tbptt_batches(ids, batch: int, steps: int, drop_last: bool = False) -> TBPTTBatches:
    """Truncated-BPTT chunks (x_ids (T, B), y_ids (T, B)) of a 1-D id stream, in order.

    T is `steps`, except for a shorter last chunk (any T suits a cell); `drop_last=True`
    leaves that one out. The ids after the last full row (fewer than `batch`) are unused.
    """
    batch, steps = _positive_int("batch", batch), _positive_int("steps", steps)
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"tbptt_batches: expected a 1-D array of integer ids, got shape "
                        f"{ids.shape} and dtype {ids.dtype}")
    length = (len(ids) - 1) // batch
    if length < 1 or (drop_last and length < steps):
        need = batch * (steps if drop_last else 1) + 1
        raise DataError(f"tbptt_batches: a stream of {len(ids)} ids is too short for "
                        f"batch={batch}, steps={steps}{', drop_last=True' if drop_last else ''}"
                        f"; it needs at least {need} ids: use a smaller batch or more data")
    x_rows = ids[:batch * length].reshape(batch, length)
    y_rows = ids[1:batch * length + 1].reshape(batch, length)
    return TBPTTBatches(x_rows, y_rows, steps, drop_last)


def one_hot(ids, V: int, dtype=np.float32) -> np.ndarray:
    """`(..., V)` array with a one at each id's position: ids (T, B) -> inputs (T, B, V)."""
    if isinstance(V, bool) or not isinstance(V, (int, np.integer)) or V < 1:
        raise DataError(f"one_hot: V must be a positive int (the vocabulary size), got {V!r}")
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"one_hot: expected integer ids, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= V)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"one_hot: id {int(ids[where])} at index {where} is out of range "
                        f"for V={V}; ids must lie in [0, {V})")
    out = np.zeros(ids.shape + (int(V),), dtype=dtype)
    np.put_along_axis(out, ids[..., None].astype(np.intp), 1, axis=-1)
    return out


def token_feed(spec, input_name: str, V: int, dtype=np.float32):
    """ids (T, B) -> what input `input_name` of a cell with `spec` takes: the ids
    themselves for an `input token x[V]` (its kernels gather weight columns by id),
    else one-hot rows (T, B, V) in `dtype`."""
    decl = next(d for d in spec.inputs if d.name == input_name)
    if decl.token:
        return lambda ids: ids
    return lambda ids: one_hot(ids, V, dtype)


PAD = -1   # the id of padding steps in SequenceSet.ids


@dataclass(frozen=True)
class SequenceSet:
    """A many-to-one task: variable-length sequences, one label each, padded time-major.

    x is (T, B, F) with zero vectors after each sequence's end; ids (T, B) holds the
    symbols with PAD (-1) there. A many-to-one model reads its output at step
    lengths[b] - 1: `last_mask` marks those steps and `step_labels` repeats each label
    over time, so softmax_cross_entropy(logits, step_labels, mask=last_mask) is its loss.
    """

    x: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    num_classes: int

    @property
    def mask(self) -> np.ndarray:
        """(T, B) booleans: True on the steps that belong to a sequence."""
        return np.arange(self.x.shape[0])[:, None] < self.lengths[None, :]

    @property
    def last_mask(self) -> np.ndarray:
        """(T, B) booleans: True only on each sequence's last step."""
        return np.arange(self.x.shape[0])[:, None] == (self.lengths - 1)[None, :]

    @property
    def step_labels(self) -> np.ndarray:
        """(T, B) int32: each sequence's label at every step."""
        return np.broadcast_to(self.labels[None, :], self.x.shape[:2]).astype(ID_DTYPE)


def _task_args(n: int, min_len: int, max_len: int, symbols: int = 2) -> None:
    for name, value, low in (("n", n, 1), ("min_len", min_len, 1), ("symbols", symbols, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"{name} must be an int >= {low}, got {value!r}")
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) \
            or max_len < min_len:
        raise DataError(f"max_len must be an int >= min_len={min_len}, got {max_len!r}")


def _sequence_set(rows: np.ndarray, lengths: np.ndarray, labels: np.ndarray, symbols: int,
                  num_classes: int, dtype) -> SequenceSet:
    ids = rows.T.astype(ID_DTYPE)                                  # (T, B)
    valid = np.arange(ids.shape[0])[:, None] < lengths[None, :]
    ids[~valid] = PAD
    x = one_hot(np.where(valid, ids, 0), symbols, dtype) * valid[..., None]
    return SequenceSet(x.astype(dtype), ids, lengths.astype(ID_DTYPE),
                       labels.astype(ID_DTYPE), num_classes)


def most_frequent_task(n: int, symbols: int = 4, min_len: int = 5, max_len: int = 20,
                       seed: int = 0, dtype=np.float32) -> SequenceSet:
    """Which symbol occurs most often in a sequence? (many-to-one, `symbols` classes)

    Lengths are uniform in [min_len, max_len]; sequences whose most frequent symbol is
    tied are drawn again, so every label is well defined. x is one-hot (F = symbols).
    """
    _task_args(n, min_len, max_len, symbols)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    rows = np.empty((n, max_len), dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        rows[todo] = rng.integers(0, symbols, size=(todo.size, max_len))
        valid = np.arange(max_len)[None, :] < lengths[todo, None]
        counts = np.stack([((rows[todo] == s) & valid).sum(axis=1) for s in range(symbols)], 1)
        tied = (counts == counts.max(axis=1, keepdims=True)).sum(axis=1) > 1
        todo = todo[tied]
    counts = np.stack([((rows == s) & (np.arange(max_len) < lengths[:, None])).sum(1)
                       for s in range(symbols)], 1)
    return _sequence_set(rows, lengths, counts.argmax(axis=1), symbols, symbols, dtype)


def parity_task(n: int, min_len: int = 2, max_len: int = 12, seed: int = 0,
                dtype=np.float32) -> SequenceSet:
    """Is the number of ones in a bit sequence odd? (many-to-one, 2 classes, x one-hot F=2)

    The classic hard case for gradients through time: the label depends on every step.
    """
    _task_args(n, min_len, max_len)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    rows = rng.integers(0, 2, size=(n, max_len))
    rows[np.arange(max_len)[None, :] >= lengths[:, None]] = 0
    return _sequence_set(rows, lengths, rows.sum(axis=1) % 2, 2, 2, dtype)


@dataclass(frozen=True)
class GenerationSet:
    """A one-to-many task: one input vector per example, a target sequence from it.

    inputs (B, F); targets (T, B, 1). `sequence_inputs` lays the vectors out in time for
    a cell: at the first step only ("first", the lecture's one-to-many) or at every step.
    """

    inputs: np.ndarray
    targets: np.ndarray
    frequency: np.ndarray
    phase: np.ndarray

    def sequence_inputs(self, mode: str = "first") -> np.ndarray:
        """(T, B, F): the input vector at step 0 and zeros after, or at every step."""
        T = self.targets.shape[0]
        if mode == "every":
            return np.broadcast_to(self.inputs, (T,) + self.inputs.shape).copy()
        if mode != "first":
            raise DataError(f"sequence_inputs: mode must be 'first' or 'every', got {mode!r}")
        x = np.zeros((T,) + self.inputs.shape, dtype=self.inputs.dtype)
        x[0] = self.inputs
        return x


def sine_task(n: int, steps: int = 50, freq_range: tuple[float, float] = (1 / 40, 1 / 8),
              seed: int = 0, dtype=np.float32) -> GenerationSet:
    """Generate sin(2*pi*f*t + phase), t = 0..steps-1, from (f scaled, cos phase, sin phase).

    f (cycles per step) is uniform in `freq_range` and phase in [0, 2*pi). The input gives
    the frequency scaled to [-1, 1] and the phase as a point on the circle, so nearby
    phases have nearby inputs (a raw angle would jump at 2*pi).
    """
    for name, value in (("n", n), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DataError(f"sine_task: {name} must be a positive int, got {value!r}")
    low, high = freq_range
    if not 0 < low < high <= 0.5:
        raise DataError(f"sine_task: freq_range must satisfy 0 < low < high <= 0.5 cycles "
                        f"per step (0.5 is the Nyquist limit), got {freq_range!r}")
    rng = np.random.default_rng(seed)
    frequency = rng.uniform(low, high, size=n)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    scaled = 2 * (frequency - low) / (high - low) - 1
    inputs = np.stack([scaled, np.cos(phase), np.sin(phase)], axis=1)
    t = np.arange(steps)[:, None]
    targets = np.sin(2 * np.pi * frequency[None, :] * t + phase[None, :])[..., None]
    return GenerationSet(inputs.astype(dtype), targets.astype(dtype), frequency, phase)
