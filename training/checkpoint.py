"""Full training state on disk: written atomically, read back with safe (weights-only) loading.

A checkpoint is one file `checkpoints/step_<7-digit step>.pt`, written to a temporary name and renamed,
so a run killed mid-save leaves the previous checkpoint intact (and its partial temporary file is
removed when the run starts again); `latest` is found by listing. Reading maps the file into
memory instead of copying it (a 7B checkpoint is ~80 GB with its optimizer state).

A sharded run (`train.parallel: fsdp`) writes a directory `step_<7 digits>.dcp` instead: every rank
writes its shards of the model and optimizer with torch.distributed.checkpoint (which can load them
on any number of ranks), rank 0 adds `trainer.pt` (step, MoLS, every rank's data position and RNG,
config); the directory is written under a temporary name and renamed like a file.
"""
from __future__ import annotations

import errno
import os
import random
import re
import shutil
from pathlib import Path

import torch

from configs import UserError, atomic_path

_NAME = re.compile(r"step_(\d+)\.(pt|dcp)$")
_PARTIAL = (".step_*.pt.*.tmp",   # configs.files.atomic_path's temporary name for step_N.pt
            ".step_*.dcp.tmp")    # save_sharded's for step_N.dcp
TRAINER_FILE = "trainer.pt"       # in a sharded checkpoint: everything but the model and optimizer
GIB = 2**30


class StorageError(UserError):
    """A checkpoint could not be written (a full disk, a quota): said in one message, exit code 74."""

    exit_code = 74  # EX_IOERR


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def resolve(path: Path) -> Path:
    """A checkpoint file itself, or the latest `checkpoints/step_*.pt` of a run directory; a UserError
    naming the path otherwise (resume, evaluation, export and generation all accept either)."""
    path = Path(path)
    if path.is_file() or is_sharded_checkpoint(path):
        return path
    if path.is_dir():
        found = latest_checkpoint(path / "checkpoints")
        if found is None:
            raise UserError(f"{path}: no checkpoints/step_*.pt in this directory (is it a run directory?)")
        return found
    raise UserError(f"{path}: no such run directory or checkpoint file")


def remove_partial_saves(directory: Path) -> list[str]:
    """Delete the temporary files of saves that were killed before their rename; their descriptions."""
    removed = []
    partials = sorted(p for pattern in _PARTIAL for p in directory.glob(pattern)) if directory.is_dir() else []
    for partial in partials:
        partial_bytes = _bytes_on_disk(partial)
        _remove(partial)
        removed.append(f"{partial.name} ({size(partial_bytes)})")
    return removed


def is_sharded_checkpoint(path: Path) -> bool:
    return Path(path).is_dir() and Path(path).suffix == ".dcp" and (Path(path) / TRAINER_FILE).is_file()


def _bytes_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def tensor_bytes(tree) -> int:
    """Bytes of every tensor in a nested dict/list: about what torch.save writes."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tensor_bytes(v) for v in tree)
    return 0


def _disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    text = str(err)  # torch's zip writer reports a short write as a C++ enforce failure
    return "unexpected pos" in text or "No space left" in text or "file write failed" in text


def save_atomically(state: dict, path: Path) -> None:
    """Write `state` to `path` via a temporary file; a full disk is a StorageError naming the space
    needed, what was free and the last good checkpoint (which stays as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = tensor_bytes(state)

    def full_disk(free: int) -> StorageError:
        last = latest_checkpoint(path.parent)
        return StorageError(f"cannot write checkpoint {path.name}: it needs about {size(needed)} and "
                            f"{path.parent} has {size(free)} free; the last good checkpoint is "
                            f"{last if last else '(none yet)'}. Free space (or lower train.keep_checkpoints) "
                            f"and resume with --set run.resume=auto")

    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise full_disk(free)
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
            with open(tmp, "rb") as handle:  # on disk before the rename makes it the latest
                os.fsync(handle.fileno())
    except (OSError, RuntimeError) as err:
        if _disk_full(err):
            raise full_disk(shutil.disk_usage(path.parent).free) from None
        raise


def prune(directory: Path, keep: int) -> None:
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        _remove(old)


def load(path: Path) -> dict:
    """The checkpoint's contents, memory-mapped (tensors are read from the file as they are used).
    Of a sharded checkpoint: its trainer.pt (load_sharded reads the shards into a model)."""
    if is_sharded_checkpoint(path):
        path = Path(path) / TRAINER_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
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


def save_sharded(shards: dict, trainer: dict | None, path: Path) -> None:
    """Collective: every rank writes its part of `shards` (state dicts of DTensors) to the directory
    `path` (step_N.dcp), rank 0 (the one passing `trainer`) also trainer.pt; then rank 0 renames
    the temporary directory. A full disk is a StorageError on the rank that met it."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp"
    needed = tensor_bytes(shards)  # this rank's shards
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        last = latest_checkpoint(path.parent)
        raise StorageError(f"cannot write checkpoint {path.name}: this rank's part needs about {size(needed)} and "
                           f"{path.parent} has {size(free)} free; the last good checkpoint is "
                           f"{last if last else '(none yet)'}. Free space (or lower train.keep_checkpoints) "
                           f"and resume with --set run.resume=auto")
    dcp.save(shards, checkpoint_id=tmp)
    if trainer is not None:
        with open(tmp / TRAINER_FILE, "wb") as handle:
            torch.save(trainer, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.rename(path)
    if dist.is_initialized():
        dist.barrier()


def load_sharded(shards: dict, path: Path) -> None:
    """Read the shards of a sharded checkpoint into `shards` (state dicts of this run's DTensors,
    on any number of ranks), in place."""
    import torch.distributed.checkpoint as dcp

    dcp.load(shards, checkpoint_id=Path(path))


def sharded_model_weights(path: Path) -> dict[str, torch.Tensor]:
    """The whole model of a sharded checkpoint, in one process (what consolidation writes)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = dcp.FileSystemReader(str(path)).read_metadata()
    weights = {key: torch.empty(meta.size, dtype=meta.properties.dtype)
               for key, meta in metadata.state_dict_metadata.items()
               if key.startswith("model.") and isinstance(meta, TensorStorageMetadata)}
    dcp.load({"model": {key[len("model."):]: t for key, t in weights.items()}}, checkpoint_id=Path(path), no_dist=True)
    return {key[len("model."):]: t for key, t in weights.items()}
