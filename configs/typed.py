"""Typed settings from a YAML tree: one checker for every section of every package.

A section is a dataclass whose field types say what YAML may hold (int, float, bool, str,
Literal, Optional, list, dict, nested dataclasses). `build(cls, tree)` converts and checks a
tree against it, collecting every problem (unknown keys with a did-you-mean, wrong types), then
calls the section's own `validate(self) -> list[str]` for its value rules (ranges, choices that
depend on other fields). Nothing is raised while checking, so one pass reports everything.

The small predicates below let `validate` methods guard their own types: a field that failed
its type check keeps the raw value, and a rule about it then stays silent.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Literal, Union


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def did_you_mean(value: Any, choices, *, prefix: str = "", cutoff: float = 0.6) -> str:
    """' (did you mean 'x'?)' when `value` is close to one of `choices`, else ''."""
    hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f" (did you mean {prefix + hint[0]!r}?)" if hint else ""


def convert(value: Any, tp, where: str, problems: list[str]):
    """Check `value` against type `tp`; return the converted value (the raw one after a problem)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, problems)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], where, problems)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            problems.append(f"{where}: {value!r} is not one of {_type_name(tp)}"
                            + did_you_mean(value, choices))
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: expected a list, got {value!r}")
            return value
        (item_tp,) = typing.get_args(tp)
        return [convert(v, item_tp, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)  # 1e4 in YAML is a float
            problems.append(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, got {value!r}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build(cls, tree: Any, where: str, problems: list[str]):
    """An instance of dataclass `cls` from `tree`, every problem appended to `problems`."""
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        problems.append(f"{where or 'config'}: expected a mapping, got {tree!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in tree.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            hint = did_you_mean(key, names, prefix=f"{where}." if where else "")
            known = f" (known keys: {', '.join(names)})" if names else " (this section takes no keys)"
            problems.append(f"{full}: unknown key" + (hint or known))
            continue
        kwargs[key] = convert(value, hints[key], full, problems)
    instance = cls(**kwargs)
    if hasattr(instance, "validate"):
        problems.extend(instance.validate())
    return instance


# --------------------------------------------------------------------------------------------
# Predicates for `validate` methods: true only for values of the right type.
# --------------------------------------------------------------------------------------------

def is_int(*values) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def is_number(*values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def check_range(problems: list[str], where: str, value: Any, *, low: float | None = None,
                high: float | None = None, low_open: bool = False, high_open: bool = False,
                optional: bool = False) -> None:
    """Append '<where>: must be ...' when a number lies outside [low, high] (open ends as given)."""
    if value is None and optional:
        return
    if not is_number(value):
        return  # its type problem was reported already
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not (too_low or too_high):
        return
    if low == 0 and low_open and high is None:
        rule = "positive"
    else:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high:g}")
        rule = " and ".join(parts)
    problems.append(f"{where}: must be {rule}, got {value!r}")
