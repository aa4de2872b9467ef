#!/usr/bin/env python3
"""Figure 7: module SNRs over training beyond LLaMA on C4: LLaMA-60M on OpenWebText and GPT2-125M on
C4 (its head is tied to the embedding: one class), plain Adam with SNR tracking. 2 jobs, seed 0.

    scripts/figure7.py --dry-run
    scripts/plot_snr.py runs/paper/figure7/*/ --out figure7.png

A thin wrapper: `scripts/figure7.py [options]` is `scripts/sweep.py --table figure7 [options]`
(--partition, --time, --mode local, --seeds ...; see scripts/sweep.py --help).
"""
import sys

if __package__:  # python -m scripts.figure7
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESET = "figure7"


def main(argv: list[str] | None = None) -> int:
    return sweep.main(["--table", PRESET, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
