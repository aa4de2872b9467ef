"""Pre-train a language model, optionally with MoLS, from a YAML config.

    python train.py --config configs/quickstart.yaml [--set optimizer.lr=2.5e-3 ...]
    torchrun --nproc_per_node 8 train.py --config configs/paper/base.yaml \
        --config configs/paper/models/llama_60m.yaml --config configs/paper/methods/adam.yaml --set optimizer.lr=5e-3

Read top to bottom: set-up (config, processes, run directory, data, model, optimizer, MoLS), the
loop (MoLS calibration, learning rate, accumulated micro-batches, clipping, step), evaluation and
checkpoints. Configuration mistakes exit with code 2 and a list of every problem.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from configs import Config, ConfigError, load_config
from data import build_train_stream, build_val_batches, describe_data, get_tokenizer
from models import SIZES, build_model, parameter_report
from mols import MoLS, param_groups
from optimizers import (build_optimizer, check_optimizer_config, describe_groups, export_state,
                        import_state, optimizer_state_bytes)
from optimizers.schedule import lr_factor
from training import checkpoint, distributed
from data.cache import write_json_atomic
from training.records import MetricsLog, Wandb, environment, save_config


# ------------------------------------------------------------------------------------------------
# Loss: token-weighted over the whole global batch, so the gradient does not depend on how the
# batch is split into ranks and micro-batches (the reference harness averages micro-batch means).
# ------------------------------------------------------------------------------------------------

def loss_sum_and_count(model, batch) -> tuple[torch.Tensor, int]:
    logits = model(input_ids=batch["input_ids"]).logits
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                           ignore_index=-100, reduction="sum")
    return loss, int((targets != -100).sum())


def mean_loss(model, batch) -> torch.Tensor:
    loss, count = loss_sum_and_count(model, batch)
    return loss / max(count, 1)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, val_batches, device, autocast) -> tuple[float, int]:
    """Token-weighted mean loss over the fixed validation set (all ranks together)."""
    model.eval()
    total, count = 0.0, 0
    for batch in val_batches:
        with autocast():
            loss, n = loss_sum_and_count(model, to_device(batch, device))
        total, count = total + float(loss), count + n
    model.train()
    total, count = distributed.all_reduce_sum([total, count], device)
    return total / max(count, 1), int(count)


def precision_of(cfg: Config, device: torch.device) -> str:
    if cfg.train.precision != "auto":
        return cfg.train.precision
    return "bf16-mixed" if device.type == "cuda" else "fp32"


# ------------------------------------------------------------------------------------------------
# Run directory and resume
# ------------------------------------------------------------------------------------------------

def prepare_run_dir(cfg: Config, is_main: bool) -> tuple[Path, Path | None]:
    run_dir = Path(cfg.run.out_dir) / cfg.run.name
    ckpt_dir = run_dir / "checkpoints"
    resume = cfg.run.resume
    if resume == "auto":
        resume_from = checkpoint.latest_checkpoint(ckpt_dir)
    elif resume:
        path = Path(resume)
        resume_from = checkpoint.latest_checkpoint(path / "checkpoints") if path.is_dir() else path
        if resume_from is None:
            raise ConfigError(f"run.resume: no checkpoint found in {path}")
    else:
        resume_from = None
        if checkpoint.list_checkpoints(ckpt_dir) or (run_dir / "summary.json").exists():
            raise ConfigError(f"run directory {run_dir} already holds a run; continue it with "
                              f"--set run.resume=auto, or pick another run.name")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, resume_from


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[],
                        help="YAML config (may name `base:` configs); repeat to layer several, later ones win")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optimizer.lr=2.5e-3 (repeatable)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        return train(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        report = err.report() if isinstance(err, ConfigError) else f"error: {err}"
        print(report, file=sys.stderr)
        return 2
    finally:
        distributed.teardown()


def train(cfg: Config) -> int:
    # -------------------------------------------------------------------------------- set-up
    procs = distributed.setup(cfg.train.device)
    device, is_main = procs.device, procs.is_main
    say = print if is_main else (lambda *a, **k: None)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t = cfg.train
    per_step = procs.world_size * t.micro_batch
    if t.global_batch % per_step:
        raise ConfigError(f"train.global_batch ({t.global_batch}) must be a multiple of world size x "
                          f"train.micro_batch ({procs.world_size} x {t.micro_batch} = {per_step})")
    accumulation = t.global_batch // per_step
    run_dir, resume_from = prepare_run_dir(cfg, is_main)
    distributed.barrier()

    tokenizer = get_tokenizer(cfg.data.tokenizer)
    vocab_size = cfg.model.vocab_size or SIZES[cfg.model.size].vocab or len(tokenizer)
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model.size, vocab_size, attn_implementation=cfg.model.attn_implementation,
                        overrides=cfg.model.overrides)
    precision = precision_of(cfg, device)
    if precision == "bf16-pure":
        model.to(torch.bfloat16)
    model.to(device)
    if cfg.model.gradient_checkpointing:
        model.activation_checkpointing_enable()  # transformers 5's name for gradient checkpointing
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16-mixed"
                else contextlib.nullcontext)

    problems = check_optimizer_config(cfg.optimizer, model)
    if problems:
        raise ConfigError(problems)
    optimizer = build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping))
    mols = None
    if cfg.mols.enabled:
        m = cfg.mols
        mols = MoLS(model, optimizer, estimate_step=cfg.mols_estimate_step, warmup_steps=cfg.warmup_steps,
                    grouping=m.grouping, reference=m.reference, min_alpha=m.min_alpha, max_alpha=m.max_alpha,
                    estimator=m.estimator, stats_device="cpu" if m.stats_device == "cpu" else device,
                    reestimate_every=m.reestimate_every, reestimate_ramp_steps=m.reestimate_ramp_steps)

    start_step, tokens_seen, elapsed_before = 0, 0, 0.0
    data_state, extra_state = None, None
    if resume_from is not None:
        state = checkpoint.load(resume_from)
        model.load_state_dict(state["model"])
        import_state(optimizer, state["optimizer"])
        if mols is not None:
            mols.load_state_dict(state["mols"])
        start_step, tokens_seen, elapsed_before = state["step"], state["tokens_seen"], state["elapsed"]
        data_state = state["data"][procs.rank]
        extra_state = state["extra_data"][procs.rank]
        checkpoint.restore_rng(state["rng"][procs.rank])

    ddp_model = model  # MoLS estimates through this one: no_sync, parameter names of `model`
    if procs.world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    train_model = torch.compile(ddp_model) if t.compile else ddp_model

    stream = iter(build_train_stream(cfg.data, tokenizer, rank=procs.rank, world_size=procs.world_size,
                                     micro_batch=t.micro_batch, state=data_state, vocab_limit=vocab_size))
    extra_stream = None  # extra samples for MoLS, from an independent order: training data untouched
    mols_micro = cfg.mols.micro_batch or t.micro_batch

    def extra_batches(sequences: int):
        nonlocal extra_stream, extra_state
        if extra_stream is None:
            extra_stream = iter(build_train_stream(cfg.data, tokenizer, rank=procs.rank,
                                                   world_size=procs.world_size, micro_batch=mols_micro,
                                                   seed_offset=1, state=extra_state, vocab_limit=vocab_size))
        for _ in range(max(2, math.ceil(sequences / (mols_micro * procs.world_size)))):
            batch, extra_state = next(extra_stream)
            yield to_device(batch, device)

    val_batches = build_val_batches(cfg.data, tokenizer, rank=procs.rank, world_size=procs.world_size,
                                    batch_size=t.eval_batch or t.micro_batch, vocab_limit=vocab_size)

    metrics = MetricsLog(run_dir / "metrics.jsonl", is_main)
    wandb = Wandb(cfg, run_dir, is_main)
    if is_main:
        save_config(cfg, run_dir)
        write_json_atomic(run_dir / "environment.json", environment(procs.world_size, device))
    tokens_per_step = t.global_batch * cfg.data.seq_len
    say(f"run directory: {run_dir}" + (f" (resuming from {resume_from.name})" if resume_from else ""))
    say(describe_data(cfg.data, tokenizer))
    say(f"model {cfg.model.size} ({precision}, vocab {vocab_size}); " + parameter_report(model))
    say(describe_groups(optimizer))
    say(f"tokens per step: {tokens_per_step:,} = {t.global_batch} sequences x {cfg.data.seq_len} tokens "
        f"({procs.world_size} ranks x {t.micro_batch} micro-batch x {accumulation} accumulation); "
        f"{t.steps} steps, warm-up {cfg.warmup_steps}")

    def save_checkpoint(step: int) -> None:
        data_states = distributed.gather_objects(data_state, procs.world_size)
        extra_states = distributed.gather_objects(extra_state, procs.world_size)
        rng_states = distributed.gather_objects(checkpoint.rng_state(), procs.world_size)
        if is_main:
            state = {"step": step, "tokens_seen": tokens_seen, "elapsed": elapsed_before + time.time() - started,
                     "model": model.state_dict(), "optimizer": export_state(optimizer),
                     "mols": mols.state_dict() if mols else None, "data": data_states,
                     "extra_data": extra_states, "rng": rng_states, "config": cfg.to_dict()}
            checkpoint.save_atomically(state, run_dir / "checkpoints" / f"step_{step:07d}.pt")
            checkpoint.prune(run_dir / "checkpoints", t.keep_checkpoints)
        distributed.barrier()

    def run_eval(step: int) -> float:
        # the unwrapped model: ranks may hold different numbers of batches, and DDP's forward
        # would wait for the other ranks
        val_loss, val_tokens = evaluate(model, val_batches, device, autocast)
        ppl = math.exp(min(val_loss, 50))
        metrics.write("val", step, val_loss=val_loss, val_ppl=ppl, val_tokens=val_tokens)
        wandb.log({"val/loss": val_loss, "val/ppl": ppl}, step=step)
        say(f"step {step}: validation loss {val_loss:.4f}, perplexity {ppl:.2f} ({val_tokens:,} tokens)")
        return val_loss

    # -------------------------------------------------------------------------------- the loop
    started = time.time()
    if start_step == 0:
        run_eval(0)
    progress = None
    if is_main and sys.stderr.isatty():
        from tqdm import tqdm
        progress = tqdm(total=t.steps, initial=start_step, dynamic_ncols=True)
    window_start, window_tokens = time.time(), 0
    for step in range(start_step, t.steps):
        if mols is not None and mols.calibration_due(step):
            with autocast():
                calibration = mols.calibrate(ddp_model, extra_batches(cfg.mols.samples), mean_loss)
            say(calibration.table())
            metrics.write("mols_calibration", step, **{k: v for k, v in vars(calibration).items() if k != "step"})
            wandb.log({**{f"mols/snr_{c}": v for c, v in calibration.module_snr.items()},
                       **{f"mols/alpha_{c}": v for c, v in calibration.alphas.items()}}, step=step)
            if is_main:
                write_json_atomic(run_dir / "mols.json", mols.state_dict())
        if mols is not None and cfg.mols.track_every and step % cfg.mols.track_every == 0:
            with autocast():
                measured = mols.measure(ddp_model, extra_batches(cfg.mols.track_samples), mean_loss)
            metrics.write("snr", step, module_snr=measured.module_snr, seconds=measured.seconds)
            wandb.log({f"snr/{c}": v for c, v in measured.module_snr.items()}, step=step)

        factor = lr_factor(step, total_steps=t.steps, warmup_steps=cfg.warmup_steps, min_ratio=t.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

        micro_batches = []
        for _ in range(accumulation):
            batch, data_state = next(stream)
            micro_batches.append(to_device(batch, device))
        local_targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro_batches)
        (global_targets,) = distributed.all_reduce_sum([local_targets], device)
        loss_total = 0.0
        for i, batch in enumerate(micro_batches):
            last = i == accumulation - 1
            sync = contextlib.nullcontext() if last or procs.world_size == 1 else ddp_model.no_sync()
            with sync, autocast():
                loss, _ = loss_sum_and_count(train_model, batch)
                # DDP averages gradients over ranks: scale by world size to get the global token mean
                (loss * procs.world_size / global_targets).backward()
            loss_total += loss.detach().item()
        grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                     if t.grad_clip > 0 else None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == start_step:  # optimizers create their state lazily, on the first step
            say(f"optimizer state: {optimizer_state_bytes(optimizer) / 2**20:.2f} MiB")

        (loss_total,) = distributed.all_reduce_sum([loss_total], device)
        train_loss = loss_total / global_targets
        tokens_seen += tokens_per_step
        window_tokens += tokens_per_step
        done = step + 1
        if done % t.log_every == 0 or done == t.steps:
            rate = window_tokens / max(time.time() - window_start, 1e-9)
            window_start, window_tokens = time.time(), 0
            record = {"loss": train_loss, "lr": cfg.optimizer.lr * factor, "tokens": tokens_seen, "tok_per_s": rate,
                      "grad_norm": None if grad_norm is None else float(grad_norm)}
            if mols is not None:
                record["mols_multipliers"] = mols.multipliers(step)
            metrics.write("train", done, **record)
            wandb.log({"train/loss": train_loss, "train/lr": record["lr"], "train/tok_per_s": rate}, step=done)
            if progress is not None:
                progress.set_postfix(loss=f"{train_loss:.3f}", lr=f"{record['lr']:.2e}", tok_s=f"{rate:,.0f}")
            else:
                eta = (time.time() - started) / (done - start_step) * (t.steps - done)
                say(f"step {done}/{t.steps}  loss {train_loss:.4f}  lr {record['lr']:.2e}  "
                    f"{rate:,.0f} tok/s  eta {eta / 60:.1f} min")
        if progress is not None:
            progress.update(1)
        if done % t.eval_every == 0 and done != t.steps:
            run_eval(done)
        if t.checkpoint_every and done % t.checkpoint_every == 0 and done != t.steps:
            save_checkpoint(done)

    if progress is not None:
        progress.close()
    final_loss = run_eval(t.steps)
    save_checkpoint(t.steps)
    wall = elapsed_before + time.time() - started
    summary = {"final_val_loss": final_loss, "final_val_ppl": math.exp(min(final_loss, 50)),
               "steps": t.steps, "tokens_seen": tokens_seen, "wall_time_s": wall,
               "optimizer": cfg.optimizer.name, "mols": cfg.mols.enabled, "model": cfg.model.size,
               "optimizer_state_bytes": optimizer_state_bytes(optimizer)}
    if mols is not None and mols.calibrations:
        summary["mols_alphas"] = mols.calibrations[-1].alphas
        summary["mols_module_snr"] = mols.calibrations[-1].module_snr
    if device.type == "cuda":
        summary["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if is_main:
        write_json_atomic(run_dir / "summary.json", summary)
    wandb.summary(summary)
    wandb.finish()
    say(f"done: validation perplexity {summary['final_val_ppl']:.2f} after {tokens_seen:,} tokens in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
