"""data/: the embedded corpus, tokenizers, training streams (order, ranks, resume) and validation sets.

Offline and CPU-only. Most tests run on the committed assets (tests/assets: Wikipedia lead sections
and a 2k tokenizer, read as data.source: local); those marked `corpus` exercise the embedded
corpus itself (its build, split, licences, the embedded-8k tokenizer and the embedded stream) and
are skipped when its packages are not installed. The embedded corpus, the embedded-8k tokenizer
and its token arrays are cached in the repository's .cache/ (MOLS_CACHE), so only the first run
pays for building them.
"""
from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MOLS_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))

import pytest
import torch

from configs import UserError
from data.config import DataConfig
from data import (build_train_stream, build_val_batches, describe_data, get_tokenizer,
                  load_embedded_corpus)
from data.embedded import read_texts
from data.sources import StreamSpec, find_bad_line
from data.tokenizer import embedded_tokenizer_path

SEQ_LEN = 64
MICRO_BATCH = 4
ASSETS = Path(__file__).resolve().parent / "assets"


@pytest.fixture(scope="module")
def tokenizer():
    """The committed 2k byte-level BPE (the embedded tokenizers' recipe, trained on the assets)."""
    return get_tokenizer(str(ASSETS / "tokenizer"))


@pytest.fixture(scope="module")
def embedded_tokenizer():
    return get_tokenizer("embedded-8k")


@pytest.fixture(scope="module")
def texts():
    """Real documents for the local-file tests: short ones, so a few files hold many (the first 90:
    ~9k tokens, so 40 packed batches of 4 x 64 tokens start a second epoch)."""
    return [t for t in read_texts(ASSETS / "train.jsonl") if len(t) < 500][:120]


@pytest.fixture(scope="module")
def local_files(tmp_path_factory, texts):
    """The same documents as a C4 shard, JSON lines, plain text and parquet (train + val each)."""
    root = tmp_path_factory.mktemp("local")
    train, val = texts[:90], texts[90:]
    paths = {}
    for split, docs in (("train", train), ("validation", val)):
        c4 = root / "c4" / f"c4-{split}.00000-of-00001.json.gz"
        c4.parent.mkdir(exist_ok=True)
        with gzip.open(c4, "wt", encoding="utf-8") as f:
            for i, text in enumerate(docs):
                f.write(json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://x/{i}"}) + "\n")
        jsonl = root / "jsonl" / split / "docs.jsonl"
        jsonl.parent.mkdir(parents=True)
        jsonl.write_text("".join(json.dumps({"body": t}) + "\n" for t in docs), encoding="utf-8")
        text_dir = root / "text" / split
        text_dir.mkdir(parents=True)
        for k in range(3):  # several files, paragraphs separated by blank lines
            (text_dir / f"part{k}.txt").write_text("\n\n".join(docs[k::3]) + "\n", encoding="utf-8")
        paths[split] = {"c4": c4, "jsonl": jsonl, "text": text_dir}
    return paths


def embedded_cfg(**overrides) -> DataConfig:
    return DataConfig(**{"source": "embedded", "tokenizer": "embedded-8k", "seq_len": SEQ_LEN, "pack_window": 8,
                         **overrides})


def assets_cfg(**overrides) -> DataConfig:
    """The committed assets as a local source: 183 training and 130 validation documents."""
    return DataConfig(**{"source": "local", "path": str(ASSETS / "train.jsonl"), "val_path": str(ASSETS / "val.jsonl"),
                         "tokenizer": str(ASSETS / "tokenizer"), "seq_len": SEQ_LEN, "pack_window": 8,
                         "num_workers": 0, **overrides})


def local_cfg(local_files, kind: str, **overrides) -> DataConfig:
    settings = {"source": "local", "path": str(local_files["train"][kind]),
                "val_path": str(local_files["validation"][kind]), "tokenizer": str(ASSETS / "tokenizer"),
                "seq_len": SEQ_LEN, "shuffle_buffer": 32, "num_workers": 0, "pack_window": 8}  # small corpora
    if kind == "jsonl":
        settings["text_field"] = "body"
    return DataConfig(**{**settings, **overrides})


def take(stream, n: int) -> list[tuple[dict, dict]]:
    out = list(itertools.islice(iter(stream), n))
    stream.close()
    return out


def rows(batches) -> set[tuple[int, ...]]:
    return {tuple(row.tolist()) for batch, _ in batches for row in batch["input_ids"]}


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x[0]["input_ids"], y[0]["input_ids"]) and
                                    torch.equal(x[0]["labels"], y[0]["labels"]) for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------
# Embedded corpus and tokenizers
# --------------------------------------------------------------------------------------------

