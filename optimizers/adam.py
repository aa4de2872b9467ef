"""Adam, AdamW and NAdam from torch.optim: elementwise updates, so they also run on FSDP shards."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from configs import check_range
from optimizers.groups import make_group
from optimizers.registry import register
from optimizers.shapes import moments_bytes, trainable


@dataclass
class AdamOptions:
    amsgrad: bool = False               # keep the running maximum of the second moment
    fused: Optional[bool] = None        # torch's fused kernel (null: on for CUDA, off on CPU)


@dataclass
class NAdamOptions:
    momentum_decay: float = 4e-3        # NAdam's momentum decay psi (torch default)
    decoupled_weight_decay: bool = False  # AdamW-style decay instead of L2

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.momentum_decay", self.momentum_decay, low=0)
        return problems


def adam_state(options: AdamOptions, model, dtype) -> int:
    """exp_avg and exp_avg_sq per parameter (and max_exp_avg_sq with amsgrad)."""
    return moments_bytes(3 if options.amsgrad else 2, trainable(model), dtype)


def two_moments(options, model, dtype) -> int:
    """exp_avg and exp_avg_sq per parameter."""
    return moments_bytes(2, trainable(model), dtype)


def _on_cuda(model: torch.nn.Module) -> bool:
    """Fused Adam(W) by default on CUDA: one kernel for the whole update."""
    return next(model.parameters()).device.type == "cuda"


def adam_family(cls, role: str):
    def build(cfg, options, model, groups):
        return cls([make_group(g, cfg.lr, role) for g in groups], lr=cfg.lr, betas=tuple(cfg.betas),
                   eps=cfg.eps, weight_decay=cfg.weight_decay, amsgrad=options.amsgrad,
                   fused=_on_cuda(model) if options.fused is None else options.fused)
    return build


register("adamw", options=AdamOptions, state_bytes=adam_state, sharded=True)(
    adam_family(torch.optim.AdamW, "adamw"))
register("adam", options=AdamOptions, state_bytes=adam_state, sharded=True)(
    adam_family(torch.optim.Adam, "adam (L2 weight decay)"))


@register("nadam", options=NAdamOptions, state_bytes=two_moments, sharded=True)
def build_nadam(cfg, options, model, groups):
    return torch.optim.NAdam([make_group(g, cfg.lr, "nadam") for g in groups], lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps, weight_decay=cfg.weight_decay,
                             momentum_decay=options.momentum_decay,
                             decoupled_weight_decay=options.decoupled_weight_decay)
