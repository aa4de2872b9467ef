"""The GPU path, made right on CPU (the floor and the lock alike): gradient checkpointing through the
compatibility function, bf16 steps that agree with fp32 on real text, RoPE kept in fp32 under pure
bf16, one resume decision for all ranks, a memory check before the model is built, and the small
pieces (peak table, host threads)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from models import build_model
from models.loss import loss_sum_and_count
from multiprocess_launch import torchrun
from test_faults import arguments, assert_same_model, final_model, run_train
from training import compat, distributed
from training.precision import cast_parameters
from training.throughput import table_peak

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"


def real_text_batch(vocab_limit: int, batch: int = 4, seq: int = 64) -> dict:
    """Sequences of the committed Wikipedia text, tokenized with the committed 2k tokenizer."""
    from data import get_tokenizer

    tokenizer = get_tokenizer(str(ASSETS / "tokenizer"))
    rows = [json.loads(line)["text"] for line in (ASSETS / "train.jsonl").read_text().splitlines()[:50]]
    ids = [i for text in rows for i in tokenizer(text)["input_ids"]][: batch * seq]
    input_ids = torch.tensor(ids).view(batch, seq).clamp_max(vocab_limit - 1)
    return {"input_ids": input_ids, "labels": input_ids.clone()}


def gradients(model, batch, autocast=None) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with autocast or torch.autocast("cpu", enabled=False):
        loss, count = loss_sum_and_count(model, batch)
    (loss / count).backward()
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}


def fresh(size="llama_micro", vocab=2000):
    torch.manual_seed(0)
    return build_model(size, vocab)


def cosines(a: dict, b: dict) -> dict[str, float]:
    return {n: float(torch.nn.functional.cosine_similarity(a[n].flatten(), b[n].flatten(), dim=0)) for n in a}


@pytest.mark.parametrize("size", ["llama_micro", "gpt2_micro", "qwen2_micro"])
def test_gradient_checkpointing_gives_the_gradients_of_the_plain_step(size):
    batch = real_text_batch(2000)
    plain = gradients(fresh(size), batch)
    model = fresh(size)
    compat.enable_activation_checkpointing(model)
    assert compat.activation_checkpointing_enabled(model)
    checkpointed = gradients(model, batch)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_bf16_mixed_and_pure_steps_agree_with_fp32_on_real_text():
    batch = real_text_batch(2000, batch=8, seq=128)
    reference = gradients(fresh(), batch)
    mixed = gradients(fresh(), batch, torch.autocast("cpu", dtype=torch.bfloat16))
    pure_model = fresh()
    cast_parameters(pure_model, torch.bfloat16)
    pure = gradients(pure_model, batch)
    for name, value in {"bf16-mixed": mixed, "bf16-pure": pure}.items():
        worst = min(cosines(reference, value).items(), key=lambda kv: kv[1])
        assert worst[1] > 0.99, f"{value}: {worst}"
        assert all(torch.isfinite(g).all() for g in value.values())


def test_pure_bf16_keeps_rope_in_fp32_so_an_exported_model_gives_the_same_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    model = fresh()
    cast_parameters(model, torch.bfloat16)
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, fresh().model.rotary_emb.inv_freq, rtol=0, atol=0)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    batch = real_text_batch(2000, batch=2, seq=1024 // 2)
    with torch.no_grad():
        assert torch.equal(model(input_ids=batch["input_ids"]).logits, reloaded(input_ids=batch["input_ids"]).logits)


def test_bf16_runs_train_on_cpu_and_end_near_the_fp32_run(tmp_path):
    losses = {}
    for precision in ("fp32", "bf16-mixed", "bf16-pure"):
        assert run_train(tmp_path, precision, f"train.precision={precision}", "train.steps=12") == 0
        records = [json.loads(line) for line in (tmp_path / precision / "metrics.jsonl").read_text().splitlines()]
        val = [r["loss"] for r in records if r["kind"] == "val"]
        losses[precision] = (val[0], val[-1])
    start, fp32_end = losses["fp32"]
    for precision in ("bf16-mixed", "bf16-pure"):
        assert losses[precision][1] < start - 0.2, losses  # it learned
        assert abs(losses[precision][1] - fp32_end) < 0.05, losses


def test_a_checkpointed_run_under_ddp_with_accumulation_equals_the_plain_run(tmp_path):
    """no_sync micro-batches with recomputed activations: the same weights as without recomputing."""
    common = ["train.steps=4", "train.global_batch=8", "train.micro_batch=2", "data.packing=false",
              "train.checkpoint_every=0"]
    for name, checkpointing in (("plain", "false"), ("checkpointed", "true")):
        result = torchrun(arguments(tmp_path, name, *common, f"model.gradient_checkpointing={checkpointing}"),
                          timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
    plain, checkpointed = final_model(tmp_path / "plain"), final_model(tmp_path / "checkpointed")
    for key, tensor in plain.items():
        torch.testing.assert_close(checkpointed[key], tensor, rtol=1e-5, atol=1e-6, msg=key)


RANK1_SEES_AN_OLDER_CHECKPOINT = """
import os, sys
sys.path.insert(0, {root!r})
from training import checkpoint
if os.environ.get("RANK") == "1":   # a stale view of the run directory on this rank's node
    real_load = checkpoint.load
    def stale_load(path, **options):
        older = checkpoint.list_checkpoints(path.parent)[-2]
        return real_load(older, **options)
    checkpoint.load = stale_load
