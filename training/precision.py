"""The model a run trains or evaluates: built from its config, on its device, in its precision.

precision `auto` is bf16 autocast over fp32 weights on a GPU (bf16-mixed) and fp32 on a CPU;
`bf16-pure` casts the weights themselves (the reference harness).
"""
from __future__ import annotations

import contextlib

import torch

from models import build_model


def prepare_model(cfg, vocab_size: int, device: torch.device):
    """The model on its device in its precision, and the autocast context the steps run under."""
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model.size, vocab_size, attn_implementation=cfg.model.attn_implementation,
                        overrides=cfg.model.overrides)
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16-mixed" if device.type == "cuda" else "fp32"
    if precision == "bf16-pure":
        model.to(torch.bfloat16)
    model.to(device)
    if cfg.model.gradient_checkpointing:
        model.activation_checkpointing_enable()  # transformers 5's name for gradient checkpointing
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16-mixed"
                else contextlib.nullcontext)
    return model, precision, autocast
