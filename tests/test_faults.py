"""A cluster job never loses more than a step and never trains on garbage: signals, non-finite
values, resume safety and bad input (issue 9). Each bad input exits 2 with one message and no
traceback, and leaves what was already written alone."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from multiprocess_launch import torchrun
from training.faults import EXIT_NONFINITE, EXIT_PREEMPTED
from fault_injection import read_only_directory
from training import checkpoint
from training.records import LOCK_FILE, read_metrics

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
TINY = ["model.size=llama_micro", "data.source=local", f"data.path={ASSETS / 'train.jsonl'}",
        f"data.val_path={ASSETS / 'val.jsonl'}", f"data.tokenizer={ASSETS / 'tokenizer'}", "data.num_workers=0",
        "data.seq_len=32", "data.val_tokens=2000", "train.global_batch=8", "train.micro_batch=4",
        "train.log_every=1", "optimizer.lr=5e-3", "train.threads=1", "train.eval_every=1000"]


def arguments(tmp_path, name, *overrides) -> list[str]:
    args = ["--config", str(ROOT / "configs" / "quickstart.yaml")]
    for item in [*TINY, f"run.out_dir={tmp_path}", f"run.name={name}", *overrides]:
        args += ["--set", item]
    return args


def run_train(tmp_path, name, *overrides) -> int:
    return train.main(arguments(tmp_path, name, *overrides))


def final_model(run_dir: Path) -> dict:
    return torch.load(sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)["model"]


def assert_same_model(a: dict, b: dict) -> None:
    for key, tensor in a.items():
        assert torch.equal(tensor, b[key]), key


def latest_train_step(run_dir: Path) -> int:
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    return max(steps, default=0)


def signal_when(process: subprocess.Popen, run_dir: Path, at_step: int, target_pid: int | None = None,
                timeout: float = 120, sig: int = signal.SIGTERM) -> int:
    """`sig` (SIGTERM) once training has logged `at_step`; returns the last step logged before the signal."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        step = latest_train_step(run_dir)
        if step >= at_step:
            os.kill(target_pid or process.pid, sig)
            return step
        time.sleep(0.02)
    raise AssertionError(f"training never reached step {at_step} (exit {process.poll()})")


def stopped_step(run_dir: Path) -> int:
    (record,) = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "stopped"]
    assert (run_dir / "checkpoints" / record["checkpoint"]).is_file()
    return record["step"]


# ------------------------------------------------------------------------------------------------
# Signals
# ------------------------------------------------------------------------------------------------

def test_sigterm_saves_the_step_it_stopped_at_and_resume_is_bit_identical(tmp_path):
    steps = ["train.steps=150", "train.checkpoint_every=0"]
    assert run_train(tmp_path, "straight", *steps) == 0
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *arguments(tmp_path, "stopped", *steps)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = signal_when(process, tmp_path / "stopped", at_step=5)
    out, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED, err[-2000:]
    assert "Traceback" not in err and "stopped by SIGTERM" in out
    stopped = stopped_step(tmp_path / "stopped")
    assert seen + 1 <= stopped <= seen + 2  # the step running when the signal came, or the next
    assert not (tmp_path / "stopped" / "summary.json").exists()
    assert run_train(tmp_path, "stopped", *steps, "run.resume=auto") == 0
    assert_same_model(final_model(tmp_path / "straight"), final_model(tmp_path / "stopped"))
    a = json.loads((tmp_path / "straight" / "summary.json").read_text())
    b = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    assert a["final_val_loss"] == b["final_val_loss"] and a["tokens_seen"] == b["tokens_seen"]


