#!/usr/bin/env python3
"""The README's main job: the quickstart config with AdamW and with AdamW+MoLS, side by side.

    python scripts/quickstart.py [--set train.steps=100 ...]

Both runs share the seed, data order and validation set; only `mols.enabled` differs. Each
run's directory (config, metrics, checkpoints, summary) is printed and kept under runs/.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override for both runs, e.g. --set train.steps=100")
    parser.add_argument("--out-dir", default=str(ROOT / "runs" / time.strftime("quickstart-%Y%m%d-%H%M%S")))
    args = parser.parse_args()
    runs = {"AdamW": ["mols.enabled=false"], "AdamW + MoLS": ["mols.enabled=true"]}
    summaries = {}
    for label, extra in runs.items():
        name = "adamw-mols" if "MoLS" in label else "adamw"
        overrides = [f"run.out_dir={args.out_dir}", f"run.name={name}", *extra, *args.set]
        print(f"\n=== {label} ===", flush=True)
        command = [sys.executable, str(ROOT / "train.py"), "--config", args.config]
        for item in overrides:
            command += ["--set", item]
        code = subprocess.call(command, cwd=ROOT)
        if code:
            print(f"{label}: train.py exited with code {code}", file=sys.stderr)
            return code
        summaries[label] = json.loads((Path(args.out_dir) / name / "summary.json").read_text())

    print("\n=== quickstart result (validation on the embedded corpus's held-out split) ===")
    print(f"{'method':<16}{'val loss':>10}{'val ppl':>10}{'minutes':>9}")
    for label, s in summaries.items():
        print(f"{label:<16}{s['final_val_loss']:>10.4f}{s['final_val_ppl']:>10.2f}{s['wall_time_s'] / 60:>9.1f}")
    mols = summaries["AdamW + MoLS"]
    if "mols_alphas" in mols:
        print("\nMoLS module SNRs and learning-rate multipliers (alpha):")
        for cls in sorted(mols["mols_module_snr"], key=lambda c: -mols["mols_module_snr"][c]):
            print(f"  {cls:<8} SNR {mols['mols_module_snr'][cls]:10.4g}   alpha {mols['mols_alphas'][cls]:6.3f}")
    print(f"\nrun directories: {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
