#!/usr/bin/env python3
"""The CPU fine-tuning demonstration of docs/finetuning.md: its runs, and its results table made
from them, so that the doc's numbers are this command's output and `--check` says when they no
longer are.

    .venv/bin/python scripts/finetune_demo.py                # run what is missing, print the table
    .venv/bin/python scripts/finetune_demo.py --check        # ... and compare it with the doc's (exit 1)

The base model is the quickstart's AdamW run (250 steps), exported; then five settings x seeds 0-2
of configs/finetune_demo.yaml (full and LoRA rank 8, with and without MoLS, full with MoLS's floor
too), each scored on the 80 test records by generation and by log-likelihood (scripts/evaluate.py).
A run with a summary.json and its scores is not run again (--fresh removes them first).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from training.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "finetuning.md"
SEEDS = (0, 1, 2)
MOLS = ["--config", "configs/finetune_mols.yaml"]
LORA = ["--set", "model.lora.rank=8", "--set", "optimizer.lr=5e-3"]
# (run-name prefix, the table's label, the arguments after configs/finetune_demo.yaml)
SETTINGS = [
    ("full", "full, AdamW", []),
    ("full_mols", "full, AdamW + MoLS (paper's rule)", MOLS),
    ("full_mols_floor", "full, + MoLS with the floor min_alpha 1.0", [*MOLS, "--set", "mols.min_alpha=1.0"]),
    ("lora", "LoRA r8, AdamW", LORA),
    ("lora_mols", "LoRA r8, AdamW + MoLS", [*MOLS, *LORA]),
]
HEADER = ("| run (3 seeds) | val loss at step 20 / 40 / 60, seed 0 | final val loss, mean ± sd "
          "| generation acc. (answered) | log-likelihood acc. |\n|---|---|---|---|---|")


def call(args: list[str]) -> None:
    print("+ " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def run_all(out: Path, threads: int | None) -> None:
    common = ["--set", f"run.out_dir={out}"] + (["--set", f"train.threads={threads}"] if threads else [])
    base, exported = out / "base", out / "base_hf"
    if not (base / "summary.json").is_file():
        call(["train.py", "--config", "configs/quickstart.yaml", "--set", "run.name=base", *common])
    if not (exported / "config.json").is_file():
        call(["scripts/export_hf.py", str(base), str(exported)])
    for prefix, _, extra in SETTINGS:
        for seed in SEEDS:
            run = out / f"{prefix}-seed{seed}"
            if not (run / "summary.json").is_file():
                call(["train.py", "--config", "configs/finetune_demo.yaml", *extra, "--set", f"run.seed={seed}",
                      "--set", f"data.shuffle_seed={42 + seed}", "--set", f"run.name={run.name}",
                      "--set", f"model.pretrained={exported}", *common])
            if not list(run.glob("eval_choices_step_*.json")):
                call(["scripts/evaluate.py", str(run), "--task", "choices", "--data", "shipped-synthetic",
                      "--method", "both"])


def per_seed(values: list[float], agreed: str) -> str:
    """`agreed` (the value formatted, then ', every seed') when the seeds agree, else each seed's value."""
    if len(set(values)) == 1:
        return f"{agreed}, every seed"
    return ", ".join(f"{v:g}" for v in values) + "%"


def table(out: Path) -> str:
    lines = [HEADER]
    for prefix, label, _ in SETTINGS:
        runs = [out / f"{prefix}-seed{seed}" for seed in SEEDS]
        missing = [run.name for run in runs if not (run / "summary.json").is_file()]
        if missing:
            raise SystemExit(f"error: not run yet: {', '.join(missing)} (run without --table-only)")
        val = {r["step"]: r["loss"] for r in read_metrics(runs[0] / "metrics.jsonl") if r["kind"] == "val"}
        curve = " / ".join(f"{val[step]:.3f}" for step in (20, 40, 60))
        finals = [json.loads((run / "summary.json").read_text())["final_val_loss"] for run in runs]
        scores = [json.loads(sorted(run.glob("eval_choices_step_*.json"))[-1].read_text()) for run in runs]
        generation, loglik = ([round(s[key], 2) for s in scores] for key in ("generation", "loglik"))
        answered = [s["answered"] for s in scores]
        gen = per_seed(generation, f"{generation[0]:.2f}% ({answered[0]} of {scores[0]['n']})")
        if len(set(generation)) > 1:
            gen += f" (answered {', '.join(map(str, answered))})"
        lines.append(f"| {label} | {curve} | {statistics.fmean(finals):.3f} ± {statistics.stdev(finals):.3f} "
                     f"| {gen} | {per_seed(loglik, f'{loglik[0]:.2f}%')} |")
    return "\n".join(lines)


def doc_table() -> str:
    text = DOC.read_text()
    start = text.index(HEADER.splitlines()[0])
    end = text.index("\n\n", start)
    return text[start:end]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "finetune_demo")
    parser.add_argument("--threads", type=int, help="train.threads of every run (default: the config's)")
    parser.add_argument("--table-only", action="store_true", help="read the runs, run nothing")
    parser.add_argument("--fresh", action="store_true", help="remove the runs first")
    parser.add_argument("--check", action="store_true", help="exit 1 when the table differs from docs/finetuning.md's")
    args = parser.parse_args(argv)
    out = args.out_dir.resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    if not args.table_only:
        run_all(out, args.threads)
    made = table(out)
    print(made)
    if args.check and made != doc_table():
        print(f"\n{DOC.relative_to(ROOT)}'s table differs from the runs' (above): its numbers no longer come out",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
