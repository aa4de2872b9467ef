"""train.py's command line before a run: --help, --print-config, --dry-run, and mistyped flags."""
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import train
from training.cli import config_keys, field_comments, first_sentence
from training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
TABLE3_7B = ["--config", str(PAPER / "base.yaml"), "--config", str(PAPER / "models" / "llama_7b.yaml"),
             "--config", str(PAPER / "methods" / "adam8bit.yaml"), "--config", str(PAPER / "mols.yaml")]


def test_help_lists_every_config_key_with_its_default_and_meaning(capsys):
    with pytest.raises(SystemExit) as done:
        train.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--set section.key=value" in out
    lines = out.splitlines()
    for key in config_keys():  # every key of every section, with its default
        assert any(line.startswith(f"  {key} = ") for line in lines), key
    for section, source in [("run", "training/config.py"), ("model", "models/config.py"), ("data", "data/config.py"),
                            ("train", "training/config.py"), ("optimizer", "optimizers/config.py"),
                            ("mols", "mols/config.py")]:
        assert f"{section} ({source}):" in lines
    # the meaning is the field's comment in the source: at the end of its line, or above it
    assert re.search(r"^  train\.micro_batch = 64 +sequences per forward/backward on one rank$", out, re.M)
    assert re.search(r"^  train\.precision = auto +\{auto\|bf16-mixed\|bf16-pure\|fp32\} auto: bf16-mixed on GPU, "
                     r"fp32 on", out, re.M)
    assert re.search(r"^  mols\.min_alpha = null +Floor on alpha\.$", out, re.M)
    assert re.search(r"^  model\.lora\.rank = 0 +0: no adapters, every parameter trains$", out, re.M)
    assert re.search(r"^  optimizer\.betas = \[0\.9, 0\.95\]$", out, re.M)


@dataclass
class _Documented:
    plain: int = 1
    inline: int = 2          # what inline means;
                             # continued here
    # a heading over what follows
    headed: str = "x"        # its own comment wins
    # Above it. More
    # that is not the first sentence.
    above: bool = False
    # a comment after a blank line, then a field with none

    bare: int = 0


def test_field_comments_read_the_source_comment_of_each_field():
    comments = field_comments(_Documented)
    assert comments == {"inline": "what inline means; continued here", "headed": "its own comment wins",
                        "above": "Above it. More that is not the first sentence."}
    assert first_sentence(comments["above"]) == "Above it."
    assert first_sentence("e.g. 0.95 stays. Not this") == "e.g. 0.95 stays."


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
    assert ("train.global_batch (512) must be a multiple of world size x train.micro_batch (24 x 8 = 192); no "
            "micro-batch can: 24 ranks do not divide it") in capsys.readouterr().err


def test_a_batch_that_does_not_split_names_the_micro_batch_that_does(capsys):
    table1_130m = ["--config", str(PAPER / "base.yaml"), "--config", str(PAPER / "models" / "llama_130m.yaml"),
                   "--config", str(PAPER / "methods" / "adam.yaml")]
    assert train.main([*table1_130m, "--dry-run", "--gpus", "16"]) == 2
    assert ("train.global_batch (512) must be a multiple of world size x train.micro_batch (16 x 64 = 1024); use "
            "train.micro_batch=32 (accumulation 1) or a smaller divisor of 32") in capsys.readouterr().err
    assert train.main([*table1_130m, "--dry-run", "--gpus", "16", "--set", "train.micro_batch=32"]) == 0
    assert "16 ranks x 32 micro-batch x 1 accumulation" in capsys.readouterr().out
    # the largest that divides up to the one given (its memory), on one rank too
    assert train.main([*table1_130m, "--dry-run", "--set", "train.micro_batch=48"]) == 2
    assert ("train.global_batch (512) must be a multiple of train.micro_batch (48); use train.micro_batch=32 "
            "(accumulation 16) or a smaller divisor of 512") in capsys.readouterr().err
