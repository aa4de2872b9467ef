"""Throughput, model FLOPs utilisation and memory, per logging window.

MFU = achieved FLOP/s (FLOPs per token from models/cost.py) / the device's peak dense bf16 FLOP/s
(table below, or train.peak_tflops). Gradient checkpointing recomputes the forward: MFU does not
count that.
"""
from __future__ import annotations

import contextlib
import re
import time
from typing import Optional

import torch

# Dense (no sparsity) bf16 peak of one device, TFLOP/s, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0,
    "H100": 989.0, "GH200": 989.0, "A100": 312.0, "A10G": 125.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0,
    "RTX 4090": 165.0, "V100": 125.0,  # V100 has no bf16: its fp16 tensor-core peak
}


def peak_tflops(device: torch.device, override: Optional[float] = None) -> Optional[float]:
    """The table's entry for this device, or the override; None on CPU."""
    if override:
        return override
    if device.type != "cuda":
        return None
    return table_peak(torch.cuda.get_device_name(device))


def table_peak(device_name: str) -> Optional[float]:
    """The longest table name found in `device_name` as whole words ("L4" is not in "NVIDIA L40")."""
    matches = [key for key in PEAK_BF16_TFLOPS if re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", device_name)]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


class Throughput:
    """Tokens, seconds and seconds spent waiting for data since the last `report()`, training only:
    time inside `paused()` (evaluation, checkpoints, MoLS calibration) is left out of the window.
    Peak memory is per window; `peak_memory_gib` keeps the run's highest."""

    def __init__(self, flops_per_token: float, world_size: int, peak: Optional[float], device: torch.device):
        self.flops_per_token, self.world_size, self.peak, self.device = flops_per_token, world_size, peak, device
        self.peak_memory_gib = 0.0
        self.restart()

    def restart(self) -> None:
        self.start, self.tokens, self.data_wait, self.steps, self.excluded = time.perf_counter(), 0, 0.0, 0, 0.0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    @contextlib.contextmanager
    def paused(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - began

    def waited(self, seconds: float) -> None:
        self.data_wait += seconds

    def step_done(self, tokens: int) -> None:
        self.tokens += tokens
        self.steps += 1

    def report(self) -> dict:
        """tok_per_s (all ranks), tok_per_s_per_device, step_s, data_wait_s (per step), mfu, memory."""
        seconds = max(time.perf_counter() - self.start - self.excluded, 1e-9)
        rate = self.tokens / seconds
        out = {"tok_per_s": rate, "tok_per_s_per_device": rate / self.world_size,
               "step_s": seconds / max(self.steps, 1), "data_wait_s": self.data_wait / max(self.steps, 1)}
        if self.peak:
            out["mfu"] = rate / self.world_size * self.flops_per_token / (self.peak * 1e12)
        if self.device.type == "cuda":
            out["mem_alloc_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            out["mem_reserved_gib"] = torch.cuda.max_memory_reserved(self.device) / 2**30
            self.peak_memory_gib = max(self.peak_memory_gib, out["mem_alloc_gib"])
        self.restart()
        return out
