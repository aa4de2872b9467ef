"""Write a sharded checkpoint (a `train.parallel: fsdp` run's step_N.dcp) as one file.

    python -m tools.consolidate RUN_DIR_OR_CHECKPOINT [--out FILE]

One process, no GPU: the model's shards are read and joined into whole tensors; the file holds
what export, evaluation and generation read (model, config, step, MoLS), not the optimizer state
(resuming takes the sharded checkpoint itself, on any number of ranks). Default output:
RUN_DIR/consolidated/step_N.pt. Export and evaluation also accept the sharded checkpoint directly.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configs import UserError
from training import checkpoint
from tools.trained_model import consolidated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.consolidate", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run directory (its latest checkpoint) or a step_N.dcp directory")
    parser.add_argument("--out", type=Path, help="the file to write (default: RUN_DIR/consolidated/step_N.pt)")
    args = parser.parse_args(argv)
    try:
        ckpt = checkpoint.resolve(args.path)
        if not checkpoint.is_sharded_checkpoint(ckpt):
            raise UserError(f"{ckpt} is one file already (a DDP run's checkpoint): nothing to consolidate")
        state = consolidated(ckpt, checkpoint.load(ckpt))
        out = args.out or ckpt.parent.parent / "consolidated" / ckpt.with_suffix(".pt").name
        checkpoint.save_atomically(state, out)
    except UserError as err:
        print(err.report(), file=sys.stderr)
        return err.exit_code
    print(f"{out}: step {state['step']}, {sum(t.numel() for t in state['model'].values()) / 1e6:.2f}M "
          f"weights from {ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
