"""Documents -> fixed-length sequences, with a cursor that says exactly where the next one starts.

Two schemes (`data.packing`):

- padded (the reference harness): one sequence per document. Its tokens plus eos, truncated to
  `seq_len` keeping the eos last, then right-padded. This is what GaLore's
  `tokenizer(text, max_length=seq_len, truncation=True, padding="max_length")` gives with t5-base
  (whose tokenizer appends `</s>`); here the eos is appended explicitly so every tokenizer behaves
  the same. Labels are the ids with pad positions set to -100 (found by length, not by id, so a
  pad token that doubles as eos is handled).
- packed: documents, each followed by eos, are concatenated and cut into `seq_len` chunks; no
  padding, labels = input ids. A document may continue into the next sequence (and micro-batch).

The cursor (epoch, docs, offset) points at the next unread token: document number `docs` of
`epoch` in this rank's order, `offset` tokens into it (always 0 for padded sequences).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import numpy as np


@dataclass(frozen=True)
class Cursor:
    epoch: int = 0
    docs: int = 0
    offset: int = 0


class Document(NamedTuple):
    epoch: int
    index: int          # position in this rank's order for the epoch
    ids: np.ndarray     # token ids without special tokens


class TokenSequence(NamedTuple):
    ids: np.ndarray     # int64[seq_len]
    n_tokens: int       # real (non-pad) tokens: the first n_tokens positions
    after: Cursor       # where the next sequence starts


def build_sequences(documents: Iterable[Document], *, seq_len: int, packing: bool, eos_id: int,
                    pad_id: int, start_offset: int = 0) -> Iterator[TokenSequence]:
    """Sequences from documents in order. `start_offset`: tokens of the first document already
    used (a resumed packed stream); a final partial packed chunk is never emitted."""
    if packing:
        yield from _packed(documents, seq_len, eos_id, start_offset)
    else:
        yield from _padded(documents, seq_len, eos_id, pad_id)


def _with_eos(ids: np.ndarray, eos_id: int) -> np.ndarray:
    return np.concatenate([np.asarray(ids, dtype=np.int64), np.array([eos_id], dtype=np.int64)])


def _padded(documents, seq_len, eos_id, pad_id):
    for doc in documents:
        tokens = _with_eos(doc.ids[: seq_len - 1], eos_id)
        seq = np.full(seq_len, pad_id, dtype=np.int64)
        seq[: len(tokens)] = tokens
        yield TokenSequence(seq, len(tokens), Cursor(doc.epoch, doc.index + 1, 0))


def _packed(documents, seq_len, eos_id, start_offset):
    chunk = np.empty(seq_len, dtype=np.int64)
    filled = 0
    first = True
    for doc in documents:
        tokens = _with_eos(doc.ids, eos_id)
        pos = start_offset if first else 0
        first = False
        while pos < len(tokens):
            take = min(seq_len - filled, len(tokens) - pos)
            chunk[filled: filled + take] = tokens[pos: pos + take]
            filled += take
            pos += take
            if filled == seq_len:
                after = Cursor(doc.epoch, doc.index, pos) if pos < len(tokens) else Cursor(doc.epoch, doc.index + 1, 0)
                yield TokenSequence(chunk.copy(), seq_len, after)
                filled = 0
