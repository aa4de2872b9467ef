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
    # How element statistics make a module's SNR: mean (the paper: the mean of the element SNRs
    # mu^2/var), median, or norm_ratio: sum(mu^2) / sum(var) over the module (our reading of the
    # revised estimator of the review page's rebuttal; mols/snr.py).
    estimator: Literal["mean", "median", "norm_ratio"] = "mean"
    # The per-element moments over the samples: welford (the paper: equal weights), or ema:
    # exponential moving averages of g and g^2 with decay ema_decay (the rebuttal's, 0.95), bias-
    # corrected as Adam's; no jackknife intervals then (set uncertainty_groups: 0).
    moments: Literal["welford", "ema"] = "welford"
    ema_decay: float = 0.95
    # The element SNR. plain (default, the paper): mu^2 / var over the K gradient samples, which
    # overestimates by about 1/K (E[mu_hat^2] = mu^2 + var/K): a module of SNR 0.01 at K = 64
    # reads ~0.026. corrected: max(0, mu^2/var - 1/K), removing that term (what is left: ~2/K
    # relative from 1/var_hat, and the clamp at 0 for elements with SNR below ~1/K), so alphas
    # compare across K. Costs nothing.
    snr: Literal["plain", "corrected"] = "plain"
    # How sure each calibration is, from the samples it already draws: the samples are dealt
    # round-robin into G groups, each group keeps its own moments (8 bytes x G per parameter, on
    # stats_device, beside the estimate's 8), and the jackknife over the groups gives a standard
    # error for every module SNR and alpha and a 95% interval (printed, logged, in mols.json). The
    # estimate itself is unchanged. 0 turns it off; 1 is not allowed (a spread needs 2 groups).
    uncertainty_groups: int = 4
    # Warn (and mark the table) when an alpha's 95% interval is wider than +- this fraction of it;
    # null: never.
    uncertainty_warn: Optional[float] = 0.2
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
    # With several ranks each keeps the moments of its 1/world of the elements (one copy per node,
    # not one per rank; mols/snr.py); false: every rank keeps all and they are merged at the end
    # (the earlier way, same estimate to float rounding). Always sharded under train.parallel: fsdp.
    shard_statistics: bool = True
    track_every: int = 0                 # >0: measure module SNRs every k steps (Figure 1)
    track_samples: int = 256             # sequences per tracking measurement
    reestimate_every: int = 0            # >0: re-estimate alphas every k steps (beyond the paper)
    reestimate_ramp_steps: int = 100

    def validate(self) -> list[str]:
        """Every problem of the section (the run config's check)."""
        return self.value_problems(choices=False) + self.grouping_problems()  # the typed check did the choices

    def value_problems(self, choices: bool = True) -> list[str]:
        """Problems of the values themselves (what mols.MoLS checks of the settings it is given;
        the grouping and reference are checked against the optimizer's groups there)."""
        problems: list[str] = []
        for name, allowed in (("estimator", ("mean", "median", "norm_ratio")), ("zero_variance", ("count", "exclude")),
                              ("snr", ("plain", "corrected")), ("moments", ("welford", "ema"))) if choices else ():
            if getattr(self, name) not in allowed:
                problems.append(f"mols.{name}: unknown value {getattr(self, name)!r} ({' or '.join(allowed)})")

        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        for name in ("samples", "micro_batch", "max_alpha", "min_alpha", "track_samples"):
            value = getattr(self, name)
            if number(value) and value <= 0:
                problems.append(f"mols.{name}: must be positive, got {value!r}")
        if number(self.uncertainty_groups) and (self.uncertainty_groups < 0 or self.uncertainty_groups == 1):
            problems.append(f"mols.uncertainty_groups: must be 0 (off) or at least 2, got {self.uncertainty_groups!r}")
        if number(self.ema_decay) and not 0 < self.ema_decay < 1:
            problems.append(f"mols.ema_decay: must be in (0, 1), got {self.ema_decay!r}")
        if self.moments == "ema" and number(self.uncertainty_groups) and self.uncertainty_groups:
            problems.append("mols.uncertainty_groups: moving averages (mols.moments: ema) keep no groups for the "
                            "jackknife interval; set mols.uncertainty_groups: 0")
        if self.moments == "ema" and self.snr == "corrected":
            problems.append("mols.snr: corrected removes the 1/K bias of equally weighted samples; with mols.moments: "
                            "ema use snr: plain")
        if self.moments == "ema" and self.shard_statistics is False:
            problems.append("mols.shard_statistics: moving averages of several ranks cannot be merged after the fact; "
                            "keep the statistics sharded (true)")
        if number(self.uncertainty_warn) and self.uncertainty_warn <= 0:
            problems.append(f"mols.uncertainty_warn: must be positive (or null), got {self.uncertainty_warn!r}")
        for name in ("track_every", "reestimate_every", "reestimate_ramp_steps"):
            value = getattr(self, name)
            if number(value) and value < 0:
                problems.append(f"mols.{name}: must be >= 0, got {value!r}")
        if self.fixed_multipliers is not None and isinstance(self.fixed_multipliers, dict):
            for cls, value in self.fixed_multipliers.items():
                if not number(value) or value <= 0:
                    problems.append(f"mols.fixed_multipliers.{cls}: must be a positive number, got {value!r}")
        return problems

    def grouping_problems(self) -> list[str]:
        problems: list[str] = []
        if not isinstance(self.grouping, str):
            return problems
        if self.fixed_multipliers is not None and isinstance(self.fixed_multipliers, dict) and self.grouping in GROUPINGS:
            known = grouping_classes(self.grouping)
            for cls in self.fixed_multipliers:
                if str(cls).rsplit(".", 1)[-1] not in known:
                    problems.append(f"mols.fixed_multipliers: {cls!r} is not a class of grouping "
                                    f"{self.grouping!r} (classes: {', '.join(sorted(known))})")
        if self.grouping not in GROUPINGS:
            hint = difflib.get_close_matches(self.grouping, list(GROUPINGS), n=1)
            problems.append(f"mols.grouping: unknown grouping {self.grouping!r}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(GROUPINGS)})"))
        elif isinstance(self.reference, str) and (problem := reference_problem(self.grouping, self.reference)):
            problems.append(f"mols.reference: {problem}")
        return problems
