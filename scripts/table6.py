#!/usr/bin/env python3
"""Table 6: GPT-2 125M/355M and Qwen2.5 350M on C4, final validation perplexity. Adam, NAdam, LAMB,
Muon and Adam+MoLS, seed 0: 15 jobs. The paper gives no learning rates for these models;
learning_rates.yaml uses the nearest LLaMA size's.

A thin wrapper: `scripts/table6.py [options]` is `scripts/sweep.py --table 6 [options]`, e.g.
`scripts/table6.py --dry-run`, or `scripts/table6.py --partition gpu --time 48:00:00`.
"""
import sys

if __package__:  # python -m scripts.table6
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

if __name__ == "__main__":
    sys.exit(sweep.main(["--table", "6", *sys.argv[1:]]))
