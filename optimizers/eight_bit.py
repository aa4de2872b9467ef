"""8-bit Adam (bitsandbytes' Adam8bit and AdamW8bit): moments quantised to uint8 in blocks."""
from __future__ import annotations

import math
from dataclasses import dataclass

from configs import check_range
from optimizers.groups import make_group
from optimizers.registry import register
from optimizers.shapes import trainable

EIGHT_BIT_BLOCK = 256      # bitsandbytes' block of 8-bit optimizer state: one fp32 absmax each
EIGHT_BIT_QMAP_BYTES = 2 * 256 * 4  # its two fp32 quantization maps, shared by every 8-bit tensor
NOT_ON_SHARDS = "quantises state in blocks of bitsandbytes' own layout, not tested on shards"


@dataclass
class EightBitOptions:
    min_8bit_size: int = 4096           # tensors with fewer elements keep 32-bit state

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.min_8bit_size", self.min_8bit_size, low=1)
        return problems


def eight_bit_state(options: EightBitOptions, model, dtype) -> int:
    """A tensor of >= min_8bit_size elements keeps two uint8 moments and an fp32 absmax per block of
    each; a smaller one two fp32 moments (whatever its dtype)."""
    total = quantized = 0
    for p in trainable(model):
        n = p.numel()
        if n >= options.min_8bit_size:
            total += 2 * (n + 4 * math.ceil(n / EIGHT_BIT_BLOCK))
            quantized = 1
        else:
            total += 2 * 4 * n
    return total + quantized * EIGHT_BIT_QMAP_BYTES


def bitsandbytes_adam(class_name: str):
    def build(cfg, options, model, groups):
        import bitsandbytes
        cls = getattr(bitsandbytes.optim, class_name)
        # bitsandbytes' Adam8bit and AdamW8bit run the same kernel (decoupled weight decay); they
        # differ only in their default weight decay, which cfg.weight_decay overrides.
        min_size = options.min_8bit_size
        return cls([make_group(g, cfg.lr, f"8-bit state (tensors >= {min_size} elements)") for g in groups],
                   lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                   min_8bit_size=min_size)
    return build


register("adam8bit", options=EightBitOptions, state_bytes=eight_bit_state, why_not_sharded=NOT_ON_SHARDS)(
    bitsandbytes_adam("Adam8bit"))
register("adamw8bit", options=EightBitOptions, state_bytes=eight_bit_state, why_not_sharded=NOT_ON_SHARDS)(
    bitsandbytes_adam("AdamW8bit"))
