"""Lion (pytorch_optimizer.Lion): the sign of an interpolated momentum; one moment per parameter."""
from __future__ import annotations

from optimizers.groups import make_group
from optimizers.registry import register
from optimizers.shapes import moments_bytes, trainable


def one_moment(options, model, dtype) -> int:
    """exp_avg per parameter."""
    return moments_bytes(1, trainable(model), dtype)


@register("lion", state_bytes=one_moment, why_not_sharded="is elementwise but not yet tested on shards")
def build_lion(cfg, options, model, groups):
    """betas from the config; Lion's paper uses (0.9, 0.99) and a 3-10x smaller lr than AdamW's."""
    from pytorch_optimizer import Lion
    return Lion([make_group(g, cfg.lr, "lion") for g in groups], lr=cfg.lr, betas=tuple(cfg.betas),
                weight_decay=cfg.weight_decay)
