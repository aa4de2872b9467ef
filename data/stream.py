"""Training micro-batches with resumable state, and the fixed validation batches.

Order of the training documents, per rank:

- embedded: the corpus is tokenized once per tokenizer and cached as flat .npy arrays (tokens +
  document offsets: one `data.shards.Shard` per split). Each epoch is a seeded permutation of the
  train documents; rank r takes documents r, r+W, r+2W, ... of it (the permutation is cut to a
  multiple of W so that ranks stay in step and never share a document within an epoch).
- local / c4 / openwebtext (streamed): `IterableDataset.shuffle(seed, buffer_size=data.shuffle_buffer)`
  then `datasets.distributed.split_dataset_by_node` (the reference harness's pipeline).
  Tokenization runs in `data.num_workers` DataLoader worker processes: the rank's stream is cut
  into blocks of BLOCK_DOCS documents and worker w tokenizes blocks w, w+N, ...; the DataLoader
  hands them back in block order, so the batches do not depend on the number of workers and the
  main process only packs ready token arrays. Every worker reads (but does not tokenize) the
  whole stream of its rank.

Epoch e of stream `seed_offset` uses shuffle seed `epoch_seed(data.shuffle_seed, seed_offset, e)`
(data/order.py): exactly `data.shuffle_seed` for the first epoch of the main stream (as in the
reference harness), a SeedSequence-derived seed otherwise, so extra streams (MoLS estimation
samples, seed_offset > 0) and later epochs never repeat another stream's order.

State: each yielded micro-batch comes with a small dict (ints and strings) that identifies the
stream and holds the cursor (epoch, docs, offset) after the batch. `build_train_stream(...,
state=that)` continues with exactly the next batch: embedded streams jump straight there;
streamed sources rebuild the same shuffled order and drop its first `docs` rows (they are read
and discarded again, so resuming deep into a large stream takes a while). Each rank has its own
state; a checkpoint must keep all of them.
"""
from __future__ import annotations

import itertools
import json
import warnings
from functools import partial
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from configs import IGNORE_INDEX, UserError, write_json_atomic
from data.config import DataConfig
from data.embedded import load_embedded_corpus, read_texts
from data.order import check_ranks, documents_per_rank, epoch_seed
from data.sequences import Cursor, Document, TokenSequence, build_sequences
from data.shards import Shard, ShardSet, check_tokenizer, shard_documents, token_dtype
from data.sources import StreamSpec, hub_spec, local_spec, open_stream, read_error
from data.tokenizer import DocumentEncoder, tokenizer_fingerprint

STATE_FORMAT = 1
BLOCK_DOCS = 256        # documents per tokenization job of a worker


# --------------------------------------------------------------------------------------------
# Embedded corpus, pre-tokenized
# --------------------------------------------------------------------------------------------

def embedded_tokenized(encoder: DocumentEncoder, fingerprint: str) -> dict[str, Shard]:
    """Both splits of the embedded corpus as token arrays (one Shard each: `<split>.tokens.npy`,
    `<split>.offsets.npy`), tokenized on first use and cached under `<corpus dir>/tokens-<tokenizer
    fingerprint>/` (info.json, written last, marks completion)."""
    corpus = load_embedded_corpus()
    directory = corpus.directory / f"tokens-{fingerprint}"
    if not (directory / "info.json").is_file():
        info = {"tokenizer": fingerprint, "documents": {}, "tokens": {}}
        for split in ("train", "val"):
            shard = Shard.from_documents(encoder.encode_all(read_texts(corpus.split_path(split))),
                                         token_dtype(encoder.vocab_size))
            shard.save(directory / split)
            info["documents"][split] = len(shard)
            info["tokens"][split] = shard.n_tokens
        write_json_atomic(directory / "info.json", info)
    return {split: Shard.load(directory / split) for split in ("train", "val")}


def _embedded_documents(split: Shard, start: Cursor, *, rank: int, world_size: int,
                        shuffle_seed: int, seed_offset: int) -> Iterator[Document]:
    per_rank = documents_per_rank(len(split), world_size, "the embedded corpus")
    for epoch in itertools.count(start.epoch):
        order = np.random.default_rng(epoch_seed(shuffle_seed, seed_offset, epoch)).permutation(len(split))
        mine = order[rank: per_rank * world_size: world_size]
        for index in range(start.docs if epoch == start.epoch else 0, per_rank):
            yield Document(epoch, index, split.document(int(mine[index])))


