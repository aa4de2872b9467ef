"""Validation loss: token-weighted over the fixed validation set, all ranks together."""
from __future__ import annotations

import math

import torch

from configs import IGNORE_INDEX
from models import loss_sum_and_count
from training import distributed


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, val_batches, device, autocast, lockstep: bool = False) -> tuple[float, int]:
    """(mean loss per target token, target tokens) over every rank's validation batches.

    Pass the unwrapped model: ranks may hold different numbers of batches, and a DDP forward
    would wait for the other ranks. A sharded model's forward is a collective (it gathers each
    layer's weights), so with `lockstep` a rank with fewer batches runs forwards on a batch
    without targets until every rank has run as many."""
    model.eval()
    total, count = 0.0, 0
    rounds = len(val_batches)
    if lockstep:
        rounds = int(distributed.all_reduce_max(torch.tensor(rounds, device=device)))
    for i in range(rounds):
        batch = val_batches[i] if i < len(val_batches) else _no_targets(device)
        with autocast():
            loss, n = loss_sum_and_count(model, to_device(batch, device))
        total, count = total + float(loss), count + int(n)
    model.train()
    total, count = distributed.all_reduce_sum([total, count], device)
    return total / max(count, 1), int(count)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50))


def _no_targets(device) -> dict:
    """A one-sequence batch whose tokens are all ignored: a forward that adds nothing."""
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    return {"input_ids": ids, "labels": torch.full_like(ids, IGNORE_INDEX)}
