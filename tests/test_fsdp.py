"""train.parallel: fsdp (issue 19), on CPU with gloo: a sharded run trains what a DDP and a 1-process
run train, with and without MoLS; MoLS's sharded statistics give the unsharded estimate with half
the memory per rank on 2 ranks; sharded checkpoints resume bit-exactly, after a SIGTERM too, and on
another number of ranks; a sharded checkpoint reads as one file for export and evaluation; what
cannot run sharded is refused before anything starts."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from models.build import build_model
from models.init import initial_value
from multiprocess_launch import torchrun
from tools.trained_model import load_checkpoint
from training.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
STEPS = 12
# Token shards of the test assets (written once per session below), unpacked documents (the paper's
# scheme) and one sequence per MoLS sample: 1 and 2 ranks then see the same global batches and the
# same gradient samples.
TINY = ["model.size=llama_micro", "data.source=tokens", f"data.tokenizer={ASSETS / 'tokenizer'}", "data.num_workers=0",
        "data.seq_len=32", "data.val_tokens=4000", "data.packing=false", "train.global_batch=8",
        "train.micro_batch=2", "train.log_every=1", "optimizer.lr=5e-3", "train.threads=1", "train.eval_every=1000",
        f"train.steps={STEPS}", "train.checkpoint_every=6", "train.keep_checkpoints=3", "train.warmup_steps=8",
        "mols.enabled=true", "mols.estimate_at=2", "mols.samples=16", "mols.micro_batch=1"]


@pytest.fixture(scope="module", autouse=True)
def shards(tmp_path_factory) -> dict:
    """The assets' training and validation texts as token shards (scripts/pretokenize.py)."""
    from scripts import pretokenize
    out = tmp_path_factory.mktemp("shards")
    for split in ("train", "val"):
        assert pretokenize.main(["--source", "local", "--path", str(ASSETS / f"{split}.jsonl"), "--tokenizer",
                                 str(ASSETS / "tokenizer"), "--out", str(out / split), "--docs-per-shard", "64",
                                 "--workers", "0", "--quiet"]) == 0
    DATA[:] = [f"data.path={out / 'train'}", f"data.val_path={out / 'val'}"]
    return out


DATA: list[str] = []  # data.path and data.val_path of the shards


def arguments(out: Path, name: str, *overrides: str) -> list[str]:
    args = ["--config", str(ROOT / "configs" / "quickstart.yaml")]
    for item in [*TINY, *DATA, f"run.out_dir={out}", f"run.name={name}", *overrides]:
        args += ["--set", item]
    return args


def launch(out: Path, name: str, *overrides: str, nproc: int = 2) -> None:
    if nproc == 1:
        assert train.main(arguments(out, name, *overrides)) == 0
    else:
        result = torchrun(arguments(out, name, *overrides), nproc=nproc)
        assert result.returncode == 0, result.stderr[-3000:]


def weights(run_dir: Path, step: int = STEPS) -> dict:
    (saved,) = [p for p in (run_dir / "checkpoints").glob(f"step_{step:07d}.*") if p.suffix in (".pt", ".dcp")]
    _, state = load_checkpoint(saved)
    return state["model"]


def calibration(run_dir: Path) -> dict:
    return json.loads((run_dir / "mols.json").read_text())["calibrations"][0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shards) -> Path:
    """The same training as one process, 2-rank DDP (sharded and whole MoLS statistics) and
    2-rank FSDP (with and without activation checkpointing); all initialised by name."""
    out = tmp_path_factory.mktemp("fsdp")
    launch(out, "one", "model.init=by_name", nproc=1)
    launch(out, "ddp", "model.init=by_name")
    launch(out, "ddp_whole_statistics", "model.init=by_name", "mols.shard_statistics=false")
    launch(out, "fsdp", "train.parallel=fsdp")
    launch(out, "fsdp_checkpointed", "train.parallel=fsdp", "model.gradient_checkpointing=true")
    return out


def assert_close_models(a: dict, b: dict) -> None:
    """Equal to float rounding, as Adam passes it on: an embedding row of a token no batch holds has a
    gradient of 0 or of rounding noise, which Adam's g / sqrt(v) turns into a step of either size
    (up to 2.5e-5 seen here, against a learning rate of 5e-3); every other weight agrees to 1e-7."""
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4, msg=key)


def test_fsdp_trains_what_ddp_and_one_process_train(runs):
    one = weights(runs / "one")
    for name in ("ddp", "fsdp", "fsdp_checkpointed"):
        assert_close_models(weights(runs / name), one)
    losses = {name: json.loads((runs / name / "summary.json").read_text())["final_val_loss"]
              for name in ("one", "ddp", "fsdp", "fsdp_checkpointed")}
    assert max(losses.values()) - min(losses.values()) < 1e-4, losses
    alphas = {name: calibration(runs / name)["alphas"] for name in ("one", "ddp", "fsdp", "fsdp_checkpointed")}
    for name, found in alphas.items():
        assert found == pytest.approx(alphas["one"], rel=1e-4), name


