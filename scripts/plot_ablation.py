#!/usr/bin/env python3
"""Bars of one row per setting, ours beside the paper's: Table 7 (groupings, final loss), Table 12
(estimation samples: final PPL and the estimate's minutes), Figure 3 (hand-tuned module learning
rates vs MoLS, final loss; the paper's best hand-tuned value as a line).

    python scripts/plot_ablation.py RUNS_ROOT [RUNS_ROOT ...] --table 7|12|figure3 [--out plot.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if __package__:
    from scripts import results  # noqa: E402
else:  # run as scripts/plot_ablation.py
    import results  # noqa: E402

TABLES = ("7", "12", "figure3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--table", choices=TABLES, required=True)
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: <table>.png)")
    parser.add_argument("--lr", dest="lr_choice", choices=["best", "paper"], default="best")
    args = parser.parse_args(argv)
    runs = results.find_runs(args.roots)
    if not runs:
        print(f"error: no run directories under {', '.join(map(str, args.roots))}", file=sys.stderr)
        return 1
    table = results.build_table(args.table, results.group_runs(runs), args.lr_choice)
    spec = results.paper_table(args.table)
    rows = [(label, cells) for _, block in table.blocks for label, cells in block]
    panels = [(0, "final validation perplexity" if spec["metric"] == "final" else "final validation loss")]
    if spec.get("minutes"):
        panels.append((1, "SNR estimation time (min)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6, 1.1 * len(rows)) * len(panels) / 1.4, 4.5), squeeze=False)
    for ax, (column, ylabel) in zip(axes[0], panels):
        x = range(len(rows))
        ours = [cells[column].measured.mean if cells[column].measured else float("nan") for _, cells in rows]
        errors = [cells[column].measured.std or 0 if cells[column].measured else 0 for _, cells in rows]
        paper = [cells[column].paper if cells[column].paper is not None else float("nan") for _, cells in rows]
        ax.bar([i - 0.2 for i in x], ours, width=0.4, yerr=errors, label="ours")
        ax.bar([i + 0.2 for i in x], paper, width=0.4, label="paper")
        if spec.get("paper_best_hand_tuned") is not None and column == 0:
            ax.axhline(spec["paper_best_hand_tuned"], color="k", linestyle=":", label="paper: best hand-tuned")
        values = [v for v in ours + paper if v == v]
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
    out = args.out or Path(f"{args.table}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
