"""build_optimizer: one torch Optimizer for `optimizer.name`, a registered method (registry.py) or a
class path (class_path.py), over the project's param groups (groups.py)."""
from __future__ import annotations

import dataclasses

import torch

from configs import ConfigError
from optimizers import class_path
from optimizers.groups import named_input_groups
from optimizers.registry import REGISTRY


def typed(cfg):
    """`cfg` (an optimizers.config.OptimizerConfig) as training.config.load_config leaves it; a
    hand-made one (options still a mapping) is validated here."""
    if class_path.is_class_path(cfg.name) or not dataclasses.is_dataclass(cfg.options):
        problems = cfg.validate()
        if problems:
            raise ConfigError(problems)
    return cfg


def model_problems(cfg, model: torch.nn.Module) -> list[str]:
    """What the method's options cannot do with this model (GaLore/APOLLO's rank, Adam-mini's dimensions)."""
    method = REGISTRY.get(cfg.name)
    return method.check_model(cfg.options, model) if method and method.check_model else []


def build_optimizer(cfg, model: torch.nn.Module, groups: list[dict]) -> torch.optim.Optimizer:
    """One optimizer for `cfg.name` over `groups` (from mols.groups.param_groups(model, grouping)).
    What only the model can tell (a rank above a matrix side) is checked here."""
    cfg = typed(cfg)
    named = named_input_groups(model, groups)
    if class_path.is_class_path(cfg.name):
        optimizer = class_path.build(cfg, named)
    else:
        problems = model_problems(cfg, model)
        if problems:
            raise ConfigError(problems)
        optimizer = REGISTRY[cfg.name].build(cfg, cfg.options, model, named)
    optimizer.mols_method = cfg.name  # export_state records it; import_state checks it
    return optimizer
