#!/usr/bin/env python3
"""The paper's learning-rate search: every cell of a paper table at each rate of {1e-4, 2.5e-4,
5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2}, seed 0. --table 1 (default): Table 1's LLaMA 60M-1.3B cells
(252 jobs); --table 3: LLaMA 3B/7B (70 jobs, two nodes each); --table 6: GPT-2 125M/355M and
Qwen2.5-350M (105 jobs). Narrow it with --models / --methods. Read it with
`scripts/results.py runs/paper/lr_search`: the best rate of each cell is marked.

A thin wrapper: `scripts/lr_search.py [--table N] [options]` is `scripts/sweep.py --table
lr_search[_N] [options]`, e.g. `scripts/lr_search.py --table 6 --dry-run`.
"""
import sys

if __package__:  # python -m scripts.lr_search
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESETS = {"1": "lr_search", "3": "lr_search_3", "6": "lr_search_6"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    table = "1"
    if "--table" in argv:
        at = argv.index("--table")
        table = argv[at + 1] if at + 1 < len(argv) else ""
        del argv[at:at + 2]
    if table not in PRESETS:
        print(f"error: --table must be one of {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    return sweep.main(["--table", PRESETS[table], *argv])


if __name__ == "__main__":
    sys.exit(main())
