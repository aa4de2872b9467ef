"""What a run leaves behind: its directory, exact config, environment, metrics, summary and wandb."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

import torch
import yaml

from configs import UserError, write_json_atomic, write_text_atomic
from training import checkpoint, distributed

PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "bitsandbytes", "galore-torch",
            "apollo-torch", "adam-mini", "pytorch-optimizer", "wandb", "numpy")
REPO = Path(__file__).resolve().parents[1]


def git_version() -> dict:
    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": run("rev-parse", "HEAD") or None, "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def environment(world_size: int, device: torch.device) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    hardware = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
        hardware["gpu_count"] = torch.cuda.device_count()
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
            "python": sys.version.split()[0], "platform": platform.platform(), "command": sys.argv,
            "world_size": world_size, "git": git_version(), "packages": versions, "hardware": hardware,
            "slurm_job": os.environ.get("SLURM_JOB_ID")}


def read_metrics(path: Path) -> list[dict]:
    """Records of a metrics.jsonl; a resumed run logs some steps twice: the last record wins."""
    latest: dict = {}
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # e.g. a line cut short when the job was killed
            continue
        if isinstance(record, dict) and "kind" in record and "step" in record:
            latest[(record["kind"], record["step"])] = record
    return sorted(latest.values(), key=lambda r: (r["step"], r["kind"]))


def save_run_records(cfg, run_dir: Path, world_size: int, device: torch.device, resumed_at: int | None) -> None:
    """config.yaml and environment.json; a resumed segment of the run writes its own copies
    (config.step_0000800.yaml, ...) so the settings of every segment are kept."""
    suffix = "" if resumed_at is None else f".step_{resumed_at:07d}"
    write_text_atomic(run_dir / f"config{suffix}.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_json_atomic(run_dir / f"environment{suffix}.json", environment(world_size, device))


def prepare_run_dir(run_dir: Path, resume: str | None, is_main: bool,
                    world_size: int = 1) -> tuple[Path | None, dict | None]:
    """Create the run directory and take its lock; the checkpoint to resume from and its contents
    (None, None: fresh).

    Collective. Rank 0 takes the run directory's lock (`lock_run_dir`: a second launch into it
    stops here, exit 2) and alone decides which checkpoint the run resumes from (so ranks cannot
    pick different ones from differently cached listings); every rank loads that file; a problem
    on any rank is raised on every rank. A directory that already holds a run is never
    overwritten: resume it or pick another name. `resume: auto` skips (and names) a latest
    checkpoint that cannot be read or whose checksums do not match, and takes the one before; an
    explicit one like that is a UserError naming it. A group that torchrun restarted after a rank
    died resumes as with `auto`. What a killed save left is put right first: a checkpoint set aside
    while a save of the same step replaced it, partial files."""
    if resume is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume = "auto"
    path, saved, error = None, None, None
    if is_main:
        try:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"cannot create the run directory {run_dir}: {err.strerror or err} "
                                f"(run.out_dir must be writable)") from None
            lock_run_dir(run_dir)
            for done in checkpoint.recover_replaced(run_dir / "checkpoints"):
                print(done, flush=True)
            path, saved = _choose_checkpoint(run_dir, resume)
            for partial in checkpoint.remove_partial_saves(run_dir / "checkpoints"):
                print(f"removed {partial}", flush=True)
        except UserError as err:
            error = err
    distributed.raise_if_any(error, world_size)
    chosen = distributed.broadcast_object(None if path is None else str(path))
    if chosen is not None and not is_main:
        path = Path(chosen)
        try:
            saved = checkpoint.load(path, check=False)  # rank 0 verified it
        except UserError as err:
            error = err
    if chosen is not None:
        distributed.raise_if_any(error, world_size)
    return path, saved


def _choose_checkpoint(run_dir: Path, resume: str | None) -> tuple[Path | None, dict | None]:
    ckpt_dir = run_dir / "checkpoints"
    if resume == "auto":
        for path in reversed(checkpoint.list_checkpoints(ckpt_dir)):
            try:
                return path, checkpoint.load(path)
            except UserError as err:
                what = "corrupt" if isinstance(err, checkpoint.CorruptCheckpoint) else "unreadable"
                print(f"warning: skipping {what} checkpoint {path.name} ({err}); trying the one before", flush=True)
        return None, None
    if resume:
        path = checkpoint.resolve(Path(resume))
        return path, checkpoint.load(path)
    if checkpoint.list_checkpoints(ckpt_dir) or (run_dir / "summary.json").exists():
        raise UserError(f"run directory {run_dir} already holds a run; continue it with "
                        f"--set run.resume=auto, or pick another run.name")
    return None, None


# ------------------------------------------------------------------------------------------------
# One writer per run directory
# ------------------------------------------------------------------------------------------------

LOCK_FILE = "run.lock"
_HELD: dict[Path, int] = {}  # run directory -> descriptor of its lock file, held by this process
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)  # a filesystem without flock


def lock_run_dir(run_dir: Path) -> None:
    """Make this process the one writer of `run_dir` until `release_run_dirs` or its end.

    An exclusive flock on `run_dir/run.lock`, which says who holds it (pid, host, start time, Slurm
    job): a second launch into the directory is a UserError (exit 2) naming the directory and that
    holder. The kernel releases the lock when the process ends, however it ends (a crash, SIGKILL,
    the OOM killer), so a run that died is resumed at once. Processes
    forked from this one (DataLoader workers) close their copy: one that outlives its parent does
    not keep the lock.

    The lock is as good as the filesystem's locks. Local filesystems: exact. NFS: the Linux client
    turns flock into a lock held by the server (NLM for v3, the protocol's own for v4) that every
    client sees, unless the mount has `nolock` (v3) or `local_lock=flock` / `all`: then the lock
    binds the processes of one node only, and a launch on another node is not refused; if the
    *node* holding the lock dies (not just the process), the server frees it only when the node's
    lease runs out (v4: about 90 s). Lustre: coherent across nodes with the client mount option
    `flock`; `localflock` binds one node only; `noflock` refuses locks. GPFS (IBM Storage Scale),
    BeeGFS (`tuneUseGlobalFileLocks`, off by default) and others: as configured; check once by
    holding `flock run.lock sleep 60` on one node while `flock -n run.lock true` fails on another.
    A filesystem that refuses locks gets a one-line warning and the run goes on unlocked."""
    run_dir = Path(run_dir)
    lock_file = run_dir / LOCK_FILE
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UserError(f"cannot write in the run directory {run_dir}: {err.strerror or err} "
                        f"(run.out_dir must be writable)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "which one has not said yet"
            os.close(fd)
            raise UserError(f"run directory {run_dir} is in use by another launch ({holder}); wait for it to "
                            f"end, or pick another run.name") from None
        os.close(fd)
        if err.errno not in _NO_LOCKS:
            raise
        print(f"warning: the filesystem of {run_dir} does not lock files ({err.strerror}): a second launch "
              f"into this run directory would not be refused", flush=True)
        return
    job = os.environ.get("SLURM_JOB_ID")
    holder = (f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
              + (f", Slurm job {job}" if job else ""))
    os.ftruncate(fd, 0)
    os.pwrite(fd, (holder + "\n").encode(), 0)
    _HELD[run_dir] = fd


def release_run_dirs() -> None:
    """Give up this process's run directory locks (the end of train.main; in-process callers run again)."""
    while _HELD:
        _, fd = _HELD.popitem()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _close_in_child() -> None:
    # A forked child closes its copies without unlocking: the lock stays with the parent alone.
    for fd in _HELD.values():
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


WANDB_MODES = ("disabled", "offline", "online")


def wandb_mode(cfg) -> str:
    """The environment's WANDB_MODE wins over run.wandb.mode (wandb's own convention)."""
    return os.environ.get("WANDB_MODE") or cfg.run.wandb.mode


def check_wandb(cfg) -> None:
    """Fail in seconds, before anything is built, when wandb cannot work as configured."""
    mode = wandb_mode(cfg)
    if mode not in WANDB_MODES and mode != "dryrun":
        raise UserError(f"WANDB_MODE={mode!r} is not one of {', '.join(WANDB_MODES)}")
    if mode != "online" or os.environ.get("WANDB_API_KEY"):
        return
    try:
        import netrc
        logged_in = netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai")
                                                 .split("//")[-1].split("/")[0]) is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    if not logged_in:
        raise UserError("wandb is online (run.wandb.mode or WANDB_MODE) but no credentials were found "
                        "(no WANDB_API_KEY, no `wandb login` entry in ~/.netrc). Log in, or run with "
                        "--set run.wandb.mode=offline (upload later with `wandb sync`) or "
                        "--set run.wandb.mode=disabled (or WANDB_MODE=offline / disabled)")


