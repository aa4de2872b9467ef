"""What every training stream shares about its order: the shuffle seed of each epoch, and which
ranks there can be and how many documents each of them reads.

Epoch e of stream `seed_offset` uses shuffle seed `epoch_seed(data.shuffle_seed, seed_offset, e)`:
exactly `data.shuffle_seed` for the first epoch of the main stream (as in the reference harness),
a SeedSequence-derived seed otherwise, so extra streams (MoLS estimation samples, seed_offset > 0)
and later epochs never repeat another stream's order. The embedded corpus (a numpy permutation,
data/stream.py), the token shards (a Feistel permutation, data/shards.py) and the streamed sources
(`IterableDataset.shuffle`) all take their seeds from here.
"""
from __future__ import annotations

import numpy as np

from configs import UserError


def epoch_seed(shuffle_seed: int, seed_offset: int, epoch: int) -> int:
    if seed_offset == 0 and epoch == 0:
        return shuffle_seed
    return int(np.random.SeedSequence([shuffle_seed, seed_offset, epoch]).generate_state(1)[0])


def check_ranks(rank: int, world_size: int, seed_offset: int = 0) -> None:
    """Caller mistakes, a ValueError (the config's own rules are DataConfig.validate's)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if seed_offset < 0:
        raise ValueError(f"seed_offset must be >= 0, got {seed_offset}")


def documents_per_rank(n_documents: int, world_size: int, what: str) -> int:
    """Documents each rank reads per epoch when `world_size` ranks share `n_documents` without
    overlap and in step: n_documents // world_size (the rest sit the epoch out). A UserError
    naming `what` when that is none."""
    per_rank = n_documents // world_size
    if per_rank == 0:
        raise UserError(f"{what}: {n_documents} documents, too few for {world_size} ranks")
    return per_rank
