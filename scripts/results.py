#!/usr/bin/env python3
"""Tables and curves from run directories, with the paper's numbers beside ours.

    scripts/results.py runs/paper/table1 --table 1                     # Markdown, paper layout
    scripts/results.py runs/paper/table1 --table 1 --format latex
    scripts/results.py runs/paper/table3 --table 3 --plot table3.png   # + validation-PPL curves
    scripts/results.py runs/paper/lr_search                            # every (model, method, lr) group
    scripts/results.py runs/paper/table7 --table 7                     # also 12, 13, 14, figure1-7

A run directory is any directory under the given roots holding config.yaml and metrics.jsonl
(summary.json once it finished), as train.py writes them. Runs are grouped by (model, method,
MoLS, learning rate) and every other setting of their resolved config (run name, seed, output
directory, resume, wandb and logging cadence aside), so ablation runs never merge; a table row
takes the runs whose settings match the row's composed config in the keys where the table's rows
differ (Table 7's grouping and reference, Table 12's samples, ...). Each cell is the mean ±
sample standard deviation over the seeds of a group,
followed by (paper value, our mean - paper). When a cell was run at several learning rates (a
search), the lowest-perplexity one is shown (--lr paper: the paper's rate); the notes under the
table say which rate and seeds each cell uses. Table 1, 6, 12, 14 cells are final validation PPL
(summary.json; Table 12 adds the estimate's minutes); Tables 7 and Figure 3 final validation
loss; Table 3 cells the validation PPL logged at each step of the table; Table 13 the alphas of
the first MoLS calibration.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"
from configs import ConfigError  # noqa: E402
from training.config import load_config, training_settings  # noqa: E402
from training.records import read_metrics  # noqa: E402

# Settings that do not change what a run trains, left out of a group's identity.
# Keys a group names on its own (and the seed, which varies within a group)
OWN_KEYS = ("model.size", "optimizer.name", "optimizer.lr", "mols.enabled", "run.seed")


def settings_of(config: dict) -> dict:
    """The settings that change training (training/config.py decides which), minus the group's own
    keys; with MoLS off its other settings are irrelevant and left out."""
    flat = training_settings(config)
    mols = bool(flat.get("mols.enabled", False))
    return {k: v for k, v in flat.items() if k not in OWN_KEYS and (mols or not k.startswith("mols."))}


# ------------------------------------------------------------------------------------------------
# Reading runs
# ------------------------------------------------------------------------------------------------

def method_names() -> dict[str, str]:
    """optimizer.name -> method overlay name (adamw -> adam), from configs/paper/methods/."""
    names = {}
    for overlay in sorted((PAPER / "methods").glob("*.yaml")):
        optimizer = (yaml.safe_load(overlay.read_text()) or {}).get("optimizer", {})
        if "name" in optimizer:
            names[optimizer["name"]] = overlay.stem
    return names


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


def read_run(run_dir: Path, methods: dict[str, str]) -> Run:
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    optimizer = config.get("optimizer", {})
    # "ppl" since the one-name logging; "val_ppl" in run directories written before it
    records = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    val = {r["step"]: float(r.get("ppl", r.get("val_ppl"))) for r in records
           if r["kind"] == "val" and r.get("ppl", r.get("val_ppl")) is not None}
    calibration = next((r for r in records if r["kind"] == "mols_calibration"), None)
    return Run(path=run_dir, model=config.get("model", {}).get("size", "?"),
               method=methods.get(optimizer.get("name"), optimizer.get("name", "?")),
               mols=bool(config.get("mols", {}).get("enabled", False)), lr=float(optimizer.get("lr", math.nan)),
               seed=int(config.get("run", {}).get("seed", 0)), final_ppl=summary.get("final_val_ppl"), val_ppl=val,
               state_bytes=summary.get("optimizer_state_bytes"), final_loss=summary.get("final_val_loss"),
               settings=settings_of(config), calibration=calibration)


def find_runs(roots: list[Path]) -> list[Run]:
    methods = method_names()
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


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------

@dataclass
class Cell:
    measured: Optional[Stat]
    paper: Optional[float]
    digits: int = 2

    @property
    def difference(self) -> Optional[float]:
        if self.measured is None or self.paper is None:
            return None
        return self.measured.mean - self.paper


def format_cell(cell: Cell, style: str) -> str:
    pm = " ± " if style == "markdown" else r"$\pm$"
    dash = "–" if style == "markdown" else "--"
    d = cell.digits
    if cell.measured is None:
        value = dash
    else:
        value = f"{cell.measured.mean:.{d}f}" + (f"{pm}{cell.measured.std:.{d}f}" if cell.measured.std is not None else "")
    if cell.paper is None:
        return value
    note = f"paper {cell.paper:.{d}f}" if style == "markdown" else f"{cell.paper:.{d}f}"
    if cell.difference is not None:
        note += (", Δ " if style == "markdown" else ", ") + f"{cell.difference:+.{d}f}"
    return f"{value} ({note})" if style == "markdown" else f"{value} {{\\scriptsize({note})}}"


@dataclass
class TableLayout:
    """A paper table filled with our numbers: blocks of rows, each row a list of cells."""
    title: str
    columns: list[str]
    blocks: list[tuple[Optional[str], list[tuple[str, list[Cell]]]]]  # (heading, [(label, cells)])
    notes: list[str]


def paper_tables() -> dict:
    return yaml.safe_load((PAPER / "paper_results.yaml").read_text())["tables"]


def paper_table(number: str) -> dict:
    return paper_tables()[number]


def paper_lrs() -> dict:
    return yaml.safe_load((PAPER / "learning_rates.yaml").read_text())["learning_rates"]


def _sweep():
    if __package__:
        from scripts import sweep
    else:  # run as scripts/results.py: its folder is sys.path[0]
        import sweep
    return sweep


def row_expectations(spec: dict, model: str) -> list[Optional[dict]]:
    """For each row of a table: the settings its runs must have at `model`, i.e. the row's config
    composed as scripts/sweep.py composes it, in the keys where the table's rows differ (None for
    a row that cannot be composed, e.g. SGG's, which has no method)."""
    sweep = _sweep()
    composed: list[Optional[dict]] = []
    enabled: list[bool] = []
    for row in spec["rows"]:
        if not row.get("method"):
            composed.append(None)
            enabled.append(False)
            continue
        try:
            (job,) = sweep.build_jobs(name="results", models=[model], variants=[sweep.Variant.from_row(row)],
                                      lrs=[1.0], seeds=[0], out_dir="runs")
            cfg = load_config([REPO / c for c in job.configs], job.overrides)
            composed.append(settings_of(cfg.to_dict()))
            enabled.append(cfg.mols.enabled)
        except (ConfigError, ValueError):
            composed.append(None)
            enabled.append(bool(row["mols"]))
    keys = {k for flat in composed if flat for k in flat}
    varying = {k for k in keys if len({repr(flat[k]) for flat in composed if flat and k in flat}) > 1}
    varying = {k for k in varying if not k.startswith("optimizer.")}  # the method is matched by name
    # mols.enabled as composed: a row without the MoLS overlay may still switch it on (Figure 3's
    # hand-set multipliers)
    return [None if flat is None else {"mols.enabled": on, **{k: flat[k] for k in varying if k in flat}}
            for flat, on in zip(composed, enabled)]


