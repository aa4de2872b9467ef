#!/usr/bin/env python3
"""Figure 1: module SNRs over training, LLaMA 60M-350M with plain Adam on C4 (MoLS measures only:
fixed multipliers 1, SNRs every 100 steps from 512 extra sequences). 3 jobs, seed 0.

    scripts/figure1.py --dry-run
    scripts/plot_snr.py runs/paper/figure1/*/ --out figure1.png

A thin wrapper: `scripts/figure1.py [options]` is `scripts/sweep.py --table figure1 [options]`
(--partition, --time, --mode local, --seeds ...; see scripts/sweep.py --help).
"""
import sys

if __package__:  # python -m scripts.figure1
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESET = "figure1"


def main(argv: list[str] | None = None) -> int:
    return sweep.main(["--table", PRESET, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