# --------------------------------------------------------------------------------------------
# Streamed sources: tokenization in DataLoader workers
# --------------------------------------------------------------------------------------------

def _text_column(batch: dict, spec: StreamSpec) -> list:
    if spec.text_field not in batch:
        raise UserError(f"{spec.describe()}: rows have no field {spec.text_field!r} "
                         f"(fields: {', '.join(batch)}); set data.text_field")
    return batch[spec.text_field]


def _rows(stream, spec: StreamSpec, batch_size: int) -> Iterator[dict]:
    """`stream.iter(batch_size)`, where the reader's failure on a bad row (pyarrow's ArrowInvalid,
    a UnicodeDecodeError: neither names the file) becomes a UserError naming the file and line
    (data.sources.read_error). Nothing is checked ahead: the files are scanned only after a failure."""
    batches = iter(stream.iter(batch_size=batch_size))
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except UserError:
            raise
        except Exception as err:
            problem = read_error(spec, err)
            if problem is None:
                raise
            raise problem from None
        yield batch


def _text_blocks(stream, spec: StreamSpec, first_index: int = 0) -> Iterator[tuple[int, list]]:
    """(index of the block's first document, its texts) for blocks of BLOCK_DOCS rows, from row
    `first_index` of the stream on (the rows before it are read and dropped).

    Rows are dropped here rather than with `IterableDataset.skip`: after `split_dataset_by_node`
    on a stream whose shards do not divide among the ranks, `skip(n)` skips n rows of the whole
    stream, not of this rank's part, so a resumed multi-rank run would repeat data. Uses `.iter()`
    rather than iterating the dataset: inside a DataLoader worker, datasets would otherwise give
    each worker only some of the shards, and every worker must see the whole stream (each
    tokenizes its own blocks of it)."""
    index = 0
    for batch in _rows(stream, spec, BLOCK_DOCS):
        texts = _text_column(batch, spec)
        if index + len(texts) <= first_index:
            index += len(texts)
            continue
        if index < first_index:
            texts, index = texts[first_index - index:], first_index
        yield index, texts
        index += len(texts)


def _tokenize_block(encoder: DocumentEncoder, epoch: int, first_index: int, texts: list) -> list[Document]:
    """Blank documents are dropped here but keep their place in the numbering."""
    kept = [(first_index + j, text) for j, text in enumerate(texts) if isinstance(text, str) and text.strip()]
    ids = encoder.encode([text for _, text in kept])
    return [Document(epoch, index, a) for (index, _), a in zip(kept, ids)]


class DocumentBlocks(IterableDataset):
    """One rank's shuffled document stream, endless, as lists of tokenized `Document`s.

    Blocks are consecutive runs of BLOCK_DOCS documents of the stream; in DataLoader worker w of
    N only blocks w, w+N, ... are tokenized and yielded (possibly empty, when all were blank).
    """

    def __init__(self, spec: StreamSpec, encoder: DocumentEncoder, start: Cursor, *, rank: int,
                 world_size: int, shuffle_seed: int, seed_offset: int, shuffle_buffer: int):
        super().__init__()
        self.spec, self.encoder, self.start = spec, encoder, start
        self.rank, self.world_size = rank, world_size
        self.shuffle_seed, self.seed_offset, self.shuffle_buffer = shuffle_seed, seed_offset, shuffle_buffer

    def __iter__(self) -> Iterator[list[Document] | UserError]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        try:
            for number, (epoch, first_index, texts) in enumerate(self._raw_blocks()):
                if number % n_workers == worker:
                    yield _tokenize_block(self.encoder, epoch, first_index, texts)
        except UserError as err:
            if info is None:
                raise
            # Handed over as an item: raised in a worker, the DataLoader would re-raise it in the
            # main process with the worker's traceback as its message. _streamed_documents raises it.
            yield err

    def _raw_blocks(self) -> Iterator[tuple[int, int, list]]:
        from datasets.distributed import split_dataset_by_node

        base = open_stream(self.spec)
        for epoch in itertools.count(self.start.epoch):
            stream = base.shuffle(seed=epoch_seed(self.shuffle_seed, self.seed_offset, epoch),
                                  buffer_size=self.shuffle_buffer)
            stream = split_dataset_by_node(stream, rank=self.rank, world_size=self.world_size)
            first_index = self.start.docs if epoch == self.start.epoch else 0
            empty = True
            for index, texts in _text_blocks(stream, self.spec, first_index):
                empty = False
                yield epoch, index, texts
            if empty and first_index == 0:
                raise UserError(f"{self.spec.describe()}: no documents for rank {self.rank} of {self.world_size}")


