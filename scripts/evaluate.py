#!/usr/bin/env python3
"""Evaluate a run's checkpoint on its validation set, exactly as training evaluates, and nothing else.

    scripts/evaluate.py runs/quickstart                       # the latest checkpoint
    scripts/evaluate.py runs/quickstart --checkpoint runs/quickstart/checkpoints/step_0000100.pt

Rebuilds the model from the checkpoint and the config saved in it, builds the fixed validation set
of that config (data.*, batch train.eval_batch or train.micro_batch, the vocabulary of the
checkpoint's embedding) and computes the token-weighted mean loss as train.py does, at the run's
precision (train.precision; auto is fp32 on CPU, bf16-mixed on CUDA) and train.threads. The result
goes to RUN_DIR/eval_step_<step>.json (written atomically); nothing else in the run directory
changes. On the device and precision the run used, the loss of its final checkpoint is
summary.json's final_val_loss, bit for bit (a run evaluated over several ranks sums in another
order: equal to about 1e-12). Bad input exits with code 2.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from configs import UserError, write_json_atomic
from training.inference import embedding_rows, load_checkpoint, model_weights


def typed_config(tree: dict):
    """The checkpoint's config as the typed Config training used (ConfigError when it no longer fits)."""
    from training.config import validate
    return validate(tree)


def evaluate_run(run_dir: Path, checkpoint_path: Path | None = None, device: str = "auto") -> tuple[Path, dict]:
    """Evaluate; (the result file written, its contents)."""
    from data import build_val_batches, get_tokenizer
    from training.evaluation import evaluate
    from training.precision import prepare_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    ckpt, state = load_checkpoint(checkpoint_path or run_dir)
    cfg = typed_config(state["config"])
    weights = model_weights(state)
    vocab = embedding_rows(cfg.model.size, weights, cfg.model.overrides)

    try:
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    except RuntimeError:
        raise UserError(f"--device: expected auto, cpu or cuda[:N], got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device: no CUDA device is available here")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    model, precision, autocast = prepare_model(cfg, vocab, dev)  # as train.py prepares it
    model.load_state_dict(weights)

    tokenizer = get_tokenizer(cfg.data.tokenizer)
    batch_size = cfg.train.eval_batch or cfg.train.micro_batch
    val_batches = build_val_batches(cfg.data, tokenizer, rank=0, world_size=1, batch_size=batch_size,
                                    vocab_limit=vocab)
    start = time.time()
    loss, tokens = evaluate(model, val_batches, dev, autocast)  # as train.py evaluates
    step = int(state.get("step", 0))
    result = {"step": step, "checkpoint": str(Path(ckpt).resolve()), "val_loss": loss,
              "val_ppl": math.exp(min(loss, 50)), "val_tokens": tokens, "val_sequences":
              sum(len(b["input_ids"]) for b in val_batches), "batch_size": batch_size,
              "device": str(dev), "precision": precision, "threads": torch.get_num_threads(),
              "seconds": round(time.time() - start, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out = run_dir / f"eval_step_{step:07d}.json"
    write_json_atomic(out, result)
    return out, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run directory (the result file is written here)")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint file (default: the run's latest)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")
    args = parser.parse_args(argv)
    try:
        out, result = evaluate_run(args.run_dir, args.checkpoint, args.device)
    except UserError as err:
        print(err.report(), file=sys.stderr)
        return err.exit_code
    print(f"step {result['step']}: validation loss {result['val_loss']:.6f}  ppl {result['val_ppl']:.4g}  "
          f"over {result['val_tokens']:,} tokens ({result['precision']} on {result['device']}, "
          f"{result['seconds']:.1f} s); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
