"""The `mols` section of a run config (plain settings; this package imports nothing of the project)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import difflib

from mols.groups import GROUPINGS, reference_problem


@dataclass
class MoLSConfig:
    enabled: bool = False
    grouping: str = "modules"            # modules | attn_mlp | attn_mlp_emb | qk_vo_mlp_emb | layers
    estimate_at: Optional[int] = None    # step of the one-shot estimate; default ceil(1% of steps)
    samples: int = 2048                  # N: sequences used for the estimate
    micro_batch: Optional[int] = None    # b: sequences per gradient sample; default train.micro_batch
    reference: str = "vo"                # vo | max | auto | <class>
    min_alpha: float = 1.0               # 1.0: only boost (the paper, whenever VO is the maximum)
    max_alpha: Optional[float] = None
    estimator: Literal["mean", "median"] = "mean"
    stats_device: Literal["cpu", "device"] = "cpu"
    track_every: int = 0                 # >0: measure module SNRs every k steps (Figure 1)
    track_samples: int = 256             # sequences per tracking measurement
    reestimate_every: int = 0            # >0: re-estimate alphas every k steps (beyond the paper)
    reestimate_ramp_steps: int = 100

    def validate(self) -> list[str]:
        problems: list[str] = []

        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        for name in ("samples", "micro_batch", "max_alpha", "min_alpha", "track_samples"):
            value = getattr(self, name)
            if number(value) and value <= 0:
                problems.append(f"mols.{name}: must be positive, got {value!r}")
        for name in ("track_every", "reestimate_every", "reestimate_ramp_steps"):
            value = getattr(self, name)
            if number(value) and value < 0:
                problems.append(f"mols.{name}: must be >= 0, got {value!r}")
        if not isinstance(self.grouping, str):
            return problems
        if self.grouping not in GROUPINGS:
            hint = difflib.get_close_matches(self.grouping, list(GROUPINGS), n=1)
            problems.append(f"mols.grouping: unknown grouping {self.grouping!r}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(GROUPINGS)})"))
        elif isinstance(self.reference, str) and (problem := reference_problem(self.grouping, self.reference)):
            problems.append(f"mols.reference: {problem}")
        return problems
