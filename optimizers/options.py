"""Method names, their `optimizer.options` keys (with defaults), and the config check.

Every problem is reported as one readable line, collected, never raised: the config loader shows
them all at once. `resolve_options` turns a checked config into the full option dict (defaults
filled in, YAML numbers converted) that the builders use.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from configs.schema import OptimizerConfig
from mols.groups import base_class

# Classes whose 2-D weights are the "hidden matrices" of a transformer block: what Muon
# orthogonalises and GaLore/APOLLO project (their papers target attention and MLP linears).
HIDDEN_MATRIX_CLASSES = ("qk", "vo", "mlp", "fused_qkv")


class OptionError(ValueError):
    """A value that does not fit an option; the message says what was expected."""


# ---------------------------------------------------------------------------------------------
# Value checkers: each converts a YAML value to the option's type or raises OptionError.
# ---------------------------------------------------------------------------------------------

def _boolean(value):
    if not isinstance(value, bool):
        raise OptionError(f"expected true or false, got {value!r}")
    return value


def _integer(minimum: int) -> Callable[[Any], int]:
    def check(value):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # YAML reads 2e2 as a float
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise OptionError(f"expected an integer >= {minimum}, got {value!r}")
        return value
    return check


def _number(minimum: Optional[float] = None, maximum: Optional[float] = None, *,
            strict_minimum: bool = False, strict_maximum: bool = False) -> Callable[[Any], float]:
    def describe() -> str:
        parts = []
        if minimum is not None:
            parts.append(f"{'>' if strict_minimum else '>='} {minimum:g}")
        if maximum is not None:
            parts.append(f"{'<' if strict_maximum else '<='} {maximum:g}")
        return "a number" + (" " + " and ".join(parts) if parts else "")

    def check(value):
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise OptionError(f"expected {describe()}, got {value!r}")
        value = float(value)
        too_small = minimum is not None and (value <= minimum if strict_minimum else value < minimum)
        too_large = maximum is not None and (value >= maximum if strict_maximum else value > maximum)
        if too_small or too_large:
            raise OptionError(f"expected {describe()}, got {value!r}")
        return value
    return check


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value):
        if value not in choices:
            hint = difflib.get_close_matches(str(value), choices, n=1)
            raise OptionError(f"expected one of {', '.join(map(repr, choices))}, got {value!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        return value
    return check


def _or_null(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check_or_null(value):
        if value is None:
            return None
        try:
            return check(value)
        except OptionError as err:
            raise OptionError(f"{err} (or null)") from None
    return check_or_null


@dataclass(frozen=True)
class Option:
    default: Any
    check: Callable[[Any], Any]
    help: str


# ---------------------------------------------------------------------------------------------
# The methods and their options. cfg.lr / betas / eps / weight_decay are passed to every method
# that has such a setting; only method-specific settings live in `options`.
# ---------------------------------------------------------------------------------------------

_ADAM_OPTIONS = {
    "amsgrad": Option(False, _boolean, "keep the running maximum of the second moment"),
    "fused": Option(None, _or_null(_boolean), "torch's fused kernel (null: torch decides; false on CPU)"),
}

_LOW_RANK_COMMON = {
    "rank": Option(None, _or_null(_integer(1)),
                   "projection rank; null: the papers' rank for the model width (512->128, 768->256, "
                   "1024->256, 2048->512), hidden/4 for other widths"),
    "update_proj_gap": Option(200, _integer(1), "steps between projection updates (both papers: 200)"),
}

METHOD_OPTIONS: dict[str, dict[str, Option]] = {
    "adamw": dict(_ADAM_OPTIONS),
    "adam": dict(_ADAM_OPTIONS),
    "nadam": {
        "momentum_decay": Option(4e-3, _number(0.0), "NAdam's momentum decay psi (torch default)"),
        "decoupled_weight_decay": Option(False, _boolean, "AdamW-style decay instead of L2"),
    },
    "lamb": {
        "weight_decouple": Option(True, _boolean, "decoupled (AdamW-style) weight decay"),
        "grad_averaging": Option(True, _boolean, "scale new gradients by 1 - beta1 in the first moment"),
        "pre_norm": Option(False, _boolean, "divide gradients by their global norm / max_grad_norm first"),
        "max_grad_norm": Option(1.0, _number(0.0), "reference norm for pre_norm (unused otherwise)"),
    },
    "muon": {
        "momentum": Option(0.95, _number(0.0, 1.0, strict_maximum=True), "Muon momentum"),
        "nesterov": Option(True, _boolean, "Nesterov momentum"),
        "ns_steps": Option(5, _integer(1), "Newton-Schulz iterations"),
        "adjust_lr_fn": Option("match_rms_adamw", _choice("match_rms_adamw", "original"),
                               "per-shape lr scaling of torch.optim.Muon; match_rms_adamw (Moonshot: "
                               "update RMS like AdamW, so one lr serves both parts) or original "
                               "(Keller Jordan: sqrt(max(1, rows/cols)), needs a ~10x larger lr)"),
        "adamw_lr_ratio": Option(1.0, _number(0.0, strict_minimum=True),
                                 "lr of the AdamW part (embeddings, head, norms, biases) / optimizer.lr"),
    },
    "adam_mini": {
        "dim": Option(None, _or_null(_integer(1)), "hidden size (null: from the model config)"),
        "n_heads": Option(None, _or_null(_integer(1)), "attention heads (null: from the model config)"),
        "n_kv_heads": Option(None, _or_null(_integer(1)), "key/value heads (null: from the model config)"),
    },
    "galore": {
        **_LOW_RANK_COMMON,
        "scale": Option(0.25, _number(0.0, strict_minimum=True), "GaLore scale alpha (paper Table 9: 0.25)"),
        "proj_type": Option("std", _choice("std", "reverse_std", "left", "right", "full"),
                            "which side is projected (std: the smaller one)"),
    },
    "apollo": {
        **_LOW_RANK_COMMON,
        "proj": Option("random", _choice("random", "svd"), "projection matrices: random (APOLLO) or SVD"),
        "scale_type": Option("channel", _choice("channel", "tensor"),
                             "gradient scaling per channel (APOLLO) or per tensor (APOLLO-Mini)"),
        "scale": Option(1.0, _number(0.0, strict_minimum=True),
                        "APOLLO scale (paper Table 9: 1.0; the update is multiplied by sqrt(scale))"),
        "proj_type": Option("std", _choice("std", "reverse_std", "left", "right"),
                            "which side is projected (std: the smaller one)"),
        "scale_front": Option(False, _boolean, "apply sqrt(scale) before the norm-growth limiter"),
        "norm_growth_limiter": Option(True, _boolean, "limit update-norm growth to 1.01x per step (Fira)"),
    },
    "adam8bit": {
        "min_8bit_size": Option(4096, _integer(1),
                                "tensors with fewer elements keep 32-bit state (bitsandbytes default)"),
    },
    "adamw8bit": {
        "min_8bit_size": Option(4096, _integer(1),
                                "tensors with fewer elements keep 32-bit state (bitsandbytes default)"),
    },
    "lion": {},
    "adafactor": {
        "momentum": Option(False, _boolean,
                           "keep a first moment with beta1 = optimizer.betas[0] (the reference "
                           "harness's default has none: Adafactor's memory saving)"),
        "decay_rate": Option(-0.8, _number(maximum=0.0, strict_maximum=True),
                             "second-moment decay 1 - t^decay_rate"),
        "beta2_cap": Option(0.999, _number(0.0, 1.0, strict_maximum=True),
                            "upper bound of the second-moment decay"),
        "clip_threshold": Option(1.0, _number(0.0, strict_minimum=True), "update RMS clipping threshold"),
        "eps1": Option(1e-30, _number(0.0), "added to squared gradients"),
    },
}

METHODS: tuple[str, ...] = tuple(METHOD_OPTIONS)

# Methods whose options include a projection rank.
LOW_RANK_METHODS = ("galore", "apollo")

# Widths of the paper's LLaMA models -> the rank GaLore and APOLLO used for them.
PAPER_RANKS = {512: 128, 768: 256, 1024: 256, 2048: 512}


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

    def first(*names):
        for name in names:
            value = getattr(config, name, None)
            if isinstance(value, int):
                return value
        return None

    heads = first("num_attention_heads", "n_head")
    return {"dim": first("hidden_size", "n_embd"), "n_heads": heads,
            "n_kv_heads": first("num_key_value_heads") or heads}


def default_rank(model: torch.nn.Module) -> int:
    """The GaLore/APOLLO papers' rank for this width, never above what every matrix allows."""
    matrices = hidden_matrices(model)
    smallest_side = min((min(p.shape) for _, p in matrices), default=1)
    hidden = model_dims(model)["dim"] or smallest_side
    rank = PAPER_RANKS.get(hidden, max(1, hidden // 4))
    return max(1, min(rank, smallest_side))


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------

def _method_problem(name: Any) -> Optional[str]:
    if not isinstance(name, str):
        return f"optimizer.name: expected a string, got {name!r} (known: {', '.join(METHODS)})"
    if name in METHOD_OPTIONS:
        return None
    normalised = name.lower().replace("-", "_")
    hint = difflib.get_close_matches(normalised, METHODS, n=1, cutoff=0.6)
    return (f"optimizer.name: unknown method {name!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(METHODS)})"))


def _option_problems(method: str, options: dict) -> list[str]:
    known = METHOD_OPTIONS[method]
    problems = []
    for key, value in options.items():
        where = f"optimizer.options.{key}"
        if key not in known:
            hint = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            owners = [m for m, opts in METHOD_OPTIONS.items() if key in opts]
            if hint:
                advice = f"did you mean {hint[0]!r}?"
            elif known:
                advice = f"{method} takes: {', '.join(known)}"
            else:
                advice = f"{method} takes no options"
            if owners and not hint:
                advice += f"; {key!r} is an option of {', '.join(owners)}"
            problems.append(f"{where}: unknown option for {method} ({advice})")
            continue
        try:
            known[key].check(value)
        except OptionError as err:
            problems.append(f"{where}: {err}")
    return problems


def _model_problems(method: str, options: dict, model: torch.nn.Module) -> list[str]:
    problems = []
    if method in LOW_RANK_METHODS:
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


def check_optimizer_config(cfg: OptimizerConfig, model: Optional[torch.nn.Module] = None) -> list[str]:
    """Every problem of `cfg` (an OptimizerConfig) as a readable line; [] when it is fine.

    Without a model only the method and its options are checked; with one, also what depends on
    the model (GaLore/APOLLO rank vs. matrix sizes, Adam-mini's dimensions). Never raises.
    """
    try:
        name = getattr(cfg, "name", None)
        problem = _method_problem(name)
        if problem:
            return [problem]
        options = getattr(cfg, "options", None)
        if options is None:
            options = {}
        if not isinstance(options, dict):
            return [f"optimizer.options: expected a mapping of option: value, got {options!r}"]
        problems = _option_problems(name, options)
        if model is not None and not problems:
            problems += _model_problems(name, options, model)
        return problems
    except Exception as err:  # a check must report, not crash the config loader
        return [f"optimizer: could not be checked ({type(err).__name__}: {err})"]


def resolve_options(cfg: OptimizerConfig) -> dict:
    """The method's options with defaults filled in and values converted (cfg must pass the check)."""
    known = METHOD_OPTIONS[cfg.name]
    given = cfg.options or {}
    return {key: (option.check(given[key]) if key in given else option.default)
            for key, option in known.items()}
