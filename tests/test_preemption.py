"""What a preempted, starved or fed-bad-data job leaves behind: a save that outlives torchrun's 30 s
(python -m tools.launch), a MoLS calibration that a signal stops within seconds, a full disk
said in one message (exit 74), and a bad row of a JSON lines file named by file and line (exit 2)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from multiprocess_launch import TAG_VARIABLE, tagged_pids
from test_faults import ASSETS, ROOT, arguments, assert_same_model, final_model, run_train, signal_when
from training import checkpoint
from training.faults import EXIT_PREEMPTED
from training.records import read_metrics

ENV = {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == kind]


def partial_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp")) if directory.is_dir() else []


def kill_tagged(tag: str) -> None:
    """SIGKILL whatever is left of a launch: torchrun starts each worker in a session of its own,
    so the launcher's process group does not hold them; they carry TAG_VARIABLE=tag instead."""
    for pid in tagged_pids(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------------------------------------
# A save longer than torchrun's 30 s: python -m tools.launch waits for it
# ------------------------------------------------------------------------------------------------

def test_a_save_slower_than_30_s_survives_sigterm_to_the_launcher(tmp_path):
    """torch 2.11's torchrun SIGKILLs its workers 30 s after it forwards SIGTERM; every save of
    tests/slow_save_train.py takes 35 s. Through tools.launch the run still stops cleanly."""
    run_dir, tag = tmp_path / "slow", uuid.uuid4().hex
    command = [sys.executable, "-m", "tools.launch", "--nproc_per_node", "2", "--standalone",
               str(ROOT / "tests" / "slow_save_train.py"),
               *arguments(tmp_path, "slow", "train.steps=400", "train.checkpoint_every=0", "data.packing=false")]
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        launcher = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, start_new_session=True,
                                    env={**os.environ, **ENV, "SLOW_SAVE_SECONDS": "35", TAG_VARIABLE: tag})
    try:
        seen = signal_when(launcher, run_dir, at_step=3, target_pid=launcher.pid)  # the launcher only
        signalled = time.time()
        code = launcher.wait(timeout=240)
        waited = time.time() - signalled
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
        kill_tagged(tag)
    stdout, stderr = (tmp_path / "out.log").read_text(), (tmp_path / "err.log").read_text()
    assert code == EXIT_PREEMPTED, stderr[-3000:]
    assert "[launch] stopped by SIGTERM: every worker saved its checkpoint" in stderr
    assert "sleeping 35 s before its rename" in stdout and waited > 35  # the save did outlast 30 s
    (stopped,) = records(run_dir, "stopped")
    at = stopped["step"]
    assert seen + 1 <= at <= seen + 2 and stopped["checkpoint"] == f"step_{at:07d}.pt"
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*.pt")) == [f"step_{at:07d}.pt"]
    assert partial_files(checkpoints) == []
    saved = torch.load(checkpoints / f"step_{at:07d}.pt", weights_only=True)
    assert saved["step"] == at and len(saved["ranks"]) == 2


@pytest.mark.parametrize("stop_signal, nproc", [(signal.SIGHUP, 2), (signal.SIGUSR1, 1)],
                         ids=["SIGHUP to 2 ranks", "SIGUSR1 to 1 rank"])
def test_the_launcher_passes_sighup_and_sigusr1_on_and_every_worker_saves(tmp_path, stop_signal, nproc):
    """A dropped ssh session (SIGHUP) and Slurm's warning signal (SIGUSR1) to the launcher: its
    workers get it, stop after the same step with a checkpoint, and the launcher exits 75."""
    run_dir, tag = tmp_path / "hup", uuid.uuid4().hex
    command = [sys.executable, "-m", "tools.launch", "--nproc_per_node", str(nproc), "--standalone",
               str(ROOT / "train.py"),
               *arguments(tmp_path, "hup", "train.steps=400", "train.checkpoint_every=0", "data.packing=false")]
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        launcher = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, start_new_session=True,
                                    env={**os.environ, **ENV, TAG_VARIABLE: tag})
    try:
        seen = signal_when(launcher, run_dir, at_step=3, target_pid=launcher.pid, sig=stop_signal)
        code = launcher.wait(timeout=240)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
        kill_tagged(tag)
    stderr = (tmp_path / "err.log").read_text()
    name = signal.Signals(stop_signal).name
    assert code == EXIT_PREEMPTED, stderr[-3000:]
    assert f"[launch] stopped by {name}: every worker saved its checkpoint" in stderr
    (stopped,) = records(run_dir, "stopped")
    at = stopped["step"]
    assert stopped["signal"] == name and seen + 1 <= at <= seen + 2
    assert checkpoint.verify(run_dir / "checkpoints" / f"step_{at:07d}.pt") is True
    assert len(torch.load(run_dir / "checkpoints" / f"step_{at:07d}.pt", weights_only=True)["ranks"]) == nproc


