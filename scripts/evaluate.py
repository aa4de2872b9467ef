#!/usr/bin/env python3
"""Evaluate a run's checkpoint: its validation loss exactly as training computes it, or (fine-tuning
runs above all) accuracy on multiple-choice tasks.

    scripts/evaluate.py runs/quickstart                       # the latest checkpoint
    scripts/evaluate.py runs/quickstart --checkpoint runs/quickstart/checkpoints/step_0000100.pt
    scripts/evaluate.py runs/ft --task choices --data shipped-synthetic          # a local multiple-choice set
    scripts/evaluate.py runs/ft --task mmlu --data cais/mmlu                     # 5-shot, four categories
    scripts/evaluate.py runs/ft --task commonsense --data LLM-Adapters/dataset   # the eight tasks

--task val (the default) rebuilds the model from the checkpoint and the config saved in it, builds
the fixed validation set of that config (data.*, batch train.eval_batch or train.micro_batch, the
vocabulary of the checkpoint's embedding; for a fine-tuning run its validation records) and computes
the token-weighted mean loss as train.py does, at the run's precision (train.precision; auto is fp32
on CPU, bf16-mixed on CUDA) and train.threads. The result goes to RUN_DIR/eval_step_<step>.json
(written atomically); nothing else in the run directory changes. On the device and precision the
run used, the loss of its final checkpoint is summary.json's final_val_loss, bit for bit (a run
evaluated over several ranks sums in another order: equal to about 1e-12).

The multiple-choice tasks score the trained model in fp32 (a fine-tuning run's LoRA adapters merged
into the base weights, as scripts/export_hf.py exports it), with tools/multiple_choice.py:

- choices: a local .jsonl/.json of commonsense-style records (instruction, answer, options, and
  choices/label for log-likelihood), or shipped-synthetic (the shipped set's 80 test records);
- commonsense: LLM-Adapters' eight test sets, DIR/<task>/test.json for boolq, piqa, social_i_qa,
  hellaswag, winogrande, ARC-Challenge, ARC-Easy, openbookqa (those present), as Table 4 scores
  them;
- mmlu: 5-shot (--shots), accuracy per category (STEM, Social Sciences, Humanities, Other) and
  their average over questions, as Table 5; --data a hub dataset with MMLU's columns (cais/mmlu,
  its "all" config: test and dev splits; needs the network or the datasets cache) or a local
  directory holding test.jsonl and dev.jsonl of {subject, question, choices, answer}.

--method generation (the default for choices and commonsense) generates after the training prompt
and extracts the first option name (LLM-Adapters' way); --num-beams sets the decoding: by default
4 beams for commonsense (LLM-Adapters' evaluation script, as Table 4 scores) and greedy (1) for
choices. loglik scores each option's answer line by log-likelihood; both runs the two. MMLU is
always log-likelihood of the answer letters, in the prompt the run trained with: a fine-tuning run
on instruction records is asked in its chat template or Alpaca prompt (data.chat_template, the
tokenizer's template where null), any other run in plain k-shot text ("prompt_format" in the
result). The result goes to RUN_DIR/eval_<task>_step_<step>.json. Bad input exits with code 2.
"""
from __future__ import annotations

import argparse
import json
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
from tools.trained_model import embedding_rows, inference_model_and_tokenizer, load_checkpoint, model_weights

TASKS = ("val", "choices", "commonsense", "mmlu")


def typed_config(tree: dict):
    """The checkpoint's config as the typed Config training used (ConfigError when it no longer fits)."""
    from training.config import validate
    return validate(tree)


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    except RuntimeError:
        raise UserError(f"--device: expected auto, cpu or cuda[:N], got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device: no CUDA device is available here")
    return dev


def _checkpoint(run_dir: Path, checkpoint_path: Path | None):
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    ckpt, state = load_checkpoint(checkpoint_path or run_dir)
    return run_dir, ckpt, state, typed_config(state["config"])


