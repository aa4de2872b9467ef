#!/usr/bin/env python3
"""Table 1: LLaMA 60M-1.3B on C4, final validation perplexity. Nine rows (Adam, NAdam, LAMB, Muon,
Adam+MoLS, Adam-mini, GaLore, APOLLO, Adam-mini+MoLS) x four sizes x seeds 0-2, at the paper's
learning rates (Tables 8/9): 108 jobs on one 8-GPU node each.

A thin wrapper: `scripts/table1.py [options]` is `scripts/sweep.py --table 1 [options]`, e.g.
`scripts/table1.py --dry-run`, or `scripts/table1.py --partition gpu --time 48:00:00`.
"""
import sys

if __package__:  # python -m scripts.table1
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

if __name__ == "__main__":
    sys.exit(sweep.main(["--table", "1", *sys.argv[1:]]))