def _check_readable(spec: StreamSpec) -> None:
    """Open the source and read one row, so that a missing dataset, an unreadable file or a
    wrong text field fails here with a clear message rather than later inside a worker."""
    for batch in _rows(open_stream(spec), spec, 1):
        _text_column(batch, spec)
        return
    raise UserError(f"{spec.describe()}: no documents")


def _identity_collate(item):
    return item


def _streamed_documents(blocks: DocumentBlocks, num_workers: int) -> Iterator[Document]:
    if num_workers == 0:
        source = iter(blocks)
    else:
        source = iter(DataLoader(blocks, batch_size=None, num_workers=num_workers,
                                 collate_fn=_identity_collate, prefetch_factor=4))
    for block in source:
        if isinstance(block, UserError):  # a worker's (DocumentBlocks.__iter__)
            raise block
        yield from block


def _ordered_documents(spec: StreamSpec, encoder: DocumentEncoder) -> Iterator[Document]:
    """A split's documents in file order, tokenized in this process (validation)."""
    for first_index, texts in _text_blocks(open_stream(spec), spec):
        yield from _tokenize_block(encoder, 0, first_index, texts)


# --------------------------------------------------------------------------------------------
# Collation and the training stream
# --------------------------------------------------------------------------------------------

def collate(sequences: list[TokenSequence], encoder: DocumentEncoder) -> dict[str, torch.Tensor]:
    ids = encoder.limit(np.stack([s.ids for s in sequences]))
    labels = ids.copy()
    for row, seq in enumerate(sequences):
        labels[row, seq.n_tokens:] = IGNORE_INDEX
    return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}


class TrainStream:
    """Endless micro-batches for one rank: iterating yields `(batch, state_after)`.

    `batch` is {"input_ids", "labels"}: LongTensor[micro_batch, seq_len]. `state_after` (and the
    `state` property, the state to resume from now) is a flat dict of ints and strings: what the
    stream is (source, packing, seeds, rank, world_size, tokenizer fingerprint), checked on
    resume, and the cursor (epoch, docs, offset). The cursor counts documents and tokens, so a
    resumed stream may use another micro_batch. Iterating again (after a `break`) continues
    after the last batch handed out; `close()` stops the tokenizer workers.
    """

    def __init__(self, *, identity: dict, start: Cursor, documents: Callable[[Cursor], Iterator[Document]],
                 encoder: DocumentEncoder, seq_len: int, packing: bool, micro_batch: int, pack_window: int = 0,
                 taken: int = 0):
        self.identity = identity
        self.cursor, self.taken = start, taken
        self.pack_window = pack_window if packing else 0
        self._documents = documents
        self._encoder = encoder
        self.seq_len, self.packing, self.micro_batch = seq_len, packing, micro_batch
        self._running: Iterator | None = None

    @property
    def state(self) -> dict:
        return {**self.identity, "epoch": self.cursor.epoch, "docs": self.cursor.docs, "offset": self.cursor.offset,
                "taken": self.taken}

    def state_dict(self) -> dict:
        """Where the stream stands: the next batch is the first after this state."""
        return self.state

    def load_state_dict(self, state: dict) -> None:
        """Continue right after the batch that `state` was saved with (the same stream, checked)."""
        self.close()
        self.cursor, self.taken = _cursor_from_state(state, self.identity)

    def next_batch(self) -> dict:
        """The next micro-batch (starting the stream, and its workers, on first use)."""
        if self._running is None:
            iter(self)
        batch, _ = next(self._running)
        return batch

    def __iter__(self) -> Iterator[tuple[dict, dict]]:
        self.close()
        self._running = self._batches(self.cursor, self.taken)
        return self._running

    def close(self) -> None:
        """Stop the worker processes (a new iteration starts them again)."""
        if self._running is not None:
            self._running.close()
            self._running = None

    def _batches(self, start: Cursor, taken: int):
        documents = self._documents(start)
        try:
            sequences = build_sequences(documents, seq_len=self.seq_len, packing=self.packing,
                                        eos_id=self._encoder.eos_id, pad_id=self._encoder.pad_id,
                                        start_offset=start.offset)
            if self.pack_window:
                placed = _window_shuffled(sequences, start, taken, self.pack_window,
                                          (self.identity["shuffle_seed"], self.identity["seed_offset"]))
            else:
                placed = ((seq, seq.after, 0) for seq in sequences)
            while True:
                group = list(itertools.islice(placed, self.micro_batch))
                if len(group) < self.micro_batch:  # sources re-epoch forever; this would be a bug
                    raise RuntimeError("the document stream ended")
                batch = collate([seq for seq, _, _ in group], self._encoder)
                _, self.cursor, self.taken = group[-1]
                yield batch, self.state
        finally:
            documents.close()  # shuts the DataLoader workers down


