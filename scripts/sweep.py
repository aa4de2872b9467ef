#!/usr/bin/env python3
"""Expand a grid of training runs into jobs and run them locally or as a Slurm job array.

A grid is models x methods (x MoLS off/on) x learning rates x seeds. Every cell becomes one job:
the list of composed configs plus `--set` overrides for the cell (learning rate, seed, a unique
run name, output directory, `run.resume=auto` so a requeued job continues from its checkpoint,
and the wandb group/tags).

    # the paper's tables (models and rows from configs/paper/paper_results.yaml)
    scripts/sweep.py --table 1 --dry-run                 # print the sbatch script, the jobs, the GPU-hours
    scripts/sweep.py --table 1 --partition gpu --time 48:00:00
    scripts/sweep.py --table lr_search --models llama_60m

    # any grid
    scripts/sweep.py --name adam_vs_mols --models llama_60m,llama_130m --methods adam --mols both
                     --lrs 1e-3,2.5e-3 --seeds 0,1 --mode local --nproc-per-node 2

Slurm mode writes <out-dir>/<name>/slurm/{<name>.sbatch, <name>.jobs, logs/} and submits with
sbatch; array task i runs line i+1 of the jobs file through srun + the launcher (training/launch.py:
torchrun that gives its workers time to save after a signal) on every node of its allocation. Local mode runs the jobs one after another on this machine.

The sbatch script asks for --cpus-per-task and --mem derived from the configs (see job_cost; the
flags override them); a dry run also prints the grid's estimated GPU-hours (see estimate_line).

Preemption and time limits (render_sbatch; docs/slurm.md has a run on a real Slurm): the job asks
for USR1 to its batch shell 300 s before the time limit (--signal=B:USR1@300). The shell passes a
SIGTERM on to the training step (`scancel --signal=TERM $SLURM_JOB_ID`: torchrun and its workers
on every node); every rank finishes its step, saves a checkpoint at that step and exits 75 (and so
does the launcher); once srun has returned, the shell runs `scontrol requeue` and the job, same
id and jobs-file line, resumes from that checkpoint (run.resume=auto). A TERM to the batch shell
(scancel, preemption) is passed on the same way, but the job is not requeued by the script: a
cancelled job ends with that checkpoint on disk (in KillWait seconds, or Slurm kills it), a
preempted one is requeued by Slurm where the partition's PreemptMode says so. The batch shell exits
with srun's status. Allow the save time in the lead: --sbatch-arg=--signal=B:USR1@600.
"""
from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"
BASE_CONFIG = PAPER / "base.yaml"
MOLS_OVERLAY = PAPER / "mols.yaml"

# Sweep defaults per paper table. Models and rows come from paper_results.yaml. The paper trains
# seeds 0-2 and reports their spread in Table 1; Tables 3 and 6 report single numbers, so one seed
# is the default there (--seeds to change). 3B/7B use two 8-GPU nodes (see models/llama_3b.yaml).
TABLE_PRESETS = {
    "1": {"table": "1", "seeds": [0, 1, 2], "lrs": "paper", "nodes": 1},
    "3": {"table": "3", "seeds": [0], "lrs": "paper", "nodes": 2},
    "6": {"table": "6", "seeds": [0], "lrs": "paper", "nodes": 1},
    # The paper's learning-rate search: every Table 1 cell over the whole grid, one seed.
    "lr_search": {"table": "1", "seeds": [0], "lrs": "grid", "nodes": 1},
    # ... and for the Table 3 and Table 6 models (their rows, the same grid)
    "lr_search_3": {"table": "3", "seeds": [0], "lrs": "grid", "nodes": 2, "name": "lr_search_table3"},
    "lr_search_6": {"table": "6", "seeds": [0], "lrs": "grid", "nodes": 1, "name": "lr_search_table6"},
    # The other pre-training experiments (docs/paper_coverage.md). Rows carry their own overlays,
    # overrides, models and learning rates (paper_results.yaml); "configs" apply to every job.
    "7": {"table": "7", "seeds": [0], "lrs": "paper", "nodes": 1, "name": "table7"},
    "12": {"table": "12", "seeds": [0], "lrs": "paper", "nodes": 1, "name": "table12"},
    "13": {"table": "13", "seeds": [0], "lrs": "paper", "nodes": 1, "name": "table13"},
    "14": {"table": "14", "seeds": [0], "lrs": "grid", "nodes": 1, "name": "table14"},  # no published rates
    "figure1": {"table": "figure1", "seeds": [0], "lrs": "paper", "nodes": 1, "name": "figure1"},
    "figure2": {"table": "figure2", "seeds": [0], "lrs": "paper", "nodes": 1, "name": "figure2",
                "configs": [str(PAPER / "experiments" / "openwebtext.yaml")]},
    "figure3": {"table": "figure3", "seeds": [0], "lrs": "paper", "nodes": 1, "name": "figure3"},
    "figure4": {"table": "figure4", "seeds": [0], "lrs": "paper", "nodes": 1, "name": "figure4",
                "configs": [str(PAPER / "experiments" / "seq_len_1024.yaml")]},
    "figure5": {"table": "figure5", "seeds": [0], "lrs": "paper", "nodes": 1, "name": "figure5",
                "configs": [str(PAPER / "experiments" / "steps_100k.yaml")]},
    "figure7": {"table": "figure7", "seeds": [0], "lrs": "paper", "nodes": 1, "name": "figure7"},
}


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def paper_tables() -> dict:
    return load_yaml(PAPER / "paper_results.yaml")["tables"]


