"""Checkpointing, memory accounting and a readable summary of any optimizer built here (a class
path's too: these read only the torch.optim.Optimizer interface, state_dict and param_groups).

export_state returns only what `torch.load(weights_only=True)` reads back: tensors, numbers,
strings, lists, tuples and dicts, which is all that torch's optimizers keep. The one exception in
the packages used, GaLore's and APOLLO's projector objects (kept in per-parameter state), is written
as a tagged dict of its attributes and rebuilt as the same class by import_state, so training
continues exactly as if never stopped. Any other object in a state is refused when it is exported.
"""
from __future__ import annotations

import importlib
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from optimizers.combined import CombinedOptimizer, load_state_dict_in_place

STATE_FORMAT = "mols-optimizer-state/1"
OBJECT_TAG = "__python_object__"

# The only Python objects an optimizer state may hold (module, class name).
PROJECTOR_CLASSES = {
    "galore_torch.galore_projector.GaLoreProjector",
    "apollo_torch.svd_projector.GaLoreProjector",
    "apollo_torch.random_projector.GradientProjector",
}
_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.device, torch.Size)


def _qualified_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _to_plain(value: Any, where: str) -> Any:
    if isinstance(value, (torch.Tensor, *_PLAIN)):
        return value
    if isinstance(value, dict):
        return {key: _to_plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_plain(item, f"{where}[{i}]") for i, item in enumerate(value))
    if _qualified_name(value) in PROJECTOR_CLASSES:
        attributes = {key: _to_plain(item, f"{where}.{key}") for key, item in vars(value).items()}
        return {OBJECT_TAG: _qualified_name(value), "attributes": attributes}
    raise TypeError(f"optimizer state {where} is a {_qualified_name(value)}, which a weights-only "
                    f"checkpoint cannot hold: keep optimizer state as tensors, numbers, strings and lists, "
                    f"tuples or dicts of them (or teach optimizers/state.py to export it)")


def _from_plain(value: Any) -> Any:
    if isinstance(value, dict):
        if OBJECT_TAG in value:
            return _rebuild_object(value[OBJECT_TAG], value["attributes"])
        return {key: _from_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_from_plain(item) for item in value)
    return value


def _rebuild_object(qualified_name: str, attributes: dict) -> Any:
    if qualified_name not in PROJECTOR_CLASSES:
        raise ValueError(f"optimizer state names an unexpected class {qualified_name!r}")
    module_name, class_name = qualified_name.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    obj = cls.__new__(cls)  # the attributes below are its whole state: no __init__ needed
    obj.__dict__.update(_from_plain(attributes))
    return obj


def _saved_groups(state_dict: dict) -> list[dict]:
    if "parts" in state_dict:
        return [g for part in state_dict["parts"].values() for g in part["param_groups"]]
    return state_dict["param_groups"]


def export_state(optimizer: torch.optim.Optimizer) -> dict:
    """A checkpointable state (weights_only-loadable). Like state_dict(), its tensors are the live
    ones: save it before the next step."""
    return {"format": STATE_FORMAT, "method": getattr(optimizer, "mols_method", None),
            "class": type(optimizer).__name__,
            "state_dict": _to_plain(optimizer.state_dict(), "state_dict")}


def import_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load what export_state produced into an optimizer built the same way (same method, model and
    grouping). Group dicts keep their identity, so hooks and references to them stay valid."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"not an optimizer state from optimizers.export_state (format {STATE_FORMAT})")
    method = getattr(optimizer, "mols_method", None)
    if state["method"] != method or state["class"] != type(optimizer).__name__:
        raise ValueError(f"optimizer state is for {state['method']} ({state['class']}), but this optimizer is "
                         f"{method} ({type(optimizer).__name__}): resume with the same optimizer.name")
    saved_state = _from_plain(state["state_dict"])
    saved, current = _saved_groups(saved_state), optimizer.param_groups
    if len(saved) != len(current):
        raise ValueError(f"optimizer state has {len(saved)} param groups, this optimizer {len(current)}: "
                         f"was it saved with another model, grouping or options?")
    for index, (old, new) in enumerate(zip(saved, current)):
        old_names, new_names = old.get("param_names"), new.get("param_names")
        if old_names is not None and new_names is not None and old_names != new_names:
            raise ValueError(f"optimizer state group {index} holds {old_names[:3]}..., this optimizer's "
                             f"{new_names[:3]}...: was it saved with another model or grouping?")
    if isinstance(optimizer, CombinedOptimizer):
        optimizer.load_state_dict(saved_state)
    else:
        load_state_dict_in_place(optimizer, saved_state)
    _move_projectors_to_their_parameters(optimizer)


def _move_projectors_to_their_parameters(optimizer: torch.optim.Optimizer) -> None:
    """torch's load_state_dict moves state tensors to their parameter's device but not tensors inside
    objects; galore_torch's projector would then multiply a CUDA gradient by a CPU matrix."""
    for param, per_param in optimizer.state.items():
        for value in per_param.values():
            if _qualified_name(value) not in PROJECTOR_CLASSES:
                continue
            for key, attribute in vars(value).items():
                if isinstance(attribute, torch.Tensor):
                    setattr(value, key, attribute.to(param.device))
                elif isinstance(attribute, list) and attribute and all(isinstance(t, torch.Tensor) for t in attribute):
                    setattr(value, key, [t.to(param.device) for t in attribute])


def state_tensors(value: Any):
    """Every tensor in an optimizer state value (nested containers and projector objects included)."""
    if isinstance(value, DTensor):  # a sharded run's state: this rank's shard
        yield value.to_local()
    elif isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from state_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from state_tensors(item)
    elif _qualified_name(value) in PROJECTOR_CLASSES:
        yield from state_tensors(vars(value))


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of memory held by the optimizer's state tensors, each storage counted once (tensors
    shared between parameters, such as bitsandbytes' quantization maps, are not double counted;
    uint8 state counts one byte per element)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for per_param in optimizer.state.values():
        for tensor in state_tensors(per_param):
            storage = tensor.untyped_storage()
            key = (str(tensor.device), storage.data_ptr())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
    return total


def _human(count: float) -> str:
    for unit in ("", "K", "M", "B"):
        if abs(count) < 1000:
            return f"{count:.0f}{unit}" if unit == "" else f"{count:.1f}{unit}"
        count /= 1000
    return f"{count:.1f}T"


def describe_groups(optimizer: torch.optim.Optimizer) -> str:
    """A few lines: per module class and role, the tensors, parameters and base lr."""
    method = getattr(optimizer, "mols_method", None) or type(optimizer).__name__
    groups = optimizer.param_groups
    total = sum(p.numel() for g in groups for p in g["params"])
    lines = [f"optimizer {method} ({type(optimizer).__name__}): {len(groups)} param groups, "
             f"{_human(total)} parameters"]
    rows: dict[tuple, list] = {}
    for group in groups:
        key = (group.get("module_class", "?"), group.get("role", ""), group.get("base_lr", group["lr"]))
        row = rows.setdefault(key, [0, 0, 0])
        row[0] += 1
        row[1] += len(group["params"])
        row[2] += sum(p.numel() for p in group["params"])
    for (module_class, role, base_lr), (n_groups, n_tensors, n_params) in rows.items():
        grouped = f" in {n_groups} groups" if n_groups > 1 else ""
        lines.append(f"  {module_class:<8} {n_tensors:>4} tensors{grouped:<14} {_human(n_params):>8} params  "
                     f"base_lr {base_lr:.3g}  {role}")
    return "\n".join(lines)
