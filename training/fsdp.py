"""Fully sharded data parallelism (`train.parallel: fsdp`): FSDP2's `fully_shard`, as torchtitan applies it.

Each decoder layer is one FSDP unit and the root (embedding, final norm, head) another, so a rank
holds 1/world of every weight, gradient and optimizer state, and gathers one layer's weights at a
time for its forward and backward. The model is built on the meta device and filled in parameter
by parameter (models/init.py's `by_name` values, so no rank ever holds the whole fp32 model and
the weights equal a DDP or 1-process run's with `model.init: by_name`).

Precision: bf16-mixed keeps fp32 master weights and gathers them as bf16 for compute, with fp32
gradient reduction (`MixedPrecisionPolicy`; no autocast); bf16-pure shards bf16 weights and
reduces gradients in fp32; fp32 is plain. Gradient accumulation reduce-scatters every
micro-batch's gradients into the sharded ones (`train.fsdp_gradient_sync: every_micro_batch`, as
torchtitan; `last_micro_batch` reduces once per update but keeps a whole fp32 gradient on every rank
meanwhile); between micro-batches the gathered weights stay unsharded
(`train.fsdp_reshard_in_accumulation: true` gathers them again for every micro-batch instead, for memory).

Only optimizers whose update is elementwise run on shards unchanged: the methods registered with
`sharded=True` (optimizers/registry.py). The others need whole matrices or whole rows, or are not
tested on shards, and are refused at config time with the reason their registration gives
(`method_problem`).
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from models import build_model
from models.init import initial_value
from mols.snr import local_rows
from optimizers import REGISTRY, class_path, is_class_path, sharded_methods
from training.compat import enable_activation_checkpointing, rebuild_rotary_buffers


def method_problem(method: str) -> str | None:
    """Why `optimizer.name` cannot train under `train.parallel: fsdp` (None when it can): each method
    says so where it is registered (optimizers/registry.py: `sharded`, `why_not_sharded`); a class
    path (module.ClassName) is refused (optimizers/class_path.py says why)."""
    if is_class_path(method):
        why = class_path.FSDP_REASON
    elif method in REGISTRY:
        if REGISTRY[method].sharded:
            return None
        why = REGISTRY[method].why_not_sharded
    else:
        return None  # an unknown name: the optimizer section reports it
    return (f"train.parallel: fsdp does not run optimizer {method!r}: it {why}; use train.parallel: ddp "
            f"(with bf16-pure and 8-bit state for large models), or one of {', '.join(sharded_methods())} under fsdp")


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
        if cfg.train.compile:  # each block compiled before it is sharded (torchtitan's way): compiling the
            layer.compile()    # whole sharded model would break its graph at every unit's hooks
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    model.to_empty(device=device)
    rank, world = mesh.get_coordinate()[0], mesh.size(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # every rank computes the same full value on the host and copies its own rows (FSDP's
            # dim-0 chunk) to the device: no communication, and no whole parameter on a GPU
            full = initial_value(model.config, name, param.shape, cfg.run.seed)
            first, count = local_rows(param.shape[0], rank, world)
            param.to_local().copy_(full.narrow(0, first, count))
            del full
    rebuild_rotary_buffers(model, device)
    return model


@contextlib.contextmanager
def accumulating(model: torch.nn.Module, reshard: bool, sync: bool):
    """A micro-batch before the last of an update. `sync`: its gradients are reduce-scattered
    into the sharded fp32 gradients at once; else they accumulate unreduced in a whole fp32 copy
    of every gradient on each rank (FSDP2 upcasts them to the reduce dtype) until the last
    micro-batch reduces the sum. The gathered weights stay unsharded for the next micro-batch
    unless `reshard`."""
    if not sync:
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