import train
sys.exit(train.main())
"""


def test_ranks_that_resume_from_different_steps_stop_with_one_message_instead_of_hanging(tmp_path):
    common = ["train.global_batch=8", "train.micro_batch=2", "data.packing=false", "train.checkpoint_every=2",
              "train.keep_checkpoints=3"]
    first = torchrun(arguments(tmp_path, "run", *common, "train.steps=6"), timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    script = tmp_path / "stale_rank.py"
    script.write_text(RANK1_SEES_AN_OLDER_CHECKPOINT.format(root=str(ROOT)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               *arguments(tmp_path, "run", *common, "train.steps=8", "run.resume=auto",
                          "run.allow_resume_changes=true")]
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=180,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode != 0
    assert "the ranks disagree on the step they resumed from (rank 0: 6, rank 1: 4)" in output
    for ours in ("train.py", "training/"):  # the workers exit 2 with the message (torchrun adds its own report)
        assert f'File "{ROOT / ours}' not in output


def test_a_run_that_cannot_fit_says_so_before_building_the_model(tmp_path, monkeypatch, capsys):
    import training.dry_run as dry_run

    built = []
    monkeypatch.setattr(dry_run, "available_memory", lambda device: 2**20)
    monkeypatch.setattr(train, "prepare_model", lambda *a, **k: built.append(1))
    assert run_train(tmp_path, "too-big", "train.steps=2") == 2
    err = capsys.readouterr().err
    assert "llama_micro with adamw (fp32) needs an estimated" in err and "0.0 GiB are available" in err
    assert "train.check_memory=false" in err and "Traceback" not in err
    assert not built


def test_the_memory_check_can_be_turned_off(tmp_path, monkeypatch):
    import training.dry_run as dry_run

    monkeypatch.setattr(dry_run, "available_memory", lambda device: 2**20)
    assert run_train(tmp_path, "anyway", "train.steps=2", "train.check_memory=false") == 0


def test_the_dry_run_counts_autocast_copies_and_says_ddp_keeps_one_gradient_copy(capsys):
    config = ["--config", str(ROOT / "configs/paper/base.yaml"), "--config", str(ROOT / "configs/paper/models/llama_1b.yaml"),
              "--config", str(ROOT / "configs/paper/methods/adam.yaml"),
              "--config", str(ROOT / "configs/paper/precision_autocast.yaml"), "--dry-run", "--gpus", "8"]
    assert train.main(config) == 0
    out = capsys.readouterr().out
    assert "bf16 weight copies" in out and "DDP: the gradients are its all-reduce buckets" in out


def test_the_peak_table_matches_whole_names():
    assert table_peak("NVIDIA L40") == 181.0
    assert table_peak("NVIDIA L4") == 121.0
    assert table_peak("NVIDIA L40S") == 362.0
    assert table_peak("NVIDIA H100 80GB HBM3") == 989.0
    assert table_peak("NVIDIA GH200 480GB") == 989.0
    assert table_peak("Some Future GPU") is None


def test_each_rank_gets_its_share_of_the_cores(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    assert distributed.host_threads(1) == cores
    assert distributed.host_threads(cores * 2) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert distributed.host_threads() == cores


def test_the_model_is_built_on_its_device_with_no_host_copy():
    from training.config import load_config
    from training.precision import prepare_model

    cfg = load_config([str(ROOT / "configs/quickstart.yaml")], ["model.size=llama_micro", "train.precision=bf16-pure"])
    model, precision, _ = prepare_model(cfg, 2000, torch.device("meta"))  # meta stands in for a GPU here
    assert precision == "bf16-pure"
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    on_cpu, _, _ = prepare_model(cfg, 2000, torch.device("cpu"))
    torch.manual_seed(cfg.run.seed)
    reference = build_model("llama_micro", 2000)  # what the CPU build always gave for this seed
    for name, param in reference.named_parameters():
        assert torch.equal(on_cpu.get_parameter(name), param.to(torch.bfloat16)), name


def test_autocast_covers_the_forward_but_not_the_backward():
    model = fresh()
    seen = []
    for param in model.parameters():
        param.register_hook(lambda grad: seen.append(torch.is_autocast_enabled("cpu")) or grad)
    batch = real_text_batch(2000, batch=2, seq=32)
    loss, targets = train.forward_backward(model, [batch], 1, torch.device("cpu"),
                                           lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert seen and not any(seen)
    assert float(targets) == 2 * 31


def test_on_a_cpu_the_memory_check_counts_the_mols_statistics_it_keeps_there(tmp_path, monkeypatch, capsys):
    import training.dry_run as dry_run

    monkeypatch.setattr(dry_run, "available_memory", lambda device: 2**20)
    monkeypatch.setattr(train, "prepare_model", lambda *a, **k: None)
    assert run_train(tmp_path, "mols-too-big", "train.steps=2", "train.warmup_steps=2", "mols.enabled=true") == 2
    assert "MoLS statistics" in capsys.readouterr().err
