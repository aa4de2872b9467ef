"""The paper's precision (issue 31): every pre-training cell of configs/paper/ runs pure bf16 as
GaLore's harness does (weights, gradients and the optimizer's state in bf16), with bf16 autocast an
explicit overlay of ours (configs/paper/precision_autocast.yaml); the fine-tuning cells keep
autocast; the quickstart is untouched."""
from pathlib import Path

import pytest
import torch

from mols import param_groups
from optimizers import build_optimizer
from reproduce import paper
from reproduce.cli import main as reproduce
from reproduce.jobs import Variant, experiment_jobs, load_job_config
from training.config import load_config
from training.precision import prepare_model

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
AUTOCAST = PAPER / "precision_autocast.yaml"
FINETUNING = ("4", "5")


def test_table_1_60m_adam_mols_runs_pure_bf16_and_the_overlay_makes_it_autocast(tmp_path, capsys):
    """The cell as `python -m reproduce run 1` builds it; `--config precision_autocast.yaml` on top."""
    (job,) = experiment_jobs("1", models=["llama_60m"], variants=[Variant("adam", True)], seeds=[0])
    cfg = load_job_config(job)
    assert cfg.train.precision == "bf16-pure" and cfg.train.eval_harness is True and cfg.mols.enabled
    (job,) = experiment_jobs("1", models=["llama_60m"], variants=[Variant("adam", True)], seeds=[0],
                             extra_configs=[AUTOCAST])
    assert job.configs[-1] == "configs/paper/precision_autocast.yaml"
    assert load_job_config(job).train.precision == "bf16-mixed"
    # the command line carries the overlay to every job
    assert reproduce(["run", "1", "--models", "llama_60m", "--methods", "adam", "--mols", "on", "--seeds", "0",
                      "--config", str(AUTOCAST), "--dry-run", "--mode", "local", "--out-dir", str(tmp_path)]) == 0
    assert "precision_autocast.yaml" in capsys.readouterr().out


def test_every_pretraining_cell_runs_the_papers_precision_and_the_harness_evaluation():
    checked = 0
    for key in paper.runnable():
        seen = set()
        for job in experiment_jobs(key):
            if (job.model, job.variant) in seen:
                continue
            seen.add((job.model, job.variant))
            cfg = load_job_config(job)
            if key in FINETUNING:  # LlamaFactory's bf16 autocast over fp32 trainable weights
                assert cfg.train.precision == "bf16-mixed" and not cfg.train.eval_harness, job.run_name
            else:
                assert cfg.train.precision == "bf16-pure" and cfg.train.eval_harness, (key, job.run_name)
                checked += 1
    assert checked > 100
    quickstart = load_config([ROOT / "configs" / "quickstart.yaml"])
    assert quickstart.train.precision == "auto" and quickstart.train.eval_harness is False


@pytest.mark.parametrize("method", ["adam", "nadam", "lamb", "muon", "adam_mini", "galore", "apollo"])
def test_under_pure_bf16_the_optimizer_state_is_bf16(method):
    """One step of the paper's method overlay on a micro LLaMA in bf16-pure: weights, gradients and
    every state tensor of the optimizer are bf16 (no fp32 master copy anywhere), as the harness."""
    cfg = load_config([PAPER / "base.yaml", PAPER / "methods" / f"{method}.yaml"],
                      ["model.size=llama_micro", "data.source=embedded", "train.device=cpu", "optimizer.lr=1e-3"])
    assert cfg.train.precision == "bf16-pure"
    model, precision, autocast = prepare_model(cfg, 512, torch.device("cpu"))
    optimizer = build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping))
    ids = torch.randint(0, 512, (2, 16))
    with autocast():
        model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.bfloat16}
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.numel() > 1]
    assert state and {t.dtype for t in state} == {torch.bfloat16}