@pytest.mark.corpus
def test_embedded_corpus_has_thousands_of_documents_and_a_disjoint_validation_split():
    corpus = load_embedded_corpus()
    counts = corpus.manifest["documents"]
    assert counts["train"] > 10_000 and 100 < counts["val"] < 0.05 * counts["train"]
    train, val = set(read_texts(corpus.train_path)), list(read_texts(corpus.val_path))
    assert len(val) == counts["val"] and not train.intersection(val)
    licences = " ".join(s["licence"] for s in corpus.manifest["sources"])
    assert "CC BY-SA 4.0" in licences and "10.7910/DVN/GMFCTR" in licences
    assert load_embedded_corpus().directory == corpus.directory  # built once, then reused


def test_missing_corpus_package_tells_how_to_install(monkeypatch):
    import data.embedded as embedded
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="requirements-corpus.txt"):
        embedded.source_file(embedded.NEWS)


@pytest.mark.corpus
def test_embedded_tokenizer_is_deterministic_cached_and_has_eos_and_pad(embedded_tokenizer, tmp_path, monkeypatch):
    tokenizer = embedded_tokenizer
    assert tokenizer.eos_token == "</s>" and tokenizer.pad_token == "<pad>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and len(tokenizer) == 8000
    cached = embedded_tokenizer_path("embedded-8k").read_bytes()
    start = time.perf_counter()
    again = get_tokenizer("embedded-8k")
    assert time.perf_counter() - start < 2.0  # loaded from the cache, not retrained
    sample = "The quick brown fox jumps over the lazy dog in 2024."
    assert again(sample)["input_ids"] == tokenizer(sample)["input_ids"]
    assert tokenizer.decode(tokenizer(sample)["input_ids"]) == sample

    monkeypatch.setenv("MOLS_CACHE", str(tmp_path))  # train again from scratch: same bytes
    get_tokenizer("embedded-8k")
    assert embedded_tokenizer_path("embedded-8k").read_bytes() == cached


def test_local_tokenizer_directory_and_unknown_name(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    local = get_tokenizer(str(tmp_path / "tok"))
    assert local("Hello world")["input_ids"] == tokenizer("Hello world")["input_ids"]
    assert local.pad_token is not None and local.eos_token is not None
    with pytest.raises(ValueError, match="embedded-32k"):
        get_tokenizer(str(tmp_path / "no-such-tokenizer"))


# --------------------------------------------------------------------------------------------
# Training streams
# --------------------------------------------------------------------------------------------

@pytest.mark.corpus
def test_order_is_fixed_by_the_seed(embedded_tokenizer):
    tokenizer = embedded_tokenizer
    def first(cfg, **kw):
        return take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH, **kw), 3)

    reference = first(embedded_cfg())
    assert same_batches(reference, first(embedded_cfg()))
    assert not same_batches(reference, first(embedded_cfg(shuffle_seed=43)))
    assert not same_batches(reference, first(embedded_cfg(), seed_offset=1))  # independent extra samples


@pytest.mark.corpus
@pytest.mark.parametrize("packing", [False, True])
def test_embedded_ranks_get_disjoint_documents(embedded_tokenizer, packing):
    tokenizer = embedded_tokenizer
    cfg = embedded_cfg(packing=packing)
    streams = [build_train_stream(cfg, tokenizer, rank=r, world_size=2, micro_batch=MICRO_BATCH) for r in (0, 1)]
    rank0, rank1 = (take(s, 5) for s in streams)
    assert not rows(rank0) & rows(rank1)
    whole = take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH), 5)
    assert rows(rank0) != rows(whole)


def test_padded_sequences_ignore_exactly_the_padding(tokenizer):
    cfg = assets_cfg(seq_len=128)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    padded_rows = 0
    for batch, _ in take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=8), 4):
        ids, labels = batch["input_ids"], batch["labels"]
        assert ids.shape == labels.shape == (8, 128) and ids.dtype == labels.dtype == torch.long
        assert torch.equal(labels == -100, ids == pad)
        assert torch.equal(labels[labels != -100], ids[ids != pad])
        lengths = (ids != pad).sum(dim=1)
        assert all(ids[i, n - 1] == eos for i, n in enumerate(lengths.tolist()))  # each document ends with eos
        padded_rows += int((lengths < 128).sum())
    assert padded_rows > 0


def test_packed_sequences_have_no_padding(tokenizer):
    cfg = assets_cfg(packing=True)
    batches = take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH), 6)
    for batch, _ in batches:
        assert torch.equal(batch["labels"], batch["input_ids"])
        assert not (batch["input_ids"] == tokenizer.pad_token_id).any()
    eos_count = sum(int((b["input_ids"] == tokenizer.eos_token_id).sum()) for b, _ in batches)
    assert eos_count > 0  # document boundaries inside sequences


