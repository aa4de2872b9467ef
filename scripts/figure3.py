#!/usr/bin/env python3
"""Figure 3: hand-tuned module learning rates against MoLS at LLaMA-130M (final validation loss):
lr_base {1e-3, 2.5e-3} x alpha_MLP {1, 2} x alpha_others (embedding, head) {1, 2, 4}, set with
mols.fixed_multipliers and ramped in over warm-up like MoLS's alphas, plus Adam+MoLS. 13 jobs.

    scripts/figure3.py --dry-run
    scripts/results.py runs/paper/figure3 --table figure3 ; scripts/plot_ablation.py runs/paper/figure3 --table figure3

A thin wrapper: `scripts/figure3.py [options]` is `scripts/sweep.py --table figure3 [options]`
(--partition, --time, --mode local, --seeds ...; see scripts/sweep.py --help).
"""
import sys

if __package__:  # python -m scripts.figure3
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESET = "figure3"


def main(argv: list[str] | None = None) -> int:
    return sweep.main(["--table", PRESET, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
