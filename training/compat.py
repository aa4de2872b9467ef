"""Where the supported versions differ (torch 2.11-2.13, transformers 5.17-5.23): one function each.

Every difference between the floor and the lock that the code meets is handled here and nowhere
else. The suite runs each on whichever stack it is run with, and CI runs it on both ends:
tests/test_gpu_path.py (checkpointing) and tests/test_preemption.py (the launcher's wait).
"""
from __future__ import annotations

import sys

import torch


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass (non-reentrant checkpoints,
    which work under DDP's no_sync and with torch.compile).

    transformers renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable` in
    5.2x; 5.17 has only the old name, the newer ones warn on it."""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def activation_checkpointing_enabled(model: torch.nn.Module) -> bool:
    """Whether any submodule recomputes its activations (both names of the flag)."""
    return any(getattr(m, "gradient_checkpointing", False) or getattr(m, "activation_checkpointing", False)
               for m in model.modules())


def give_workers_time_after_signal(seconds: float) -> None:
    """Make torchrun wait `seconds` (not 30) for its workers after it forwards a stop signal.

    torch 2.11 SIGKILLs the workers 30 s after forwarding SIGTERM, which cuts off a multi-GB
    checkpoint; torch >= 2.12 reads TORCH_ELASTIC_SHUTDOWN_TIMEOUT, 2.11 has no such setting. Here
    the wait of the process context's `close` is raised to `seconds` while the agent handles a
    signal (its `except SignalException` clause), the same on every version (a larger
    TORCH_ELASTIC_SHUTDOWN_TIMEOUT still wins); when a worker merely failed, torchrun's own timeout
    stands, so a restart after a dead rank is not slowed. Call before torchrun's main."""
    from torch.distributed.elastic.multiprocessing import SignalException, api

    close = api.PContext.close
    if getattr(close, "grace_seconds", None) is not None:
        close.grace_seconds = seconds
        return

    def close_with_grace(self, death_sig=None, timeout: int = 30):
        if isinstance(sys.exc_info()[1], SignalException):
            timeout = max(timeout, close_with_grace.grace_seconds)
        close(self, death_sig, timeout)
        handlers = getattr(self, "subprocess_handlers", None) or {}
        close_with_grace.exit_codes = [h.proc.returncode for h in handlers.values()]

    close_with_grace.grace_seconds = seconds
    close_with_grace.exit_codes = []
    api.PContext.close = close_with_grace


def worker_exit_codes() -> list:
    """The exit codes of the workers torchrun last closed (after `give_workers_time_after_signal`)."""
    from torch.distributed.elastic.multiprocessing import api

    return list(getattr(api.PContext.close, "exit_codes", []))


def rebuild_rotary_buffers(model: torch.nn.Module, device: torch.device) -> None:
    """Recompute the rotary embeddings' inverse frequencies of a model built on the meta device
    (non-persistent buffers: `to_empty` leaves them uninitialised, no checkpoint holds them).

    The module is built again from its config under the target device: 5.17's constructor takes
    a `device` argument, 5.23's does not; both build under torch's default device."""
    for module in model.modules():
        if type(module).__name__.endswith("RotaryEmbedding"):
            with torch.device(device):
                fresh = type(module)(module.config)
            for name, buffer in fresh.named_buffers(recurse=False):
                setattr(module, name, buffer)


def _no_packed_sequences(position_ids: torch.Tensor) -> None:
    return None


def skip_packed_sequence_detection() -> None:
    """Stop transformers (5.17-5.23) from looking for packed sequences in every forward.

    Without an attention mask, `masking_utils.find_packed_sequence_indices` checks whether the
    position ids restart inside a row and asks `.all()` of the answer: a CUDA host then waits for
    the device's queue on every micro-batch. This project's sequences never restart their
    positions (packing concatenates documents; positions run 0 .. seq_len - 1), for which the
    function's answer is always None ("not packed"): it is now given without asking. The logits
    are the same (tests/test_host_syncs.py)."""
    from transformers import masking_utils

    masking_utils.find_packed_sequence_indices = _no_packed_sequences


def set_tf32(enabled: bool) -> None:
    """fp32 matrix multiplies and convolutions on CUDA in TF32 (or exact fp32 when not enabled).

    torch >= 2.9 has `fp32_precision` ("tf32" / "ieee"), which transformers sets too; the legacy
    `allow_tf32` flags are deprecated, and Inductor refuses a process that has set both kinds.
    The legacy flags only where the new setting does not exist."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        precision = "tf32" if enabled else "ieee"
        matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:  # pragma: no cover (torch < 2.9)
        matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
