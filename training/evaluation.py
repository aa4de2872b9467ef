"""Validation loss: token-weighted over the fixed validation set, all ranks together."""
from __future__ import annotations

import math

import torch

from models import loss_sum_and_count
from training import distributed


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, val_batches, device, autocast) -> tuple[float, int]:
    """(mean loss per target token, target tokens) over every rank's validation batches.

    Pass the unwrapped model: ranks may hold different numbers of batches, and a DDP forward
    would wait for the other ranks."""
    model.eval()
    total, count = 0.0, 0
    for batch in val_batches:
        with autocast():
            loss, n = loss_sum_and_count(model, to_device(batch, device))
        total, count = total + float(loss), count + int(n)
    model.train()
    total, count = distributed.all_reduce_sum([total, count], device)
    return total / max(count, 1), int(count)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50))
