"""The `optimizer` section: the method, its common settings, and its options.

`optimizer.name` is a method of the registry (optimizers/registry.py: each method's module defines
its options dataclass) or a class path, module.ClassName (optimizers/class_path.py). A method's
`optimizer.options` are checked against its dataclass by the same typed checker as every other
section (configs.typed); after validation `cfg.options` is that dataclass, defaults filled in, so
builders read `options.rank` directly. A class path's options stay a mapping, checked against the
class's signature.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from configs import build, check_range, is_number
from optimizers import class_path
from optimizers.registry import REGISTRY


# Far above any method's useful learning rate (the paper's are below 0.1): a larger one is a typo,
# and from about 1e37 the optimizers' step arithmetic overflows float32 in the first update.
MAX_LR = 1e3


def _option_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.0
    options: Any = field(default_factory=dict)  # method-specific: a mapping in YAML, typed after validate()

    def validate(self) -> list[str]:
        """Every problem of this section; on success `options` becomes the method's dataclass."""
        problems: list[str] = []
        if isinstance(self.lr, float) and not math.isfinite(self.lr):
            problems.append(f"optimizer.lr: must be a finite number, got {self.lr!r}")
        check_range(problems, "optimizer.lr", self.lr, low=0, low_open=True, high=MAX_LR)
        check_range(problems, "optimizer.eps", self.eps, low=0)
        check_range(problems, "optimizer.weight_decay", self.weight_decay, low=0)
        if isinstance(self.betas, list) and (len(self.betas) != 2 or not all(
                is_number(b) and 0 <= b < 1 for b in self.betas)):
            problems.append(f"optimizer.betas: expected two numbers in [0, 1), got {self.betas!r}")
        method_problem = self._method_problem()
        if method_problem:
            return problems + [method_problem]
        options = self.options
        if dataclasses.is_dataclass(options):
            options = dataclasses.asdict(options)
        if options is None:
            options = {}
        if not isinstance(options, dict):
            return problems + [f"optimizer.options: expected a mapping of option: value, got {options!r}"]
        if class_path.is_class_path(self.name):
            self.options = options
            return problems + class_path.problems(self.name, options)
        cls = REGISTRY[self.name].options
        known = _option_names(cls)
        for key in options:
            if key not in known:
                problems.append(self._unknown_option(key, known))
        self.options = build(cls, {k: v for k, v in options.items() if k in known}, "optimizer.options", problems)
        return problems

    def _method_problem(self) -> Optional[str]:
        methods = list(REGISTRY)
        known = f"known: {', '.join(methods)}, or a torch Optimizer as module.ClassName"
        if not isinstance(self.name, str):
            return f"optimizer.name: expected a string, got {self.name!r} ({known})"
        if self.name in methods or class_path.is_class_path(self.name):
            return None
        normalised = self.name.lower().replace("-", "_")
        hint = difflib.get_close_matches(normalised, methods, n=1, cutoff=0.6)
        return (f"optimizer.name: unknown method {self.name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else f" ({known})"))

    def _unknown_option(self, key: str, known: list[str]) -> str:
        hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        owners = [name for name, method in REGISTRY.items() if key in _option_names(method.options)]
        if hint:
            advice = f"did you mean {hint[0]!r}?"
        elif known:
            advice = f"{self.name} takes: {', '.join(known)}"
        else:
            advice = f"{self.name} takes no options"
        if owners and not hint:
            advice += f"; {key!r} is an option of {', '.join(owners)}"
        return f"optimizer.options.{key}: unknown option for {self.name} ({advice})"
