"""Training on token shards (data.source: tokens): ranks split the shards, and resume is exact."""
import json
from pathlib import Path

import pytest
import torch

import train
from multiprocess_launch import torchrun
from scripts import pretokenize

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.corpus  # shards of the embedded corpus, embedded-8k / embedded-32k tokenizers


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    for split in ("train", "val"):  # the embedded corpus's val split: a few hundred documents, seconds
        assert pretokenize.main(["--source", "embedded", "--split", "val", "--tokenizer", "embedded-8k",
                                 "--out", str(out / split), "--docs-per-shard", "100", "--quiet"]) == 0
    return out


def arguments(shards, tmp_path, name, *overrides):
    settings = ["model.size=llama_micro", "data.tokenizer=embedded-8k", "data.source=tokens",
                f"data.path={shards / 'train'}", f"data.val_path={shards / 'val'}", "data.seq_len=32",
                "data.val_tokens=3000", "train.global_batch=8", "train.micro_batch=4", "train.threads=1",
                "train.eval_every=1000", f"run.out_dir={tmp_path}", f"run.name={name}", *overrides]
    args = ["--config", str(ROOT / "configs" / "quickstart.yaml")]
    for item in settings:
        args += ["--set", item]
    return args


def final(run_dir: Path) -> tuple[dict, float]:
    state = torch.load(sorted((run_dir / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    return state["model"], json.loads((run_dir / "summary.json").read_text())["final_val_loss"]


def test_a_killed_and_resumed_run_on_shards_is_bit_identical(shards, tmp_path):
    common = ["train.steps=12", "train.checkpoint_every=5", "data.packing=true", "data.pack_window=16"]
    assert train.main(arguments(shards, tmp_path, "straight", *common)) == 0
    assert train.main(arguments(shards, tmp_path, "killed", *common)) == 0
    killed = tmp_path / "killed"  # as if killed after the step-10 checkpoint: drop what came later
    (killed / "checkpoints" / "step_0000012.pt").unlink()
    (killed / "summary.json").unlink()
    assert train.main(arguments(shards, tmp_path, "killed", *common, "run.resume=auto")) == 0
    (a, loss_a), (b, loss_b) = final(tmp_path / "straight"), final(killed)
    assert loss_a == loss_b and all(torch.equal(a[k], b[k]) for k in a)


def test_two_ranks_on_shards_equal_one_rank_with_the_same_global_batch(shards, tmp_path):
    common = ["train.steps=6", "data.packing=false"]
    assert train.main(arguments(shards, tmp_path, "one", *common)) == 0
    result = torchrun(arguments(shards, tmp_path, "two", *common), nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    (a, loss_a), (b, loss_b) = final(tmp_path / "one"), final(tmp_path / "two")
    for key, tensor in a.items():
        torch.testing.assert_close(b[key], tensor, rtol=1e-4, atol=1e-5)
    assert loss_b == pytest.approx(loss_a, rel=1e-4)


def test_shards_from_another_tokenizer_are_refused(shards, tmp_path, capsys):
    code = train.main(arguments(shards, tmp_path, "other", "train.steps=2", "data.tokenizer=embedded-32k"))
    assert code == 2
    err = capsys.readouterr().err
    assert "data.path: token shards in" in err and "were made with tokenizer 'embedded-8k'" in err
    assert "Traceback" not in err
