"""scripts/bf16_rounding.py: the share of an AdamW step that bf16 weights round away, on weights
whose answer is known (a step of 0.001 vanishes at 1.0, where bf16's spacing is 2^-8, and survives at
0.01), with MoLS's multiplier, and on a checkpoint train.py wrote in bf16-pure."""
import math

import pytest
import torch

from scripts import bf16_rounding
from tests.test_train import run_train


def checkpoint(weights: torch.Tensor, lr: float = 1e-3, module: str = "mlp", ramp: dict | None = None) -> dict:
    """A train.py checkpoint's fields with moments that make m_hat / sqrt(v_hat) exactly 1."""
    ones = torch.ones_like(weights)
    return {"step": 5, "model": {"w": weights},
            "optimizer": {"method": "adamw", "state_dict": {
                "state": {0: {"step": torch.tensor(1e6), "exp_avg": ones, "exp_avg_sq": ones}},
                "param_groups": [{"params": [0], "param_names": ["w"], "module_class": module, "lr": lr,
                                  "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.0}]}},
            "mols": {"ramp": ramp, "calibrations": []}}


def test_a_step_below_half_the_bf16_spacing_leaves_the_weight_unchanged():
    weights = torch.tensor([1.0, 1.0, 0.01, 0.01], dtype=torch.bfloat16)
    (row,) = bf16_rounding.rounding(checkpoint(weights))
    assert (row.module, row.entries, row.unchanged, row.lr) == ("mlp", 4, 2, 1e-3)
    # the two weights at 1.0 lose all of their 0.001; at 0.01 bf16's spacing is 2^-14, so little is lost
    assert row.lost_share == pytest.approx(math.sqrt(0.5), abs=0.02)


def test_float32_weights_keep_the_whole_step():
    (row,) = bf16_rounding.rounding(checkpoint(torch.tensor([1.0, 1.0, 0.01, 0.01])))
    assert row.unchanged == 0 and row.lost_share < 1e-4


def test_mols_multiplier_is_part_of_the_rate():
    ramp = {"start": 1, "end": 3, "start_values": {"mlp": 1.0}, "end_values": {"mlp": 10.0}}
    (row,) = bf16_rounding.rounding(checkpoint(torch.tensor([1.0, 1.0], dtype=torch.bfloat16), ramp=ramp))
    assert row.lr == pytest.approx(1e-2) and row.unchanged == 0  # 0.01 is more than half of 2^-8


def test_a_checkpoint_train_py_wrote_in_bf16_pure(tmp_path, capsys):
    assert run_train(tmp_path, "train.steps=6", "train.precision=bf16-pure", "mols.enabled=true",
                     "train.warmup_steps=3", "mols.estimate_at=1", "train.checkpoint_every=3") == 0
    assert bf16_rounding.main([str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "step 6, weights in bfloat16" in out
    for module in ("emb", "qk", "vo", "mlp", "head", "all"):
        assert f"\n  {module} " in out


def test_an_optimizer_without_adam_moments_is_refused(tmp_path, capsys):
    saved = checkpoint(torch.ones(2, dtype=torch.bfloat16))
    saved["optimizer"]["method"] = "lion"
    del saved["optimizer"]["state_dict"]["state"][0]["exp_avg_sq"]
    (tmp_path / "checkpoints").mkdir()
    torch.save(saved, tmp_path / "checkpoints" / "step_0000005.pt")
    assert bf16_rounding.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no AdamW moments" in err and "lion is not one" in err and "Traceback" not in err
