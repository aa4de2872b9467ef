"""Initial weights that depend on the seed and the parameter's name only (`model.init: by_name`).

transformers initialises a model by drawing from one global generator in construction order, so a
parameter's value depends on every draw before it: a model built on the meta device and filled in
later, one shard at a time (FSDP), cannot reproduce it. Here each parameter gets its own generator,
seeded from (seed, name), and the distribution transformers' `_init_weights` uses for it:
normal(0, initializer_range) for matrices and embeddings (GPT-2's output projections `c_proj` with
the std divided by sqrt(2 x layers)), zeros for biases, ones for norm weights. The same values on
any device, in any order, sharded or not, so a 1-process, a DDP and an FSDP run start equal.
tests/test_fsdp.py checks the rule against transformers' own initialisation of every size's
architecture (the same kind of value and std per parameter).
"""
from __future__ import annotations

import hashlib
import math

import torch


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _is_norm(name: str) -> bool:
    leaf = name.rsplit(".", 2)
    module = leaf[-2] if len(leaf) > 1 else ""
    return "norm" in module or module.startswith("ln_")


def initial_value(config, name: str, shape: torch.Size, seed: int) -> torch.Tensor:
    """The fp32 initial value of parameter `name` (of a transformers model with `config`) on the host."""
    if _is_norm(name):
        return torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
    if name.endswith("bias"):
        return torch.zeros(shape)
    std = config.initializer_range
    if getattr(config, "model_type", "") == "gpt2" and name.endswith("c_proj.weight"):
        std /= math.sqrt(2 * config.n_layer)  # GPT-2's scaled residual projections
    return torch.empty(shape).normal_(0.0, std, generator=_generator(seed, name))


@torch.no_grad()
def initialize_by_name(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter of a (materialised, unsharded) model with `initial_value`."""
    for name, param in model.named_parameters():
        param.copy_(initial_value(model.config, name, param.shape, seed))
