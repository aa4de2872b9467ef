#!/usr/bin/env python3
"""Packed batches in order vs shuffled within windows: validation loss over seeds, side by side.

    python scripts/packing_gain.py [--seeds 0,1,2] [--set train.steps=250 ...]

Runs configs/quickstart.yaml with the tiny GPT-2 (gpt2_tiny) for each seed twice, identical but
for data.pack_window (0: consecutive chunks of a few documents per batch; 1024: shuffled), and
prints the final validation losses, their means and the difference. The seed sets both the
initialisation and the data order (run.seed, data.shuffle_seed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--windows", default="0,1024")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="packing-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    windows = [int(w) for w in args.windows.split(",")]
    losses: dict[int, list[float]] = {w: [] for w in windows}
    for seed in seeds:
        for window in windows:
            name = f"w{window}-s{seed}"
            argv = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "quickstart.yaml")]
            for item in ["model.size=gpt2_tiny", f"run.seed={seed}", f"data.shuffle_seed={seed}",
                         f"data.pack_window={window}", f"run.out_dir={out}", f"run.name={name}", *args.set]:
                argv += ["--set", item]
            if subprocess.call(argv, cwd=ROOT) != 0:
                return 1
            losses[window].append(json.loads((out / name / "summary.json").read_text())["final_val_loss"])
    print(f"\nfinal validation loss, gpt2_tiny on the embedded corpus, seeds {args.seeds} ({out})")
    for window in windows:
        values = losses[window]
        spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        print(f"  pack_window {window:>5}: {'  '.join(f'{v:.4f}' for v in values)}   mean {statistics.fmean(values):.4f}{spread}")
    if len(windows) == 2:
        gain = statistics.fmean(losses[windows[0]]) - statistics.fmean(losses[windows[1]])
        print(f"  shuffled windows lower the loss by {gain:.3f} nats on average")
    return 0


if __name__ == "__main__":
    sys.exit(main())
