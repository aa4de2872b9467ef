"""Tables and curves from run directories, with the paper's numbers beside ours.

    scripts/results.py runs/paper/table1 --table 1                     # Markdown, paper layout
    scripts/results.py runs/paper/table1 --table 1 --format latex
    scripts/results.py runs/paper/table3 --table 3 --plot table3.png   # + validation-PPL curves
    scripts/results.py runs/paper/lr_search                            # every (model, method, lr) group

A run directory is any directory under the given roots holding config.yaml and metrics.jsonl
(summary.json once it finished), as train.py writes them. Runs are grouped by (model, method,
MoLS, learning rate); each cell is the mean ± sample standard deviation over the seeds of a group,
followed by (paper value, our mean - paper). When a cell was run at several learning rates (a
search), the lowest-perplexity one is shown (--lr paper: the paper's rate); the notes under the
table say which rate and seeds each cell uses. Table 1 and 6 cells are final validation PPL
(summary.json); Table 3 cells are the validation PPL logged at each step of the table.
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

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"
from training.records import read_metrics  # noqa: E402


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
    val = {r["step"]: float(r.get("ppl", r.get("val_ppl"))) for r in read_metrics(run_dir / "metrics.jsonl")
           if r["kind"] == "val" and r.get("ppl", r.get("val_ppl")) is not None}
    return Run(path=run_dir, model=config.get("model", {}).get("size", "?"),
               method=methods.get(optimizer.get("name"), optimizer.get("name", "?")),
               mols=bool(config.get("mols", {}).get("enabled", False)), lr=float(optimizer.get("lr", math.nan)),
               seed=int(config.get("run", {}).get("seed", 0)), final_ppl=summary.get("final_val_ppl"), val_ppl=val,
               state_bytes=summary.get("optimizer_state_bytes"))


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

GroupKey = tuple  # (model, method, mols, lr)


def group_runs(runs: list[Run]) -> dict[GroupKey, list[Run]]:
    """Runs of one (model, method, mols, lr), one per seed (a seed found twice: the later path)."""
    by_seed: dict[GroupKey, dict[int, Run]] = defaultdict(dict)
    for run in runs:
        key = (run.model, run.method, run.mols, run.lr)
        if run.seed in by_seed[key]:
            print(f"warning: seed {run.seed} of {key} found twice; using {run.path}", file=sys.stderr)
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


def pick_group(groups: dict[GroupKey, list[Run]], model: str, method: str, mols: bool, lr_choice: str,
               paper_lr: Optional[float], finished_only: bool = False) -> Optional[tuple[GroupKey, list[Run]]]:
    """The group shown for a table cell: the lowest mean PPL over the learning rates run, or the
    paper's learning rate (lr_choice "paper"). finished_only: only runs with a final PPL count."""
    candidates = [(key, [r for r in runs if r.final_ppl is not None or not finished_only])
                  for key, runs in groups.items() if key[:3] == (model, method, mols)]
    if lr_choice == "paper":
        candidates = [(k, r) for k, r in candidates if paper_lr is not None and math.isclose(k[3], paper_lr)]
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

    @property
    def difference(self) -> Optional[float]:
        if self.measured is None or self.paper is None:
            return None
        return self.measured.mean - self.paper


def format_cell(cell: Cell, style: str) -> str:
    pm = " ± " if style == "markdown" else r"$\pm$"
    dash = "–" if style == "markdown" else "--"
    if cell.measured is None:
        value = dash
    else:
        value = f"{cell.measured.mean:.2f}" + (f"{pm}{cell.measured.std:.2f}" if cell.measured.std is not None else "")
    if cell.paper is None:
        return value
    note = f"paper {cell.paper:.2f}" if style == "markdown" else f"{cell.paper:.2f}"
    if cell.difference is not None:
        note += (", Δ " if style == "markdown" else ", ") + f"{cell.difference:+.2f}"
    return f"{value} ({note})" if style == "markdown" else f"{value} {{\\scriptsize({note})}}"


@dataclass
class TableLayout:
    """A paper table filled with our numbers: blocks of rows, each row a list of cells."""
    title: str
    columns: list[str]
    blocks: list[tuple[Optional[str], list[tuple[str, list[Cell]]]]]  # (heading, [(label, cells)])
    notes: list[str]


def paper_table(number: str) -> dict:
    return yaml.safe_load((PAPER / "paper_results.yaml").read_text())["tables"][number]


