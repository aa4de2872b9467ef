"""The methods `optimizer.name` selects: one record each, the only list of them.

A record holds a method's options (a dataclass of config.py), its builder (build.py) and its
optimizer-state cost (below). What other code knows about methods derives from REGISTRY:
METHODS and METHOD_OPTIONS (the config check), build_optimizer, the dry run's memory estimate
(estimate_state_bytes, training/dry_run.py); configs/paper/methods/*.yaml name methods of it
(tests/test_optimizer_registry.py checks that, and each cost against a real optimizer's state).

A state cost is the bytes `optimizer_state_bytes` reports after the first step (each storage
once), worked out from the model's shapes alone, so a model on the meta device will do. It reads
the same facts as the builders (shapes.py: which matrices are hidden, which rank is used). The
0-d step counters and norms some optimizers keep (4-12 bytes per tensor) are left out. State
tensors take their parameter's dtype unless said; `dtype`, when given, is the parameters' dtype at
training time (bf16-pure casts them after the dry run's fp32 model is built).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from configs import ConfigError
from optimizers import build
from optimizers.options import (AdafactorOptions, AdamMiniOptions, AdamOptions, ApolloOptions, EightBitOptions,
                               GaLoreOptions, LambOptions, MuonOptions, NAdamOptions, NoOptions,
                               SoapOptions)
from optimizers.shapes import hidden_matrices, model_problems, projection_rank, unwrap_model

# (options, model, dtype or None) -> bytes of optimizer state after the first step
StateCost = Callable[[object, torch.nn.Module, Optional[torch.dtype]], int]


@dataclass(frozen=True)
class Method:
    name: str
    options: type                # the dataclass `optimizer.options` is checked against
    build: Callable              # (cfg, options, model, named input groups) -> torch.optim.Optimizer
    state_bytes: StateCost


# ---------------------------------------------------------------------------------------------
# State costs
# ---------------------------------------------------------------------------------------------

def _trainable(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in unwrap_model(model).parameters() if p.requires_grad]


def _itemsize(param: torch.Tensor, dtype: Optional[torch.dtype]) -> int:
    """Bytes per element of a state tensor made like its parameter (zeros_like)."""
    return (dtype or param.dtype).itemsize


def _moments(count: int, params: list[torch.Tensor], dtype) -> int:
    return sum(count * p.numel() * _itemsize(p, dtype) for p in params)


def _adam_state(options: AdamOptions, model, dtype) -> int:
    """exp_avg and exp_avg_sq per parameter (and max_exp_avg_sq with amsgrad)."""
    return _moments(3 if options.amsgrad else 2, _trainable(model), dtype)


def _two_moments(options, model, dtype) -> int:
    """NAdam's and LAMB's exp_avg and exp_avg_sq per parameter."""
    return _moments(2, _trainable(model), dtype)


def _one_moment(options, model, dtype) -> int:
    """Lion's exp_avg per parameter."""
    return _moments(1, _trainable(model), dtype)


def _muon_state(options: MuonOptions, model, dtype) -> int:
    """Muon's momentum buffer per hidden matrix; its AdamW part's two moments per other parameter."""
    hidden = {id(p) for _, p in hidden_matrices(model)}
    return sum((1 if id(p) in hidden else 2) * p.numel() * _itemsize(p, dtype) for p in _trainable(model))


def _adam_mini_state(options: AdamMiniOptions, model, dtype) -> int:
    """A first moment per element and a second moment per block. Adam-mini's blocks of a matrix are
    its rows (of q and k: its heads, fewer); counted as rows. A vector is one block, but biases keep
    a full second moment: vectors are counted at two values per element (an upper bound, and tiny)."""
    return sum((p.numel() + (p.shape[0] if p.ndim >= 2 else p.numel())) * _itemsize(p, dtype)
               for p in _trainable(model))


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
    total = _moments(2, [p for p in _trainable(model) if id(p) not in hidden], dtype)
    for p in hidden.values():
        size = _itemsize(p, dtype)
        rows, cols = p.shape
        side = _projection_side(p.shape, options.proj_type)
        kept = min(rows, cols) if svd and (dtype or p.dtype) == torch.float32 else rank
        low_rank = {"right": rows * rank, "left": rank * cols, "full": rank * rank}[side]
        projector = {"right": kept * cols, "left": rows * kept, "full": rows * kept + kept * cols}[side]
        total += (2 * low_rank + projector) * size
    return total


def _galore_state(options: GaLoreOptions, model, dtype) -> int:
    return _low_rank_state(options, model, dtype, svd=True)


def _apollo_state(options: ApolloOptions, model, dtype) -> int:
    return _low_rank_state(options, model, dtype, svd=options.proj == "svd")


EIGHT_BIT_BLOCK = 256      # bitsandbytes' block of 8-bit optimizer state: one fp32 absmax each
EIGHT_BIT_QMAP_BYTES = 2 * 256 * 4  # its two fp32 quantization maps, shared by every 8-bit tensor


