"""The learning-rate schedule as a small pure function of the step (nothing stored, nothing to resume)."""
import math


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the peak learning rate for optimizer update `step` (0-based, < total_steps).

    Linear warm-up from 0 (the first update already moves: (step+1)/warmup), then cosine decay
    from the peak at `warmup_steps` to `min_ratio` at the last update `total_steps - 1`.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - 1 - warmup_steps
    progress = 1.0 if decay_steps <= 0 else min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