def _window_shuffled(sequences: Iterator[TokenSequence], start: Cursor, taken: int, window: int, seeds: tuple):
    """Packed sequences in a seeded random order within consecutive windows of `window` sequences,
    so a micro-batch draws from many documents instead of a few consecutive ones. Yields
    (sequence, the window's start cursor, sequences of the window handed out so far): rebuilding
    the window from its start and skipping `taken` resumes exactly. The order of a window depends
    only on the seeds and where the window starts."""
    while True:
        block = list(itertools.islice(sequences, window))
        if not block:
            return
        order = np.random.default_rng([*seeds, start.epoch, start.docs, start.offset]).permutation(len(block))
        for i in range(taken, len(block)):
            yield block[order[i]], start, i + 1
        start, taken = block[-1].after, 0


def _stream_identity(cfg: DataConfig, fingerprint: str, *, rank: int, world_size: int, seed_offset: int) -> dict:
    identity = {"format": STATE_FORMAT, "source": cfg.source, "packing": int(cfg.packing),
                "shuffle_seed": cfg.shuffle_seed, "seed_offset": seed_offset,
                "rank": rank, "world_size": world_size, "tokenizer": fingerprint}
    if cfg.packing:
        identity["pack_window"] = cfg.pack_window
    return identity


def reshard_states(states: list[dict], world_size: int) -> list[dict]:
    """The per-rank states of one stream saved by len(states) ranks, for `world_size` ranks: the
    same global position, so the resumed run neither repeats nor skips a document.

    Exact for unpacked sequences (`data.packing: false`, the paper's), where every rank takes one
    document per sequence and all ranks stand at the same document: position docs x N of the
    epoch's order becomes docs x N / M per rank (N x docs must divide by M). A rank's document k
    is position k x W + r, so the ranks of the new run continue the same order. (Near the end of
    an epoch, the at most M - 1 documents by which floor(n / M) x M and floor(n / N) x N differ
    are the epoch's remainder, which one run reads and the other not.) Packed sequences are cut
    from each rank's own documents, so they cannot be dealt to another number of ranks: a
    UserError says to resume on the saved number of ranks."""
    saved = len(states)
    if not all(isinstance(state, dict) for state in states):
        raise UserError("the checkpoint holds no data position for some rank: resume on "
                        f"{saved} ranks, as it was saved")
    if not all({"epoch", "docs", "offset"} <= set(state) for state in states):
        raise UserError(f"the checkpoint was saved by {saved} ranks and this run has {world_size}: this data "
                        f"stream's position cannot move to another number of ranks; resume on {saved} ranks")
    if any(state.get("packing") for state in states):
        raise UserError(f"the checkpoint was saved by {saved} ranks and this run has {world_size}: packed "
                        f"sequences (data.packing: true) are cut from each rank's own documents, so the data "
                        f"position cannot move to another number of ranks; resume on {saved} ranks")
    positions = {(state["epoch"], state["docs"], state["offset"]) for state in states}
    if len(positions) != 1:
        raise UserError(f"the {saved} saved ranks stand at different data positions ({sorted(positions)}): "
                        f"resume on {saved} ranks")
    epoch, docs, _ = positions.pop()
    if docs * saved % world_size:
        raise UserError(f"the checkpoint's data position ({docs * saved} documents of epoch {epoch} over "
                        f"{saved} ranks) does not divide among {world_size} ranks: resume on {saved} ranks "
                        f"or on a number of ranks that divides {docs * saved}")
    return [{**states[0], "rank": rank, "world_size": world_size, "docs": docs * saved // world_size,
             "offset": 0, "taken": 0} for rank in range(world_size)]


