"""Named model sizes and a builder on top of transformers' own model classes (no weights fetched)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

from mols.groups import count_by_class


@dataclass(frozen=True)
class ModelSize:
    arch: str                     # llama | gpt2 | qwen2
    hidden: int
    intermediate: int
    heads: int
    layers: int
    vocab: Optional[int]          # None: take the tokenizer's vocabulary size
    kv_heads: Optional[int] = None
    tied: bool = False
    max_positions: int = 1024
    note: str = ""


SIZES: dict[str, ModelSize] = {
    # The paper's Table 10, with GaLore's LLaMA configs (vocab 32000, untied, RMSNorm eps 1e-6).
    "llama_60m": ModelSize("llama", 512, 1376, 8, 8, 32000),
    "llama_130m": ModelSize("llama", 768, 2048, 12, 12, 32000),
    "llama_350m": ModelSize("llama", 1024, 2736, 16, 24, 32000),
    # The paper prints 24 heads / 32 layers for 1B, which cannot divide 2048; GaLore's config
    # (32 heads / 24 layers) is what the reference harness trains.
    "llama_1b": ModelSize("llama", 2048, 5461, 32, 24, 32000, note="GaLore's 32 heads/24 layers"),
    "llama_3b": ModelSize("llama", 2560, 6848, 32, 32, 32000),
    "llama_7b": ModelSize("llama", 4096, 11008, 32, 32, 32000),
    # GPT-2 with its own 50,257-token vocabulary (configs/paper/models/gpt2_*.yaml use the gpt2
    # tokenizer): 124.4M and 354.8M parameters, the named sizes.
    "gpt2_125m": ModelSize("gpt2", 768, 3072, 12, 12, 50257, tied=True),
    "gpt2_355m": ModelSize("gpt2", 1024, 4096, 16, 24, 50257, tied=True),
    # Qwen2.5 as its small models are built: grouped-query attention with 2 key/value heads,
    # q/k/v biases, tied embedding; the paper gives only Table 10's shape. With the LLaMA runs'
    # 32,000-row vocabulary (t5-base tokens) it has 360.0M parameters, the named "350M"; Qwen's
    # own 151,936 rows would make it 482.8M (530.6M with full multi-head attention).
    "qwen2_350m": ModelSize("qwen2", 1024, 3328, 16, 26, 32000, kv_heads=2, tied=True,
                            note="GQA 2 kv heads, 32k vocabulary: 360.0M"),
    # Tiny sizes that train in minutes on 2 CPU cores (vocabulary from the tokenizer).
    "llama_tiny": ModelSize("llama", 128, 352, 4, 4, None),
    "llama_micro": ModelSize("llama", 32, 64, 2, 2, None),
    "gpt2_tiny": ModelSize("gpt2", 128, 512, 4, 4, None, tied=True),
    "gpt2_micro": ModelSize("gpt2", 32, 64, 2, 2, None, tied=True),
    "qwen2_tiny": ModelSize("qwen2", 128, 352, 4, 4, None, kv_heads=2, tied=True),
    "qwen2_micro": ModelSize("qwen2", 32, 64, 2, 2, None, kv_heads=2, tied=True),
}


def hf_config(size: ModelSize, vocab_size: int, overrides: dict | None = None):
    common = dict(vocab_size=vocab_size, initializer_range=0.02, use_cache=False)
    if size.arch == "gpt2":
        cfg = GPT2Config(n_embd=size.hidden, n_inner=size.intermediate, n_head=size.heads,
                         n_layer=size.layers, n_positions=size.max_positions, tie_word_embeddings=True,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                         # GPT-2's tanh GELU as one fused kernel; "gelu_new" (the config's
                         # default) is the same function written as several elementwise ops
                         activation_function="gelu_pytorch_tanh",
                         bos_token_id=None, eos_token_id=None, **common)
    else:
        cls = LlamaConfig if size.arch == "llama" else Qwen2Config
        cfg = cls(hidden_size=size.hidden, intermediate_size=size.intermediate,
                  num_attention_heads=size.heads, num_key_value_heads=size.kv_heads or size.heads,
                  num_hidden_layers=size.layers, max_position_embeddings=size.max_positions,
                  rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=size.tied, **common)
    for key, value in (overrides or {}).items():
        setattr(cfg, key, value)
    return cfg


def build_model(size_name: str, vocab_size: int | None = None, *, attn_implementation: str = "sdpa",
                overrides: dict | None = None, device: str | torch.device | None = None) -> torch.nn.Module:
    """A freshly initialised causal LM; `device="meta"` builds shapes only (cheap even for 7B)."""
    size = SIZES[size_name]
    vocab = vocab_size or size.vocab
    if vocab is None:
        raise ValueError(f"{size_name} takes its vocabulary from the tokenizer: pass vocab_size")
    cfg = hf_config(size, vocab, overrides)
    with torch.device(device or "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation)
    return model


def parameter_report(model: torch.nn.Module) -> str:
    counts = count_by_class(model)
    total = sum(counts.values())
    names = {"emb": "embedding", "head": "head", "qk": "attention q/k", "vo": "attention v/o",
             "mlp": "MLP", "other": "other (norms)"}
    lines = [f"parameters: {total / 1e6:.2f}M"]
    for cls in ("emb", "head", "qk", "vo", "mlp", "other"):
        if cls in counts:
            lines.append(f"  {names[cls]:<15} {counts[cls] / 1e6:10.3f}M  {100 * counts[cls] / total:5.1f}%")
    return "\n".join(lines)
