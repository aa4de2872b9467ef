#!/usr/bin/env python3
"""How much of an AdamW step pure-bf16 weights round away, per module, from a run's checkpoint.

    python scripts/bf16_rounding.py RUN_DIR_OR_CHECKPOINT [...]

In `train.precision: bf16-pure` the weights themselves are bf16 (8 significant bits), so an update
smaller than half the spacing of bf16 numbers around a weight leaves it unchanged. This takes the
step that the checkpoint's AdamW moments point to (m_hat / (sqrt(v_hat) + eps), times the group's
learning rate at that step and MoLS's multiplier), applies it to the bf16 weights exactly as
torch's AdamW does (computed wide, rounded once to bf16) and reports, per module class:

- unchanged: the share of weight entries the step leaves exactly as they were;
- lost: the share of the step's size (L2 norm) that the rounding removes, |applied - intended| / |intended|.

It is the *next* step without its gradient (the moments move by (1 - beta1) of one gradient), so it
describes the regime at that point of the schedule, not one particular update. docs/evidence.md reads
it at the end of training, where the cosine schedule has brought the rate to 10% of its peak.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

import torch

from configs import UserError
from mols.scaling import Ramp
from training import checkpoint as checkpoints


@dataclass
class ModuleRounding:
    module: str
    entries: int
    unchanged: int
    intended_sq: float  # squared L2 norm of the step as computed wide
    lost_sq: float      # squared L2 norm of (applied - intended)
    lr: float           # the effective rate: group rate x MoLS multiplier

    @property
    def unchanged_share(self) -> float:
        return self.unchanged / self.entries if self.entries else 0.0

    @property
    def lost_share(self) -> float:
        return math.sqrt(self.lost_sq / self.intended_sq) if self.intended_sq else 0.0


def adamw_step(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: float, lr: float,
               betas: tuple[float, float], eps: float, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(intended new weight in float64, the weight as its dtype stores it) for torch's AdamW update."""
    w = weight.double()
    m_hat = exp_avg.double() / (1 - betas[0] ** step)
    v_hat = exp_avg_sq.double() / (1 - betas[1] ** step)
    intended = w * (1 - lr * weight_decay) - lr * m_hat / (v_hat.sqrt() + eps)
    return intended, intended.to(weight.dtype)


def rounding(checkpoint: dict) -> list[ModuleRounding]:
    """Per module class, what the checkpoint's next AdamW step would lose to its weights' dtype."""
    opt = checkpoint.get("optimizer", {})
    state = opt.get("state_dict", {}).get("state", {})
    groups = opt.get("state_dict", {}).get("param_groups", [])
    if not groups or not all("param_names" in g for g in groups):
        raise UserError("the checkpoint has no optimizer parameter groups with parameter names "
                        "(a checkpoint written by train.py is needed)")
    mols = checkpoint.get("mols") or {}
    ramp = Ramp(**mols["ramp"]) if mols.get("ramp") else None
    weights = checkpoint["model"]
    out: dict[str, ModuleRounding] = {}
    for group in groups:
        module = group.get("module_class") or "all"
        multiplier = ramp.value(module, checkpoint["step"]) if ramp is not None else 1.0
        lr = group["lr"] * multiplier
        for index, name in zip(group["params"], group["param_names"]):
            moments = state.get(index, state.get(str(index), {}))
            if "exp_avg" not in moments or "exp_avg_sq" not in moments:
                raise UserError(f"{name}: no AdamW moments (exp_avg, exp_avg_sq) in the optimizer state: "
                                f"this reads AdamW-family checkpoints ({opt.get('method', '?')} is not one)")
            weight = weights[name]
            intended, applied = adamw_step(weight, moments["exp_avg"], moments["exp_avg_sq"], float(moments["step"]),
                                           lr, tuple(group["betas"]), group["eps"], group.get("weight_decay", 0.0))
            row = out.setdefault(module, ModuleRounding(module, 0, 0, 0.0, 0.0, lr))
            row.entries += weight.numel()
            row.unchanged += int((applied == weight).sum())
            row.intended_sq += float(((intended - weight.double()) ** 2).sum())
            row.lost_sq += float(((applied.double() - intended) ** 2).sum())
    return list(out.values())


def render(path: Path, step: int, dtype: str, rows: list[ModuleRounding]) -> str:
    lines = [f"{path} (step {step}, weights in {dtype})",
             f"  {'module':<8}{'entries':>12}{'lr':>12}{'unchanged':>12}{'lost':>9}"]
    total = ModuleRounding("all", 0, 0, 0.0, 0.0, float("nan"))
    for row in rows:
        lines.append(f"  {row.module:<8}{row.entries:>12,}{row.lr:>12.3g}{row.unchanged_share:>12.1%}"
                     f"{row.lost_share:>9.1%}")
        total.entries += row.entries
        total.unchanged += row.unchanged
        total.intended_sq += row.intended_sq
        total.lost_sq += row.lost_sq
    lines.append(f"  {'all':<8}{total.entries:>12,}{'':>12}{total.unchanged_share:>12.1%}{total.lost_share:>9.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_DIR_OR_CHECKPOINT")
    args = parser.parse_args(argv)
    try:
        for path in args.paths:
            file = checkpoints.resolve(path)
            if file.is_dir():
                raise UserError(f"{file}: a sharded checkpoint; this reads the single-file ones (step_*.pt)")
            saved = torch.load(file, map_location="cpu", weights_only=True)
            dtype = str(next(iter(saved["model"].values())).dtype).removeprefix("torch.")
            print(render(file, saved["step"], dtype, rounding(saved)))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