def _eight_bit_state(options: EightBitOptions, model, dtype) -> int:
    """bitsandbytes Adam8bit/AdamW8bit: a tensor of >= min_8bit_size elements keeps two uint8 moments
    and an fp32 absmax per block of each; a smaller one two fp32 moments (whatever its dtype)."""
    total = quantized = 0
    for p in _trainable(model):
        n = p.numel()
        if n >= options.min_8bit_size:
            total += 2 * (n + 4 * math.ceil(n / EIGHT_BIT_BLOCK))
            quantized = 1
        else:
            total += 2 * 4 * n
    return total + quantized * EIGHT_BIT_QMAP_BYTES


def _adafactor_state(options: AdafactorOptions, model, dtype) -> int:
    """pytorch_optimizer.AdaFactor: a matrix's second moment factored into row and column statistics
    (rows + cols values), a vector's in full; with momentum, an fp32 first moment per element."""
    total = 0
    for p in _trainable(model):
        if p.ndim >= 2:
            second = math.prod(p.shape[:-1]) + math.prod(p.shape[:-2]) * p.shape[-1]
        else:
            second = p.numel()
        total += second * _itemsize(p, dtype) + (4 * p.numel() if options.momentum else 0)
    return total


def _soap_state(options: SoapOptions, model, dtype) -> int:
    """pytorch_optimizer.SOAP: per parameter exp_avg and exp_avg_sq (parameter-sized); per side s of a
    matrix (each dimension of a tensor of 2 or more) with s <= max_precondition_dim, the Shampoo
    preconditioner GG (s x s) and its eigenbasis Q (s x s, from eigh, later one QR power step), all in
    the gradient's dtype. Vectors are not preconditioned (its precondition_1d, off here), nor sides
    above max_precondition_dim (an identity instead: no tensor). So a rows x cols matrix holds
    2 * rows * cols + 2 * (rows^2 + cols^2) values: with a vocabulary up to max_precondition_dim
    (10,000 by default) the embedding's and head's vocab x vocab matrices dominate; the paper's
    32,000-token vocabulary skips that side."""
    total = 0
    for p in _trainable(model):
        sides = [s for s in p.shape if s <= options.max_precondition_dim] if p.ndim >= 2 else []
        total += (2 * p.numel() + 2 * sum(s * s for s in sides)) * _itemsize(p, dtype)
    return total


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

REGISTRY: dict[str, Method] = {method.name: method for method in (
    Method("adamw", AdamOptions, build.adam_family(torch.optim.AdamW, "adamw"), _adam_state),
    Method("adam", AdamOptions, build.adam_family(torch.optim.Adam, "adam (L2 weight decay)"), _adam_state),
    Method("nadam", NAdamOptions, build.build_nadam, _two_moments),
    Method("lamb", LambOptions, build.build_lamb, _two_moments),
    Method("muon", MuonOptions, build.build_muon, _muon_state),
    Method("adam_mini", AdamMiniOptions, build.build_adam_mini, _adam_mini_state),
    Method("galore", GaLoreOptions, build.build_galore, _galore_state),
    Method("apollo", ApolloOptions, build.build_apollo, _apollo_state),
    Method("adam8bit", EightBitOptions, build.bitsandbytes_adam("Adam8bit"), _eight_bit_state),
    Method("adamw8bit", EightBitOptions, build.bitsandbytes_adam("AdamW8bit"), _eight_bit_state),
    Method("lion", NoOptions, build.build_lion, _one_moment),
    Method("adafactor", AdafactorOptions, build.build_adafactor, _adafactor_state),
    Method("soap", SoapOptions, build.build_soap, _soap_state),
)}
METHODS: tuple[str, ...] = tuple(REGISTRY)
METHOD_OPTIONS: dict[str, type] = {name: method.options for name, method in REGISTRY.items()}


def _typed(cfg):
    """`cfg` (an optimizers.config.OptimizerConfig) as training.config.load_config leaves it
    (options a dataclass); a hand-made one is validated here."""
    if not dataclasses.is_dataclass(cfg.options):
        problems = cfg.validate()
        if problems:
            raise ConfigError(problems)
    return cfg


def build_optimizer(cfg, model: torch.nn.Module, groups: list[dict]) -> torch.optim.Optimizer:
    """One optimizer for `cfg.name` over `groups` (from mols.groups.param_groups(model, grouping)).
    What only the model can tell (a rank above a matrix side) is checked here."""
    cfg = _typed(cfg)
    problems = model_problems(cfg.name, cfg.options, model)
    if problems:
        raise ConfigError(problems)
    optimizer = REGISTRY[cfg.name].build(cfg, cfg.options, model, build.named_input_groups(model, groups))
    optimizer.mols_method = cfg.name  # export_state records it; import_state checks it
    return optimizer


def estimate_state_bytes(cfg, model: torch.nn.Module, dtype: Optional[torch.dtype] = None) -> int:
    """Bytes of state the optimizer build_optimizer(cfg, model, ...) keeps once it has stepped, from
    the model's shapes (a meta-device model will do). dtype: the parameters' dtype when training
    (torch.bfloat16 under bf16-pure); None: the model's own."""
    cfg = _typed(cfg)
    return REGISTRY[cfg.name].state_bytes(cfg.options, model, dtype)
