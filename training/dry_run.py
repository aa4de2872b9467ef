"""What a config will do, before any GPU is spent on it: `train.py --dry-run`.

The model is built on the meta device (shapes only: seconds even for 7B); nothing is read, no
run directory is made. Memory per GPU is an estimate from counts, stated with its assumptions:
weights and gradients (fp32 under bf16-mixed, bf16 under bf16-pure), the optimizer's state per
method, and activations: with sdpa (flash) attention about 34 bytes x hidden per token per layer
in bf16 (Korthikanti et al. 2022, without the attention-score term), or, with gradient
checkpointing, each layer's input (2 bytes x hidden per token) plus one layer's activations; and
the logits of one micro-batch (bf16 + an fp32 chunk for the loss); under bf16 autocast, the bf16
copies of the weights that the backward keeps. train.py runs `check_memory` before it builds a model.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from configs import UserError
from models import build_model
from models.cost import model_shape
from models.pretrained import trainable_parameters
from mols import count_by_class
from optimizers import estimate_state_bytes

GIB = 2**30

def _tokenizer_size(spec: str) -> int:
    """The tokenizer's size without loading it: embedded-<N>k has N*1000 ids; otherwise t5-base's
    32,100 is assumed (only sizes that take their vocabulary from the tokenizer need it)."""
    if spec.startswith("embedded-") and spec.endswith("k") and spec[9:-1].isdigit():
        return int(spec[9:-1]) * 1000
    return 32100


def mols_statistics_bytes(cfg, parameters: int, world_size: int = 1) -> int:
    """MoLS's per-element moments on one rank: two fp32 values per parameter for the estimate and
    two more per uncertainty group (mols/snr.py), of 1/world of the parameters when sharded (with
    several ranks, mols.shard_statistics, always under FSDP); 0 without MoLS."""
    if not cfg.mols.enabled:
        return 0
    sharded = world_size > 1 and (cfg.mols.shard_statistics or cfg.train.parallel == "fsdp")
    return 8 * (1 + cfg.mols.uncertainty_groups) * -(-parameters // (world_size if sharded else 1))


def memory_estimate(cfg, model, vocab: int, precision: str, world_size: int = 1) -> dict[str, float]:
    """Bytes per device, by part, for a model built on the meta device; `precision` resolved
    (bf16-mixed, bf16-pure or fp32). Gradients and optimizer state are those of what trains (under
    LoRA the adapters; the frozen weights are held and, under autocast, copied to bf16 too). Under
    DDP the gradients are the all-reduce buckets themselves (gradient_as_bucket_view, and zeroed in
    place between steps), so they are counted once. Under FSDP weights, gradients and optimizer
    state are 1/world each, plus the gathered bf16 (or fp32) weights: two layers at a time (the one
    computing and the next, prefetched), or every layer while an update's micro-batches accumulate
    unless train.fsdp_reshard_in_accumulation. Activations are for micro-batches of the longest
    sequence (instruction records: data.cutoff_len; shorter batches need less)."""
    t = cfg.train
    trained, n = trainable_parameters(model)
    shape = model_shape(model.config)
    layers, hidden = shape.layers, shape.width
    weight_bytes = 2 if precision == "bf16-pure" else 4
    activation_scale = 2 if precision == "fp32" else 1  # the per-token figures below are bf16's
    tokens = t.micro_batch * cfg.data.sequence_tokens
    if cfg.model.gradient_checkpointing:
        activations = layers * tokens * hidden * 2 + tokens * hidden * 34
    else:
        activations = layers * tokens * hidden * 34
    memory = {"weights": weight_bytes * n, "gradients": weight_bytes * trained,
              # from the model's shapes, as build_optimizer would build it (bf16-pure: bf16 state)
              "optimizer state": estimate_state_bytes(cfg.optimizer, model,
                                                      torch.bfloat16 if precision == "bf16-pure" else None),
              "activations": activations * activation_scale,
              "logits": tokens * vocab * (2 if precision != "fp32" else 4) + min(tokens, 8192) * vocab * 4}
    if t.parallel == "fsdp":
        for part in ("weights", "gradients", "optimizer state"):
            memory[part] /= world_size
        gathered = 4 if precision == "fp32" else 2
        keeps_all = t.accumulation(world_size) > 1 and not t.fsdp_reshard_in_accumulation
        memory["gathered weights"] = gathered * (n if keeps_all else 2 * n / layers + vocab * hidden)
    elif precision == "bf16-mixed":  # autocast's bf16 copies of the weights, kept for the backward
        head = vocab * hidden
        memory["bf16 weight copies"] = 2 * (head + n / layers if cfg.model.gradient_checkpointing else n)
    if cfg.mols.enabled and cfg.mols.stats_device != "cpu":
        memory["MoLS statistics"] = mols_statistics_bytes(cfg, trained, world_size)
    return memory


def build_meta_model(cfg, vocab: int):
    """The run's model on the meta device: built from model.size, or (fine-tuning) from the
    pretrained model's config with the run's LoRA adapters; None when that config is not here
    (models.pretrained.pretrained_config: a dry run never downloads)."""
    if cfg.model.pretrained:
        from models.pretrained import meta_finetuning_model
        return meta_finetuning_model(cfg.model)[0]
    return build_model(cfg.model.size, vocab, attn_implementation=cfg.model.attn_implementation,
                       overrides=cfg.model.overrides, device="meta")


def head_size(model) -> int:
    """The vocabulary the model's head computes logits over."""
    return model.get_output_embeddings().weight.shape[0]