def paper_learning_rates() -> dict:
    return load_yaml(PAPER / "learning_rates.yaml")


# ------------------------------------------------------------------------------------------------
# The grid
# ------------------------------------------------------------------------------------------------

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
        """A row of paper_results.yaml."""
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


def learning_rates_for(model: str, variant: Variant, lrs: str | list[float]) -> list[float]:
    if isinstance(lrs, list):
        return lrs
    table = paper_learning_rates()
    if lrs == "grid":
        return list(table["search_grid"])
    by_size = table["learning_rates"].get(variant.key, {})
    if model not in by_size:
        raise ValueError(f"learning_rates.yaml gives no learning rate for {variant.key} at {model}; "
                         f"pass --lrs explicitly")
    return [by_size[model]]


def build_jobs(*, name: str, models: list[str], variants: list[Variant], lrs: str | list[float],
               seeds: list[int], out_dir: str, base: Path = BASE_CONFIG, extra_configs: list[str] = (),
               extra_overrides: list[str] = (), wandb_project: str | None = None) -> list[Job]:
    """One job per (model, variant, lr, seed); configs are composed from the overlays in
    configs/paper/ (a size without a models/<size>.yaml, e.g. llama_tiny, is set by model.size)."""
    jobs = []
    for model in models:
        model_config = PAPER / "models" / f"{model}.yaml"
        for variant in variants:
            if variant.models and model not in variant.models:
                continue
            method_config = PAPER / "methods" / f"{variant.method}.yaml"
            if not method_config.is_file():
                known = sorted(p.stem for p in (PAPER / "methods").glob("*.yaml"))
                raise ValueError(f"no method overlay {relative(method_config)} (known: {', '.join(known)})")
            configs = [base] + ([model_config] if model_config.is_file() else []) + [method_config]
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
                    if wandb_project:
                        overrides.append(f"run.wandb.project={wandb_project}")
                    jobs.append(Job(model, variant, lr, seed, [relative(c) for c in configs],
                                    overrides + list(variant.overrides) + list(extra_overrides)))
    names = [job.run_name for job in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"the grid repeats cells: {', '.join(duplicates)}")
    return jobs


def check_jobs(jobs: list[Job], world_size: int) -> list[str]:
    """Compose every job's config as train.py will, before anything is submitted."""
    from configs import ConfigError
    from training.config import load_config

    problems = []
    for job in jobs:
        try:
            load_config([REPO / c for c in job.configs], job.overrides).train.accumulation(world_size)
        except ConfigError as err:
            hint = "; change --nodes/--gpus-per-node or --set train.micro_batch=..." if "world size" in str(err) else ""
            problems += [f"{job.run_name}: {p}{hint}" for p in err.problems]
    return problems


