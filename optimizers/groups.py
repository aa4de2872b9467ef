"""Param groups the project's way, for every builder (registered methods and class paths alike).

A builder gets the input groups (mols.groups.param_groups, with each parameter's name) and returns
an optimizer whose every group carries
  module_class  the class of the input group it came from (what MoLS scales),
  base_lr       its peak lr before any schedule (the trainer sets lr = base_lr * factor),
  param_names   the parameters' names (torch saves these in state_dict; import_state checks them),
  role          what the optimizer does with the group (shown by describe_groups).
`make_group` makes such a group. An input group is split when parts of it are treated
differently (Muon vs. AdamW, low-rank vs. full-rank); each piece keeps the input group's module_class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from optimizers.shapes import unwrap_model


@dataclass
class InputGroup:
    """An input param group with each parameter's name (from the model)."""
    module_class: str
    params: list[torch.Tensor]
    names: list[str]
    grouping: str = "modules"

    def split(self, goes_first: Callable[[str, torch.Tensor], bool]) -> tuple["InputGroup", "InputGroup"]:
        first, rest = (InputGroup(self.module_class, [], [], self.grouping),
                       InputGroup(self.module_class, [], [], self.grouping))
        for name, param in zip(self.names, self.params):
            target = first if goes_first(name, param) else rest
            target.params.append(param)
            target.names.append(name)
        return first, rest


def named_input_groups(model: torch.nn.Module, groups: list[dict]) -> list[InputGroup]:
    """The input groups with names; every trainable parameter must be in exactly one of them."""
    name_of = {id(p): n for n, p in unwrap_model(model).named_parameters()}
    seen: dict[int, str] = {}
    named = []
    for index, group in enumerate(groups):
        if "module_class" not in group:
            raise ValueError(f"param group {index} has no 'module_class' (use mols.groups.param_groups)")
        params = list(group["params"])
        names = []
        for param in params:
            name = name_of.get(id(param))
            if name is None:
                raise ValueError(f"param group {group['module_class']!r} holds a tensor that is not a "
                                 f"parameter of the model")
            if id(param) in seen:
                raise ValueError(f"parameter {name} is in more than one param group")
            seen[id(param)] = name
            names.append(name)
        if params:
            named.append(InputGroup(group["module_class"], params, names, group.get("grouping", "modules")))
    missing = [n for n, p in unwrap_model(model).named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"trainable parameters in no param group: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return named


def make_group(source: InputGroup, base_lr: float, role: str, **settings) -> dict:
    """A torch param group of `source`'s parameters at `base_lr`, tagged for MoLS, the trainer and
    checkpoints; `settings` are the optimizer's own per-group keys (GaLore's rank, ...)."""
    return {"params": list(source.params), "lr": base_lr, "base_lr": base_lr,
            "module_class": source.module_class, "grouping": source.grouping,
            "param_names": list(source.names), "role": role,
            **settings}
