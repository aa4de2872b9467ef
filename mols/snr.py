"""Gradient signal-to-noise ratio per element and per module class.

For one element over K gradient samples: mu = mean, var = unbiased variance, snr = mu^2 / var
(0 where var == 0, e.g. embedding rows no token hit). A module's SNR is the mean (or median) of
its elements' SNRs; `zero_variance="exclude"` leaves the var == 0 elements out of it instead
(the paper does not say; "count", the default, is what mu^2 / (var + eps) computes). Moments
are streamed with Welford's update, so K gradients are never held at once, and merged across
data-parallel ranks with Chan's formula.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.distributed as dist

from mols.groups import Segment

MEDIAN_MAX_ELEMENTS = 1 << 24  # above this a class's median is taken on a fixed random subsample


class GradientMoments:
    """Running per-element mean and sum of squared deviations of parameter gradients (fp32)."""

    def __init__(self, params: dict[str, torch.Tensor], device: torch.device | str = "cpu"):
        self.params = params
        self.device = torch.device(device)
        self.mean = {n: torch.zeros(p.shape, dtype=torch.float32, device=self.device) for n, p in params.items()}
        self.m2 = {n: torch.zeros_like(m) for n, m in self.mean.items()}
        self.count = 0
        # Two scratch buffers of the largest tensor's size for Welford's two differences: fresh
        # temporaries of every gradient's size each sample cost page faults that made the fold
        # 2.4x slower (scripts/bench_mols.py --fold-only; the arithmetic is the same).
        largest = max((m.numel() for m in self.mean.values()), default=0)
        self._scratch = (torch.empty(largest, device=self.device), torch.empty(largest, device=self.device))

    @torch.no_grad()
    def add_current_grads(self) -> None:
        """Fold in the gradients now in `.grad` as one sample (a missing grad counts as zero)."""
        self.count += 1
        for name, param in self.params.items():
            mean, m2 = self.mean[name], self.m2[name]
            # A blocking copy: a non_blocking device-to-host copy may still be in flight when the
            # CPU reads the buffer, which would make the statistics (and every alpha) wrong on GPU.
            grad = (torch.zeros_like(mean) if param.grad is None
                    else param.grad.detach().to(self.device, torch.float32))
            delta, after = (buffer[:mean.numel()].view(mean.shape) for buffer in self._scratch)
            torch.sub(grad, mean, out=delta)
            mean.add_(delta, alpha=1.0 / self.count)
            m2.addcmul_(delta, torch.sub(grad, mean, out=after))

    @torch.no_grad()
    def merge_across_ranks(self) -> None:
        """Chan's parallel merge for equal per-rank counts: the result is the pooled estimate."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        world = dist.get_world_size()
        comm_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else self.device
        for name in self.mean:
            local_mean = self.mean[name].to(comm_device)
            pooled_mean = local_mean.clone()
            dist.all_reduce(pooled_mean)
            pooled_mean /= world
            m2 = self.m2[name].to(comm_device)
            m2.add_((local_mean - pooled_mean).square_(), alpha=self.count)
            dist.all_reduce(m2)
            self.mean[name].copy_(pooled_mean)
            self.m2[name].copy_(m2)
        self.count *= world

    def element_snr(self, name: str) -> torch.Tensor:
        if self.count < 2:
            raise ValueError("SNR needs at least 2 gradient samples")
        var = self.m2[name] / (self.count - 1)
        snr = self.mean[name].square() / var
        return torch.where(var > 0, snr, torch.zeros_like(snr))

    def module_snr(self, segments: list[Segment], estimator: str = "mean",
                   zero_variance: str = "count") -> dict[str, float]:
        """Per class: mean (or median) of element SNRs over all its segments; elements with zero
        variance count as SNR 0 ("count") or are left out ("exclude"; a class with no element
        left has SNR 0)."""
        return self.module_stats(segments, estimator, zero_variance)[0]

    def module_stats(self, segments: list[Segment], estimator: str = "mean",
                     zero_variance: str = "count") -> tuple[dict[str, float], dict[str, float]]:
        """(module SNR, fraction of the class's elements with zero variance) per class."""
        if zero_variance not in ("count", "exclude"):
            raise ValueError(f"unknown zero_variance {zero_variance!r} (count or exclude)")
        per_class: dict[str, list[torch.Tensor]] = {}
        zero: dict[str, list[int]] = {}
        snr_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for seg in segments:
            if seg.name not in snr_cache:
                snr_cache[seg.name] = (self.element_snr(seg.name), self.m2[seg.name] > 0)
            snr, nonzero = (seg.view(t).reshape(-1) for t in snr_cache[seg.name])
            zero.setdefault(seg.module_class, [0, 0])
            zero[seg.module_class][0] += int(nonzero.numel() - nonzero.sum())
            zero[seg.module_class][1] += nonzero.numel()
            per_class.setdefault(seg.module_class, []).append(snr[nonzero] if zero_variance == "exclude" else snr)
        result = {}
        for cls, parts in per_class.items():
            count = sum(p.numel() for p in parts)
            if count == 0:
                result[cls] = 0.0
            elif estimator == "mean":
                result[cls] = sum(float(p.double().sum()) for p in parts) / count
            elif estimator == "median":
                values = torch.cat([p.cpu() for p in parts])
                if values.numel() > MEDIAN_MAX_ELEMENTS:
                    gen = torch.Generator().manual_seed(0)
                    values = values[torch.randint(values.numel(), (MEDIAN_MAX_ELEMENTS,), generator=gen)]
                result[cls] = float(values.median())
            else:
                raise ValueError(f"unknown SNR estimator {estimator!r} (mean or median)")
        return result, {cls: z / n if n else 0.0 for cls, (z, n) in zero.items()}