# ------------------------------------------------------------------------------------------------
# What the grid costs: GPU-hours, and the host CPUs and memory of one job
# ------------------------------------------------------------------------------------------------

DEFAULT_MFU = 0.40                # model FLOPs utilisation assumed for the estimate
DEFAULT_GPU_PEAK_TFLOPS = 989.0   # H100 SXM dense bf16
BASE_MEM_PER_RANK_GIB = 16        # host memory per rank besides MoLS: torch/CUDA, data workers, checkpointing
CPUS_PER_RANK_BESIDES_WORKERS = 2  # the training process itself and its main-thread slack
FALLBACK_VOCAB = 32100            # t5-base's, for sizes that take the tokenizer's vocabulary

_MODEL_COSTS: dict = {}


def model_cost(size: str, vocab: int, seq_len: int, overrides: dict | None = None) -> tuple[int, float]:
    """(parameters, training FLOPs per token) of a model size, from models/cost.py on the meta device."""
    key = (size, vocab, seq_len, repr(sorted((overrides or {}).items())))
    if key not in _MODEL_COSTS:
        from models import build_model
        from models.cost import flops_per_token, parameters
        model = build_model(size, vocab, overrides=overrides, device="meta")
        _MODEL_COSTS[key] = (parameters(model), flops_per_token(model, seq_len))
    return _MODEL_COSTS[key]


@dataclass
class JobCost:
    parameters: int
    flops: float           # training FLOPs of the whole job
    cpus_per_rank: int
    mem_per_rank_bytes: int


def job_cost(cfg) -> JobCost:
    """FLOPs per token (models/cost.py, the same as the runs' MFU) times steps x global_batch x
    seq_len training tokens (evaluation and MoLS's SNR samples not counted);
    host CPUs data.num_workers + 2 per rank; host memory per rank: a base allowance, plus MoLS's two
    fp32 copies of the parameters (8 bytes each) when its statistics live on the CPU."""
    from models import SIZES

    size = SIZES[cfg.model.size]
    vocab = cfg.model.vocab_size or size.vocab or FALLBACK_VOCAB
    seq_len = cfg.data.seq_len
    n, per_token = model_cost(cfg.model.size, vocab, seq_len, cfg.model.overrides)
    flops = cfg.train.steps * cfg.train.global_batch * seq_len * per_token
    mols_on_cpu = cfg.mols.enabled and cfg.mols.stats_device == "cpu"
    mem = BASE_MEM_PER_RANK_GIB * 2**30 + (8 * n if mols_on_cpu else 0)
    return JobCost(n, flops, cfg.data.num_workers + CPUS_PER_RANK_BESIDES_WORKERS, mem)


def job_costs(jobs: list[Job]) -> list[JobCost]:
    from training.config import load_config
    return [job_cost(load_config([REPO / c for c in job.configs], job.overrides)) for job in jobs]


def gpu_hours(flops: float, mfu: float = DEFAULT_MFU, peak_tflops: float = DEFAULT_GPU_PEAK_TFLOPS) -> float:
    return flops / (mfu * peak_tflops * 1e12) / 3600


def estimate_line(jobs: list[Job], costs: list[JobCost], mfu: float = DEFAULT_MFU,
                  peak_tflops: float = DEFAULT_GPU_PEAK_TFLOPS) -> str:
    total = gpu_hours(sum(c.flops for c in costs), mfu, peak_tflops)
    by_model: dict[str, float] = {}
    for job, cost in zip(jobs, costs):
        by_model[job.model] = by_model.get(job.model, 0.0) + gpu_hours(cost.flops, mfu, peak_tflops)
    parts = ", ".join(f"{model} {hours:,.1f}" for model, hours in by_model.items())
    return (f"[sweep] estimated compute: {total:,.1f} GPU-hours ({parts}); assumes FLOPs/token = "
            f"models/cost.py's FLOPs per token (as the runs' MFU), steps x global_batch x seq_len tokens, "
            f"{100 * mfu:g}% MFU of {peak_tflops:g} TFLOP/s per GPU (--assume-mfu, --gpu-peak-tflops)")


