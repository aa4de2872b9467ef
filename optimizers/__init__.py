"""The optimizers of the paper's comparisons, and any torch Optimizer by class path, built as one
torch Optimizer with MoLS-ready groups.

    optimizer = build_optimizer(cfg.optimizer, model, mols.param_groups(model, grouping))
    for group in optimizer.param_groups: group["lr"] = group["base_lr"] * factor
    checkpoint["optimizer"] = export_state(optimizer)          # torch.load(weights_only=True) reads it
    import_state(optimizer, checkpoint["optimizer"])            # continues exactly

Each method lives in one module below, which defines its options, builder and state cost and
registers them (registry.py); `optimizer.name: module.ClassName` takes any other torch Optimizer
(class_path.py). optimizers/README.md describes the methods and their options.
"""
# The methods' modules, each registering its methods when imported (in METHODS' order): a new
# method is a new module, named here.
from optimizers import adam, lamb, muon, adam_mini, low_rank, eight_bit, lion, adafactor, soap  # noqa: F401
from optimizers.build import build_optimizer, model_problems
from optimizers.class_path import is_class_path
from optimizers.combined import CombinedOptimizer
from optimizers.config import OptimizerConfig
from optimizers.estimate import estimate_state_bytes, state_basis
from optimizers.registry import REGISTRY, Method, register, sharded_methods
from optimizers.state import describe_groups, export_state, import_state, optimizer_state_bytes

METHODS: tuple[str, ...] = tuple(REGISTRY)
METHOD_OPTIONS: dict[str, type] = {name: method.options for name, method in REGISTRY.items()}

__all__ = ["METHODS", "METHOD_OPTIONS", "REGISTRY", "CombinedOptimizer", "Method", "OptimizerConfig",
           "build_optimizer", "describe_groups", "estimate_state_bytes", "export_state", "import_state",
           "is_class_path", "model_problems", "optimizer_state_bytes", "register", "sharded_methods", "state_basis"]
