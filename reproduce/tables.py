"""The paper's tables filled with our numbers, and listings of run groups.

Each cell is the mean ± sample standard deviation over the seeds of a group. A table row takes the
runs whose settings match the row's composed config in the keys where the table's rows differ
(Table 7's grouping and reference, Table 12's samples, ...). When a cell was run at several
learning rates (a search), the lowest-perplexity one is shown (lr_choice "paper": the paper's
rate); the notes under the table say which rate and seeds each cell uses, and the precision where
it is not the paper's (configs/paper/precision_autocast.yaml).

Validation numbers (Tables 1, 3, 6, 7, 12, 14, Figure 3, the wall-clock tables) come in three
columns per model: the paper's, ours (summary.json's final_val_ppl: the token-weighted mean over
the validation set in file order) and the harness protocol's (final_harness_ppl, `val_harness`
records: what GaLore's harness computes, which is what the paper's numbers are; runs with
train.eval_harness, as the paper configs set it). The paper's number is comparable to the
harness column, so its Δ (harness - paper) is there; docs/evaluation.md says how the two differ.
Other cells are followed by (paper value, our mean - paper).

Table 1, 6, 12, 14 cells are final validation PPL (Table 12 adds the estimate's minutes); Tables 7
and Figure 3 final validation loss; Table 3 the validation PPL logged at each step of the table;
Table 13 the alphas of the first MoLS calibration; the fine-tuning tables accuracy. The readers of
the paper's statements without a table of their own: Table 2 and the appendix's training-time
table ("wall_clock": PPL, hours from summary.json's wall_time_s, tokens, and each row's change
against its baseline row), Figure 8 ("train_curves": the training PPL smoothed over 50 steps at
fractions of the run) and Section 5.1's statements ("statements": PPL reductions, MoLS's share of
the training time, its speed-up over Adam).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from configs import ConfigError
from reproduce import paper
from reproduce.jobs import Variant, build_jobs, load_job_config
from reproduce.runs import GroupKey, Run, Stat, pick_group, settings_of, stat
from training.records import read_metrics

HARNESS_LEGEND = ("per model: the paper's value (its harness's protocol), ours (token-weighted over the validation "
                  "set) and ours under the harness's protocol (train.eval_harness), the one the paper's is "
                  "comparable to, with Δ = harness - paper; mean ± std over seeds")
DEFAULT_LEGEND = "ours: mean ± std over seeds; in brackets the paper's value and ours - paper"


@dataclass
class Cell:
    measured: Optional[Stat]
    paper: Optional[float]
    digits: int = 2
    harness: Optional[Stat] = None   # the same number under the harness's protocol (harness columns)
    suffix: str = ""                 # a unit after the values ("%")

    @property
    def difference(self) -> Optional[float]:
        if self.measured is None or self.paper is None:
            return None
        return self.measured.mean - self.paper

    @property
    def harness_difference(self) -> Optional[float]:
        if self.harness is None or self.paper is None:
            return None
        return self.harness.mean - self.paper


def _value(measured: Optional[Stat], digits: int, style: str, suffix: str = "") -> str:
    if measured is None:
        return "–" if style == "markdown" else "--"
    pm = " ± " if style == "markdown" else r"$\pm$"
    value = f"{measured.mean:.{digits}f}{suffix}"
    return value + (f"{pm}{measured.std:.{digits}f}" if measured.std is not None else "")


def format_cell(cell: Cell, style: str) -> str:
    d = cell.digits
    value = _value(cell.measured, d, style, cell.suffix)
    if cell.paper is None:
        return value
    note = f"paper {cell.paper:.{d}f}{cell.suffix}" if style == "markdown" else f"{cell.paper:.{d}f}{cell.suffix}"
    if cell.difference is not None:
        note += (", Δ " if style == "markdown" else ", ") + f"{cell.difference:+.{d}f}"
    return f"{value} ({note})" if style == "markdown" else f"{value} {{\\scriptsize({note})}}"


def harness_cells(cell: Cell, style: str) -> list[str]:
    """A harness column's three cells: the paper's value, ours, ours under the harness's protocol (Δ)."""
    d = cell.digits
    dash = "–" if style == "markdown" else "--"
    paper_value = dash if cell.paper is None else f"{cell.paper:.{d}f}"
    harness = _value(cell.harness, d, style)
    if cell.harness_difference is not None:
        delta = f"{cell.harness_difference:+.{d}f}"
        harness += f" (Δ {delta})" if style == "markdown" else f" {{\\scriptsize({delta})}}"
    return [paper_value, _value(cell.measured, d, style), harness]


