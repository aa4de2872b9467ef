"""Fine-tuning through the trainer (issue 21): a tiny pretrained LLaMA / Qwen2 / Gemma3 saved with
save_pretrained, fine-tuned by `train.main` on a tiny local instruction set (LoRA + MoLS, full),
resumed bit-exactly after a kill, exported with LoRA merged, scored by scripts/evaluate.py; bad
fine-tuning configs; the presets of Tables 4, 5 and 11 and their result tables. Offline: no hub
model or dataset is fetched."""
import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig, LlamaConfig, Qwen2Config

import train
from data.instructions import synthetic_records
from multiprocess_launch import torchrun
from reproduce import paper
from reproduce.cli import main as reproduce
from reproduce.jobs import experiment_jobs
from training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "assets" / "tokenizer"


def save_tiny(directory: Path, arch: str) -> Path:
    common = dict(vocab_size=2000, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  num_key_value_heads=2, num_hidden_layers=2, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=True)
    if arch == "gemma3":  # Gemma3's text model: q/k norms, pre/post feed-forward norms, its own head_dim
        config = Gemma3TextConfig(head_dim=8, sliding_window=8, **common)
    else:
        config = LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny pretrained models and a tiny instruction set (24 train / 8 validation records)."""
    root = tmp_path_factory.mktemp("finetune")
    records = synthetic_records(32, seed=3)
    for name, part in (("train.jsonl", records[:24]), ("val.jsonl", records[24:])):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return {"root": root, "llama": save_tiny(root / "tiny_llama", "llama"),
            "qwen2": save_tiny(root / "tiny_qwen2", "qwen2"), "gemma3": save_tiny(root / "tiny_gemma3", "gemma3")}


def finetune(ws, out: Path, *overrides, arch="llama", name="run") -> int:
    return train.main(finetune_args(ws, out, *overrides, arch=arch, name=name))


def finetune_args(ws, out: Path, *overrides, arch="llama", name="run") -> list[str]:
    settings = [f"model.pretrained={ws[arch]}", "data.source=instructions", f"data.path={ws['root'] / 'train.jsonl'}",
                f"data.val_path={ws['root'] / 'val.jsonl'}", "data.cutoff_len=192", "train.steps=6",
                "train.global_batch=4", "train.micro_batch=2", "train.log_every=2", "train.eval_every=100",
                "train.threads=1", "optimizer.name=adamw", "optimizer.lr=1e-2", "mols.samples=8",
                f"run.out_dir={out}", f"run.name={name}", *overrides]
    args = []
    for item in settings:
        args += ["--set", item]
    return args


LORA_MOLS = ["model.lora.rank=4", "mols.enabled=true", "train.warmup_steps=3"]  # the estimate inside the warm-up


def latest(run_dir: Path) -> dict:
    return torch.load(sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_lora_with_mols_steps_and_calibrates_on_the_adapters(workspace, tmp_path, arch, capsys):
    assert finetune(workspace, tmp_path, *LORA_MOLS, arch=arch) == 0
    run_dir = tmp_path / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == str(workspace[arch]) and summary["steps"] == 6
    # calibrated at step ceil(1% of 6) = 1 (not 0, where lora_B is zero), on the adapters' classes
    assert set(summary["mols_alphas"]) == {"qk", "vo", "mlp"} and summary["mols_alphas"]["vo"] == 1.0
    calibration = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                   if '"mols_calibration"' in line]
    assert [c["step"] for c in calibration] == [1]
    out = capsys.readouterr().out
    assert "LoRA rank 4, alpha 8" in out and "loss on the response only" in out
    # only the adapters moved: every base weight is the pretrained one
    state = latest(run_dir)["model"]
    base = AutoModelForCausalLM.from_pretrained(workspace[arch]).state_dict()
    adapters = [k for k in state if "lora_" in k]
    assert adapters and all(k.split(".")[-2] == "default" for k in adapters)
    for key, tensor in state.items():
        if "lora_" in key:
            continue
        name = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert torch.equal(tensor, base[name]), key
    assert any(not torch.all(state[k] == 0) for k in adapters if "lora_B" in k)  # lora_B moved off zero


def test_full_finetuning_with_mols_scales_every_class(workspace, tmp_path):
    assert finetune(workspace, tmp_path, "mols.enabled=true", "train.warmup_steps=3", arch="qwen2") == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"emb", "qk", "vo", "mlp"} <= set(summary["mols_alphas"])  # tied head: one class with emb


@pytest.mark.parametrize("method", ["nadam", "lamb", "muon", "galore", "apollo", "adam8bit"])
def test_every_optimizer_of_tables_4_and_5_fine_tunes_a_pretrained_model(workspace, tmp_path, method):
    # Table 4's NAdam, LAMB and Muon; Table 5's GaLore and APOLLO (full-parameter, low-rank state)
    assert finetune(workspace, tmp_path, f"optimizer.name={method}", "optimizer.lr=1e-3", "train.steps=3") == 0
    before = AutoModelForCausalLM.from_pretrained(workspace["llama"]).state_dict()
    after = latest(tmp_path / "run")["model"]
    changed = [key for key, tensor in after.items() if not torch.equal(tensor, before[key])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed and "model.layers.1.mlp.down_proj.weight" in changed
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["optimizer"] == method and summary["final_val_loss"] < 20


def test_tokens_seen_are_the_padded_micro_batches_not_the_cut_off(workspace, tmp_path):
    from data.instructions import build_instruction_stream
    from data.tokenizer import get_tokenizer
    from training.config import validate

    assert finetune(workspace, tmp_path, "model.lora.rank=4") == 0
    cfg = validate(latest(tmp_path / "run")["config"])
    stream = build_instruction_stream(cfg.data, get_tokenizer(str(workspace["llama"])), rank=0, world_size=1,
                                      micro_batch=2)
    padded = sum(stream.next_batch()["input_ids"].numel() for _ in range(6 * 2))   # 6 steps x 2 micro-batches
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["tokens_seen"] == padded < 6 * 4 * 192


def test_kill_and_resume_auto_is_bit_identical(workspace, tmp_path):
    common = [*LORA_MOLS, "train.steps=8", "train.checkpoint_every=4", "train.warmup_steps=6", "mols.estimate_at=2"]
    assert finetune(workspace, tmp_path, *common, name="straight") == 0
    assert finetune(workspace, tmp_path, *common, name="killed") == 0
    killed = tmp_path / "killed"
    (killed / "checkpoints" / "step_0000008.pt").unlink()  # as if killed after the step-4 checkpoint
    (killed / "summary.json").unlink()
    assert finetune(workspace, tmp_path, *common, "run.resume=auto", name="killed") == 0
    a, b = latest(tmp_path / "straight"), latest(killed)
    assert a["step"] == b["step"] == 8
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert a["mols"]["ramp"] == b["mols"]["ramp"]
    assert a["ranks"][0]["data"] == b["ranks"][0]["data"]  # the instruction streams at the same place
    sa = json.loads((tmp_path / "straight" / "summary.json").read_text())
    sb = json.loads((killed / "summary.json").read_text())
    assert sa["final_val_loss"] == sb["final_val_loss"]


def test_two_process_ddp_lora_mols_equals_one_process_with_the_same_global_batch(workspace, tmp_path):
    # one record per micro-batch, so both runs average the same per-record losses over the same
    # 4 records of each update (rank r reads records r, r+2, ... of each epoch's order), and MoLS
    # calibrates on the same 8 extra records, 4 on each rank
    common = [*LORA_MOLS, "train.micro_batch=1", "mols.estimate_at=2", "train.warmup_steps=3"]
    assert finetune(workspace, tmp_path, *common, name="single") == 0
    result = torchrun(finetune_args(workspace, tmp_path, *common, name="ddp"), nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 ranks x 1 micro-batch x 2 accumulation" in result.stdout + result.stderr
    single, ddp = latest(tmp_path / "single"), latest(tmp_path / "ddp")
    assert single["step"] == ddp["step"] == 6
    adapters = [key for key in single["model"] if "lora_" in key]
    assert adapters and set(single["model"]) == set(ddp["model"])
    for key, tensor in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], tensor, rtol=1e-4, atol=1e-6)
    a = json.loads((tmp_path / "single" / "summary.json").read_text())
    b = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert set(a["mols_alphas"]) == {"qk", "vo", "mlp"}
    for cls, alpha in a["mols_alphas"].items():
        assert b["mols_alphas"][cls] == pytest.approx(alpha, rel=1e-5)
    assert b["final_val_loss"] == pytest.approx(a["final_val_loss"], rel=1e-5)


def test_export_merges_lora_and_loads_with_from_pretrained(workspace, tmp_path):
    from models.pretrained import build_finetuning_model
    from scripts.export_hf import main as export
    from training.config import validate

    assert finetune(workspace, tmp_path, *LORA_MOLS) == 0
    run_dir, out = tmp_path / "run", tmp_path / "exported"
    assert export([str(run_dir), str(out)]) == 0
    assert not (out / "adapter_config.json").exists()
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in exported.named_parameters())
    # the trained PeftModel (adapters unmerged) gives the same logits
    state = latest(run_dir)
    cfg = validate(state["config"])
    trained = build_finetuning_model(cfg.model, seed=cfg.run.seed)
    trained.load_state_dict(state["model"])
    trained.eval()
    ids = torch.tensor([[1, 15, 200, 33, 1700, 5, 9]])
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, trained(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    info = json.loads((out / "mols_export.json").read_text())
    assert info["lora_merged"] and info["pretrained"] == str(workspace["llama"]) and info["seq_len"] == 192
    assert AutoTokenizer.from_pretrained(out).pad_token_id == 3


def test_the_evaluator_scores_a_finetuned_run(workspace, tmp_path, capsys):
    from scripts.evaluate import main as evaluate

    assert finetune(workspace, tmp_path, *LORA_MOLS) == 0
    run_dir = tmp_path / "run"
    # the validation loss, recomputed, is training's final one exactly
    assert evaluate([str(run_dir), "--device", "cpu"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert json.loads((run_dir / "eval_step_0000006.json").read_text())["val_loss"] == summary["final_val_loss"]
    # a local multiple-choice set, both ways
    assert evaluate([str(run_dir), "--task", "choices", "--data", str(workspace["root"] / "val.jsonl"),
                     "--method", "both", "--max-new-tokens", "8", "--device", "cpu"]) == 0
    result = json.loads((run_dir / "eval_choices_step_0000006.json").read_text())
    assert result["n"] == 8 and 0 <= result["generation"] <= 100 and 0 <= result["loglik"] <= 100
    assert result["num_beams"] == 1  # greedy for a local set
    # and by task (the synthetic families): the counts and the weighted accuracies add up
    by_task = result["by_task"]
    assert set(by_task) == {"compare", "count", "kind", "largest", "longer"}
    assert sum(t["n"] for t in by_task.values()) == 8
    for key in ("generation", "loglik"):
        assert sum(t[key] * t["n"] for t in by_task.values()) / 8 == pytest.approx(result[key])
    # LLM-Adapters' layout: <task>/test.json, options by task
    for task in ("boolq", "piqa"):
        (tmp_path / "cs" / task).mkdir(parents=True)
        records = [r for r in synthetic_records(20, seed=5) if r["options"][0] == ("true" if task == "boolq" else "solution1")]
        (tmp_path / "cs" / task / "test.json").write_text(json.dumps(records[:3]))
    assert evaluate([str(run_dir), "--task", "commonsense", "--data", str(tmp_path / "cs"), "--max-new-tokens", "6",
                     "--device", "cpu"]) == 0
    result = json.loads((run_dir / "eval_commonsense_step_0000006.json").read_text())
    assert set(result["tasks"]) == {"piqa", "boolq"} and "average_generation" in result
    assert result["num_beams"] == 4  # LLM-Adapters' decoding, Table 4's
    # MMLU from a local folder: 5-shot, category averages
    mmlu = tmp_path / "mmlu"
    mmlu.mkdir()
    question = {"question": "2 + 2 = ?", "choices": ["3", "4", "5", "6"], "answer": 1}
    for split, n in (("test", 2), ("dev", 5)):
        rows = [{**question, "subject": s} for s in ("astronomy", "philosophy") for _ in range(n)]
        (mmlu / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert evaluate([str(run_dir), "--task", "mmlu", "--data", str(mmlu), "--device", "cpu"]) == 0
    result = json.loads((run_dir / "eval_mmlu_step_0000006.json").read_text())
    assert set(result["categories"]) == {"STEM", "Humanities", "Average"} and result["shots"] == 5
    assert result["prompt_format"] == "alpaca"  # the run trained in the Alpaca prompt (no chat template)
    assert "MMLU STEM" in capsys.readouterr().out


def test_a_bad_finetuning_config_lists_every_problem(workspace, tmp_path, capsys):
    code = train.main(["--set", f"model.pretrained={workspace['llama']}", "--set", "model.lora.rank=-1",
                       "--set", "model.lora.dropout=1.5", "--set", "model.lora.target_modules=[]",
                       "--set", "model.vocab_size=100", "--set", "data.source=instructions",
                       "--set", "data.packing=true", "--set", "data.cutoff_len=1", "--set", "train.parallel=fsdp",
                       "--set", "data.chat_templat=true", "--set", f"run.out_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    for expected in ("model.lora.rank: must be >= 0", "model.lora.dropout: must be >= 0 and < 1",
                     "model.lora.target_modules", "model.vocab_size: a pretrained model keeps its own vocabulary",
                     "data.path: required when data.source is 'instructions'", "data.val_path: required",
                     "data.packing: instruction records are never packed", "data.cutoff_len: must be >= 2",
                     "train.parallel: fsdp", "data.chat_templat: unknown key (did you mean 'data.chat_template'?)"):
        assert expected in err, expected
    assert not any(tmp_path.iterdir())
    # LoRA and MoLS at step 0 (lora_B is still zero there); LoRA without a pretrained model
    assert train.main(["--set", f"model.pretrained={workspace['llama']}", "--set", "model.lora.rank=4",
                       "--set", "mols.enabled=true", "--set", "mols.estimate_at=0"]) == 2
    assert "lora_B is still zero" in capsys.readouterr().err
    assert train.main(["--set", "model.lora.rank=4"]) == 2
    assert "needs a pretrained model" in capsys.readouterr().err


def test_the_dry_run_of_a_finetuning_config(workspace, capsys):
    assert train.main(["--set", f"model.pretrained={workspace['llama']}", "--set", "model.lora.rank=8",
                       "--set", "mols.enabled=true", "--set", "data.source=instructions",
                       "--set", "data.path=shipped-synthetic", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "LoRA rank 8 (alpha 16, dropout 0, on all-linear)" in out and "+ MoLS" in out
    assert "nothing is read or written" in out
    # what trains is the adapters alone, as many as peft makes; memory includes the activations
    from models.pretrained import apply_lora
    adapted = apply_lora(AutoModelForCausalLM.from_pretrained(workspace["llama"]), 8)
    adapters = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    total = sum(p.numel() for p in adapted.parameters())
    assert f"{total / 1e6:,.2f}M, {adapters / 1e6:,.3f}M of them train ({100 * adapters / total:.2f}%)" in out
    classes = out.split("by MoLS class:")[1].split("estimated memory")[0].split()[::3]
    assert classes == ["qk", "vo", "mlp"]   # the frozen embedding and head are not MoLS's to scale
    for part in ("weights", "gradients", "optimizer state", "activations", "logits"):
        assert f"\n  {part} " in out


def test_a_finetuning_run_too_large_for_the_device_is_refused_before_loading(workspace, tmp_path, capsys,
                                                                            monkeypatch):
    import training.dry_run

    monkeypatch.setattr(training.dry_run, "available_memory", lambda device: 2**20)   # 1 MiB
    assert finetune(workspace, tmp_path, *LORA_MOLS) == 2
    err = capsys.readouterr().err
    assert f"{workspace['llama']} with adamw (fp32) needs an estimated" in err and "activations" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------------------------------------
# Tables 4, 5 and 11: presets and result tables
# ------------------------------------------------------------------------------------------------

TABLE_11 = {"gemma3_1b": ("google/gemma-3-1b-pt", 4, 2.0e-4), "llama3.2_3b": ("meta-llama/Llama-3.2-3B", 8, 2.5e-5),
            "qwen2.5_7b": ("Qwen/Qwen2.5-7B", 8, 1.0e-5)}


def composed(job):
    return load_config([ROOT / c for c in job.configs], job.overrides)


def test_table_5_cells_have_table_11s_settings():
    jobs = experiment_jobs("5")
    assert len(jobs) == 14  # five rows x three models, less Qwen2.5-7B's full fine-tuning (OOM)
    for job in jobs:
        cfg = composed(job)
        name, rank, lr = TABLE_11[job.model]
        assert cfg.model.pretrained == name and cfg.optimizer.lr == pytest.approx(lr)
        lora = job.variant.method == "adam" and job.variant.tag != "full"
        assert cfg.model.lora.rank == (rank if lora else 0) and cfg.model.lora.target_modules == "all-linear"
        assert cfg.model.lora.alpha is None and cfg.model.lora.dropout == 0.0  # 2 x rank, 0: LlamaFactory's
        assert cfg.train.global_batch == 16 and cfg.train.warmup_ratio == 0.1 and cfg.train.min_lr_ratio == 0.0
        assert cfg.data.source == "instructions" and cfg.data.cutoff_len == 2048
        assert cfg.train.steps == -(-3 * 99_842 // 16)  # 3 epochs of auxiliary_train
        assert cfg.mols.enabled == job.variant.mols and cfg.train.parallel == "ddp"


def test_table_4_cells():
    jobs = experiment_jobs("4")
    assert [j.variant.key for j in jobs] == ["adam", "nadam", "lamb", "muon", "adam+mols"]
    for job in jobs:
        cfg = composed(job)
        assert cfg.model.pretrained == "meta-llama/Llama-3.2-1B" and cfg.model.lora.rank == 0
        assert cfg.data.cutoff_len == 256 and cfg.train.global_batch == 16
        assert cfg.train.steps == -(-3 * 170_300 // 16)
    rows = paper.table("4")["rows"]
    assert rows[-1]["acc"]["llama3.2_1b"] == [70.47, 77.61, 72.41, 70.33, 69.18, 64.40, 73.73, 55.36, 69.18]


@pytest.mark.parametrize("table", ["4", "5"])
def test_the_fine_tuning_tables_dry_run(table, tmp_path, capsys):
    assert reproduce(["run", table, "--dry-run", "--mode", "local", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train.py" in out and "finetune/base.yaml" in out and "GPU-hours" in out
    assert not any(tmp_path.iterdir())
    # on Slurm: one GPU per run (batch 16 = micro-batch 4 x 4 accumulation), and host memory for
    # MoLS's statistics of what trains (Table 5: the LoRA adapters, not Qwen2.5-7B's frozen weights)
    assert reproduce(["run", table, "--dry-run", "--mode", "slurm", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --gpus-per-node=1\n" in out and "--nproc_per_node 1" in out
    memory = int(out.split("#SBATCH --mem=")[1].split("G")[0])
    assert memory < (32 if table == "5" else 80)   # Table 4: full fine-tuning of 1.2B, 4 uncertainty groups


def test_results_print_ours_beside_the_papers(tmp_path, capsys):
    """Two fake Table 5 runs (config.yaml as train.py writes it, summary.json, an MMLU result)."""
    for job, average in zip(experiment_jobs("5", models=["gemma3_1b"])[1::3], (30.0, 31.0)):
        run_dir = tmp_path / job.run_name
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(yaml.safe_dump(composed(job).to_dict()))
        (run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "val", "step": 10, "loss": 1.0, "ppl": 2.7}) + "\n")
        (run_dir / "summary.json").write_text(json.dumps({"final_val_ppl": 2.7, "final_val_loss": 1.0}))
        categories = {"STEM": average, "Social Sciences": 20.0, "Humanities": 25.0, "Other": 26.0, "Average": average}
        (run_dir / "eval_mmlu_step_0000010.json").write_text(json.dumps({"categories": categories}))
    assert reproduce(["results", str(tmp_path), "--table", "5"]) == 0
    out = capsys.readouterr().out
    assert "| LoRA | 30.00 (paper 26.61, Δ +3.39)" in out
    assert "| LoRA+MoLS | 31.00 (paper 27.51, Δ +3.49)" in out
    assert "Gemma3-1B" in out and "| Full | – (paper 27.63)" in out
