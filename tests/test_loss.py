"""models/loss.py: the copy-free loss path (equal to the straightforward one, fp32 and bf16
logits, padding, counts) and GPT-2's fused tanh GELU. CPU only."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from models import build_model
from models.loss import IGNORE_INDEX, loss_sum_and_count, mean_loss, shifted_labels, token_losses


def reference(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The straightforward path (what models/loss.py did before): shift the logits, upcast all."""
    targets = labels[:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, (targets != IGNORE_INDEX).sum()


class FixedLogits(torch.nn.Module):
    """A stand-in model whose logits are a given leaf tensor (so its gradient can be compared)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids):
        return types.SimpleNamespace(logits=self.logits)


def batch_with_padding(batch=3, seq=17, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    labels = ids.clone()
    labels[1, 9:] = IGNORE_INDEX
    labels[2, -1] = IGNORE_INDEX
    labels[0, 0] = IGNORE_INDEX  # never a target anyway (nothing predicts position 0)
    return {"input_ids": ids, "labels": labels}


def test_shifted_labels_move_left_and_ignore_the_last_position():
    labels = torch.tensor([[1, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]])
    assert shifted_labels(labels).tolist() == [[2, 3, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_equal_to_the_straightforward_loss_with_padding_and_counts(dtype):
    batch = batch_with_padding()
    g = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(3, 17, 50, generator=g)).to(dtype).requires_grad_()
    loss, count = loss_sum_and_count(FixedLogits(logits), batch)
    grad, = torch.autograd.grad(loss, logits)
    ref_logits = logits.detach().clone().requires_grad_()
    ref, ref_count = reference(ref_logits, batch["labels"])
    ref_grad, = torch.autograd.grad(ref, ref_logits)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert count.item() == ref_count.item() == 16 + 8 + 15
    if dtype == torch.float32:  # the same per-token losses, added up in the same order
        assert torch.equal(loss, ref) and torch.equal(grad, ref_grad)
    else:  # the reference upcasts everything to fp32 too; only the summation order differs
        torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=0, atol=float(torch.finfo(dtype).eps))
    assert torch.equal(mean_loss(FixedLogits(logits), batch), loss / count)


def test_padding_is_ignored_whatever_its_logits():
    batch = batch_with_padding()
    logits = torch.randn(3, 17, 50)
    changed = logits.clone()
    changed[1, 8:] = 1e4 * torch.randn(9, 50)   # positions whose next label is padding
    changed[:, -1] = -1e4                       # the last position never has a target
    for dtype in (torch.float32, torch.bfloat16):
        a, _ = loss_sum_and_count(FixedLogits(logits.to(dtype)), batch)
        b, _ = loss_sum_and_count(FixedLogits(changed.to(dtype)), batch)
        assert torch.equal(a, b)


def test_bf16_loss_is_computed_in_fp32_and_in_chunks(monkeypatch):
    """Chunked fp32 logsumexp: as exact as upcasting everything, unlike bf16 cross_entropy."""
    import models.loss as loss_module

    g = torch.Generator().manual_seed(2)
    logits = (4 * torch.randn(2, 33, 1000, generator=g)).bfloat16()
    targets = torch.randint(0, 1000, (2, 33), generator=g)
    exact = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    whole = token_losses(logits, targets).flatten()
    monkeypatch.setattr(loss_module, "CHUNK_ELEMENTS", 5 * 1000)   # 5 rows per block: 14 blocks
    chunked = token_losses(logits, targets).flatten()
    torch.testing.assert_close(whole, exact, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    low = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").float()
    assert (low - exact).abs().max() > 10 * (whole - exact).abs().max()


def test_loss_of_a_real_model_is_bit_identical_to_the_old_path():
    torch.manual_seed(0)
    model = build_model("llama_micro", 300)
    batch = batch_with_padding(batch=4, seq=32, vocab=300, seed=3)
    loss, count = loss_sum_and_count(model, batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref, ref_count = reference(model(input_ids=batch["input_ids"]).logits, batch["labels"])
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    assert torch.equal(loss, ref) and torch.equal(count, ref_count)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))


def test_gpt2_uses_the_fused_tanh_gelu_which_equals_gelu_new():
    model = build_model("gpt2_micro", 300)
    assert model.config.activation_function == "gelu_pytorch_tanh"
    g = torch.Generator().manual_seed(0)
    x = 5 * torch.randn(1 << 16, generator=g)
    torch.testing.assert_close(ACT2FN["gelu_pytorch_tanh"](x), ACT2FN["gelu_new"](x), rtol=1e-6, atol=1e-6)
    xb = x.bfloat16()
    torch.testing.assert_close(ACT2FN["gelu_pytorch_tanh"](xb).float(), ACT2FN["gelu_new"](xb).float(),
                               rtol=2 ** -7, atol=2 ** -7)
