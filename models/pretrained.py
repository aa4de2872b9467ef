"""Pretrained causal LMs for fine-tuning: load one (a local directory or a hub name), add LoRA
adapters with `peft`, and merge them back into a plain transformers model for export.

    model, tokenizer = load_pretrained("meta-llama/Llama-3.2-3B")        # or a local directory
    model = apply_lora(model, rank=8)                                   # Table 11: all linear layers
    ...                                                                 # train (MoLS: mols.param_groups)
    merged = merge_lora(model)                                          # a plain LlamaForCausalLM
    merged.save_pretrained(out); tokenizer.save_pretrained(out)         # loads with from_pretrained

The paper's MMLU fine-tuning (its Table 11, after LlamaFactory) puts LoRA on all linear layers
with rank 4 (Gemma3-1B), 8 (LLaMA-3.2-3B) and 8 (Qwen2.5-7B) and does not give alpha or dropout;
LORA_DEFAULTS takes LlamaFactory's defaults for both (alpha = 2 x rank, dropout 0), which is what
a LlamaFactory run with only the rank set uses. "all-linear" is peft's shorthand: every
nn.Linear (and GPT-2's Conv1D) except the output layer (lm_head), so embeddings, norms and the
head stay frozen under LoRA.

Nothing here downloads by itself: a hub name needs the network or a populated cache (with
HF_HUB_OFFLINE=1 a missing model fails at once); the tests use tiny models saved to a directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch

# Table 11's LoRA rank per model; alpha and dropout are LlamaFactory's defaults (the paper is silent).
LORA_RANKS = {"gemma3_1b": 4, "llama3.2_3b": 8, "qwen2.5_7b": 8}
LORA_DEFAULTS = {"alpha_per_rank": 2.0, "dropout": 0.0, "target_modules": "all-linear"}


def _dtype(dtype: Union[str, torch.dtype, None]) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype: expected one of {', '.join(names)}, got {dtype!r}")
    return names[dtype]


def load_tokenizer(name_or_path: str | Path):
    """The model's tokenizer, with a pad token (its eos token when it defines none: padded
    positions are masked out of the loss by their labels, so the id only fills the slot)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{name_or_path}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_pretrained(name_or_path: str | Path, *, dtype: Union[str, torch.dtype, None] = "float32",
                    attn_implementation: str = "sdpa", device: Union[str, torch.device, None] = None,
                    with_tokenizer: bool = True):
    """(model, tokenizer) of a pretrained causal LM; the tokenizer is None with `with_tokenizer=False`.

    `dtype` float32 by default (fp32 master weights; the trainer's precision casts or autocasts),
    `bfloat16` loads half the bytes. Gemma3 checkpoints with a vision tower load as their text
    model only when the directory is a `Gemma3ForCausalLM` (text-only) export; multimodal ones
    are not supported here. The model is returned in train mode with `use_cache` off."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=_dtype(dtype),
                                                 attn_implementation=attn_implementation)
    if device is not None:
        model = model.to(device)
    model.config.use_cache = False
    model.train()
    tokenizer = load_tokenizer(name_or_path) if with_tokenizer else None
    return model, tokenizer


def lora_alpha_for(rank: int, alpha: Optional[float] = None) -> float:
    return float(alpha) if alpha is not None else LORA_DEFAULTS["alpha_per_rank"] * rank


def apply_lora(model: torch.nn.Module, rank: int, alpha: Optional[float] = None, dropout: float = 0.0,
               target_modules: Union[str, Sequence[str]] = "all-linear", *, seed: Optional[int] = None):
    """`model` wrapped by peft with fresh LoRA adapters (a `peft.PeftModel`); only the adapter
    matrices are trainable. alpha defaults to 2 x rank (LlamaFactory's default; Table 11 gives the
    ranks only). `seed`, when given, fixes the adapters' random initialisation (lora_A is random,
    lora_B zero, so the wrapped model starts with the base model's outputs exactly).

    The parameter names MoLS sees are peft's, e.g.
    `base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight`; mols.groups puts each
    adapter matrix in the class of the layer it adapts."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(r=rank, lora_alpha=lora_alpha_for(rank, alpha), lora_dropout=dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_peft_model(model, config)
    return get_peft_model(model, config)


