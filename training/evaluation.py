"""Validation loss: token-weighted over the fixed validation set, all ranks together (ours); and
the reference harness's (GaLore's torchrun_main.py, the paper's numbers) over its own batches
(data/harness.py), when train.eval_harness asks for it. docs/evaluation.md compares the two.
"""
from __future__ import annotations

import math
from typing import Sequence

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
    # Summed on the device (float64: the same sums as python floats would give), so the host
    # waits once per evaluation, not twice per batch.
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    rounds = len(val_batches)
    if lockstep:
        rounds = int(distributed.all_reduce_max(torch.tensor([rounds]))[0])
    for i in range(rounds):
        batch = val_batches[i] if i < len(val_batches) else _no_targets(device)
        with autocast():
            loss, n = loss_sum_and_count(model, to_device(batch, device))
        total += loss.double()
        count += n
    model.train()
    total, count = distributed.all_reduce_tensor(torch.stack([total, count.double()])).tolist()
    return total / max(count, 1), int(count)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50))


def harness_loss(batch_means: Sequence[float]) -> float:
    """The reference harness's validation loss of one rank: the sum of its batches' mean token
    losses divided by one more than the number of batches (its batch counter starts at 1, so
    the result is n/(n+1) of the mean of batch means). Every batch weighs the same, however many
    target tokens it holds."""
    return float(sum(batch_means)) / (len(batch_means) + 1)


@torch.no_grad()
def evaluate_harness(model, batches, device, autocast, lockstep: bool = False) -> dict:
    """The reference harness's numbers over every rank's batches (data.harness.
    build_harness_val_batches): {"loss": the mean over ranks of each rank's harness_loss (the
    harness all-gathers them and averages), "ppl": exp(loss), "batches": batches run over all
    ranks, "tokens": their non-pad tokens over all ranks}. Each batch's mean is its summed token
    loss over its target tokens, as HF's `model(..., labels=...).loss` (the harness's) computes
    it. `lockstep` as in `evaluate`."""
    model.eval()
    means = torch.zeros(len(batches), dtype=torch.float64, device=device)
    tokens = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in batches)  # non-pad, on the host
    rounds = len(batches)
    if lockstep:
        rounds = int(distributed.all_reduce_max(torch.tensor([rounds]))[0])
    for i in range(rounds):
        batch = batches[i] if i < len(batches) else _no_targets(device)
        with autocast():
            loss, n = loss_sum_and_count(model, to_device(batch, device))
        if i < len(batches):
            means[i] = loss.double() / n.clamp(min=1)
    model.train()
    loss_sum, total_batches, total_tokens = distributed.all_reduce_sum(
        [harness_loss(means.tolist()), float(len(batches)), float(tokens)], device)
    loss = loss_sum / distributed.world_size()
    return {"loss": loss, "ppl": perplexity(loss), "batches": int(total_batches), "tokens": int(total_tokens)}


def _no_targets(device) -> dict:
    """A one-sequence batch whose tokens are all ignored: a forward that adds nothing."""
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    return {"input_ids": ids, "labels": torch.full_like(ids, IGNORE_INDEX)}
