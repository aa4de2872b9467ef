"""Reading run directories and grouping them by what they trained.

A run directory is any directory under the given roots holding config.yaml and metrics.jsonl
(summary.json once it finished), as train.py writes them. Runs are grouped by (model, method,
MoLS, learning rate) and every other setting of their resolved config that changes training
(training.config.training_settings decides which: run name, seed, output directory, resume,
wandb and logging cadence aside), so ablation runs never merge.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from optimizers.config import OptimizerConfig
from reproduce.paper import PAPER
from training.config import training_settings
from training.records import read_metrics

# Keys a group names on its own (and the seed, which varies within a group)
OWN_KEYS = ("model.size", "optimizer.name", "optimizer.lr", "mols.enabled", "run.seed")


def settings_of(config: dict) -> dict:
    """The settings that change training (training/config.py decides which), minus the group's own
    keys; with MoLS off its other settings are irrelevant and left out."""
    flat = training_settings(config)
    mols = bool(flat.get("mols.enabled", False))
    return {k: v for k, v in flat.items() if k not in OWN_KEYS and (mols or not k.startswith("mols."))}


def method_overlays() -> dict[str, dict]:
    """Method overlay name -> its optimizer section (configs/paper/methods/*.yaml)."""
    overlays = {}
    for overlay in sorted((PAPER / "methods").glob("*.yaml")):
        optimizer = (yaml.safe_load(overlay.read_text()) or {}).get("optimizer", {})
        if "name" in optimizer:
            overlays[overlay.stem] = optimizer
    return overlays


OPTIMIZER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(OptimizerConfig)
                      if f.default is not dataclasses.MISSING}


def method_label(optimizer: dict, overlays: dict[str, dict]) -> str:
    """The overlay a run's optimizer section matches in every key the overlay sets (adamw with
    weight decay 0 is the paper's "adam"); otherwise the optimizer's own name (an AdamW run with
    weight decay stays "adamw")."""
    resolved = {**OPTIMIZER_DEFAULTS, **optimizer}  # a config written before a default existed
    for name, wanted in overlays.items():
        if all(resolved.get(key) == value for key, value in wanted.items() if key != "options") and \
                all((resolved.get("options") or {}).get(k) == v for k, v in (wanted.get("options") or {}).items()):
            return name
    return optimizer.get("name", "?")


@dataclass
class Run:
    path: Path
    model: str
    method: str
    mols: bool
    lr: float
    seed: int
    final_ppl: Optional[float]            # None until summary.json exists
    val_ppl: dict[int, float] = field(default_factory=dict)  # step -> validation perplexity
    state_bytes: Optional[int] = None     # optimizer state at the end (summary.json)
    final_loss: Optional[float] = None    # final validation loss (summary.json)
    settings: dict = field(default_factory=dict)  # see settings_of
    calibration: Optional[dict] = None    # the first mols_calibration record
    accuracy: dict = field(default_factory=dict)  # fine-tuning: column -> accuracy % (see read_accuracy)
    optimizer: str = "?"                  # optimizer.name (method is the overlay it matches)
    selection_loss: Optional[float] = None  # final loss on the selection half (data.val_selection)
    val_loss: dict[int, float] = field(default_factory=dict)  # step -> validation loss (reported split)
    tokens: Optional[int] = None          # tokens trained on (summary.json)
    steps: Optional[int] = None           # optimizer steps (summary.json)

    @property
    def setting_key(self) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in self.settings.items()))

    @property
    def estimate_minutes(self) -> Optional[float]:
        if not self.calibration or self.calibration.get("reference") == "fixed":
            return None
        return self.calibration.get("seconds", math.nan) / 60

    @property
    def score(self) -> Optional[float]:
        """Final PPL, or the latest validation PPL of an unfinished run."""
        if self.final_ppl is not None:
            return self.final_ppl
        return self.val_ppl[max(self.val_ppl)] if self.val_ppl else None


def finetune_models() -> dict[str, str]:
    """Pretrained model name -> the key of its overlay in configs/paper/finetune/models/."""
    models = {}
    for overlay in sorted((PAPER / "finetune" / "models").glob("*.yaml")):
        pretrained = ((yaml.safe_load(overlay.read_text()) or {}).get("model") or {}).get("pretrained")
        if pretrained:
            models[pretrained] = overlay.stem
    return models


def model_key(config: dict) -> str:
    """A run's model as the tables name it: model.size, or a fine-tuning run's model overlay key
    (its model.pretrained itself when no overlay names it)."""
    model = config.get("model") or {}
    if model.get("pretrained"):
        return finetune_models().get(model["pretrained"], model["pretrained"])
    return model.get("size", "?")


def read_accuracy(run_dir: Path) -> dict[str, float]:
    """The accuracies scripts/evaluate.py wrote for the run's latest evaluated step:
    eval_commonsense_step_N.json (each task's generation accuracy, and "Avg." over the tasks) and
    eval_mmlu_step_N.json (the four categories and "Average")."""
    scores: dict[str, float] = {}
    for task in ("commonsense", "mmlu"):
        files = sorted(run_dir.glob(f"eval_{task}_step_*.json"))
        if not files:
            continue
        result = json.loads(files[-1].read_text())
        if task == "mmlu":
            scores.update(result.get("categories") or {})
        else:
            scores.update({name: t["generation"] for name, t in (result.get("tasks") or {}).items()
                           if "generation" in t})
            if "average_generation" in result:
                scores["Avg."] = result["average_generation"]
    return scores


def read_run(run_dir: Path, methods: dict[str, dict]) -> Run:
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    optimizer = config.get("optimizer", {})
    # "ppl" since the one-name logging; "val_ppl" in run directories written before it
    records = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    val = {r["step"]: float(r.get("ppl", r.get("val_ppl"))) for r in records
           if r["kind"] == "val" and r.get("ppl", r.get("val_ppl")) is not None}
    val_loss = {r["step"]: float(r["loss"]) for r in records if r["kind"] == "val" and r.get("loss") is not None}
    calibration = next((r for r in records if r["kind"] == "mols_calibration"), None)
    return Run(path=run_dir, model=model_key(config),
               method=method_label(optimizer, methods),
               mols=bool(config.get("mols", {}).get("enabled", False)), lr=float(optimizer.get("lr", math.nan)),
               seed=int(config.get("run", {}).get("seed", 0)), final_ppl=summary.get("final_val_ppl"), val_ppl=val,
               state_bytes=summary.get("optimizer_state_bytes"), final_loss=summary.get("final_val_loss"),
               settings=settings_of(config), calibration=calibration, accuracy=read_accuracy(run_dir),
               optimizer=optimizer.get("name", "?"), selection_loss=summary.get("final_selection_loss"),
               val_loss=val_loss, tokens=summary.get("tokens_seen"), steps=summary.get("steps"))


def find_runs(roots: list[Path]) -> list[Run]:
    methods = method_overlays()
    runs = []
    for root in roots:
        for config in sorted(Path(root).rglob("config.yaml")):
            if (config.parent / "metrics.jsonl").is_file() or (config.parent / "summary.json").is_file():
                runs.append(read_run(config.parent, methods))
    return runs


# ------------------------------------------------------------------------------------------------
# Groups and statistics
# ------------------------------------------------------------------------------------------------

GroupKey = tuple  # (model, method, mols, lr, settings): settings as Run.setting_key


def group_runs(runs: list[Run]) -> dict[GroupKey, list[Run]]:
    """Runs of one (model, method, mols, lr, other settings), one per seed (a seed found twice:
    the later path)."""
    by_seed: dict[GroupKey, dict[int, Run]] = defaultdict(dict)
    for run in runs:
        key = (run.model, run.method, run.mols, run.lr, run.setting_key)
        if run.seed in by_seed[key]:
            print(f"warning: seed {run.seed} of {key[:4]} found twice with the same settings; using {run.path}",
                  file=sys.stderr)
        by_seed[key][run.seed] = run
    return {key: [seeds[s] for s in sorted(seeds)] for key, seeds in by_seed.items()}


@dataclass
class Stat:
    mean: float
    std: Optional[float]   # sample standard deviation; None for a single seed
    n: int


def stat(values: list[float]) -> Optional[Stat]:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


def matches(run: Run, expect: Optional[dict]) -> bool:
    return not expect or all(run.settings.get(k) == v for k, v in expect.items())


def pick_group(groups: dict[GroupKey, list[Run]], model: str, method: str, mols: bool, lr_choice: str,
               paper_lr: Optional[float], finished_only: bool = False,
               expect: Optional[dict] = None) -> Optional[tuple[GroupKey, list[Run]]]:
    """The group shown for a table cell: the lowest mean PPL over the learning rates run, or the
    paper's learning rate (lr_choice "paper"). finished_only: only runs with a final PPL count.
    expect: settings the runs must have (a table row's, see row_expectations; its mols.enabled
    overrides `mols`)."""
    if expect and "mols.enabled" in expect:
        mols = expect["mols.enabled"]
        expect = {k: v for k, v in expect.items() if k != "mols.enabled"}
    candidates = [(key, [r for r in runs if r.final_ppl is not None or not finished_only])
                  for key, runs in groups.items()
                  if key[:3] == (model, method, mols) and all(matches(r, expect) for r in runs)]
    if lr_choice == "paper":
        candidates = [(k, r) for k, r in candidates
                      if paper_lr is not None and any(math.isclose(k[3], lr) for lr in
                                                      (paper_lr if isinstance(paper_lr, (list, tuple)) else [paper_lr]))]
    scored = [(stat([r.score for r in runs]), key, runs) for key, runs in candidates]
    scored = [(s, key, runs) for s, key, runs in scored if s is not None]
    if not scored:
        return None
    _, key, runs = min(scored, key=lambda item: item[0].mean)
    return key, runs