class Wandb:
    """wandb with project, group, name and tags from the config; mode disabled imports nothing."""

    def __init__(self, cfg, run_dir: Path, enabled: bool):
        self.run = None
        settings = cfg.run.wandb
        mode = wandb_mode(cfg)
        if not enabled or mode == "disabled":
            return
        import wandb

        id_file = run_dir / "wandb_id"  # a resumed run continues the same wandb run
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self.run = wandb.init(project=settings.project, entity=settings.entity, group=settings.group,
                              name=cfg.run.name, tags=settings.tags, config=cfg.to_dict(), mode=mode,
                              dir=str(run_dir), id=run_id, resume="allow")

    def log(self, values: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()



def _format(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


class RunLog:
    """One call, `log(kind, step, values)`, writes a run's record three ways under one name each:
    a line of metrics.jsonl ({"kind", "step", "time", **values}), wandb (`kind/name`, a dict
    value as `kind/name/key`) and the console (`kind step: name value ...`, scalars only).
    Only the main rank writes; `say` prints a message on it."""

    def __init__(self, cfg, run_dir: Path, is_main: bool):
        self.path, self.enabled = run_dir / "metrics.jsonl", is_main
        self.wandb = Wandb(cfg, run_dir, is_main)

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def log(self, kind: str, step: int, values: dict, *, console: bool = True, step_of: int | None = None) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"kind": kind, "step": step, "time": round(time.time(), 3), **values}) + "\n")
        flat = {}
        for name, value in values.items():
            if isinstance(value, dict):
                flat.update({f"{kind}/{name}/{key}": v for key, v in value.items() if isinstance(v, (int, float))})
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{kind}/{name}"] = value
        self.wandb.log(flat, step=step)
        if console:
            where = f"{step}/{step_of}" if step_of else f"{step}"
            shown = "  ".join(f"{name} {_format(v)}" for name, v in values.items()
                              if not isinstance(v, (dict, list)) and v is not None)
            print(f"{kind} step {where}: {shown}", flush=True)

    def summary(self, values: dict) -> None:
        self.wandb.summary(values)

    def finish(self) -> None:
        self.wandb.finish()
