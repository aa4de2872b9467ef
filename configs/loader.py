"""YAML configs composed into one tree: `base:` inheritance, several files in order, `--set` overrides."""
from __future__ import annotations

from pathlib import Path

import yaml

from configs.errors import ConfigError


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_tree(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML config and the chain of `base:` files it names (paths relative to the file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: `base` inheritance loops back to itself")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file (name a .yaml file in it)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (byte 0x{err.object[err.start]:02x} at offset {err.start} is not "
                          f"UTF-8): is it the config?") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    bases = raw.pop("base", None) or []
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = deep_merge(merged, read_yaml_tree(path.parent / base, _seen + (path,)))
    return deep_merge(merged, raw)


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """`section.key=value` strings; the value is parsed as YAML (so 1e-3, true, [0.9, 0.95] work)."""
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r}: expected KEY=VALUE, e.g. optimizer.lr=2.5e-3")
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    if problems:
        raise ConfigError(problems)
    return tree


def compose(paths: str | Path | list | None = None, overrides: list[str] | None = None) -> dict:
    """The config files merged in order (later ones win), then the overrides: a plain tree."""
    if paths is None:
        paths = []
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    tree: dict = {}
    for path in paths:
        tree = deep_merge(tree, read_yaml_tree(path))
    return apply_overrides(tree, list(overrides or []))
