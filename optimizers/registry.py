"""The methods `optimizer.name` selects: each registered where it is defined, the only list of them.

A method is one module of this package (adam.py, muon.py, low_rank.py, ...) and one import line in
optimizers/__init__.py. Its module defines, next to each other, the options dataclass that
`optimizer.options` is checked against, the builder, and optionally its state cost, and registers
them:

    @dataclass
    class LionOptions:
        pass

    @register("lion", options=LionOptions, state_bytes=one_moment,
              why_not_sharded="is elementwise but not yet tested on shards")
    def build_lion(cfg, options, model, groups):        # groups: optimizers.groups.InputGroup
        return Lion([make_group(g, cfg.lr, "lion") for g in groups], lr=cfg.lr, ...)

Everything else that knows about methods reads REGISTRY: the config check (config.py),
build_optimizer (build.py), the dry run's state estimate (estimate.py), FSDP's refusal
(training/fsdp.py) and the sweeps (reproduce/jobs.py accepts any registered name). A method
without a state formula is measured after one step on a stand-in model (estimate.py); one whose
formula is an upper bound says so (`state_is_bound`), and the dry run shows which of the three it used.
A torch Optimizer outside this package needs no registration at all: `optimizer.name:
module.ClassName` (class_path.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

# (options, model, dtype or None) -> bytes of optimizer state after the first step
StateCost = Callable[[object, torch.nn.Module, Optional[torch.dtype]], int]
# (options, model) -> the problems only the model reveals (a rank above a matrix's side, say)
ModelCheck = Callable[[object, torch.nn.Module], list]

NOT_TESTED_ON_SHARDS = "is not among the methods tested on shards"


@dataclass(frozen=True)
class Method:
    name: str
    build: Callable                       # (cfg, options, model, named input groups) -> torch.optim.Optimizer
    options: type                         # the dataclass `optimizer.options` is checked against
    state_bytes: Optional[StateCost]      # None: measured after one step on a stand-in (estimate.py)
    state_is_bound: bool                  # the formula is an upper bound, not the exact bytes
    check_model: Optional[ModelCheck]
    sharded: bool                         # its update is elementwise: it runs under train.parallel: fsdp
    why_not_sharded: str                  # when not: the reason, completing "... it <why>"


REGISTRY: dict[str, Method] = {}


@dataclass
class NoOptions:
    pass


def register(name: str, *, options: type = NoOptions, state_bytes: Optional[StateCost] = None,
             state_is_bound: bool = False, check_model: Optional[ModelCheck] = None, sharded: bool = False,
             why_not_sharded: str = NOT_TESTED_ON_SHARDS) -> Callable:
    """Register the decorated builder as method `name` (usable as a call for a shared builder:
    `register("adam", ...)(adam_family(torch.optim.Adam, ...))`)."""
    if not name.isidentifier() or name in REGISTRY:
        raise ValueError(f"method name {name!r} is taken or not a plain identifier (a dotted name is a class path)")

    def add(build: Callable) -> Callable:
        REGISTRY[name] = Method(name, build, options, state_bytes, state_is_bound, check_model, sharded,
                                "" if sharded else why_not_sharded)
        return build
    return add


def method_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def sharded_methods() -> tuple[str, ...]:
    """The methods that run under train.parallel: fsdp."""
    return tuple(name for name, method in REGISTRY.items() if method.sharded)
