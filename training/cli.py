"""train.py's command line: --config/--set, --print-config, --dry-run, and help that lists the config.

A flag argparse does not know (`--lr 1e-3`) is answered with the `--set` that was probably meant.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import io
import re
import textwrap
import tokenize
import typing

import yaml

from training.config import Config


def config_keys() -> list[str]:
    """Every `section.key` a config can set (for --help and for suggestions)."""
    def walk(cls, prefix: str):
        for name, tp in typing.get_type_hints(cls).items():
            yield from walk(tp, f"{prefix}{name}.") if dataclasses.is_dataclass(tp) else [f"{prefix}{name}"]
    return list(walk(Config, ""))


def field_comments(cls) -> dict[str, str]:
    """Each field of a config dataclass and the comment that documents it in the source: the one
    at the end of its line (with the lines that continue it, aligned under it), else the block of
    comment lines right above it. Fields without one are left out. The comments are the
    documentation of the config keys; --help reads them rather than repeating them."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments = {tok.start[0]: (tok.start[1], tok.string.lstrip("#").strip())
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    own_line = {row for row in comments if lines[row - 1].lstrip().startswith("#")}
    (body,) = ast.parse(source).body
    found, continuations = {}, set()
    for node in body.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        inline = [row for row in range(node.lineno, node.end_lineno + 1) if row in comments and row not in own_line]
        if inline:
            column = comments[inline[0]][0]
            rows = inline[:1]
            while rows[-1] + 1 in own_line and comments[rows[-1] + 1][0] == column:
                rows.append(rows[-1] + 1)
            continuations.update(rows)
        else:
            rows = []
            while node.lineno - len(rows) - 1 in own_line - continuations:
                rows.insert(0, node.lineno - len(rows) - 1)
        if rows:
            found[node.target.id] = " ".join(comments[row][1] for row in rows)
    return found


def first_sentence(text: str) -> str:
    head, *rest = re.split(r"(?<!e\.g)(?<!i\.e)\.\s", text, maxsplit=1)
    return head + "." if rest else head


def _yaml(value) -> str:
    """A default as it is written in a config."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()


def config_help() -> list[tuple[str, str]]:
    """(`section.key = default`, its meaning) for every config key: the allowed values of a key
    with a fixed set, then the first sentence of the field's source comment."""
    rows = []

    def walk(cls, instance, prefix: str):
        comments = field_comments(cls)
        for name, tp in typing.get_type_hints(cls).items():
            value = getattr(instance, name)
            if dataclasses.is_dataclass(tp):
                walk(tp, value, f"{prefix}{name}.")
                continue
            literal = next((t for t in (tp, *typing.get_args(tp)) if typing.get_origin(t) is typing.Literal), None)
            meaning = [f"{{{'|'.join(map(str, typing.get_args(literal)))}}}"] if literal else []
            meaning += [first_sentence(comments[name])] if name in comments else []
            rows.append((f"{prefix}{name} = {_yaml(value)}", " ".join(meaning)))
    walk(Config, Config(), "")
    return rows


def sections_help() -> str:
    """The epilog of --help: every config key, its default and what it means."""
    width, column = 110, 44
    lines = ["config keys (set any with --set section.key=value; values are YAML), their defaults and meaning",
             "(the whole comment of each is at its field in the section's config.py):"]
    sections = typing.get_type_hints(Config)
    for key, meaning in config_help():
        section = key.split(".")[0]
        if section in sections:  # its first key: the heading, with the file that documents it
            lines.append(f"{section} ({sections.pop(section).__module__.replace('.', '/')}.py):")
        wrapped = textwrap.wrap(meaning, width - column) or [""]
        if len(key) + 2 > column - 2:
            lines.append(f"  {key}")
            lines += [" " * column + part for part in wrapped if part]
        else:
            lines.append(f"  {key:<{column - 2}}{wrapped[0]}".rstrip())
            lines += [" " * column + part for part in wrapped[1:]]
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
