"""Full training state on disk: written atomically, proved whole by checksums, read back with safe
(weights-only) loading.

A checkpoint is one file `checkpoints/step_<7-digit step>.pt`, written to a temporary name and renamed,
so a run killed mid-save leaves the previous checkpoint intact (and its partial temporary file is
removed when the run starts again); `latest` is found by listing. Reading maps the file into
memory instead of copying it (a 7B checkpoint is ~80 GB with its optimizer state).

A sharded run (`train.parallel: fsdp`) writes a directory `step_<7 digits>.dcp` instead: every rank
writes its shards of the model and optimizer with torch.distributed.checkpoint (which can load them
on any number of ranks), rank 0 adds `trainer.pt` (step, MoLS, every rank's data position and RNG,
config); the directory is written under a temporary name and moved into place. A directory cannot
be renamed over another, so a save of a step that already has one (a resumed run that saves the
same step again) sets the old directory aside (`.step_N.dcp.old`), moves the new one in and only
then deletes the old: a crash at any point leaves one complete checkpoint of that step, which
`recover_replaced` puts back in place at the next start.

Integrity: every checkpoint carries the CRC-32 of each 64 MiB of each of its files, computed after
the data is on disk and written after it (`step_N.pt.checksums.json` beside a file; `checksums.json`
inside a directory, written before the directory is moved into place). `load` checks them first:
a checkpoint whose bytes differ (a flipped bit, a bad copy between clusters, a partial sync) is a
CorruptCheckpoint naming the file and the bytes; one written before checksums existed loads with a
one-line note. CRC-32 because it finds what happens to files by accident (every error burst up to
32 bits, anything else but for a chance of 2^-32 per 64 MiB), comes with Python (zlib) and runs at
about 3 GB/s per core from the page cache, 2.7x SHA-256, on a pool of threads here (zlib lets go of
the GIL): 7B's ~81 GB with AdamW state is ~27 s of one core, less than reading it
(docs/performance.md). It is no defence against deliberate tampering, which is not what it is for.
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from configs import UserError, atomic_path
from training import distributed

_NAME = re.compile(r"step_(\d+)\.(pt|dcp)$")
_PARTIAL = (".step_*.pt.*.tmp",   # configs.files.atomic_path's temporary names for step_N.pt and its checksums
            ".step_*.dcp.tmp")    # save_sharded's for step_N.dcp
_SET_ASIDE = ".step_*.dcp.old"    # an existing step_N.dcp while a save of the same step replaces it
_DCP_WRITER = re.compile(r"__(\d+)_")  # torch.distributed.checkpoint names rank r's files __<r>_<n>.distcp
TRAINER_FILE = "trainer.pt"       # in a sharded checkpoint: everything but the model and optimizer
CHECKSUMS = "checksums.json"
CHUNK_BYTES = 64 * 2**20          # one CRC-32 per 64 MiB: the unit that threads share and a mismatch names
GIB = 2**30


class StorageError(UserError):
    """A checkpoint could not be written (a full disk, a quota, an I/O error): said in one message,
    exit code 74."""

    exit_code = 74  # EX_IOERR


class CorruptCheckpoint(UserError):
    """A checkpoint whose bytes are not those its checksums were written with: one message, exit code 2."""


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


def recover_replaced(directory: Path) -> list[str]:
    """Finish what a crash interrupted while a sharded checkpoint replaced one of the same step:
    the old copy set aside is deleted when the new one is in place, and put back when it is not
    (the new one, never moved in, is then a partial save). What was done, one line each."""
    done = []
    for aside in sorted(directory.glob(_SET_ASIDE)) if directory.is_dir() else []:
        final = aside.with_name(aside.name[1:-len(".old")])
        if final.exists():
            _remove(aside)
            done.append(f"removed {aside.name}, the previous copy of {final.name}, which a save replaced")
        else:
            aside.rename(final)
            done.append(f"put back {final.name}: a save of the same step was cut off before it replaced it")
    return done


def remove_partial_saves(directory: Path) -> list[str]:
    """Delete the temporary files of saves that were killed before their rename (and the checksums
    of checkpoints that are gone); what was removed, one line each."""
    if not directory.is_dir():
        return []
    removed = []
    for partial in sorted(p for pattern in _PARTIAL for p in directory.glob(pattern)):
        partial_bytes = _bytes_on_disk(partial)
        _remove(partial)
        removed.append(f"the partial file of a checkpoint save that was killed: {partial.name} ({size(partial_bytes)})")
    for sums in sorted(directory.glob(f"step_*.pt.{CHECKSUMS}")):
        if not sums.with_name(sums.name[:-len(CHECKSUMS) - 1]).exists():  # its checkpoint was pruned
            sums.unlink()
            removed.append(f"the checksums of a checkpoint that is gone: {sums.name}")
    return removed


def is_sharded_checkpoint(path: Path) -> bool:
    return Path(path).is_dir() and Path(path).suffix == ".dcp" and (Path(path) / TRAINER_FILE).is_file()


def checksum_file(path: Path) -> Path:
    """Where a checkpoint's checksums are: inside a sharded checkpoint's directory, beside a file."""
    path = Path(path)
    return path / CHECKSUMS if path.suffix == ".dcp" else path.with_name(f"{path.name}.{CHECKSUMS}")


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
    """Bytes of every tensor in a nested dict/list as this process writes them (about what torch.save
    writes): of a sharded tensor (DTensor) its local shard, all that this rank writes of it."""
    if isinstance(tree, torch.Tensor):
        local = tree.to_local() if isinstance(tree, DTensor) else tree
        return local.numel() * local.element_size()
    if isinstance(tree, dict):
        return sum(tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tensor_bytes(v) for v in tree)
    return 0


# ------------------------------------------------------------------------------------------------
# Checksums
# ------------------------------------------------------------------------------------------------

def _threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def _crc32(path: Path, offset: int, length: int) -> str:
    """CRC-32 of `length` bytes of a file from `offset` (fewer if the file is shorter now)."""
    block = memoryview(bytearray(min(length, 8 * 2**20) or 1))
    crc = 0
    with open(path, "rb", buffering=0) as handle:
        handle.seek(offset)
        while length > 0:
            n = handle.readinto(block[:min(length, len(block))])
            if not n:
                break
            crc = zlib.crc32(block[:n], crc)
            length -= n
    return f"{crc:08x}"


def file_checksums(files: list[Path], chunk_bytes: int = CHUNK_BYTES) -> dict[Path, dict]:
    """{file: {"bytes": its size, "crc32": [the CRC-32 of each `chunk_bytes`, in hex]}}, the chunks of
    all files shared by a pool of threads."""
    sizes = {f: f.stat().st_size for f in files}
    chunks = [(f, offset) for f in files for offset in range(0, sizes[f], chunk_bytes)]
    with ThreadPoolExecutor(_threads()) as pool:
        crcs = list(pool.map(lambda c: _crc32(c[0], c[1], min(chunk_bytes, sizes[c[0]] - c[1])), chunks))
    sums = {f: {"bytes": sizes[f], "crc32": []} for f in files}
    for (f, _), crc in zip(chunks, crcs):
        sums[f]["crc32"].append(crc)
    return sums


def _write_checksums(where: Path, sums: dict[str, dict]) -> None:
    data = json.dumps({"algorithm": "crc32", "chunk_bytes": CHUNK_BYTES, "files": sums}, sort_keys=True)
    with atomic_path(where) as tmp:
        with open(tmp, "w") as handle:
            handle.write(data + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def verify(path: Path) -> bool:
    """Whether checkpoint `path` (a file or a step_N.dcp directory) holds the bytes it was written
    with: True when every file matches its checksums; False when it has none (written before
    checksums existed, or by a save cut off between its rename and its checksums); a
    CorruptCheckpoint naming the first file and bytes that differ otherwise."""
    path = Path(path)
    where = checksum_file(path)
    if not where.is_file():
        return False

    def corrupt(what: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(f"checkpoint {path} is corrupt: {what} (a flipped bit, a bad copy or a partial "
                                 f"sync); use another checkpoint")

    try:
        manifest = json.loads(where.read_text())
        chunk_bytes, listed = int(manifest["chunk_bytes"]), dict(manifest["files"])
        if manifest["algorithm"] != "crc32" or chunk_bytes <= 0 or (path.is_file() and len(listed) != 1) or any(
                len(entry["crc32"]) != -(-int(entry["bytes"]) // chunk_bytes) for entry in listed.values()):
            raise ValueError(manifest["algorithm"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise corrupt(f"its checksum file {where.name} cannot be read") from None
    # a file's single entry is checked against the file whatever it is called now
    files = {path / name: entry for name, entry in listed.items()} if path.is_dir() \
        else {path: next(iter(listed.values()))}
    for file, entry in files.items():
        shown = file.relative_to(path.parent)
        if not file.is_file():
            raise corrupt(f"{shown} is missing")
        if file.stat().st_size != entry["bytes"]:
            raise corrupt(f"{shown} is {file.stat().st_size:,} bytes, written as {entry['bytes']:,}")
    found = file_checksums(list(files), chunk_bytes)
    for file, entry in files.items():
        for i, (now, then) in enumerate(zip(found[file]["crc32"], entry["crc32"])):
            if now != then:
                end = min((i + 1) * chunk_bytes, entry["bytes"])
                raise corrupt(f"bytes {i * chunk_bytes:,}-{end:,} of {file.relative_to(path.parent)} differ from "
                              f"the checksum written with them")
    return True


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

def _disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    text = str(err)  # torch's zip writer reports a short write as a C++ enforce failure
    return "unexpected pos" in text or "No space left" in text or "file write failed" in text


def _cannot_write(path: Path, why: str, full: bool = True) -> StorageError:
    """The one message of a failed save: what went wrong, the last good checkpoint (kept), what to do."""
    last = latest_checkpoint(path.parent)
    advice = "Free space (or lower train.keep_checkpoints)" if full else "Fix that"
    return StorageError(f"cannot write checkpoint {path.name}: {why}; the last good checkpoint is "
                        f"{last if last else '(none yet)'}. {advice} and resume with --set run.resume=auto")


def _write_error(path: Path, err: BaseException, needed: str = "") -> StorageError | None:
    """A StorageError for an error met while writing (None: not an I/O error, a bug to show)."""
    if _disk_full(err):
        free = size(shutil.disk_usage(path.parent).free)
        return _cannot_write(path, f"{needed} and {path.parent} has {free} free" if needed
                             else f"{path.parent} filled up while it was written ({free} free)")
    if isinstance(err, OSError):
        return _cannot_write(path, f"{err.strerror or err}" + (f" ({err.filename})" if err.filename else ""),
                             full=False)
    return None


def save_atomically(state: dict, path: Path) -> None:
    """Write `state` to `path` via a temporary file, then its checksums; a full disk is a
    StorageError naming the space needed, what was free and the last good checkpoint (which stays
    as it was), and so is any other I/O error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = f"it needs about {size(tensor_bytes(state))}"
    free = shutil.disk_usage(path.parent).free
    if tensor_bytes(state) > free:
        raise _cannot_write(path, f"{needed} and {path.parent} has {size(free)} free")
    sums = checksum_file(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
            with open(tmp, "rb") as handle:  # on disk before the rename makes it the latest
                os.fsync(handle.fileno())
            checksums = file_checksums([tmp])[tmp]
            sums.unlink(missing_ok=True)  # an earlier save of this step's: never beside the new file
        # After the rename: a crash in between leaves a checkpoint without checksums (loaded with a
        # note), never one with another file's.
        _write_checksums(sums, {path.name: checksums})
    except (OSError, RuntimeError) as err:
        error = _write_error(path, err, needed)
        if error is None:
            raise
        raise error from None


def prune(directory: Path, keep: int) -> None:
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        _remove(old)
        checksum_file(old).unlink(missing_ok=True)  # after the checkpoint: never one left without its own


def load(path: Path, check: bool = True) -> dict:
    """The checkpoint's contents, memory-mapped (tensors are read from the file as they are used).
    With `check` (the default) its checksums are verified first: a CorruptCheckpoint when they
    differ, a one-line note when it has none. Of a sharded checkpoint: its trainer.pt (load_sharded
    reads the shards into a model)."""
    if check and not verify(path):
        print(f"note: checkpoint {path} has no checksums (written before they existed, or its save was cut "
              f"off before writing them): loaded without verifying it", flush=True)
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
    `path` (step_N.dcp), rank 0 (the one passing `trainer`) also trainer.pt; every rank checksums
    the files it wrote, and rank 0 writes checksums.json and moves the directory into place
    (replacing one of the same step, `_replace_directory`).

    The ranks agree at each point where one of them may fail alone (its free space before the
    collective write, its files after it, rank 0's rename), so either every rank goes on or every
    rank raises the same StorageError (exit 74, naming the rank): none waits in a collective that
    another skipped, and the last good checkpoint stays."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp"
    is_main, world = trainer is not None, distributed.world_size()
    rank = torch.distributed.get_rank() if world > 1 else 0
    needed = tensor_bytes(shards)  # this rank's part
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_main:
        _remove(tmp)  # an earlier save of this step that failed: gone before any rank writes into it
    free = shutil.disk_usage(path.parent).free
    error = _cannot_write(path, f"this rank's part needs about {size(needed)} and {path.parent} has {size(free)} "
                                f"free") if needed > free else None
    distributed.raise_if_any(error, world)  # every rank enters the collective write, or none does
    try:
        # over the host group for waits (training/distributed.py): the collective that ends the
        # write waits for the slowest rank's disk, longer than the training step's timeout may allow
        dcp.save(shards, checkpoint_id=tmp, process_group=distributed.waiting_group())
    except CheckpointException as err:  # raised on every rank, listing every rank's failure
        errors = [(r, _write_error(path, failure)) for r, (failure, _) in sorted(err.failures.items())]
        r, error = next(((r, e) for r, e in errors if e is not None), (None, None))
        if error is None:
            raise
        if is_main:
            _remove(tmp)
        raise StorageError(f"{error}" + (f" (rank {r})" if world > 1 else "")) from None

    mine, error = {}, None
    try:
        if is_main:
            with open(tmp / TRAINER_FILE, "wb") as handle:
                torch.save(trainer, handle)
                handle.flush()
                os.fsync(handle.fileno())
        mine = {f.name: sums for f, sums in file_checksums(_written_by(tmp, rank, world)).items()}
    except (OSError, RuntimeError) as err:
        if (error := _write_error(path, err)) is None:
            raise
    distributed.raise_if_any(error, world)
    every = distributed.gather_objects(mine, world)
    if is_main:
        try:
            sums = {name: entry for part in every for name, entry in part.items()}
            left = [f for f in tmp.iterdir() if f.is_file() and f.name not in sums]  # none, unless DCP renames
            sums.update({f.name: entry for f, entry in file_checksums(left).items()})
            _write_checksums(tmp / CHECKSUMS, sums)
            _replace_directory(tmp, path)
        except OSError as err:
            error = _write_error(path, err)
    distributed.raise_if_any(error, world)  # also the barrier: no rank runs ahead of the rename


def _written_by(directory: Path, rank: int, world: int) -> list[Path]:
    """The files of a sharded checkpoint that `rank` checksums: those it wrote (DCP's __<rank>_*),
    still in its page cache; rank 0 also the rest (.metadata, trainer.pt)."""
    def writer(name: str) -> int:
        m = _DCP_WRITER.match(name)
        return int(m.group(1)) if m and int(m.group(1)) < world else 0

    return sorted(f for f in directory.iterdir() if f.is_file() and writer(f.name) == rank)


def _replace_directory(new: Path, path: Path) -> None:
    """Move the complete directory `new` to `path`. An existing `path` is set aside first and
    deleted last, so that a crash at any point leaves a complete checkpoint that
    `recover_replaced` puts back (os.rename cannot replace a directory that holds files)."""
    aside = _set_aside(path) if path.exists() else None
    new.rename(path)
    if aside is not None:
        _remove(aside)


def _set_aside(path: Path) -> Path:
    aside = path.with_name(f".{path.name}.old")
    _remove(aside)  # one that a crash left beside the complete `path`: stale
    path.rename(aside)
    return aside


def load_sharded(shards: dict, path: Path) -> None:
    """Read the shards of a sharded checkpoint into `shards` (state dicts of this run's DTensors,
    on any number of ranks), in place."""
    import torch.distributed.checkpoint as dcp

    dcp.load(shards, checkpoint_id=Path(path), process_group=distributed.waiting_group())


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
