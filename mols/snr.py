"""Gradient signal-to-noise ratio per element and per module class.

For one element over K gradient samples: mu = mean, var = unbiased variance, snr = mu^2 / var
(0 where var == 0, e.g. embedding rows no token hit). A module's SNR is the mean of its elements'
SNRs (the paper's rule), or their median, or (`estimator="norm_ratio"`) the ratio of sums
sum(mu^2) / sum(var) = (||mu|| / ||sigma||)^2 over its elements: our reading of the revised
estimator in the review page's rebuttal ("the L2 norm of the mean gradient over the per-parameter
standard deviation"), squared to keep the element SNR's dimension, so the same sqrt rule turns it
into an alpha. `zero_variance="exclude"` leaves the var == 0 elements out instead (the paper does
not say; "count", the default, is what mu^2 / (var + eps) computes). Moments are streamed with
Welford's update, so K gradients are never held at once, and merged across data-parallel ranks
with Chan's formula; or (`ema_decay`, the rebuttal's "exponential moving average", 0.95 there)
kept as bias-corrected exponential moving averages of g and g^2 over the samples in order, so
the last ~1 / (1 - decay) samples weigh most (no jackknife groups then).

`snr="corrected"` removes the 1/K bias of mu^2 (E[mu_hat^2] = mu^2 + var/K): per element
max(0, mu^2/var - 1/K). `groups=G > 0` also keeps the moments of G groups of the samples
(sample i of the whole measurement, counted over all ranks, goes to group i % G), from which
`jackknife_replicates` gives the G delete-one-group module SNRs: their spread is the estimate's
standard error (`jackknife_se`), at no extra forward/backward pass and 8 bytes x G per parameter.
The merged moments, and so the module SNRs, are the same with or without groups (bitwise).

With several ranks the moments are sharded (`shard=True`, the default there): rank r keeps those of
its dim-0 chunk of every parameter (torch.chunk's split, FSDP's), so a node holds one copy of the
statistics, not one per rank. Each gradient sample of every rank still counts: after a rank's
backward, an all-to-all sends each chunk of its gradient to the rank that keeps it, and every rank
folds the world's samples of its chunk in rank order (sample i = rank + world x draw, as above).
Module SNRs are then sums over ranks. Under FSDP the per-rank gradients are taken from the
gathered (unsharded) parameters in the backward itself, before any reduction.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from mols import collectives
from mols.groups import Segment

try:  # FSDP2 (torch >= 2.6): a sharded model's measurement takes per-rank gradients from its units
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover
    FSDPModule = DTensor = ()

MEDIAN_MAX_ELEMENTS = 1 << 24  # above this a class's median is taken on a fixed random subsample


def local_rows(rows: int, rank: int, world: int) -> tuple[int, int]:
    """(first row, number of rows) of rank's dim-0 chunk of `rows` rows: torch.chunk's split, FSDP's."""
    size = -(-rows // world)
    first = min(rank * size, rows)
    return first, min(rows, first + size) - first
SNR_KINDS = ("plain", "corrected")


def snr_from_moments(mean: torch.Tensor, m2: torch.Tensor, count: int, snr: str = "plain") -> torch.Tensor:
    """Element SNRs from Welford moments of `count` samples: mu^2 / var ("plain"), or
    max(0, mu^2 / var - 1/count) ("corrected"); 0 where var == 0."""
    if count < 2:
        raise ValueError("SNR needs at least 2 gradient samples")
    return element_snr(mean, m2 / (count - 1), count, snr)


def element_snr(mean: torch.Tensor, var: torch.Tensor, count: int, snr: str = "plain") -> torch.Tensor:
    """mu^2 / var per element ("plain"), or max(0, mu^2 / var - 1/count) ("corrected"); 0 where var == 0."""
    value = mean.square() / var
    if snr == "corrected":
        value = (value - 1.0 / count).clamp_(min=0.0)
    elif snr != "plain":
        raise ValueError(f"unknown snr {snr!r} (plain or corrected)")
    return torch.where(var > 0, value, torch.zeros_like(value))


ESTIMATORS = ("mean", "median", "norm_ratio")
MOMENTS = ("welford", "ema")


def jackknife_se(replicates: list[dict[str, float]]) -> dict[str, float]:
    """Delete-one jackknife standard error per key: sqrt((G-1)/G * sum_j (theta_j - mean)^2)."""
    g = len(replicates)
    if g < 2:
        return {}
    result = {}
    for key in replicates[0]:
        values = [r[key] for r in replicates if key in r]
        if len(values) != g:
            continue
        mean = sum(values) / g
        result[key] = ((g - 1) / g * sum((v - mean) ** 2 for v in values)) ** 0.5
    return result


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (1.96 beyond): a jackknife
# over G groups has G - 1.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


class HostFolds:
    """Gradients folded into moments on `device`: `fold(gradient, fn)` calls `fn` with the gradient
    in fp32 on `device`, in the order the folds were handed over (`run(fn)` queues a step between
    them, such as counting a sample), `drain()` waits for all of them and `close()` ends.

    In line (the default where the gradients are on `device` already, or `threaded=False`): each
    call happens at once. Threaded (the default for GPU gradients and host moments): a GPU
    gradient is copied into one of a few reused pinned host buffers without blocking the host,
    and a worker thread waits for the copy's event, folds, and frees the buffer; the GPU goes on
    with the backward and the next sample meanwhile, ahead by at most the buffers there are (about
    256 MiB of them, at least two of the largest gradient). Every fold happens in the same order
    and with the same arithmetic as in line: the moments are bitwise the same."""

    STAGING_BYTES = 256 * 2**20

    def __init__(self, device: torch.device, largest: int, threaded: bool | None = None):
        self.device, self.largest, self.threaded = torch.device(device), largest, threaded
        self._work: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._free: queue.Queue | None = None    # pinned staging buffers not in use
        self._failure: BaseException | None = None

    def fold(self, gradient: torch.Tensor | None, fn: Callable[[torch.Tensor], None],
             zeros_like: torch.Tensor | None = None) -> None:
        if self.threaded is None:  # decided by the first gradient
            self.threaded = gradient is not None and gradient.device.type == "cuda" and self.device.type == "cpu"
        if gradient is None:
            self.run(lambda: fn(torch.zeros_like(zeros_like)))
        elif not self.threaded or gradient.device.type != "cuda":  # (threaded on a CPU: tests)
            # threaded, a copy: the caller may overwrite its gradient before the worker folds it
            host = gradient.to(self.device, torch.float32, copy=bool(self.threaded))
            self.run(lambda: fn(host))
        else:
            buffer = self._staging(gradient.dtype)
            host = buffer[:gradient.numel()].view(gradient.shape)
            host.copy_(gradient, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()

            def fold_copy():
                copied.synchronize()
                fn(host.float())
            self.run(fold_copy, release=lambda: self._free.put(buffer))

    def run(self, fn: Callable[[], None], release: Callable[[], None] | None = None) -> None:
        """Call `fn` (in line, or queued for the worker); `release` after it, even when it failed or
        was skipped after an earlier failure (a staging buffer goes back, so no wait hangs)."""
        if not self.threaded:
            try:
                fn()
            finally:
                if release is not None:
                    release()
            return
        if self._thread is None:
            self._work = queue.Queue()
            self._thread = threading.Thread(target=self._loop, name="mols-fold", daemon=True)
            self._thread.start()
        self._work.put((fn, release))

    def drain(self) -> None:
        if self._work is not None:
            self._work.join()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def close(self) -> None:
        """Wait for the folds handed over, and end the worker thread."""
        try:
            self.drain()
        finally:
            if self._thread is not None:
                self._work.put(None)
                self._thread.join()
                self._thread = self._work = None

    def _staging(self, dtype: torch.dtype) -> torch.Tensor:
        if self._free is None:
            size = self.largest * torch.empty((), dtype=dtype).element_size()
            self._free = queue.Queue()
            for _ in range(max(2, self.STAGING_BYTES // max(size, 1))):
                self._free.put(torch.empty(self.largest, dtype=dtype, pin_memory=True))
        buffer = self._free.get()
        return buffer if buffer.dtype == dtype else torch.empty(self.largest, dtype=dtype, pin_memory=True)

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                self._work.task_done()
                return
            fn, release = item
            try:
                if self._failure is None:
                    with torch.no_grad():
                        fn()
            except BaseException as err:  # raised to the caller by the next drain()
                self._failure = err
            finally:
                if release is not None:
                    release()
                self._work.task_done()


class GradientMoments:
    """Running per-element mean and sum of squared deviations of parameter gradients (fp32)."""

    def __init__(self, params: dict[str, torch.Tensor], device: torch.device | str = "cpu", groups: int = 0,
                 shard: bool = False, threaded: bool | None = None, ema_decay: float | None = None):
        self.params = params
        self.device = torch.device(device)
        self._rank, self._world = collectives.rank(), collectives.world_size()
        # shard: this rank keeps the moments of rows [first, first + count) of each parameter
        self.sharded = shard
        self.rows = {n: local_rows(p.shape[0], self._rank, self._world) if shard else (0, p.shape[0])
                     for n, p in params.items()}
        self.mean = {n: torch.zeros((self.rows[n][1], *p.shape[1:]), dtype=torch.float32, device=self.device)
                     for n, p in params.items()}
        self.m2 = {n: torch.zeros_like(m) for n, m in self.mean.items()}
        self.count = 0
        # Per-group moments beside the merged ones (never used to compute those): sample i of the
        # measurement over all ranks, i = rank + world * local index, goes to group i % groups, so
        # one rank and R ranks put the same samples in the same groups.
        if groups < 0 or groups == 1:
            raise ValueError(f"groups must be 0 (off) or at least 2, got {groups}")
        # ema_decay: `mean` and `m2` hold exponential moving averages of g and g^2 instead of
        # Welford's mean and sum of squared deviations (the samples' order then matters; no groups)
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
        if ema_decay is not None and groups:
            raise ValueError("exponential moving averages keep no groups for the jackknife: groups must be 0")
        self.ema_decay = ema_decay
        self.groups = groups
        self.group_mean = [{n: torch.zeros_like(m) for n, m in self.mean.items()} for _ in range(groups)]
        self.group_m2 = [{n: torch.zeros_like(m) for n, m in self.mean.items()} for _ in range(groups)]
        self.group_count = [0] * groups
        # Two scratch buffers of the largest tensor's size for Welford's two differences: fresh
        # temporaries of every gradient's size each sample cost page faults that made the fold
        # 2.4x slower (scripts/bench_mols.py --fold-only; the arithmetic is the same).
        largest = max((m.numel() for m in self.mean.values()), default=0)
        self._scratch = (torch.empty(largest, device=self.device), torch.empty(largest, device=self.device))
        self._group: int | None = None  # the group of the sample add_current_grads is folding
        # Gradients on a GPU and moments on the host: copied through pinned buffers without a
        # wait and folded on a worker thread while the GPU computes on (HostFolds); else in line.
        # what one fold hands over at most: a gradient, or (sharded) every rank's chunk of one, world x
        # ceil(rows / world) rows, more than the parameter's when the rows do not divide evenly
        def handed_over(p: torch.Tensor) -> int:
            if not shard or p.dim() == 0:
                return p.numel()
            return self._world * -(-p.shape[0] // self._world) * (p.numel() // max(p.shape[0], 1))
        self._host = HostFolds(self.device, max((handed_over(p) for p in params.values()), default=0), threaded)

    @torch.no_grad()
    def add_current_grads(self) -> None:
        """Fold in the gradients now in `.grad` as one sample (a missing grad counts as zero)."""
        self._host.run(self._begin_sample)
        for name, param in self.params.items():
            grad = None if param.grad is None else param.grad.detach()
            self._host.fold(grad, lambda host, name=name: self._fold_current(name, host), self.mean[name])

    def _begin_sample(self) -> None:
        self._group = (self._rank + self._world * self.count) % self.groups if self.groups else None
        self.count += 1
        if self._group is not None:
            self.group_count[self._group] += 1

    def _fold_current(self, name: str, grad: torch.Tensor) -> None:
        """Welford's step for the sample `_begin_sample` opened (fp32, on the statistics device)."""
        mean, m2 = self.mean[name], self.m2[name]
        if self.ema_decay is not None:
            self._ema_step(mean, m2, grad)
            return
        delta, after = (buffer[:mean.numel()].view(mean.shape) for buffer in self._scratch)
        torch.sub(grad, mean, out=delta)
        mean.add_(delta, alpha=1.0 / self.count)
        m2.addcmul_(delta, torch.sub(grad, mean, out=after))
        if self._group is not None:  # the same Welford step on this sample's group
            g_mean, g_m2 = self.group_mean[self._group][name], self.group_m2[self._group][name]
            torch.sub(grad, g_mean, out=delta)
            g_mean.add_(delta, alpha=1.0 / self.group_count[self._group])
            g_m2.addcmul_(delta, torch.sub(grad, g_mean, out=after))

    def exchange(self, name: str, grad: torch.Tensor | None) -> torch.Tensor:
        """Collective: every rank's gradient of `name`, restricted to this rank's rows: [world, rows, ...]
        (sample s from rank s), on the gradient's device (a view). A missing grad counts as zero."""
        shape = self.params[name].shape
        chunk = -(-shape[0] // self._world)
        # on the gradient's device, or (no gradient: zeros) where the collective runs
        send = torch.zeros((self._world * chunk, *shape[1:]), dtype=grad.dtype if grad is not None else
                           torch.float32, device=grad.device if grad is not None else collectives.backend_device())
        if grad is not None:
            send[:shape[0]].copy_(grad)
        received = collectives.all_to_all_single(torch.empty_like(send), send)
        first, count = self.rows[name]
        return received.view(self._world, chunk, *shape[1:])[:, :count]

    def add_exchanged(self, name: str, grad: torch.Tensor | None) -> None:
        """Collective: exchange this rank's gradient of `name` and fold the world's samples of its rows."""
        received = self.exchange(name, grad)
        self._host.fold(received, lambda host, name=name: self.add_rank_samples(name, host))

    @torch.no_grad()
    def add_rank_samples(self, name: str, samples: torch.Tensor) -> None:
        """Fold the world's samples of `name`'s rows ([world, rows, ...], rank order, fp32 on the
        statistics device) into its moments; `end_rank_samples` counts them once every parameter
        has had its own."""
        mean, m2 = self.mean[name], self.m2[name]
        if self.ema_decay is not None:
            for grad in samples:  # in the samples' order over all ranks
                self._ema_step(mean, m2, grad)
            return
        delta, after = (buffer[:mean.numel()].view(mean.shape) for buffer in self._scratch)
        for s, grad in enumerate(samples):
            index = self.count + s  # sample index over the whole measurement
            torch.sub(grad, mean, out=delta)
            mean.add_(delta, alpha=1.0 / (index + 1))
            m2.addcmul_(delta, torch.sub(grad, mean, out=after))
            if self.groups:  # samples come in index order: the group has index // groups before this one
                g = index % self.groups
                g_mean, g_m2 = self.group_mean[g][name], self.group_m2[g][name]
                torch.sub(grad, g_mean, out=delta)
                g_mean.add_(delta, alpha=1.0 / (index // self.groups + 1))
                g_m2.addcmul_(delta, torch.sub(grad, g_mean, out=after))

    def _ema_step(self, mean: torch.Tensor, square: torch.Tensor, grad: torch.Tensor) -> None:
        decay = self.ema_decay
        mean.mul_(decay).add_(grad, alpha=1.0 - decay)
        square.mul_(decay).addcmul_(grad, grad, value=1.0 - decay)

    def end_rank_samples(self) -> None:
        self._host.run(self._count_rank_samples)

    def _count_rank_samples(self) -> None:
        for s in range(self._world):
            if self.groups:
                self.group_count[(self.count + s) % self.groups] += 1
        self.count += self._world

    def finish_folds(self) -> None:
        """Wait until every gradient handed over has been folded (before the moments are read)."""
        self._host.close()

    def statistics_bytes(self) -> int:
        """Memory the moments hold on this rank, summed over their storages: 8 bytes per element it
        keeps (all of them, or its rows when sharded), and 8 more per group."""
        moments = [*self.mean.values(), *self.m2.values(),
                   *(t for group in (*self.group_mean, *self.group_m2) for t in group.values())]
        return sum(t.untyped_storage().nbytes() for t in moments)

    @torch.no_grad()
    def merge_across_ranks(self) -> None:
        """Chan's parallel merge for equal per-rank counts: the result is the pooled estimate.
        (Sharded moments hold every rank's samples already.)"""
        world = collectives.world_size()
        if self.sharded or world == 1:
            return
        if self.ema_decay is not None:
            raise ValueError("moving averages of several ranks cannot be merged after the fact: shard the "
                             "statistics (mols.shard_statistics: true) so every rank folds the samples in order")
        comm_device = collectives.backend_device(next(iter(self.mean.values()), None))
        for name in self.mean:
            local_mean = self.mean[name].to(comm_device)
            pooled_mean = collectives.all_reduce(local_mean.clone())
            pooled_mean /= world
            m2 = self.m2[name].to(comm_device)
            m2.add_((local_mean - pooled_mean).square_(), alpha=self.count)
            collectives.all_reduce(m2)
            self.mean[name].copy_(pooled_mean)
            self.m2[name].copy_(m2)
        self.count *= world
        self._merge_groups_across_ranks(comm_device)

    @torch.no_grad()
    def _merge_groups_across_ranks(self, comm_device: torch.device) -> None:
        """Chan's merge for unequal counts (a group may hold no sample of a rank)."""
        if not self.groups:
            return
        local_counts = list(self.group_count)
        totals = collectives.all_reduce_values(local_counts)
        for g in range(self.groups):
            n_local, n_total = local_counts[g], totals[g]
            for name in self.mean:
                local_mean = self.group_mean[g][name].to(comm_device)
                pooled_mean = collectives.all_reduce(local_mean * n_local)
                if n_total > 0:
                    pooled_mean /= n_total
                m2 = self.group_m2[g][name].to(comm_device)
                m2.add_((local_mean - pooled_mean).square_(), alpha=n_local)
                collectives.all_reduce(m2)
                self.group_mean[g][name].copy_(pooled_mean)
                self.group_m2[g][name].copy_(m2)
            self.group_count[g] = int(round(n_total))

    def estimates(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) of `name`'s gradient per element: Welford's over the samples, or with
        `ema_decay` the exponential moving averages' (bias-corrected by 1 - decay^K, as Adam's)."""
        if self.ema_decay is None:
            return self.mean[name], self.m2[name] / (self.count - 1)
        debias = 1.0 - self.ema_decay ** self.count
        mean = self.mean[name] / debias
        return mean, (self.m2[name] / debias - mean.square()).clamp_(min=0.0)

    def element_snr(self, name: str, snr: str = "plain") -> torch.Tensor:
        return element_snr(*self.estimates(name), self.count, snr)

    def _without_group(self, name: str, left_out: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(mean, m2, count) of `name` over every group but `left_out` (Chan's merge of the rest)."""
        kept = [g for g in range(self.groups) if g != left_out and self.group_count[g] > 0]
        count = sum(self.group_count[g] for g in kept)
        mean = sum(self.group_mean[g][name] * (self.group_count[g] / count) for g in kept)
        m2 = sum(self.group_m2[g][name] + (self.group_mean[g][name] - mean).square() * self.group_count[g]
                 for g in kept)
        return mean, m2, count

    def jackknife_replicates(self, segments: list[Segment], estimator: str = "mean", zero_variance: str = "count",
                             snr: str = "plain") -> list[dict[str, float]]:
        """The G delete-one-group module SNRs ([] without groups, or when a group is empty or the
        rest holds fewer than 2 samples)."""
        if not self.groups or min(self.group_count) == 0 or self.count - max(self.group_count) < 2:
            return []
        replicates = []
        for left_out in range(self.groups):
            def element(name, left_out=left_out):
                mean, m2, count = self._without_group(name, left_out)
                return mean, m2 / (count - 1), count
            replicates.append(self._aggregate(segments, estimator, zero_variance, snr, element)[0])
        return replicates

    def module_snr(self, segments: list[Segment], estimator: str = "mean",
                   zero_variance: str = "count", snr: str = "plain") -> dict[str, float]:
        """Per class: the mean (or median) of its element SNRs over all its segments, or
        (`norm_ratio`) the ratio of sums sum(mu^2) / sum(var) over its elements; elements with zero
        variance count as SNR 0 ("count") or are left out ("exclude"; a class with no element
        left has SNR 0)."""
        return self.module_stats(segments, estimator, zero_variance, snr)[0]

    def module_stats(self, segments: list[Segment], estimator: str = "mean",
                     zero_variance: str = "count", snr: str = "plain") -> tuple[dict[str, float], dict[str, float]]:
        """(module SNR, fraction of the class's elements with zero variance) per class."""
        return self._aggregate(segments, estimator, zero_variance, snr,
                               lambda name: (*self.estimates(name), self.count))

    def _local_view(self, seg: Segment, tensor: torch.Tensor) -> torch.Tensor:
        """`seg` of a parameter, cut to the rows this rank keeps (all of them unsharded)."""
        if seg.dim != 0 or not self.sharded:
            return seg.view(tensor)
        first, count = self.rows[seg.name]
        start, stop = max(seg.start, first), min(seg.stop, first + count)
        if stop <= start:  # the segment lies in other ranks' rows
            return tensor.narrow(0, 0, 0)
        return tensor.narrow(0, start - first, stop - start)

    def _aggregate(self, segments: list[Segment], estimator: str, zero_variance: str, snr: str,
                   element: Callable[[str], tuple[torch.Tensor, torch.Tensor, int]]
                   ) -> tuple[dict[str, float], dict[str, float]]:
        """Module SNRs from `element(name)` = (mean, variance, samples) of each parameter's
        elements (of the rows this rank keeps; sharded, the sums and counts are then added over
        ranks)."""
        if zero_variance not in ("count", "exclude"):
            raise ValueError(f"unknown zero_variance {zero_variance!r} (count or exclude)")
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown SNR estimator {estimator!r} ({', '.join(ESTIMATORS)})")
        per_class: dict[str, list[torch.Tensor]] = {}
        sums: dict[str, list[float]] = {}   # class -> [sum of element SNRs or of mu^2, elements, sum of var]
        zero: dict[str, list[int]] = {}
        # per parameter: element SNRs, var > 0, and for norm_ratio mu^2 and var (only then: the
        # cache holds every parameter of the model at once, on the statistics device)
        cache: dict[str, tuple[torch.Tensor, ...]] = {}
        samples = 0
        for seg in segments:
            if seg.name not in cache:
                mean, var, samples = element(seg.name)
                ratio = estimator == "norm_ratio"
                cache[seg.name] = (element_snr(mean, var, samples, snr), var > 0,
                                   *((mean.square(), var) if ratio else (None, None)))
            value, nonzero, signal, noise = (None if t is None else self._local_view(seg, t).reshape(-1)
                                             for t in cache[seg.name])
            cls = seg.module_class
            zero.setdefault(cls, [0, 0])
            zero[cls][0] += int(nonzero.numel() - nonzero.sum())
            zero[cls][1] += nonzero.numel()
            if zero_variance == "exclude":
                value = value[nonzero]
                if noise is not None:
                    signal, noise = signal[nonzero], noise[nonzero]
            per_class.setdefault(cls, []).append(value)
            total = sums.setdefault(cls, [0.0, 0, 0.0])
            total[0] += float((value if noise is None else signal).double().sum())
            total[1] += value.numel()
            total[2] += 0.0 if noise is None else float(noise.double().sum())
        if self.sharded:  # every rank has the same classes in the same order
            flat = collectives.all_reduce_values([v for cls in per_class for v in (*sums[cls], *zero[cls])])
            for i, cls in enumerate(per_class):
                sums[cls] = [float(flat[5 * i]), int(flat[5 * i + 1]), float(flat[5 * i + 2])]
                zero[cls] = [int(flat[5 * i + 3]), int(flat[5 * i + 4])]
        result = {}
        for cls, parts in per_class.items():
            total, count, noise = sums[cls]
            if count == 0:
                result[cls] = 0.0
            elif estimator == "mean":
                result[cls] = total / count
            elif estimator == "norm_ratio":  # ||mu||^2 / ||sigma||^2, less 1/K when corrected
                ratio = total / noise if noise > 0 else 0.0
                result[cls] = max(0.0, ratio - 1.0 / samples) if snr == "corrected" and noise > 0 else ratio
            else:
                result[cls] = self._median(parts)
        return result, {cls: z / n if n else 0.0 for cls, (z, n) in zero.items()}

    def _median(self, parts: list[torch.Tensor]) -> float:
        """The median of a class's element SNRs (every rank's, when sharded); above
        MEDIAN_MAX_ELEMENTS, of a fixed random subsample."""
        values = torch.cat([p.cpu() for p in parts])
        if self.sharded:
            limit = MEDIAN_MAX_ELEMENTS // self._world
            if values.numel() > limit:
                values = values[torch.randint(values.numel(), (limit,), generator=torch.Generator().manual_seed(0))]
            values = torch.cat(collectives.all_gather_object(values))
        if values.numel() > MEDIAN_MAX_ELEMENTS:
            gen = torch.Generator().manual_seed(0)
            values = values[torch.randint(values.numel(), (MEDIAN_MAX_ELEMENTS,), generator=gen)]
        return float(values.median())


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
    # With groups: the G delete-one-group module SNRs, and the jackknife standard error per class
    replicates: list[dict[str, float]] = field(default_factory=list)
    module_snr_se: dict[str, float] = field(default_factory=dict)
    groups: int = 0
    statistics_bytes: int = 0  # memory of the moments (merged and per group)
    # With snr: plain, the bias-corrected module SNRs from the same moments (a free second reading)
    module_snr_corrected: dict[str, float] = field(default_factory=dict)


def _fold_in_backward(model: torch.nn.Module, moments: GradientMoments) -> list:
    """Hooks that fold each rank's gradient of every parameter of an FSDP2 model into `moments`
    as soon as the backward has it, gathered (unsharded) and unreduced, and then drop it.

    FSDP2 keeps one unsharded Parameter per parameter across gathers, so hooks registered on it
    (found by gathering each unit once) fire in every backward; gradient reduction is switched off
    for the measurement, so each rank's own gradient is all there is."""
    units = [(name, m) for name, m in model.named_modules() if isinstance(m, FSDPModule)]
    handles = []
    for prefix, unit in sorted(units, key=lambda item: -item[0].count(".") if item[0] else 1):
        unit.unshard()
        for name, param in unit.named_parameters():
            if isinstance(param, DTensor) or not param.requires_grad:
                continue  # a nested unit's parameter (hooked with its own unit), or frozen
            full_name = f"{prefix}.{name}" if prefix else name

            def fold(p, full_name=full_name):
                moments.add_exchanged(full_name, p.grad)
                p.grad = None
            handles.append(param.register_post_accumulate_grad_hook(fold))
        unit.reshard()
    model.set_requires_gradient_sync(False)
    return handles


def default_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return model(**batch).loss


def measure_module_snr(model: torch.nn.Module, batches: Iterable[dict], segments: list[Segment], *,
                       loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor] = default_loss,
                       stats_device: str | torch.device = "cpu", estimator: str = "mean",
                       zero_variance: str = "count", snr: str = "plain", groups: int = 0,
                       should_stop: Callable[[], bool] | None = None, shard: bool | None = None,
                       ema_decay: float | None = None) -> SNRMeasurement:
    """Module SNRs from one gradient sample per batch (extra forward/backward passes).

    `model` may be wrapped in DistributedDataParallel: backward then runs under `no_sync`, so each
    rank sees its own gradients; or sharded with FSDP2's fully_shard (its units' gradients are
    taken in the backward, unreduced). The moments are sharded over the ranks (`shard`, default:
    whenever there are several; always under FSDP), or kept whole on every rank and merged once
    at the end (`shard=False`). The model's parameters and any gradients it held are left as
    they were; no optimizer is involved. `should_stop` is asked after every sample (with several
    ranks it must give every rank the same answer); when it says True the measurement ends at
    once with MeasurementInterrupted. `groups` > 1 adds the jackknife replicates and standard
    errors (see GradientMoments); `snr` is plain or corrected.
    """
    if snr not in SNR_KINDS:
        raise ValueError(f"unknown snr {snr!r} (plain or corrected)")
    start = time.perf_counter()
    inner = getattr(model, "module", model)
    params = {n: p for n, p in inner.named_parameters() if p.requires_grad}
    world = collectives.world_size()
    fsdp = isinstance(inner, FSDPModule)
    if fsdp and shard is False:
        raise ValueError("a sharded model's SNRs are measured with sharded moments (shard=True)")
    shard = fsdp or (world > 1 if shard is None else bool(shard and world > 1))
    saved_grads = {n: p.grad for n, p in params.items()}
    moments = GradientMoments(params, stats_device, groups, shard=shard, ema_decay=ema_decay)
    sequences = 0
    no_sync = model.no_sync if hasattr(model, "no_sync") else contextlib.nullcontext
    hooks = _fold_in_backward(inner, moments) if fsdp else []
    try:
        for batch in batches:
            for p in params.values():
                p.grad = None
            with no_sync():
                loss_fn(model, batch).backward()
            if fsdp:
                moments.end_rank_samples()
            elif shard:
                for name, p in params.items():
                    moments.add_exchanged(name, p.grad)
                moments.end_rank_samples()
            else:
                moments.add_current_grads()
            sequences += int(next(iter(batch.values())).shape[0])
            if should_stop is not None and should_stop():
                moments.finish_folds()
                raise MeasurementInterrupted(moments.count)
    finally:
        for handle in hooks:
            handle.remove()
        if fsdp:
            inner.set_requires_gradient_sync(True)
        for n, p in params.items():
            p.grad = saved_grads[n]
        moments.finish_folds()
    moments.merge_across_ranks()
    sequences = int(collectives.all_reduce_values([sequences])[0])
    module_snr, zero_fraction = moments.module_stats(segments, estimator, zero_variance, snr)
    replicates = moments.jackknife_replicates(segments, estimator, zero_variance, snr)
    corrected = (moments.module_snr(segments, estimator, zero_variance, "corrected")
                 if snr == "plain" and ema_decay is None else {})
    return SNRMeasurement(module_snr, moments.count, sequences, time.perf_counter() - start, zero_fraction,
                          replicates, jackknife_se(replicates), groups, moments.statistics_bytes(), corrected)
