"""Each method's typed options (`optimizer.options`), one dataclass per method, checked by the same
typed checker as every other section (configs.typed); optimizers/methods.py pairs each with its
method, builder and state cost.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from configs import check_range

# Widths of the paper's LLaMA models -> the rank GaLore and APOLLO used for them.
PAPER_RANKS = {512: 128, 768: 256, 1024: 256, 2048: 512}


@dataclass
class NoOptions:
    pass


@dataclass
class AdamOptions:
    amsgrad: bool = False               # keep the running maximum of the second moment
    fused: Optional[bool] = None        # torch's fused kernel (null: on for CUDA, off on CPU)


@dataclass
class NAdamOptions:
    momentum_decay: float = 4e-3        # NAdam's momentum decay psi (torch default)
    decoupled_weight_decay: bool = False  # AdamW-style decay instead of L2

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.momentum_decay", self.momentum_decay, low=0)
        return problems


@dataclass
class LambOptions:
    weight_decouple: bool = True        # decoupled (AdamW-style) weight decay
    grad_averaging: bool = True         # scale new gradients by 1 - beta1 in the first moment
    pre_norm: bool = False              # divide gradients by their global norm / max_grad_norm first
    max_grad_norm: float = 1.0          # reference norm for pre_norm (unused otherwise)

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.max_grad_norm", self.max_grad_norm, low=0)
        return problems


@dataclass
class MuonOptions:
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5                   # Newton-Schulz iterations
    # per-shape lr scaling of torch.optim.Muon: match_rms_adamw (Moonshot: update RMS like AdamW,
    # so one lr serves both parts) or original (Keller Jordan: needs a ~10x larger lr)
    adjust_lr_fn: Literal["match_rms_adamw", "original"] = "match_rms_adamw"
    adamw_lr_ratio: float = 1.0         # lr of the AdamW part (embeddings, head, norms) / optimizer.lr

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.momentum", self.momentum, low=0, high=1, high_open=True)
        check_range(problems, "optimizer.options.ns_steps", self.ns_steps, low=1)
        check_range(problems, "optimizer.options.adamw_lr_ratio", self.adamw_lr_ratio, low=0, low_open=True)
        return problems


@dataclass
class AdamMiniOptions:
    dim: Optional[int] = None           # hidden size (null: from the model config)
    n_heads: Optional[int] = None       # attention heads (null: from the model config)
    n_kv_heads: Optional[int] = None    # key/value heads (null: from the model config)

    def validate(self) -> list[str]:
        problems: list[str] = []
        for name in ("dim", "n_heads", "n_kv_heads"):
            check_range(problems, f"optimizer.options.{name}", getattr(self, name), low=1, optional=True)
        return problems


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


@dataclass
class EightBitOptions:
    min_8bit_size: int = 4096           # tensors with fewer elements keep 32-bit state

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.min_8bit_size", self.min_8bit_size, low=1)
        return problems


@dataclass
class AdafactorOptions:
    # keep a first moment with beta1 = optimizer.betas[0] (the reference harness has none)
    momentum: bool = False
    decay_rate: float = -0.8            # second-moment decay 1 - t^decay_rate
    beta2_cap: float = 0.999            # upper bound of the second-moment decay
    clip_threshold: float = 1.0         # update RMS clipping threshold
    eps1: float = 1e-30                 # added to squared gradients

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.decay_rate", self.decay_rate, high=0, high_open=True)
        check_range(problems, "optimizer.options.beta2_cap", self.beta2_cap, low=0, high=1, high_open=True)
        check_range(problems, "optimizer.options.clip_threshold", self.clip_threshold, low=0, low_open=True)
        check_range(problems, "optimizer.options.eps1", self.eps1, low=0)
        return problems


@dataclass
class SoapOptions:
    precondition_frequency: int = 10    # steps between eigenbasis updates (SOAP's default)
    max_precondition_dim: int = 10000   # larger dimensions are not preconditioned

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.precondition_frequency", self.precondition_frequency, low=1)
        check_range(problems, "optimizer.options.max_precondition_dim", self.max_precondition_dim, low=1)
        return problems
