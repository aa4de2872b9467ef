#!/usr/bin/env python3
"""Table 3: LLaMA 3B/7B on C4, validation perplexity at 30K-150K steps. 8-bit Adam, Muon, GaLore,
APOLLO and 8-bit Adam+MoLS, gradient checkpointing, seed 0: 10 jobs on two 8-GPU nodes each.

A thin wrapper: `scripts/table3.py [options]` is `scripts/sweep.py --table 3 [options]`, e.g.
`scripts/table3.py --dry-run`, or `scripts/table3.py --partition gpu --time 48:00:00`.
"""
import sys

if __package__:  # python -m scripts.table3
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

if __name__ == "__main__":
    sys.exit(sweep.main(["--table", "3", *sys.argv[1:]]))
