#!/usr/bin/env python3
"""MoLS against a tuned AdamW at the largest budget this CPU affords (docs/evidence.md).

    python scripts/evidence_study.py                      # every phase; rerun to continue
    python scripts/evidence_study.py --phases grid,seeds  # some of them
    python scripts/evidence_study.py --plan               # what would run, what is done
    python -m reproduce results runs/evidence --baseline adamw   # the analysis (docs/evidence.md)

Arms, each on its own learning-rate grid (configs/evidence.yaml: llama_tiny, one pass over the
embedded training split, 4.26M tokens):
  adamw       AdamW
  mols        AdamW + MoLS, the paper's rule (no floor on alpha)
  mols_floor  AdamW + MoLS with the project's floor (mols.min_alpha 1: only boost)

Phases (each picks up what the earlier ones decided):
  grid     every arm at every learning rate of --lrs, seed 0; when an arm's best rate (lowest
           validation loss on the *selection* half, data.val_selection) is at an end of the grid,
           the grid is extended one step (x2 or /2) on that side, up to --max-extensions times
  seeds    each arm's best rate with seeds 1 and 2 (seed s: run.seed s, data.shuffle_seed 42 + s)
  budgets  AdamW at its best rate with 1/8, 1/4 and 1/2 of the steps, seeds 0-2: the loss-vs-data
           curve that the speed-up is read from
  bf16     AdamW and the better MoLS arm at their best rates in the paper's precision
           (train.precision: bf16-pure, weights and optimizer state in bf16), seeds 0-2
  bf16_budgets  AdamW in bf16-pure at 1/8, 1/4 and 1/2 of the steps, seeds 0-2: the speed-up in
           the paper's precision
  bf16_grid  tuned again in bf16-pure, seed 0: AdamW and the bf16 MoLS arm at the full budget, and
           AdamW at each shorter budget, on half, once and twice the fp32 rate, extended like the
           grid while the best is at an end (does a rate tuned in bf16 change the answer? do the
           shorter budgets want another rate than the full one?)

Every run is `train.py --config configs/evidence.yaml --set ...` in <out-dir>/<run name>. A run with
a summary.json is done and skipped; a run with checkpoints continues from its latest one
(run.resume=auto), so the study can be stopped (Ctrl-C or SIGTERM: the running training saves a
checkpoint at its next step) and continued by running the same command. Threads: --threads (1: the
study can run beside other work; keep it fixed for the whole study, the numbers depend on it).
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "evidence.yaml"
STEPS = 1040
ARMS = {
    "adamw": ["mols.enabled=false"],
    "mols": ["mols.enabled=true", "mols.min_alpha=null"],
    "mols_floor": ["mols.enabled=true", "mols.min_alpha=1.0"],
}
PHASES = ("grid", "seeds", "budgets", "bf16", "bf16_budgets", "bf16_grid")
BUDGET_FRACTIONS = (8, 4, 2)  # AdamW with STEPS // n steps
SEEDS = (0, 1, 2)


def run_name(arm: str, lr: float, seed: int, steps: int = STEPS, precision: str = "fp32") -> str:
    name = f"{arm}_lr{lr:.3g}_s{seed}"
    if steps != STEPS:
        name += f"_steps{steps}"
    return name + ("" if precision == "fp32" else f"_{precision}")


class Study:
    def __init__(self, out_dir: Path, threads: int, python: str, dry: bool):
        self.out_dir, self.threads, self.python, self.dry = out_dir, threads, python, dry
        self.child: subprocess.Popen | None = None
        self.stopped = False

    def summary(self, name: str) -> dict | None:
        path = self.out_dir / name / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def run(self, arm: str, lr: float, seed: int, steps: int = STEPS, precision: str = "fp32") -> dict | None:
        """Train one run unless it is done; its summary (None in a dry run or when stopped)."""
        name = run_name(arm, lr, seed, steps, precision)
        done = self.summary(name)
        if done is not None:
            return done
        run_dir = self.out_dir / name
        resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
        overrides = [f"run.out_dir={self.out_dir}", f"run.name={name}", f"optimizer.lr={lr}", f"run.seed={seed}",
                     f"data.shuffle_seed={42 + seed}", f"train.steps={steps}", f"train.precision={precision}",
                     f"train.threads={self.threads}", "run.wandb.mode=disabled", *ARMS[arm]]
        if resume:
            overrides.append("run.resume=auto")
        command = [self.python, str(ROOT / "train.py"), "--config", str(CONFIG)]
        for item in overrides:
            command += ["--set", item]
        print(f"[study] {'would run' if self.dry else 'continuing' if resume else 'running'} {name}", flush=True)
        if self.dry:
            return None
        self.child = subprocess.Popen(command, cwd=ROOT)
        code = self.child.wait()
        self.child = None
        if code == 75 or self.stopped:  # stopped by a signal, with a checkpoint: continue by rerunning
            self.stopped = True
            return None
        if code:
            raise SystemExit(f"[study] {name}: train.py exited with {code}")
        return self.summary(name)

    def stop(self, signum, frame) -> None:
        """Pass the signal to the training run (it saves a checkpoint and exits 75); stop after it."""
        self.stopped = True
        if self.child is not None:
            self.child.send_signal(signal.SIGTERM)


def selection_loss(summary: dict | None) -> float:
    return float("inf") if summary is None else summary.get("final_selection_loss", summary["final_val_loss"])


def best_rate(study: Study, arm: str, lrs: list[float], max_extensions: int, steps: int = STEPS,
              precision: str = "fp32") -> float | None:
    """Seed 0 over the grid, extended while the best rate sits at an end of it."""
    lrs = sorted(lrs)
    for _ in range(max_extensions + 1):
        losses = {}
        for lr in lrs:
            losses[lr] = selection_loss(study.run(arm, lr, 0, steps, precision))
            if study.stopped:
                return None
        if study.dry and float("inf") in losses.values():  # a plan, with rates not run yet: a guess
            return lrs[len(lrs) // 2]
        best = min(losses, key=losses.get)
        if best == lrs[0]:
            lrs.insert(0, lrs[0] / 2)
        elif best == lrs[-1]:
            lrs.append(lrs[-1] * 2)
        else:
            return best
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "evidence")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--lrs", default="1.25e-3,2.5e-3,5e-3", help="the starting grid of every arm")
    parser.add_argument("--max-extensions", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--plan", action="store_true", help="say what would run (finished runs are read)")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)} (of {', '.join(PHASES)})")
    study = Study(args.out_dir, args.threads, args.python, args.plan)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, study.stop)
    grid = [float(x) for x in args.lrs.split(",")]

    best = {}
    for arm in ARMS:  # the grid is every later phase's input: always read (run only when asked)
        if "grid" in phases or all(study.summary(run_name(arm, lr, 0)) for lr in grid):
            best[arm] = best_rate(study, arm, grid, args.max_extensions)
        if study.stopped:
            break
    if not study.stopped and len(best) < len(ARMS):
        print("[study] the grid is not finished: run --phases grid first", file=sys.stderr)
        return 2
    if not study.stopped:
        print("[study] best learning rates (selection half, seed 0): "
              + ", ".join(f"{arm} {lr:.3g}" for arm, lr in best.items()), flush=True)
    if "seeds" in phases and not study.stopped:
        for arm, lr in best.items():
            for seed in SEEDS[1:]:
                study.run(arm, lr, seed)
    if "budgets" in phases and not study.stopped:
        for fraction in BUDGET_FRACTIONS:
            for seed in SEEDS:
                study.run("adamw", best["adamw"], seed, steps=STEPS // fraction)

    def mean_selection(arm):
        return sum(selection_loss(study.summary(run_name(arm, best[arm], s))) for s in SEEDS) / len(SEEDS)
    mols_arm = None if study.stopped else min(("mols", "mols_floor"), key=mean_selection)  # the one run in bf16
    if "bf16" in phases and not study.stopped:
        for arm in ("adamw", mols_arm):
            for seed in SEEDS:
                study.run(arm, best[arm], seed, precision="bf16-pure")
    if "bf16_budgets" in phases and not study.stopped:
        for fraction in BUDGET_FRACTIONS:
            for seed in SEEDS:
                study.run("adamw", best["adamw"], seed, steps=STEPS // fraction, precision="bf16-pure")
    if "bf16_grid" in phases and not study.stopped:
        for arm, steps in [("adamw", STEPS), (mols_arm, STEPS), *(("adamw", STEPS // f) for f in BUDGET_FRACTIONS)]:
            lr = best_rate(study, arm, [best[arm] / 2, best[arm], best[arm] * 2], args.max_extensions, steps,
                           "bf16-pure")
            if study.stopped:  # the only way best_rate returns None
                break
            print(f"[study] best in bf16-pure (selection half, seed 0): {run_name(arm, lr, 0, steps, 'bf16-pure')}",
                  flush=True)
    if study.stopped:
        print("[study] stopped; run the same command again to continue", flush=True)
        return 75
    print(f"[study] done: {args.out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
