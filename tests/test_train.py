"""End-to-end behaviour of train.py with a micro LLaMA (CPU, seconds each), on the committed test
assets (tests/assets: a few hundred Wikipedia lead sections and a 2k tokenizer, data.source: local)."""
import json
from importlib import metadata
from pathlib import Path

import pytest
import torch

import train
from multiprocess_launch import torchrun
from training.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
# in-process tokenization (data.num_workers=0): a worker process costs more than these runs' data
TINY = ["model.size=llama_micro", "data.source=local", f"data.path={ASSETS / 'train.jsonl'}",
        f"data.val_path={ASSETS / 'val.jsonl'}", f"data.tokenizer={ASSETS / 'tokenizer'}", "data.num_workers=0",
        "data.seq_len=32", "data.val_tokens=4000",
        "train.global_batch=8", "train.micro_batch=4", "train.log_every=5", "optimizer.lr=5e-3",
        "mols.samples=32", "train.threads=1"]


def run_train(tmp_path, *overrides, name="run"):
    args = ["--config", str(ROOT / "configs" / "quickstart.yaml")]
    for item in [*TINY, f"run.out_dir={tmp_path}", f"run.name={name}", *overrides]:
        args += ["--set", item]
    return train.main(args)


def final_state(run_dir: Path) -> dict:
    latest = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]
    return torch.load(latest, weights_only=True)


def straight_and_resumed(tmp_path, *overrides, last_step: int) -> tuple[dict, dict]:
    """The final checkpoints of a run trained straight through and of the same run killed after its
    second-to-last checkpoint (everything written later gone) and resumed with run.resume=auto."""
    assert run_train(tmp_path, *overrides, name="straight") == 0
    assert run_train(tmp_path, *overrides, name="interrupted") == 0
    interrupted = tmp_path / "interrupted"
    (interrupted / "checkpoints" / f"step_{last_step:07d}.pt").unlink()
    (interrupted / "summary.json").unlink()
    assert run_train(tmp_path, *overrides, "run.resume=auto", name="interrupted") == 0
    return final_state(tmp_path / "straight"), final_state(interrupted)


def test_a_tiny_run_learns_and_leaves_a_complete_run_directory(tmp_path):
    assert run_train(tmp_path, "train.steps=80", "train.eval_every=40") == 0
    run_dir = tmp_path / "run"
    for name in ["config.yaml", "environment.json", "metrics.jsonl", "summary.json"]:
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"final_val_loss", "final_val_ppl", "tokens_seen", "wall_time_s"} <= set(summary)
    assert summary["tokens_seen"] == 80 * 8 * 32
    val = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["step"] for r in val] == [0, 40, 80]
    # from ~ln(2000) = 7.6 (the assets' 2k vocabulary): ppl 2000 -> < 600. Measured 1.27-1.34 over
    # run.seed 0-2 (with embedded-8k it was 9.0 -> 7.44, a drop of 1.56 against a bar of 1.5)
    assert val[-1]["loss"] < val[0]["loss"] - 1.2
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["packages"]["torch"] == metadata.version("torch") and "commit" in env["git"]


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    common = ["train.steps=16", "train.checkpoint_every=8", "train.eval_every=8", "mols.enabled=true",
              "mols.estimate_at=2", "train.warmup_steps=12"]  # the MoLS ramp spans the interruption
    straight, resumed = straight_and_resumed(tmp_path, *common, last_step=16)  # killed after step 8's
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    assert straight["mols"]["ramp"] == resumed["mols"]["ramp"]  # the same multipliers, step for step
    assert straight["step"] == resumed["step"] == 16 and "step" not in straight["mols"]  # one step counter
    a = json.loads((tmp_path / "straight" / "summary.json").read_text())
    b = json.loads((tmp_path / "interrupted" / "summary.json").read_text())
    assert a["final_val_loss"] == b["final_val_loss"] and a["tokens_seen"] == b["tokens_seen"]


def test_an_existing_run_is_never_overwritten(tmp_path, capsys):
    assert run_train(tmp_path, "train.steps=4") == 0
    before = (tmp_path / "run" / "summary.json").read_bytes()
    assert run_train(tmp_path, "train.steps=4") == 2
    assert "run.resume=auto" in capsys.readouterr().err
    assert (tmp_path / "run" / "summary.json").read_bytes() == before


def test_mols_run_reports_its_calibration(tmp_path, capsys):
    assert run_train(tmp_path, "train.steps=12", "mols.enabled=true", "mols.estimate_at=1", "train.warmup_steps=4",
                     "mols.track_every=4", "mols.track_samples=8") == 0
    run_dir = tmp_path / "run"
    records = read_metrics(run_dir / "metrics.jsonl")
    (calibration,) = [r for r in records if r["kind"] == "mols_calibration"]
    assert calibration["step"] == 1 and calibration["sequences"] == 32
    assert set(calibration["alphas"]) >= {"emb", "head", "qk", "vo", "mlp"}
    assert all(a >= 1.0 for a in calibration["alphas"].values())
    assert [r["step"] for r in records if r["kind"] == "snr"] == [0, 4, 8]
    assert json.loads((run_dir / "mols.json").read_text())["calibrations"][0]["step"] == 1
    # the SNR picture and the alpha table from that run directory
    out = tmp_path / "snr.png"
    from reproduce.cli import main as reproduce
    assert reproduce(["plot", "snr", str(run_dir), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert reproduce(["plot", "alphas", str(run_dir)]) == 0
    table = capsys.readouterr().out
    assert "| emb |" in table and "llama_micro" in table


def test_periodic_reestimation_beyond_the_paper(tmp_path):
    assert run_train(tmp_path, "train.steps=12", "mols.enabled=true", "mols.estimate_at=1", "train.warmup_steps=4",
                     "mols.reestimate_every=5", "mols.reestimate_ramp_steps=2", "mols.estimator=median") == 0
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "mols_calibration"] == [1, 6, 11]


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(tmp_path):
    common = ["train.steps=6", "data.packing=false", "train.eval_every=100"]
    assert run_train(tmp_path, *common, name="single") == 0
    args = ["--config", str(ROOT / "configs" / "quickstart.yaml")]
    for item in [*TINY, *common, f"run.out_dir={tmp_path}", "run.name=ddp"]:
        args += ["--set", item]
    result = torchrun(args, nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    single, ddp = final_state(tmp_path / "single"), final_state(tmp_path / "ddp")
    for key, tensor in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], tensor, rtol=1e-4, atol=1e-5)
    a = json.loads((tmp_path / "single" / "summary.json").read_text())
    b = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert b["final_val_loss"] == pytest.approx(a["final_val_loss"], rel=1e-4)


def test_wandb_offline_run_lands_in_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the config decides
    assert run_train(tmp_path, "train.steps=2", "run.wandb.mode=offline", "run.wandb.project=mols-test",
                     "run.wandb.tags=[llama_micro, adamw]") == 0
    offline_runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    run_id = (tmp_path / "run" / "wandb_id").read_text()
    assert offline_runs[0].name.endswith(run_id)  # a resumed run continues the same wandb run
