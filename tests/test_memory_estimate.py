"""The dry run's memory estimate (training/dry_run.py) held against the peak that training really
allocates, measured on this CPU (tests/memory_tracker.py): one process, DDP and FSDP on 2 gloo
ranks, with and without gradient accumulation and MoLS. An estimate that misses a buffer (FSDP's
whole fp32 gradients during accumulation, DDP's bucket rebuild, MoLS's working set) falls below
the measured peak and fails; one that counts a buffer twice rises far above it and fails too."""
import json
import os

import pytest
import torch
import torch.multiprocessing as mp

import train
from memory_tracker import PeakTensorMemory
from multiprocess_launch import free_port
from test_fsdp import ROOT, arguments, shards  # noqa: F401 (the token shards fixture)
from training.config import load_config
from training.dry_run import build_meta_model, device_memory

# A model whose parts are all of a size (embedding and head 0.5M, 4 layers of 0.2M parameters),
# micro-batches of one 16-token sequence, fused AdamW (no temporaries of the whole state, as on CUDA).
BASE = ["model.size=llama_tiny", "train.micro_batch=1", "train.global_batch=2", "data.seq_len=16", "train.steps=3",
        "mols.enabled=false", "optimizer.options.fused=true", "train.warmup_steps=2", "train.checkpoint_every=0",
        "data.val_tokens=200", "mols.estimate_at=1", "mols.samples=4", "train.threads=1"]
ACCUMULATE = "train.global_batch=4"  # 2 micro-batches per update on 2 ranks
CASES = {
    "one process": (1, []),
    "one process, MoLS": (1, ["mols.enabled=true"]),
    "DDP": (2, []),
    "DDP, MoLS": (2, ["mols.enabled=true"]),
    "FSDP": (2, ["train.parallel=fsdp"]),
    "FSDP, accumulation": (2, ["train.parallel=fsdp", ACCUMULATE]),
    "FSDP bf16, accumulation, gradients reduced at the last micro-batch": (
        2, ["train.parallel=fsdp", "train.precision=bf16-mixed", ACCUMULATE, "train.fsdp_gradient_sync=last_micro_batch"]),
    "FSDP, MoLS": (2, ["train.parallel=fsdp", "mols.enabled=true"]),
}


def _rank(rank, world, port, args, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with PeakTensorMemory() as tracked:
        code = train.main(args)
    with open(f"{out}.{rank}", "w") as handle:
        json.dump({"code": code, "peak": tracked.peak}, handle)


def measured_peak(args: list[str], world: int, tmp_path) -> int:
    if world == 1:
        with PeakTensorMemory() as tracked:
            assert train.main(args) == 0
        return tracked.peak
    out = str(tmp_path / "peak")
    mp.spawn(_rank, args=(world, free_port(), args, out), nprocs=world)
    ranks = [json.loads(open(f"{out}.{r}").read()) for r in range(world)]
    assert [r["code"] for r in ranks] == [0] * world
    return max(r["peak"] for r in ranks)


@pytest.mark.parametrize("case", list(CASES))
def test_the_estimate_covers_the_measured_peak(tmp_path, case):
    world, extra = CASES[case]
    args = arguments(tmp_path, "run", *BASE, *extra)
    peak = measured_peak(args, world, tmp_path)
    cfg = load_config([str(ROOT / "configs" / "quickstart.yaml")], args[3::2])
    precision = "fp32" if cfg.train.precision == "auto" else cfg.train.precision
    estimate = device_memory(cfg, build_meta_model(cfg, 2000), precision, world, torch.device("cpu"))
    parts = ", ".join(f"{part} {value / 2**20:.2f}" for part, value in estimate.items())
    ratio = peak / sum(estimate.values())
    print(f"{case}: measured {peak / 2**20:.2f} MiB, estimated {sum(estimate.values()) / 2**20:.2f} ({parts}), "
          f"ratio {ratio:.3f}")
    assert 0.75 <= ratio <= 1.05, f"measured {peak / 2**20:.2f} MiB against an estimate of ({parts}) MiB"