class MeasurementInterrupted(Exception):
    """`should_stop` answered True between two gradient samples: nothing was estimated or changed."""

    def __init__(self, samples_done: int):
        super().__init__(f"SNR measurement interrupted after {samples_done} gradient samples")
        self.samples_done = samples_done


@dataclass
class SNRMeasurement:
    module_snr: dict[str, float]
    gradient_samples: int     # K, summed over ranks
    sequences: int            # N = K * micro-batch size
    seconds: float
    zero_variance_fraction: dict[str, float] = field(default_factory=dict)  # per class


def default_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return model(**batch).loss


def measure_module_snr(model: torch.nn.Module, batches: Iterable[dict], segments: list[Segment], *,
                       loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor] = default_loss,
                       stats_device: str | torch.device = "cpu", estimator: str = "mean",
                       zero_variance: str = "count",
                       should_stop: Callable[[], bool] | None = None) -> SNRMeasurement:
    """Module SNRs from one gradient sample per batch (extra forward/backward passes).

    `model` may be wrapped in DistributedDataParallel: backward then runs under `no_sync`, so each
    rank sees its own gradients, and the moments are merged across ranks once at the end. The
    model's parameters and any gradients it held are left as they were; no optimizer is involved.
    `should_stop` is asked after every sample (under DDP it must give every rank the same answer);
    when it says True the measurement ends at once with MeasurementInterrupted.
    """
    start = time.perf_counter()
    inner = getattr(model, "module", model)
    params = {n: p for n, p in inner.named_parameters() if p.requires_grad}
    saved_grads = {n: p.grad for n, p in params.items()}
    moments = GradientMoments(params, stats_device)
    sequences = 0
    no_sync = model.no_sync if hasattr(model, "no_sync") else contextlib.nullcontext
    try:
        for batch in batches:
            for p in params.values():
                p.grad = None
            with no_sync():
                loss_fn(model, batch).backward()
            moments.add_current_grads()
            sequences += int(next(iter(batch.values())).shape[0])
            if should_stop is not None and should_stop():
                raise MeasurementInterrupted(moments.count)
    finally:
        for n, p in params.items():
            p.grad = saved_grads[n]
    moments.merge_across_ranks()
    if dist.is_available() and dist.is_initialized():
        total = torch.tensor([sequences], dtype=torch.long,
                             device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(total)
        sequences = int(total.item())
    module_snr, zero_fraction = moments.module_stats(segments, estimator, zero_variance)
    return SNRMeasurement(module_snr, moments.count, sequences, time.perf_counter() - start, zero_fraction)
