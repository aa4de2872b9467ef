"""train.py's command line: --config/--set, --print-config, --dry-run, and help that lists the config.

A flag argparse does not know (`--lr 1e-3`) is answered with the `--set` that was probably meant.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing

from training.config import Config


def config_keys() -> list[str]:
    """Every `section.key` a config can set (for --help and for suggestions)."""
    def walk(cls, prefix: str):
        for name, tp in typing.get_type_hints(cls).items():
            yield from walk(tp, f"{prefix}{name}.") if dataclasses.is_dataclass(tp) else [f"{prefix}{name}"]
    return list(walk(Config, ""))


def sections_help() -> str:
    lines = ["config sections (set any key with --set section.key=value; values are YAML):"]
    keys = config_keys()
    for section in dict.fromkeys(k.split(".")[0] for k in keys):
        names = [k.split(".", 1)[1] for k in keys if k.startswith(section + ".")]
        lines.append(f"  {section}: {', '.join(names)}")
    return "\n".join(lines)


def unknown_flags(extra: list[str]) -> str:
    """A message for flags argparse does not know, suggesting the --set that was probably meant."""
    keys = config_keys()
    lines = []
    for i, item in enumerate(extra):
        if not item.startswith("--"):
            continue
        name, _, value = item[2:].partition("=")
        if not value and i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            value = extra[i + 1]
        name = name.replace("-", "_")
        matches = [k for k in keys if k == name or k.endswith("." + name)] or difflib.get_close_matches(
            name, keys, n=1) or [k for k in keys if difflib.get_close_matches(name, [k.split(".")[-1]], n=1)][:1]
        hint = f": did you mean --set {matches[0]}={value or '...'}?" if matches else " (see --help for the config keys)"
        lines.append(f"unknown option {item}{hint}")
    return "\n".join(lines) or f"unexpected arguments: {' '.join(extra)}"


def parse_arguments(argv: list[str] | None, description: str) -> tuple[argparse.Namespace, str | None]:
    """The parsed flags, and a message for flags argparse does not know (None when there are none)."""
    parser = argparse.ArgumentParser(description=description, epilog=sections_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[],
                        help="YAML config (may name `base:` configs); repeat to layer several, later ones win")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optimizer.lr=2.5e-3 (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved, validated config and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="build the model on the meta device and print parameters, tokens, steps and memory "
                             "estimates; reads no data, writes nothing")
    parser.add_argument("--gpus", type=int, default=None, metavar="N",
                        help="world size for --dry-run (default: $WORLD_SIZE or 1)")
    parser.add_argument("--gpus-per-node", type=int, default=8, metavar="N", help="for --dry-run's host memory")
    args, extra = parser.parse_known_args(argv)
    return args, (unknown_flags(extra) if extra else None)