@dataclass
class TableLayout:
    """A paper table filled with our numbers: blocks of rows, each row a list of cells; the
    columns in `harness_columns` show three values each (harness_cells)."""
    title: str
    columns: list[str]
    blocks: list[tuple[Optional[str], list[tuple[str, list[Cell]]]]]  # (heading, [(label, cells)])
    notes: list[str]
    harness_columns: set[int] = field(default_factory=set)

    @property
    def legend(self) -> str:
        return HARNESS_LEGEND if self.harness_columns else DEFAULT_LEGEND

    def header(self) -> list[str]:
        out = []
        for i, column in enumerate(self.columns):
            out += [f"{column} paper", f"{column} ours", f"{column} harness"] if i in self.harness_columns else [column]
        return out

    def row_cells(self, cells: list[Cell], style: str) -> list[str]:
        out = []
        for i, cell in enumerate(cells):
            out += harness_cells(cell, style) if i in self.harness_columns else [format_cell(cell, style)]
        return out


# ------------------------------------------------------------------------------------------------
# What a run holds beyond reproduce.runs.Run: the harness protocol's numbers, training records
# ------------------------------------------------------------------------------------------------

_RECORDS: dict[str, list[dict]] = {}


def run_records(run: Run) -> list[dict]:
    """The run's metrics.jsonl records (read once per run directory and process)."""
    key = str(run.path)
    if key not in _RECORDS:
        _RECORDS[key] = read_metrics(Path(run.path) / "metrics.jsonl")
    return _RECORDS[key]


def run_summary(run: Run) -> dict:
    path = Path(run.path) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def harness_value(run: Run, metric: str, step: Optional[int] = None) -> Optional[float]:
    """The run's number under the harness's protocol: final PPL ("ppl") or loss ("loss") from
    summary.json, or the `val_harness` PPL logged at `step`; None for a run without it."""
    if step is not None:
        return next((float(r["ppl"]) for r in reversed(run_records(run))
                     if r["kind"] == "val_harness" and r["step"] == step and r.get("ppl") is not None), None)
    return run_summary(run).get(f"final_harness_{metric}")


# ------------------------------------------------------------------------------------------------
# Which runs a row takes
# ------------------------------------------------------------------------------------------------

def row_expectations(spec: dict, model: str, configs: list = (), grid=None) -> list[Optional[dict]]:
    """For each row of a table: the settings its runs must have at `model`, i.e. the row's config
    composed as `run` composes it (with the experiment's overlays, `configs`), in the keys where
    the table's rows differ (None for a row that cannot be composed, e.g. SGG's, which has no
    method)."""
    return [None if composed is None else expect for composed, expect in _compose_rows(spec, model, configs, grid)]


def _compose_rows(spec: dict, model: str, configs: list = (), grid=None) -> list[tuple[Optional[dict], dict]]:
    """(the row's composed settings or None, its expectations) for each row (row_expectations)."""
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
    return [(flat, {"mols.enabled": on, **({k: flat[k] for k in varying if k in flat} if flat else {})})
            for flat, on in zip(composed, enabled)]


def experiment_configs(number: str) -> list:
    """The overlays `run` adds to every job of the experiment (its grid's configs)."""
    return paper.preset(number).configs if "grid" in paper.experiment(number) else []