def row_learning_rate(row: dict, model: str, rates: dict):
    if row.get("lrs"):
        return list(row["lrs"])
    return rates.get(row["method"] + ("+mols" if row["mols"] else ""), {}).get(model)


def build_table(number: str, groups: dict[GroupKey, list[Run]], lr_choice: str = "best") -> TableLayout:
    spec, rates = paper_table(number), paper_lrs()
    labels = spec.get("model_labels", {})
    notes: list[str] = []
    metric = spec["metric"]
    expectations = {model: row_expectations(spec, model) for model in spec["models"]}

    def chosen(index: int, row: dict, model: str) -> Optional[list[Run]]:
        if not row.get("method") or (row.get("models") and model not in row["models"]):
            return None
        picked = pick_group(groups, model, row["method"], row["mols"], lr_choice, row_learning_rate(row, model, rates),
                            finished_only=metric in ("final", "final_loss", "curves", "snr"),
                            expect=expectations[model][index])
        if picked is None:
            return None
        key, runs = picked
        notes.append(f"{row['label']} @ {labels.get(model, model)}: lr {key[3]:.1e}, "
                     f"seeds {','.join(str(r.seed) for r in runs)}")
        return runs

    if metric == "alphas":  # one row per module class, one column per model
        alphas: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for model in spec["models"]:
            for index, row in enumerate(spec["rows"]):
                for run in chosen(index, row, model) or []:
                    for cls, value in ((run.calibration or {}).get("alphas") or {}).items():
                        alphas[cls][model].append(value)
        order = ["emb", "head", "qk", "vo", "mlp", "attn", "other"]
        classes = sorted(alphas, key=lambda c: (order.index(c) if c in order else 99, c))
        rows = [(cls, [Cell(stat(alphas[cls].get(m, [])), None, 3) for m in spec["models"]]) for cls in classes]
        return TableLayout(spec["title"], [labels.get(m, m) for m in spec["models"]], [(None, rows)], notes)

    if metric != "steps":  # final PPL (final, curves, snr) or final loss, per model
        loss = metric == "final_loss"
        values = "loss" if loss else "ppl"
        section_rows: dict[Optional[str], list] = {}
        for index, row in enumerate(spec["rows"]):
            cells = []
            for model in spec["models"]:
                runs = chosen(index, row, model)
                measured = stat([r.final_loss if loss else r.final_ppl for r in runs]) if runs else None
                cells.append(Cell(measured, (row.get(values) or {}).get(model), 3 if loss else 2))
                if spec.get("minutes"):
                    cells.append(Cell(stat([r.estimate_minutes for r in runs]) if runs else None,
                                      (row.get("minutes") or {}).get(model)))
            section_rows.setdefault(row.get("section"), []).append((row["label"], cells))
        columns = []
        for model in spec["models"]:
            columns.append(labels.get(model, model))
            if spec.get("minutes"):
                columns.append("estimation (min)")
        if spec.get("paper_best_hand_tuned") is not None:
            notes.append(f"the paper's best hand-tuned setting: {spec['paper_best_hand_tuned']:.3f} (its grid is not printed)")
        return TableLayout(spec["title"], columns, list(section_rows.items()), notes)

    # metric "steps": one block per model, one column per step
    blocks = []
    for model in spec["models"]:
        rows = []
        for index, row in enumerate(spec["rows"]):
            runs = chosen(index, row, model) or []
            paper_values = row["ppl"].get(model) or [None] * len(spec["steps"])
            cells = [Cell(stat([r.val_ppl.get(step) for r in runs]), paper)
                     for step, paper in zip(spec["steps"], paper_values)]
            rows.append((row["label"], cells))
        blocks.append((f"Pre-training {labels.get(model, model)}", rows))
    return TableLayout(spec["title"], spec["step_labels"], blocks, notes)


