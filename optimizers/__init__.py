"""The optimizers of the paper's comparisons, built as one torch Optimizer with MoLS-ready groups.

    optimizer = build_optimizer(cfg.optimizer, model, mols.param_groups(model, grouping))
    for group in optimizer.param_groups: group["lr"] = group["base_lr"] * factor
    checkpoint["optimizer"] = export_state(optimizer)          # torch.load(weights_only=True) reads it
    import_state(optimizer, checkpoint["optimizer"])            # continues exactly

The methods are listed once, in methods.py (REGISTRY: options, builder and state cost of each);
their `optimizer.options` are typed in config.py (one dataclass per method) and described in
optimizers/README.md.
"""
from optimizers.combined import CombinedOptimizer
from optimizers.config import OptimizerConfig
from optimizers.methods import METHOD_OPTIONS, METHODS, REGISTRY, build_optimizer, estimate_state_bytes
from optimizers.state import describe_groups, export_state, import_state, optimizer_state_bytes

__all__ = ["METHODS", "METHOD_OPTIONS", "REGISTRY", "CombinedOptimizer", "OptimizerConfig", "build_optimizer",
           "describe_groups", "estimate_state_bytes", "export_state", "import_state", "optimizer_state_bytes"]
