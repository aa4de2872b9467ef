#!/usr/bin/env python3
"""Table 7: the grouping ablation at LLaMA-130M on C4 (final validation loss). Adam, and Adam+MoLS
with the groupings {attn, mlp} (reference attn), {attn, mlp, emb} (reference attn), {qk, vo, mlp,
emb} (reference vo) and the full {qk, vo, mlp, emb, head}: 5 jobs, seed 0.

    scripts/table7.py --dry-run
    scripts/results.py runs/paper/table7 --table 7 [--plot table7.png]   # bars: scripts/plot_ablation.py

A thin wrapper: `scripts/table7.py [options]` is `scripts/sweep.py --table 7 [options]`
(--partition, --time, --mode local, --seeds ...; see scripts/sweep.py --help).
"""
import sys

if __package__:  # python -m scripts.table7
    from . import sweep
else:  # a plain script: its folder is sys.path[0]
    import sweep

PRESET = "7"


def main(argv: list[str] | None = None) -> int:
    return sweep.main(["--table", PRESET, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