HARNESS_METRICS = ("final", "final_loss", "steps", "wall_clock")   # validation numbers with the paper's beside


class _Rows:
    """The runs of each (row, model) of a table, and the notes that say which ones were taken."""

    def __init__(self, number: str, groups: dict[GroupKey, list[Run]], lr_choice: str):
        self.spec = paper.table(number)
        self.groups, self.lr_choice = groups, lr_choice
        self.labels = self.spec.get("model_labels", {})
        self.notes: list[str] = []
        configs = experiment_configs(number)
        self.grid = paper.preset(number) if "grid" in paper.experiment(number) else None
        models = sorted({m for m in self.spec["models"]} | {m for r in self.spec["rows"] for m in r.get("models", [])})
        self.composed = {model: _compose_rows(self.spec, model, configs, self.grid) for model in models}

    def runs(self, index: int, row: dict, model: str, finished_only: bool) -> Optional[list[Run]]:
        if not row.get("method") or (row.get("models") and model not in row["models"]):
            return None
        composed, expect = self.composed[model][index]
        picked = pick_group(self.groups, model, row["method"], row["mols"], self.lr_choice,
                            paper.row_learning_rate(row, model, self.grid.lrs if self.grid else None),
                            finished_only=finished_only, expect=None if composed is None else expect)
        if picked is None:
            return None
        key, runs = picked
        note = f"{row['label']} @ {self.labels.get(model, model)}: lr {key[3]:.1e}, seeds {','.join(str(r.seed) for r in runs)}"
        wanted = (composed or {}).get("train.precision")
        used = sorted({str(r.settings.get("train.precision")) for r in runs})
        if wanted and used != [wanted]:
            note += f", train.precision {'/'.join(used)} (the paper's configs: {wanted})"
        self.notes.append(note)
        return runs

    def by_label(self, label: str) -> tuple[int, dict]:
        return next((i, r) for i, r in enumerate(self.spec["rows"]) if r["label"] == label)


def build_table(number: str, groups: dict[GroupKey, list[Run]], lr_choice: str = "best") -> TableLayout:
    rows = _Rows(number, groups, lr_choice)
    spec, metric = rows.spec, rows.spec["metric"]
    builder = {"alphas": _alphas_table, "accuracy": _accuracy_table, "steps": _steps_table,
               "wall_clock": _wall_clock_table, "train_curves": _train_curves_table,
               "statements": _statements_table}.get(metric, _final_table)
    table = builder(rows)
    if spec.get("paper_best_hand_tuned") is not None:
        table.notes.append(f"the paper's best hand-tuned setting: {spec['paper_best_hand_tuned']:.3f} "
                           f"(its grid is not printed)")
    table.notes[:0] = list(dict.fromkeys(rows.notes))
    return table


def _alphas_table(rows: _Rows) -> TableLayout:
    """One row per module class, one column per model."""
    spec = rows.spec
    alphas: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for model in spec["models"]:
        for index, row in enumerate(spec["rows"]):
            for run in rows.runs(index, row, model, finished_only=False) or []:
                for cls, value in ((run.calibration or {}).get("alphas") or {}).items():
                    alphas[cls][model].append(value)
    order = ["emb", "head", "qk", "vo", "mlp", "attn", "other"]
    classes = sorted(alphas, key=lambda c: (order.index(c) if c in order else 99, c))
    cells = [(cls, [Cell(stat(alphas[cls].get(m, [])), None, 3) for m in spec["models"]]) for cls in classes]
    return TableLayout(spec["title"], [rows.labels.get(m, m) for m in spec["models"]], [(None, cells)], [])


