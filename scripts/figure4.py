#!/usr/bin/env python3
"""Figure 4: LLaMA-130M with sequence length 1024 on C4 (everything else as the 256-token runs):
Adam, NAdam, LAMB, Muon, Adam+MoLS. 5 jobs, seed 0.

    scripts/figure4.py --dry-run
    scripts/results.py runs/paper/figure4 --table figure4 --plot figure4.png

A thin wrapper: `scripts/figure4.py [options]` is `scripts/sweep.py --table figure4 [options]`
(--partition, --time, --mode local, --seeds ...; see scripts/sweep.py --help).
"""
import sys

if __package__:  # python -m scripts.figure4
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESET = "figure4"


def main(argv: list[str] | None = None) -> int:
    return sweep.main(["--table", PRESET, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
