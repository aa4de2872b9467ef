"""Which module class each parameter belongs to: name patterns, first match wins.

The five functional classes of the paper are emb, head, qk, vo and mlp; everything unmatched
(norms, biases of norms) is `other` and keeps multiplier 1. Patterns cover the Hugging Face names
of LLaMA (LLaMA-3.2 included), Qwen2 (Qwen2.5 included), Gemma3's text model and GPT-2. GPT-2 fuses
Q, K and V in one tensor (`attn.c_attn`, a Conv1D whose last dimension is [Q | K | V]); it is split
into a qk segment and a vo segment, so each slice can be scaled on its own (see `mols.scaling`).

Gemma3 (`Gemma3ForCausalLM`) has the LLaMA names plus more norms: `self_attn.q_norm` / `k_norm`
(per-head RMSNorm of queries and keys) and `pre_feedforward_layernorm` / `post_feedforward_layernorm`
beside `input_layernorm` / `post_attention_layernorm`. Like every norm they are `other`; q_norm and
k_norm sit inside `self_attn` but are not projections, so they are not `qk`.

Fine-tuning with LoRA (peft): an adapter matrix takes the class of the layer it adapts, so
`param_groups` and the SNR estimator work unchanged on a peft model. `adapted_name` maps peft's
name (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight`) to the adapted
layer's (`model.layers.0.self_attn.q_proj.lora.weight`), which the patterns then classify: q_proj's
and k_proj's A and B are `qk`, v_proj's and o_proj's `vo`, gate/up/down_proj's `mlp`, an
embedding's `emb`, and a copy of the head trained in full (peft's `modules_to_save`) `head`. The
frozen base weights are skipped like any parameter that does not require a gradient. LoRA on
GPT-2's fused c_attn cannot be split by class (its A matrix feeds Q, K and V alike) and is refused.
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

# peft's parts of a parameter name: the wrapper prefix, the wrapped layer, the adapter matrices
# (followed by the adapter's name, "default" unless chosen) and modules_to_save's copies.
_PEFT_PREFIX = re.compile(r"^base_model\.model\.")
_PEFT_WRAPPED = re.compile(r"\.(?:base_layer|original_module|modules_to_save\.[^.]+)(?=\.|$)")
_PEFT_ADAPTER = re.compile(r"\.(?:lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
                           r"\.[^.]+(?=\.|$)")


def adapted_name(name: str) -> str:
    """The name of the layer a parameter belongs to, with peft's wrapping taken out: an adapter
    matrix gets `.lora` after the layer it adapts. Names without peft parts are returned as they are."""
    name = _PEFT_PREFIX.sub("", name)
    name = _PEFT_WRAPPED.sub("", name)
    return _PEFT_ADAPTER.sub(".lora", name)


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
    """The class of a parameter by its name (a peft adapter's: its layer's; see `adapted_name`)."""
    name = adapted_name(name)
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
        if re.search(r"\.lora(\.|$)", adapted_name(name)):
            raise ValueError(f"{name}: a LoRA adapter of a fused QKV layer has no single module class "
                             "(its A matrix feeds Q, K and V); leave c_attn out of the LoRA target modules")
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


def count_by_class(model: torch.nn.Module, grouping: str = "modules", only_trainable: bool = False) -> dict[str, int]:
    """Parameter counts per class (tied tensors counted once, as named_parameters lists them);
    only_trainable: those that train (under LoRA the adapters, not the frozen weights)."""
    named = list(model.named_parameters())
    params = dict(named)
    counts: dict[str, int] = {}
    for seg in classify(named, grouping, only_trainable=only_trainable):
        tensor = params[seg.name]
        n = tensor.numel() if seg.dim is None else tensor.numel() // tensor.shape[seg.dim] * (seg.stop - seg.start)
        counts[seg.module_class] = counts.get(seg.module_class, 0) + n
    return counts