def slurm_resources(costs: list[JobCost], processes_per_node: int) -> tuple[int, str]:
    """(--cpus-per-task, --mem) for the array: one task per node runs every rank of the node, so
    the largest job's per-rank needs times the ranks per node."""
    cpus = processes_per_node * max(c.cpus_per_rank for c in costs)
    mem_gib = math.ceil(processes_per_node * max(c.mem_per_rank_bytes for c in costs) / 2**30)
    return cpus, f"{mem_gib}G"


# ------------------------------------------------------------------------------------------------
# Slurm
# ------------------------------------------------------------------------------------------------

@dataclass
class SlurmSettings:
    nodes: int = 1
    gpus_per_node: int = 8          # 0: CPU-only nodes (no --gpus-per-node request)
    nproc_per_node: int | None = None  # processes per node; default: gpus_per_node (1 without GPUs)
    cpus_per_task: int | None = None
    mem: str | None = None          # e.g. 64G; None: the partition's default
    time: str | None = None         # e.g. 48:00:00; None: the partition's default
    partition: str | None = None
    max_parallel: int | None = None  # array throttle: at most this many jobs at once
    requeue_signal_seconds: int = 300  # USR1 this long before the time limit -> save, requeue (also
                                       # the launcher's wait for its workers to save and exit)
    extra: list[str] = field(default_factory=list)  # more sbatch options, e.g. --account=abc

    @property
    def processes_per_node(self) -> int:
        return self.nproc_per_node or max(self.gpus_per_node, 1)


def render_sbatch(*, name: str, jobs_file: Path, log_dir: Path, job_count: int, slurm: SlurmSettings,
                  python: str = sys.executable, repo: Path = REPO) -> str:
    array = f"0-{job_count - 1}" + (f"%{slurm.max_parallel}" if slurm.max_parallel else "")
    directives = [f"--job-name=mols-{name}", f"--array={array}", f"--nodes={slurm.nodes}",
                  "--ntasks-per-node=1",  # one torchrun per node; it starts the per-GPU processes
                  f"--output={log_dir}/%x_%A_%a.out",
                  "--open-mode=append",     # a requeued job appends to the same log
                  "--requeue", f"--signal=B:USR1@{slurm.requeue_signal_seconds}"]
    if slurm.gpus_per_node:
        directives.append(f"--gpus-per-node={slurm.gpus_per_node}")
    for option, value in [("cpus-per-task", slurm.cpus_per_task), ("mem", slurm.mem),
                          ("time", slurm.time), ("partition", slurm.partition)]:
        if value is not None:
            directives.append(f"--{option}={value}")
    directives += slurm.extra
    header = "\n".join(f"#SBATCH {d}" for d in directives)
    return f"""#!/bin/bash
# Written by scripts/sweep.py: {job_count} jobs of sweep {name!r}; array task i runs line i+1 of
# {jobs_file}
{header}

cd {shlex.quote(str(repo))}
JOBS_FILE={shlex.quote(str(jobs_file))}
JOB_ARGS=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$JOBS_FILE")
if [[ -z $JOB_ARGS ]]; then
    echo "no line $((SLURM_ARRAY_TASK_ID + 1)) in $JOBS_FILE" >&2
    exit 1
fi

# Rendezvous on the first node of the allocation; the port is derived from the job id so that
# jobs sharing a node do not collide.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
echo "[sweep] $(date -Is) job $SLURM_JOB_ID (array $SLURM_ARRAY_JOB_ID task $SLURM_ARRAY_TASK_ID)," \\
     "restart ${{SLURM_RESTART_COUNT:-0}}, nodes $SLURM_JOB_NODELIST, rendezvous $MASTER_ADDR:$MASTER_PORT"
echo "[sweep] train.py $JOB_ARGS"

# Preemption and time limits. Slurm sends USR1 to this shell {slurm.requeue_signal_seconds} s before the time limit
# (--signal=B:USR1@{slurm.requeue_signal_seconds}); scancel, preemption and `scontrol requeue` send it TERM. Either way the
# shell passes one SIGTERM on to the training step with `scancel --signal=TERM $SLURM_JOB_ID`, which
# signals every process of the job's steps on every node (torchrun and its workers), not this shell.
# (Not `kill $TRAIN_PID`: srun answers TERM with SIGKILL to its tasks, "forcing job termination",
# and passes USR1 on as USR1, which kills torchrun: it handles only TERM, INT, HUP and QUIT.)
# The workers finish their step, all save a checkpoint at the same step and exit 75; the launcher
# (training/launch.py: torchrun that waits --stop-grace s for them on every torch version, where
# torchrun 2.11 alone SIGKILLs them after 30 s) then exits 75 too.
# After USR1 the job requeues itself once srun has returned (same job id, same jobs-file line) and
# resumes from that checkpoint (run.resume=auto), unless training had finished (status 0).
# After TERM it does not: a cancelled job ends there (Slurm kills what is left after KillWait s);
# a preempted one is requeued by Slurm when the partition's PreemptMode is REQUEUE.
STOP_SIGNAL=""
stop_training() {{
    [[ -n $STOP_SIGNAL ]] && return  # once: a third TERM would cut torchrun's wait for its workers short
    STOP_SIGNAL=$1
    echo "[sweep] $(date -Is) caught $1: SIGTERM to the training step (it saves a checkpoint and exits 75)"
    scancel --signal=TERM "$SLURM_JOB_ID"
}}
trap 'stop_training USR1' USR1
trap 'stop_training TERM' TERM

eval "JOB_ARGV=($JOB_ARGS)"  # the line is shell-quoted by sweep.py
srun --kill-on-bad-exit=1 {shlex.quote(python)} -m training.launch --stop-grace {slurm.requeue_signal_seconds} \\
    --nnodes "$SLURM_NNODES" --nproc_per_node {slurm.processes_per_node} \\
    --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "$SLURM_JOB_ID" \\
    train.py "${{JOB_ARGV[@]}}" &
TRAIN_PID=$!
# `wait` returns early when a trapped signal arrives: keep waiting until training has ended.
while kill -0 "$TRAIN_PID" 2>/dev/null; do
    wait "$TRAIN_PID"
done
wait "$TRAIN_PID"
STATUS=$?
echo "[sweep] $(date -Is) training exited with status $STATUS"
if [[ $STOP_SIGNAL == USR1 && $STATUS -ne 0 ]]; then  # only now: the checkpoint is on disk
    echo "[sweep] $(date -Is) requeueing job $SLURM_JOB_ID: it resumes from its checkpoint"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$STATUS"
"""


