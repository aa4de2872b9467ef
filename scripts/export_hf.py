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

A fine-tuning run (model.pretrained) exports the pretrained model's class and config with the
trained weights; LoRA adapters are merged into the base weights (peft's merge_and_unload), so the
directory is a plain checkpoint that loads with `from_pretrained` without peft. Its tokenizer is
the one the run used (the pretrained model's own unless data.tokenizer named another), with
model_max_length the run's data.cutoff_len when it trained on instruction records.

Bad input (a missing path, a file that is not a checkpoint, an empty run directory) exits with
code 2 and a one-line message.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from configs import UserError
from tools.trained_model import (build_inference_model, get_run_tokenizer, inference_model_and_tokenizer,
                                load_checkpoint, model_weights, special_token_ids)


def finetuned_export_model(config: dict, weights: dict):
    """(the merged model, its tokenizer, the longest sequence it trained on) of a fine-tuning run."""
    from training.config import validate

    model, tokenizer = inference_model_and_tokenizer(config, weights)
    for key, value in special_token_ids(tokenizer).items():
        if getattr(model.config, key, None) is None:  # the pretrained config's own ids win
            setattr(model.config, key, value)
    return model, tokenizer, validate(config).data.sequence_tokens


def export(source: Path, out: Path) -> dict:
    """Write the Hugging Face directory `out` from a run directory or checkpoint; what was written."""
    ckpt, state = load_checkpoint(source)
    config = state["config"]
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not an empty directory")
    weights = model_weights(state)
    finetuned = bool((config.get("model") or {}).get("pretrained"))
    if finetuned:
        model, tokenizer, seq_len = finetuned_export_model(config, weights)
    else:
        tokenizer = get_run_tokenizer(config)
        model = build_inference_model(config, weights, tokenizer)
        seq_len = (config.get("data") or {}).get("seq_len")
    vocab = model.get_input_embeddings().weight.shape[0]
    notes = []
    if len(tokenizer) > vocab:
        notes.append(f"the tokenizer has {len(tokenizer)} tokens, the model {vocab} rows: ids >= {vocab} "
                     f"(training mapped them to unk/eos) must not reach the model")
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(out, safe_serialization=True)
    if isinstance(seq_len, int):
        tokenizer.model_max_length = seq_len
    tokenizer.save_pretrained(out)
    for written in out.iterdir():  # safetensors are written 0600; the directory is meant to be shared
        written.chmod(0o644)
    (out / "mols_export.json").write_text(json.dumps({
        "source_checkpoint": str(ckpt.resolve()), "step": state.get("step"),
        "model_size": None if finetuned else config["model"]["size"],
        "tokenizer": getattr(tokenizer, "name_or_path", None) or config["data"]["tokenizer"], "seq_len": seq_len,
        "vocab_size": int(vocab), **special_token_ids(tokenizer),
        **({"pretrained": config["model"]["pretrained"], "lora": config["model"].get("lora"),
            "lora_merged": bool((config["model"].get("lora") or {}).get("rank"))} if finetuned else {})},
        indent=2) + "\n")
    size = config["model"]["pretrained"] if finetuned else config["model"]["size"]
    return {"checkpoint": ckpt, "step": state.get("step"), "out": out, "vocab": int(vocab),
            "size": size, "special": special_token_ids(tokenizer), "notes": notes}


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
