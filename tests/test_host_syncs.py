"""The GPU step waits for the GPU once: to decide whether to step (a stop signal on some rank, a
non-finite loss or gradient norm). Every other host round trip is counted here on the CPU, where
none of them costs anything: the patched calls are those that make a CUDA host wait for the
device's queue (`.item()`, `.tolist()`, `bool/float/int` of a tensor, `.cpu()`, and
`torch.tensor(value, device=...)`, which copies a host value only after the queued work)."""
from __future__ import annotations

import contextlib

import pytest
import torch

import train
from models import build_model
from mols import param_groups
from test_gpu_path import real_text_batch
from training.evaluation import evaluate
from training.faults import StopRequests
from optimizers import build_optimizer
from optimizers.config import OptimizerConfig

WAITS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu")


@pytest.fixture
def waits(monkeypatch) -> list[str]:
    """The host-waiting calls made while the test runs, by name, in order."""
    calls: list[str] = []
    for name in WAITS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    original_tensor = torch.tensor

    def tensor(*args, **kwargs):
        if kwargs.get("device") is not None:
            calls.append("torch.tensor(device=...)")
        return original_tensor(*args, **kwargs)
    monkeypatch.setattr(torch, "tensor", tensor)
    return calls


def step_parts():
    from training.compat import skip_packed_sequence_detection
    skip_packed_sequence_detection()  # as training/precision.py does for every run
    torch.manual_seed(0)
    model = build_model("llama_micro", 2000)
    cfg = OptimizerConfig(name="adamw", lr=1e-3, options={"fused": True})  # as on CUDA: fused AdamW
    assert not cfg.validate()
    optimizer = build_optimizer(cfg, model, param_groups(model))
    batch = real_text_batch(2000, batch=2, seq=32)
    return model, optimizer, [batch, {k: v.clone() for k, v in batch.items()}]


def test_an_update_waits_for_the_device_once(waits):
    model, optimizer, micro_batches = step_parts()
    stops = StopRequests(signals=())
    for _ in range(2):  # the first step creates the optimizer's state
        waits.clear()
        update = train.take_update(model, model, optimizer, micro_batches, lr_factor=1.0, grad_clip=1.0, world_size=1,
                                   device=torch.device("cpu"), autocast=contextlib.nullcontext, stops=stops)
        assert not update.nonfinite
        assert waits == ["tolist"], waits  # StopRequests.poll: stop? non-finite? (the decision to step)


def test_an_evaluation_waits_once_not_per_batch(waits):
    model, _, batches = step_parts()
    waits.clear()
    loss, tokens = evaluate(model, batches * 3, torch.device("cpu"), contextlib.nullcontext)
    assert waits == ["tolist"], waits
    assert tokens == 6 * 2 * 31 and loss > 0


@pytest.mark.parametrize("size", ["llama_micro", "gpt2_micro", "qwen2_micro"])
def test_skipping_transformers_packed_sequence_check_leaves_the_logits_as_they_were(size, monkeypatch):
    from transformers import masking_utils

    from training import compat
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", masking_utils.find_packed_sequence_indices)
    torch.manual_seed(0)
    model = build_model(size, 2000)
    batch = real_text_batch(2000, batch=2, seq=32)
    with torch.no_grad():
        before = model(input_ids=batch["input_ids"]).logits
        compat.skip_packed_sequence_detection()
        after = model(input_ids=batch["input_ids"]).logits
    assert torch.equal(before, after)
