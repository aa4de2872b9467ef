"""GaLore (galore_torch.GaLoreAdamW) and APOLLO (apollo_torch.APOLLOAdamW): AdamW whose hidden
matrices keep their moments in a low-rank projection; embeddings, head, norms and biases are plain
AdamW. Low-rank groups are split per module class, so MoLS can scale each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from configs import check_range
from optimizers.groups import make_group
from optimizers.registry import register
from optimizers.shapes import hidden_matrices, is_hidden_matrix, itemsize, model_dims, moments_bytes, trainable

# Widths of the paper's LLaMA models -> the rank GaLore and APOLLO used for them.
PAPER_RANKS = {512: 128, 768: 256, 1024: 256, 2048: 512}
WHOLE_MATRICES = "projects whole weight matrices, which FSDP splits across ranks"


@dataclass
class LowRankOptions:
    # projection rank; null: the papers' rank for the width (PAPER_RANKS), hidden/4 otherwise
    rank: Optional[int] = None
    update_proj_gap: int = 200          # steps between projection updates (both papers: 200)

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.rank", self.rank, low=1, optional=True)
        check_range(problems, "optimizer.options.update_proj_gap", self.update_proj_gap, low=1)
        check_range(problems, "optimizer.options.scale", self.scale, low=0, low_open=True)
        return problems


@dataclass
class GaLoreOptions(LowRankOptions):
    scale: float = 0.25                 # GaLore scale alpha (paper Table 9: 0.25)
    proj_type: Literal["std", "reverse_std", "left", "right", "full"] = "std"


@dataclass
class ApolloOptions(LowRankOptions):
    proj: Literal["random", "svd"] = "random"                 # projection matrices
    scale_type: Literal["channel", "tensor"] = "channel"      # per channel (APOLLO) or tensor (APOLLO-Mini)
    scale: float = 1.0                  # paper Table 9: 1.0; the update is multiplied by sqrt(scale)
    proj_type: Literal["std", "reverse_std", "left", "right"] = "std"
    scale_front: bool = False           # apply sqrt(scale) before the norm-growth limiter
    norm_growth_limiter: bool = True    # limit update-norm growth to 1.01x per step (Fira)


# ---------------------------------------------------------------------------------------------
# The rank, and what only the model can tell about it
# ---------------------------------------------------------------------------------------------

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


def rank_problems(method: str):
    def check(options: LowRankOptions, model: torch.nn.Module) -> list[str]:
        matrices = hidden_matrices(model)
        if not matrices:
            return [f"optimizer.name: {method} projects attention/MLP matrices, but the model has "
                    f"none that mols/groups.py recognises"]
        rank = options.rank
        if not isinstance(rank, int) or isinstance(rank, bool):
            return []
        name, tensor = min(matrices, key=lambda item: min(item[1].shape))
        smallest = min(tensor.shape)
        if rank <= smallest:
            return []
        shape = "x".join(map(str, tensor.shape))
        return [f"optimizer.options.rank: {rank} is larger than the matrices {method} projects "
                f"allow: {name} is {shape}, so the rank must be <= {smallest} for this model "
                f"(or null for the default, {default_rank(model)})"]
    return check


# ---------------------------------------------------------------------------------------------
# State cost
# ---------------------------------------------------------------------------------------------

def _projection_side(shape: torch.Size, proj_type: str) -> str:
    """Which side a GaLore/APOLLO projector multiplies: the projectors' own rule per proj_type."""
    rows, cols = shape
    if proj_type == "std":
        return "right" if rows >= cols else "left"
    if proj_type == "reverse_std":
        return "left" if rows >= cols else "right"
    return proj_type  # left, right or full


def _low_rank_state(options, model, dtype, svd: bool) -> int:
    """AdamW's two moments per non-hidden parameter; per hidden (rows x cols) matrix two moments of
    its projected gradient (right: rows x rank, left: rank x cols, full: rank x rank) and the projector.

    A random projector (APOLLO's default) is rank x cols (right) or rows x rank (left). An SVD
    projector (GaLore, APOLLO with proj: svd) is a slice of the SVD's factor; with fp32 gradients
    the slice is a view that keeps the factor's whole storage alive (right: Vh, min x cols; left: U,
    rows x min), which optimizer_state_bytes counts and memory holds. With other dtypes it is cast,
    a copy of rank rows or columns."""
    rank = projection_rank(options, model)
    hidden = {id(p): p for _, p in hidden_matrices(model)}
    total = moments_bytes(2, [p for p in trainable(model) if id(p) not in hidden], dtype)
    for p in hidden.values():
        size = itemsize(p, dtype)
        rows, cols = p.shape
        side = _projection_side(p.shape, options.proj_type)
        kept = min(rows, cols) if svd and (dtype or p.dtype) == torch.float32 else rank
        low_rank = {"right": rows * rank, "left": rank * cols, "full": rank * rank}[side]
        projector = {"right": kept * cols, "left": rows * kept, "full": rows * kept + kept * cols}[side]
        total += (2 * low_rank + projector) * size
    return total


def galore_state(options: GaLoreOptions, model, dtype) -> int:
    return _low_rank_state(options, model, dtype, svd=True)


def apollo_state(options: ApolloOptions, model, dtype) -> int:
    return _low_rank_state(options, model, dtype, svd=options.proj == "svd")


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------

def _low_rank_groups(cfg, groups, low_rank_settings: dict, rank: int, name: str) -> list[dict]:
    """Per input group: its hidden matrices in a low-rank group, the rest in a full-rank group."""
    out = []
    for group in groups:
        matrices, rest = group.split(is_hidden_matrix)
        if matrices.params:
            out.append(make_group(matrices, cfg.lr, f"{name} low-rank (rank {rank})", rank=rank, **low_rank_settings))
        if rest.params:
            out.append(make_group(rest, cfg.lr, f"adamw (full-rank part of {name})"))
    return out


@register("galore", options=GaLoreOptions, state_bytes=galore_state, check_model=rank_problems("galore"),
          why_not_sharded=WHOLE_MATRICES)
def build_galore(cfg, options, model, groups):
    from galore_torch import GaLoreAdamW
    rank = projection_rank(options, model)
    settings = {k: getattr(options, k) for k in ("update_proj_gap", "scale", "proj_type")}
    # eps is passed explicitly: GaLoreAdamW's own default is 1e-6, not the paper's 1e-8.
    return GaLoreAdamW(_low_rank_groups(cfg, groups, settings, rank, "galore"), lr=cfg.lr, betas=tuple(cfg.betas),
                       eps=cfg.eps, weight_decay=cfg.weight_decay, no_deprecation_warning=True)


@register("apollo", options=ApolloOptions, state_bytes=apollo_state, check_model=rank_problems("apollo"),
          why_not_sharded=WHOLE_MATRICES)
def build_apollo(cfg, options, model, groups):
    from apollo_torch import APOLLOAdamW
    rank = projection_rank(options, model)
    settings = {k: getattr(options, k) for k in ("update_proj_gap", "scale", "proj_type", "proj", "scale_type")}
    return APOLLOAdamW(_low_rank_groups(cfg, groups, settings, rank, "apollo"), lr=cfg.lr, betas=tuple(cfg.betas),
                       eps=cfg.eps, weight_decay=cfg.weight_decay, scale_front=options.scale_front,
                       disable_nl=not options.norm_growth_limiter)
