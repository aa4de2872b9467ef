#!/usr/bin/env python3
"""What the checkpoint checksums cost (training/checkpoint.py): writing them, and verifying a checkpoint.

    python scripts/bench_checksum.py [--gib 4] [--dir /tmp/bench_checksum] [--repeats 3]
    python scripts/bench_checksum.py --algorithms    # why CRC-32: candidate hashes on one buffer in memory

Writes one checkpoint of `--gib` GiB shaped like a training state (fp32 weights of LLaMA-like
shapes and AdamW's two moments for each) through the real path, checkpoint.save_atomically
(torch.save, fsync, checksums), then times, best of `--repeats`:
- the checksums alone on the written file (checkpoint.file_checksums; the file is in the page
  cache, as it is right after a save), on one thread and on the pool that saves and loads use;
- checkpoint.verify from the disk: the file's pages are dropped from the page cache first
  (posix_fadvise DONTNEED, this file only), so it reads the file as a resume does.
Prints each in seconds and GB/s (GB = 1e9 bytes) and what that makes for 7B's ~81 GB
(6.74e9 parameters x 12 bytes: fp32 weights and AdamW's two moments). The file is deleted after.
`--algorithms` instead times the candidates on one 256 MiB buffer in memory, one thread: zlib's
CRC-32 (the one used), hashlib's SHA-256, BLAKE2b, SHA-1 and MD5, and xxHash where installed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from training import checkpoint  # noqa: E402

SEVEN_B_BYTES = 6.74e9 * 12  # fp32 weights + AdamW's exp_avg and exp_avg_sq


def training_state(gib: float) -> dict:
    """Weights of blocks of LLaMA-like matrices (hidden 1024) and AdamW's moments: `gib` GiB in all."""
    hidden, budget = 1024, int(gib * 2**30) // 3  # the weights' share; the two moments add as much each
    shapes = [(hidden, hidden)] * 4 + [(4 * hidden, hidden)] * 2 + [(hidden, 4 * hidden), (hidden,), (hidden,)]
    weights, used = {}, 0
    while used < budget:
        for i, shape in enumerate(shapes):
            tensor = torch.randn(shape)
            if used + tensor.nbytes > budget:
                tensor = torch.randn(max(1, (budget - used) // 4))
            weights[f"layers.{len(weights) // len(shapes)}.{i}"] = tensor
            used += tensor.nbytes
            if used >= budget:
                break
    moments = {name: {"exp_avg": torch.randn_like(t), "exp_avg_sq": torch.rand_like(t)} for name, t in weights.items()}
    return {"step": 1, "model": weights, "optimizer": {"state": moments}}


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def drop_from_page_cache(path: Path) -> None:
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=4.0, help="checkpoint size in GiB (default 4)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench_checksum"), help="where to write it")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--algorithms", action="store_true", help="compare hash functions in memory instead")
    args = parser.parse_args(argv)
    if args.algorithms:
        return compare_algorithms(args.repeats)

    state = training_state(args.gib)
    path = args.dir / "checkpoints" / "step_0000001.pt"
    try:
        started = time.perf_counter()
        checkpoint.save_atomically(state, path)
        write = time.perf_counter() - started
        del state
        size = path.stat().st_size
        pool = checkpoint._threads()
        one_thread = best_of(args.repeats, lambda: _on_threads(1, lambda: checkpoint.file_checksums([path])))
        threaded = best_of(args.repeats, lambda: checkpoint.file_checksums([path]))

        def verify_from_disk():
            drop_from_page_cache(path)
            assert checkpoint.verify(path)

        from_disk = best_of(args.repeats, verify_from_disk)
        read_only = best_of(args.repeats, lambda: (drop_from_page_cache(path), _read(path)))
    finally:
        shutil.rmtree(args.dir / "checkpoints", ignore_errors=True)

    def rate(seconds: float) -> float:
        return size / 1e9 / seconds

    print(f"checkpoint: {size / 1e9:.2f} GB ({size / 2**30:.2f} GiB), written by save_atomically in {write:.1f} s "
          f"(torch.save, fsync and checksums)")
    print(f"checksums in the page cache:  1 thread {one_thread:6.2f} s  {rate(one_thread):5.2f} GB/s;  "
          f"{pool} threads {threaded:6.2f} s  {rate(threaded):5.2f} GB/s")
    print(f"verify from the disk:         {from_disk:6.2f} s  {rate(from_disk):5.2f} GB/s  "
          f"(reading alone: {read_only:.2f} s, {rate(read_only):.2f} GB/s)")
    print(f"7B with AdamW ({SEVEN_B_BYTES / 1e9:.0f} GB) at these rates: checksums when saving "
          f"{SEVEN_B_BYTES / 1e9 / rate(threaded):.0f} s ({pool} threads), verifying at resume "
          f"{SEVEN_B_BYTES / 1e9 / rate(from_disk):.0f} s, of which reading the file "
          f"{SEVEN_B_BYTES / 1e9 / rate(read_only):.0f} s")
    return 0


def compare_algorithms(repeats: int) -> int:
    import hashlib
    import zlib

    data = os.urandom(256 * 2**20)
    candidates = {"crc32 (zlib)": lambda: zlib.crc32(data), "sha256": lambda: hashlib.sha256(data).digest(),
                  "blake2b": lambda: hashlib.blake2b(data).digest(), "sha1": lambda: hashlib.sha1(data).digest(),
                  "md5": lambda: hashlib.md5(data).digest()}
    try:
        import xxhash
        candidates["xxh3_64 (xxhash)"] = lambda: xxhash.xxh3_64(data).digest()
    except ImportError:
        pass
    for name, run in candidates.items():
        print(f"{name:18s} {len(data) / 1e9 / best_of(repeats, run):6.2f} GB/s")
    return 0


def _on_threads(n: int, run):
    real = checkpoint._threads
    checkpoint._threads = lambda: n
    try:
        return run()
    finally:
        checkpoint._threads = real


def _read(path: Path) -> None:
    with open(path, "rb", buffering=0) as handle:
        block = bytearray(8 * 2**20)
        while handle.readinto(block):
            pass


if __name__ == "__main__":
    sys.exit(main())
