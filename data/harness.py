"""The reference harness's validation set, beside data/stream.py's fixed one: the batches GaLore's
`torchrun_main.py` (`evaluate_model`) evaluates, whose perplexity the paper reports.

    batches = build_harness_val_batches(cfg.data, tokenizer, rank=r, world_size=w, batch_size=b)

What it reproduces, one rank of W:

- **Order.** The validation documents shuffled with seed 42 and dealt to the ranks. Streamed
  sources (c4, openwebtext, local files) go exactly through the harness's pipeline:
  `IterableDataset.shuffle(seed=42)` (datasets' default buffer of 1,000 documents) then
  `datasets.distributed.split_dataset_by_node`. For C4 that is the harness's order wherever
  datasets shuffles the same shards the same way (the harness loads "c4"/"en", the alias of the
  "allenai/c4" files read here; the shuffle algorithm is datasets', so the same datasets version
  gives the same order). The in-memory splits (the embedded corpus, token shards) have no
  streaming order to follow: their order is numpy's `default_rng(42)` permutation of the
  documents, rank r taking positions r, r+W, ... of it (what split_dataset_by_node does to a
  stream whose shards do not divide among the ranks). `harness_order` computes it.
- **Sequences.** Each document as training makes it (data.packing: false, the harness's: truncated
  and padded to data.seq_len, eos last; packed otherwise).
- **Batches and the stop.** Consecutive batches of `batch_size` sequences (train.micro_batch, the
  harness's per-device batch); before each batch the rank stops once it has evaluated more than
  data.val_tokens non-pad tokens, counting its own tokens times W (the harness's
  `evaluated_on_tokens`), so each rank evaluates about val_tokens / W. A split that runs out first
  ends with a smaller batch (where the harness would crash). `harness_groups` is the rule.

The loss over these batches (the mean of batch means divided by one batch more than it ran) is
training/evaluation.py's `harness_loss`. With data.val_selection the documents are those of the
reported half only (even file positions, as build_val_batches' part="report") and the budget is
half of data.val_tokens; that is available for the in-memory splits only (a streamed split's file
positions are gone once it is shuffled), which the config checks.
"""
from __future__ import annotations

import itertools
from typing import Iterable, Iterator, Sequence

import numpy as np

from configs import UserError
from data.config import DataConfig
from data.order import check_ranks
from data.sequences import Document, build_sequences
from data.sources import open_stream
from data.stream import (_text_blocks, _tokenize_block, collate, embedded_tokenized, token_shards,
                         val_spec)
from data.tokenizer import DocumentEncoder, tokenizer_fingerprint

HARNESS_SEED = 42          # torchrun_main.py's `val_data.shuffle(seed=42)`
IN_MEMORY = ("embedded", "tokens")


def harness_order(documents: int | Sequence[int], *, rank: int = 0, world_size: int = 1,
                  seed: int = HARNESS_SEED) -> np.ndarray:
    """The indices of the documents this rank evaluates, in order: `documents` (a count, or the
    indices to shuffle) permuted by numpy's default_rng(seed), then every W-th from position r."""
    check_ranks(rank, world_size)
    indices = np.arange(documents) if isinstance(documents, (int, np.integer)) else np.asarray(documents)
    return indices[np.random.default_rng(seed).permutation(len(indices))][rank::world_size]


def harness_groups(sequences: Iterable, batch_size: int, token_budget: int, world_size: int = 1) -> list[list]:
    """The batches the harness evaluates: consecutive groups of `batch_size` sequences (anything
    with `n_tokens`, its non-pad tokens), taking one more group while at most `token_budget`
    tokens were evaluated so far, each group counting world_size x its tokens."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    groups, evaluated = [], 0
    remaining = iter(sequences)
    while evaluated <= token_budget:
        group = list(itertools.islice(remaining, batch_size))
        if not group:
            break
        groups.append(group)
        evaluated += world_size * sum(seq.n_tokens for seq in group)
    return groups


def _in_memory_documents(cfg: DataConfig, tokenizer, encoder: DocumentEncoder, rank: int,
                         world_size: int) -> tuple[Iterator[Document], str]:
    if cfg.source == "embedded":
        split = embedded_tokenized(encoder, tokenizer_fingerprint(tokenizer))["val"]
        where = "the embedded corpus's validation split"
    else:
        split = token_shards(cfg.val_path, tokenizer, "data.val_path")
        where = f"the token shards in {cfg.val_path}"
    kept = np.arange(0, len(split), 2) if cfg.val_selection else len(split)  # the reported half
    order = harness_order(kept, rank=rank, world_size=world_size)
    return (Document(0, position, split.document(int(i))) for position, i in enumerate(order)), where


def _streamed_documents(cfg: DataConfig, encoder: DocumentEncoder, rank: int,
                        world_size: int) -> tuple[Iterator[Document], str]:
    from datasets.distributed import split_dataset_by_node

    spec = val_spec(cfg)
    stream = split_dataset_by_node(open_stream(spec).shuffle(seed=HARNESS_SEED), rank=rank, world_size=world_size)

    def documents() -> Iterator[Document]:
        for first_index, texts in _text_blocks(stream, spec):
            yield from _tokenize_block(encoder, 0, first_index, texts)
    return documents(), spec.describe()


def build_harness_val_batches(cfg: DataConfig, tokenizer, *, rank: int, world_size: int, batch_size: int,
                              vocab_limit: int | None = None) -> list[dict]:
    """This rank's harness validation batches ({"input_ids", "labels"}, labels -100 on padding):
    see the module docstring."""
    check_ranks(rank, world_size)
    if cfg.val_selection and cfg.source not in IN_MEMORY:
        raise ValueError("the harness's validation set with data.val_selection needs an in-memory split")
    encoder = DocumentEncoder(tokenizer, vocab_limit)
    if cfg.source in IN_MEMORY:
        documents, where = _in_memory_documents(cfg, tokenizer, encoder, rank, world_size)
    else:
        documents, where = _streamed_documents(cfg, encoder, rank, world_size)
    budget = -(-cfg.val_tokens // 2) if cfg.val_selection else cfg.val_tokens
    sequences = build_sequences(documents, seq_len=cfg.seq_len, packing=cfg.packing, eos_id=encoder.eos_id,
                                pad_id=encoder.pad_id)
    groups = harness_groups(sequences, batch_size, budget, world_size)
    if not groups:
        raise UserError(f"no validation sequences for rank {rank} of {world_size} from {where} (harness order)")
    return [collate(group, encoder) for group in groups]