def test_sighup_stops_a_run_unless_it_was_started_ignoring_it():
    """nohup starts a process with SIGHUP ignored so that it outlives the session: it stays ignored,
    by the workers and by the launcher's list of signals to pass on."""
    from tools import launch
    from training.faults import STOP_SIGNALS, StopRequests

    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        stops = StopRequests()
        os.kill(os.getpid(), signal.SIGHUP)
        assert stops.name == "SIGHUP"
        assert "SIGHUP" in launch.signals_to_pass_on().split(",")
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        StopRequests()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert launch.signals_to_pass_on() == "SIGTERM,SIGINT,SIGQUIT,SIGUSR1,SIGUSR2"
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_a_partial_file_left_by_a_killed_save_is_removed_on_resume(tmp_path, capsys):
    common = ["train.steps=4", "train.checkpoint_every=2"]
    assert run_train(tmp_path, "killed", *common) == 0
    run_dir = tmp_path / "killed"
    finished = final_model(run_dir)
    # As if the job had been killed while step 4 was being saved: only its temporary file is there.
    (run_dir / "checkpoints" / "step_0000004.pt").unlink()
    (run_dir / "summary.json").unlink()
    partial = run_dir / "checkpoints" / ".step_0000004.pt.abc123.tmp"
    partial.write_bytes(b"\0" * 4096)
    capsys.readouterr()
    assert run_train(tmp_path, "killed", *common, "run.resume=auto") == 0
    out = capsys.readouterr().out
    assert "removed the partial file" in out and ".step_0000004.pt.abc123.tmp" in out
    assert "(resuming from step_0000002.pt)" in out
    assert not partial.exists() and partial_files(run_dir / "checkpoints") == []
    assert_same_model(finished, final_model(run_dir))


# ------------------------------------------------------------------------------------------------
# A signal during the MoLS calibration
# ------------------------------------------------------------------------------------------------

def wait_for_line(process: subprocess.Popen, log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if log.is_file() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared (exit {process.poll()}):\n{log.read_text()[-2000:]}")


def test_a_signal_during_the_mols_calibration_stops_it_within_seconds(tmp_path):
    # 4,096 sequences: about 1,024 gradient samples, some 15 s on two busy cores; the signal comes
    # right after the calibration starts and must not wait for its end.
    config = ["train.steps=6", "train.checkpoint_every=0", "mols.enabled=true", "mols.estimate_at=3", "train.warmup_steps=4",
              "mols.samples=4096"]
    command = [sys.executable, str(ROOT / "train.py"), *arguments(tmp_path, "stopped", *config)]
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, env={**os.environ, **ENV})
    try:
        wait_for_line(process, tmp_path / "out.log", "MoLS calibration at step 3: 4,096 sequences ...")
        signalled = time.time()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        took = time.time() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stdout, stderr = (tmp_path / "out.log").read_text(), (tmp_path / "err.log").read_text()
    assert code == EXIT_PREEMPTED, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "stopped by SIGTERM during the MoLS measurement before update 4 (it is redone on resume)" in stdout
    stopped_dir = tmp_path / "stopped"
    (stopped,) = records(stopped_dir, "stopped")
    assert stopped["step"] == 3 and records(stopped_dir, "mols_calibration") == []  # cut off, not finished
    assert not (stopped_dir / "mols.json").exists()

    assert run_train(tmp_path, "straight", *config) == 0
    (calibration,) = records(tmp_path / "straight", "mols_calibration")
    print(f"stopped {took:.1f} s after the signal; the whole calibration takes {calibration['seconds']:.1f} s")
    assert took < 15 and took < calibration["seconds"], (took, calibration["seconds"])

    assert run_train(tmp_path, "stopped", *config, "run.resume=auto") == 0
    assert_same_model(final_model(tmp_path / "straight"), final_model(stopped_dir))
    straight_mols = json.loads((tmp_path / "straight" / "mols.json").read_text())
    resumed_mols = json.loads((stopped_dir / "mols.json").read_text())
    for state in (straight_mols, resumed_mols):
        for measured in state["calibrations"]:
            measured.pop("seconds")
    assert straight_mols == resumed_mols and straight_mols["calibrations"][0]["alphas"] == calibration["alphas"]


# ------------------------------------------------------------------------------------------------
# A full disk
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_size(tmp_path_factory) -> int:
    """Bytes of one checkpoint of the TINY run (AdamW state included): what the small disk is sized by."""
    directory = tmp_path_factory.mktemp("size")
    assert run_train(directory, "size", "train.steps=2", "train.checkpoint_every=0") == 0
    return (directory / "size" / "checkpoints" / "step_0000002.pt").stat().st_size


