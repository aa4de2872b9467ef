"""The optimizers of the paper's comparisons, built as one torch Optimizer with MoLS-ready groups.

    optimizer = build_optimizer(cfg.optimizer, model, mols.param_groups(model, grouping))
    for group in optimizer.param_groups: group["lr"] = group["base_lr"] * factor
    checkpoint["optimizer"] = export_state(optimizer)          # torch.load(weights_only=True) reads it
    import_state(optimizer, checkpoint["optimizer"])            # continues exactly

Methods and their `optimizer.options` are in config.py (typed, one dataclass per method) and
optimizers/README.md.
"""
from optimizers.build import build_optimizer
from optimizers.combined import CombinedOptimizer
from optimizers.config import METHOD_OPTIONS, METHODS, OptimizerConfig
from optimizers.state import describe_groups, export_state, import_state, optimizer_state_bytes

__all__ = ["METHODS", "METHOD_OPTIONS", "CombinedOptimizer", "OptimizerConfig", "build_optimizer",
           "describe_groups", "export_state", "import_state", "optimizer_state_bytes"]
