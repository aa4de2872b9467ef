#!/usr/bin/env python3
"""Module SNR over training (the paper's Figure 1) from runs with `mols.track_every > 0`.

    python scripts/plot_snr.py RUN_DIR [RUN_DIR ...] [--out snr.png]

One panel per run, one line per module class, log scale. Calibration points (the SNRs that set
the alphas) are marked. Reads only metrics.jsonl.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from training.records import read_metrics  # noqa: E402

ORDER = ["emb", "head", "qk", "vo", "mlp", "attn", "other"]


def snr_series(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], list[dict]]:
    records = read_metrics(run_dir / "metrics.jsonl")
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if record["kind"] == "snr":
            for cls, value in record["module_snr"].items():
                series.setdefault(cls, []).append((record["step"], value))
    calibrations = [r for r in records if r["kind"] == "mols_calibration"]
    return series, calibrations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("snr.png"))
    parser.add_argument("--include-other", action="store_true", help="also draw the unscaled 'other' class")
    args = parser.parse_args(argv)
    problems = [f"{run}: no metrics.jsonl" for run in args.runs if not (run / "metrics.jsonl").exists()]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    fig, axes = plt.subplots(1, len(args.runs), figsize=(5.5 * len(args.runs), 4), squeeze=False)
    for ax, run in zip(axes[0], args.runs):
        series, calibrations = snr_series(run)
        if not series and not calibrations:
            print(f"{run}: no SNR records (train with mols.enabled=true and mols.track_every>0)", file=sys.stderr)
            return 2
        classes = sorted(set(series) | {c for cal in calibrations for c in cal["module_snr"]},
                         key=lambda c: (ORDER.index(c.rsplit(".", 1)[-1]) if c.rsplit(".", 1)[-1] in ORDER else 99, c))
        for i, cls in enumerate(c for c in classes if args.include_other or c != "other"):
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
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
