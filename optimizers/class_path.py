"""`optimizer.name: some.module.ClassName`: any torch.optim.Optimizer the run's environment imports
(an installed package, or a file in the working directory or on PYTHONPATH), no registration needed.

    optimizer:
      name: my_optimizer.TinyAdam      # class TinyAdam in my_optimizer.py
      lr: 1.0e-3                       # passed as lr
      options: {momentum: 0.9}         # its other keyword arguments

It gets the project's param groups (optimizers/groups.py: module_class, base_lr, ...), so MoLS and
the schedule set its groups' lr like any method's. `optimizer.lr` goes as `lr`; `optimizer.betas`,
`eps` and `weight_decay` only where its signature names them. The config check (every problem at
once, exit 2) imports it and checks that it is a torch.optim.Optimizer, and each option against its
signature: names it does not take, required ones missing, a value unlike the default's type, and
settings that belong to optimizer.lr/betas/eps/weight_decay. Its state estimate is measured after
one step on a stand-in (estimate.py); checkpoints hold its state_dict (state.py), so its state must
be tensors, numbers, strings and lists, tuples or dicts of them. `train.parallel: fsdp` refuses it:
FSDP hands an optimizer this rank's rows of each weight, right only for an update that treats every
element on its own, which cannot be told from a class.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Optional

import torch

from configs import ConfigError
from configs.typed import did_you_mean
from optimizers.groups import make_group

COMMON = ("lr", "betas", "eps", "weight_decay")  # the optimizer section's own keys, passed where taken

FSDP_REASON = ("is a class of your own, and FSDP hands an optimizer this rank's shard of each weight, which is "
               "right only for an update that treats every element on its own (as Adam's); the project cannot "
               "tell that of a class")


def is_class_path(name: Any) -> bool:
    """A dotted name (module.ClassName) rather than a registered method's."""
    return isinstance(name, str) and "." in name


def _import_problem(path: str) -> tuple[Optional[type], Optional[str]]:
    """(the class, None) or (None, the problem)."""
    module_name, _, class_name = path.rpartition(".")
    if not module_name or not class_name:
        return None, f"optimizer.name: {path!r} is not module.ClassName"
    # `python train.py` puts train.py's folder on sys.path, not the working directory; a file beside
    # the user (my_optimizer.py) is found as `python -m` would find it
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the user's module: missing, or failing while it is imported
        where = ("put its file in the working directory or its folder on PYTHONPATH"
                 if isinstance(err, ModuleNotFoundError) else "the error is in that module")
        return None, f"optimizer.name: cannot import {module_name} ({type(err).__name__}: {err}); {where}"
    cls = getattr(module, class_name, None)
    if cls is None:
        found = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, torch.optim.Optimizer)]
        return None, (f"optimizer.name: module {module_name} has no {class_name!r}"
                      + (did_you_mean(class_name, found) or
                         (f" (its optimizers: {', '.join(found)})" if found else " (it defines no torch.optim.Optimizer)")))
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        return None, f"optimizer.name: {path} is a {type(cls).__name__}, not a torch.optim.Optimizer subclass"
    return cls, None


def _keywords(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword arguments of cls(params, ...) (the first, the parameters, left out) and whether
    it takes any keyword (**kwargs)."""
    parameters = list(inspect.signature(cls).parameters.values())
    if parameters and parameters[0].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                             inspect.Parameter.POSITIONAL_OR_KEYWORD):
        parameters = parameters[1:]
    named = {p.name: p for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                         inspect.Parameter.KEYWORD_ONLY)}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _convert(value: Any, default: Any) -> tuple[Any, Optional[str]]:
    """The option value as the default's type wants it (YAML's 1e-3 is a string; a list for a
    tuple), or a problem where the types cannot match. No default (or None): taken as it is."""
    if default is inspect.Parameter.empty or default is None:
        return value, None
    if isinstance(default, bool):
        return value, None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if isinstance(default, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"expected a number, got {value!r}"
        return value, None
    if isinstance(default, tuple):
        if isinstance(value, (list, tuple)):
            return tuple(value), None
        return value, f"expected a list, got {value!r}"
    return value, None


def problems(path: str, options: dict) -> list[str]:
    """Every problem of `optimizer.name: path` with these options (the import included)."""
    cls, problem = _import_problem(path)
    if problem:
        return [problem]
    named, any_keyword = _keywords(cls)
    found = []
    if "lr" not in named and not any_keyword:
        found.append(f"optimizer.name: {path} takes no lr argument; the schedule and MoLS set each param group's "
                     f"'lr', so the optimizer must read it")
    passed = ["lr", *(key for key in COMMON if key in named)]  # from the optimizer section
    takes = ", ".join(n for n in named if n not in passed) or "nothing else"
    for key, value in options.items():
        if key in passed:
            found.append(f"optimizer.options.{key}: set optimizer.{key} instead (it is passed to {cls.__name__} "
                         f"as {key})")
        elif key not in named:
            if not any_keyword:
                found.append(f"optimizer.options.{key}: {cls.__name__} takes no such argument"
                             + (did_you_mean(key, [n for n in named if n not in passed]) or f" (it takes: {takes})"))
        else:
            problem = _convert(value, named[key].default)[1]
            if problem:
                found.append(f"optimizer.options.{key}: {problem} (the default of {cls.__name__} is "
                             f"{named[key].default!r})")
    for name, parameter in named.items():
        if parameter.default is inspect.Parameter.empty and name not in passed and name not in options:
            found.append(f"optimizer.options.{name}: required by {cls.__name__}, which has no default for it")
    return found


def build(cfg, groups: list) -> torch.optim.Optimizer:
    """The optimizer of `optimizer.name: module.ClassName` over the named input groups."""
    cls, problem = _import_problem(cfg.name)
    if problem:
        raise ConfigError(problem)
    named, any_keyword = _keywords(cls)
    kwargs = {"lr": cfg.lr}
    for key, value in (("betas", tuple(cfg.betas)), ("eps", cfg.eps), ("weight_decay", cfg.weight_decay)):
        if key in named:
            kwargs[key] = value
    for key, value in (cfg.options or {}).items():
        kwargs[key] = _convert(value, named[key].default)[0] if key in named else value
    try:
        return cls([make_group(g, cfg.lr, cls.__name__) for g in groups], **kwargs)
    except (TypeError, ValueError) as err:  # its own checks of its arguments: the config's to fix
        raise ConfigError(f"optimizer.name: {cfg.name} refused its arguments "
                          f"({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}): {err}") from err