def _cursor_from_state(state: dict, identity: dict) -> tuple[Cursor, int]:
    if not isinstance(state, dict):
        raise ValueError(f"data state must be a dict saved from a TrainStream, got {type(state).__name__}")
    changed = [f"{key} was {state.get(key)!r}, now {value!r}" for key, value in identity.items()
               if state.get(key) != value]
    if changed:
        raise UserError("cannot continue the saved data stream exactly: " + "; ".join(changed))
    try:
        cursor = Cursor(int(state["epoch"]), int(state["docs"]), int(state["offset"]))
        taken = int(state.get("taken", 0))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"data state is missing its position (epoch, docs, offset): {state!r}") from None
    if min(cursor.epoch, cursor.docs, cursor.offset, taken) < 0 or (cursor.offset and not identity["packing"]):
        raise ValueError(f"data state has an invalid position: {state!r}")
    return cursor, taken


def token_shards(directory: str, tokenizer, what: str) -> ShardSet:
    """A shard directory made with this run's tokenizer (a UserError naming `what` otherwise)."""
    try:
        shards = ShardSet(directory)
        check_tokenizer(shards, tokenizer)
    except UserError:
        raise
    except ValueError as err:  # the reader's own checks: missing, unfinished or mismatched shards
        raise UserError(f"{what}: {err}") from None
    return shards


def train_spec(cfg: DataConfig) -> StreamSpec:
    if cfg.source == "local":
        return local_spec(cfg.path, split="train", data_format=cfg.format, text_field=cfg.text_field, what="data.path")
    if cfg.source in ("c4", "openwebtext"):
        return hub_spec(cfg.source, split="train", text_field=cfg.text_field)
    raise ValueError(f"data.source: unknown source {cfg.source!r} (embedded, local, c4 or openwebtext)")


def val_spec(cfg: DataConfig) -> StreamSpec:
    if cfg.source == "local":
        return local_spec(cfg.val_path, split="val", data_format=cfg.format, text_field=cfg.text_field,
                          what="data.val_path")
    if cfg.source in ("c4", "openwebtext"):
        return hub_spec(cfg.source, split="val", text_field=cfg.text_field)
    raise ValueError(f"data.source: unknown source {cfg.source!r} (embedded, local, c4 or openwebtext)")


def build_train_stream(cfg: DataConfig, tokenizer, *, rank: int, world_size: int, micro_batch: int,
                       seed_offset: int = 0, state: dict | None = None,
                       vocab_limit: int | None = None) -> TrainStream:
    """This rank's endless training micro-batches; `state` (from a previous stream's batch)
    continues right after that batch. `seed_offset` > 0 gives an independent order (extra
    samples that leave the training stream's position alone). `vocab_limit`: the model's
    vocabulary size when it is smaller than the tokenizer's (ids >= it become unk/eos)."""
    check_ranks(rank, world_size, seed_offset)
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be positive, got {micro_batch}")
    encoder = DocumentEncoder(tokenizer, vocab_limit)
    fingerprint = tokenizer_fingerprint(tokenizer)
    identity = _stream_identity(cfg, fingerprint, rank=rank, world_size=world_size, seed_offset=seed_offset)
    start, taken = (Cursor(), 0) if state is None else _cursor_from_state(state, identity)
    order = dict(shuffle_seed=cfg.shuffle_seed, seed_offset=seed_offset, rank=rank, world_size=world_size)
    if cfg.source == "embedded":
        split = embedded_tokenized(encoder, fingerprint)["train"]
        documents = partial(_embedded_documents, split, **order)
    elif cfg.source == "tokens":
        documents = partial(shard_documents, token_shards(cfg.path, tokenizer, "data.path"), **order)
    else:
        spec = train_spec(cfg)
        _check_readable(spec)

        def documents(start_at: Cursor) -> Iterator[Document]:
            blocks = DocumentBlocks(spec, encoder, start_at, shuffle_buffer=cfg.shuffle_buffer, **order)
            return _streamed_documents(blocks, cfg.num_workers)

    return TrainStream(identity=identity, start=start, documents=documents, encoder=encoder,
                       seq_len=cfg.seq_len, packing=cfg.packing, micro_batch=micro_batch,
                       pack_window=cfg.pack_window, taken=taken)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

VAL_PARTS = ("report", "selection")


