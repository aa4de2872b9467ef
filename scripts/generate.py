#!/usr/bin/env python3
"""Sample text from a trained model: a run directory (its latest checkpoint), a checkpoint file, or a
directory written by scripts/export_hf.py. Uses transformers' `generate`.

    scripts/generate.py runs/quickstart --prompt "The history of" --max-new-tokens 40
    scripts/generate.py exported/quickstart --prompt "Once" --temperature 0.8 --top-k 40 --seed 1
    scripts/generate.py runs/quickstart --temperature 0        # greedy

A run is read as scripts/export_hf.py and evaluate.py read it (tools/trained_model.py): a
fine-tuning run (model.pretrained) is the pretrained model with its trained weights, LoRA adapters
merged, and the tokenizer it trained with. The prompt is passed as written (an instruction-tuned
run answers best in the prompt it trained on: data.chat_template or the Alpaca prompt).

The prompt is encoded as training encoded documents (no special tokens added); an empty prompt
starts after an end-of-document token, where every training document starts. Generation stops
at the tokenizer's eos token or after --max-new-tokens. Bad input exits with code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from configs import UserError
from tools.trained_model import inference_model_and_tokenizer, load_checkpoint, model_weights


def load_model(source: Path):
    """(model in eval mode, tokenizer, a short description) from a run, checkpoint or export."""
    source = Path(source)
    if source.is_dir() and (source / "config.json").is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer
        try:
            model = AutoModelForCausalLM.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as err:  # a broken or foreign directory
            reason = (str(err).strip().splitlines() or [""])[0]
            raise UserError(f"{source}: cannot load it as a Hugging Face model ({type(err).__name__}: {reason})") \
                from None
        return model.eval(), tokenizer, f"{source} ({type(model).__name__})"
    ckpt, state = load_checkpoint(source)
    model, tokenizer = inference_model_and_tokenizer(state["config"], model_weights(state))
    model_cfg = state["config"]["model"]
    what = model_cfg.get("pretrained") or model_cfg["size"]
    return model, tokenizer, f"{ckpt} (step {state.get('step')}, {what})"


def generate(model, tokenizer, prompt: str, *, max_new_tokens: int = 50, temperature: float = 1.0,
             top_k: int = 50, seed: int = 0) -> tuple[list[int], list[int]]:
    """(prompt ids, new ids)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    if not ids:
        start = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
        ids = [start]
    vocab = model.get_input_embeddings().weight.shape[0]
    if max(ids) >= vocab:
        raise UserError(f"the prompt has token ids >= the model's vocabulary ({vocab})")
    input_ids = torch.tensor([ids])
    torch.manual_seed(seed)
    options = dict(do_sample=True, temperature=temperature, top_k=top_k) if temperature > 0 else dict(do_sample=False)
    if tokenizer.eos_token_id is not None:  # the tokenizer's, also where a pretrained config names another
        options["eos_token_id"] = tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **options)
    return ids, out[0, len(ids):].tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a run directory, a checkpoint file or an exported directory")
    parser.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy decoding")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1 or args.temperature < 0 or args.top_k < 0:
        print("error: --max-new-tokens must be positive, --temperature and --top-k not negative", file=sys.stderr)
        return 2
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        model, tokenizer, what = load_model(args.source)
        prompt_ids, new_ids = generate(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                                       temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    except UserError as err:
        print(err.report(), file=sys.stderr)
        return err.exit_code
    print(f"# {what}; {len(new_ids)} new tokens, temperature {args.temperature}, top-k {args.top_k}, "
          f"seed {args.seed}", file=sys.stderr)
    print(args.prompt + tokenizer.decode(new_ids, skip_special_tokens=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
