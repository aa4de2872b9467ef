"""The MoLS rule and its application to any torch optimizer whose param groups carry `module_class`.

alpha_m = sqrt(SNR_ref / SNR_m), estimated once (by default at 1% of training), ramped linearly
from 1 to alpha over the rest of warm-up, then fixed. No floor by default (the paper's rule: a
module above the reference gets alpha < 1); `min_alpha=1.0` only boosts. `fixed_multipliers`
replaces the estimate by hand-set alphas, ramped in the same way (the paper's hand-tuned
baseline). The multiplier is applied inside optimizer step hooks: before `step()` each group's
lr is multiplied by its class's multiplier, after it the lr is put back, so any schedule (ours, or a torch LR scheduler) stays in charge of the base lr.
Slices of one tensor in different classes (GPT-2's fused QKV) get their *update* scaled instead:
p_new = p_old + m_slice * (p_stepped - p_old), which for optimizers whose update is linear in the
learning rate (Adam, AdamW, Muon, LAMB, Lion, ...) equals giving that slice its own lr.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional

import torch

from mols.config import MoLSConfig
from mols.groups import MIXED, Segment, classify
from mols.snr import (SNR_KINDS, DTensor, SNRMeasurement, default_loss, jackknife_se, local_rows, measure_module_snr,
                      t_quantile_975)

UNSCALED = ("other", MIXED)  # classes that always keep multiplier 1
AUTO_REFERENCE_CANDIDATES = ("qk", "vo", "mlp", "attn")
FIXED = "fixed"  # the `reference` of a calibration with hand-set multipliers


def resolve_reference(module_snr: dict[str, float], reference: str) -> str:
    """The class whose SNR anchors the scaling (its alpha is 1)."""
    scaled = {c: s for c, s in module_snr.items() if c not in UNSCALED}
    if not scaled:
        raise ValueError("no module class with parameters to scale: does the model match the "
                         "name patterns in mols/groups.py?")
    if reference == "max":
        candidates = scaled
    elif reference == "auto":  # attention/MLP matrices: stable across models (paper, Sec. 7)
        candidates = {c: s for c, s in scaled.items() if c.rsplit(".", 1)[-1] in AUTO_REFERENCE_CANDIDATES}
    else:  # a class name; with per-layer groups "vo" means every layerN.vo
        candidates = {c: s for c, s in scaled.items() if c == reference or c.endswith("." + reference)}
    if not candidates:
        raise ValueError(f"reference {reference!r} matches no module class with parameters; "
                         f"classes: {', '.join(sorted(scaled))} (or use reference: max)")
    return max(candidates, key=candidates.get)


def compute_alphas(module_snr: dict[str, float], reference: str = "vo", min_alpha: Optional[float] = None,
                   max_alpha: Optional[float] = None) -> tuple[dict[str, float], str]:
    ref = resolve_reference(module_snr, reference)
    ref_snr = module_snr[ref]
    alphas = {}
    for cls, snr in module_snr.items():
        if cls in UNSCALED:
            alphas[cls] = 1.0
            continue
        if not (snr > 0 and math.isfinite(snr) and ref_snr > 0):
            warnings.warn(f"MoLS: class {cls} has SNR {snr} (reference {ref}: {ref_snr}); "
                          f"its multiplier is set to {max_alpha or 1.0}")
            alphas[cls] = max_alpha or 1.0
            continue
        alpha = math.sqrt(ref_snr / snr)
        if min_alpha is not None:
            alpha = max(min_alpha, alpha)
        alphas[cls] = min(alpha, max_alpha) if max_alpha else alpha
    return alphas, ref


@dataclass
class Ramp:
    """Multipliers move linearly from `start_values` to `end_values` over updates [start, end)."""
    start: int
    end: int
    start_values: dict[str, float]
    end_values: dict[str, float]

    def value(self, cls: str, step: int) -> float:
        begin = self.start_values.get(cls, 1.0)
        target = self.end_values.get(cls, 1.0)
        if step < self.start:
            return begin
        fraction = 1.0 if self.end <= self.start else min(1.0, (step - self.start + 1) / (self.end - self.start))
        return begin + (target - begin) * fraction


@dataclass
class Calibration:
    step: int
    module_snr: dict[str, float]
    alphas: dict[str, float]
    reference: str
    gradient_samples: int
    sequences: int
    seconds: float
    zero_variance_fraction: dict[str, float] = field(default_factory=dict)
    # How sure the estimate is (mols.uncertainty_groups > 1): the jackknife over G groups of the
    # samples gives a standard error for each module SNR and each alpha (the alpha's covers the
    # reference's uncertainty too), and a 95% interval alpha +- t(G-1) * se. Empty when off.
    snr: str = "plain"                                                     # plain | corrected
    estimator: str = "mean"            # how element statistics made the module SNR (mean: the paper's)
    moments: str = "welford"           # welford (the paper's), or ema with its decay, e.g. "ema 0.95"
    uncertainty_groups: int = 0
    statistics_bytes: int = 0          # memory of the moments on one rank (sharded: its 1/world of them)
    statistics_node_bytes: int = 0     # ... on one node: one rank's x the ranks on the node
    module_snr_se: dict[str, float] = field(default_factory=dict)
    alpha_se: dict[str, float] = field(default_factory=dict)
    alpha_low: dict[str, float] = field(default_factory=dict)
    alpha_high: dict[str, float] = field(default_factory=dict)
    uncertainty_warn: Optional[float] = None   # relative half-width above which an alpha is flagged
    uncertain: list[str] = field(default_factory=list)  # classes whose interval is wider than that
    # snr: plain's 1/K bias, which the interval cannot show (it grows the sparse embedding's alpha
    # with the number of samples, docs/calibration.md): the alphas of the bias-corrected SNRs of the
    # same moments, and the classes whose plain alpha is further from it than its interval and
    # uncertainty_warn reach
    alphas_corrected: dict[str, float] = field(default_factory=dict)
    biased: list[str] = field(default_factory=list)

    def table(self) -> str:
        if self.reference == FIXED:
            lines = [f"MoLS at step {self.step}: hand-set multipliers (mols.fixed_multipliers), no SNR estimate",
                     f"  {'module':<14}{'alpha':>9}"]
            lines += [f"  {cls:<14}{self.alphas[cls]:>9.3f}" for cls in sorted(self.alphas)]
            return "\n".join(lines)
        lines = [f"MoLS calibration at step {self.step}: {self.sequences} sequences in "
                 f"{self.gradient_samples} gradient samples, {self.seconds:.1f}s; reference {self.reference}"
                 + ("; bias-corrected SNR" if self.snr == "corrected" else "")
                 + (f"; module SNR: {self.estimator}" if self.estimator != "mean" else "")
                 + (f"; moments: {self.moments}" if self.moments != "welford" else "")]
        if self.statistics_bytes:
            lines.append(f"  host memory of the statistics: {self.statistics_bytes / 2**20:,.1f} MiB per rank, "
                         f"{self.statistics_node_bytes / 2**20:,.1f} MiB per node")
        ranged = bool(self.alpha_se)
        if ranged:
            lines.append(f"  uncertainty: jackknife over {self.uncertainty_groups} groups of the samples; "
                         f"95% interval = alpha +- {t_quantile_975(self.uncertainty_groups - 1):.2f} se")
        elif self.uncertainty_groups:
            lines.append(f"  uncertainty: not available ({self.gradient_samples} samples in "
                         f"{self.uncertainty_groups} groups: every group needs one)")
        lines.append(f"  {'module':<14}{'SNR':>12}" + (f"{'± se':>11}" if ranged else "") + f"{'alpha':>9}"
                     + (f"{'± se':>8}  {'95% interval':<17}" if ranged else "")
                     + (f"{'corrected':>10}" if self.alphas_corrected else "")
                     + ("  zero-variance elements" if self.zero_variance_fraction else ""))
        for cls in sorted(self.module_snr, key=lambda c: -self.module_snr[c]):
            zero = self.zero_variance_fraction.get(cls)
            line = f"  {cls:<14}{self.module_snr[cls]:>12.4g}"
            if ranged:
                se = self.module_snr_se.get(cls)
                line += f"{se:>11.2g}" if se is not None else f"{'':>11}"
            line += f"{self.alphas[cls]:>9.3f}"
            if ranged:
                if cls in self.alpha_se:
                    interval = f"[{self.alpha_low[cls]:.3f}, {self.alpha_high[cls]:.3f}]"
                    line += f"{self.alpha_se[cls]:>8.3f}  {interval:<17}"
                else:
                    line += f"{'':>8}  {'':<17}"
            if self.alphas_corrected:
                corrected = self.alphas_corrected.get(cls)
                line += f"{corrected:>10.3f}" if corrected is not None and cls not in UNSCALED else f"{'':>10}"
            lines.append((line + (f"  {100 * zero:.1f}%" if zero else "")).rstrip())
        lines += [f"  ! {notice}" for notice in self.notices()]
        return "\n".join(lines)

    def notices(self) -> list[str]:
        """What the user should know about these alphas (printed in the table, and warned)."""
        said = [f"{cls}: alpha {self.alphas[cls]:.3f} (95% interval [{self.alpha_low[cls]:.3f}, "
                f"{self.alpha_high[cls]:.3f}]) is uncertain by more than {100 * self.uncertainty_warn:.0f}%: "
                f"more samples (mols.samples) narrow it" for cls in self.uncertain]
        said += [f"{cls}: alpha {self.alphas[cls]:.3f} becomes {self.alphas_corrected[cls]:.3f} without the 1/K bias "
                 f"of snr: plain, further than its interval reaches: more samples (mols.samples) shrink the bias "
                 f"(docs/calibration.md)" for cls in self.biased]
        return said


def local_tensor(param: torch.Tensor) -> torch.Tensor:
    """The part of a parameter this rank holds: a sharded (FSDP2) parameter's local shard, in
    place; any other tensor itself."""
    return param.to_local() if isinstance(param, DTensor) else param


def local_segment(seg: Segment, param: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """`seg` of `param`, cut from `local` (this rank's part of it, or a copy of that part), as a
    view. A slice along the dimension FSDP shards (GPT-2's fused bias: Q, K and V along dim 0)
    is narrowed to the rows this rank holds: narrowing the sharded parameter itself there would
    gather a new tensor, and a scaled update written into it would never reach the weights."""
    if seg.dim is None:
        return local
    if isinstance(param, DTensor):
        (placement,) = param.placements  # FSDP2 shards dim 0 over a 1-D mesh
        if placement.is_shard() and placement.dim == seg.dim:
            first, count = local_rows(param.shape[seg.dim], param.device_mesh.get_coordinate()[0],
                                      param.device_mesh.size(0))
            start, stop = max(seg.start, first), min(seg.stop, first + count)
            return local.narrow(seg.dim, start - first, stop - start) if stop > start else local.narrow(seg.dim, 0, 0)
    return seg.view(local)


def segments_of(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> list[Segment]:
    """What MoLS measures and scales, read from the optimizer's groups (their `module_class`).

    A group of class `mixed` (GPT-2's fused QKV) is split into slices by its `grouping`."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    tagged = [g for g in optimizer.param_groups if "module_class" in g]
    if not tagged:
        raise ValueError("MoLS: no param group of the optimizer carries a 'module_class'; build the "
                         "groups with mols.param_groups(model, grouping)")
    segments: list[Segment] = []
    for group in tagged:
        for param in group["params"]:
            if id(param) not in name_of:
                raise ValueError(f"MoLS: param group {group['module_class']!r} holds a tensor that is not "
                                 f"a parameter of {type(model).__name__}")
            name = name_of[id(param)]
            if group["module_class"] == MIXED:
                segments += classify([(name, param)], group.get("grouping", "modules"))
            else:
                segments.append(Segment(name, group["module_class"]))
    return segments


class MoLS:
    """Module-wise learning-rate scaling via SNR.

    Usage in any loop (see README):  mols = MoLS(model, optimizer, estimate_step=..., warmup_steps=...)
    with `optimizer` built on `param_groups(model, grouping)` (the classes come from its groups);
    at step `mols.estimate_step` call `mols.calibrate(model, batches)`; call optimizer.step() as usual.
    Its settings are `mols.settings` (a mols.config.MoLSConfig), read where they are used.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: Optional[MoLSConfig] = None,
                 *, estimate_step: int, warmup_steps: int, device: torch.device | str = "cpu",
                 step: Optional[Callable[[], int]] = None, **changes):
        """`settings`: a mols.config.MoLSConfig (a run config's `mols` section; its defaults when
        None), with `changes` of its fields by name (`MoLS(model, optimizer, estimate_step=100,
        warmup_steps=1000, min_alpha=1.0)`). `device`: where `stats_device: device` keeps the
        statistics. `step`: the loop's update counter (without it MoLS counts the optimizer's steps
        itself, and saves the count)."""
        settings = dataclasses.replace(settings or MoLSConfig(), **changes)
        problems = settings.value_problems()
        if problems:
            raise ValueError("MoLS: " + "; ".join(problems))
        self.settings = settings
        self.estimate_step, self.warmup_steps = estimate_step, warmup_steps
        self.stats_device = {"cpu": "cpu", "device": device}.get(settings.stats_device, settings.stats_device)
        inner = getattr(model, "module", model)
        self.params = dict(inner.named_parameters())
        self.segments: list[Segment] = segments_of(optimizer, inner)
        self.fused = {}  # parameter name -> its sliced segments
        for seg in self.segments:
            if seg.dim is not None:
                self.fused.setdefault(seg.name, []).append(seg)
        classes = {seg.module_class for seg in self.segments} - set(UNSCALED)
        if not classes:
            raise ValueError(f"MoLS: no parameter of {type(inner).__name__} is in a module class it can scale; "
                             "add its name patterns to mols/groups.py")
        fixed, reference = settings.fixed_multipliers, settings.reference
        if fixed is not None:
            unknown = [c for c in fixed if not any(k == c or k.endswith("." + c) for k in classes)]
            if unknown:
                raise ValueError(f"MoLS: fixed_multipliers names {', '.join(map(repr, unknown))}, not a module class "
                                 f"of the optimizer's groups (classes: {', '.join(sorted(classes))})")
        elif reference not in ("max", "auto") and not any(c == reference or c.endswith("." + reference) for c in classes):
            raise ValueError(f"MoLS: reference {reference!r} matches no module class of the optimizer's groups "
                             f"(classes: {', '.join(sorted(classes))}); set mols.reference")
        self._external_step = step
        self._own_step = 0
        self.ramp: Optional[Ramp] = None    # None until the first calibration
        self.calibrations: list[Calibration] = []
        self._hook_handles = []
        self.attach(optimizer)

    @property
    def step(self) -> int:
        return self._external_step() if self._external_step is not None else self._own_step

    # -- when -------------------------------------------------------------------------------------
    def calibration_due(self, step: int) -> bool:
        if not self.calibrations:
            return step >= self.estimate_step
        last = self.calibrations[-1].step
        return bool(self.settings.reestimate_every) and step >= last + self.settings.reestimate_every

    def tracking_due(self, step: int) -> bool:
        return bool(self.settings.track_every) and step % self.settings.track_every == 0

    def draws(self, what: str, sequences_per_draw: int) -> int:
        """Extra batches a calibration ("calibrate": `samples` sequences) or a tracking measurement
        ("track": `track_samples`) draws when each draw holds `sequences_per_draw` sequences over
        all ranks; at least 2, since a variance needs two samples."""
        sequences = {"calibrate": self.settings.samples, "track": self.settings.track_samples}[what]
        return max(2, math.ceil(sequences / sequences_per_draw))

    # -- what -------------------------------------------------------------------------------------
    def multiplier(self, module_class: str | None, step: Optional[int] = None) -> float:
        if self.ramp is None or module_class is None or module_class in UNSCALED:
            return 1.0
        return self.ramp.value(module_class, self.step if step is None else step)

    def multipliers(self, step: Optional[int] = None) -> dict[str, float]:
        classes = sorted({s.module_class for s in self.segments} - set(UNSCALED))
        return {c: self.multiplier(c, step) for c in classes}

    def measure(self, model: torch.nn.Module, batches: Iterable[dict], loss_fn: Callable = default_loss,
                should_stop: Optional[Callable[[], bool]] = None, groups: int = 0) -> SNRMeasurement:
        """Module SNRs now, without changing anything (for SNR tracking over training); `groups`
        > 1 adds their jackknife standard errors."""
        cfg = self.settings
        return measure_module_snr(model, batches, self.segments, loss_fn=loss_fn, stats_device=self.stats_device,
                                  estimator=cfg.estimator, zero_variance=cfg.zero_variance, snr=cfg.snr,
                                  groups=groups, should_stop=should_stop, shard=cfg.shard_statistics,
                                  ema_decay=cfg.ema_decay if cfg.moments == "ema" else None)

    def _alphas(self, module_snr: dict[str, float]) -> tuple[dict[str, float], str]:
        cfg = self.settings
        return compute_alphas(module_snr, cfg.reference, cfg.min_alpha, cfg.max_alpha)

    def _uncertainty(self, result: SNRMeasurement, alphas: dict[str, float]) -> dict:
        """Calibration fields for the jackknife of module SNRs and alphas ({} without replicates)."""
        if len(result.replicates) < 2:
            return {}
        with warnings.catch_warnings():  # a replicate's own zero-SNR warning repeats the estimate's
            warnings.simplefilter("ignore")
            replicate_alphas = [self._alphas(r)[0] for r in result.replicates]
        alpha_se = jackknife_se(replicate_alphas)
        t = t_quantile_975(len(result.replicates) - 1)
        alpha_se = {c: se for c, se in alpha_se.items() if c in alphas and c not in UNSCALED}
        low = {c: max(0.0, alphas[c] - t * se) for c, se in alpha_se.items()}
        high = {c: alphas[c] + t * se for c, se in alpha_se.items()}
        uncertain = []
        if self.settings.uncertainty_warn is not None:
            uncertain = [c for c in sorted(high) if c not in UNSCALED and alphas[c] > 0
                         and (high[c] - low[c]) / 2 > self.settings.uncertainty_warn * alphas[c]]
        return {"module_snr_se": dict(result.module_snr_se), "alpha_se": alpha_se, "alpha_low": low,
                "alpha_high": high, "uncertain": uncertain}

    def _bias(self, result: SNRMeasurement, alphas: dict[str, float], uncertainty: dict) -> dict:
        """The alphas of the bias-corrected SNRs, and the classes whose plain alpha differs from its
        corrected one by more than both the half-width of its 95% interval and uncertainty_warn x
        alpha (what there is of the two)."""
        with warnings.catch_warnings():  # a class of corrected SNR 0 says so through the plain one already
            warnings.simplefilter("ignore")
            corrected = self._alphas(result.module_snr_corrected)[0]
        biased = []
        for cls, alpha in alphas.items():
            if cls in UNSCALED or cls not in corrected or alpha <= 0:
                continue
            reaches = []
            if cls in uncertainty.get("alpha_high", {}):
                reaches.append((uncertainty["alpha_high"][cls] - uncertainty["alpha_low"][cls]) / 2)
            if self.settings.uncertainty_warn is not None:
                reaches.append(self.settings.uncertainty_warn * alpha)
            if reaches and abs(corrected[cls] - alpha) > max(reaches):
                biased.append(cls)
        return {"alphas_corrected": corrected, "biased": biased}

    def calibrate(self, model: torch.nn.Module, batches: Iterable[dict], loss_fn: Callable = default_loss,
                  should_stop: Optional[Callable[[], bool]] = None) -> Calibration:
        """Estimate module SNRs now and start ramping towards the new alphas. With
        `fixed_multipliers` nothing is measured (`batches` is not touched) and the hand-set
        alphas ramp in instead. `should_stop` (asked after every gradient sample) ends it early
        with mols.snr.MeasurementInterrupted, leaving MoLS as it was."""
        step = self.step
        if self.settings.fixed_multipliers is not None:
            classes = sorted({s.module_class for s in self.segments} - set(UNSCALED))
            alphas = {c: float(next((v for k, v in self.settings.fixed_multipliers.items()
                                     if c == k or c.endswith("." + k)), 1.0)) for c in classes}
            result, ref = SNRMeasurement({}, 0, 0, 0.0), FIXED
        else:
            result = self.measure(model, batches, loss_fn, should_stop, groups=self.settings.uncertainty_groups)
            alphas, ref = self._alphas(result.module_snr)
        if self.calibrations:  # re-estimation: from the current multipliers, over a fixed window
            end = step + self.settings.reestimate_ramp_steps
        else:                  # the paper: from 1 to alpha over the remaining warm-up
            end = max(self.warmup_steps, step)
        current = {c: self.multiplier(c, step) for c in alphas}
        self.ramp = Ramp(step, end, current, alphas)
        extra = {} if ref == FIXED else {
            "snr": self.settings.snr, "uncertainty_groups": self.settings.uncertainty_groups,
            "estimator": self.settings.estimator,
            "moments": "welford" if self.settings.moments == "welford" else f"ema {self.settings.ema_decay:g}",
            "statistics_bytes": result.statistics_bytes, "uncertainty_warn": self.settings.uncertainty_warn,
            "statistics_node_bytes": result.statistics_bytes * int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
            **self._uncertainty(result, alphas)}
        if ref != FIXED and result.module_snr_corrected:
            extra.update(self._bias(result, alphas, extra))
        calibration = Calibration(step, result.module_snr, alphas, ref, result.gradient_samples,
                                  result.sequences, result.seconds, result.zero_variance_fraction, **extra)
        for notice in calibration.notices():
            warnings.warn(f"MoLS: {notice}")
        self.calibrations.append(calibration)
        return calibration

    # -- how --------------------------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Scale every step of `optimizer` (groups without `module_class` are left alone)."""
        saved_lrs: list[float] = []
        snapshots: dict[str, torch.Tensor] = {}

        def pre_step(opt, args, kwargs):
            saved_lrs[:] = [g["lr"] for g in opt.param_groups]
            for group in opt.param_groups:
                group["lr"] = group["lr"] * self.multiplier(group.get("module_class"))
            snapshots.clear()
            for name, segs in self.fused.items():
                if any(self.multiplier(s.module_class) != 1.0 for s in segs):
                    snapshots[name] = local_tensor(self.params[name]).detach().clone()

        @torch.no_grad()
        def post_step(opt, args, kwargs):
            for name, before in snapshots.items():
                param = self.params[name]
                after = local_tensor(param)
                for seg in self.fused[name]:
                    old, new = local_segment(seg, param, before), local_segment(seg, param, after)
                    new.copy_(old + self.multiplier(seg.module_class) * (new - old))
            snapshots.clear()
            for group, lr in zip(opt.param_groups, saved_lrs):
                group["lr"] = lr
            self._own_step += 1

        self._hook_handles += [optimizer.register_step_pre_hook(pre_step),
                               optimizer.register_step_post_hook(post_step)]

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"ramp": None if self.ramp is None else asdict(self.ramp),
                 "calibrations": [asdict(c) for c in self.calibrations]}
        if self._external_step is None:
            state["step"] = self._own_step
        return state

    def load_state_dict(self, state: dict) -> None:
        self._own_step = int(state.get("step", 0))
        self.ramp = None if state["ramp"] is None else Ramp(**state["ramp"])
        self.calibrations = [Calibration(**c) for c in state["calibrations"]]
