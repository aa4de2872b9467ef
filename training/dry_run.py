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
from optimizers import estimate_state_bytes, state_basis

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


def fsdp_units(model) -> tuple[int, int]:
    """(parameters of the root unit, of the largest decoder-layer unit) of training/fsdp.py's
    sharding: each decoder layer is a unit, the root holds the rest (embedding, head, final norm)."""
    from training.fsdp import decoder_layers

    layers = [sum(p.numel() for p in layer.parameters()) for layer in decoder_layers(model)]
    return sum(p.numel() for p in model.parameters()) - sum(layers), max(layers, default=0)


def memory_estimate(cfg, model, vocab: int, precision: str, world_size: int = 1) -> dict[str, float]:
    """Bytes per device, by part, for a model built on the meta device; `precision` resolved
    (bf16-mixed, bf16-pure or fp32). Gradients and optimizer state are those of what trains (under
    LoRA the adapters; the frozen weights are held and, under autocast, copied to bf16 too).
    Activations are for micro-batches of the longest sequence (instruction records:
    data.cutoff_len; shorter batches need less). The parts are added, as if each buffer's peak
    came at once (but for FSDP's gathered weights and gradient reduction, which a resharding unit
    never holds together): an upper estimate (tests/test_memory_estimate.py holds it against the peak
    measured on a CPU, DDP and FSDP, with and without accumulation and MoLS).

    DDP: the gradients are the all-reduce buckets themselves (gradient_as_bucket_view, zeroed in
    place between steps), counted once, and once more for the step after the first, when DDP
    rebuilds its buckets in the order the gradients arrived and old and new coexist.
    FSDP: weights, gradients and optimizer state are 1/world each; gathered are the root unit
    (embedding, head, final norm: FSDP keeps the root gathered from forward to backward) and two
    decoder layers (the one computing and the next, prefetched), or every layer while an update's
    micro-batches accumulate unless train.fsdp_reshard_in_accumulation; reducing a unit's
    gradients holds them whole in the compute dtype plus their fp32 copy for the reduce-scatter;
    with train.fsdp_gradient_sync: last_micro_batch and accumulation, every rank keeps the whole
    gradient, upcast to fp32, until the last micro-batch (FSDP2's accumulated gradients).
    MoLS on the device (mols.stats_device): its moments plus the measurement's working set
    (`mols_measurement_bytes`); with the default, on the host, the moments are host memory."""
    t = cfg.train
    trained, n = trainable_parameters(model)
    shape = model_shape(model.config)
    layers, hidden = shape.layers, shape.width
    weight_bytes = 2 if precision == "bf16-pure" else 4
    compute_bytes = 4 if precision == "fp32" else 2
    activation_scale = 2 if precision == "fp32" else 1  # the per-token figures below are bf16's
    tokens = t.micro_batch * cfg.data.sequence_tokens
    if cfg.model.gradient_checkpointing:
        activations = layers * tokens * hidden * 2 + tokens * hidden * 34
    else:
        activations = layers * tokens * hidden * 34
    accumulation = t.accumulation(world_size)
    largest = max((p.numel() for p in model.parameters()), default=0)
    memory = {"weights": weight_bytes * n, "gradients": weight_bytes * trained,
              # from the model's shapes, as build_optimizer would build it (bf16-pure: bf16 state): the
              # method's formula or bound, or measured after one step on a stand-in (optimizers/estimate.py)
              "optimizer state": estimate_state_bytes(cfg.optimizer, model,
                                                      torch.bfloat16 if precision == "bf16-pure" else None),
              "activations": activations * activation_scale,
              # the logits and their gradient, and the loss's fp32 chunk
              "logits": 2 * tokens * vocab * compute_bytes + min(tokens, 8192) * vocab * 4,
              # a gradient made whole before it is added to .grad (an embedding's dense gradient)
              "backward temporaries": compute_bytes * largest}
    if t.parallel == "fsdp":
        for part in ("weights", "gradients", "optimizer state"):
            memory[part] /= world_size
        root, layer = fsdp_units(model)
        keeps_all = accumulation > 1 and not t.fsdp_reshard_in_accumulation
        gathered = compute_bytes * (n if keeps_all else root + 2 * layer)
        reduction = (compute_bytes + 4) * max(root, layer)
        if accumulation > 1 and t.fsdp_gradient_sync == "last_micro_batch":
            # until the last micro-batch's reduce-scatter frees them unit by unit: no shards yet
            del memory["gradients"]
            memory["whole fp32 gradients"] = 4 * trained
            memory["gathered weights"] = gathered
        elif keeps_all:  # the gathered weights stay through the reduction
            memory["gathered weights"] = gathered
            memory["gradient reduction"] = reduction
        else:  # a unit is resharded before its gradients are reduced: the larger of the two at once
            memory["gathered weights or gradient reduction"] = max(gathered, reduction)
    else:
        if world_size > 1:
            memory["DDP bucket rebuild"] = memory["gradients"]
        if precision == "bf16-mixed":  # autocast's bf16 copies of the weights, kept for the backward
            head = vocab * hidden
            memory["bf16 weight copies"] = 2 * (head + n / layers if cfg.model.gradient_checkpointing else n)
    if cfg.mols.enabled:
        on_device, with_statistics = mols_measurement_bytes(cfg, model, world_size, weight_bytes)
        if cfg.mols.stats_device != "cpu":
            memory["MoLS statistics"] = mols_statistics_bytes(cfg, trained, world_size) + with_statistics
        if on_device:
            memory["MoLS measurement"] = on_device
    return memory


