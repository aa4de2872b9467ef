"""What a run leaves behind: its directory, exact config, environment, metrics, summary and wandb."""
from __future__ import annotations

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

from data.cache import write_text_atomic

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


class MetricsLog:
    """Appends one JSON record a line; a resumed run appends to the same file (readers keep the
    last record for a step)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, kind: str, step: int, **values) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"kind": kind, "step": step, "time": round(time.time(), 3), **values}) + "\n")


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


class Wandb:
    """wandb with project, group, name and tags from the config; mode disabled imports nothing."""

    def __init__(self, cfg, run_dir: Path, enabled: bool):
        self.run = None
        settings = cfg.run.wandb
        if not enabled or settings.mode == "disabled":
            return
        import wandb

        id_file = run_dir / "wandb_id"  # a resumed run continues the same wandb run
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self.run = wandb.init(project=settings.project, entity=settings.entity, group=settings.group,
                              name=cfg.run.name, tags=settings.tags, config=cfg.to_dict(), mode=settings.mode,
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


def save_config(cfg, run_dir: Path) -> None:
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
