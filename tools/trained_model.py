"""A trained run's model outside training: read its checkpoint and rebuild the model for inference.

Export, evaluation and generation (scripts/export_hf.py, evaluate.py, generate.py) all read runs
through these functions, so each reads them the same way.
"""
from __future__ import annotations

from pathlib import Path

import torch

from configs import UserError
from training import checkpoint


def load_checkpoint(path: Path) -> tuple[Path, dict]:
    """(the checkpoint file, its contents), with the model weights and config checked to be there."""
    ckpt = checkpoint.resolve(path)
    state = checkpoint.load(ckpt)  # a UserError naming the file when it cannot be read
    if checkpoint.is_sharded_checkpoint(ckpt):  # a sharded run's: its model gathered here, in one process
        state = consolidated(ckpt, state)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) \
            or not isinstance(state.get("config"), dict):
        raise UserError(f"{ckpt}: not a training checkpoint of this project (no model weights and config)")
    config = state["config"]
    for section, key in (("model", "size"), ("data", "tokenizer")):
        if not isinstance(config.get(section), dict) or key not in config[section]:
            raise UserError(f"{ckpt}: the checkpoint's config has no {section}.{key}")
    return ckpt, state


def consolidated(path: Path, trainer: dict) -> dict:
    """A sharded checkpoint (step_N.dcp) as a one-file checkpoint holds it, without optimizer state:
    what `python -m tools.consolidate` writes, and what export and evaluation read."""
    state = {key: value for key, value in trainer.items() if key not in ("sharded", "ranks")}
    state["model"] = checkpoint.sharded_model_weights(path)
    state["optimizer"] = None
    return state


def model_weights(state: dict) -> dict[str, torch.Tensor]:
    """The model's state dict, without the prefixes of torch.compile or DDP if a caller saved those."""
    weights = {}
    for name, tensor in state["model"].items():
        for prefix in ("_orig_mod.", "module."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        weights[name] = tensor
    return weights


def embedding_rows(size: str, weights: dict, overrides: dict | None = None) -> int:
    """The vocabulary the run trained with: the rows of its input embedding in the checkpoint."""
    from models import build_model

    probe = build_model(size, 8, overrides=overrides, device="meta")
    embedding = probe.get_input_embeddings().weight
    name = next(n for n, p in probe.named_parameters() if p is embedding)
    if name not in weights:
        raise UserError(f"the checkpoint holds no {name} for model size {size}")
    return int(weights[name].shape[0])


def special_token_ids(tokenizer) -> dict:
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def hf_config_for(config: dict, weights: dict, tokenizer=None):
    """The transformers config of the run's model, ready for inference (use_cache on, the
    tokenizer's special-token ids)."""
    from models import SIZES
    from models.build import hf_config

    model = config["model"]
    size = model["size"]
    if size not in SIZES:
        raise UserError(f"the checkpoint's model.size {size!r} is not a known size (models.SIZES)")
    overrides = model.get("overrides") or {}
    vocab = embedding_rows(size, weights, overrides)
    cfg = hf_config(SIZES[size], vocab, overrides)
    cfg.use_cache = True
    if tokenizer is not None:
        for key, value in special_token_ids(tokenizer).items():
            setattr(cfg, key, value)
    return cfg


def build_inference_model(config: dict, weights: dict, tokenizer=None, attn_implementation: str | None = None):
    """The run's model with the checkpoint's weights, in eval mode, fp32."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    cfg = hf_config_for(config, weights, tokenizer)
    attn = attn_implementation or config["model"].get("attn_implementation") or "sdpa"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")} if cfg.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise UserError(f"the checkpoint does not fit model size {config['model']['size']}: missing "
                        f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}")
    if cfg.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = GenerationConfig.from_model_config(cfg)
    return model.float().eval()


def inference_model_and_tokenizer(config: dict, weights: dict):
    """(the run's model for inference, fp32 in eval mode, the tokenizer it trained with) for any
    run: a pre-training run's model built from model.size (build_inference_model), a fine-tuning
    run's (model.pretrained) the pretrained model rebuilt as the run built it with the trained
    weights, LoRA merged (models.pretrained.finetuned_model), and the tokenizer it used."""
    if not (config.get("model") or {}).get("pretrained"):
        tokenizer = get_run_tokenizer(config)
        return build_inference_model(config, weights, tokenizer), tokenizer
    from data import get_tokenizer
    from data.instructions import tokenizer_spec
    from models.pretrained import finetuned_model
    from training.config import validate

    cfg = validate(config)
    return finetuned_model(cfg.model, weights, seed=cfg.run.seed), get_tokenizer(tokenizer_spec(cfg))


def get_run_tokenizer(config: dict):
    from data import get_tokenizer

    return get_tokenizer(config["data"]["tokenizer"])