def paper_lrs() -> dict:
    return yaml.safe_load((PAPER / "learning_rates.yaml").read_text())["learning_rates"]


def build_table(number: str, groups: dict[GroupKey, list[Run]], lr_choice: str = "best") -> TableLayout:
    spec, rates = paper_table(number), paper_lrs()
    labels = spec.get("model_labels", {})
    notes: list[str] = []

    def chosen(row: dict, model: str) -> Optional[list[Run]]:
        key = row["method"] + ("+mols" if row["mols"] else "")
        picked = pick_group(groups, model, row["method"], row["mols"], lr_choice, rates.get(key, {}).get(model),
                            finished_only=spec["metric"] == "final")
        if picked is None:
            return None
        (_, _, _, lr), runs = picked
        notes.append(f"{row['label']} @ {labels.get(model, model)}: lr {lr:.1e}, "
                     f"seeds {','.join(str(r.seed) for r in runs)}")
        return runs

    if spec["metric"] == "final":
        section_rows: dict[Optional[str], list] = {}
        for row in spec["rows"]:
            cells = []
            for model in spec["models"]:
                runs = chosen(row, model)
                cells.append(Cell(stat([r.final_ppl for r in runs]) if runs else None, row["ppl"].get(model)))
            section_rows.setdefault(row.get("section"), []).append((row["label"], cells))
        return TableLayout(spec["title"], [labels.get(m, m) for m in spec["models"]],
                           list(section_rows.items()), notes)

    # metric "steps": one block per model, one column per step
    blocks = []
    for model in spec["models"]:
        rows = []
        for row in spec["rows"]:
            runs = chosen(row, model) or []
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
    for (model, method, mols, lr), runs in groups.items():
        score = stat([r.score for r in runs])
        if score is not None:
            lrs_by_cell[(model, method, mols)].append((score.mean, lr))
    best_lr = {cell: min(scores)[1] for cell, scores in lrs_by_cell.items() if len(scores) > 1}
    lines = ["| model | method | MoLS | lr | finished/runs | final val PPL | last val PPL (step) |",
             "|---|---|---|---|---|---|---|"]
    for key in sorted(groups):
        model, method, mols, lr = key
        runs = groups[key]
        final = stat([r.final_ppl for r in runs])
        last_step = min((max(r.val_ppl) for r in runs if r.val_ppl), default=None)  # reached by every seed
        last = stat([r.val_ppl.get(last_step) for r in runs]) if last_step is not None else None
        mark = " *" if best_lr.get(key[:3]) == lr else ""
        lines.append(f"| {model} | {method} | {'on' if mols else 'off'} | {lr:.1e}{mark} | "
                     f"{sum(r.final_ppl is not None for r in runs)}/{len(runs)} | "
                     f"{format_cell(Cell(final, None), 'markdown')} | "
                     + (f"{format_cell(Cell(last, None), 'markdown')} ({last_step})" if last else "–") + " |")
    return "\n".join(lines)


def render_mols_effect(groups: dict[GroupKey, list[Run]]) -> str:
    """Each (model, method, lr) run with and without MoLS, side by side, with its optimizer state."""
    lines = ["| model | method | lr | without MoLS | with MoLS | MoLS - without | optimizer state |",
             "|---|---|---|---|---|---|---|"]
    for model, method, lr in sorted({(m, meth, lr) for m, meth, _, lr in groups}):
        off, on = groups.get((model, method, False, lr), []), groups.get((model, method, True, lr), [])
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
            for row in spec["rows"]:
                key = row["method"] + ("+mols" if row["mols"] else "")
                picked = pick_group(groups, model, row["method"], row["mols"], lr_choice, rates.get(key, {}).get(model))
                paper = row["ppl"].get(model)
                paper_points = (list(zip(spec["steps"], paper)) if spec["metric"] == "steps" and paper
                                else [(None, paper)] if paper is not None else [])
                lines.append((row["label"], picked[1] if picked else [], paper_points))
        else:  # one colour per method, dashed with MoLS; the best learning rate of each
            lines = []
            for method, mols in sorted({(k[1], k[2]) for k in groups if k[0] == model}):
                (_, _, _, lr), runs = pick_group(groups, model, method, mols, "best", None)
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
    parser.add_argument("--table", choices=["1", "3", "6"], help="print this paper table (default: every group)")
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