def test_without_mols_too(tmp_path):
    plain = ["mols.enabled=false", "train.checkpoint_every=0"]
    launch(tmp_path, "one", "model.init=by_name", *plain, nproc=1)
    launch(tmp_path, "fsdp", "train.parallel=fsdp", *plain)
    assert_close_models(weights(tmp_path / "fsdp"), weights(tmp_path / "one"))


def test_sharded_mols_statistics_equal_whole_ones_with_half_the_memory_per_rank(runs):
    sharded, whole = calibration(runs / "ddp"), calibration(runs / "ddp_whole_statistics")
    assert sharded["module_snr"] == pytest.approx(whole["module_snr"], rel=1e-5)
    assert sharded["alpha_se"] == pytest.approx(whole["alpha_se"], rel=1e-4)
    assert sharded["gradient_samples"] == whole["gradient_samples"] == 16
    # bytes held by the moments' storages on one rank: 1/2 on 2 ranks (llama_micro's rows are even)
    assert sharded["statistics_bytes"] * 2 == whole["statistics_bytes"] > 0
    assert calibration(runs / "fsdp")["statistics_bytes"] == sharded["statistics_bytes"]
    assert sharded["statistics_node_bytes"] == 2 * sharded["statistics_bytes"]  # torchrun's 2 local ranks


def test_a_killed_fsdp_run_resumes_bit_exactly_on_as_many_ranks(runs, tmp_path):
    resumed = tmp_path / "fsdp"
    shutil.copytree(runs / "fsdp", resumed)
    shutil.rmtree(resumed / "checkpoints" / f"step_{STEPS:07d}.dcp")  # killed after the step-6 checkpoint
    (resumed / "summary.json").unlink()
    launch(tmp_path, "fsdp", "train.parallel=fsdp", "run.resume=auto")
    straight, again = weights(runs / "fsdp"), weights(resumed)
    for key in straight:
        assert torch.equal(straight[key], again[key]), key
    assert json.loads((resumed / "mols.json").read_text()) == json.loads((runs / "fsdp" / "mols.json").read_text())


@pytest.mark.parametrize("saved_on, resumed_on", [(2, 1), (1, 2)])
def test_a_sharded_checkpoint_resumes_on_another_number_of_ranks(runs, tmp_path, saved_on, resumed_on):
    source = runs / "fsdp"
    if saved_on == 1:
        launch(tmp_path, "fsdp_source", "train.parallel=fsdp", nproc=1)
        source = tmp_path / "fsdp_source"
    resumed = tmp_path / "fsdp_resharded"
    shutil.copytree(source, resumed)
    shutil.rmtree(resumed / "checkpoints" / f"step_{STEPS:07d}.dcp")
    (resumed / "summary.json").unlink()
    launch(tmp_path, "fsdp_resharded", "train.parallel=fsdp", "run.resume=auto", nproc=resumed_on)
    assert_close_models(weights(resumed), weights(runs / "fsdp"))


def test_sigterm_saves_a_sharded_checkpoint_within_a_step(runs, tmp_path):
    from test_faults import signal_when
    steps = ["train.parallel=fsdp", "train.steps=400", "train.checkpoint_every=0", "mols.enabled=false"]
    stopped = torchrun(arguments(tmp_path, "fsdp_stopped", *steps), wait=False)
    seen = signal_when(stopped, tmp_path / "fsdp_stopped", at_step=3, target_pid=stopped.pid)
    out, _ = stopped.communicate(timeout=240)  # torchrun reports the signal it got; the workers saved
    assert "stopped by" in out
    (record,) = [r for r in read_metrics(tmp_path / "fsdp_stopped" / "metrics.jsonl") if r["kind"] == "stopped"]
    at = record["step"]
    assert record["checkpoint"] == f"step_{at:07d}.dcp" and seen + 1 <= at <= seen + 2
    assert sorted(p.name for p in (tmp_path / "fsdp_stopped" / "checkpoints").iterdir()) == [f"step_{at:07d}.dcp"]
    assert load_checkpoint(tmp_path / "fsdp_stopped")[1]["step"] == at