def _accuracy_table(rows: _Rows) -> TableLayout:
    """Fine-tuning: one block per model, one column per task or category."""
    spec = rows.spec
    blocks = []
    for model in spec["models"]:
        table_rows = []
        for index, row in enumerate(spec["rows"]):
            if row.get("models") and model not in row["models"]:
                continue
            runs = rows.runs(index, row, model, finished_only=False) or []
            paper_values = (row.get("acc") or {}).get(model) or [None] * len(spec["columns"])
            cells = [Cell(stat([r.accuracy.get(column) for r in runs]), value)
                     for column, value in zip(spec["columns"], paper_values)]
            table_rows.append((row["label"], cells))
        blocks.append((rows.labels.get(model, model) if len(spec["models"]) > 1 else None, table_rows))
    return TableLayout(spec["title"], spec["column_labels"], blocks, [])


def _final_table(rows: _Rows) -> TableLayout:
    """Final PPL (final, curves, snr) or final loss, per model; validation numbers with the paper's
    in three columns where the table has them."""
    spec, metric = rows.spec, rows.spec["metric"]
    loss = metric == "final_loss"
    values = "loss" if loss else "ppl"
    harness = metric in HARNESS_METRICS
    section_rows: dict[Optional[str], list] = {}
    for index, row in enumerate(spec["rows"]):
        cells = []
        for model in spec["models"]:
            runs = rows.runs(index, row, model, finished_only=metric in ("final", "final_loss", "curves", "snr"))
            measured = stat([r.final_loss if loss else r.final_ppl for r in runs]) if runs else None
            protocol = stat([harness_value(r, values) for r in runs]) if runs and harness else None
            cells.append(Cell(measured, (row.get(values) or {}).get(model), 3 if loss else 2, harness=protocol))
            if spec.get("minutes"):
                cells.append(Cell(stat([r.estimate_minutes for r in runs]) if runs else None,
                                  (row.get("minutes") or {}).get(model)))
        section_rows.setdefault(row.get("section"), []).append((row["label"], cells))
    columns = []
    for model in spec["models"]:
        columns.append(rows.labels.get(model, model))
        if spec.get("minutes"):
            columns.append("estimation (min)")
    harness_columns = {i for i, c in enumerate(columns) if c != "estimation (min)"} if harness else set()
    return TableLayout(spec["title"], columns, list(section_rows.items()), [], harness_columns)


def _steps_table(rows: _Rows) -> TableLayout:
    """One block per model, one column per step (the validation PPL logged there)."""
    spec = rows.spec
    blocks = []
    for model in spec["models"]:
        table_rows = []
        for index, row in enumerate(spec["rows"]):
            runs = rows.runs(index, row, model, finished_only=False) or []
            paper_values = row["ppl"].get(model) or [None] * len(spec["steps"])
            cells = [Cell(stat([r.val_ppl.get(step) for r in runs]), value,
                          harness=stat([harness_value(r, "ppl", step) for r in runs]))
                     for step, value in zip(spec["steps"], paper_values)]
            table_rows.append((row["label"], cells))
        blocks.append((f"Pre-training {rows.labels.get(model, model)}", table_rows))
    return TableLayout(spec["title"], spec["step_labels"], blocks, [], set(range(len(spec["steps"]))))


# ------------------------------------------------------------------------------------------------
# The paper's statements without a table of their own
# ------------------------------------------------------------------------------------------------

def _change(value: Optional[float], base: Optional[float], relative: bool) -> Optional[float]:
    if value is None or base is None:
        return None
    return 100.0 * (value - base) / base if relative else value - base


def _mean(values) -> Optional[float]:
    found = stat(list(values))
    return found.mean if found else None


