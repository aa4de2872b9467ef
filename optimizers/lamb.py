"""LAMB (pytorch_optimizer.Lamb): Adam's moments, each update scaled by a per-tensor trust ratio."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from configs import check_range
from optimizers.adam import two_moments
from optimizers.groups import make_group
from optimizers.registry import register


@dataclass
class LambOptions:
    weight_decouple: bool = True        # decoupled (AdamW-style) weight decay
    grad_averaging: bool = True         # scale new gradients by 1 - beta1 in the first moment
    pre_norm: bool = False              # divide gradients by their global norm / max_grad_norm first
    max_grad_norm: float = 1.0          # reference norm for pre_norm (unused otherwise)

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.max_grad_norm", self.max_grad_norm, low=0)
        return problems


@register("lamb", options=LambOptions, state_bytes=two_moments,
          why_not_sharded="scales each update by a trust ratio of whole-tensor norms (not tested on shards)")
def build_lamb(cfg, options, model, groups):
    from pytorch_optimizer import Lamb
    return Lamb([make_group(g, cfg.lr, "lamb") for g in groups], lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                weight_decay=cfg.weight_decay, **dataclasses.asdict(options))
