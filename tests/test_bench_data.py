"""scripts/bench_data.py runs on the committed assets (seconds), and token shards keep the paper's
sequence scheme: with packing false, one epoch of the shards gives exactly the padded sequences
that streaming the same files gives (same documents, another order), and the validation batches
are identical."""
from __future__ import annotations

import json
from pathlib import Path

from data import build_train_stream, build_val_batches, get_tokenizer
from data.config import DataConfig
from scripts import bench_data, pretokenize

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"


def test_quick_benchmark_runs_on_the_assets(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench_data.main(["--quick", "--tokenizer", str(ASSETS / "tokenizer"), "--text", str(ASSETS / "train.jsonl"),
                            "--docs", "300", "--doc-chars", "600", "--files", "2", "--seconds", "0.2",
                            "--shuffle-buffer", "50", "--workers", "0,1", "--sources", "local,tokens",
                            "--sizes", "llama_60m", "--dir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    rows = [(r["source"], r["workers"]) for r in result["rows"]]
    assert rows == [("local", 0), ("local", 1), ("tokens", None)]
    assert all(r["tokens_per_s"] > 0 and r["batches"] >= 3 for r in result["rows"])
    demand = result["demand"]["llama_60m"]
    assert 1.0e6 < demand["tokens_per_s"] < 2.0e6  # ~1.5M tokens/s at 40% of 989 TFLOP/s
    assert result["pretokenize"]["documents"] == 300
    printed = capsys.readouterr().out
    assert "supply / demand" in printed and "tokens (pretokenized)" in printed


def test_shards_give_the_streamed_padded_sequences(tmp_path):
    """packing false: shards store whole documents; truncate + eos + pad happens when reading, as
    for the streamed source."""
    tokenizer = get_tokenizer(str(ASSETS / "tokenizer"))
    for split, name in (("train", "train.jsonl"), ("val", "val.jsonl")):
        assert pretokenize.main(["--source", "local", "--path", str(ASSETS / name), "--split", split,
                                 "--tokenizer", str(ASSETS / "tokenizer"), "--out", str(tmp_path / split),
                                 "--docs-per-shard", "64", "--workers", "1", "--quiet"]) == 0
    common = dict(tokenizer=str(ASSETS / "tokenizer"), seq_len=96, packing=False, shuffle_buffer=50, val_tokens=4000)
    local = DataConfig(source="local", path=str(ASSETS / "train.jsonl"), val_path=str(ASSETS / "val.jsonl"),
                       num_workers=0, **common)
    tokens = DataConfig(source="tokens", path=str(tmp_path / "train"), val_path=str(tmp_path / "val"), **common)
    n_docs = sum(1 for line in open(ASSETS / "train.jsonl") if line.strip())

    def epoch(cfg):
        stream = build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=1)
        rows = []
        try:
            for _ in range(n_docs):
                batch = stream.next_batch()
                rows.append((tuple(batch["input_ids"][0].tolist()), tuple(batch["labels"][0].tolist())))
            assert stream.state["epoch"] == 0 and stream.state["docs"] == n_docs
        finally:
            stream.close()
        return rows

    streamed, sharded = epoch(local), epoch(tokens)
    assert sorted(streamed) == sorted(sharded)
    assert streamed != sharded  # another order (a keyed permutation instead of a shuffle buffer)
    pads = [sum(1 for label in labels if label == -100) for _, labels in sharded]
    assert min(pads) == 0 and max(pads) > 0  # both truncated and padded documents occur

    val_local = build_val_batches(local, tokenizer, rank=0, world_size=1, batch_size=8)
    val_tokens = build_val_batches(tokens, tokenizer, rank=0, world_size=1, batch_size=8)
    assert len(val_local) == len(val_tokens)
    for a, b in zip(val_local, val_tokens):
        assert a["input_ids"].equal(b["input_ids"]) and a["labels"].equal(b["labels"])
