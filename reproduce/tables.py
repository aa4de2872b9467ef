"""The paper's tables filled with our numbers, and listings of run groups.

Each cell is the mean ± sample standard deviation over the seeds of a group, followed by (paper
value, our mean - paper). A table row takes the runs whose settings match the row's composed
config in the keys where the table's rows differ (Table 7's grouping and reference, Table 12's
samples, ...). When a cell was run at several learning rates (a search), the lowest-perplexity one
is shown (lr_choice "paper": the paper's rate); the notes under the table say which rate and seeds
each cell uses. Table 1, 6, 12, 14 cells are final validation PPL (summary.json; Table 12 adds the
estimate's minutes); Tables 7 and Figure 3 final validation loss; Table 3 cells the validation PPL
logged at each step of the table; Table 13 the alphas of the first MoLS calibration.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

from configs import ConfigError
from reproduce import paper
from reproduce.jobs import Variant, build_jobs, load_job_config
from reproduce.runs import GroupKey, Run, Stat, pick_group, settings_of, stat

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


def row_expectations(spec: dict, model: str, configs: list = (), grid=None) -> list[Optional[dict]]:
    """For each row of a table: the settings its runs must have at `model`, i.e. the row's config
    composed as `run` composes it (with the experiment's overlays, `configs`), in the keys where
    the table's rows differ (None for a row that cannot be composed, e.g. SGG's, which has no
    method)."""
    composed: list[Optional[dict]] = []
    enabled: list[bool] = []
    for row in spec["rows"]:
        if not row.get("method"):
            composed.append(None)
            enabled.append(False)
            continue
        try:
            where = {"base": grid.base, "models_dir": grid.models_dir} if grid is not None else {}
            (job,) = build_jobs(name="results", models=[model], variants=[Variant.from_row(row)],
                                lrs=[1.0], seeds=[0], out_dir="runs", extra_configs=list(configs), **where)
            cfg = load_job_config(job)
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


def experiment_configs(number: str) -> list:
    """The overlays `run` adds to every job of the experiment (its grid's configs)."""
    return paper.preset(number).configs if "grid" in paper.experiment(number) else []


def build_table(number: str, groups: dict[GroupKey, list[Run]], lr_choice: str = "best") -> TableLayout:
    spec = paper.table(number)
    labels = spec.get("model_labels", {})
    notes: list[str] = []
    metric = spec["metric"]
    configs = experiment_configs(number)
    grid = paper.preset(number) if "grid" in paper.experiment(number) else None
    grid_lrs = grid.lrs if grid is not None else None
    expectations = {model: row_expectations(spec, model, configs, grid) for model in spec["models"]}

    def chosen(index: int, row: dict, model: str) -> Optional[list[Run]]:
        if not row.get("method") or (row.get("models") and model not in row["models"]):
            return None
        picked = pick_group(groups, model, row["method"], row["mols"], lr_choice,
                            paper.row_learning_rate(row, model, grid_lrs),
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

    if metric == "accuracy":  # fine-tuning: one block per model, one column per task or category
        blocks = []
        for model in spec["models"]:
            rows = []
            for index, row in enumerate(spec["rows"]):
                if row.get("models") and model not in row["models"]:
                    continue
                runs = chosen(index, row, model) or []
                paper_values = (row.get("acc") or {}).get(model) or [None] * len(spec["columns"])
                cells = [Cell(stat([r.accuracy.get(column) for r in runs]), value)
                         for column, value in zip(spec["columns"], paper_values)]
                rows.append((row["label"], cells))
            blocks.append((labels.get(model, model) if len(spec["models"]) > 1 else None, rows))
        return TableLayout(spec["title"], spec["column_labels"], blocks, notes)

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
            cells = [Cell(stat([r.val_ppl.get(step) for r in runs]), value)
                     for step, value in zip(spec["steps"], paper_values)]
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
