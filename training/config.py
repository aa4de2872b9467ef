"""The whole run configuration: each package's section, plus `run` and `train` (owned here).

    cfg = load_config(["configs/quickstart.yaml"], ["optimizer.lr=1e-3"])   # or ConfigError

Sections and their rules live with their package (data/config.py, models/config.py,
optimizers/config.py, mols/config.py); the rules that tie sections together are `Config.validate`.
Every problem of every section is collected into one ConfigError.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from configs import ConfigError, build, check_range, compose, is_int
from data.config import DataConfig
from models.config import ModelConfig
from mols.config import MoLSConfig
from optimizers.config import OptimizerConfig


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
    allow_resume_changes: bool = False  # resume although settings differ from the checkpoint's
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def validate(self) -> list[str]:
        problems = []
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            problems.append(f"run.name: must be a non-empty name without '/', got {self.name!r}")
        if self.resume not in (None, "auto") and isinstance(self.resume, str) and not Path(self.resume).exists():
            problems.append(f"run.resume: checkpoint {self.resume!r} does not exist (use 'auto' or a path)")
        return problems

    @property
    def directory(self) -> Path:
        return Path(self.out_dir) / self.name


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
    # Every evaluation also computes the reference harness's perplexity (the paper's numbers): a
    # seed-42 shuffle of the validation documents, batches of train.micro_batch, the mean of batch
    # means divided by one batch more than it ran (training/evaluation.py; docs/evaluation.md).
    # Logged as `val_harness`, summary.json final_harness_loss/ppl. Off: nothing extra is built.
    eval_harness: bool = False
    checkpoint_every: int = 1000         # 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    # ddp: every rank holds the whole model; fsdp: weights, gradients and optimizer state sharded
    # over the ranks (training/fsdp.py), checkpoints written by every rank (torch.distributed.checkpoint)
    parallel: Literal["ddp", "fsdp"] = "ddp"
    fsdp_reshard_in_accumulation: bool = False  # fsdp: gather the weights again for every micro-batch (memory)
    # fsdp with accumulation: reduce-scatter every micro-batch's gradients into the fp32 shards
    # (torchtitan's choice), or only the last one's, which keeps each parameter's whole gradient,
    # upcast to fp32, on every rank until then (4 bytes per parameter per rank: 27 GB at 7B) for
    # one reduction per update instead of one per micro-batch (training/fsdp.py)
    fsdp_gradient_sync: Literal["every_micro_batch", "last_micro_batch"] = "every_micro_batch"
    threads: Optional[int] = None        # torch CPU threads per rank
    peak_tflops: Optional[float] = None  # the device's peak bf16 TFLOP/s for MFU (default: training/throughput.py's table)
    tf32: bool = True                    # fp32 matrix multiplies on CUDA use TF32 tensor cores; false: exact fp32
    check_memory: bool = True            # refuse to start a run whose estimated memory exceeds the device's
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient norm never reaches the weights
    max_consecutive_skips: int = 10      # on_nonfinite: skip stops the run after this many skips in a row

    def validate(self) -> list[str]:
        problems: list[str] = []
        for name in ("steps", "global_batch", "micro_batch", "log_every", "eval_every"):
            check_range(problems, f"train.{name}", getattr(self, name), low=0, low_open=True)
        check_range(problems, "train.peak_tflops", self.peak_tflops, low=0, low_open=True, optional=True)
        for name in ("eval_batch", "threads"):
            check_range(problems, f"train.{name}", getattr(self, name), low=0, low_open=True, optional=True)
        check_range(problems, "train.max_consecutive_skips", self.max_consecutive_skips, low=1)
        for name in ("grad_clip", "checkpoint_every"):
            check_range(problems, f"train.{name}", getattr(self, name), low=0)
        check_range(problems, "train.warmup_ratio", self.warmup_ratio, low=0, high=1)
        check_range(problems, "train.min_lr_ratio", self.min_lr_ratio, low=0, high=1)
        if is_int(self.global_batch, self.micro_batch) and self.global_batch > 0 and self.micro_batch > 0:
            if self.global_batch % self.micro_batch:
                problems.append(f"train.global_batch ({self.global_batch}) must be a multiple of "
                                f"train.micro_batch ({self.micro_batch}); {self.micro_batch_hint(1)}")
        if is_int(self.steps) and is_int(self.warmup_steps) and not 0 <= self.warmup_steps <= self.steps:
            problems.append(f"train.warmup_steps: must be in [0, train.steps={self.steps}], got {self.warmup_steps}")
        return problems

    def due(self, what: str, done: int) -> bool:
        """Whether the loop logs ("log"), evaluates ("eval") or checkpoints ("checkpoint") after
        update `done`; the last update is always logged, and the final evaluation and checkpoint
        follow the loop."""
        if what == "log":
            return done % self.log_every == 0 or done == self.steps
        if what == "eval":
            return done % self.eval_every == 0 and done != self.steps
        if what == "checkpoint":
            return bool(self.checkpoint_every) and done % self.checkpoint_every == 0 and done != self.steps
        raise ValueError(f"unknown cadence {what!r}")

    def accumulation(self, world_size: int) -> int:
        """Micro-steps per update on each of `world_size` ranks (ConfigError when it does not divide)."""
        per_step = world_size * self.micro_batch
        if self.global_batch % per_step:
            raise ConfigError(f"train.global_batch ({self.global_batch}) must be a multiple of world size x "
                              f"train.micro_batch ({world_size} x {self.micro_batch} = {per_step}); "
                              f"{self.micro_batch_hint(world_size)}")
        return self.global_batch // per_step

    def micro_batch_hint(self, world_size: int) -> str:
        """What to set when the global batch does not split: the largest micro-batch up to this one
        that divides each rank's share of it (the fewest micro-steps within the memory of this one)."""
        if self.global_batch % world_size:
            return (f"no micro-batch can: {world_size} ranks do not divide it; change the number of ranks or "
                    f"train.global_batch")
        per_rank = self.global_batch // world_size
        micro = max(m for m in range(1, min(self.micro_batch, per_rank) + 1) if per_rank % m == 0)
        return f"use train.micro_batch={micro} (accumulation {per_rank // micro}) or a smaller divisor of {per_rank}"


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    mols: MoLSConfig = field(default_factory=MoLSConfig)

    def validate(self) -> list[str]:
        """The rules that tie sections together (each section checked its own already)."""
        problems: list[str] = []
        steps = self.train.steps
        if self.mols.enabled and is_int(steps) and steps > 0:
            step = self.mols_estimate_step
            if is_int(step) and not 0 <= step < steps:
                problems.append(f"mols.estimate_at: must be a step in [0, train.steps={steps}), got {step}")
            elif is_int(step) and (problem := self._estimate_after_warmup(step)):
                problems.append(problem)
        if self.train.eval_harness and self.data.instructions:
            problems.append("train.eval_harness: the reference harness's perplexity is defined for documents "
                            "(pre-training data), not for instruction records")
        elif self.train.eval_harness and self.data.val_selection and self.data.source not in ("embedded", "tokens"):
            problems.append(f"train.eval_harness: with data.val_selection only for the embedded corpus or token "
                            f"shards (a shuffled {self.data.source!r} stream no longer knows which half a document "
                            f"is in)")
        if not self.mols.enabled and is_int(self.mols.track_every) and self.mols.track_every > 0:
            # train.py measures SNRs through its MoLS object, which exists only when enabled
            problems.append(f"mols.track_every: {self.mols.track_every} does nothing while mols.enabled is false; "
                            "to track module SNRs without scaling set mols.enabled: true with "
                            "mols.fixed_multipliers: {} (as configs/paper/experiments/track_snr.yaml does)")
        if self.model.pretrained and self.train.parallel == "fsdp":
            problems.append("train.parallel: fsdp builds its model from model.size on the meta device; fine-tuning a "
                            "pretrained model (model.pretrained) runs under ddp for now")
        if self.model.lora.enabled and self.mols.enabled and is_int(steps) and self.mols_estimate_step == 0:
            problems.append("mols.estimate_at: 0 measures LoRA's lora_A gradients while lora_B is still zero (they "
                            "are all zero); estimate after at least one update (the default: 1% of train.steps)")
        if self.train.parallel == "fsdp":
            from training.fsdp import method_problem
            problem = method_problem(self.optimizer.name)
            if problem:
                problems.append(problem)
            if self.model.init == "transformers":
                problems.append("model.init: transformers cannot initialise a model built on the meta device "
                                "and sharded (train.parallel: fsdp); use by_name (or auto)")
        return problems

    def _estimate_after_warmup(self, step: int) -> str:
        """The rule for every MoLS run: its first estimate falls inside the warm-up (step <
        warm-up steps), so that the multipliers ramp from 1 to their alphas over the rest of it
        (mols/scaling.py) as the paper's method does; at or after the warm-up's end the ramp is
        empty and every multiplier jumps in one step. Nothing moves the step: a config that puts
        it there is refused, naming what to change. Exempt: `mols.fixed_multipliers: {}` (every
        multiplier stays 1, SNRs measured only)."""
        if self.mols.fixed_multipliers == {} or not is_int(self.train.steps):
            return ""
        warmup = self.warmup_steps
        if not is_int(warmup) or step < warmup:
            return ""
        which = "mols.estimate_at" if self.mols.estimate_at is not None else \
            "mols.estimate_at (null: ceil(1% of train.steps))"
        return (f"{which}: the MoLS estimate at step {step} is not inside the warm-up ({warmup} steps), so its "
                f"multipliers would jump to their alphas in one step instead of ramping in over the rest of "
                f"the warm-up; set mols.estimate_at below {warmup} or warm up longer "
                f"(train.warmup_steps / train.warmup_ratio)")

    @property
    def init(self) -> str:
        """How the initial weights are drawn (model.init with auto resolved)."""
        if self.model.init != "auto":
            return self.model.init
        return "by_name" if self.train.parallel == "fsdp" else "transformers"

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