def evaluate_run(run_dir: Path, checkpoint_path: Path | None = None, device: str = "auto") -> tuple[Path, dict]:
    """Evaluate the validation loss; (the result file written, its contents)."""
    from data import get_tokenizer
    from data.instructions import data_pipeline, tokenizer_spec
    from training.evaluation import evaluate
    from training.precision import prepare_model

    run_dir, ckpt, state, cfg = _checkpoint(run_dir, checkpoint_path)
    weights = model_weights(state)
    tokenizer = get_tokenizer(tokenizer_spec(cfg))
    vocab = (cfg.model.vocabulary(len(tokenizer)) if cfg.model.pretrained
             else embedding_rows(cfg.model.size, weights, cfg.model.overrides))
    dev = _device(device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    model, precision, autocast = prepare_model(cfg, vocab, dev)  # as train.py prepares it
    model.load_state_dict(weights)

    _, build_val_batches, _ = data_pipeline(cfg.data)
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


# ------------------------------------------------------------------------------------------------
# Multiple choice
# ------------------------------------------------------------------------------------------------

def choice_records(data: str) -> list[dict]:
    from data.config import SHIPPED_SYNTHETIC
    from data.instructions import load_records, shipped_synthetic

    records = shipped_synthetic("test") if data == SHIPPED_SYNTHETIC else load_records(data)
    for i, record in enumerate(records):
        if "answer" not in record or "options" not in record:
            raise UserError(f"{data}: record {i} has no 'answer' and 'options' (a commonsense-style multiple-choice "
                            f"record, as data.instructions.commonsense_record writes)")
    return records


def score_records(model, tokenizer, records: list[dict], method: str, *, options=None, chat=None,
                  max_new_tokens: int = 32, num_beams: int = 1) -> dict:
    """{"generation": accuracy %, "loglik": accuracy %, "n"} of commonsense-style records, and
    "by_task" the same per record "task" where the records name one (the shipped synthetic set's
    five families)."""
    from tools.multiple_choice import evaluate_generation, evaluate_log_likelihood, items_from_records

    out: dict = {"n": len(records)}
    correct: dict[str, list[bool]] = {}
    if method in ("generation", "both"):
        result = evaluate_generation(model, tokenizer, records, options, max_new_tokens=max_new_tokens,
                                     num_beams=num_beams, use_chat_template=chat)
        out["generation"] = 100.0 * result.acc
        out["answered"] = sum(bool(a) for a in result.answers)  # generations that named an option
        correct["generation"] = result.correct
    if method in ("loglik", "both"):
        scorable = [r for r in records if "choices" in r and "label" in r]
        if len(scorable) < len(records):
            raise UserError("--method loglik needs 'choices' and 'label' in every record (LLM-Adapters' test sets "
                            "have neither: score them by generation)")
        with torch.no_grad():
            result = evaluate_log_likelihood(model, tokenizer, items_from_records(records, tokenizer, chat))
        out["loglik"] = 100.0 * result.acc
        correct["loglik"] = result.correct
    if records and all("task" in r for r in records):
        out["by_task"] = {}
        for task in sorted({r["task"] for r in records}):
            mine = [i for i, r in enumerate(records) if r["task"] == task]
            out["by_task"][task] = {"n": len(mine), **{key: 100.0 * sum(flags[i] for i in mine) / len(mine)
                                                       for key, flags in correct.items()}}
    return out


def commonsense_sets(directory: str, limit: int | None) -> dict[str, list[dict]]:
    """LLM-Adapters' test sets present under `directory` (<task>/test.json), in Table 4's order."""
    from data.instructions import load_records

    order = ["winogrande", "piqa", "social_i_qa", "openbookqa", "hellaswag", "boolq", "ARC-Easy", "ARC-Challenge"]
    sets = {task: load_records(Path(directory) / task / "test.json")[:limit]
            for task in order if (Path(directory) / task / "test.json").is_file()}
    if not sets:
        raise UserError(f"{directory}: none of {', '.join(order)} has a test.json (LLM-Adapters' dataset/ folder)")
    return sets


def mmlu_data(source: str) -> tuple[dict, dict]:
    """({subject: test questions}, {subject: dev questions}) from a local directory (test.jsonl,
    dev.jsonl) or a hub dataset with MMLU's columns (its "all" config)."""
    rows = {}
    if Path(source).is_dir():
        for split in ("test", "dev"):
            path = Path(source) / f"{split}.jsonl"
            if not path.is_file():
                raise UserError(f"{source}: no {split}.jsonl (rows of subject, question, choices, answer)")
            rows[split] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        import datasets
        try:
            loaded = datasets.load_dataset(source, "all")
        except Exception as err:  # offline without a cache, a wrong name
            raise UserError(f"--data {source}: cannot load the MMLU dataset ({str(err).splitlines()[0]})") from None
        rows = {split: list(loaded[split]) for split in ("test", "dev")}
    grouped = []
    for split in ("test", "dev"):
        by_subject: dict[str, list] = {}
        for row in rows[split]:
            by_subject.setdefault(row["subject"], []).append(row)
        grouped.append(by_subject)
    return grouped[0], grouped[1]


COMMONSENSE_BEAMS = 4   # LLM-Adapters' commonsense_evaluate.py decodes with 4 beams (Table 4)


def default_beams(task: str) -> int:
    """Beams when --num-beams is not given: LLM-Adapters' 4 for its commonsense sets, greedy otherwise."""
    return COMMONSENSE_BEAMS if task == "commonsense" else 1


def mmlu_prompt_format(cfg, tokenizer) -> str:
    """The prompt MMLU is asked in: the run's training prompt for instruction records (chat
    template or Alpaca, as data.chat_template resolves with this tokenizer), plain k-shot text
    otherwise."""
    from data.instructions import uses_chat_template

    if not cfg.data.instructions:
        return "plain"
    return "chat" if uses_chat_template(tokenizer, cfg.data.chat_template) else "alpaca"


def evaluate_choices(run_dir: Path, task: str, data: str, *, checkpoint_path: Path | None = None,
                     device: str = "auto", method: str = "generation", shots: int = 5, limit: int | None = None,
                     max_new_tokens: int = 32, num_beams: int | None = None) -> tuple[Path, dict]:
    """Score a run on a multiple-choice task; (the result file written, its contents). `num_beams`
    None: default_beams(task)."""
    from tools.multiple_choice import evaluate_mmlu

    run_dir, ckpt, state, cfg = _checkpoint(run_dir, checkpoint_path)
    dev = _device(device)
    model, tokenizer = inference_model_and_tokenizer(state["config"], model_weights(state))  # LoRA merged
    model.to(dev)
    chat = cfg.data.chat_template if cfg.data.instructions else None
    num_beams = default_beams(task) if num_beams is None else num_beams
    generate = dict(options=None, chat=chat, max_new_tokens=max_new_tokens, num_beams=num_beams)
    start = time.time()
    result: dict = {"task": task, "data": data, "step": int(state.get("step", 0)),
                    "checkpoint": str(Path(ckpt).resolve())}
    if task != "mmlu" and method != "loglik":
        result["num_beams"] = num_beams
    if task == "choices":
        result.update(score_records(model, tokenizer, choice_records(data)[:limit], method, **generate))
    elif task == "commonsense":
        from data.instructions import COMMONSENSE_OPTIONS

        tasks = {}
        for name, records in commonsense_sets(data, limit).items():
            tasks[name] = score_records(model, tokenizer, records, method,
                                        **{**generate, "options": COMMONSENSE_OPTIONS[name]})
        result["tasks"] = tasks
        for key in ("generation", "loglik"):
            values = [t[key] for t in tasks.values() if key in t]
            if values:
                result[f"average_{key}"] = sum(values) / len(values)  # over tasks, as Table 4's Avg.
    else:
        test, dev_questions = mmlu_data(data)
        if limit:
            test = {subject: questions[:limit] for subject, questions in test.items()}
        prompt_format = mmlu_prompt_format(cfg, tokenizer)
        with torch.no_grad():
            result.update(evaluate_mmlu(model, tokenizer, test, dev_questions, shots=shots,
                                        prompt_format=prompt_format))
        result.update({"shots": shots, "prompt_format": prompt_format})
    result.update({"device": str(dev), "seconds": round(time.time() - start, 3),
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    out = run_dir / f"eval_{task}_step_{result['step']:07d}.json"
    write_json_atomic(out, result)
    return out, result


def summary_line(result: dict) -> str:
    if result["task"] == "mmlu":
        return "MMLU " + ", ".join(f"{k} {v:.2f}" for k, v in result["categories"].items())
    if result["task"] == "commonsense":
        parts = [f"{name} " + "/".join(f"{t[k]:.2f}" for k in ("generation", "loglik") if k in t)
                 for name, t in result["tasks"].items()]
        averages = ", ".join(f"average ({k.removeprefix('average_')}) {v:.2f}" for k, v in result.items()
                             if k.startswith("average_"))
        return "commonsense " + ", ".join(parts) + "; " + averages
    scores = ", ".join(f"{k} {result[k]:.2f}%" for k in ("generation", "loglik") if k in result)
    line = f"{result['n']} items: accuracy {scores}"
    if "by_task" in result:
        line += "; by task: " + ", ".join(f"{task} " + "/".join(f"{t[k]:.0f}" for k in ("generation", "loglik") if k in t)
                                          for task, t in result["by_task"].items())
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run directory (the result file is written here)")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint file (default: the run's latest)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")
    parser.add_argument("--task", choices=TASKS, default="val", help="what to evaluate (default: %(default)s)")
    parser.add_argument("--data", help="choices: a .jsonl/.json or shipped-synthetic; commonsense: LLM-Adapters' "
                        "dataset/ folder; mmlu: cais/mmlu or a folder with test.jsonl and dev.jsonl")
    parser.add_argument("--method", choices=["generation", "loglik", "both"], default="generation",
                        help="choices, commonsense: generation + answer extraction, log-likelihood, or both")
    parser.add_argument("--shots", type=int, default=5, help="mmlu: dev examples before each question")
    parser.add_argument("--limit", type=int, help="at most this many questions per set (per subject for mmlu)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="generation: tokens to generate")
    parser.add_argument("--num-beams", type=int, default=None,
                        help=f"generation: beams (1: greedy); default {COMMONSENSE_BEAMS} for commonsense "
                             f"(LLM-Adapters' decoding), 1 for choices")
    args = parser.parse_args(argv)
    if args.task != "val" and not args.data:
        parser.error(f"--task {args.task} needs --data")
    if args.num_beams is not None and args.num_beams < 1:
        parser.error(f"--num-beams must be at least 1, got {args.num_beams}")
    try:
        if args.task == "val":
            out, result = evaluate_run(args.run_dir, args.checkpoint, args.device)
        else:
            out, result = evaluate_choices(args.run_dir, args.task, args.data, checkpoint_path=args.checkpoint,
                                           device=args.device, method=args.method, shots=args.shots,
                                           limit=args.limit, max_new_tokens=args.max_new_tokens,
                                           num_beams=args.num_beams)
    except UserError as err:
        print(err.report(), file=sys.stderr)
        return err.exit_code
    if args.task == "val":
        print(f"step {result['step']}: validation loss {result['val_loss']:.6f}  ppl {result['val_ppl']:.4g}  "
              f"over {result['val_tokens']:,} tokens ({result['precision']} on {result['device']}, "
              f"{result['seconds']:.1f} s); wrote {out}")
    else:
        print(f"step {result['step']}: {summary_line(result)} ({result['seconds']:.1f} s); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
