"""Faults on demand, for the tests of what a run survives: a flipped byte, a full disk, a run
directory locked by another process, a read-only filesystem, a process that dies at a named point.

In this process (with pytest's monkeypatch, undone after the test):

    flip_byte(path)                          # a checkpoint file (or a directory's largest file) rots
    fake_free_space(monkeypatch, 0)          # shutil.disk_usage reports nothing free
    with small_disk(tmp_path, 2**20) as d:   # a 1 MiB filesystem to fill for real (skips without root)
    crash_at(monkeypatch, "training.checkpoint._set_aside", when="after")   # dies there: SimulatedCrash
    with run_lock_held(run_dir) as holder:   # another process holds the run directory's lock
    no_file_locks(monkeypatch, tmp_path)     # a filesystem that refuses locks
    with read_only_directory(tmp_path) as d: # a directory nobody may write in (skips the test if it cannot)

In a process of its own (train.py under torchrun, or alone), this file is the script to run in
place of train.py: it applies the faults named in MOLS_TEST_FAULTS on the ranks they name, then
runs train.main; with MOLS_TEST_EXIT_CODES=DIR each rank also writes its exit code to
DIR/rank_<r>.exit (torchrun's own report may show a rank it stopped rather than the code it chose):

    torchrun(args, script=fault_injection.SCRIPT, env=fault_injection.faults_env(
        {"rank": 1, "point": "training.checkpoint.save_sharded", "call": 2, "action": "disk_full"}))

A fault fires at the `call`-th call of `point` ("module.function" or "module.Class.method", looked
up where the code calls it), `when` "before" (default) or "after" it runs. Actions: "kill" (SIGKILL
to itself: nothing after it runs, the kernel closes its files and releases its locks) and
"disk_full" (from then on shutil.disk_usage reports 0 bytes free). In the test's own process,
crash_at raises SimulatedCrash instead of dying. (Not tests/faults.py: that would read as
training/faults.py, which it is not.)
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
FAULTS_VARIABLE = "MOLS_TEST_FAULTS"
EXIT_CODES_VARIABLE = "MOLS_TEST_EXIT_CODES"


class SimulatedCrash(BaseException):
    """The process "died" at a fault point (in-process): nothing after that point runs, and no
    `except Exception` of the code under test catches it."""


def flip_byte(path: Path, at: float = 0.5) -> tuple[Path, int]:
    """Invert one byte of a file `at` that fraction of its length (of a directory: of its largest
    file), as bit rot or a bad copy would; (the file, the offset)."""
    path = Path(path)
    if path.is_dir():
        path = max((f for f in path.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    offset = int(path.stat().st_size * at)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return path, offset


def fake_free_space(monkeypatch, free_bytes: int, *, real_while_handling_an_error: bool = False) -> None:
    """From now on shutil.disk_usage reports `free_bytes` free (on every path); with
    `real_while_handling_an_error`, the real figure inside an `except` block (a message about the
    failed write then says what is really free)."""
    real = shutil.disk_usage

    def usage(path):
        if real_while_handling_an_error and sys.exc_info()[1] is not None:
            return real(path)
        return real(path)._replace(free=free_bytes)

    monkeypatch.setattr(shutil, "disk_usage", usage)


def no_file_locks(monkeypatch, under: Path) -> None:
    """Files under `under` cannot be locked (flock: ENOLCK), as on NFS without its lock service or
    Lustre mounted `noflock`; locks elsewhere (datasets' cache) work as before."""
    import errno
    import fcntl

    real, under = fcntl.flock, str(Path(under).resolve())

    def flock(fd, operation):
        if os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}").startswith(under):
            raise OSError(errno.ENOLCK, "No locks available")
        return real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)


@contextlib.contextmanager
def small_disk(parent: Path, size_bytes: int) -> Iterator[Path]:
    """A filesystem of `size_bytes` (a tmpfs mounted in `parent`), to fill for real; the test is
    skipped where mounting is not allowed (it needs root)."""
    import pytest

    mount_point = Path(parent) / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes // 1024}k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _owner_and_name(point: str):
    """The object holding `point`'s attribute and its name: the longest importable module prefix,
    then attributes (a class for a method)."""
    parts = point.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ValueError(f"no module in fault point {point!r}")


def _wrap(point: str, call: int, when: str, act: Callable[[], None], setattr_=setattr) -> None:
    owner, name = _owner_and_name(point)
    real = getattr(owner, name)
    calls = {"n": 0}

    @functools.wraps(real)
    def faulty(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call and when == "before":
            act()
        result = real(*args, **kwargs)
        if calls["n"] == call and when == "after":
            act()
        return result

    setattr_(owner, name, faulty)


def _raise_crash():
    raise SimulatedCrash


def crash_at(monkeypatch, point: str, call: int = 1, when: str = "before") -> None:
    """This process "dies" (SimulatedCrash) at the `call`-th call of `point`, before or after it runs."""
    _wrap(point, call, when, _raise_crash, monkeypatch.setattr)


@contextlib.contextmanager
def run_lock_held(run_dir: Path) -> Iterator[subprocess.Popen]:
    """Another process holds `run_dir`'s run lock (training.records.lock_run_dir) while the block
    runs; it is SIGKILLed at the end (the kernel releases its lock)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
            "from training.records import lock_run_dir; lock_run_dir(Path(sys.argv[2])); "
            "print('locked', flush=True); sys.stdin.read()")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        assert line.strip() == "locked", f"the lock holder did not start (exit {holder.poll()})"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@contextlib.contextmanager
def read_only_directory(parent: Path) -> Iterator[Path]:
    """A directory in which nothing can be created: mode 0o555, or, where that does not stop this
    process (root), a read-only tmpfs mounted on it; the test is skipped when neither works."""
    import pytest

    directory = Path(parent) / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    mounted = False
    try:
        if os.access(directory, os.W_OK):  # root ignores the mode
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(directory)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot make a read-only directory here: {done.stderr.strip()}")
            mounted = True
        yield directory
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)
        directory.chmod(0o755)


# ------------------------------------------------------------------------------------------------
# In a process of its own: this file as the script in place of train.py
# ------------------------------------------------------------------------------------------------

def faults_env(*faults: dict, exit_codes: Path | None = None) -> dict:
    """The environment that makes SCRIPT apply `faults` (dicts: rank (None: every rank), point, call
    (default 1), when (default "before"), action "kill" or "disk_full")."""
    env = {FAULTS_VARIABLE: json.dumps(list(faults))}
    if exit_codes is not None:
        env[EXIT_CODES_VARIABLE] = str(exit_codes)
    return env


def _disk_full() -> None:
    real = shutil.disk_usage
    shutil.disk_usage = lambda path: real(path)._replace(free=0)


def _kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def apply_faults_from_environment() -> None:
    rank = int(os.environ.get("RANK", "0"))
    actions = {"kill": _kill, "disk_full": _disk_full}
    for fault in json.loads(os.environ.get(FAULTS_VARIABLE, "[]")):
        if fault.get("rank") in (None, rank):
            _wrap(fault["point"], fault.get("call", 1), fault.get("when", "before"), actions[fault["action"]])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    apply_faults_from_environment()
    import train
    from training import distributed

    code = train.main()
    if os.environ.get(EXIT_CODES_VARIABLE):
        Path(os.environ[EXIT_CODES_VARIABLE], f"rank_{os.environ.get('RANK', '0')}.exit").write_text(str(code))
    distributed.exit_process(code)
