#!/usr/bin/env python3
"""Figure 5: LLaMA-130M for 100K steps (5x Chinchilla tokens) on C4: Adam, NAdam, LAMB, Muon,
Adam+MoLS. 5 jobs, seed 0.

    scripts/figure5.py --dry-run
    scripts/results.py runs/paper/figure5 --table figure5 --plot figure5.png

A thin wrapper: `scripts/figure5.py [options]` is `scripts/sweep.py --table figure5 [options]`
(--partition, --time, --mode local, --seeds ...; see scripts/sweep.py --help).
"""
import sys

if __package__:  # python -m scripts.figure5
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESET = "figure5"


def main(argv: list[str] | None = None) -> int:
    return sweep.main(["--table", PRESET, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
