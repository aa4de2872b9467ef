#!/usr/bin/env python3
"""Table 12: SNR estimation samples at LLaMA-130M (Adam+MoLS), 2,048 to 32,768 sequences: final
validation perplexity and the estimate's time (the run's mols_calibration `seconds`). 5 jobs, seed 0.

    scripts/table12.py --dry-run
    scripts/results.py runs/paper/table12 --table 12 ; scripts/plot_ablation.py runs/paper/table12 --table 12

A thin wrapper: `scripts/table12.py [options]` is `scripts/sweep.py --table 12 [options]`
(--partition, --time, --mode local, --seeds ...; see scripts/sweep.py --help).
"""
import sys

if __package__:  # python -m scripts.table12
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESET = "12"


def main(argv: list[str] | None = None) -> int:
    return sweep.main(["--table", PRESET, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