def _wall_clock_table(rows: _Rows) -> TableLayout:
    """Table 2 and the appendix's training-time table (one model, 1.3B): per row the final PPL
    (paper, ours, harness), the training hours (summary.json wall_time_s: the loop, set-up
    excluded), the tokens trained on, and the change of PPL and of hours against the row's `base`
    row in % (the paper prints their magnitudes; signed here, so -7.30 is a 7.30% lower PPL)."""
    spec = rows.spec
    (model,) = spec["models"]
    picked = {row["label"]: rows.runs(i, row, model, finished_only=True) or [] for i, row in enumerate(spec["rows"])}

    def summed(runs: list[Run], key: str, scale: float) -> Optional[Stat]:
        return stat([run_summary(r)[key] / scale for r in runs if run_summary(r).get(key) is not None])

    def ppl(runs: list[Run]) -> Optional[Stat]:
        return stat([r.final_ppl for r in runs])

    def hours(runs: list[Run]) -> Optional[Stat]:
        return summed(runs, "wall_time_s", 3600)

    table_rows = []
    for row in spec["rows"]:
        runs = picked[row["label"]]
        cells = [Cell(ppl(runs), row["ppl"][model], harness=stat([harness_value(r, "ppl") for r in runs])),
                 Cell(hours(runs), row["hours"][model]), Cell(summed(runs, "tokens_seen", 1e9), None)]
        base = rows.by_label(row["base"])[1] if row.get("base") else None
        for measure, key in ((ppl, "ppl"), (hours, "hours")):
            if base is None:
                cells.append(Cell(None, None))
                continue
            ours, theirs = measure(runs), measure(picked[base["label"]])
            change = _change(ours.mean if ours else None, theirs.mean if theirs else None, relative=True)
            cells.append(Cell(None if change is None else Stat(change, None, 1),
                              _change(row[key][model], base[key][model], relative=True), suffix="%"))
        table_rows.append((row["label"], cells))
    columns = ["PPL", "training time (h)", "tokens (B)", "PPL vs base", "time vs base"]
    notes = ["the changes are against " + ", ".join(f"{r['base']} for {r['label']}" for r in spec["rows"] if r.get("base"))]
    return TableLayout(spec["title"], columns, [(None, table_rows)], notes, {0})


SMOOTHING_STEPS = 50   # Figure 8's smoothing window (iterations)


def smoothed_train_ppl(records: list[dict], step: int, window: int = SMOOTHING_STEPS) -> Optional[float]:
    """exp of the mean training loss of the `train` records logged in the `window` steps up to
    `step` (Figure 8's curves, smoothed by 50 iterations); None when none were logged there."""
    losses = [float(r["loss"]) for r in records
              if r["kind"] == "train" and step - window < r["step"] <= step and r.get("loss") is not None]
    return math.exp(min(sum(losses) / len(losses), 50)) if losses else None


def _train_curves_table(rows: _Rows) -> TableLayout:
    """Figure 8: one block per model, the training PPL (smoothed over 50 steps) at fractions of each
    run's steps; the figure prints no numbers."""
    spec = rows.spec
    blocks = []
    for model in spec["models"]:
        table_rows = []
        for index, row in enumerate(spec["rows"]):
            runs = rows.runs(index, row, model, finished_only=False) or []
            cells = []
            for fraction in spec["fractions"]:
                values = []
                for run in runs:
                    steps = run.settings.get("train.steps")
                    if isinstance(steps, int):
                        values.append(smoothed_train_ppl(run_records(run), round(fraction * steps)))
                cells.append(Cell(stat(values), None))
            table_rows.append((row["label"], cells))
        blocks.append((rows.labels.get(model, model), table_rows))
    columns = [f"{100 * f:g}% of steps" for f in spec["fractions"]]
    return TableLayout(spec["title"], columns, blocks,
                       [f"training PPL: exp of the mean training loss over the last {SMOOTHING_STEPS} steps"])


def speedup(base_runs: list[Run], runs: list[Run]) -> Optional[float]:
    """How many times fewer steps `runs` need to reach the base runs' final validation PPL: the
    base's steps over the first logged step at which the mean validation PPL of `runs` is at or
    below the base's mean final PPL; None when it never gets there (or a side has no data)."""
    target = _mean(r.final_ppl for r in base_runs)
    steps = _mean(r.settings.get("train.steps") for r in base_runs if isinstance(r.settings.get("train.steps"), int))
    if target is None or not steps or not runs:
        return None
    shared = sorted(set.intersection(*(set(r.val_ppl) for r in runs)) - {0})
    reached = next((s for s in shared if sum(r.val_ppl[s] for r in runs) / len(runs) <= target), None)
    return steps / reached if reached else None


