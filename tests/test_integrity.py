"""Nothing mixed, nothing silently corrupt (issue 30): one writer per run directory; checkpoints
that prove they hold what was written (`resume: auto` skips a corrupt one, an explicit one exits 2);
a sharded checkpoint that replaces one of the same step atomically, with a crash at the worst
moment leaving a loadable checkpoint; a finished run resumed that does not save again; and ranks
that agree before a collective save, so a full disk on one rank stops every rank with exit 74
instead of hanging them (issue 29). The faults come from tests/fault_injection.py."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import train
from fault_injection import (SCRIPT, SimulatedCrash, crash_at, fake_free_space, faults_env, flip_byte,
                             no_file_locks, run_lock_held, small_disk)
from multiprocess_launch import torchrun
from test_faults import (ROOT, arguments, assert_same_model, assert_user_error, final_model, latest_train_step,
                         run_train)
from training import checkpoint
from tools.trained_model import load_checkpoint
from training.records import LOCK_FILE

FSDP = ["train.parallel=fsdp", "train.steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=3"]


# ------------------------------------------------------------------------------------------------
# One writer per run directory
# ------------------------------------------------------------------------------------------------

def test_a_second_launch_into_a_running_directory_is_refused_and_the_first_runs_on_alone(tmp_path, capsys):
    steps = ["train.steps=40", "train.checkpoint_every=10"]
    run_dir = tmp_path / "shared"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *arguments(tmp_path, "shared", *steps)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while latest_train_step(run_dir) < 1:
            assert time.time() < deadline and first.poll() is None, "the first launch never trained"
            time.sleep(0.05)
        code = run_train(tmp_path, "shared", *steps)  # the same command again, while the first one trains
        _, first_err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    err = assert_user_error(capsys, code, f"run directory {run_dir} is in use by another launch "
                                          f"(pid {first.pid} on {socket.gethostname()}, started ")
    assert len(err.strip().splitlines()) == 1
    assert first.returncode == 0, first_err[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]  # all whole
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 41))  # one writer, in order
    assert [r["step"] for r in records if r["kind"] == "val"] == [0, 40]


def test_a_directory_locked_by_another_process_is_refused_until_that_process_dies(tmp_path, capsys):
    with run_lock_held(tmp_path / "held") as holder:
        code = run_train(tmp_path, "held", "train.steps=2")
        assert_user_error(capsys, code, f"is in use by another launch (pid {holder.pid} on")
        assert not (tmp_path / "held" / "checkpoints").exists()
    assert run_train(tmp_path, "held", "train.steps=2") == 0  # the holder was SIGKILLed: its lock went with it


def test_a_filesystem_without_locks_is_said_in_one_line_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    no_file_locks(monkeypatch, tmp_path)
    assert run_train(tmp_path, "unlocked", "train.steps=2") == 0
    assert (f"warning: the filesystem of {tmp_path / 'unlocked'} does not lock files (No locks available): a second "
            f"launch into this run directory would not be refused") in capsys.readouterr().out


def test_a_run_killed_with_sigkill_is_resumed_at_once(tmp_path, capsys):
    steps = ["train.steps=6", "train.checkpoint_every=2"]
    kill = {"point": "training.state.TrainingState.save", "call": 1, "when": "after", "action": "kill"}
    killed = subprocess.Popen([sys.executable, str(SCRIPT), *arguments(tmp_path, "killed", *steps)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **faults_env(kill)})
    _, err = killed.communicate(timeout=180)
    assert killed.returncode == -signal.SIGKILL, err[-3000:]
    run_dir = tmp_path / "killed"
    assert (run_dir / LOCK_FILE).read_text().startswith(f"pid {killed.pid} on ")  # it held the lock when it died
    assert run_train(tmp_path, "killed", *steps, "run.resume=auto") == 0
    assert "(resuming from step_0000002.pt)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# Checksums
# ------------------------------------------------------------------------------------------------

def test_a_flipped_byte_is_found_auto_resumes_from_the_one_before_and_an_explicit_path_exits_2(tmp_path, capsys):
    steps = ["train.steps=4", "train.checkpoint_every=2"]
    assert run_train(tmp_path, "rot", *steps) == 0
    run_dir = tmp_path / "rot"
    latest = run_dir / "checkpoints" / "step_0000004.pt"
    finished = final_model(run_dir)
    (run_dir / "summary.json").unlink()
    assert checkpoint.verify(latest) is True
    flip_byte(latest)
    torch.load(latest, weights_only=True)  # torch alone reads it without a word
    with pytest.raises(checkpoint.CorruptCheckpoint, match="bytes 0-.* of step_0000004.pt differ"):
        checkpoint.verify(latest)
    capsys.readouterr()

    code = run_train(tmp_path, "other", *steps, f"run.resume={latest}")
    err = assert_user_error(capsys, code, f"checkpoint {latest} is corrupt: bytes 0-")
    assert len(err.strip().splitlines()) == 1

    assert run_train(tmp_path, "rot", *steps, "run.resume=auto") == 0
    out = capsys.readouterr().out
    assert "warning: skipping corrupt checkpoint step_0000004.pt" in out and "(resuming from step_0000002.pt)" in out
    assert checkpoint.verify(latest) is True  # step 4 saved again, whole, in place of the corrupt one
    assert_same_model(finished, final_model(run_dir))

    # The run is finished: resuming it evaluates and writes its summary, and saves nothing again.
    before = latest.stat().st_mtime_ns, checkpoint.checksum_file(latest).stat().st_mtime_ns
    assert run_train(tmp_path, "rot", *steps, "run.resume=auto") == 0
    assert "(resuming from step_0000004.pt)" in capsys.readouterr().out
    assert (latest.stat().st_mtime_ns, checkpoint.checksum_file(latest).stat().st_mtime_ns) == before


def sharded_weights(path) -> dict:
    return load_checkpoint(path)[1]["model"]


def test_a_sharded_checkpoint_is_checked_and_replaced_atomically(tmp_path, capsys, monkeypatch):
    assert run_train(tmp_path, "sharded", *FSDP) == 0
    checkpoints = tmp_path / "sharded" / "checkpoints"
    latest, earlier = checkpoints / "step_0000004.dcp", checkpoints / "step_0000002.dcp"
    finished = sharded_weights(latest)
    (tmp_path / "sharded" / "summary.json").unlink()

    shard, _ = flip_byte(latest)  # its largest file: shards of the model and optimizer
    with pytest.raises(checkpoint.CorruptCheckpoint, match=f"of step_0000004.dcp/{shard.name} differ"):
        checkpoint.verify(latest)
    # auto skips it, resumes from step 2 and saves step 4 again, over the existing directory
    assert run_train(tmp_path, "sharded", *FSDP, "run.resume=auto") == 0
    out = capsys.readouterr().out
    assert "warning: skipping corrupt checkpoint step_0000004.dcp" in out and "(resuming from step_0000002.dcp)" in out
    assert checkpoint.verify(latest) is True
    assert sorted(p.name for p in checkpoints.iterdir()) == [earlier.name, latest.name]
    for key, tensor in finished.items():
        assert torch.equal(sharded_weights(latest)[key], tensor), key

    # Killed between setting the old step 4 aside and moving the new one in: the worst moment.
    crash_at(monkeypatch, "training.checkpoint._set_aside", when="after")
    with pytest.raises(SimulatedCrash):
        train.main(arguments(tmp_path, "sharded", *FSDP, f"run.resume={earlier}"))
    monkeypatch.undo()
    assert not latest.exists()
    assert sorted(p.name for p in checkpoints.iterdir()) == [".step_0000004.dcp.old", ".step_0000004.dcp.tmp",
                                                              earlier.name]
    put_back = (checkpoints / ".step_0000004.dcp.old" / checkpoint.TRAINER_FILE).stat().st_mtime_ns
    capsys.readouterr()
    assert run_train(tmp_path, "sharded", *FSDP, "run.resume=auto") == 0
    out = capsys.readouterr().out
    assert "put back step_0000004.dcp: a save of the same step was cut off before it replaced it" in out
    assert "removed the partial file of a checkpoint save that was killed: .step_0000004.dcp.tmp" in out
    assert "(resuming from step_0000004.dcp)" in out
    assert sorted(p.name for p in checkpoints.iterdir()) == [earlier.name, latest.name]
    assert (latest / checkpoint.TRAINER_FILE).stat().st_mtime_ns == put_back  # finished: not saved again
    assert checkpoint.verify(latest) is True


# ------------------------------------------------------------------------------------------------
# Ranks agree before a collective save
# ------------------------------------------------------------------------------------------------

def test_one_ranks_full_disk_stops_every_rank_with_74_instead_of_hanging_them(tmp_path):
    """Rank 1 alone finds no free space before the step-4 save. Without agreement it would skip the
    collective write that rank 0 enters, and both would wait for the other for an hour."""
    exit_codes = tmp_path / "exit_codes"
    exit_codes.mkdir()
    full = {"rank": 1, "point": "training.checkpoint.save_sharded", "call": 2, "action": "disk_full"}
    result = torchrun(arguments(tmp_path, "agree", *FSDP), script=SCRIPT, timeout=240,
                      env=faults_env(full, exit_codes=exit_codes))
    output = result.stdout + result.stderr
    assert {p.name: p.read_text() for p in exit_codes.iterdir()} == {"rank_0.exit": "74", "rank_1.exit": "74"}, \
        output[-3000:]
    checkpoints = tmp_path / "agree" / "checkpoints"
    assert (f"error: cannot write checkpoint step_0000004.dcp: this rank's part needs about" in result.stderr
            and f"{checkpoints} has 0.0 MiB free; the last good checkpoint is {checkpoints / 'step_0000002.dcp'}"
            in result.stderr and "(rank 1)" in result.stderr), output[-3000:]
    for ours in ("train.py", "training/"):  # one message each, no traceback (torchrun adds its own report)
        assert f'File "{ROOT / ours}' not in output
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_0000002.dcp"]
    assert checkpoint.verify(checkpoints / "step_0000002.dcp") is True


def test_a_disk_that_fills_up_during_a_sharded_save_is_one_message_and_the_last_checkpoint_stays(
        tmp_path, capsys, monkeypatch):
    """Room for the run's records and one sharded checkpoint (2.1 MB here), not two; the check
    before writing is made to see plenty, so the collective write itself runs out of space."""
    with small_disk(tmp_path, 3200 * 1024) as disk:
        fake_free_space(monkeypatch, 100 * checkpoint.GIB, real_while_handling_an_error=True)
        code = run_train(disk, "full", *FSDP)
        monkeypatch.undo()
        checkpoints = disk / "full" / "checkpoints"
        err = capsys.readouterr().err
        assert code == checkpoint.StorageError.exit_code == 74, err
        message = err.strip().splitlines()[-1]
        assert message.startswith(f"error: cannot write checkpoint step_0000004.dcp: {checkpoints} filled up while "
                                  f"it was written (") and "Traceback" not in err
        assert f"the last good checkpoint is {checkpoints / 'step_0000002.dcp'}" in message
        assert sorted(p.name for p in checkpoints.iterdir()) == ["step_0000002.dcp"]  # no partial directory left
        assert checkpoint.verify(checkpoints / "step_0000002.dcp") is True


def test_a_sharded_tensor_counts_only_this_ranks_part():
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        # this rank's 4 rows of a 16-row tensor (as on rank 0 of 4)
        part = DTensor.from_local(torch.zeros(4, 8), mesh, [Shard(0)], run_check=False, shape=torch.Size([16, 8]),
                                  stride=(8, 1))
        assert part.numel() == 128 and checkpoint.tensor_bytes({"w": part, "b": [torch.zeros(2)]}) == 4 * 8 * 4 + 8
    finally:
        dist.destroy_process_group()


def test_the_checksum_benchmark_runs(tmp_path, capsys):
    """scripts/bench_checksum.py (docs/performance.md's figures), on a tiny checkpoint."""
    from scripts import bench_checksum
    assert bench_checksum.main(["--gib", "0.01", "--repeats", "1", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "checksums in the page cache:  1 thread" in out and "verify from the disk:" in out
    assert "7B with AdamW (81 GB) at these rates: checksums when saving" in out
    assert not (tmp_path / "checkpoints").exists()
