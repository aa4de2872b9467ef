"""Typed run configuration: YAML files (with `base:` inheritance) + `--set key=value` overrides.

Every problem in a config is collected and reported together (litgpt-style), so a user fixes
their file in one pass. `ConfigError` carries the list; train.py prints it and exits with code 2.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(Exception):
    """A configuration (or other user input) is invalid. `problems` lists every issue found."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def report(self) -> str:
        lines = [f"configuration error ({len(self.problems)} problem{'s' * (len(self.problems) != 1)}):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The settings. Field defaults are the paper's settings where it has one.
# --------------------------------------------------------------------------------------------

@dataclass
class WandbConfig:
    mode: Literal["disabled", "offline", "online"] = "disabled"
    project: str = "mols"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    name: str = "run"
    out_dir: str = "runs"            # the run directory is out_dir/name
    seed: int = 0                    # model init (and everything not data-order related)
    resume: Optional[str] = None     # null | "auto" (latest checkpoint of this run dir) | a path
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class ModelConfig:
    size: str = "llama_60m"          # a key of models.SIZES
    vocab_size: Optional[int] = None # default: the size's own (32000 for LLaMA), else the tokenizer's
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    overrides: dict = field(default_factory=dict)  # extra fields for the transformers config


@dataclass
class DataConfig:
    source: Literal["embedded", "c4", "openwebtext", "local"] = "embedded"
    path: Optional[str] = None       # local: a file, directory or glob of training files
    val_path: Optional[str] = None   # local: the validation files
    format: Literal["auto", "c4", "jsonl", "json", "parquet", "text"] = "auto"
    text_field: str = "text"
    tokenizer: str = "embedded-32k"  # "embedded-<N>k", a Hugging Face name (t5-base) or a local path
    seq_len: int = 256
    packing: bool = False            # False: the reference harness's truncate+pad per document
    shuffle_seed: int = 42           # data order, independent of run.seed (paper: 42)
    shuffle_buffer: int = 10000      # streamed sources only
    num_workers: int = 1             # tokenizer worker processes for streamed sources
    val_tokens: int = 10_000_000     # fixed validation budget (non-pad tokens)


@dataclass
class TrainConfig:
    steps: int = 10_000                  # optimizer updates, exactly
    global_batch: int = 512              # sequences per update, across all ranks
    micro_batch: int = 64                # sequences per forward/backward on one rank
    precision: Literal["auto", "bf16-mixed", "bf16-pure", "fp32"] = "auto"  # auto: bf16-mixed on GPU, fp32 on CPU
    grad_clip: float = 1.0               # 0 disables clipping
    warmup_ratio: float = 0.1
    warmup_steps: Optional[int] = None   # overrides warmup_ratio
    min_lr_ratio: float = 0.1
    eval_every: int = 1000
    eval_batch: Optional[int] = None     # default: micro_batch
    checkpoint_every: int = 1000         # 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    threads: Optional[int] = None        # torch CPU threads per rank


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.0
    options: dict = field(default_factory=dict)  # method-specific settings, checked by optimizers/


@dataclass
class MoLSConfig:
    enabled: bool = False
    grouping: str = "modules"            # modules | attn_mlp | attn_mlp_emb | qk_vo_mlp_emb | layers
    estimate_at: Optional[int] = None    # step of the one-shot estimate; default ceil(1% of steps)
    samples: int = 2048                  # N: sequences used for the estimate
    micro_batch: Optional[int] = None    # b: sequences per gradient sample; default train.micro_batch
    reference: str = "vo"                # vo | max | auto | <class>
    min_alpha: float = 1.0               # 1.0: only boost (the paper, whenever VO is the maximum)
    max_alpha: Optional[float] = None
    estimator: Literal["mean", "median"] = "mean"
    stats_device: Literal["cpu", "device"] = "cpu"
    track_every: int = 0                 # >0: measure module SNRs every k steps (Figure 1)
    track_samples: int = 256             # sequences per tracking measurement
    reestimate_every: int = 0            # >0: re-estimate alphas every k steps (beyond the paper)
    reestimate_ramp_steps: int = 100


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    mols: MoLSConfig = field(default_factory=MoLSConfig)

    @property
    def warmup_steps(self) -> int:
        if self.train.warmup_steps is not None:
            return self.train.warmup_steps
        return int(round(self.train.warmup_ratio * self.train.steps))

    @property
    def mols_estimate_step(self) -> int:
        if self.mols.estimate_at is not None:
            return self.mols.estimate_at
        return math.ceil(0.01 * self.train.steps)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Loading: YAML + base inheritance + overrides
# --------------------------------------------------------------------------------------------

def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_tree(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML config and the chain of `base:` files it names (paths relative to the file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: `base` inheritance loops back to itself")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    bases = raw.pop("base", None) or []
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _deep_merge(merged, read_yaml_tree(path.parent / base, _seen + (path,)))
    return _deep_merge(merged, raw)


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


def load_config(paths: str | Path | list | None = None, overrides: list[str] | None = None) -> Config:
    """Merge the config files in order (later ones win), then the overrides, then validate."""
    if paths is None:
        paths = []
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    tree: dict = {}
    for path in paths:
        tree = _deep_merge(tree, read_yaml_tree(path))
    tree = apply_overrides(tree, overrides or [])
    return validate(tree)


# --------------------------------------------------------------------------------------------
# Validation: structure (types, unknown keys) then values; every problem collected.
# --------------------------------------------------------------------------------------------

def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _convert(value: Any, tp, where: str, problems: list[str]):
    """Check `value` against type `tp`; return the converted value (or None after a problem)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, problems)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where, problems)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            problems.append(f"{where}: {value!r} is not one of {_type_name(tp)}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: expected a list, got {value!r}")
            return value
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{where}[{i}]", problems) for i, v in enumerate(value)]
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


def _build(cls, tree: Any, where: str, problems: list[str]):
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
            hint = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            problems.append(f"{full}: unknown key" + (f" (did you mean {(where + '.' if where else '') + hint[0]!r}?)" if hint else
                                                      f" (known keys: {', '.join(names)})"))
            continue
        kwargs[key] = _convert(value, hints[key], full, problems)
    try:
        return cls(**kwargs)
    except TypeError as err:  # only reachable after problems were recorded
        problems.append(f"{where}: {err}")
        return cls()


def _check_values(cfg: Config, problems: list[str]) -> None:
    t, d, o, m, r = cfg.train, cfg.data, cfg.optimizer, cfg.mols, cfg.run

    def positive(name, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            problems.append(f"{name}: must be positive, got {value!r}")

    for name, value in [("train.steps", t.steps), ("train.global_batch", t.global_batch),
                        ("train.micro_batch", t.micro_batch), ("data.seq_len", d.seq_len),
                        ("data.val_tokens", d.val_tokens), ("optimizer.lr", o.lr),
                        ("train.log_every", t.log_every), ("train.eval_every", t.eval_every),
                        ("mols.samples", m.samples), ("data.shuffle_buffer", d.shuffle_buffer)]:
        positive(name, value)
    for name, value in [("train.eval_batch", t.eval_batch), ("mols.micro_batch", m.micro_batch),
                        ("train.threads", t.threads), ("mols.max_alpha", m.max_alpha)]:
        if value is not None:
            positive(name, value)
    ints = lambda *xs: all(isinstance(x, int) and not isinstance(x, bool) for x in xs)
    if ints(t.global_batch, t.micro_batch) and t.global_batch > 0 and t.micro_batch > 0:
        if t.global_batch % t.micro_batch:
            problems.append(f"train.global_batch ({t.global_batch}) must be a multiple of "
                            f"train.micro_batch ({t.micro_batch})")
    if isinstance(t.warmup_ratio, float) and not 0 <= t.warmup_ratio <= 1:
        problems.append(f"train.warmup_ratio: must be in [0, 1], got {t.warmup_ratio}")
    if isinstance(t.min_lr_ratio, float) and not 0 <= t.min_lr_ratio <= 1:
        problems.append(f"train.min_lr_ratio: must be in [0, 1], got {t.min_lr_ratio}")
    if ints(t.steps) and t.warmup_steps is not None and ints(t.warmup_steps) and not 0 <= t.warmup_steps <= t.steps:
        problems.append(f"train.warmup_steps: must be in [0, train.steps={t.steps}], got {t.warmup_steps}")
    for name, value in [("train.grad_clip", t.grad_clip), ("optimizer.eps", o.eps),
                        ("optimizer.weight_decay", o.weight_decay), ("train.checkpoint_every", t.checkpoint_every),
                        ("mols.track_every", m.track_every), ("mols.reestimate_every", m.reestimate_every)]:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            problems.append(f"{name}: must be >= 0, got {value!r}")
    if isinstance(o.betas, list) and (len(o.betas) != 2 or not all(isinstance(b, float) and 0 <= b < 1 for b in o.betas)):
        problems.append(f"optimizer.betas: expected two numbers in [0, 1), got {o.betas!r}")
    if d.source == "local" and not d.path:
        problems.append("data.path: required when data.source is 'local' (a file, directory or glob)")
    if d.source != "local" and d.path:
        problems.append(f"data.path: only used with data.source: local (source is {d.source!r})")
    if isinstance(m.min_alpha, float) and m.min_alpha <= 0:
        problems.append(f"mols.min_alpha: must be positive, got {m.min_alpha}")
    if m.enabled and ints(t.steps) and t.steps > 0:
        step = cfg.mols_estimate_step
        if ints(step) and not 0 <= step < t.steps:
            problems.append(f"mols.estimate_at: must be a step in [0, train.steps={t.steps}), got {step}")
    if r.resume not in (None, "auto") and isinstance(r.resume, str) and not Path(r.resume).exists():
        problems.append(f"run.resume: checkpoint {r.resume!r} does not exist (use 'auto' or a path)")
    if not isinstance(r.name, str) or not r.name or "/" in r.name:
        problems.append(f"run.name: must be a non-empty name without '/', got {r.name!r}")


def validate(tree: dict) -> Config:
    problems: list[str] = []
    cfg = _build(Config, tree, "", problems)
    # Value checks run even after type problems (each guards its own types), so one pass shows all.
    try:
        _check_values(cfg, problems)
    except (TypeError, ValueError, AttributeError):
        pass
    from models import SIZES  # late imports: those packages import nothing from here
    if isinstance(cfg.model.size, str) and cfg.model.size not in SIZES:
        hint = difflib.get_close_matches(cfg.model.size, list(SIZES), n=1)
        problems.append(f"model.size: unknown size {cfg.model.size!r}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(SIZES)})"))
    from optimizers import check_optimizer_config
    problems += check_optimizer_config(cfg.optimizer)
    from mols.groups import GROUPINGS
    if isinstance(cfg.mols.grouping, str) and cfg.mols.grouping not in GROUPINGS:
        hint = difflib.get_close_matches(cfg.mols.grouping, list(GROUPINGS), n=1)
        problems.append(f"mols.grouping: unknown grouping {cfg.mols.grouping!r}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(GROUPINGS)})"))
    elif isinstance(cfg.mols.reference, str) and cfg.mols.reference not in ("max", "auto"):
        # the classes this grouping produces (per-layer ones end in ".<class>")
        to_group = GROUPINGS[cfg.mols.grouping]
        classes = {to_group(c, "model.layers.0.x").rsplit(".", 1)[-1] for c in ("emb", "head", "qk", "vo", "mlp")}
        if cfg.mols.reference not in classes - {"other"}:
            problems.append(f"mols.reference: {cfg.mols.reference!r} is not a class of grouping "
                            f"{cfg.mols.grouping!r} (use max, auto or one of {', '.join(sorted(classes - {'other'}))})")
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return cfg
