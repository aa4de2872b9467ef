"""Adafactor (pytorch_optimizer.AdaFactor) with an explicit lr, as the reference harness ran it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from configs import check_range
from optimizers.groups import make_group
from optimizers.registry import register
from optimizers.shapes import itemsize, trainable


@dataclass
class AdafactorOptions:
    # keep a first moment with beta1 = optimizer.betas[0] (the reference harness has none)
    momentum: bool = False
    decay_rate: float = -0.8            # second-moment decay 1 - t^decay_rate
    beta2_cap: float = 0.999            # upper bound of the second-moment decay
    clip_threshold: float = 1.0         # update RMS clipping threshold
    eps1: float = 1e-30                 # added to squared gradients

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.decay_rate", self.decay_rate, high=0, high_open=True)
        check_range(problems, "optimizer.options.beta2_cap", self.beta2_cap, low=0, high=1, high_open=True)
        check_range(problems, "optimizer.options.clip_threshold", self.clip_threshold, low=0, low_open=True)
        check_range(problems, "optimizer.options.eps1", self.eps1, low=0)
        return problems


def adafactor_state(options: AdafactorOptions, model, dtype) -> int:
    """A matrix's second moment factored into row and column statistics (rows + cols values), a
    vector's in full; with momentum, an fp32 first moment per element."""
    total = 0
    for p in trainable(model):
        if p.ndim >= 2:
            second = math.prod(p.shape[:-1]) + math.prod(p.shape[:-2]) * p.shape[-1]
        else:
            second = p.numel()
        total += second * itemsize(p, dtype) + (4 * p.numel() if options.momentum else 0)
    return total


@register("adafactor", options=AdafactorOptions, state_bytes=adafactor_state,
          why_not_sharded="factors each matrix's second moment into whole-row and whole-column means")
def build_adafactor(cfg, options, model, groups):
    """No relative step, no parameter scaling: the reference harness's Adafactor settings
    (transformers' Adafactor with relative_step=False, scale_parameter=False, warmup_init=False).
    torch.optim.Adafactor always multiplies the step by the parameter RMS and caps it at
    1/sqrt(t), so its lr means something else. cfg.eps is not used (Adafactor's eps1 is added to
    squared gradients)."""
    from pytorch_optimizer import AdaFactor
    beta1 = cfg.betas[0] if options.momentum else None
    role = "adafactor" + (" (with momentum)" if options.momentum else "")
    return AdaFactor([make_group(g, cfg.lr, role) for g in groups], lr=cfg.lr, betas=(beta1, options.beta2_cap),
                     decay_rate=options.decay_rate, weight_decay=cfg.weight_decay,
                     clip_threshold=options.clip_threshold, eps1=options.eps1, relative_step=False,
                     scale_parameter=False, warmup_init=False, momentum_dtype=torch.float32)
