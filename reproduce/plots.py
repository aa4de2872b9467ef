"""Pictures (and the alphas' table) from run directories:

    curves     validation perplexity over training per model, a table's rows (the paper's numbers
               as crosses) or every group (one colour per method, dashed with MoLS)
    snr        module SNR over training (the paper's Figures 1 and 7), from runs with
               `mols.track_every > 0`: one panel per run, one line per module class, log scale;
               calibration points (the SNRs that set the alphas) marked; reads only metrics.jsonl
    alphas     the MoLS multipliers of several runs side by side (the paper's Table 13), from each
               run's mols.json (written at calibration) and config.yaml: one column per run
    ablation   bars of one row per setting, ours beside the paper's: Table 7 (groupings, final
               loss), Table 12 (estimation samples: final PPL and the estimate's minutes), Figure 3
               (hand-tuned module learning rates vs MoLS, final loss; the paper's best hand-tuned
               value as a line)
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

import yaml

from reproduce import paper
from reproduce.runs import GroupKey, Run, model_key, pick_group
from reproduce.tables import build_table, experiment_configs, row_expectations
from training.records import read_metrics

ORDER = ["emb", "head", "qk", "vo", "mlp", "attn", "other"]


class PlotError(ValueError):
    """What the runs lack for a picture (printed, exit status 2)."""


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    pyplot().close(fig)


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
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    if table:
        spec, configs = paper.table(table), experiment_configs(table)
        models, labels, title = spec["models"], spec.get("model_labels", {}), spec["title"]
    else:
        models = sorted({key[0] for key in groups})
        labels, title = {}, "Validation perplexity"
    wide = not table and len({(k[1], k[2]) for k in groups}) > 8  # room for a legend beside the plot
    fig, axes = plt.subplots(1, len(models), figsize=((8 if wide else 5) * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        if table:
            lines = []
            grid = paper.preset(table) if "grid" in paper.experiment(table) else None
            expectations = row_expectations(spec, model, configs, grid)
            for row, expect in zip(spec["rows"], expectations):
                if not row.get("method") or (row.get("models") and model not in row["models"]):
                    continue
                picked = pick_group(groups, model, row["method"], row["mols"], lr_choice,
                                    paper.row_learning_rate(row, model), expect=expect)
                published = (row.get("ppl") or {}).get(model)
                paper_points = (list(zip(spec["steps"], published)) if spec["metric"] == "steps" and published
                                else [(None, published)] if published is not None else [])
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
    save(fig, out)


def plot_arms(arms: list, out: Path, title: str = "Validation loss per arm (reported split)") -> None:
    """`results --baseline ... --plot`: one line per arm of the report (reproduce/evidence.py) at its
    chosen learning rate, the mean validation loss over its finished seeds with a band of one
    standard deviation; dashed with MoLS, thinner for arms that ran fewer steps (the budgets of
    a speed-up fit). Arms that ran in different settings (fp32 and bf16-pure, say; train.steps
    aside) get a panel each, so that each method sits beside the baseline it is compared with."""
    plt = pyplot()
    panels: dict[str, list] = {}
    for arm in arms:
        where = ", ".join(part for part in arm.where.split(", ") if part and not part.startswith("train.steps="))
        panels.setdefault(where, []).append(arm)
    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 4.8), squeeze=False)
    for ax, (where, members) in zip(axes[0], sorted(panels.items())):
        _arm_curves(ax, members)
        ax.set_title(f"{title}: {where}" if where and len(panels) > 1 else title)
    fig.tight_layout()
    save(fig, out)


def _arm_curves(ax, arms: list) -> None:
    longest = max((max(run.steps or 0 for run in arm.finished().values()) for arm in arms if arm.finished()),
                  default=0)
    for i, arm in enumerate(arms):
        runs = list(arm.finished().values())
        if not runs:
            continue
        steps = sorted(set.intersection(*(set(r.val_loss) for r in runs)) - {0})
        if not steps:
            continue
        means = [statistics.fmean(r.val_loss[s] for r in runs) for s in steps]
        short = max(run.steps or 0 for run in runs) < longest
        (line,) = ax.plot(steps, means, linestyle="--" if arm.mols else "-", linewidth=0.9 if short else 1.6,
                          color=f"C{i % 10}", label=f"{arm.name}, lr {arm.lr:.3g}, {len(runs)} seed(s)")
        if len(runs) > 1:
            sds = [statistics.stdev(r.val_loss[s] for r in runs) for s in steps]
            ax.fill_between(steps, [m - d for m, d in zip(means, sds)], [m + d for m, d in zip(means, sds)],
                            color=line.get_color(), alpha=0.15)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.grid(True, alpha=0.3)
    losses = [line.get_ydata() for line in ax.get_lines()]
    if losses:  # the start of training (loss ~ log vocabulary) would flatten every curve
        finals = [float(min(y)) for y in losses]
        ax.set_ylim(min(finals) - 0.1, min(finals) + 1.5)
        ax.legend(fontsize="small", loc="upper right")


# ------------------------------------------------------------------------------------------------
# Module SNR over training
# ------------------------------------------------------------------------------------------------

def snr_series(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], list[dict]]:
    records = read_metrics(run_dir / "metrics.jsonl")
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if record["kind"] == "snr":
            for cls, value in record["module_snr"].items():
                series.setdefault(cls, []).append((record["step"], value))
    calibrations = [r for r in records if r["kind"] == "mols_calibration"]
    return series, calibrations


def plot_snr(runs: list[Path], out: Path, include_other: bool = False) -> None:
    problems = [f"{run}: no metrics.jsonl" for run in runs if not (run / "metrics.jsonl").exists()]
    if problems:
        raise PlotError("\n".join(problems))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        series, calibrations = snr_series(run)
        if not series and not calibrations:
            plt.close(fig)
            raise PlotError(f"{run}: no SNR records (train with mols.enabled=true and mols.track_every>0)")
        classes = sorted(set(series) | {c for cal in calibrations for c in cal["module_snr"]},
                         key=lambda c: (ORDER.index(c.rsplit(".", 1)[-1]) if c.rsplit(".", 1)[-1] in ORDER else 99, c))
        for i, cls in enumerate(c for c in classes if include_other or c != "other"):
            color = f"C{i % 10}"
            if cls in series:
                steps, values = zip(*series[cls])
                ax.plot(steps, values, label=cls, color=color)
            for cal in calibrations:
                if cls in cal["module_snr"]:
                    ax.scatter([cal["step"]], [cal["module_snr"][cls]], color=color, marker="x")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("module SNR (mean of element SNRs)")
        ax.set_title(run.name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, out)


# ------------------------------------------------------------------------------------------------
# The alphas side by side
# ------------------------------------------------------------------------------------------------

def alpha_table(runs: list[Path], snr: bool = False) -> str:
    """A Markdown table: one row per module class ("other" left out), one column per run,
    labelled with its model size (with the run's name where a size repeats)."""
    columns = []
    for run in runs:
        path = run / "mols.json"
        if not path.exists():
            raise PlotError(f"{run}: no mols.json (not a MoLS run, or not calibrated yet)")
        calibration = json.loads(path.read_text())["calibrations"][0]
        size = model_key(yaml.safe_load((run / "config.yaml").read_text()))  # a fine-tuning run: its model
        columns.append((size, calibration["module_snr" if snr else "alphas"], calibration["reference"]))
    if len({size for size, _, _ in columns}) < len(columns):  # same size twice: name the runs
        columns = [(run.name, values, ref) for run, (_, values, ref) in zip(runs, columns)]
    classes = sorted({c for _, values, _ in columns for c in values if c != "other"},
                     key=lambda c: (ORDER.index(c) if c in ORDER else 99, c))
    lines = ["| module | " + " | ".join(size for size, _, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    for cls in classes:
        cells = [f"{values[cls]:.4g}" if cls in values else "-" for _, values, _ in columns]
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    lines.append("| reference | " + " | ".join(ref for _, _, ref in columns) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Ablation bars
# ------------------------------------------------------------------------------------------------

def plot_ablation(groups: dict[GroupKey, list[Run]], table: str, out: Path, lr_choice: str = "best") -> None:
    layout = build_table(table, groups, lr_choice)
    spec = paper.table(table)
    rows = [(label, cells) for _, block in layout.blocks for label, cells in block]
    panels = [(0, "final validation perplexity" if spec["metric"] == "final" else "final validation loss")]
    if spec.get("minutes"):
        panels.append((1, "SNR estimation time (min)"))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6, 1.1 * len(rows)) * len(panels) / 1.4, 4.5), squeeze=False)
    for ax, (column, ylabel) in zip(axes[0], panels):
        x = range(len(rows))
        ours = [cells[column].measured.mean if cells[column].measured else float("nan") for _, cells in rows]
        errors = [cells[column].measured.std or 0 if cells[column].measured else 0 for _, cells in rows]
        published = [cells[column].paper if cells[column].paper is not None else float("nan") for _, cells in rows]
        ax.bar([i - 0.2 for i in x], ours, width=0.4, yerr=errors, label="ours")
        ax.bar([i + 0.2 for i in x], published, width=0.4, label="paper")
        if spec.get("paper_best_hand_tuned") is not None and column == 0:
            ax.axhline(spec["paper_best_hand_tuned"], color="k", linestyle=":", label="paper: best hand-tuned")
        values = [v for v in ours + published if v == v]
        if values and column == 0:  # losses and perplexities differ in the second decimal: zoom
            low, high = min(values), max(values)
            ax.set_ylim(low - 0.1 * (high - low + 0.01) - 0.01, high + 0.1 * (high - low + 0.01) + 0.01)
        ax.set_xticks(list(x))
        ax.set_xticklabels([label for label, _ in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(spec["title"], fontsize=10)
    fig.tight_layout()
    save(fig, out)
