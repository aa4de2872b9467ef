#!/usr/bin/env python3
"""Resume cost of the token-shard reader: time to the first document at an early cursor vs a late one.

    python scripts/bench_shards.py [--synthetic-docs 20000000] [--repeats 7] [--dir /tmp/bench_shards]

Two shard sets: the embedded corpus's train split (pretokenized with embedded-8k by
scripts/pretokenize.py, once) and a synthetic set of `--synthetic-docs` short documents (random
ids, written once with data.shards.write_shard) that stands in for a C4-sized index. For each, in
one process, alternating early and late in every repeat: `shard_documents(dir, Cursor(0, docs))`
from scratch (manifest read, shards memory-mapped, epoch order built) up to its first document,
at docs = 10 and at docs = 90% of the rank's epoch (embedded: one rank; synthetic: the last
of --world-size ranks), then the next 10,000 documents. Prints the
medians and the ratio late / early (1.0: resuming late costs the same as resuming early).
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from configs import write_json_atomic  # noqa: E402
from data.sequences import Cursor  # noqa: E402
from data.shards import (FORMAT_VERSION, MANIFEST, ORDER_BLOCK, ShardSet, shard_documents,  # noqa: E402
                         write_shard_arrays)


def synthetic_shards(directory: Path, n_docs: int, per_shard: int) -> Path:
    if (directory / MANIFEST).is_file() and ShardSet(directory).manifest["documents"] == n_docs:
        return directory
    rng = np.random.default_rng(0)
    shards = []
    for k, start in enumerate(range(0, n_docs, per_shard)):
        count = min(per_shard, n_docs - start)
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(rng.integers(1, 9, count), out=offsets[1:])
        tokens = rng.integers(0, 8000, int(offsets[-1])).astype(np.uint16)
        shards.append(write_shard_arrays(directory, k, tokens, offsets, rows=count))
    manifest = {"format_version": FORMAT_VERSION, "dtype": "uint16", "docs_per_shard": per_shard,
                "tokenizer": {"spec": "synthetic", "fingerprint": "synthetic"},
                "source": {"kind": "synthetic", "description": f"{n_docs} random documents of 1-8 ids"},
                "shards": shards, "documents": sum(s["documents"] for s in shards),
                "tokens": sum(s["tokens"] for s in shards), "rows": n_docs}
    write_json_atomic(directory / MANIFEST, manifest)
    return directory


def embedded_shards(directory: Path) -> Path:
    if not (directory / MANIFEST).is_file():
        import subprocess
        code = subprocess.run([sys.executable, str(Path(__file__).with_name("pretokenize.py")), "--source", "embedded",
                               "--split", "train", "--tokenizer", "embedded-8k", "--out", str(directory),
                               "--docs-per-shard", "2000", "--workers", "2", "--quiet"]).returncode
        if code:
            raise SystemExit(code)
    return directory


def first_document(directory: Path, docs: int, world_size: int, rank: int) -> tuple[float, float]:
    """(seconds to the first document from scratch, seconds for the next 10,000 documents)."""
    t0 = time.perf_counter()
    stream = shard_documents(directory, Cursor(0, docs), rank=rank, world_size=world_size,
                             shuffle_seed=42, seed_offset=0)
    doc = next(stream)
    t1 = time.perf_counter()
    assert doc.index == docs
    for _ in itertools.islice(stream, 10_000):
        pass
    t2 = time.perf_counter()
    stream.close()
    return t1 - t0, t2 - t1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="/tmp/bench_shards")
    p.add_argument("--synthetic-docs", type=int, default=20_000_000)
    p.add_argument("--docs-per-shard", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--world-size", type=int, default=8, help="ranks, for the synthetic set (embedded: 1)")
    args = p.parse_args(argv)
    root = Path(args.dir)
    sets = {"embedded train (embedded-8k)": (embedded_shards(root / "embedded-train"), 1),
            f"synthetic {args.synthetic_docs:,} docs": (synthetic_shards(root / "synthetic", args.synthetic_docs,
                                                                          args.docs_per_shard), args.world_size)}
    print(f"{args.repeats} repeats, early and late alternating; medians")
    for name, (directory, world_size) in sets.items():
        shards = ShardSet(directory)
        per_rank = len(shards) // world_size
        # late: 90% in, but with a full block of the order (ORDER_BLOCK) left before the epoch ends
        positions = {"early": 10, "late": min(int(0.9 * per_rank), per_rank - 2 * ORDER_BLOCK)}
        first_document(directory, 10, world_size, world_size - 1)  # warm-up (page cache, imports)
        times = {key: ([], []) for key in positions}
        for _ in range(args.repeats):
            for key, docs in positions.items():
                a, b = first_document(directory, docs, world_size, world_size - 1)
                times[key][0].append(a)
                times[key][1].append(b)
        med = {key: (statistics.median(v[0]), statistics.median(v[1])) for key, v in times.items()}
        print(f"{name}: {len(shards):,} documents in {len(shards.shards)} shards; rank {world_size - 1} "
              f"of {world_size}: {per_rank:,} documents per epoch")
        for key, docs in positions.items():
            print(f"  {key:5s} cursor docs={docs:>12,}: first document {1e3 * med[key][0]:8.2f} ms, "
                  f"next 10,000 documents {1e3 * med[key][1]:8.1f} ms")
        print(f"  ratio late/early: first document {med['late'][0] / med['early'][0]:.2f}, "
              f"next 10,000 {med['late'][1] / med['early'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
