"""train.py's command line before a run: --help, --print-config, --dry-run, and mistyped flags."""
from pathlib import Path

import pytest
import yaml

import train
from training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
TABLE3_7B = ["--config", str(PAPER / "base.yaml"), "--config", str(PAPER / "models" / "llama_7b.yaml"),
             "--config", str(PAPER / "methods" / "adam8bit.yaml"), "--config", str(PAPER / "mols.yaml")]


def test_help_lists_every_config_section_and_how_to_override(capsys):
    with pytest.raises(SystemExit) as done:
        train.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--set section.key=value" in out
    for line in ["  optimizer: name, lr,", "  train: steps,", "  mols: enabled,", "  run: name,"]:
        assert line in out


def test_a_mistyped_flag_suggests_the_set_that_was_meant(capsys):
    assert train.main(["--config", str(ROOT / "configs" / "quickstart.yaml"), "--lr", "1e-3", "--warmup-ratio=0.2"]) == 2
    err = capsys.readouterr().err
    assert "unknown option --lr: did you mean --set optimizer.lr=1e-3?" in err
    assert "unknown option --warmup-ratio=0.2: did you mean --set train.warmup_ratio=0.2?" in err


def test_print_config_shows_the_resolved_config(capsys, tmp_path):
    args = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--set", "optimizer.lr=1e-3"]
    assert train.main([*args, "--print-config", "--set", f"run.out_dir={tmp_path}"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = load_config([ROOT / "configs" / "quickstart.yaml"], ["optimizer.lr=1e-3", f"run.out_dir={tmp_path}"])
    assert printed == expected.to_dict() and printed["optimizer"]["options"]["amsgrad"] is False
    assert not any(tmp_path.iterdir())


def test_dry_run_of_the_7b_table_3_config_estimates_memory_offline(capsys, tmp_path):
    assert train.main([*TABLE3_7B, "--dry-run", "--gpus", "16", "--set", f"run.out_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 6,738.42M (vocabulary 32000)" in out
    assert "tokens per step: 131,072 = 512 sequences x 256 (16 ranks x 8 micro-batch x 4 accumulation)" in out
    assert "estimated memory per GPU" in out and "optimizer state" in out
    # 8 bytes x 6.74B sharded over 16 ranks, 8 of them on a node (401.6 GiB per node unsharded)
    assert "host memory for its statistics: 3.1 GiB per rank, 25.1 GiB per node" in out
    assert not any(tmp_path.iterdir())


def test_dry_run_reports_a_batch_that_does_not_split(capsys):
    assert train.main([*TABLE3_7B, "--dry-run", "--gpus", "24"]) == 2
    assert "train.global_batch (512) must be a multiple of world size x train.micro_batch" in capsys.readouterr().err
