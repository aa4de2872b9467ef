"""The optimizer state a run will hold, before the optimizer exists: the dry run's and the memory
check's figure (training/dry_run.py), from the model's shapes (a meta-device model will do).

One of three ways, which `state_basis` names:
  formula    the method's own state cost (registry.py): exact, but for the 0-d step counters
  bound      the method's state cost where it is an upper bound (Adam-mini)
  measured after one step on a stand-in
             any method without a formula, a class path included: the optimizer is built on a
             stand-in of the model on the CPU (every parameter with each side cut to STAND_IN_SIDE,
             same names, dtypes and param groups), stepped once with random gradients, and each
             state tensor scaled to its parameter's real size. Exact for state shaped like its
             parameter (Adam's moments) and for scalars (step counters); other state is scaled with
             its parameter's element count: too much for state that grows more slowly (factored
             or per-row statistics), too little for state that grows faster (Shampoo's side x side
             factors). A model whose sides are all within STAND_IN_SIDE is its own stand-in: exact.
"""
from __future__ import annotations

from typing import Optional

import torch

from mols.groups import param_groups
from optimizers import class_path
from optimizers.build import build_optimizer, typed
from optimizers.registry import REGISTRY
from optimizers.shapes import unwrap_model
from optimizers.state import state_tensors

STAND_IN_SIDE = 256
MEASURED = "measured after one step on a stand-in"


def state_basis(cfg) -> str:
    """How estimate_state_bytes arrives at its figure for `cfg.name`: formula, bound or MEASURED."""
    method = REGISTRY.get(cfg.name)
    if method is None or method.state_bytes is None:
        return MEASURED
    return "bound" if method.state_is_bound else "formula"


def estimate_state_bytes(cfg, model: torch.nn.Module, dtype: Optional[torch.dtype] = None) -> int:
    """Bytes of state the optimizer build_optimizer(cfg, model, ...) keeps once it has stepped.
    dtype: the parameters' dtype when training (torch.bfloat16 under bf16-pure); None: the model's own."""
    cfg = typed(cfg)
    method = None if class_path.is_class_path(cfg.name) else REGISTRY[cfg.name]
    if method is not None and method.state_bytes is not None:
        return method.state_bytes(cfg.options, model, dtype)
    return measure_state_bytes(cfg, model, dtype)


def _stand_in(model: torch.nn.Module, dtype: Optional[torch.dtype]) -> torch.nn.Module:
    """A CPU module with the model's parameter names, each side cut to STAND_IN_SIDE, and its config."""
    root = torch.nn.Module()
    for name, param in model.named_parameters():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if part not in module._modules:
                module.add_module(part, torch.nn.Module())
            module = module._modules[part]
        shape = [min(side, STAND_IN_SIDE) for side in param.shape]
        module.register_parameter(leaf, torch.nn.Parameter(torch.zeros(shape, dtype=dtype or param.dtype),
                                                           requires_grad=param.requires_grad))
    root.config = getattr(model, "config", None)  # model facts some builders read (Adam-mini's dimensions)
    return root


def measure_state_bytes(cfg, model: torch.nn.Module, dtype: Optional[torch.dtype] = None) -> int:
    """The state after one step on a stand-in of `model`, scaled to its real sizes (see above)."""
    model = unwrap_model(model)
    stand_in = _stand_in(model, dtype)
    real_size = {name: param.numel() for name, param in model.named_parameters()}
    stand_in_params = dict(stand_in.named_parameters())
    groups = [{**group, "params": [stand_in_params[name] for name in group["names"]]}
              for group in param_groups(model)]
    with torch.random.fork_rng(devices=[]):  # the run's own random numbers stay as they were
        generator = torch.Generator().manual_seed(0)
        optimizer = build_optimizer(cfg, stand_in, groups)
        for param in stand_in.parameters():
            if param.requires_grad:
                param.grad = torch.randn(param.shape, generator=generator).to(param.dtype)
        optimizer.step()
    seen, total = set(), 0
    for name, param in stand_in_params.items():
        scale = real_size[name] / param.numel()
        for tensor in state_tensors(optimizer.state.get(param, {})):
            storage = tensor.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes() * (scale if tensor.numel() > 1 else 1)
    return round(total)