def mols_measurement_bytes(cfg, model, world_size: int = 1, grad_bytes: int = 4) -> tuple[int, int]:
    """(bytes on the training device, bytes where the statistics live) that a MoLS measurement
    holds beside the moments (mols/snr.py). On the device: with sharded statistics every rank's
    gradient sample of one parameter at a time for the exchange (world x its chunk: about the
    parameter's size, sent and received); under DDP a whole set of gradients for the samples
    beside DDP's buckets. With the statistics: two scratch buffers of the largest parameter's rows
    for the fold, and about six fp32 copies of them while the jackknife's delete-one-group
    moments are read."""
    if not cfg.mols.enabled:
        return 0, 0
    sharded = world_size > 1 and (cfg.mols.shard_statistics or cfg.train.parallel == "fsdp")
    largest = max((p.numel() for p in model.parameters() if p.requires_grad), default=0)
    rows = -(-largest // world_size) if sharded else largest
    on_device = 2 * grad_bytes * largest if sharded else 0
    if cfg.train.parallel != "fsdp" and world_size > 1:
        on_device += grad_bytes * trainable_parameters(model)[0]
    return on_device, 4 * 8 * rows


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


def device_memory(cfg, model, precision: str, world_size: int, device: torch.device) -> dict[str, float]:
    """`memory_estimate` for a run on `device`: on a CPU, MoLS's statistics on the host are the same
    memory as everything else, so they count too, and FSDP's reduce-scatter costs gloo a copy."""
    memory = memory_estimate(cfg, model, head_size(model), precision, world_size)
    if device.type == "cpu" and cfg.train.parallel == "fsdp" and world_size > 1 and "gradients" in memory:
        # gloo has no reduce-scatter: torch runs a whole-size all-reduce on a copy of the unit
        memory["reduce-scatter on gloo"] = 4 * max(fsdp_units(model))
    if device.type == "cpu" and cfg.mols.enabled and cfg.mols.stats_device == "cpu":
        memory["MoLS statistics"] = (mols_statistics_bytes(cfg, trainable_parameters(model)[0], world_size)
                                     + mols_measurement_bytes(cfg, model, world_size)[1])
    return memory


def check_memory(cfg, vocab: int, device: torch.device, precision: str) -> None:
    """A UserError, before anything is built, when the estimate exceeds what this rank may use."""
    available = available_memory(device) if cfg.train.check_memory else None
    if available is None:
        return
    model = build_meta_model(cfg, vocab)
    if model is None:
        return
    memory = device_memory(cfg, model, precision, int(os.environ.get("WORLD_SIZE", "1")), device)
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
    """What `train.py --dry-run` prints: the model's parameters by MoLS class, the batch arithmetic,
    steps and tokens, the memory per GPU by part and MoLS's host memory (a fine-tuning config:
    `finetune_plan`)."""
    if cfg.model.pretrained:
        return finetune_plan(cfg, world_size, gpus_per_node)
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
    basis = {"optimizer state": f"  ({state_basis(cfg.optimizer)})"}  # formula, bound or measured
    lines += [f"  {part:<18} {value / GIB:>8,.2f} GiB{basis.get(part, '')}" for part, value in memory.items()]
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


def finetune_plan(cfg, world_size: int, gpus_per_node: int) -> str:
    """`plan` for a fine-tuning config (model.pretrained): what it would load, train and read. The
    model is built on the meta device from its config.json alone (a local directory, or a hub name
    already in the Hugging Face cache: a dry run never downloads; the paper's models are known by
    shape without it, models/pretrained.py), with the same LoRA adapters the run adds."""
    from models.pretrained import lora_alpha_for, meta_finetuning_model

    t, d, lora = cfg.train, cfg.data, cfg.model.lora
    how = (f"LoRA rank {lora.rank} (alpha {lora_alpha_for(lora.rank, lora.alpha):g}, dropout {lora.dropout:g}, "
           f"on {lora.target_modules})" if lora.enabled else "full fine-tuning")
    lines = [f"dry run: fine-tuning {cfg.model.pretrained}, {how}, with {cfg.optimizer.name}"
             f"{' + MoLS' if cfg.mols.enabled else ''} on {world_size} GPU(s) ({gpus_per_node} per node); "
             f"nothing is read or written"]
    model, why = meta_finetuning_model(cfg.model)
    trainable = 0
    if model is None:
        lines.append(f"parameters and memory: not estimated: {why}")
    else:
        counts = count_by_class(model, cfg.mols.grouping, only_trainable=True)
        trainable = sum(counts.values())
        total = sum(p.numel() for p in model.parameters())
        lines.append(f"parameters: {total / 1e6:,.2f}M, {trainable / 1e6:,.3f}M of them train "
                     f"({100 * trainable / total:.2f}%), by MoLS class:")
        lines += [f"  {cls:<8} {count / 1e6:>10,.3f}M  {100 * count / trainable:5.1f}%" for cls, count in counts.items()]
        precision = t.precision if t.precision != "auto" else "bf16-mixed"
        memory = memory_estimate(cfg, model, head_size(model), precision, world_size)
        lines.append(f"estimated memory per GPU ({precision}{' on GPU' if t.precision == 'auto' else ''}"
                     f"{', gradient checkpointing' if cfg.model.gradient_checkpointing else ''}; micro-batches of "
                     f"{t.micro_batch} records at the {d.sequence_tokens}-token cut-off, shorter ones need less "
                     f"activation memory): {sum(memory.values()) / GIB:,.1f} GiB")
        lines += [f"  {part:<18} {value / GIB:>8,.2f} GiB" for part, value in memory.items()]
    if d.instructions:
        template = {None: "the chat template where the tokenizer has one", True: "the chat template",
                    False: "the Alpaca prompt"}[d.chat_template]
        lines.append(f"data: instruction records {d.path} (validation {d.val_path or 'its test split'}), "
                     f"cut off at {d.cutoff_len} tokens, {template}, "
                     f"loss on {'prompt and response' if d.train_on_inputs else 'the responses only'}")
    else:
        lines.append(f"data: {d.source} documents, {d.seq_len} tokens per sequence")
    accumulation = t.accumulation(world_size)
    lines.append(f"batch: {t.global_batch} sequences per update ({world_size} ranks x {t.micro_batch} micro-batch "
                 f"x {accumulation} accumulation); steps: {t.steps:,} (warm-up {cfg.warmup_steps:,}, then cosine to "
                 f"{t.min_lr_ratio:g} x the peak); learning rate {cfg.optimizer.lr:g}")
    if cfg.mols.enabled:
        host = ""
        if trainable and cfg.mols.stats_device == "cpu":
            host = (f"; host memory for its statistics: "
                    f"{mols_statistics_bytes(cfg, trainable, world_size) / GIB:,.2f} GiB per rank")
        lines.append(f"MoLS: {cfg.mols.samples:,} estimation samples at step {cfg.mols_estimate_step:,}, on the "
                     f"{'LoRA adapters' if lora.enabled else 'full parameters'} (reference {cfg.mols.reference}){host}")
    return "\n".join(lines)
