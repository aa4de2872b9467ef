import subprocess
import sys
from pathlib import Path

import pytest

import train
from configs import ConfigError
from training.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "train: {steps: 100, global_batch: 64}\noptimizer: {lr: 1.0e-3}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\noptimizer: {name: adamw}\ntrain: {micro_batch: 8}\n")
    cfg = load_config(child, ["optimizer.lr=2.5e-3", "train.steps=200", "optimizer.betas=[0.9, 0.99]"])
    assert cfg.train.steps == 200 and cfg.train.global_batch == 64 and cfg.train.micro_batch == 8
    assert cfg.optimizer.lr == 2.5e-3 and cfg.optimizer.betas == [0.9, 0.99]


def test_paper_defaults():
    cfg = load_config(None, [])
    assert cfg.optimizer.betas == [0.9, 0.95] and cfg.optimizer.eps == 1e-8
    assert cfg.train.global_batch == 512 and cfg.data.seq_len == 256 and cfg.train.grad_clip == 1.0
    assert cfg.data.shuffle_seed == 42 and cfg.warmup_steps == 1000 and cfg.train.min_lr_ratio == 0.1
    assert cfg.mols_estimate_step == 100  # 1% of 10k steps


def test_every_problem_is_reported_together(tmp_path):
    bad = write(tmp_path / "bad.yaml", """
train: {stepz: 10, global_batch: 30, micro_batch: 8, precision: bf17}
optimizer: {lr: fast, name: adamww}
model: {size: llama_61m}
data: {source: local}
""")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    text = str(info.value)
    assert "train.stepz: unknown key (did you mean 'train.steps'?)" in text
    assert "train.precision" in text and "bf16-mixed" in text
    assert "optimizer.lr: expected a number" in text
    assert len(info.value.problems) >= 4


def test_value_problems_are_reported_together(tmp_path):
    bad = write(tmp_path / "bad.yaml", """
train: {steps: 10, global_batch: 30, micro_batch: 8, warmup_ratio: 2.0}
optimizer: {name: adamww}
model: {size: llama_61m}
data: {source: local}
mols: {enabled: true, estimate_at: 50, grouping: modulez}
""")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    text = str(info.value)
    for expected in ["global_batch (30) must be a multiple", "warmup_ratio", "adamw", "llama_60m",
                     "data.path: required", "mols.estimate_at", "did you mean 'modules'"]:
        assert expected in text, expected


@pytest.mark.parametrize("text, expected", [
    ("train: {steps: -5}\n", "train.steps: must be positive"),
    ("run: {wandb: {mode: sometimes}}\n", "run.wandb.mode"),
    ("nonsense: 1\n", "nonsense: unknown key"),
    ("optimizer: {betas: [0.9]}\n", "optimizer.betas"),
])
def test_train_main_returns_2_with_a_message_and_no_traceback(tmp_path, capsys, text, expected):
    bad = write(tmp_path / "bad.yaml", text)
    assert train.main(["--config", str(bad)]) == 2  # an exception escaping main would fail the test too
    out, err = capsys.readouterr()
    assert expected in err
    assert "Traceback" not in err + out


def test_the_train_py_command_exits_2_with_the_message_on_stderr(tmp_path):
    """The one check that needs a real process: `python train.py` turns main's 2 into its exit status."""
    bad = write(tmp_path / "bad.yaml", "train: {steps: -5}\n")
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(bad)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "train.steps: must be positive" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_config_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["optimizer.lr"])


def test_mols_reference_must_exist_in_the_grouping():
    with pytest.raises(ConfigError, match="'vo' is not a class of grouping 'attn_mlp'.*attn"):
        load_config(None, ["mols.grouping=attn_mlp"])
    assert load_config(None, ["mols.grouping=attn_mlp", "mols.reference=attn"]).mols.reference == "attn"
    assert load_config(None, ["mols.grouping=layers"]).mols.reference == "vo"


def test_snr_tracking_without_mols_says_what_to_set():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["mols.track_every=100"])
    assert "mols.track_every" in str(error.value) and "mols.fixed_multipliers: {}" in str(error.value)
    tracked = load_config(None, ["mols.track_every=100", "mols.enabled=true", "mols.fixed_multipliers={}"])
    assert tracked.mols.track_every == 100 and tracked.mols.fixed_multipliers == {}