def test_ids_beyond_the_model_vocabulary_are_mapped_to_unk(tokenizer):
    cfg = assets_cfg(packing=True)
    limit = len(tokenizer) // 2  # half the vocabulary (4000 of embedded-8k's 8000 before the assets)
    plain = take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH), 2)
    limited = take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH,
                                      vocab_limit=limit), 2)
    for (a, _), (b, _) in zip(plain, limited):
        high = a["input_ids"] >= limit
        assert high.any() and b["input_ids"].max() < limit
        assert (b["input_ids"][high] == tokenizer.unk_token_id).all()
        assert torch.equal(b["input_ids"][~high], a["input_ids"][~high])


@pytest.mark.corpus
@pytest.mark.parametrize("packing", [False, True])
def test_embedded_stream_resumes_exactly(embedded_tokenizer, packing):
    tokenizer = embedded_tokenizer
    cfg = embedded_cfg(packing=packing)
    uninterrupted = take(build_train_stream(cfg, tokenizer, rank=1, world_size=2, micro_batch=MICRO_BATCH), 8)
    state = uninterrupted[4][1]
    # the state goes into checkpoints: plain JSON, and loadable with torch's weights_only
    buffer = io.BytesIO()
    torch.save({"data": state}, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)["data"]
    assert restored == json.loads(json.dumps(state))
    resumed = take(build_train_stream(cfg, tokenizer, rank=1, world_size=2, micro_batch=MICRO_BATCH,
                                      state=restored), 3)
    assert same_batches(resumed, uninterrupted[5:8])
    assert resumed[-1][1] == uninterrupted[7][1]


def test_stream_continues_after_break_and_across_epochs(tokenizer, local_files):
    cfg = local_cfg(local_files, "jsonl", packing=True)
    stream = build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH)
    uninterrupted = take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH), 40)
    assert uninterrupted[-1][1]["epoch"] >= 1  # 90 short documents: several epochs
    first = list(itertools.islice(iter(stream), 10))
    rest = take(stream, 30)  # a new iteration picks up after the last batch handed out
    assert same_batches(first + rest, uninterrupted)


@pytest.mark.corpus
def test_mismatched_state_is_refused(embedded_tokenizer):
    tokenizer = embedded_tokenizer
    state = take(build_train_stream(embedded_cfg(), tokenizer, rank=0, world_size=2, micro_batch=2), 1)[0][1]
    with pytest.raises(ValueError, match="world_size"):
        build_train_stream(embedded_cfg(), tokenizer, rank=0, world_size=4, micro_batch=2, state=state)


# --------------------------------------------------------------------------------------------
# Local files (streamed through datasets, tokenized in DataLoader workers)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["c4", "jsonl", "text"])
def test_local_formats_load_and_yield_batches(tokenizer, local_files, kind):
    cfg = local_cfg(local_files, kind)
    batches = take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH), 3)
    for batch, state in batches:
        assert batch["input_ids"].shape == (MICRO_BATCH, SEQ_LEN)
        assert state["source"] == "local"
    assert batches[-1][1]["docs"] == 3 * MICRO_BATCH  # padded: one document per sequence
    assert "local" in describe_data(cfg, tokenizer)


def test_local_ranks_get_disjoint_documents(tokenizer, local_files):
    cfg = local_cfg(local_files, "jsonl")
    rank0, rank1 = (take(build_train_stream(cfg, tokenizer, rank=r, world_size=2, micro_batch=MICRO_BATCH), 5)
                    for r in (0, 1))
    assert len(rows(rank0)) == len(rows(rank1)) == 5 * MICRO_BATCH
    assert not rows(rank0) & rows(rank1)


@pytest.mark.parametrize("packing", [False, True])
def test_local_stream_resumes_exactly(tokenizer, local_files, packing):
    cfg = local_cfg(local_files, "c4", packing=packing)
    n = 45
    uninterrupted = take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH), n)
    assert uninterrupted[6][1]["epoch"] == 0 and uninterrupted[40][1]["epoch"] >= 1
    for k in (6, 40):  # inside the first epoch, and in the second
        resumed = take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH,
                                          state=uninterrupted[k][1]), n - k - 1)
        assert same_batches(resumed, uninterrupted[k + 1:])