def validate(tree: dict) -> Config:
    """A typed Config from a plain tree, or ConfigError listing every problem."""
    problems: list[str] = []
    cfg = build(Config, tree, "", problems)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return cfg


def load_config(paths=None, overrides: list[str] | None = None) -> Config:
    """Merge the config files in order (later ones win), then the overrides, then validate."""
    return validate(compose(paths, overrides))


# Settings that change how a run is launched, logged, checked or stored, never what it trains: a
# resume may change them (training/state.py), and result tables group runs without them.
RUN_ONLY_SETTINGS = ("run.name", "run.out_dir", "run.resume", "run.allow_resume_changes", "run.wandb.",
                     "train.peak_tflops", "train.log_every", "train.eval_every", "train.eval_batch",
                     "train.eval_harness",
                     "train.checkpoint_every", "train.keep_checkpoints", "train.compile", "train.threads",
                     "train.check_memory", "data.num_workers", "data.prefetch", "mols.uncertainty_groups",
                     "mols.uncertainty_warn")
LEAF_MAPPINGS = ("mols.fixed_multipliers",)  # settings whose value is a mapping: compared whole


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"train.steps": 100, ...} from the nested config."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and f"{prefix}{key}" not in LEAF_MAPPINGS:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def training_settings(config: dict) -> dict:
    """The settings of a config (a dict, as saved in checkpoints and config.yaml; defaults filled in
    where it validates) that change what is trained, flattened."""
    try:
        config = validate(config).to_dict()
    except ConfigError:
        pass
    return {key: value for key, value in flatten(config).items() if not key.startswith(RUN_ONLY_SETTINGS)}
