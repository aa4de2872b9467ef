"""Every collective of the project, and the one rule for where its tensors live.

NCCL takes CUDA tensors only ("No backend type associated with device type cpu"); gloo takes host
tensors. A CPU test on gloo cannot tell a forgotten host tensor from a right one, so the rule lives
here, once: a tensor handed to a collective runs it on `backend_device()` (the current CUDA device
under NCCL, the host under gloo; where a group holds a backend for the tensor's own device, as
`cpu:gloo,cuda:nccl` does, that device) and comes back on the device it was given on, in place.
Values that live on the host anyway (counts, flags, sums for a report) go through `all_reduce_values`,
which puts them on the backend's device itself.

No other module of the project calls torch.distributed's collectives: tests/test_architecture.py
parses every file and fails on one that does, so the next collective cannot forget the rule.
(FSDP's and DDP's own collectives, DTensor's and torch.distributed.checkpoint's are torch's.)

Every function is a no-op (or the identity) without an initialised process group, so callers
need not ask. mols imports nothing else of the project; training/distributed.py re-exports these.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist

_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def _backends() -> dict[str, str]:
    """Device type -> backend of the default group ({"cpu": "gloo"}, {"cuda": "nccl"}, or both)."""
    text = str(dist.get_backend())
    if ":" not in text:  # one backend for every device it supports
        return {"cuda": "nccl"} if text == "nccl" else {"cpu": text, "cuda": text}
    return dict(part.split(":", 1) for part in text.split(","))


def backend_device(for_tensor: torch.Tensor | None = None) -> torch.device:
    """Where a collective of the default group runs: the tensor's own device when the group has a
    backend for its type, else the group's device (the current CUDA device for NCCL, the host)."""
    backends = _backends() if is_distributed() else {"cpu": "local"}
    if for_tensor is not None and for_tensor.device.type in backends:
        return for_tensor.device
    if "cuda" in backends and backends["cuda"] == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce_op(op: str):
    if op not in _OPS:
        raise ValueError(f"unknown reduction {op!r} (one of {', '.join(_OPS)})")
    return getattr(dist.ReduceOp, _OPS[op])


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce `tensor` over the ranks, in place, wherever it lives; returns it."""
    if not is_distributed():
        return tensor
    device = backend_device(tensor)
    if tensor.device == device:
        dist.all_reduce(tensor, op=_reduce_op(op))
        return tensor
    moved = tensor.to(device)
    dist.all_reduce(moved, op=_reduce_op(op))
    return tensor.copy_(moved)


def all_reduce_values(values: Sequence[float], op: str = "sum", dtype: torch.dtype = torch.float64) -> list[float]:
    """Host numbers reduced over the ranks (one collective, one wait for its result)."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(list(values), dtype=dtype).to(backend_device())
    dist.all_reduce(tensor, op=_reduce_op(op))
    return tensor.tolist()


def all_to_all_single(output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Chunk r of every rank's `inputs` to rank r, into `output` (in place); returns `output`."""
    if not is_distributed():
        return output.copy_(inputs)
    device = backend_device(inputs)
    send = inputs if inputs.device == device else inputs.to(device)
    received = output if output.device == device else torch.empty_like(output, device=device)
    dist.all_to_all_single(received, send)
    return output if received is output else output.copy_(received)


def all_gather_object(obj: Any, group=None) -> list:
    """Every rank's `obj` (small and picklable), on every rank (of `group`, default all)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)  # torch puts the pickled bytes on the group's device
    return out


def broadcast_object(obj: Any, source: int = 0, group=None) -> Any:
    """Rank `source`'s `obj` (small and picklable), on every rank (of `group`, default all)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=source, group=group)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()
