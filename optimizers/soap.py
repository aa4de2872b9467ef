"""SOAP (pytorch_optimizer.SOAP): Adam in Shampoo's eigenbasis, the paper's Table 14 baseline."""
from __future__ import annotations

from dataclasses import dataclass

from configs import check_range
from optimizers.groups import make_group
from optimizers.registry import register
from optimizers.shapes import itemsize, trainable


@dataclass
class SoapOptions:
    precondition_frequency: int = 10    # steps between eigenbasis updates (SOAP's default)
    max_precondition_dim: int = 10000   # larger dimensions are not preconditioned

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "optimizer.options.precondition_frequency", self.precondition_frequency, low=1)
        check_range(problems, "optimizer.options.max_precondition_dim", self.max_precondition_dim, low=1)
        return problems


def soap_state(options: SoapOptions, model, dtype) -> int:
    """Per parameter exp_avg and exp_avg_sq (parameter-sized); per side s of a matrix (each dimension
    of a tensor of 2 or more) with s <= max_precondition_dim, the Shampoo preconditioner GG (s x s)
    and its eigenbasis Q (s x s, from eigh, later one QR power step), all in the gradient's dtype.
    Vectors are not preconditioned (its precondition_1d, off here), nor sides above
    max_precondition_dim (an identity instead: no tensor). So a rows x cols matrix holds
    2 * rows * cols + 2 * (rows^2 + cols^2) values: with a vocabulary up to max_precondition_dim
    (10,000 by default) the embedding's and head's vocab x vocab matrices dominate; the paper's
    32,000-token vocabulary skips that side."""
    total = 0
    for p in trainable(model):
        sides = [s for s in p.shape if s <= options.max_precondition_dim] if p.ndim >= 2 else []
        total += (2 * p.numel() + 2 * sum(s * s for s in sides)) * itemsize(p, dtype)
    return total


@register("soap", options=SoapOptions, state_bytes=soap_state,
          why_not_sharded="preconditions with whole-matrix (Shampoo) statistics, which FSDP splits across ranks")
def build_soap(cfg, options, model, groups):
    from pytorch_optimizer import SOAP
    return SOAP([make_group(g, cfg.lr, "soap") for g in groups], lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                weight_decay=cfg.weight_decay, precondition_frequency=options.precondition_frequency,
                max_precondition_dim=options.max_precondition_dim)
