"""The grid: models x rows (a method, with or without MoLS) x learning rates x seeds, one job per
cell. A method is an overlay of configs/paper/methods/, a registered optimizer name or a torch
Optimizer's class path (`method_layer`). A job is the list of composed configs plus `--set`
overrides for its cell (learning rate, seed, a unique run name, output directory,
`run.resume=auto` so a requeued job continues from its checkpoint, and the wandb group and tags):
one line of train.py arguments.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from reproduce import paper
from reproduce.paper import BASE_CONFIG, MOLS_OVERLAY, PAPER, REPO


@dataclass(frozen=True)
class Variant:
    """One row of a table: a method overlay, with or without MoLS; an ablation row adds a tag (in
    the run name), overlays (configs/paper/<name>.yaml), overrides, and may be limited to some
    models or carry its own learning rates (used where the grid asks for the paper's)."""
    method: str
    mols: bool
    tag: str = ""
    configs: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    lrs: tuple[float, ...] = ()

    @classmethod
    def from_row(cls, row: dict) -> "Variant":
        """A row of experiments.yaml."""
        return cls(row["method"], row["mols"], row.get("tag", ""), tuple(row.get("configs", ())),
                   tuple(row.get("set", ())), tuple(row.get("models", ())), tuple(row.get("lrs", ())))

    @property
    def key(self) -> str:  # as in learning_rates.yaml
        return self.method + ("+mols" if self.mols else "")

    @classmethod
    def parse(cls, text: str) -> "Variant":
        method, _, suffix = text.strip().partition("+")
        if suffix not in ("", "mols"):
            raise ValueError(f"{text!r}: expected METHOD or METHOD+mols")
        return cls(method, suffix == "mols")


def runnable_variants(rows: list[dict]) -> list[Variant]:
    """The rows a grid runs: rows with run: false are another table's runs, or not runnable here."""
    return [Variant.from_row(r) for r in rows if r.get("run", True)]


@dataclass
class Job:
    model: str
    variant: Variant
    lr: float
    seed: int
    configs: list[str]
    overrides: list[str] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        return job_run_name(self.model, self.variant, self.lr, self.seed)

    def train_args(self) -> list[str]:
        args = []
        for path in self.configs:
            args += ["--config", path]
        for override in self.overrides:
            args += ["--set", override]
        return args

    def command_line(self) -> str:
        """The train.py arguments as one shell-quoted line (a line of the jobs file)."""
        return shlex.join(self.train_args())


def job_run_name(model: str, variant: Variant, lr: float, seed: int) -> str:
    tag = f"-{variant.tag}" if variant.tag else ""
    return f"{model}-{variant.method}{'-mols' if variant.mols else ''}{tag}-lr{lr:.1e}-s{seed}"


def relative(path: Path) -> str:
    """Config paths in job lines are relative to the repository (the jobs run from its root)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def learning_rates_for(model: str, variant: Variant, lrs: str | list[float] | dict) -> list[float]:
    """A cell's rates: a given list, a mapping model -> rate (a grid's own, as Table 11's), the
    search grid ("grid") or the paper's ("paper")."""
    if isinstance(lrs, list):
        return lrs
    if isinstance(lrs, dict):
        if model not in lrs:
            raise ValueError(f"the grid's learning rates name no rate for {model}; pass --lrs explicitly")
        return [float(lrs[model])]
    if lrs == "grid":
        return paper.search_grid()
    lr = paper.paper_lr(variant.key, model)
    if lr is None:
        raise ValueError(f"learning_rates.yaml gives no learning rate for {variant.key} at {model}; "
                         f"pass --lrs explicitly")
    return [lr]


def method_layer(method: str) -> tuple[list[Path], list[str]]:
    """(configs, overrides) that make a job train `method`: its overlay configs/paper/methods/<method>.yaml
    (the paper's settings), else `optimizer.name=<method>` for a registered method without one or a
    torch Optimizer's class path (module.ClassName), which the config check then imports."""
    from optimizers import REGISTRY, is_class_path

    overlay = PAPER / "methods" / f"{method}.yaml"
    if overlay.is_file():
        return [overlay], []
    if method in REGISTRY or is_class_path(method):
        return [], [f"optimizer.name={method}"]
    known = sorted(p.stem for p in (PAPER / "methods").glob("*.yaml"))
    raise ValueError(f"no method overlay {relative(overlay)} (known: {', '.join(known)}), and {method!r} is neither "
                     f"a registered method ({', '.join(REGISTRY)}) nor a class path (module.ClassName)")


def build_jobs(*, name: str, models: list[str], variants: list[Variant], lrs: str | list[float],
               seeds: list[int], out_dir: str, base: Path = BASE_CONFIG, extra_configs: list = (),
               extra_overrides: list[str] = (), wandb_project: str | None = None,
               models_dir: Path = PAPER / "models") -> list[Job]:
    """One job per (model, variant, lr, seed); configs are composed from the overlays in
    configs/paper/ (a size without a models/<size>.yaml, e.g. llama_tiny, is set by model.size;
    the fine-tuning tables' models are overlays of finetune/models/, `models_dir`)."""
    jobs = []
    for model in models:
        model_config = Path(models_dir) / f"{model}.yaml"
        for variant in variants:
            if variant.models and model not in variant.models:
                continue
            method_configs, method_overrides = method_layer(variant.method)
            configs = [base] + ([model_config] if model_config.is_file() else []) + method_configs
            configs += [MOLS_OVERLAY] if variant.mols else []
            configs += [PAPER / f"{c}.yaml" for c in variant.configs]
            configs += [Path(c) for c in extra_configs]
            cell_lrs = list(variant.lrs) if variant.lrs and lrs == "paper" else learning_rates_for(model, variant, lrs)
            for lr in cell_lrs:
                for seed in seeds:
                    tags = "[" + ", ".join([model, variant.method, "mols" if variant.mols else "no-mols", name]
                                           + ([variant.tag] if variant.tag else [])) + "]"
                    overrides = [f"optimizer.lr={lr:g}", f"run.seed={seed}",
                                 f"run.name={job_run_name(model, variant, lr, seed)}",
                                 f"run.out_dir={out_dir}/{name}",
                                 "run.resume=auto",  # a requeued or rerun job continues its run
                                 f"run.wandb.group={name}", f"run.wandb.tags={tags}"]
                    if not model_config.is_file():
                        overrides.append(f"model.size={model}")
                    overrides += method_overrides
                    if wandb_project:
                        overrides.append(f"run.wandb.project={wandb_project}")
                    jobs.append(Job(model, variant, lr, seed, [relative(c) for c in configs],
                                    overrides + list(variant.overrides) + list(extra_overrides)))
    names = [job.run_name for job in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"the grid repeats cells: {', '.join(duplicates)}")
    return jobs


def experiment_jobs(experiment: str, *, out_dir: str = "runs/paper", models: list[str] | None = None,
                    variants: list[Variant] | None = None, lrs=None, seeds: list[int] | None = None,
                    **options) -> list[Job]:
    """An experiment's jobs as `python -m reproduce run EXPERIMENT` builds them (its grid's
    models, rows, learning rates, seeds and overlays), parts of it replaced where given."""
    grid = paper.preset(experiment)
    return build_jobs(name=options.pop("name", grid.name), models=models or grid.models,
                      variants=variants or runnable_variants(grid.rows), lrs=lrs or grid.lrs,
                      seeds=grid.seeds if seeds is None else seeds, out_dir=out_dir,
                      base=options.pop("base", grid.base), models_dir=options.pop("models_dir", grid.models_dir),
                      extra_configs=[*grid.configs, *options.pop("extra_configs", [])], **options)


def load_job_config(job: Job):
    """The job's resolved config, as train.py will compose it."""
    from training.config import load_config
    return load_config([REPO / c for c in job.configs], job.overrides)


def check_jobs(jobs: list[Job], world_size: int) -> list[str]:
    """Compose every job's config as train.py will, before anything is submitted: each problem
    once, with the jobs that have it (a grid shares most of its problems)."""
    from configs import ConfigError

    having: dict[str, list[str]] = {}
    for job in jobs:
        try:
            load_job_config(job).train.accumulation(world_size)
        except ConfigError as err:
            for problem in err.problems:
                having.setdefault(problem, []).append(job.run_name)
    problems = []
    for problem, names in having.items():
        who = names[0] if len(names) == 1 else (f"{len(names)} jobs ({names[0]}, ...)" if len(names) < len(jobs)
                                                else f"every job ({len(names)})")
        problems.append(f"{who}: {problem}")
    return problems