def is_peft_model(model: torch.nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency of fine-tuning only
        return False
    return isinstance(model, PeftModel)


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """The base transformers model with every adapter's update added into its weights, adapters
    removed: `save_pretrained` then writes a plain checkpoint that `AutoModelForCausalLM.
    from_pretrained` loads with no peft installed. A model without adapters is returned as is.
    peft merges in place: the PeftModel passed in must not be trained further afterwards."""
    if not is_peft_model(model):
        return model
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    return merged


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, tied tensors once."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def pretrained_vocabulary(name_or_path: str | Path) -> int:
    """The embedding rows of a pretrained model, from its config alone (nothing else is loaded)."""
    from transformers import AutoConfig

    from configs import UserError

    try:
        config = AutoConfig.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        raise UserError(f"model.pretrained: cannot read the config of {name_or_path!r} ({str(err).splitlines()[0]})") \
            from None
    return int(config.get_text_config().vocab_size)


# The shapes of the paper's fine-tuning models (from their config.json), so that a dry run, the
# memory check and a sweep's cost can count their parameters and LoRA adapters on a machine that
# has not downloaded them (nothing here downloads). Their totals match the model cards (tested).
PAPER_MODEL_SHAPES = {
    "google/gemma-3-1b-pt": dict(model_type="gemma3_text", vocab_size=262144, hidden_size=1152, intermediate_size=6912,
                                 num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                                 tie_word_embeddings=True),
    "meta-llama/Llama-3.2-1B": dict(model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                                    num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                    tie_word_embeddings=True),
    "meta-llama/Llama-3.2-3B": dict(model_type="llama", vocab_size=128256, hidden_size=3072, intermediate_size=8192,
                                    num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, head_dim=128,
                                    tie_word_embeddings=True),
    "Qwen/Qwen2.5-7B": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                            num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                            tie_word_embeddings=False),
}


def pretrained_config(name_or_path: str | Path):
    """(the transformers config of a pretrained model, "") from its config.json where it is here
    (a local directory, or a hub name in the cache; never downloaded), else from
    PAPER_MODEL_SHAPES; (None, why) when neither has it."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(name_or_path), local_files_only=True), ""
    except (OSError, ValueError) as err:
        shape = dict(PAPER_MODEL_SHAPES.get(str(name_or_path), {}))
        if not shape:
            return None, f"its config.json is not here ({str(err).splitlines()[0][:160]})"
        return AutoConfig.for_model(shape.pop("model_type"), **shape), ""


def meta_finetuning_model(model_cfg):
    """(the model a fine-tuning run trains, on the meta device: shapes only, with its LoRA
    adapters, "") or (None, why it cannot be built); `model_cfg` the config's model section."""
    from transformers import AutoModelForCausalLM

    config, why = pretrained_config(model_cfg.pretrained)
    if config is None:
        return None, why
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    lora = model_cfg.lora
    if lora.enabled:
        model = apply_lora(model, lora.rank, lora.alpha, lora.dropout, lora.target_modules)
    return model, ""


def build_finetuning_model(model_cfg, *, seed: int, device: Union[str, torch.device, None] = None) -> torch.nn.Module:
    """The model a fine-tuning run trains (`model_cfg` the config's model section): the pretrained
    model in fp32 on `device`, wrapped with LoRA adapters (initialised from `seed`) when
    model.lora.rank > 0."""
    from configs import UserError

    try:
        model, _ = load_pretrained(model_cfg.pretrained, dtype="float32", device=device, with_tokenizer=False,
                                   attn_implementation=model_cfg.attn_implementation)
    except OSError as err:  # a missing directory, no network for a hub name
        raise UserError(f"model.pretrained: cannot load {model_cfg.pretrained!r} ({str(err).splitlines()[0]})") \
            from None
    lora = model_cfg.lora
    if lora.enabled:
        model = apply_lora(model, lora.rank, lora.alpha, lora.dropout, lora.target_modules, seed=seed)
    return model


def describe_finetuning(model: torch.nn.Module, model_cfg) -> str:
    """One line for the run log: what is fine-tuned, and how many parameters train."""
    trainable, total = trainable_parameters(model)
    lora = model_cfg.lora
    how = (f"LoRA rank {lora.rank}, alpha {lora_alpha_for(lora.rank, lora.alpha):g}, dropout {lora.dropout:g}, "
           f"on {lora.target_modules}" if lora.enabled else "full fine-tuning")
    base = model.get_base_model() if is_peft_model(model) else model
    return (f"fine-tuning {model_cfg.pretrained} ({type(base).__name__}): {how}; "
            f"{trainable / 1e6:,.3f}M of {total / 1e6:,.3f}M parameters train")


def finetuned_model(model_cfg, weights: dict, *, seed: int = 0) -> torch.nn.Module:
    """A fine-tuning run's trained model as a plain transformers model (LoRA merged into the base
    weights), fp32, in eval mode with `use_cache` on: the pretrained model rebuilt as the run built
    it (`model_cfg` its model section), with the checkpoint's `weights` loaded (all of them: the
    frozen base weights too, so a changed base model fails here rather than drifting)."""
    from configs import UserError

    model = build_finetuning_model(model_cfg, seed=seed, device="cpu")
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise UserError(f"the checkpoint does not fit {model_cfg.pretrained} with this LoRA setting ({first})") from None
    merged = merge_lora(model)
    merged.config.use_cache = True
    return merged.float().eval()