def write_slurm_files(jobs: list[Job], name: str, sweep_dir: Path, slurm: SlurmSettings,
                      python: str = sys.executable) -> tuple[Path, Path]:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "logs").mkdir(exist_ok=True)
    jobs_file, script = sweep_dir / f"{name}.jobs", sweep_dir / f"{name}.sbatch"
    jobs_file.write_text("".join(job.command_line() + "\n" for job in jobs))
    script.write_text(render_sbatch(name=name, jobs_file=jobs_file.resolve(), log_dir=(sweep_dir / "logs").resolve(),
                                    job_count=len(jobs), slurm=slurm, python=python))
    script.chmod(0o755)
    return script, jobs_file


# ------------------------------------------------------------------------------------------------
# Local
# ------------------------------------------------------------------------------------------------

def local_command(job: Job, nproc_per_node: int, python: str = sys.executable) -> list[str]:
    if nproc_per_node > 1:
        launcher = [python, "-m", "training.launch", "--standalone", f"--nproc_per_node={nproc_per_node}"]
    else:
        launcher = [python]
    return launcher + ["train.py"] + job.train_args()


def run_local(jobs: list[Job], nproc_per_node: int, python: str = sys.executable) -> int:
    failed = []
    for index, job in enumerate(jobs, 1):
        command = local_command(job, nproc_per_node, python)
        print(f"[sweep] job {index}/{len(jobs)}: {shlex.join(command)}", flush=True)
        status = subprocess.run(command, cwd=REPO).returncode
        if status:
            print(f"[sweep] job {job.run_name} exited with status {status}", flush=True)
            failed.append(job.run_name)
    print(f"[sweep] {len(jobs) - len(failed)}/{len(jobs)} jobs finished"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def comma_list(convert):
    def parse(text: str):
        return [convert(item) for item in text.split(",") if item.strip()]
    return parse


def parse_lrs(text: str):
    return text if text in ("paper", "grid") else comma_list(float)(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grid = parser.add_argument_group("the grid")
    grid.add_argument("--table", choices=sorted(TABLE_PRESETS),
                      help="a paper table's grid (models, rows, learning rates, seeds); the options below refine it")
    grid.add_argument("--name", help="sweep name: wandb group, output subdirectory (default: table<N> or 'sweep')")
    grid.add_argument("--models", type=comma_list(str), help="model sizes, e.g. llama_60m,llama_130m")
    grid.add_argument("--methods", type=comma_list(Variant.parse),
                      help="method overlays of configs/paper/methods/, METHOD+mols for MoLS, e.g. adam,adam+mols")
    grid.add_argument("--mols", choices=["off", "on", "both"], default=None,
                      help="MoLS for every listed method: off, on, or both variants (default: as listed)")
    grid.add_argument("--lrs", type=parse_lrs, help="'paper' (learning_rates.yaml), 'grid' (the paper's search "
                      "grid) or a list, e.g. 1e-3,2.5e-3")
    grid.add_argument("--seeds", type=comma_list(int), help="training seeds, e.g. 0,1,2")
    grid.add_argument("--base", type=Path, default=BASE_CONFIG, help="first config of every job")
    grid.add_argument("--config", action="append", default=[], help="extra config layered last (repeatable)")
    grid.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every job")
    grid.add_argument("--out-dir", default="runs/paper", help="runs go to OUT_DIR/NAME/RUN_NAME")
    grid.add_argument("--wandb-project", help="wandb project (default: base config's)")

    run = parser.add_argument_group("where to run")
    run.add_argument("--mode", choices=["slurm", "local"], default="slurm")
    run.add_argument("--dry-run", action="store_true", help="print what would be written, submitted or run; do nothing")
    run.add_argument("--python", default=sys.executable, help="python of the environment the jobs use")
    run.add_argument("--nproc-per-node", type=int, help="processes per node (default: GPUs per node; 1 locally)")
    run.add_argument("--nodes", type=int, help="nodes per job (Slurm)")
    run.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (Slurm; 0 for CPU nodes)")
    run.add_argument("--cpus-per-task", type=int, help="CPUs of the one task per node (default: from the config, "
                     "(data.num_workers + 2) per rank)")
    run.add_argument("--mem", help="memory per node, e.g. 200G (default: from the config, "
                     f"{BASE_MEM_PER_RANK_GIB}G per rank plus 8 bytes per parameter per rank for MoLS on the CPU)")
    run.add_argument("--time", help="time limit per job, e.g. 48:00:00 (jobs requeue themselves before it)")
    run.add_argument("--partition")
    run.add_argument("--max-parallel", type=int, help="run at most this many array tasks at once")
    run.add_argument("--sbatch-arg", action="append", default=[], help="extra sbatch option, e.g. --account=abc")
    run.add_argument("--assume-mfu", type=float, default=DEFAULT_MFU,
                     help="model FLOPs utilisation for the dry run's GPU-hours estimate (default: %(default)s)")
    run.add_argument("--gpu-peak-tflops", type=float, default=DEFAULT_GPU_PEAK_TFLOPS,
                     help="peak TFLOP/s of one GPU for the estimate (default: H100 dense bf16, %(default)s)")
    args = parser.parse_args(argv)
    if not 0 < args.assume_mfu <= 1 or args.gpu_peak_tflops <= 0:
        parser.error("--assume-mfu must be in (0, 1] and --gpu-peak-tflops positive")

    preset = TABLE_PRESETS.get(args.table, {})
    table = paper_tables()[preset["table"]] if preset else None
    args.name = args.name or preset.get("name") or (
        f"table{args.table}" if args.table in ("1", "3", "6") else args.table or "sweep")
    args.models = args.models or (table["models"] if table else None)
    # rows with run: false are another table's runs, or not runnable here (paper_results.yaml)
    args.methods = args.methods or ([Variant.from_row(r) for r in table["rows"] if r.get("run", True)]
                                    if table else None)
    args.config = [*preset.get("configs", []), *args.config]
    args.lrs = args.lrs or preset.get("lrs", "paper")
    args.seeds = args.seeds if args.seeds is not None else preset.get("seeds", [0])
    args.nodes = args.nodes or preset.get("nodes", 1)
    if not args.models or not args.methods:
        parser.error("name a --table, or give --models and --methods")
    if args.mols:
        methods = list(dict.fromkeys(v.method for v in args.methods))
        choices = {"off": [False], "on": [True], "both": [False, True]}[args.mols]
        args.methods = [Variant(m, on) for m in methods for on in choices]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        jobs = build_jobs(name=args.name, models=args.models, variants=args.methods, lrs=args.lrs,
                          seeds=args.seeds, out_dir=args.out_dir, base=args.base, extra_configs=args.config,
                          extra_overrides=args.set, wandb_project=args.wandb_project)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    slurm = SlurmSettings(nodes=args.nodes, gpus_per_node=args.gpus_per_node, nproc_per_node=args.nproc_per_node,
                          cpus_per_task=args.cpus_per_task, mem=args.mem, time=args.time, partition=args.partition,
                          max_parallel=args.max_parallel, extra=args.sbatch_arg)
    world_size = slurm.nodes * slurm.processes_per_node if args.mode == "slurm" else (args.nproc_per_node or 1)
    problems = check_jobs(jobs, world_size)
    if problems:
        print(f"error: {len(problems)} problem(s) in the grid:\n" + "\n".join(f"  - {p}" for p in problems),
              file=sys.stderr)
        return 2
    print(f"[sweep] {args.name}: {len(jobs)} jobs over {len(args.models)} model(s), {len(args.methods)} method(s), "
          f"{len({j.lr for j in jobs})} learning rate(s), {len(args.seeds)} seed(s); runs in {args.out_dir}/{args.name}/")
    costs = job_costs(jobs) if args.dry_run or args.mode == "slurm" else []
    if args.dry_run:
        print(estimate_line(jobs, costs, args.assume_mfu, args.gpu_peak_tflops))
    if costs:  # sbatch's CPUs and memory from the configs, unless given
        cpus, mem = slurm_resources(costs, slurm.processes_per_node)
        slurm.cpus_per_task = cpus if slurm.cpus_per_task is None else slurm.cpus_per_task
        slurm.mem = slurm.mem or mem

    if args.mode == "local":
        nproc = args.nproc_per_node or 1
        if args.dry_run:
            for job in jobs:
                print(shlex.join(local_command(job, nproc, args.python)))
            return 0
        return run_local(jobs, nproc, args.python)

    sweep_dir = REPO / args.out_dir / args.name / "slurm"
    if args.dry_run:
        jobs_file = sweep_dir / f"{args.name}.jobs"
        print(f"[sweep] dry run: would write {jobs_file} ({len(jobs)} lines):")
        for job in jobs:
            print(job.command_line())
        print(f"[sweep] and {sweep_dir / (args.name + '.sbatch')}, then run: sbatch --parsable <that file>\n")
        print(render_sbatch(name=args.name, jobs_file=jobs_file, log_dir=sweep_dir / "logs", job_count=len(jobs),
                            slurm=slurm, python=args.python))
        return 0
    script, jobs_file = write_slurm_files(jobs, args.name, sweep_dir, slurm, args.python)
    print(f"[sweep] wrote {jobs_file} and {script}")
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if submitted.returncode:
        print(f"error: sbatch failed ({submitted.returncode}): {submitted.stderr.strip()}", file=sys.stderr)
        return 1
    job_id = submitted.stdout.strip().split(";")[0]
    print(f"[sweep] submitted job array {job_id} ({len(jobs)} tasks); logs in {sweep_dir / 'logs'}")
    print(f"[sweep] watch: squeue -j {job_id}; results: scripts/results.py {args.out_dir}/{args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
