#!/usr/bin/env python3
"""Table 14: the extra baselines of the appendix at LLaMA 60M-1.3B: Lion and Adafactor (SOAP once
optimizers/ has it), over the paper's learning-rate grid since the paper gives no rates for them
(56 jobs, seed 0). The other rows are Table 1's runs; SGG's numbers are copied by the paper.

    scripts/table14.py --dry-run
    scripts/results.py runs/paper/table1 runs/paper/table14 --table 14

A thin wrapper: `scripts/table14.py [options]` is `scripts/sweep.py --table 14 [options]`
(--partition, --time, --mode local, --seeds ...; see scripts/sweep.py --help).
"""
import sys

if __package__:  # python -m scripts.table14
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESET = "14"


def main(argv: list[str] | None = None) -> int:
    return sweep.main(["--table", PRESET, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
