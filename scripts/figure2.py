#!/usr/bin/env python3
"""Figure 2: validation perplexity on OpenWebText, LLaMA 60M-350M: Adam, NAdam, LAMB, Muon and
Adam+MoLS at the C4 learning rates (Table 8). 15 jobs, seed 0.

    scripts/figure2.py --dry-run
    scripts/results.py runs/paper/figure2 --table figure2 --plot figure2.png

A thin wrapper: `scripts/figure2.py [options]` is `scripts/sweep.py --table figure2 [options]`
(--partition, --time, --mode local, --seeds ...; see scripts/sweep.py --help).
"""
import sys

if __package__:  # python -m scripts.figure2
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESET = "figure2"


def main(argv: list[str] | None = None) -> int:
    return sweep.main(["--table", PRESET, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