def test_consolidation_writes_the_model_export_and_evaluation_read(runs, tmp_path):
    out = tmp_path / "model.pt"
    done = subprocess.run([sys.executable, "-m", "tools.consolidate", str(runs / "fsdp"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    state = torch.load(out, weights_only=True)
    assert state["step"] == STEPS and state["config"]["train"]["parallel"] == "fsdp"
    for key, tensor in weights(runs / "fsdp").items():
        assert torch.equal(state["model"][key], tensor), key
    exported = tmp_path / "hf"
    done = subprocess.run([sys.executable, "scripts/export_hf.py", str(runs / "fsdp"), str(exported)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (exported / "config.json").is_file()


def test_what_cannot_run_sharded_is_refused_before_anything_starts(tmp_path, capsys):
    code = train.main(arguments(tmp_path, "refused", "train.parallel=fsdp", "optimizer.name=muon",
                                "model.init=transformers"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "does not run optimizer 'muon'" in err and "orthogonalises" in err and "model.init: transformers" in err
    assert not (tmp_path / "refused").exists()


def test_a_ddp_checkpoint_is_not_resumed_sharded(runs, tmp_path, capsys):
    shutil.copytree(runs / "one", tmp_path / "one")
    code = train.main(arguments(tmp_path, "one", "train.parallel=fsdp", "run.resume=auto",
                                "run.allow_resume_changes=true"))
    assert code == 2 and "tools.consolidate" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["llama_micro", "gpt2_micro", "qwen2_micro"])
def test_by_name_initial_values_follow_transformers_own_initialisation(size):
    torch.manual_seed(0)
    model = build_model(size, 512)
    for name, param in model.named_parameters():
        mine = initial_value(model.config, name, param.shape, seed=0)
        assert torch.equal(initial_value(model.config, name, param.shape, seed=0), mine)  # the same every time
        if param.std() == 0:  # ones and zeros exactly
            assert torch.equal(mine, param.detach()), name
        else:
            assert float(mine.std()) == pytest.approx(float(param.std()), rel=0.15), name
            assert not torch.equal(initial_value(model.config, name, param.shape, seed=1), mine)


def test_a_non_finite_update_is_skipped_under_fsdp_as_under_ddp(tmp_path, monkeypatch):
    from test_faults import poison
    poison(monkeypatch, first=9, last=9)  # a micro-batch of update 3 (4 per update here)
    assert train.main(arguments(tmp_path, "fsdp_skip", "train.parallel=fsdp", "train.on_nonfinite=skip",
                                "mols.enabled=false")) == 0
    (skip,) = [r for r in read_metrics(tmp_path / "fsdp_skip" / "metrics.jsonl") if r["kind"] == "nonfinite"]
    assert skip["step"] == 3 and skip["action"] == "skip" and skip["where"].startswith("the loss is non-finite")
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "fsdp_skip").values())


@pytest.mark.parametrize("size", ["gpt2_micro", "qwen2_micro"])
def test_fsdp_trains_what_one_process_trains_on_every_parameter_with_mols(tmp_path, size):
    """GPT-2 (its fused c_attn: Q, K and V slices of one weight and one bias, scaled by class) and
    Qwen2 (q/k/v biases, tied embedding), LLaMA's in `runs` above. The fused bias is sharded along
    the dimension its slices cut: each rank scales the rows it holds."""
    plain = [f"model.size={size}", "train.checkpoint_every=0"]
    launch(tmp_path, "one", *plain, "model.init=by_name", nproc=1)
    launch(tmp_path, "fsdp", *plain, "train.parallel=fsdp")
    assert_close_models(weights(tmp_path / "fsdp"), weights(tmp_path / "one"))
    alphas = calibration(tmp_path / "fsdp")["alphas"]
    assert abs(alphas["qk"] - 1) > 0.1 and abs(alphas["qk"] - alphas["vo"]) > 0.1, alphas  # the slices differ


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-pure"])
def test_fsdp_in_bf16_trains_what_one_process_trains_within_bf16_rounding(tmp_path, precision):
    """bf16-mixed: FSDP gathers bf16 copies of fp32 master weights and reduces in fp32, one process
    autocasts; bf16-pure: bf16 weights both. bf16 rounding differs with the order of the sums, and
    Adam turns the rounding of tiny gradients into whole steps of either sign, so the weights part
    by a few percent (a 2-rank DDP run parts from one process as far: 1.6-2.9% of a tensor's norm,
    0.06 on an embedding entry, measured), while the validation loss agrees to 1e-4 (measured: 7.5e-5)."""
    plain = [f"train.precision={precision}", "train.checkpoint_every=0"]
    launch(tmp_path, "one", *plain, "model.init=by_name", nproc=1)
    launch(tmp_path, "fsdp", *plain, "train.parallel=fsdp")
    one, fsdp = weights(tmp_path / "one"), weights(tmp_path / "fsdp")
    assert set(one) == set(fsdp)
    for key in one:
        assert fsdp[key].dtype == one[key].dtype, key
        distance = (fsdp[key].float() - one[key].float()).norm() / one[key].float().norm()
        assert distance < 0.06, (key, float(distance))
    losses = [json.loads((tmp_path / name / "summary.json").read_text())["final_val_loss"] for name in ("one", "fsdp")]
    assert abs(losses[0] - losses[1]) < 5e-4, losses
