"""What a grid costs: GPU-hours, and the host CPUs and memory of one job (the sbatch request).

FLOPs per token come from models/cost.py, the same function as the runs' MFU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from training.dry_run import mols_statistics_bytes

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


def job_cost(cfg, world_size: int = 1) -> JobCost:
    """FLOPs per token (models/cost.py, the same as the runs' MFU) times steps x global_batch x
    seq_len training tokens (evaluation and MoLS's SNR samples not counted);
    host CPUs data.num_workers + 2 per rank; host memory per rank: a base allowance, plus MoLS's
    statistics when they live on the CPU (training.dry_run.mols_statistics_bytes: two fp32 values
    per trained parameter and two more per uncertainty group, 1/world of them per rank when
    sharded)."""
    from models import SIZES

    if cfg.model.pretrained:
        return finetune_job_cost(cfg, world_size)
    size = SIZES[cfg.model.size]
    vocab = cfg.model.vocab_size or size.vocab or FALLBACK_VOCAB
    seq_len = cfg.data.seq_len
    n, per_token = model_cost(cfg.model.size, vocab, seq_len, cfg.model.overrides)
    flops = cfg.train.steps * cfg.train.global_batch * seq_len * per_token
    mols_on_cpu = mols_statistics_bytes(cfg, n, world_size) if cfg.mols.stats_device == "cpu" else 0
    mem = BASE_MEM_PER_RANK_GIB * 2**30 + mols_on_cpu
    return JobCost(n, flops, cfg.data.num_workers + CPUS_PER_RANK_BESIDES_WORKERS, mem)


_FINETUNING_COUNTS: dict = {}


def finetuning_counts(model_cfg) -> tuple[int, int]:
    """(parameters, trained parameters) of a fine-tuning run's model: its config.json where it is
    here, else the paper's models' shapes (models.pretrained.PAPER_MODEL_SHAPES); LoRA: the
    adapters train."""
    from models.pretrained import meta_finetuning_model, trainable_parameters

    lora = model_cfg.lora
    key = (model_cfg.pretrained, lora.rank, lora.alpha, repr(lora.target_modules))
    if key not in _FINETUNING_COUNTS:
        model, why = meta_finetuning_model(model_cfg)
        if model is None:
            raise ValueError(f"{model_cfg.pretrained}: cannot count its parameters: {why}")
        trained, total = trainable_parameters(model)
        _FINETUNING_COUNTS[key] = (total, trained)
    return _FINETUNING_COUNTS[key]


def finetune_job_cost(cfg, world_size: int = 1) -> JobCost:
    """A fine-tuning job: 6 x parameters FLOPs per token for full fine-tuning, 4 x for LoRA (the
    forward and the backward's activation gradients; frozen weights get none), over at most
    steps x global_batch x data.cutoff_len tokens (records are shorter than the cut-off: an upper
    bound). MoLS's statistics are those of what trains: under LoRA the adapters."""
    n, trained = finetuning_counts(cfg.model)
    per_token = (4 if cfg.model.lora.enabled else 6) * n
    flops = cfg.train.steps * cfg.train.global_batch * cfg.data.sequence_tokens * per_token
    mols_on_cpu = mols_statistics_bytes(cfg, trained, world_size) if cfg.mols.stats_device == "cpu" else 0
    return JobCost(int(n), flops, cfg.data.num_workers + CPUS_PER_RANK_BESIDES_WORKERS,
                   BASE_MEM_PER_RANK_GIB * 2**30 + mols_on_cpu)


def job_costs(jobs: list, world_size: int = 1) -> list[JobCost]:
    from reproduce.jobs import load_job_config
    return [job_cost(load_job_config(job), world_size) for job in jobs]


def gpu_hours(flops: float, mfu: float = DEFAULT_MFU, peak_tflops: float = DEFAULT_GPU_PEAK_TFLOPS) -> float:
    return flops / (mfu * peak_tflops * 1e12) / 3600


def estimate_line(jobs: list, costs: list[JobCost], mfu: float = DEFAULT_MFU,
                  peak_tflops: float = DEFAULT_GPU_PEAK_TFLOPS) -> str:
    total = gpu_hours(sum(c.flops for c in costs), mfu, peak_tflops)
    by_model: dict[str, float] = {}
    for job, cost in zip(jobs, costs):
        by_model[job.model] = by_model.get(job.model, 0.0) + gpu_hours(cost.flops, mfu, peak_tflops)
    parts = ", ".join(f"{model} {hours:,.1f}" for model, hours in by_model.items())
    return (f"[sweep] estimated compute: {total:,.1f} GPU-hours ({parts}); assumes FLOPs/token = "
            f"models/cost.py's FLOPs per token (as the runs' MFU), steps x global_batch x seq_len tokens, "
            f"{100 * mfu:g}% MFU of {peak_tflops:g} TFLOP/s per GPU (--assume-mfu, --gpu-peak-tflops)")


def slurm_resources(cost: JobCost, processes_per_node: int) -> tuple[int, str]:
    """(--cpus-per-task, --mem) of one job: its one task per node runs every rank of the node, so
    the job's per-rank needs times the ranks per node (reproduce/launch.py puts jobs that ask the
    same into one array)."""
    cpus = processes_per_node * cost.cpus_per_rank
    mem_gib = math.ceil(processes_per_node * cost.mem_per_rank_bytes / 2**30)
    return cpus, f"{mem_gib}G"
