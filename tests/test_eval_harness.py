"""The reference harness's evaluation protocol beside ours (train.eval_harness): its shuffled order,
its batches and stop, its loss (the mean of batch means over n + 1), the `val_harness` record and
summary.json's final_harness_ppl, and nothing of it when the option is off. Hand-computed examples,
a micro LLaMA on the committed test assets (data.source: local, streamed like C4)."""
import contextlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import data.harness as harness_data
import train
from configs import ConfigError, IGNORE_INDEX
from data import get_tokenizer
from data.config import DataConfig
from data.harness import build_harness_val_batches, harness_groups, harness_order
from data.tokenizer import DocumentEncoder
from models import build_model
from training.config import load_config
from training.evaluation import evaluate, evaluate_harness, harness_loss
from training.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
TINY = ["model.size=llama_micro", "data.source=local", f"data.path={ASSETS / 'train.jsonl'}",
        f"data.val_path={ASSETS / 'val.jsonl'}", f"data.tokenizer={ASSETS / 'tokenizer'}", "data.num_workers=0",
        "data.seq_len=32", "data.val_tokens=4000", "data.packing=false",
        "train.global_batch=8", "train.micro_batch=4", "train.log_every=5", "optimizer.lr=5e-3", "train.threads=1"]


def sequences(*n_tokens):
    return [SimpleNamespace(n_tokens=n) for n in n_tokens]


def test_the_harness_loss_order_and_stop_by_hand():
    # the order: numpy's default_rng(42) permutation of the documents, rank r every W-th from r
    assert list(harness_order(6)) == [3, 2, 5, 4, 1, 0]
    assert list(harness_order(6, rank=1, world_size=2)) == [2, 4, 0]
    assert list(harness_order([0, 2, 4, 6, 8])) == [8, 4, 6, 2, 0]  # given indices (the reported half)
    # batches of 2; before each batch: stop once more than the budget was evaluated (x world size)
    seqs = sequences(3, 5, 2, 4, 6, 1)
    assert [[s.n_tokens for s in g] for g in harness_groups(seqs, 2, 9)] == [[3, 5], [2, 4]]  # 8 <= 9, 14 > 9
    assert len(harness_groups(seqs, 2, 8)) == 2        # exactly at the budget: one more batch
    assert len(harness_groups(seqs, 2, 7)) == 1        # 8 > 7
    assert len(harness_groups(seqs, 2, 9, world_size=2)) == 1  # 2 x 8 = 16 > 9
    assert [len(g) for g in harness_groups(seqs, 4, 10**6)] == [4, 2]  # the split runs out: a smaller batch
    # the loss: batch means 2.0 and 3.0 over n + 1 = 3 batches (ours would weigh them by tokens)
    assert harness_loss([2.0, 3.0]) == pytest.approx(5 / 3)
    assert harness_loss([4.0]) == pytest.approx(2.0)


def test_evaluate_harness_is_the_mean_of_hf_batch_losses_over_n_plus_one():
    torch.manual_seed(0)
    model = build_model("llama_micro", 64)
    batches = []
    for rows, lengths in ((2, (7, 3)), (3, (8, 8, 2)), (1, (5,))):
        ids = torch.randint(1, 64, (rows, 8))
        labels = ids.clone()
        for row, n in enumerate(lengths):
            labels[row, n:] = IGNORE_INDEX
        batches.append({"input_ids": ids, "labels": labels})
    result = evaluate_harness(model, batches, torch.device("cpu"), contextlib.nullcontext)
    with torch.no_grad():  # HF's mean loss of each batch, as the harness's model(**batch, labels=...).loss
        means = [float(model(input_ids=b["input_ids"], labels=b["labels"]).loss) for b in batches]
    assert result["batches"] == 3 and result["tokens"] == 7 + 3 + 8 + 8 + 2 + 5
    assert result["loss"] == pytest.approx(sum(means) / 4, rel=1e-6)
    assert result["ppl"] == pytest.approx(math.exp(result["loss"]))
    ours, _ = evaluate(model, batches, torch.device("cpu"), contextlib.nullcontext)
    assert result["loss"] < ours  # the extra batch in the denominator