def build_val_batches(cfg: DataConfig, tokenizer, *, rank: int, world_size: int, batch_size: int,
                      vocab_limit: int | None = None, part: str = "report") -> list[dict]:
    """The fixed validation set: validation documents in file order (no shuffle), the training
    sequence scheme, whole sequences until at least `data.val_tokens` real tokens (labels !=
    -100) are collected (or the split runs out). Cut into batches of `batch_size` (the last may
    be smaller); rank r keeps batches r, r+W, ... (it may get none when there are fewer batches
    than ranks). Every rank tokenizes the same documents, once. With `data.val_selection` the
    documents at even positions form `part="report"` and those at odd positions
    `part="selection"`, each up to half of `data.val_tokens`."""
    check_ranks(rank, world_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if part not in VAL_PARTS:
        raise ValueError(f"part must be one of {VAL_PARTS}, got {part!r}")
    encoder = DocumentEncoder(tokenizer, vocab_limit)
    if cfg.source == "embedded":
        split = embedded_tokenized(encoder, tokenizer_fingerprint(tokenizer))["val"]
        documents = (Document(0, i, split.document(i)) for i in range(len(split)))
        where = "the embedded corpus's validation split"
    elif cfg.source == "tokens":
        split = token_shards(cfg.val_path, tokenizer, "data.val_path")
        documents = (Document(0, i, split.document(i)) for i in range(len(split)))
        where = f"the token shards in {cfg.val_path}"
    else:
        spec = val_spec(cfg)
        documents = _ordered_documents(spec, encoder)
        where = spec.describe()
    budget = cfg.val_tokens
    if cfg.val_selection:
        keep = VAL_PARTS.index(part)
        documents = (doc for i, doc in enumerate(documents) if i % 2 == keep)
        where = f"the {part} half of {where}"
        budget = -(-cfg.val_tokens // 2)
    sequences, total = [], 0
    for seq in build_sequences(documents, seq_len=cfg.seq_len, packing=cfg.packing,
                               eos_id=encoder.eos_id, pad_id=encoder.pad_id):
        sequences.append(seq)
        total += seq.n_tokens
        if total >= budget:
            break
    if not sequences:
        raise UserError(f"no validation sequences from {where}")
    if total < budget:
        warnings.warn(f"data.val_tokens is {cfg.val_tokens:,} but {where} holds {total:,} tokens of validation "
                      f"targets: validation uses all of them", stacklevel=2)
    batches = [sequences[i: i + batch_size] for i in range(0, len(sequences), batch_size)]
    return [collate(group, encoder) for group in batches[rank::world_size]]


def describe_data(cfg: DataConfig, tokenizer) -> str:
    """Two lines for the run log: the data and the sequence scheme."""
    if cfg.source == "embedded":
        corpus = load_embedded_corpus()
        docs = corpus.manifest["documents"]
        info_path = corpus.directory / f"tokens-{tokenizer_fingerprint(tokenizer)}" / "info.json"
        tokens = ""
        if info_path.is_file():
            counts = json.loads(info_path.read_text())["tokens"]
            tokens = f", {counts['train']:,} / {counts['val']:,} tokens"
        where = (f"embedded corpus (Wikipedia lead sections, CC BY-SA 4.0 + News Articles, Dai 2017): "
                 f"{docs['train']:,} train / {docs['val']:,} val documents{tokens}; cache {corpus.directory}")
    elif cfg.source == "tokens":
        manifest = ShardSet(cfg.path).manifest
        where = (f"token shards {cfg.path} ({manifest['documents']:,} documents, {manifest['tokens']:,} tokens, "
                 f"from {manifest['source'].get('description', manifest['source'])}); validation: {cfg.val_path}")
    else:
        where = f"{train_spec(cfg).describe()}; validation: {val_spec(cfg).describe()}"
    scheme = ("packed (documents + eos concatenated, no padding)" if cfg.packing
              else "one document per sequence, truncated + padded (pad labels -100)")
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return (f"data: {cfg.source}: {where}\n"
            f"sequences: {cfg.seq_len} tokens, {scheme}; tokenizer {name} ({len(tokenizer):,} tokens, "
            f"eos {tokenizer.eos_token!r}, pad {tokenizer.pad_token!r}); shuffle seed {cfg.shuffle_seed}; "
            f"validation budget {cfg.val_tokens:,} tokens"
            + (" (half reported, half for selection: data.val_selection)" if cfg.val_selection else ""))
