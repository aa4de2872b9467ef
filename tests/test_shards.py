"""Token shards: scripts/pretokenize.py (manifest, exact ids, resume, bad input) and data/shards.py
(validation, random access, the per-rank shuffled order and its resume). Offline, CPU only.

Most tests pretokenize with embedded-8k (trained on the embedded corpus) and shard the corpus's
validation split, so they are marked `corpus` (skipped, with the install hint, without its
packages)."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
from scripts import pretokenize  # noqa: E402
from data.embedded import load_embedded_corpus, read_texts  # noqa: E402
from data.sequences import Cursor, build_sequences  # noqa: E402
from data.shards import (EpochPermutation, ShardSet, check_tokenizer, shard_documents,  # noqa: E402
                         token_dtype)
from data.tokenizer import DocumentEncoder, get_tokenizer, tokenizer_fingerprint  # noqa: E402

CORPUS = pytest.mark.corpus


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("embedded-8k")


@pytest.fixture(scope="module")
def texts():
    """A few KB of real text, with blank rows in between (dropped by the tokenizer step)."""
    corpus = load_embedded_corpus()
    docs = [t for t in itertools.islice(read_texts(corpus.train_path), 300) if len(t) < 300][:45]
    docs[7] = "   "
    docs[20] = ""
    return docs


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("src") / "docs.jsonl"
    path.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def local_args(jsonl, out, *extra):
    return ["--source", "local", "--path", str(jsonl), "--text-field", "body", "--tokenizer", "embedded-8k",
            "--out", str(out), "--docs-per-shard", "10", "--quiet", *extra]


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory, jsonl):
    out = tmp_path_factory.mktemp("shards") / "local"
    assert pretokenize.main(local_args(jsonl, out, "--workers", "2")) == 0
    return out


@pytest.fixture(scope="module")
def val_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "val"
    assert pretokenize.main(["--source", "embedded", "--split", "val", "--tokenizer", "embedded-8k",
                             "--out", str(out), "--docs-per-shard", "64", "--workers", "0", "--quiet"]) == 0
    return out


@CORPUS
def test_manifest_describes_the_shards(local_shards, tokenizer, texts):
    manifest = json.loads((local_shards / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["tokenizer"]["fingerprint"] == tokenizer_fingerprint(tokenizer)
    assert manifest["tokenizer"]["spec"] == "embedded-8k"
    assert manifest["dtype"] == "uint16"
    assert manifest["source"]["kind"] == "local" and manifest["source"]["text_field"] == "body"
    assert [s["rows"] for s in manifest["shards"]] == [10, 10, 10, 10, 5]
    assert [s["documents"] for s in manifest["shards"]] == [9, 10, 9, 10, 5]  # rows 7 and 20 are blank
    assert manifest["documents"] == 43 == sum(s["documents"] for s in manifest["shards"])
    shards = ShardSet(local_shards)
    assert len(shards) == 43 and shards.n_tokens == manifest["tokens"]
    assert all(s.tokens.dtype == np.uint16 and isinstance(s.tokens, np.memmap) for s in shards.shards)


@CORPUS
def test_every_document_is_the_encoders_output(local_shards, val_shards, tokenizer, texts):
    encoder = DocumentEncoder(tokenizer)
    expected = encoder.encode([t for t in texts if t.strip()])
    shards = ShardSet(local_shards)
    assert len(shards) == len(expected)
    for i, ids in enumerate(expected):
        assert np.array_equal(shards.document(i), ids)
    corpus = load_embedded_corpus()
    val = list(read_texts(corpus.val_path))
    shards = ShardSet(val_shards)
    assert len(shards) == len(val) == shards.manifest["documents"]
    for i, ids in enumerate(encoder.encode(val)):
        assert np.array_equal(shards.document(i), ids)


@CORPUS
def test_a_killed_run_resumes_writing_only_the_missing_shard(tmp_path, jsonl):
    out = tmp_path / "run"
    assert pretokenize.main(local_args(jsonl, out, "--workers", "0")) == 0
    manifest = (out / "manifest.json").read_text()
    (out / "manifest.json").unlink()
    for f in out.glob("shard-00002.*"):
        f.unlink()
    (out / "shard-00003.tokens.npy").unlink()  # killed between a shard's files: its json is not there
    (out / "shard-00003.json").unlink()
    before = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    with pytest.raises(ValueError, match="unfinished"):
        ShardSet(out)
    assert pretokenize.main(local_args(jsonl, out, "--workers", "2")) == 0
    after = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    rewritten = sorted(name for name in after if after[name] != before.get(name))
    assert rewritten == ["manifest.json", "shard-00002.json", "shard-00002.offsets.npy",
                         "shard-00002.tokens.npy", "shard-00003.json", "shard-00003.offsets.npy",
                         "shard-00003.tokens.npy"]
    assert (out / "manifest.json").read_text() == manifest
    assert not list(out.glob(".*.tmp"))
    # finished: a third run changes nothing
    assert pretokenize.main(local_args(jsonl, out)) == 0
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == after


@CORPUS
def test_other_arguments_into_the_same_directory_are_refused(local_shards, jsonl, capsys):
    assert pretokenize.main(local_args(jsonl, local_shards, "--docs-per-shard", "7")) == 2
    assert "another pretokenize run" in capsys.readouterr().err


@CORPUS
def test_bad_input_is_one_message_and_exit_2(tmp_path, jsonl):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cases = [
        (["--source", "local", "--path", str(tmp_path / "missing"), "--tokenizer", "embedded-8k",
          "--out", str(tmp_path / "a")], "is not a file"),
        (["--source", "local", "--path", str(jsonl), "--text-field", "nope", "--tokenizer", "embedded-8k",
          "--out", str(tmp_path / "b"), "--workers", "0"], "no field 'nope'"),
    ]
    for argv, message in cases:
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "pretokenize.py"), *argv],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_token_dtype_widens_for_large_vocabularies():
    assert token_dtype(8000) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(151936) == np.uint32


def test_permutation_is_a_bijection_and_seeded():
    for n in (1, 2, 3, 7, 64, 65, 1000):
        p = EpochPermutation(n, 5)(np.arange(n))
        assert sorted(p.tolist()) == list(range(n))
    a, b = EpochPermutation(1000, 1)(np.arange(1000)), EpochPermutation(1000, 2)(np.arange(1000))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, EpochPermutation(1000, 1)(np.arange(1000)))
    assert np.array_equal(EpochPermutation(10**9, 3)(np.array([123_456_789])),
                          EpochPermutation(10**9, 3)(np.arange(123_456_780, 123_456_790))[9:])


def documents(directory, start=Cursor(), n=None, **order):
    order = {"rank": 0, "world_size": 1, "shuffle_seed": 42, "seed_offset": 0, **order}
    return list(itertools.islice(shard_documents(directory, start, **order), n))


@CORPUS
def test_ranks_are_disjoint_and_cover_every_document_each_epoch(val_shards):
    shards = ShardSet(val_shards)
    n = len(shards)
    per_rank = n // 2
    seen = []
    for rank in (0, 1):
        docs = documents(val_shards, n=2 * per_rank, rank=rank, world_size=2)
        assert [d.epoch for d in docs] == [0] * per_rank + [1] * per_rank
        assert [d.index for d in docs] == list(range(per_rank)) * 2
        perm0 = EpochPermutation(n, 42)(np.arange(n))
        assert all(np.array_equal(d.ids, shards.document(int(perm0[k * 2 + rank])))
                   for k, d in enumerate(docs[:per_rank]))
        seen.append([int(perm0[k * 2 + rank]) for k in range(per_rank)])
        assert docs[0].ids.dtype == np.uint16
    assert not set(seen[0]) & set(seen[1])
    covered = set(seen[0]) | set(seen[1])
    assert len(covered) == 2 * per_rank and covered <= set(range(n))
    one = documents(val_shards, n=n)  # one rank: every document once per epoch
    perm = EpochPermutation(n, 42)(np.arange(n))
    assert sorted(perm.tolist()) == list(range(n))
    assert all(np.array_equal(d.ids, shards.document(int(p))) for d, p in zip(one, perm))


@CORPUS
def test_epochs_and_streams_have_their_own_orders(val_shards):
    n = len(ShardSet(val_shards))
    first = [d.ids.tobytes() for d in documents(val_shards, n=2 * n)]
    assert first[:n] != first[n:] and sorted(first[:n]) == sorted(first[n:])
    other = [d.ids.tobytes() for d in documents(val_shards, n=n, seed_offset=1)]
    assert other != first[:n]
    assert [d.ids.tobytes() for d in documents(val_shards, n=n)] == first[:n]  # fixed by the seed


@CORPUS
@pytest.mark.parametrize("cursor", [Cursor(0, 20), Cursor(0, 143, 5), Cursor(1, 3), Cursor(2, 0)])
def test_resume_from_a_cursor_equals_continuing(val_shards, cursor):
    per_rank = len(ShardSet(val_shards)) // 2
    whole = documents(val_shards, n=3 * per_rank, rank=1, world_size=2)
    position = cursor.epoch * per_rank + cursor.docs
    resumed = documents(val_shards, cursor, n=len(whole) - position, rank=1, world_size=2)
    assert [(d.epoch, d.index) for d in resumed] == [(d.epoch, d.index) for d in whole[position:]]
    assert all(np.array_equal(a.ids, b.ids) for a, b in zip(resumed, whole[position:]))


@CORPUS
def test_shard_documents_feed_the_sequence_builder(val_shards, tokenizer):
    encoder = DocumentEncoder(tokenizer)
    seqs = list(itertools.islice(build_sequences(shard_documents(val_shards, rank=0, world_size=1, shuffle_seed=0,
                                                                 seed_offset=0),
                                                 seq_len=64, packing=True, eos_id=encoder.eos_id,
                                                 pad_id=encoder.pad_id), 20))
    assert all(s.ids.dtype == np.int64 and s.n_tokens == 64 for s in seqs)
    assert (np.concatenate([s.ids for s in seqs]) == encoder.eos_id).sum() >= 1


@CORPUS
def test_fingerprint_mismatch_is_a_clear_error(local_shards, tokenizer):
    check_tokenizer(local_shards, tokenizer)
    shards = ShardSet(local_shards)
    check_tokenizer(shards, tokenizer)
    manifest = json.loads(json.dumps(shards.manifest))
    manifest["tokenizer"]["fingerprint"] = "0123456789abcdef"
    with pytest.raises(ValueError, match=r"made with tokenizer 'embedded-8k' \(fingerprint 0123456789abcdef\), "
                                         r"but this run uses 'embedded-8k' \(fingerprint [0-9a-f]{16}\)"):
        check_tokenizer(manifest, tokenizer)


@CORPUS
def test_damaged_or_missing_shards_are_refused(tmp_path, jsonl):
    out = tmp_path / "bad"
    for directory in (out, tmp_path / "fresh"):
        assert pretokenize.main(local_args(jsonl, directory, "--workers", "0")) == 0
    with pytest.raises(ValueError, match="not a token shard directory"):
        ShardSet(tmp_path)
    np.save(out / "shard-00001.offsets.npy", np.array([0, 5], dtype=np.int64))
    with pytest.raises(ValueError, match="shard-00001 does not match the manifest"):
        ShardSet(out)
    (out / "shard-00001.offsets.npy").unlink()
    with pytest.raises(ValueError, match="cannot read shard-00001"):
        ShardSet(out)
    with pytest.raises(ValueError, match="too few for 100 ranks"):
        next(shard_documents(tmp_path / "fresh", rank=0, world_size=100, shuffle_seed=0, seed_offset=0))