def test_streamed_harness_batches_follow_datasets_seed_42_shuffle_and_the_budget():
    """A local jsonl is streamed like C4: datasets' shuffle(seed=42), split by rank, each document
    truncated and padded, batches of the micro-batch until the token budget is passed."""
    import datasets

    tokenizer = get_tokenizer(str(ASSETS / "tokenizer"))
    cfg = DataConfig(source="local", path=str(ASSETS / "train.jsonl"), val_path=str(ASSETS / "val.jsonl"),
                     tokenizer=str(ASSETS / "tokenizer"), seq_len=32, val_tokens=300)
    encoder = DocumentEncoder(tokenizer)
    for rank in (0, 1):
        batches = build_harness_val_batches(cfg, tokenizer, rank=rank, world_size=2, batch_size=3)
        stream = datasets.load_dataset("json", data_files=[str(ASSETS / "val.jsonl")], split="train", streaming=True)
        stream = datasets.distributed.split_dataset_by_node(stream.shuffle(seed=42), rank=rank, world_size=2)
        texts = [row["text"] for row, _ in zip(stream, range(3 * len(batches)))]
        expected = []
        for text in texts:
            ids = list(encoder.encode([text])[0][:31]) + [encoder.eos_id]
            expected.append(ids + [encoder.pad_id] * (32 - len(ids)))
        got = torch.cat([b["input_ids"] for b in batches]).tolist()
        assert got == expected
        counts = [2 * int((b["labels"] != IGNORE_INDEX).sum()) for b in batches]
        assert sum(counts[:-1]) <= 300 < sum(counts)  # the last batch is the one that passes the budget


class FakeSplit:
    def __init__(self, docs):
        self.docs = docs

    def __len__(self):
        return len(self.docs)

    def document(self, i):
        return self.docs[i]


def test_in_memory_harness_order_and_the_reported_half(monkeypatch):
    """The embedded corpus (and token shards): the seed-42 permutation of its documents; with
    data.val_selection only the reported half (even positions), half the budget."""
    tokenizer = get_tokenizer(str(ASSETS / "tokenizer"))
    docs = [np.full(i + 1, 10 + i, dtype=np.int64) for i in range(6)]  # document i: i + 1 tokens of id 10 + i
    monkeypatch.setattr(harness_data, "embedded_tokenized", lambda encoder, fingerprint: {"val": FakeSplit(docs)})
    cfg = DataConfig(source="embedded", tokenizer=str(ASSETS / "tokenizer"), seq_len=8, val_tokens=10**6)
    first_ids = lambda batches: [int(row[0]) for b in batches for row in b["input_ids"]]  # noqa: E731
    batches = build_harness_val_batches(cfg, tokenizer, rank=0, world_size=1, batch_size=4)
    assert first_ids(batches) == [10 + i for i in (3, 2, 5, 4, 1, 0)] and [len(b["input_ids"]) for b in batches] == [4, 2]
    cfg.val_selection = True
    cfg.val_tokens = 12  # half: 6. The even documents in seed-42 order: 4, 2, 0 (6, 4, 2 tokens with eos)
    assert list(harness_order([0, 2, 4])) == [4, 2, 0]
    batches = build_harness_val_batches(cfg, tokenizer, rank=0, world_size=1, batch_size=1)
    assert first_ids(batches) == [10 + 4, 10 + 2]  # 6 <= 6 after the first: one more, then 10 > 6 stops


