"""The optimizers of the paper's comparisons, built as one torch Optimizer with MoLS-ready groups.

    problems = check_optimizer_config(cfg.optimizer, model)     # [] when fine; never raises
    optimizer = build_optimizer(cfg.optimizer, model, mols.groups.param_groups(model, grouping))
    for group in optimizer.param_groups: group["lr"] = group["base_lr"] * factor
    checkpoint["optimizer"] = export_state(optimizer)          # torch.load(weights_only=True) reads it
    import_state(optimizer, checkpoint["optimizer"])            # continues exactly

Methods and their `optimizer.options` are listed in optimizers/README.md and options.METHOD_OPTIONS.
"""
from optimizers.build import build_optimizer
from optimizers.combined import CombinedOptimizer
from optimizers.options import METHOD_OPTIONS, METHODS, check_optimizer_config
from optimizers.state import describe_groups, export_state, import_state, optimizer_state_bytes

__all__ = ["METHODS", "METHOD_OPTIONS", "CombinedOptimizer", "build_optimizer", "check_optimizer_config",
           "describe_groups", "export_state", "import_state", "optimizer_state_bytes"]
