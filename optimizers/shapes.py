"""Facts about a model that optimizers need: its hidden matrices, dimensions and the default rank,
and the option problems only the model can reveal (a rank above a matrix's side, say)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from models.cost import model_shape
from mols.groups import base_class
from optimizers.options import PAPER_RANKS, LowRankOptions

# Classes whose 2-D weights are the "hidden matrices" of a transformer block: what Muon
# orthogonalises and GaLore/APOLLO project (their papers target attention and MLP linears).
HIDDEN_MATRIX_CLASSES = ("qk", "vo", "mlp", "fused_qkv")


# ---------------------------------------------------------------------------------------------
# Model facts used by the checks and the builders
# ---------------------------------------------------------------------------------------------

def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model under DistributedDataParallel (`.module`) or torch.compile (`._orig_mod`)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


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


def default_rank(model: torch.nn.Module) -> int:
    """The GaLore/APOLLO papers' rank for this width, never above what every matrix allows."""
    matrices = hidden_matrices(model)
    smallest_side = min((min(p.shape) for _, p in matrices), default=1)
    hidden = model_dims(model)["dim"] or smallest_side
    rank = PAPER_RANKS.get(hidden, max(1, hidden // 4))
    return max(1, min(rank, smallest_side))


def projection_rank(options: LowRankOptions, model: torch.nn.Module) -> int:
    """The rank GaLore/APOLLO project with: optimizer.options.rank, or the default for this model."""
    return options.rank or default_rank(model)


def model_problems(method: str, options, model: torch.nn.Module) -> list[str]:
    """What a method's options cannot do with this model (GaLore/APOLLO rank, Adam-mini's dimensions)."""
    low_rank = isinstance(options, LowRankOptions)
    options = dataclasses.asdict(options)
    problems = []
    if low_rank:
        matrices = hidden_matrices(model)
        rank = options.get("rank")
        if not matrices:
            problems.append(f"optimizer.name: {method} projects attention/MLP matrices, but the model has "
                            f"none that mols/groups.py recognises")
        elif isinstance(rank, int) and not isinstance(rank, bool):
            name, tensor = min(matrices, key=lambda item: min(item[1].shape))
            smallest = min(tensor.shape)
            if rank > smallest:
                shape = "x".join(map(str, tensor.shape))
                problems.append(f"optimizer.options.rank: {rank} is larger than the matrices {method} projects "
                                f"allow: {name} is {shape}, so the rank must be <= {smallest} for this model "
                                f"(or null for the default, {default_rank(model)})")
    if method == "adam_mini":
        dims = model_dims(model)
        dims.update({k: v for k, v in options.items() if k in dims and v is not None})
        missing = [k for k, v in dims.items() if v is None]
        if missing:
            problems.append(f"optimizer.options: adam_mini needs {', '.join(missing)}, which the model config "
                            f"does not give: set them in optimizer.options")
        else:
            if dims["dim"] % dims["n_heads"]:
                problems.append(f"optimizer.options: adam_mini needs dim ({dims['dim']}) divisible by "
                                f"n_heads ({dims['n_heads']})")
            if dims["n_heads"] % dims["n_kv_heads"]:
                problems.append(f"optimizer.options: adam_mini needs n_heads ({dims['n_heads']}) divisible by "
                                f"n_kv_heads ({dims['n_kv_heads']})")
    return problems
