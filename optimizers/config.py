"""The `optimizer` section: the method, its common settings, and each method's typed options.

`optimizer.options` holds method-specific settings; each method's options are a dataclass
(optimizers/options.py), checked by the same typed checker as every other section
(configs.typed). After validation `cfg.options` is that dataclass, defaults filled in, so builders
read `options.rank` directly. Which method takes which dataclass is said once, in
optimizers/methods.py (METHOD_OPTIONS).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Optional

from configs import build, check_range, is_number
from optimizers.methods import METHOD_OPTIONS


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
        check_range(problems, "optimizer.lr", self.lr, low=0, low_open=True)
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
        cls = METHOD_OPTIONS[self.name]
        known = _option_names(cls)
        for key in options:
            if key not in known:
                problems.append(self._unknown_option(key, known))
        self.options = build(cls, {k: v for k, v in options.items() if k in known}, "optimizer.options", problems)
        return problems

    def _method_problem(self) -> Optional[str]:
        methods = list(METHOD_OPTIONS)
        if not isinstance(self.name, str):
            return f"optimizer.name: expected a string, got {self.name!r} (known: {', '.join(methods)})"
        if self.name in methods:
            return None
        normalised = self.name.lower().replace("-", "_")
        hint = difflib.get_close_matches(normalised, methods, n=1, cutoff=0.6)
        return (f"optimizer.name: unknown method {self.name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(methods)})"))

    def _unknown_option(self, key: str, known: list[str]) -> str:
        hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        owners = [m for m, cls in METHOD_OPTIONS.items() if key in _option_names(cls)]
        if hint:
            advice = f"did you mean {hint[0]!r}?"
        elif known:
            advice = f"{self.name} takes: {', '.join(known)}"
        else:
            advice = f"{self.name} takes no options"
        if owners and not hint:
            advice += f"; {key!r} is an option of {', '.join(owners)}"
        return f"optimizer.options.{key}: unknown option for {self.name} ({advice})"
