#!/usr/bin/env python3
"""The MoLS multipliers of several runs side by side (the paper's Table 13: alphas across sizes).

    python scripts/alpha_table.py RUN_DIR [RUN_DIR ...] [--snr]

Reads each run's mols.json (written at calibration) and config.yaml; one column per run, labelled
with its model size.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ORDER = ["emb", "head", "qk", "vo", "mlp", "attn"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--snr", action="store_true", help="print the module SNRs instead of the alphas")
    args = parser.parse_args(argv)
    columns = []
    for run in args.runs:
        path = run / "mols.json"
        if not path.exists():
            print(f"{run}: no mols.json (not a MoLS run, or not calibrated yet)", file=sys.stderr)
            return 2
        calibration = json.loads(path.read_text())["calibrations"][0]
        size = yaml.safe_load((run / "config.yaml").read_text())["model"]["size"]
        columns.append((size, calibration["module_snr" if args.snr else "alphas"], calibration["reference"]))
    if len({size for size, _, _ in columns}) < len(columns):  # same size twice: name the runs
        columns = [(run.name, values, ref) for run, (_, values, ref) in zip(args.runs, columns)]
    classes = sorted({c for _, values, _ in columns for c in values if c != "other"},
                     key=lambda c: (ORDER.index(c) if c in ORDER else 99, c))
    print("| module | " + " | ".join(size for size, _, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for cls in classes:
        cells = [f"{values[cls]:.4g}" if cls in values else "-" for _, values, _ in columns]
        print(f"| {cls} | " + " | ".join(cells) + " |")
    print("| reference | " + " | ".join(ref for _, _, ref in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
