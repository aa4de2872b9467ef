"""The `mols` section of a run config (plain settings; this package imports nothing of the project)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal, Optional

from mols.groups import GROUPINGS, grouping_classes, reference_problem


@dataclass
class MoLSConfig:
    enabled: bool = False
    grouping: str = "modules"            # modules | attn_mlp | attn_mlp_emb | qk_vo_mlp_emb | layers
    estimate_at: Optional[int] = None    # step of the one-shot estimate; default ceil(1% of steps)
    samples: int = 2048                  # N: sequences used for the estimate
    micro_batch: Optional[int] = None    # b: sequences per gradient sample; default train.micro_batch
    reference: str = "vo"                # vo | max | auto | <class>
    # Floor on alpha. null (default): none, the paper's rule (Eq. 5): a module whose SNR exceeds
    # the reference's gets alpha < 1. 1.0: only boost (ours; equals the paper whenever the
    # reference has the largest SNR; configs/paper/mols_floor.yaml, the quickstart).
    min_alpha: Optional[float] = None
    max_alpha: Optional[float] = None
    estimator: Literal["mean", "median"] = "mean"
    # Elements whose gradient variance over the K samples is 0 (in practice: embedding rows of
    # tokens absent from the estimation samples, gradient exactly 0 every time). count (default):
    # they enter the module mean with SNR 0, as mu^2 / (var + eps) would give; exclude: the module
    # SNR is taken over the elements with var > 0 only. The paper is silent.
    zero_variance: Literal["count", "exclude"] = "count"
    # Hand-set multipliers instead of estimated ones (the paper's Figure 3 baseline): class ->
    # alpha, classes not named keep 1. No SNR is estimated; at estimate_at they ramp in over the
    # rest of warm-up exactly like estimated alphas. {} = every multiplier 1 (MoLS off, but
    # `track_every` still measures SNRs: the paper's Figure 1 with plain Adam).
    fixed_multipliers: Optional[dict] = None
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
        if self.fixed_multipliers is not None and isinstance(self.fixed_multipliers, dict):
            known = grouping_classes(self.grouping) if self.grouping in GROUPINGS else None
            for cls, value in self.fixed_multipliers.items():
                if not number(value) or value <= 0:
                    problems.append(f"mols.fixed_multipliers.{cls}: must be a positive number, got {value!r}")
                if known is not None and str(cls).rsplit(".", 1)[-1] not in known:
                    problems.append(f"mols.fixed_multipliers: {cls!r} is not a class of grouping "
                                    f"{self.grouping!r} (classes: {', '.join(sorted(known))})")
        if not isinstance(self.grouping, str):
            return problems
        if self.grouping not in GROUPINGS:
            hint = difflib.get_close_matches(self.grouping, list(GROUPINGS), n=1)
            problems.append(f"mols.grouping: unknown grouping {self.grouping!r}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(GROUPINGS)})"))
        elif isinstance(self.reference, str) and (problem := reference_problem(self.grouping, self.reference)):
            problems.append(f"mols.reference: {problem}")
        return problems
