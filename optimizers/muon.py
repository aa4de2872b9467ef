"""Muon (torch.optim.Muon) on the hidden 2-D matrices, AdamW on embeddings, head, norms and biases,
stepped as one optimizer (CombinedOptimizer)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from configs import check_range
from optimizers.combined import CombinedOptimizer
from optimizers.groups import make_group
from optimizers.registry import register
from optimizers.shapes import hidden_matrices, is_hidden_matrix, itemsize, trainable


@dataclass
class MuonOptions:
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5                   # Newton-Schulz iterations
    # per-shape lr scaling of torch.optim.Muon: match_rms_adamw (Moonshot: update RMS like AdamW,
    # so one lr serves both parts) or original (Keller Jordan: needs a ~10x larger lr)
    adjust_lr_fn: Literal["match_rms_adamw", "original"] = "match_rms_adamw"
    adamw_lr_ratio: float = 1.0         # lr of the AdamW part (embeddings, head, norms) / optimizer.lr

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.momentum", self.momentum, low=0, high=1, high_open=True)
        check_range(problems, "optimizer.options.ns_steps", self.ns_steps, low=1)
        check_range(problems, "optimizer.options.adamw_lr_ratio", self.adamw_lr_ratio, low=0, low_open=True)
        return problems


def muon_state(options: MuonOptions, model, dtype) -> int:
    """Muon's momentum buffer per hidden matrix; its AdamW part's two moments per other parameter."""
    hidden = {id(p) for _, p in hidden_matrices(model)}
    return sum((1 if id(p) in hidden else 2) * p.numel() * itemsize(p, dtype) for p in trainable(model))


@register("muon", options=MuonOptions, state_bytes=muon_state,
          why_not_sharded="orthogonalises whole weight matrices, which FSDP splits across ranks")
def build_muon(cfg, options, model, groups):
    adamw_lr = cfg.lr * options.adamw_lr_ratio
    muon_groups, adamw_groups = [], []
    for group in groups:
        matrices, rest = group.split(is_hidden_matrix)
        if matrices.params:
            muon_groups.append(make_group(matrices, cfg.lr, f"muon ({options.adjust_lr_fn})"))
        if rest.params:
            adamw_groups.append(make_group(rest, adamw_lr, "adamw (muon's non-matrix part)"))
    parts = {}
    if muon_groups:
        parts["muon"] = torch.optim.Muon(muon_groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         momentum=options.momentum, nesterov=options.nesterov,
                                         ns_steps=options.ns_steps, adjust_lr_fn=options.adjust_lr_fn)
    if adamw_groups:
        parts["adamw"] = torch.optim.AdamW(adamw_groups, lr=adamw_lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                           weight_decay=cfg.weight_decay)
    return CombinedOptimizer(parts)