@pytest.mark.parametrize("rank", [0, 1])
def test_local_stream_resumes_exactly_on_every_rank(tokenizer, local_files, rank):
    """One file does not divide among 2 ranks: datasets then splits row by row, and its skip()
    would count rows of the whole stream; the resume must drop this rank's rows instead."""
    cfg = local_cfg(local_files, "c4", packing=False)
    uninterrupted = take(build_train_stream(cfg, tokenizer, rank=rank, world_size=2, micro_batch=MICRO_BATCH), 20)
    resumed = take(build_train_stream(cfg, tokenizer, rank=rank, world_size=2, micro_batch=MICRO_BATCH,
                                      state=uninterrupted[5][1]), 14)
    assert same_batches(resumed, uninterrupted[6:])


def test_worker_processes_do_not_change_the_batches(tokenizer, local_files):
    in_process = take(build_train_stream(local_cfg(local_files, "c4", packing=True), tokenizer,
                                         rank=0, world_size=1, micro_batch=MICRO_BATCH), 12)
    workers = take(build_train_stream(local_cfg(local_files, "c4", packing=True, num_workers=2), tokenizer,
                                      rank=0, world_size=1, micro_batch=MICRO_BATCH), 12)
    assert same_batches(in_process, workers)
    assert [s for _, s in in_process] == [s for _, s in workers]


def test_bad_local_input_is_a_clear_error(tokenizer, local_files, tmp_path):
    with pytest.raises(UserError, match="data.path"):
        build_train_stream(local_cfg(local_files, "c4", path=str(tmp_path / "missing.jsonl")), tokenizer,
                           rank=0, world_size=1, micro_batch=2)
    (tmp_path / "data.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match="data.format"):
        build_train_stream(local_cfg(local_files, "c4", path=str(tmp_path / "data.csv")), tokenizer,
                           rank=0, world_size=1, micro_batch=2)
    with pytest.raises(ValueError, match="text_field"):
        build_train_stream(local_cfg(local_files, "c4", text_field="content"), tokenizer,
                           rank=0, world_size=1, micro_batch=2)
    with pytest.raises(ValueError, match="data.val_path"):
        build_val_batches(local_cfg(local_files, "c4", val_path=None), tokenizer, rank=0, world_size=1, batch_size=2)


def test_hub_sources_offline_suggest_local_or_embedded(tokenizer):
    with pytest.raises(ValueError, match="data.source: local"):
        build_train_stream(DataConfig(source="c4", tokenizer="embedded-8k"), tokenizer,
                           rank=0, world_size=1, micro_batch=2)


def test_openwebtext_uses_nanogpt_split(tokenizer, texts, monkeypatch):
    import datasets
    full = datasets.Dataset.from_dict({"text": texts})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: full)  # stands in for the hub download
    cfg = DataConfig(source="openwebtext", tokenizer="embedded-8k", seq_len=SEQ_LEN, num_workers=0)
    val = build_val_batches(cfg, tokenizer, rank=0, world_size=1, batch_size=MICRO_BATCH)
    held_out = full.train_test_split(test_size=0.0005, seed=2357, shuffle=True)["test"]["text"]
    assert sum(len(b["input_ids"]) for b in val) == len(held_out) == 1
    train = take(build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=MICRO_BATCH), 25)
    assert not rows([(b, None) for b in val]) & rows(train)


# --------------------------------------------------------------------------------------------
# Validation batches
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("packing", [False, True])
def test_val_batches_are_fixed_budgeted_and_split_across_ranks(tokenizer, packing):
    cfg = assets_cfg(packing=packing, val_tokens=2000)
    whole = build_val_batches(cfg, tokenizer, rank=0, world_size=1, batch_size=3)
    again = build_val_batches(cfg, tokenizer, rank=0, world_size=1, batch_size=3)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(whole, again))
    counts = [int((row != -100).sum()) for b in whole for row in b["labels"]]
    assert sum(counts) >= 2000 and sum(counts) - counts[-1] < 2000  # whole sequences up to the budget
    parts = [build_val_batches(cfg, tokenizer, rank=r, world_size=2, batch_size=3) for r in (0, 1)]
    assert [len(p) for p in parts] == [len(whole[0::2]), len(whole[1::2])]
    sequences = lambda batches: [tuple(r.tolist()) for b in batches for r in b["input_ids"]]
    assert not set(sequences(parts[0])) & set(sequences(parts[1]))
    assert sorted(sequences(parts[0]) + sequences(parts[1])) == sorted(sequences(whole))


def test_local_val_batches_follow_file_order(tokenizer, local_files, texts):
    cfg = local_cfg(local_files, "c4", val_tokens=10**9)  # more than there is: the whole split
    val = build_val_batches(cfg, tokenizer, rank=0, world_size=1, batch_size=MICRO_BATCH)
    first = val[0]["input_ids"][0]
    expected = tokenizer(texts[90], add_special_tokens=False)["input_ids"][: SEQ_LEN - 1] + [tokenizer.eos_token_id]
    assert first[: len(expected)].tolist() == expected
    assert sum(len(b["input_ids"]) for b in val) == len(texts) - 90