@pytest.fixture
def small_disk(tmp_path, checkpoint_size):
    """A tmpfs that holds the run's records and one checkpoint, not two (skipped where mount fails)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    size_kib = (checkpoint_size * 3 // 2 + 200 * 1024) // 1024
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@pytest.mark.parametrize("caught_by", ["the free-space check", "the write itself"])
def test_a_full_disk_is_one_message_and_the_last_good_checkpoint_stays(small_disk, capsys, monkeypatch, caught_by):
    if caught_by == "the write itself":
        # The check before the write sees plenty of room, so torch.save runs into ENOSPC (torch's
        # C++ "unexpected pos" error); while that error is handled the real free space is reported.
        real = shutil.disk_usage

        def roomy(path):
            usage = real(path)
            return usage if sys.exc_info()[1] is not None else usage._replace(free=100 * checkpoint.GIB)

        monkeypatch.setattr(shutil, "disk_usage", roomy)
    write_errors = []
    real_disk_full = checkpoint._disk_full
    monkeypatch.setattr(checkpoint, "_disk_full", lambda err: write_errors.append(err) or real_disk_full(err))
    code = run_train(small_disk, "full", "train.steps=6", "train.checkpoint_every=2")
    monkeypatch.undo()
    if caught_by == "the write itself":
        assert len(write_errors) == 1 and checkpoint._disk_full(write_errors[0]), write_errors
    else:
        assert write_errors == []  # nothing was written
    out, err = capsys.readouterr()
    assert code == checkpoint.StorageError.exit_code == 74, err
    assert "Traceback" not in out + err and "enforce fail" not in out + err
    checkpoints = small_disk / "full" / "checkpoints"
    good = checkpoints / "step_0000002.pt"
    free = shutil.disk_usage(checkpoints).free
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: cannot write checkpoint step_0000004.pt: it needs about "), err
    assert f"MiB and {checkpoints} has {checkpoint.size(free)} free" in message
    assert f"the last good checkpoint is {good}" in message
    assert partial_files(checkpoints) == []
    assert sorted(p.name for p in checkpoints.glob("step_*.pt")) == [good.name]
    assert torch.load(good, weights_only=True)["step"] == 2
    assert not (small_disk / "full" / "summary.json").exists()


# ------------------------------------------------------------------------------------------------
# A bad row of a JSON lines file
# ------------------------------------------------------------------------------------------------

BAD_ROWS = {
    "bytes that are not UTF-8": (b'{"text": "a lone surrogate, raw: \xed\xa0\x80"}',
                                 "line 91 is not valid JSON (byte 0xed at byte 34 of the line is not valid UTF-8)"),
    "a lone surrogate escape": (b'{"text": "a lone surrogate, escaped: \\ud800"}',
                                "line 91 is not valid JSON (a lone surrogate escape such as \\ud800: not Unicode)"),
    "not JSON": (b"this row is not JSON", "line 91 is not valid JSON (Expecting value at column 1)"),
}


@pytest.mark.parametrize("bad, workers", [("bytes that are not UTF-8", 0), ("bytes that are not UTF-8", 1),
                                          ("a lone surrogate escape", 0), ("not JSON", 1)])
def test_a_bad_jsonl_row_names_the_file_and_line(tmp_path, capsys, monkeypatch, bad, workers):
    """Row 91 of 184 is bad. The raw bytes pass the one-row check before training and fail in the
    stream (with workers=1: in a DataLoader worker, whose error must reach the main process as the
    message alone); the other two fail pyarrow's parse of the whole file already in that check."""
    for handler in logging.getLogger("datasets").handlers:  # its handler may hold an earlier test's
        if isinstance(handler, logging.StreamHandler):       # (closed) capture stream
            monkeypatch.setattr(handler, "stream", sys.stderr)
    row, expected = BAD_ROWS[bad]
    lines = (ASSETS / "train.jsonl").read_bytes().splitlines()
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join([*lines[:90], row, *lines[90:]]) + b"\n")
    code = run_train(tmp_path, "bad", "train.steps=4", f"data.path={path}", f"data.num_workers={workers}")
    out, err = capsys.readouterr()
    assert code == 2, err
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1] == f"error: {path}: {expected}", err
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_the_launcher_reads_its_own_option_and_rejects_a_bad_one(capsys):
    from tools import launch

    assert launch.split_grace(["--stop-grace", "90", "--standalone", "train.py"]) == (90.0, ["--standalone", "train.py"])
    assert launch.split_grace(["--stop-grace=5", "train.py"]) == (5.0, ["train.py"])
    assert launch.split_grace(["--standalone", "train.py"]) == (600.0, ["--standalone", "train.py"])
    with pytest.raises(SystemExit) as exit_:
        launch.split_grace(["--stop-grace", "soon", "train.py"])
    assert exit_.value.code == 2 and "--stop-grace needs a number of seconds" in capsys.readouterr().err