def worker_pids(run_name: str, rank: int | None = None) -> list[int]:
    """PIDs of train.py worker processes of this run (found through their command line and RANK)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"run.name={run_name}".encode() in command and b"torch.distributed.run" not in command[1:3]:
            ranks = [e for e in environ if e.startswith(b"RANK=")]
            if ranks and (rank is None or ranks[0] == f"RANK={rank}".encode()):
                pids.append(int(entry.name))
    return pids


def test_sigterm_to_a_two_rank_run_stops_every_rank_at_the_same_step(tmp_path):
    steps = ["train.steps=30", "train.checkpoint_every=0", "data.packing=false"]
    straight = torchrun(arguments(tmp_path, "straight", *steps))
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = torchrun(arguments(tmp_path, "stopped", *steps), wait=False)
    seen = signal_when(stopped, tmp_path / "stopped", at_step=3, target_pid=stopped.pid)  # to torchrun itself
    stopped.communicate(timeout=240)  # torchrun reports the SIGTERM it got; the workers saved and exited
    at = stopped_step(tmp_path / "stopped")
    assert seen + 1 <= at <= seen + 2
    assert [p.name for p in (tmp_path / "stopped" / "checkpoints").glob("*.pt")] == [f"step_{at:07d}.pt"]
    resumed = torchrun(arguments(tmp_path, "stopped", *steps, "run.resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_model(final_model(tmp_path / "straight"), final_model(tmp_path / "stopped"))


def test_a_dead_rank_restarts_the_group_which_resumes_from_the_last_checkpoint(tmp_path):
    steps = ["train.steps=30", "train.checkpoint_every=10", "data.packing=false"]
    process = torchrun(arguments(tmp_path, "restarted", *steps), max_restarts=1, wait=False)
    deadline = time.time() + 120
    while not (tmp_path / "restarted" / "checkpoints" / "step_0000010.pt").exists():
        assert time.time() < deadline and process.poll() is None, "no checkpoint appeared"
        time.sleep(0.02)
    victims = worker_pids("restarted", rank=1)
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    assert "resuming from step_00000" in out
    straight = torchrun(arguments(tmp_path, "straight", *steps))
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert_same_model(final_model(tmp_path / "straight"), final_model(tmp_path / "restarted"))


# ------------------------------------------------------------------------------------------------
# Non-finite values
# ------------------------------------------------------------------------------------------------

def poison(monkeypatch, *, first: int, last: int, tensor: str = "loss"):
    """Training losses (or one weight's gradient) turn NaN from micro-batch `first` to `last`
    (2 micro-batches per update here, so micro-batch 7 belongs to update 4)."""
    calls = {"n": 0}
    real = train.loss_sum_and_count

    def poisoned(model, batch):
        loss, count = real(model, batch)
        calls["n"] += 1
        if first <= calls["n"] <= last:
            if tensor == "loss":
                return loss * float("nan"), count
            weight = dict(model.named_parameters())[tensor]
            handle = []

            def nan_gradient(grad):  # only this weight's gradient goes NaN; the loss stays finite
                handle.pop().remove()
                return grad * float("nan")

            handle.append(weight.register_hook(nan_gradient))
        return loss, count

    monkeypatch.setattr(train, "loss_sum_and_count", poisoned)


def test_stop_names_the_parameter_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    poison(monkeypatch, first=7, last=10**9, tensor="model.layers.1.mlp.down_proj.weight")
    code = run_train(tmp_path, "nan", "train.steps=10", "train.checkpoint_every=2")
    assert code == EXIT_NONFINITE
    out = capsys.readouterr().out
    assert ("stopped: non-finite values in update 4 (first non-finite gradient: "
            "model.layers.1.mlp.down_proj.weight (module class mlp") in out
    assert "the last good checkpoint is" in out and "step_0000002.pt" in out
    (record,) = [r for r in read_metrics(tmp_path / "nan" / "metrics.jsonl") if r["kind"] == "nonfinite"]
    assert record["action"] == "stop" and record["step"] == 4
    assert sorted(p.name for p in (tmp_path / "nan" / "checkpoints").glob("*.pt"))[-1] == "step_0000002.pt"
    state = torch.load(tmp_path / "nan" / "checkpoints" / "step_0000002.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert not (tmp_path / "nan" / "summary.json").exists()


def test_skip_drops_a_non_finite_update_and_goes_on(tmp_path, monkeypatch):
    poison(monkeypatch, first=7, last=7)
    assert run_train(tmp_path, "skip", "train.steps=10", "train.on_nonfinite=skip") == 0
    records = read_metrics(tmp_path / "skip" / "metrics.jsonl")
    (skip,) = [r for r in records if r["kind"] == "nonfinite"]
    assert skip["step"] == 4 and skip["action"] == "skip" and skip["where"].startswith("the loss is non-finite")
    assert [r["skipped"] for r in records if r["kind"] == "train" and r["step"] >= 4] == [1] * 7
    assert all(torch.isfinite(t).all() for t in final_model(tmp_path / "skip").values())


def test_too_many_skips_in_a_row_stop_the_run(tmp_path, monkeypatch):
    poison(monkeypatch, first=3, last=10**9)
    code = run_train(tmp_path, "skips", "train.steps=10", "train.on_nonfinite=skip", "train.max_consecutive_skips=3")
    assert code == EXIT_NONFINITE
    records = [r for r in read_metrics(tmp_path / "skips" / "metrics.jsonl") if r["kind"] == "nonfinite"]
    assert [(r["step"], r["action"]) for r in records] == [(2, "skip"), (3, "skip"), (4, "stop")]


# ------------------------------------------------------------------------------------------------
# Resume safety and bad input: exit 2, one message, no traceback, nothing written lost
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def finished_run(tmp_path):
    assert run_train(tmp_path, "done", "train.steps=4", "train.checkpoint_every=2") == 0
    run_dir = tmp_path / "done"
    return run_dir, {p.name: p.read_bytes() for p in run_dir.rglob("*")  # run.lock: each launch says who it is
                     if p.is_file() and p.suffix != ".jsonl" and p.name != LOCK_FILE}


def assert_user_error(capsys, code: int, *expected: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err
    return err


def assert_untouched(run_dir: Path, before: dict) -> None:
    for name, data in before.items():
        matches = list(run_dir.rglob(name))
        assert matches and matches[0].read_bytes() == data, name


def test_resuming_with_changed_settings_lists_each_change(tmp_path, finished_run, capsys):
    run_dir, before = finished_run
    code = run_train(tmp_path, "done", "train.steps=4", "train.checkpoint_every=2", "run.resume=auto",
                     "optimizer.lr=0.05", "mols.min_alpha=2", "train.log_every=2")
    err = assert_user_error(capsys, code, "optimizer.lr: 0.005 -> 0.05", "mols.min_alpha: 1.0 -> 2.0",
                            "run.allow_resume_changes=true")
    assert "log_every" not in err  # logging cadence may change freely
    assert_untouched(run_dir, before)


def test_an_allowed_change_keeps_every_segments_settings(tmp_path, capsys):
    common = ["train.steps=6", "train.checkpoint_every=3"]
    assert run_train(tmp_path, "seg", *common) == 0
    (tmp_path / "seg" / "checkpoints" / "step_0000006.pt").unlink()
    (tmp_path / "seg" / "summary.json").unlink()
    first = (tmp_path / "seg" / "config.yaml").read_bytes()
    assert run_train(tmp_path, "seg", *common, "run.resume=auto", "optimizer.lr=0.004",
                     "run.allow_resume_changes=true") == 0
    assert "changed on resume (run.allow_resume_changes): optimizer.lr: 0.005 -> 0.004" in capsys.readouterr().out
    assert (tmp_path / "seg" / "config.yaml").read_bytes() == first
    assert "lr: 0.004" in (tmp_path / "seg" / "config.step_0000003.yaml").read_text()
    assert (tmp_path / "seg" / "environment.step_0000003.json").is_file()


def test_resuming_another_model_is_one_line(tmp_path, finished_run, capsys):
    run_dir, before = finished_run
    code = run_train(tmp_path, "done", "train.steps=4", "run.resume=auto", "model.size=llama_tiny",
                     "run.allow_resume_changes=true")
    err = assert_user_error(capsys, code, "holds a different model than this config builds")
    assert len(err.strip().splitlines()) == 1
    assert_untouched(run_dir, before)


def test_an_unreadable_latest_checkpoint_is_skipped_by_auto_and_named_when_explicit(tmp_path, capsys):
    """Checkpoints without checksums (written before they existed): they load with a note, and one
    that torch cannot read is skipped or named as before. (With checksums: tests/test_integrity.py.)"""
    assert run_train(tmp_path, "bad", "train.steps=6", "train.checkpoint_every=3") == 0
    (tmp_path / "bad" / "summary.json").unlink()
    for sums in (tmp_path / "bad" / "checkpoints").glob(f"*.{checkpoint.CHECKSUMS}"):
        sums.unlink()
    latest = tmp_path / "bad" / "checkpoints" / "step_0000006.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # cut short, as by a full disk
    capsys.readouterr()
    assert run_train(tmp_path, "bad", "train.steps=6", "train.checkpoint_every=3", "run.resume=auto") == 0
    out = capsys.readouterr().out
    assert "skipping unreadable checkpoint step_0000006.pt" in out
    earlier = tmp_path / "bad" / "checkpoints" / "step_0000003.pt"
    assert (f"note: checkpoint {earlier} has no checksums (written before they existed, or its save was cut off "
            f"before writing them): loaded without verifying it") in out
    latest.write_bytes(b"not a checkpoint")
    checkpoint.checksum_file(latest).unlink()
    code = run_train(tmp_path, "other", "train.steps=6", f"run.resume={latest}")
    err = assert_user_error(capsys, code, f"cannot read checkpoint {latest}")
    assert len(err.strip().splitlines()) == 1


def test_cuda_asked_for_but_absent(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = run_train(tmp_path, "cuda", "train.steps=2", "train.device=cuda")
    assert_user_error(capsys, code, "train.device is 'cuda' but no CUDA device is available")
    assert not (tmp_path / "cuda").exists()


def test_a_model_vocabulary_that_cuts_real_ids(tmp_path, capsys):
    code = run_train(tmp_path, "vocab", "train.steps=2", "model.vocab_size=100")
    assert_user_error(capsys, code, "model vocabulary (100) is smaller than the tokenizer's (2000)")


def test_wandb_online_without_credentials_fails_before_anything_is_built(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    started = time.time()
    code = run_train(tmp_path, "online", "train.steps=2", "run.wandb.mode=online")
    assert_user_error(capsys, code, "no credentials were found", "run.wandb.mode=offline")
    assert time.time() - started < 10 and not (tmp_path / "online").exists()


def test_the_environments_wandb_mode_wins_over_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert run_train(tmp_path, "env", "train.steps=2", "run.wandb.mode=online") == 0
    assert not (tmp_path / "env" / "wandb").exists()


def test_a_read_only_out_dir_is_one_line(tmp_path, capsys):
    with read_only_directory(tmp_path) as out:
        code = run_train(out, "ro", "train.steps=2")
    err = assert_user_error(capsys, code, f"cannot create the run directory {out / 'ro'}: ",
                            "(run.out_dir must be writable)")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("what", ["not text", "a directory"])
def test_a_config_path_that_is_not_a_config_file(tmp_path, capsys, what):
    path = tmp_path
    if what == "not text":
        path = tmp_path / "model.yaml"
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    code = train.main(["--config", str(path)])
    expected = {"not text": f"{path}: not a text file (byte 0x89 at offset 0 is not UTF-8): is it the config?",
                "a directory": f"{path}: is a directory, not a config file (name a .yaml file in it)"}[what]
    assert_user_error(capsys, code, expected)


def test_a_learning_rate_that_would_overflow_is_a_config_error(tmp_path, capsys):
    code = run_train(tmp_path, "lr", "train.steps=2", "optimizer.lr=1e300")
    assert_user_error(capsys, code, "optimizer.lr: must be > 0 and <= 1000, got 1e+300")
    assert not (tmp_path / "lr").exists()


def test_an_empty_data_file_says_so(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code = run_train(tmp_path, "empty", "train.steps=2", f"data.path={empty}")
    err = assert_user_error(capsys, code, f"data.path: {empty}: no documents (empty)")
    assert "StopIteration" not in err


def test_mols_samples_below_one_sample_of_all_ranks_says_what_it_measures(tmp_path, capsys):
    assert run_train(tmp_path, "few", "train.steps=4", "train.warmup_steps=3", "mols.enabled=true",
                     "mols.estimate_at=1", "mols.samples=2") == 0
    out = capsys.readouterr().out
    assert ("warning: mols.samples 2 is less than one gradient sample of all ranks (1 x 4 sequences) and a "
            "variance needs two: the calibration measures 8 sequences") in out
    assert "MoLS calibration at step 1: 8 sequences ..." in out
    (calibration,) = [r for r in read_metrics(tmp_path / "few" / "metrics.jsonl") if r["kind"] == "mols_calibration"]
    assert calibration["sequences"] == 8 and calibration["gradient_samples"] == 2