def test_a_run_logs_the_harness_beside_ours_and_summarises_it(tmp_path):
    args = []
    for item in [*TINY, "train.steps=6", "train.eval_every=3", "train.eval_harness=true", f"run.out_dir={tmp_path}",
                 "run.name=h"]:
        args += ["--set", item]
    assert train.main(["--config", str(ROOT / "configs" / "quickstart.yaml"), *args]) == 0
    records = read_metrics(tmp_path / "h" / "metrics.jsonl")
    val = {r["step"]: r for r in records if r["kind"] == "val"}
    harness = {r["step"]: r for r in records if r["kind"] == "val_harness"}
    assert sorted(harness) == sorted(val) == [0, 3, 6]
    for record in harness.values():
        assert {"loss", "ppl", "batches", "tokens"} <= set(record) and record["batches"] > 0
        assert record["ppl"] == pytest.approx(math.exp(record["loss"]))
        assert 4000 < record["tokens"] <= 4000 + 4 * 32  # past the budget by less than one batch
    summary = json.loads((tmp_path / "h" / "summary.json").read_text())
    assert summary["final_harness_loss"] == harness[6]["loss"] and summary["final_harness_ppl"] == harness[6]["ppl"]
    assert summary["final_val_loss"] == val[6]["loss"]


def test_off_by_default_and_refused_for_instruction_records(tmp_path):
    args = []
    for item in [*TINY, "train.steps=2", "train.eval_every=2", f"run.out_dir={tmp_path}", "run.name=plain"]:
        args += ["--set", item]
    assert train.main(["--config", str(ROOT / "configs" / "quickstart.yaml"), *args]) == 0
    records = read_metrics(tmp_path / "plain" / "metrics.jsonl")
    assert not any(r["kind"] == "val_harness" for r in records)
    assert "final_harness_ppl" not in json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert load_config([ROOT / "configs" / "quickstart.yaml"]).train.eval_harness is False
    with pytest.raises(ConfigError, match="train.eval_harness"):
        load_config([ROOT / "configs" / "finetune_demo.yaml"], ["train.eval_harness=true"])
    with pytest.raises(ConfigError, match="train.eval_harness: with data.val_selection"):
        load_config([ROOT / "configs" / "quickstart.yaml"], [*TINY, "train.eval_harness=true", "data.val_selection=true"])


def test_the_docs_off_by_one_figures_for_table_1_follow_from_the_configs():
    """docs/evaluation.md's computed effect of the harness's + 1 at the paper's scale: batches per
    rank from each Table 1 config (8 GPUs, its micro-batch, 10M tokens at 84% non-pad), and the PPL
    factor exp(-L/(n+1)) at the paper's Adam perplexity."""
    from reproduce import paper
    from reproduce.jobs import Variant, experiment_jobs, load_job_config

    doc = " ".join((ROOT / "docs" / "evaluation.md").read_text().split())
    adam = next(r for r in paper.table("1")["rows"] if r["label"] == "Adam")["ppl"]
    factors = {}
    for model in ("llama_60m", "llama_130m", "llama_350m", "llama_1b"):
        (job,) = experiment_jobs("1", models=[model], variants=[Variant("adam", False)], seeds=[0])
        cfg = load_job_config(job)
        per_batch = 8 * cfg.train.micro_batch * cfg.data.seq_len * 0.84  # counted x 8 ranks
        n = math.floor(cfg.data.val_tokens / per_batch) + 1
        factors[model] = (n, math.exp(-math.log(adam[model]) / (n + 1)))
    assert factors["llama_60m"][0] == 91 and factors["llama_1b"][0] == 182
    assert f"about 91 batches (182 at 1.3B)" in doc
    assert (f"times {factors['llama_60m'][1]:.3f} at 60M ({factors['llama_130m'][1]:.3f} at 130M, "
            f"{factors['llama_350m'][1]:.3f} at 350M, {factors['llama_1b'][1]:.3f} at 1.3B)") in doc
    without = math.exp(math.log(adam["llama_60m"]) * (factors["llama_60m"][0] + 1) / factors["llama_60m"][0])
    assert f"29.55 in the paper would be {without:.2f} without the extra batch" in doc
