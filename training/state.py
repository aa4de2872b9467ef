"""Everything a run needs to continue exactly, saved and restored by the same object.

    state = TrainingState(model, optimizer, mols, streams={"train": stream, "mols": extra})
    state.restore(path, rank)               # on resume
    state.save(path, cfg.to_dict(), procs)  # every rank calls it; rank 0 writes

A checkpoint holds the model, the optimizer (optimizers.export_state), MoLS's calibration and
ramp, the step, tokens seen, training seconds so far, and per rank its data-stream positions and
RNG states, plus the config it ran with. One file (a directory of shards under FSDP), written
atomically with its checksums (training/checkpoint.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from configs import ConfigError, UserError
from data.stream import reshard_states
from optimizers import export_state, import_state
from training import checkpoint, distributed
from training.fsdp import is_sharded
from training.config import training_settings

FORMAT = 2


@dataclass
class TrainingState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    mols: Optional[Any]                     # mols.MoLS or None
    streams: dict                           # this rank's data streams by role: {"train": ..., "mols": ...}
    step: int = 0                           # optimizer updates done
    tokens_seen: int = 0
    elapsed_before: float = 0.0             # training seconds of earlier segments of the run
    started: float = field(default_factory=time.time)

    def seconds(self) -> float:
        """Training wall time so far, every segment of a resumed run included."""
        return self.elapsed_before + time.time() - self.started

    def save(self, path: Path, config: dict, world_size: int, is_main: bool) -> Path:
        """Collective: every rank contributes its data positions and RNG; rank 0 writes the file. A
        failed write (a full disk) is a StorageError on every rank, and the earlier checkpoints stay."""
        mine = {"data": {role: s.state_dict() for role, s in self.streams.items()},
                "rng": checkpoint.rng_state()}
        ranks = distributed.gather_objects(mine, world_size)
        if is_sharded(self.model):
            self._save_sharded(path.with_suffix(".dcp"), config, ranks, is_main, world_size)
            return path.with_suffix(".dcp")
        error = None
        if is_main:
            try:
                checkpoint.save_atomically({
                    "format": FORMAT, "step": self.step, "tokens_seen": self.tokens_seen,
                    "elapsed": self.seconds(), "model": self.model.state_dict(),
                    "optimizer": export_state(self.optimizer),
                    "mols": None if self.mols is None else self.mols.state_dict(),
                    "ranks": ranks, "config": config}, path)
            except checkpoint.StorageError as err:
                error = err
        distributed.raise_if_any(error, world_size)  # also the barrier: no rank runs ahead of the save
        return path

    def _save_sharded(self, path: Path, config: dict, ranks: list, is_main: bool, world_size: int) -> None:
        """Every rank writes its shards of the model and optimizer; rank 0 the rest (trainer.pt)."""
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        trainer = None
        if is_main:
            trainer = {"format": FORMAT, "sharded": True, "step": self.step, "tokens_seen": self.tokens_seen,
                       "elapsed": self.seconds(), "method": getattr(self.optimizer, "mols_method", None),
                       "mols": None if self.mols is None else self.mols.state_dict(), "ranks": ranks,
                       "world_size": world_size, "config": config}
        # a StorageError there is raised on every rank at once (the ranks agree before each write)
        checkpoint.save_sharded({"model": model_state, "optimizer": optimizer_state}, trainer, path)

    def restore(self, saved: dict, rank: int, path: Path) -> None:
        """Load a checkpoint written by `save` (or by the format-1 trainer) into this state."""
        if bool(saved.get("sharded")) != is_sharded(self.model):
            raise UserError(f"checkpoint {path} was written by a {'sharded' if saved.get('sharded') else 'DDP'} run "
                            f"and this run is {'sharded' if is_sharded(self.model) else 'not'} (train.parallel); "
                            f"`python -m tools.consolidate` turns a sharded checkpoint into one file")
        if is_sharded(self.model):
            self._restore_sharded(saved, path)
        else:
            try:
                self.model.load_state_dict(saved["model"])
            except RuntimeError as err:  # torch lists every mismatched tensor: one line is enough
                first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
                raise UserError(f"checkpoint {path} holds a different model than this config builds "
                                f"({first})") from None
            import_state(self.optimizer, saved["optimizer"])
        if self.mols is not None:
            self.mols.load_state_dict(saved["mols"])
        self.step, self.tokens_seen, self.elapsed_before = saved["step"], saved["tokens_seen"], saved["elapsed"]
        self.started = time.time()
        ranks = _ranks(saved)
        world_size = distributed.world_size()
        if len(ranks) != world_size:  # the model and optimizer reshard by themselves (sharded checkpoints)
            ranks = _redeal(ranks, world_size)
        mine = ranks[rank]
        for role, stream in self.streams.items():
            if mine["data"].get(role) is not None:
                stream.load_state_dict(mine["data"][role])
        checkpoint.restore_rng(mine["rng"])

    def _restore_sharded(self, saved: dict, path: Path) -> None:
        method = getattr(self.optimizer, "mols_method", None)
        if saved.get("method") != method:
            raise UserError(f"checkpoint {path} holds the state of optimizer {saved.get('method')!r}, "
                            f"this run builds {method!r}")
        # templates of this run's shards (creating the optimizer's state, at lr 0); any world size
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        shards = {"model": model_state, "optimizer": optimizer_state}
        try:
            checkpoint.load_sharded(shards, path)
        except Exception as err:  # a missing or mismatched tensor: one line, no traceback
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"cannot load sharded checkpoint {path} into this run's model: {reason}") from None
        set_state_dict(self.model, self.optimizer, model_state_dict=shards["model"],
                       optim_state_dict=shards["optimizer"])


def _redeal(ranks: list[dict], world_size: int) -> list[dict]:
    """Per-rank states saved by len(ranks) ranks for `world_size` ranks: each data stream at the same
    global position (data.stream.reshard_states), rank r's RNG from saved rank r mod N."""
    roles = {role for mine in ranks for role in mine["data"]}
    data = {role: reshard_states([mine["data"].get(role) for mine in ranks], world_size) for role in roles}
    return [{"data": {role: data[role][r] for role in roles}, "rng": ranks[r % len(ranks)]["rng"]}
            for r in range(world_size)]


def _ranks(saved: dict) -> list[dict]:
    if "ranks" in saved:
        return saved["ranks"]
    # format 1: parallel per-rank lists
    return [{"data": {"train": d, "mols": e}, "rng": r}
            for d, e, r in zip(saved["data"], saved["extra_data"], saved["rng"])]


def config_changes(saved: dict, now: dict) -> list[str]:
    """`key: checkpoint -> now` for every setting that changes what is trained (training/config.py)."""
    old, new = training_settings(saved), training_settings(now)
    return [f"{key}: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def check_resume_config(saved: dict, now: dict, path: Path, allowed: bool) -> list[str]:
    """The differences (said when `allowed`); a ConfigError listing them when not."""
    changes = config_changes(saved.get("config") or {}, now)
    if changes and not allowed:
        raise ConfigError([f"resuming from {path} with settings that differ from its run "
                           f"(add --set run.allow_resume_changes=true if this is intended):", *changes])
    return changes
