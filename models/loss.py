"""The training loss: next-token cross-entropy summed over real tokens, with their count.

Token-weighted over the whole global batch (the caller divides by the global count), so the
gradient does not depend on how the batch is split into ranks and micro-batches (the reference
harness averages micro-batch means).

Nothing of the logits' size is copied: the labels are shifted (labels[:, 1:] with -100 appended),
not the logits, so the logits go to the loss whole, as a view [batch * seq, vocab].

- fp32 (and fp64) logits: `F.cross_entropy(..., reduction="none")` on that view gives the
  per-token losses (the same values as the old `logits[:, :-1].float()` path), and `_sum` adds
  them up in the order nll_loss used for the old path's rows, so on CPU the loss and the
  gradients are bit-identical to the old path's (checked on LLaMA, GPT-2 and Qwen2 tiny models).
- bf16 / fp16 logits: `cross_entropy` on them would compute log-softmax in the low precision
  (bf16 log-probabilities: ~0.4% error per token), and `.float()` on the whole tensor is a full
  fp32 copy (2.1 GB for bf16 logits of 64 x 256 x 32k). `_ChunkedCrossEntropy` instead upcasts
  CHUNK_ELEMENTS-sized blocks of rows: logsumexp and the target logit in fp32, the block freed
  right away; backward recomputes softmax per block from the saved fp32 logsumexp (one float
  per row) and writes the gradient in the logits' dtype. Exact up to fp32 summation order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from configs import IGNORE_INDEX

CHUNK_ELEMENTS = 1 << 24   # fp32 elements upcast at once in the low-precision path (64 MB)


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """targets[:, t] = labels[:, t + 1]; the last position of each row is ignored."""
    pad = labels.new_full((labels.shape[0], 1), IGNORE_INDEX)
    return torch.cat([labels[:, 1:], pad], dim=1)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropies (fp32) of low-precision logits [N, V], computed in fp32 a block of
    rows at a time; saves only the fp32 logsumexp per row (and references to the inputs)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, rows: int) -> torch.Tensor:
        n = logits.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        losses = torch.empty(n, dtype=torch.float32, device=logits.device)
        for s in range(0, n, rows):
            block = logits[s: s + rows].float()
            t = targets[s: s + rows]
            lse[s: s + rows] = torch.logsumexp(block, dim=-1)
            picked = block.gather(1, t.clamp(min=0).unsqueeze(1)).squeeze(1)
            losses[s: s + rows] = torch.where(t != IGNORE_INDEX, lse[s: s + rows] - picked, 0.0)
        ctx.save_for_backward(logits, targets, lse)
        ctx.rows = rows
        return losses

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        rows = ctx.rows
        grad = torch.empty_like(logits)
        for s in range(0, logits.shape[0], rows):
            probs = (logits[s: s + rows].float() - lse[s: s + rows, None]).exp_()
            t = targets[s: s + rows]
            valid = (t != IGNORE_INDEX).to(probs.dtype)
            probs.scatter_add_(1, t.clamp(min=0).unsqueeze(1), -valid.unsqueeze(1))
            probs.mul_((valid * grad_losses[s: s + rows]).unsqueeze(1))
            grad[s: s + rows] = probs
        return grad, None, None


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each position of logits [..., V] against targets [...] (0 where the
    target is IGNORE_INDEX), fp32 whatever the logits' dtype, without a copy of the logits."""
    flat = logits.reshape(-1, logits.shape[-1])   # a view for contiguous logits
    flat_targets = targets.reshape(-1)
    if flat.dtype in (torch.float32, torch.float64):
        losses = F.cross_entropy(flat, flat_targets, ignore_index=IGNORE_INDEX, reduction="none")
    else:
        losses = _ChunkedCrossEntropy.apply(flat, flat_targets, max(1, CHUNK_ELEMENTS // flat.shape[-1]))
    return losses.view(targets.shape)


def _sum(losses: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The sum of per-token losses [rows] exactly as `F.cross_entropy(..., reduction="sum")` over
    those rows and targets would add them up: nll_loss's summation order depends on the row count
    and on which rows are ignored, and this feeds it the same rows (as a one-class input)."""
    zeros = torch.where(targets != IGNORE_INDEX, 0, IGNORE_INDEX)
    return F.nll_loss(-losses.unsqueeze(1), zeros, ignore_index=IGNORE_INDEX, reduction="sum")


def loss_sum_and_count(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the token losses, number of target tokens), both tensors on the model's device.

    Bit-identical, in value and gradient, to `F.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
    labels[:, 1:].flatten(), reduction="sum")` for fp32 logits (the same per-token losses, added
    up in the same order), without its copy of the logits."""
    logits = model(input_ids=batch["input_ids"]).logits
    labels = batch["labels"]
    losses = token_losses(logits, shifted_labels(labels))      # [batch, seq]; last column 0
    targets = labels[:, 1:]
    return _sum(losses[:, :-1].flatten(), targets.flatten()), (targets != IGNORE_INDEX).sum()


def mean_loss(model, batch) -> torch.Tensor:
    """Mean token loss of one batch (what MoLS's gradient samples differentiate)."""
    loss, count = loss_sum_and_count(model, batch)
    return loss / count.clamp(min=1)
