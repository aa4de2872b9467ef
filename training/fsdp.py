"""Fully sharded data parallelism (`train.parallel: fsdp`): FSDP2's `fully_shard`, as torchtitan applies it.

Each decoder layer is one FSDP unit and the root (embedding, final norm, head) another, so a rank
holds 1/world of every weight, gradient and optimizer state, and gathers one layer's weights at a
time for its forward and backward. The model is built on the meta device and filled in parameter
by parameter (models/init.py's `by_name` values, so no rank ever holds the whole fp32 model and
the weights equal a DDP or 1-process run's with `model.init: by_name`).

Precision: bf16-mixed keeps fp32 master weights and gathers them as bf16 for compute, with fp32
gradient reduction (`MixedPrecisionPolicy`; no autocast); bf16-pure shards bf16 weights and
reduces gradients in fp32; fp32 is plain. Gradient accumulation reduce-scatters on the last
micro-batch only; before it the gathered weights stay unsharded (`train.fsdp_reshard_in_accumulation:
true` gathers them again for every micro-batch instead, for memory).

Only optimizers whose update is elementwise run on shards unchanged: `METHODS`. The others need
whole matrices or whole rows and are refused at config time with the reason (`method_problem`).
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from models import build_model
from models.init import initial_value
from training.compat import enable_activation_checkpointing, rebuild_rotary_buffers

# Elementwise updates: a shard's update needs nothing but the shard.
METHODS = ("adamw", "adam", "nadam")
_WHOLE_MATRIX = "orthogonalises or projects whole weight matrices, which FSDP splits across ranks"
WHY_NOT = {
    "muon": _WHOLE_MATRIX, "galore": _WHOLE_MATRIX, "apollo": _WHOLE_MATRIX, "soap": _WHOLE_MATRIX,
    "adafactor": "factors each matrix's second moment into whole-row and whole-column means",
    "adam_mini": "keeps one second moment per attention head or neuron block, which a shard cuts through",
    "lamb": "scales each update by a trust ratio of whole-tensor norms (not tested on shards)",
    "adam8bit": "quantises state in blocks of bitsandbytes' own layout, not tested on shards",
    "adamw8bit": "quantises state in blocks of bitsandbytes' own layout, not tested on shards",
    "lion": "is elementwise but not yet tested on shards",
}


def method_problem(method: str) -> str | None:
    """Why `optimizer.name` cannot train under `train.parallel: fsdp` (None when it can)."""
    if method in METHODS:
        return None
    why = WHY_NOT.get(method, "is not among the methods tested on shards")
    return (f"train.parallel: fsdp does not run optimizer {method!r}: it {why}; use train.parallel: ddp "
            f"(with bf16-pure and 8-bit state for large models), or one of {', '.join(METHODS)} under fsdp")


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a transformers causal LM: its ModuleList of num_hidden_layers."""
    layers = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == layers:
            return list(module)
    raise ValueError(f"{type(model).__name__}: no ModuleList of its {layers} decoder layers")


def mixed_precision(precision: str) -> MixedPrecisionPolicy:
    if precision == "bf16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if precision == "bf16-pure":
        return MixedPrecisionPolicy(reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def build_sharded_model(cfg, vocab_size: int, device: torch.device, precision: str) -> torch.nn.Module:
    """The model of `cfg`, sharded over all ranks, initialised by name with `cfg.run.seed`."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    model = build_model(cfg.model.size, vocab_size, attn_implementation=cfg.model.attn_implementation,
                        overrides=cfg.model.overrides, device="meta")
    if precision == "bf16-pure":
        for param in model.parameters():
            param.data = param.data.to(torch.bfloat16)
    if cfg.model.gradient_checkpointing:
        enable_activation_checkpointing(model)
    policy = mixed_precision(precision)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, param in model.named_parameters():
            full = initial_value(model.config, name, param.shape, cfg.run.seed).to(device, param.dtype)
            # every rank computes the same full value and keeps its own shard: no communication
            mine = distribute_tensor(full, mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(mine.to_local())
            del full, mine
    rebuild_rotary_buffers(model, device)
    return model


@contextlib.contextmanager
def no_gradient_sync(model: torch.nn.Module, reshard: bool):
    """A micro-batch before the last of an update: gradients accumulate unreduced; the gathered
    weights stay unsharded for the next micro-batch unless `reshard`."""
    model.set_requires_gradient_sync(False)
    if not reshard:
        model.set_reshard_after_backward(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
        model.set_reshard_after_backward(True)


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (a collective), anything else as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