def _statements_table(rows: _Rows) -> TableLayout:
    """Section 5.1's statements, one row each, per model: the final PPL of a row against its base
    (`ppl_change`: the difference, as Table 1's Reduction rows; under the harness's protocol where
    every run has it, else ours, as the notes say), MoLS's share of the training time
    (`time_change`, %) and the speed-up over the base (`speedup`, x; our validation PPL). Rows
    without a `measure` are the bases, not printed."""
    spec = rows.spec
    measures = {"ppl_change": 2, "time_change": 2, "speedup": 2}
    table_rows, notes = [], []
    for index, row in enumerate(spec["rows"]):
        if "measure" not in row:  # a base of the others
            continue
        base_index, base_row = rows.by_label(row["base"])
        cells = []
        for model in spec["models"]:
            if row.get("models") and model not in row["models"]:
                cells.append(Cell(None, None))
                continue
            runs = rows.runs(index, row, model, finished_only=True) or []
            base = rows.runs(base_index, base_row, model, finished_only=True) or []
            value = None
            if runs and base and row["measure"] == "ppl_change":
                everyone = runs + base
                if all(harness_value(r, "ppl") is not None for r in everyone):
                    value = _change(_mean(harness_value(r, "ppl") for r in runs),
                                    _mean(harness_value(r, "ppl") for r in base), relative=False)
                    notes.append(f"{row['label']} @ {rows.labels.get(model, model)}: the harness's protocol")
                else:
                    value = _change(_mean(r.final_ppl for r in runs), _mean(r.final_ppl for r in base), relative=False)
                    notes.append(f"{row['label']} @ {rows.labels.get(model, model)}: our protocol (no harness values)")
            elif runs and base and row["measure"] == "time_change":
                value = _change(_mean(run_summary(r).get("wall_time_s") for r in runs),
                                _mean(run_summary(r).get("wall_time_s") for r in base), relative=True)
            elif runs and base:
                value = speedup(base, runs)
            cells.append(Cell(None if value is None else Stat(value, None, 1), (row.get("paper") or {}).get(model),
                              measures[row["measure"]], suffix={"time_change": "%", "speedup": "x"}.get(row["measure"], "")))
        table_rows.append((row["label"], cells))
    return TableLayout(spec["title"], [rows.labels.get(m, m) for m in spec["models"]], [(None, table_rows)], notes)


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------

def render_markdown(table: TableLayout) -> str:
    header = table.header()
    lines = [f"**{table.title}** ({table.legend})", "",
             "| Method | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for heading, rows in table.blocks:
        if heading:
            lines.append(f"| *{heading}* |" + " |" * len(header))
        for label, cells in rows:
            lines.append(f"| {label} | " + " | ".join(table.row_cells(cells, "markdown")) + " |")
    if table.notes:
        lines += ["", "Learning rate and seeds per cell, and notes:"] + [f"- {note}" for note in table.notes]
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    for char in "&%_#$":
        text = text.replace(char, "\\" + char)
    return text


def render_latex(table: TableLayout) -> str:
    header = table.header()
    width = len(header) + 1
    legend = latex_escape(table.legend).replace("±", r"$\pm$").replace("Δ", r"$\Delta$")
    lines = [r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(table.title)}. {legend[0].upper() + legend[1:]}.}}",
             rf"\begin{{tabular}}{{l{'c' * len(header)}}}",
             r"\toprule", "Method & " + " & ".join(latex_escape(c) for c in header) + r" \\"]
    for heading, rows in table.blocks:
        lines.append(r"\midrule")
        if heading:
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{latex_escape(heading)}}}}} \\")
        for label, cells in rows:
            lines.append(latex_escape(label) + " & " + " & ".join(table.row_cells(cells, "latex")) + r" \\")
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