def available_memory(device: torch.device) -> int | None:
    """Bytes this rank may use: free memory of its GPU; on a CPU the host's available memory (the
    cgroup's limit where lower) shared by the node's ranks. None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available = int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) * 1024
    except (OSError, AttributeError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def check_memory(cfg, vocab: int, device: torch.device, precision: str) -> None:
    """A UserError, before anything is built, when the estimate exceeds what this rank may use."""
    available = available_memory(device) if cfg.train.check_memory else None
    if available is None:
        return
    model = build_meta_model(cfg, vocab)
    if model is None:
        return
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    memory = memory_estimate(cfg, model, head_size(model), precision, world_size)
    if device.type == "cpu" and cfg.mols.enabled and cfg.mols.stats_device == "cpu":  # the same memory here
        memory["MoLS statistics"] = mols_statistics_bytes(cfg, trainable_parameters(model)[0], world_size)
    needed = sum(memory.values())
    if needed <= available:
        return
    parts = ", ".join(f"{part} {value / GIB:,.1f}" for part, value in memory.items())
    where = "GPU" if device.type == "cuda" else "rank (host memory)"
    raise UserError(f"{cfg.model.pretrained or cfg.model.size} with {cfg.optimizer.name} ({precision}) needs an estimated "
                    f"{needed / GIB:,.1f} GiB per {where} ({parts} GiB) but {available / GIB:,.1f} GiB are "
                    f"available: lower train.micro_batch, turn on model.gradient_checkpointing, use "
                    f"{'LoRA (model.lora.rank), ' if cfg.model.pretrained else ''}an 8-bit or low-rank optimizer "
                    f"or more GPUs, or --set train.check_memory=false to try anyway")


def plan(cfg, world_size: int, gpus_per_node: int) -> str:
    t, d = cfg.train, cfg.data
    vocab = cfg.model.vocabulary(_tokenizer_size(d.tokenizer))
    model = build_meta_model(cfg, vocab)
    counts = count_by_class(model, cfg.mols.grouping)
    n = sum(counts.values())
    accumulation = t.accumulation(world_size)
    precision = t.precision if t.precision != "auto" else "bf16-mixed"
    memory = memory_estimate(cfg, model, vocab, precision, world_size)
    per_gpu = sum(memory.values())
    mols_rank = mols_statistics_bytes(cfg, n, world_size)
    mols_host = mols_rank * min(world_size, gpus_per_node) if cfg.mols.stats_device == "cpu" else 0
    lines = [f"dry run: {cfg.model.size} with {cfg.optimizer.name}{' + MoLS' if cfg.mols.enabled else ''} "
             f"on {world_size} GPU(s) ({gpus_per_node} per node); nothing is read or written",
             f"parameters: {n / 1e6:,.2f}M (vocabulary {vocab})"]
    lines += [f"  {cls:<8} {count / 1e6:>10,.2f}M  {100 * count / n:5.1f}%" for cls, count in counts.items()]
    lines += [f"tokens per step: {t.global_batch * d.seq_len:,} = {t.global_batch} sequences x {d.seq_len} "
              f"({world_size} ranks x {t.micro_batch} micro-batch x {accumulation} accumulation)",
              f"steps: {t.steps:,} (warm-up {cfg.warmup_steps:,}); tokens: {t.steps * t.global_batch * d.seq_len:,}",
              f"estimated memory per GPU ({precision}{' on GPU' if t.precision == 'auto' else ''}"
              f"{', gradient checkpointing' if cfg.model.gradient_checkpointing else ''}"
              + (f", FSDP: weights, gradients and optimizer state sharded over {world_size}" if t.parallel == "fsdp"
                 else ", DDP: the gradients are its all-reduce buckets" if world_size > 1 else "") + "):"
              f" {per_gpu / GIB:,.1f} GiB"]
    lines += [f"  {part:<18} {value / GIB:>8,.2f} GiB" for part, value in memory.items()]
    if cfg.mols.enabled:
        groups = cfg.mols.uncertainty_groups
        where = "statistics on the GPU (counted above)"
        if mols_host:
            where = (f"host memory for its statistics: {mols_rank / GIB:,.1f} GiB per rank, {mols_host / GIB:,.1f} GiB "
                     f"per node ({2 * (1 + groups)} fp32 values per parameter"
                     + (f" over {world_size} ranks" if mols_rank < mols_statistics_bytes(cfg, n) else " on every rank")
                     + (f"; {2 * groups} of them for the uncertainty groups: mols.uncertainty_groups=0 saves them"
                        if groups else "") + ")")
        lines.append(f"MoLS: {cfg.mols.samples:,} estimation samples at step {cfg.mols_estimate_step:,}; {where}")
    return "\n".join(lines)
