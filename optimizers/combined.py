"""One torch Optimizer made of several (Muon for hidden matrices + AdamW for the rest).

The trainer and MoLS see a single optimizer: `param_groups` is the concatenation of the parts'
group lists (the same dict objects, so an lr written here reaches the part that uses it), and
`step()` is wrapped by torch's hook machinery, so a hook registered with
`register_step_pre_hook` / `register_step_post_hook` fires once per step and sees every group.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional

import torch


def load_state_dict_in_place(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """`optimizer.load_state_dict`, keeping the identity of its param-group dicts.

    torch's load_state_dict replaces every group dict with a new one; anything holding the old
    dicts (CombinedOptimizer.param_groups, a hook, a scheduler) would then write lrs nobody reads.
    The loaded contents are copied back into the original dicts instead.
    """
    group_list = optimizer.param_groups
    original_groups = list(group_list)
    optimizer.load_state_dict(state_dict)
    for original, loaded in zip(original_groups, optimizer.param_groups, strict=True):
        if loaded is not original:
            original.clear()
            original.update(loaded)
    group_list[:] = original_groups
    optimizer.param_groups = group_list


class CombinedOptimizer(torch.optim.Optimizer):
    """Steps several optimizers as one; `parts` maps a role name ("muon", "adamw") to each."""

    def __init__(self, parts: dict[str, torch.optim.Optimizer]) -> None:
        if not parts:
            raise ValueError("CombinedOptimizer needs at least one part")
        # Optimizer.__init__ would copy every group into a new dict; only its hook machinery is
        # wanted here, so that part of it is set up directly.
        self.parts = dict(parts)
        self.defaults = {}
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()  # wraps CombinedOptimizer.step with the hook calls
        self.param_groups = [group for part in self.parts.values() for group in part.param_groups]

    @property
    def state(self) -> dict:
        """All parts' per-parameter state (a merged view: read it, do not assign to it)."""
        merged = {}
        for part in self.parts.values():
            merged.update(part.state)
        return merged

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts.values():
            part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"parts": {name: part.state_dict() for name, part in self.parts.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("parts", {})
        if set(saved) != set(self.parts):
            raise ValueError(f"optimizer state has parts {sorted(saved)}, this optimizer {sorted(self.parts)}")
        for name, part in self.parts.items():
            load_state_dict_in_place(part, saved[name])

    def add_param_group(self, param_group: dict) -> None:
        raise TypeError("CombinedOptimizer cannot take new groups; add them to one of its .parts "
                        "and rebuild it")

    def __repr__(self) -> str:
        inner = "\n".join(f"  {name}: {type(part).__name__} with {len(part.param_groups)} groups"
                          for name, part in self.parts.items())
        return f"CombinedOptimizer(\n{inner}\n)"
