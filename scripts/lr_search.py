"""The paper's learning-rate search: every Table 1 cell at each rate of {1e-4, 2.5e-4, 5e-4, 1e-3,
2.5e-3, 5e-3, 1e-2}, seed 0 (252 jobs; narrow it with --models / --methods). Read it with
`scripts/results.py runs/paper/lr_search`: the best rate of each cell is marked.

A thin wrapper: `scripts/lr_search.py [options]` is `scripts/sweep.py --table lr_search [options]`, e.g.
`scripts/lr_search.py --dry-run`, or `scripts/lr_search.py --partition gpu --time 48:00:00`.
"""
import sys

if __package__:  # python -m scripts.lr_search
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

if __name__ == "__main__":
    sys.exit(sweep.main(["--table", "lr_search", *sys.argv[1:]]))
