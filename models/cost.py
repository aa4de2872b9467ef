"""What a model costs, one definition each: its shape (from any of its transformers configs),
parameters, and training FLOPs per token. MFU (training/throughput.py), `--dry-run`
(training/dry_run.py), the optimizers' model facts and the sweeps' GPU-hours all read these.

FLOPs per token (PaLM's appendix B, as nanoGPT): 6 N for the matrix multiplies of forward and
backward over N parameters (the input embedding lookup excluded: it multiplies nothing, unless it
is tied to the head), plus 12 L d T for attention scores and values (L layers, width d = heads x
head size, T tokens of context). Gradient checkpointing recomputes the forward: not counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shape:
    layers: int
    width: int                  # hidden size
    heads: int
    kv_heads: int


def model_shape(config) -> Shape:
    """LLaMA/Qwen2 names (num_hidden_layers, hidden_size, ...) or GPT-2's (n_layer, n_embd, n_head)."""
    def first(*names):
        for name in names:
            value = getattr(config, name, None)
            if isinstance(value, int):
                return value
        raise ValueError(f"{type(config).__name__} has none of {names}")

    heads = first("num_attention_heads", "n_head")
    kv_heads = getattr(config, "num_key_value_heads", None)
    return Shape(first("num_hidden_layers", "n_layer"), first("hidden_size", "n_embd"), heads,
                 kv_heads if isinstance(kv_heads, int) else heads)


def parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding and head count once); meta-device models work."""
    return sum(p.numel() for p in model.parameters())


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    shape = model_shape(model.config)
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    matmul_parameters = parameters(model) - (0 if tied else embedding.numel())
    return 6 * matmul_parameters + 12 * shape.layers * shape.width * seq_len
