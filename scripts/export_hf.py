#!/usr/bin/env python3
"""Export a run (its latest checkpoint) or one checkpoint as a Hugging Face model directory.

    scripts/export_hf.py runs/quickstart exported/quickstart
    scripts/export_hf.py runs/quickstart/checkpoints/step_0000250.pt exported/quickstart

The directory loads without this project:

    model = transformers.AutoModelForCausalLM.from_pretrained("exported/quickstart")
    tokenizer = transformers.AutoTokenizer.from_pretrained("exported/quickstart")

It holds the weights (model.safetensors), config.json and generation_config.json (use_cache on,
bos/eos/pad ids taken from the tokenizer the run trained with) and that tokenizer, saved with
`save_pretrained` (its model_max_length is the run's data.seq_len, the longest context the model
was trained on). The model is the training model exactly: same transformers class and config,
same weights in fp32, so its logits are the training model's.

Bad input (a missing path, a file that is not a checkpoint, an empty run directory) exits with
code 2 and a one-line message.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from configs import UserError
from training import checkpoint


def find_checkpoint(path: Path) -> Path:
    """A checkpoint file itself, or the latest `checkpoints/step_*.pt` of a run directory."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        found = checkpoint.latest_checkpoint(path / "checkpoints")
        if found is None:
            raise UserError(f"{path}: no checkpoints/step_*.pt in this directory (is it a run directory?)")
        return found
    raise UserError(f"{path}: no such run directory or checkpoint file")


def load_checkpoint(path: Path) -> tuple[Path, dict]:
    """(the checkpoint file, its contents), with the model weights and config checked to be there."""
    ckpt = find_checkpoint(path)
    state = checkpoint.load(ckpt)  # a UserError naming the file when it cannot be read
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) \
            or not isinstance(state.get("config"), dict):
        raise UserError(f"{ckpt}: not a training checkpoint of this project (no model weights and config)")
    config = state["config"]
    for section, key in (("model", "size"), ("data", "tokenizer")):
        if not isinstance(config.get(section), dict) or key not in config[section]:
            raise UserError(f"{ckpt}: the checkpoint's config has no {section}.{key}")
    return ckpt, state


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


def get_run_tokenizer(config: dict):
    from data import get_tokenizer

    return get_tokenizer(config["data"]["tokenizer"])


def export(source: Path, out: Path) -> dict:
    """Write the Hugging Face directory `out` from a run directory or checkpoint; what was written."""
    ckpt, state = load_checkpoint(source)
    config = state["config"]
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not an empty directory")
    tokenizer = get_run_tokenizer(config)
    weights = model_weights(state)
    model = build_inference_model(config, weights, tokenizer)
    vocab = model.get_input_embeddings().weight.shape[0]
    notes = []
    if len(tokenizer) > vocab:
        notes.append(f"the tokenizer has {len(tokenizer)} tokens, the model {vocab} rows: ids >= {vocab} "
                     f"(training mapped them to unk/eos) must not reach the model")
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(out, safe_serialization=True)
    seq_len = (config.get("data") or {}).get("seq_len")
    if isinstance(seq_len, int):
        tokenizer.model_max_length = seq_len
    tokenizer.save_pretrained(out)
    for written in out.iterdir():  # safetensors are written 0600; the directory is meant to be shared
        written.chmod(0o644)
    (out / "mols_export.json").write_text(json.dumps({
        "source_checkpoint": str(ckpt.resolve()), "step": state.get("step"), "model_size": config["model"]["size"],
        "tokenizer": config["data"]["tokenizer"], "seq_len": seq_len, "vocab_size": int(vocab),
        **special_token_ids(tokenizer)}, indent=2) + "\n")
    return {"checkpoint": ckpt, "step": state.get("step"), "out": out, "vocab": int(vocab),
            "size": config["model"]["size"], "special": special_token_ids(tokenizer), "notes": notes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a run directory (its latest checkpoint) or a checkpoint file")
    parser.add_argument("out", type=Path, help="the directory to write (new or empty)")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    try:
        done = export(args.source, args.out)
    except UserError as err:
        print(err.report(), file=sys.stderr)
        return err.exit_code
    special = ", ".join(f"{k.removesuffix('_token_id')} {v}" for k, v in done["special"].items())
    print(f"exported {done['checkpoint']} (step {done['step']}, {done['size']}, vocab {done['vocab']}) "
          f"to {done['out']}/; special tokens: {special}")
    for note in done["notes"]:
        print(f"note: {note}")
    print(f"load it with transformers.AutoModelForCausalLM.from_pretrained({str(done['out'])!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