def render_markdown(table: TableLayout) -> str:
    lines = [f"**{table.title}** (ours: mean ± std over seeds; in brackets the paper's value and ours - paper)", "",
             "| Method | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    for heading, rows in table.blocks:
        if heading:
            lines.append(f"| *{heading}* |" + " |" * len(table.columns))
        for label, cells in rows:
            lines.append(f"| {label} | " + " | ".join(format_cell(c, "markdown") for c in cells) + " |")
    if table.notes:
        lines += ["", "Learning rate and seeds per cell:"] + [f"- {note}" for note in table.notes]
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    for char in "&%_#$":
        text = text.replace(char, "\\" + char)
    return text


def render_latex(table: TableLayout) -> str:
    width = len(table.columns) + 1
    lines = [r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(table.title)}. Ours: mean$\pm$std over seeds; in brackets the paper's "
             r"value and ours minus the paper's.}", rf"\begin{{tabular}}{{l{'c' * len(table.columns)}}}",
             r"\toprule", "Method & " + " & ".join(latex_escape(c) for c in table.columns) + r" \\"]
    for heading, rows in table.blocks:
        lines.append(r"\midrule")
        if heading:
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{latex_escape(heading)}}}}} \\")
        for label, cells in rows:
            lines.append(latex_escape(label) + " & " + " & ".join(format_cell(c, "latex") for c in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    lines += [f"% {latex_escape(note)}" for note in table.notes]
    return "\n".join(lines)


def render_groups(groups: dict[GroupKey, list[Run]]) -> str:
    """Every group, for sweeps that are not a paper table (e.g. the learning-rate search);
    * marks the best learning rate of a (model, method, MoLS) run at several."""
    lrs_by_cell: dict[tuple, list[tuple[float, float]]] = defaultdict(list)  # cell -> [(score, lr)]
    for (model, method, mols, lr, setting), runs in groups.items():
        score = stat([r.score for r in runs])
        if score is not None:
            lrs_by_cell[(model, method, mols, setting)].append((score.mean, lr))
    best_lr = {cell: min(scores)[1] for cell, scores in lrs_by_cell.items() if len(scores) > 1}
    differences = setting_differences(groups)
    with_settings = any(differences.values())
    lines = ["| model | method | MoLS | lr | " + ("setting | " if with_settings else "")
             + "finished/runs | final val PPL | last val PPL (step) |", "|---" * (8 if with_settings else 7) + "|"]
    for key in sorted(groups):
        model, method, mols, lr, setting = key
        runs = groups[key]
        final = stat([r.final_ppl for r in runs])
        last_step = min((max(r.val_ppl) for r in runs if r.val_ppl), default=None)  # reached by every seed
        last = stat([r.val_ppl.get(last_step) for r in runs]) if last_step is not None else None
        mark = " *" if best_lr.get((model, method, mols, setting)) == lr else ""
        lines.append(f"| {model} | {method} | {'on' if mols else 'off'} | {lr:.1e}{mark} | "
                     + (f"{differences[key] or 'base'} | " if with_settings else "")
                     + 
                     f"{sum(r.final_ppl is not None for r in runs)}/{len(runs)} | "
                     f"{format_cell(Cell(final, None), 'markdown')} | "
                     + (f"{format_cell(Cell(last, None), 'markdown')} ({last_step})" if last else "–") + " |")
    return "\n".join(lines)


def setting_differences(groups: dict[GroupKey, list[Run]]) -> dict[GroupKey, str]:
    """Per group, `key=value` for the settings in which it differs from the other groups of the
    same (model, method, MoLS, lr); empty when it has no such sibling."""
    siblings: dict[tuple, list[GroupKey]] = defaultdict(list)
    for key in groups:
        siblings[key[:4]].append(key)
    out = {}
    for keys in siblings.values():
        settings = [dict(key[4]) for key in keys]
        varying = sorted({k for s in settings for k in s if len({s.get(k) for s in settings}) > 1}) if len(keys) > 1 else []
        for key, setting in zip(keys, settings):
            out[key] = ", ".join(f"{k}={str(setting.get(k, '(absent)')).strip(chr(39))}" for k in varying)
    return out


def render_mols_effect(groups: dict[GroupKey, list[Run]]) -> str:
    """Each (model, method, lr) run with and without MoLS, side by side, with its optimizer state."""
    lines = ["| model | method | lr | without MoLS | with MoLS | MoLS - without | optimizer state |",
             "|---|---|---|---|---|---|---|"]
    for model, method, lr in sorted({key[:2] + key[3:4] for key in groups}):
        off = [r for key, runs in groups.items() if key[:4] == (model, method, False, lr) for r in runs]
        on = [r for key, runs in groups.items() if key[:4] == (model, method, True, lr) for r in runs]
        off_stat, on_stat = stat([r.final_ppl for r in off]), stat([r.final_ppl for r in on])
        difference = f"{on_stat.mean - off_stat.mean:+.2f}" if off_stat and on_stat else "–"
        state = next((r.state_bytes for r in off + on if r.state_bytes), None)
        seeds = f" ({len(off)}/{len(on)} seeds)" if off and on and len(off) + len(on) > 2 else ""
        lines.append(f"| {model} | {method} | {lr:.1e} | {format_cell(Cell(off_stat, None), 'markdown')} | "
                     f"{format_cell(Cell(on_stat, None), 'markdown')} | {difference}{seeds} | "
                     + (f"{state / 2**20:.2f} MiB" if state else "–") + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Curves
# ------------------------------------------------------------------------------------------------

def mean_curve(runs: list[Run]) -> tuple[list[int], list[float], list[float]]:
    """Mean and std of validation PPL over seeds, at the steps every seed has logged. The step-0
    evaluation (perplexity ~ vocabulary size) is left out: it would flatten every curve."""
    steps = sorted(set.intersection(*(set(r.val_ppl) for r in runs)) - {0}) if runs else []
    means = [statistics.fmean(r.val_ppl[s] for r in runs) for s in steps]
    stds = [statistics.stdev(r.val_ppl[s] for r in runs) if len(runs) > 1 else 0.0 for s in steps]
    return steps, means, stds


def plot_curves(groups: dict[GroupKey, list[Run]], out: Path, table: Optional[str] = None,
                lr_choice: str = "best") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    if table:
        spec, rates = paper_table(table), paper_lrs()
        models, labels, title = spec["models"], spec.get("model_labels", {}), spec["title"]
    else:
        models = sorted({key[0] for key in groups})
        labels, title = {}, "Validation perplexity"
    wide = not table and len({(k[1], k[2]) for k in groups}) > 8  # room for a legend beside the plot
    fig, axes = plt.subplots(1, len(models), figsize=((8 if wide else 5) * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        if table:
            lines = []
            expectations = row_expectations(spec, model)
            for row, expect in zip(spec["rows"], expectations):
                if not row.get("method") or (row.get("models") and model not in row["models"]):
                    continue
                picked = pick_group(groups, model, row["method"], row["mols"], lr_choice,
                                    row_learning_rate(row, model, rates), expect=expect)
                paper = (row.get("ppl") or {}).get(model)
                paper_points = (list(zip(spec["steps"], paper)) if spec["metric"] == "steps" and paper
                                else [(None, paper)] if paper is not None else [])
                lines.append((row["label"], picked[1] if picked else [], paper_points))
        else:  # one colour per method, dashed with MoLS; the best learning rate of each
            lines = []
            for method, mols in sorted({(k[1], k[2]) for k in groups if k[0] == model}):
                (_, _, _, lr, _), runs = pick_group(groups, model, method, mols, "best", None)
                lines.append((f"{method}{'+MoLS' if mols else ''} lr {lr:.1e}", runs, []))
        methods = sorted({label.split("+")[0].split(" ")[0] for label, _, _ in lines})
        for label, runs, paper_points in lines:
            steps, means, stds = mean_curve(runs)
            if not steps:
                continue
            style = {} if table else {"color": f"C{methods.index(label.split('+')[0].split(' ')[0]) % 10}",
                                      "linestyle": "--" if "+MoLS" in label else "-"}
            (line,) = ax.plot(steps, means, label=label, **style)
            if any(stds):
                ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                color=line.get_color(), alpha=0.2)
            # the paper's numbers as crosses: at the table's steps, or at the end of training
            points = [(step if step is not None else steps[-1], value) for step, value in paper_points if value]
            if points:
                ax.scatter(*zip(*points), marker="x", color=line.get_color())
        ax.set_title(labels.get(model, model))
        ax.set_xlabel("step")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}K" if x >= 1000 else f"{x:g}"))
        ax.set_ylabel("validation perplexity")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            if len(lines) > 8:
                ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
            else:
                ax.legend(fontsize="small")
    fig.suptitle(title + ("  (x: the paper's values)" if table else ""))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path, help="directories searched for run directories")
    parser.add_argument("--table", choices=sorted(paper_tables()),
                        help="print this paper table or figure's numbers (default: every group)")
    parser.add_argument("--format", choices=["markdown", "latex"], default="markdown",
                        help="of the --table output (the group listing is Markdown)")
    parser.add_argument("--lr", dest="lr_choice", choices=["best", "paper"], default="best",
                        help="per cell: the best learning rate run (default) or the paper's")
    parser.add_argument("--mols-effect", action="store_true",
                        help="each method with and without MoLS side by side, with optimizer state memory")
    parser.add_argument("--plot", type=Path, help="write validation-perplexity curves to this PNG")
    args = parser.parse_args(argv)

    missing = [str(root) for root in args.roots if not root.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs = find_runs(args.roots)
    if not runs:
        print(f"error: no run directories (config.yaml + metrics.jsonl) under {', '.join(map(str, args.roots))}",
              file=sys.stderr)
        return 1
    groups = group_runs(runs)
    unfinished = sum(r.final_ppl is None for r in runs)
    print(f"{len(runs)} runs ({unfinished} unfinished) in {len(groups)} groups", file=sys.stderr)
    if args.table:
        table = build_table(args.table, groups, args.lr_choice)
        print(render_latex(table) if args.format == "latex" else render_markdown(table))
    elif args.mols_effect:
        print(render_mols_effect(groups))
    else:
        print(render_groups(groups))
    if args.plot:
        plot_curves(groups, args.plot, args.table, args.lr_choice)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
