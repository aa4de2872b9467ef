"""Which module class each parameter belongs to: name patterns, first match wins.

The five functional classes of the paper are emb, head, qk, vo and mlp; everything unmatched
(norms, biases of norms) is `other` and keeps multiplier 1. Patterns cover the Hugging Face names
of LLaMA, Qwen2 and GPT-2. GPT-2 fuses Q, K and V in one tensor (`attn.c_attn`, a Conv1D whose
last dimension is [Q | K | V]); it is split into a qk segment and a vo segment, so each slice can be
scaled on its own (see `mols.scaling`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch

CLASSES = ("emb", "head", "qk", "vo", "mlp", "other")

# (pattern, class). First match wins; `fused_qkv` marks a [Q|K|V] tensor to split.
PATTERNS: list[tuple[str, str]] = [
    (r"(^|\.)(embed_tokens|wte|wpe)\.", "emb"),
    (r"(^|\.)lm_head\.", "head"),
    (r"\.attn\.c_attn\.", "fused_qkv"),          # GPT-2
    (r"\.self_attn\.(q_proj|k_proj)\.", "qk"),    # LLaMA, Qwen2 (+ Qwen2's biases)
    (r"\.self_attn\.(v_proj|o_proj)\.", "vo"),
    (r"\.attn\.c_proj\.", "vo"),                  # GPT-2's output projection
    (r"\.mlp\.", "mlp"),
    (r".*", "other"),
]

_LAYER = re.compile(r"\.(?:layers|h)\.(\d+)\.")


def _merge(mapping: dict[str, str]) -> Callable[[str, str], str]:
    return lambda cls, name: mapping.get(cls, cls)


def _per_layer(cls: str, name: str) -> str:
    match = _LAYER.search(name)
    return f"layer{int(match.group(1))}.{cls}" if match and cls in ("qk", "vo", "mlp") else cls


# Groupings of the paper's ablation (Table 7), plus per-layer groups (its future work).
# Each maps a base class (and the parameter name) to the class a parameter is scaled as.
GROUPINGS: dict[str, Callable[[str, str], str]] = {
    "modules": _merge({}),                                           # {qk, vo, mlp, emb, head}
    "qk_vo_mlp_emb": _merge({"head": "other"}),
    "attn_mlp_emb": _merge({"qk": "attn", "vo": "attn", "head": "other"}),
    "attn_mlp": _merge({"qk": "attn", "vo": "attn", "emb": "other", "head": "other"}),
    "layers": _per_layer,
}


@dataclass(frozen=True)
class Segment:
    """A parameter, or a slice of one along `dim`, and the class it is scaled as."""
    name: str
    module_class: str
    dim: Optional[int] = None
    start: int = 0
    stop: int = 0

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.dim is None else tensor.narrow(self.dim, self.start, self.stop - self.start)


def base_class(name: str) -> str:
    for pattern, cls in PATTERNS:
        if re.search(pattern, name):
            return cls
    return "other"


def classify(named_parameters: Iterable[tuple[str, torch.Tensor]], grouping: str = "modules",
             only_trainable: bool = True) -> list[Segment]:
    """Segments covering every (trainable) parameter exactly once, in parameter order."""
    if grouping not in GROUPINGS:
        raise ValueError(f"unknown grouping {grouping!r}; known: {', '.join(GROUPINGS)}")
    to_group = GROUPINGS[grouping]
    segments: list[Segment] = []
    for name, param in named_parameters:
        if only_trainable and not param.requires_grad:
            continue
        cls = base_class(name)
        if cls != "fused_qkv":
            segments.append(Segment(name, to_group(cls, name)))
            continue
        dim = param.dim() - 1  # Conv1D weight is (in, 3*d); the bias is (3*d,)
        width = param.shape[dim]
        if width % 3:
            raise ValueError(f"{name}: fused QKV width {width} is not divisible by 3")
        qk, vo = to_group("qk", name), to_group("vo", name)
        if qk == vo:
            segments.append(Segment(name, qk))
        else:
            third = width // 3
            segments += [Segment(name, qk, dim, 0, 2 * third), Segment(name, vo, dim, 2 * third, width)]
    return segments


def grouping_classes(grouping: str) -> set[str]:
    """The classes a grouping scales (per-layer classes by their last part: "layer3.vo" -> "vo")."""
    to_group = GROUPINGS[grouping]
    return {to_group(c, "model.layers.0.x").rsplit(".", 1)[-1] for c in ("emb", "head", "qk", "vo", "mlp")} - {"other"}


def reference_problem(grouping: str, reference: str) -> Optional[str]:
    """Why `reference` cannot anchor the scaling under `grouping`, or None when it can."""
    if reference in ("max", "auto"):
        return None
    classes = grouping_classes(grouping)
    if reference in classes:
        return None
    return (f"{reference!r} is not a class of grouping {grouping!r} "
            f"(use max, auto or one of {', '.join(sorted(classes))})")


MIXED = "mixed"  # the class of a param group holding tensors split across several classes


def param_groups(model: torch.nn.Module, grouping: str = "modules") -> list[dict]:
    """One optimizer param group per module class, each tagged with `module_class`, `grouping` and `names`.

    A tensor split into segments of different classes (GPT-2's c_attn) goes to a group of class
    `mixed` whose learning-rate multiplier is 1; MoLS scales its slices' updates after the step.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = dict(named)
    classes: dict[str, set] = {}
    for seg in classify(named, grouping):
        classes.setdefault(seg.name, set()).add(seg.module_class)
    groups: dict[str, dict] = {}
    for name, _ in named:
        cls = next(iter(classes[name])) if len(classes[name]) == 1 else MIXED
        group = groups.setdefault(cls, {"params": [], "names": [], "module_class": cls, "grouping": grouping})
        group["params"].append(params[name])
        group["names"].append(name)
    return list(groups.values())


def count_by_class(model: torch.nn.Module, grouping: str = "modules") -> dict[str, int]:
    """Parameter counts per class (tied tensors counted once, as named_parameters lists them)."""
    named = list(model.named_parameters())
    params = dict(named)
    counts: dict[str, int] = {}
    for seg in classify(named, grouping, only_trainable=False):
        tensor = params[seg.name]
        n = tensor.numel() if seg.dim is None else tensor.numel() // tensor.shape[seg.dim] * (seg.stop - seg.start)
        counts[seg.module_class] = counts.get(seg.module_class, 0) + n
    return counts