def test_packed_sequences_are_shuffled_within_windows(tokenizer):
    """A window of packed sequences comes out in a seeded random order, not as consecutive chunks
    of a few documents; the same sequences, each once; resuming inside a window continues exactly."""
    def rows(window: int, batches: int) -> list[tuple]:
        stream = build_train_stream(assets_cfg(packing=True, pack_window=window), tokenizer, rank=0,
                                    world_size=1, micro_batch=16)
        return [tuple(row.tolist()) for batch, _ in take(stream, batches) for row in batch["input_ids"]]

    in_order, shuffled = rows(0, 16), rows(256, 16)  # 256 sequences: exactly one window
    assert sorted(shuffled) == sorted(in_order) and len(set(shuffled)) == 256
    positions = [in_order.index(r) for r in shuffled[:16]]  # where the first batch's rows come from
    assert max(positions) - min(positions) > 100  # spread over the window, not 16 neighbours
    stream = take(build_train_stream(assets_cfg(packing=True, pack_window=256), tokenizer, rank=0,
                                     world_size=1, micro_batch=16), 40)
    resumed = take(build_train_stream(assets_cfg(packing=True, pack_window=256), tokenizer, rank=0,
                                      world_size=1, micro_batch=16, state=stream[9][1]), 30)
    assert stream[9][1]["taken"] == 160 and same_batches(resumed, stream[10:])


def test_a_bad_row_is_named_by_file_and_line(tmp_path):
    """data.sources.find_bad_line (run only after the reader failed): the first line of a split's
    files that the reader cannot take, in JSON lines (plain or gzip), a JSON array and text."""
    good = str(ASSETS / "train.jsonl")
    rows = [json.dumps({"text": f"document {i}"}).encode() for i in range(5)]

    def spec(*files, builder="json"):
        return StreamSpec(source="local", split="train", files=tuple(map(str, files)), builder=builder)

    assert find_bad_line(spec(good, ASSETS / "val.jsonl")) is None
    compressed = tmp_path / "part.jsonl.gz"
    compressed.write_bytes(gzip.compress(b"\n".join([*rows[:2], b'{"text": "cut', *rows[2:]]) + b"\n"))
    assert find_bad_line(spec(good, compressed)) == \
        f"{compressed}: line 3 is not valid JSON (Unterminated string starting at column 10)"
    not_a_row = tmp_path / "list.jsonl"
    not_a_row.write_bytes(b"\n".join([rows[0], b"", b'["a", "list"]']) + b"\n")
    assert find_bad_line(spec(not_a_row)) == \
        f"{not_a_row}: line 3 is not valid JSON for a row (a list, not an object)"
    array = tmp_path / "array.json"
    array.write_text('[\n  {"text": "one"},\n  {"text": "two"}\n  {"text": "three"}\n]\n')
    assert find_bad_line(spec(array)) == f"{array}: line 4 is not valid JSON (Expecting ',' delimiter at column 3)"
    array.write_bytes(b'[\n  {"text": "one"},\n  {"text": "t\xffo"}\n]\n')
    assert find_bad_line(spec(array)) == \
        f"{array}: line 3 is not valid JSON (byte 0xff at byte 14 of the line is not valid UTF-8)"
    text = tmp_path / "notes.txt"
    text.write_bytes(b"fine\n\nnot \xc3 fine\n")
    assert find_bad_line(spec(text, builder="text")) == \
        f"{text}: line 3 is not valid UTF-8 (byte 0xc3 at byte 5 of the line is not valid UTF-8)"


def test_a_bad_validation_row_is_a_clear_error(tokenizer, tmp_path):
    lines = (ASSETS / "val.jsonl").read_bytes().splitlines()
    path = tmp_path / "val.jsonl"
    path.write_bytes(b"\n".join([*lines[:4], b'{"text": "\xed\xa0\x80"}', *lines[4:]]) + b"\n")
    cfg = DataConfig(source="local", path=str(ASSETS / "train.jsonl"), val_path=str(path),
                     tokenizer=str(ASSETS / "tokenizer"), seq_len=SEQ_LEN)
    with pytest.raises(UserError) as caught:
        build_val_batches(cfg, tokenizer, rank=0, world_size=1, batch_size=2)
    assert str(caught.value) == \
        f"{path}: line 5 is not valid JSON (byte 0xed at byte 11 of the line is not valid UTF-8)"
