"""Facts about a model that optimizers and their state costs need: its trainable parameters, its
hidden matrices and dimensions, and the bytes of state tensors made like its parameters."""
from __future__ import annotations

from typing import Optional

import torch

from models.cost import model_shape
from mols.groups import base_class

# Classes whose 2-D weights are the "hidden matrices" of a transformer block: what Muon
# orthogonalises and GaLore/APOLLO project (their papers target attention and MLP linears).
HIDDEN_MATRIX_CLASSES = ("qk", "vo", "mlp", "fused_qkv")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model under DistributedDataParallel (`.module`) or torch.compile (`._orig_mod`)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def trainable(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in unwrap_model(model).parameters() if p.requires_grad]


def is_hidden_matrix(name: str, tensor: torch.Tensor) -> bool:
    """A 2-D weight of an attention or MLP projection (GPT-2's fused QKV included)."""
    return tensor.ndim == 2 and base_class(name) in HIDDEN_MATRIX_CLASSES


def hidden_matrices(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in unwrap_model(model).named_parameters()
            if p.requires_grad and is_hidden_matrix(n, p)]


def model_dims(model: torch.nn.Module) -> dict[str, Optional[int]]:
    """hidden size and head counts from a transformers config (LLaMA/Qwen2 and GPT-2 names)."""
    config = getattr(unwrap_model(model), "config", None)
    try:
        shape = model_shape(config)
    except ValueError:
        return {"dim": None, "n_heads": None, "n_kv_heads": None}
    return {"dim": shape.width, "n_heads": shape.heads, "n_kv_heads": shape.kv_heads}


# ---------------------------------------------------------------------------------------------
# For state costs: a state cost is the bytes `optimizer_state_bytes` reports after the first step
# (each storage once), worked out from the model's shapes alone, so a model on the meta device will
# do. The 0-d step counters and norms some optimizers keep (4-12 bytes per tensor) are left out.
# `dtype`, when given, is the parameters' dtype at training time (bf16-pure casts them after the
# dry run's fp32 model is built).
# ---------------------------------------------------------------------------------------------

def itemsize(param: torch.Tensor, dtype: Optional[torch.dtype]) -> int:
    """Bytes per element of a state tensor made like its parameter (zeros_like)."""
    return (dtype or param.dtype).itemsize


def moments_bytes(count: int, params: list[torch.Tensor], dtype: Optional[torch.dtype]) -> int:
    """`count` state tensors shaped like each parameter."""
    return sum(count * p.numel() * itemsize(p, dtype) for p in params)
