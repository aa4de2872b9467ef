#!/usr/bin/env python3
"""Table 13: the MoLS multipliers across model sizes. The alphas are the first calibration of each
Adam+MoLS run: this preset runs Table 1's Adam+MoLS cells (60M-1.3B, seed 0); 3B/7B come from
Table 3's 8-bit Adam+MoLS runs (scripts/table3.py, two nodes).

    scripts/table13.py --dry-run
    scripts/results.py runs/paper/table13 runs/paper/table3 --table 13      # or scripts/alpha_table.py RUN...

A thin wrapper: `scripts/table13.py [options]` is `scripts/sweep.py --table 13 [options]`
(--partition, --time, --mode local, --seeds ...; see scripts/sweep.py --help).
"""
import sys

if __package__:  # python -m scripts.table13
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESET = "13"


def main(argv: list[str] | None = None) -> int:
    return sweep.main(["--table", PRESET, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
