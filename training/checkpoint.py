"""Full training state on disk: written atomically, read back with safe (weights-only) loading.

A checkpoint is one file `checkpoints/step_<7-digit step>.pt`, written to a temporary name and renamed,
so a run killed mid-save leaves the previous checkpoint intact; `latest` is found by listing.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import torch

from configs import UserError
from data.cache import atomic_path

_NAME = re.compile(r"step_(\d+)\.pt$")


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def save_atomically(state: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        with open(tmp, "rb") as handle:  # on disk before the rename makes it the latest
            os.fsync(handle.fileno())


def prune(directory: Path, keep: int) -> None:
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, without a traceback
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]  # torch adds paragraphs of advice
        raise UserError(f"cannot read checkpoint {path}: {reason}") from None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
