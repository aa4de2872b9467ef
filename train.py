#!/usr/bin/env python3
r"""Pre-train a language model, or fine-tune a pretrained one, optionally with MoLS, from a YAML config.

    python train.py --config configs/quickstart.yaml [--set optimizer.lr=2.5e-3 ...]
    torchrun --nproc_per_node 8 train.py --config configs/paper/base.yaml \
        --config configs/paper/models/llama_60m.yaml --config configs/paper/methods/adam.yaml --set optimizer.lr=5e-3
    python train.py --config configs/finetune_demo.yaml --set model.lora.rank=8   # model.pretrained, instructions

Fine-tuning is the same loop: `model.pretrained` loads a transformers model (with LoRA adapters
when model.lora.rank > 0) instead of building model.size, and `data.source: instructions` feeds
instruction records with the loss on the responses only (data/instructions.py).

Read top to bottom: set-up (config, processes, run directory, model, optimizer, MoLS, data,
resume), then the loop (MoLS calibration, learning rate, accumulated micro-batches, clipping,
step, logging, evaluation, checkpoints). Bad input (a config, a file, a flag) exits with code 2
and a message; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import yaml

from configs import IGNORE_INDEX, UserError, write_json_atomic
from data import check_vocabulary, get_tokenizer
from data.instructions import data_pipeline, tokenizer_spec
from data.prefetch import Prefetcher
from models import loss_sum_and_count
from models.cost import flops_per_token
from mols import MeasurementInterrupted, MoLS, param_groups
from optimizers import build_optimizer, describe_groups, optimizer_state_bytes
from optimizers.schedule import lr_factor
from training import checkpoint, distributed
from training.cli import parse_arguments
from training.compat import set_tf32
from training.config import Config, load_config
from training.dry_run import check_memory, plan
from training.evaluation import evaluate, evaluate_harness, perplexity, to_device
from training.fsdp import accumulating, full_value, is_sharded
from training.mols_measurements import MoLSMeasurements
from training.precision import model_description, prepare_model, resolve_precision
from training.faults import (EXIT_NONFINITE, EXIT_PREEMPTED, STOP_SIGNALS, NonfiniteGuard, StopRequests,
                             nonfinite_report)
from training.records import RunLog, check_wandb, prepare_run_dir, release_run_dirs, save_run_records
from training.state import TrainingState, check_resume_config
from training.throughput import Throughput, peak_tflops


def main(argv: list[str] | None = None) -> int:
    args, unknown = parse_arguments(argv, __doc__)
    if unknown:
        print(unknown, file=sys.stderr)
        return 2
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        cfg = load_config(args.config, args.set)
        if args.print_config:
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            return 0
        if args.dry_run:
            print(plan(cfg, args.gpus or int(os.environ.get("WORLD_SIZE", "1")), args.gpus_per_node))
            return 0
        return train(cfg)
    except UserError as err:
        print(err.report(), file=sys.stderr)
        return err.exit_code
    finally:
        distributed.teardown()
        release_run_dirs()
        for sig, handler in handlers.items():  # train() catches them; in-process callers get theirs back
            signal.signal(sig, handler)


def forward_backward(train_model, micro_batches: list[dict], world_size: int, device, autocast,
                     accumulate=contextlib.nullcontext):
    """Gradients of the global batch's token-mean loss; (summed loss, target tokens), both on the device.

    Targets are counted on the host copy of the labels and summed over ranks on the device, so
    nothing here waits for the device. The loss is a token-weighted mean over the whole global
    batch, so the average over ranks (DDP's and FSDP's) is undone by the world-size factor;
    gradients are reduced on the last micro-batch only (under `accumulate()` before it).
    Autocast covers the forward only."""
    local_targets = sum(int(np.count_nonzero(b["labels"][:, 1:].numpy() != IGNORE_INDEX)) for b in micro_batches)
    # torch.full fills on the device; torch.tensor(x, device=cuda) would wait for the GPU's queue
    global_targets = distributed.all_reduce_tensor(torch.full((), float(local_targets), device=device))
    loss_total = torch.zeros((), dtype=torch.float64, device=device)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accumulate():
            with autocast():
                loss, _ = loss_sum_and_count(train_model, to_device(batch, device))
            (loss * world_size / global_targets).backward()
        loss_total += loss.detach().double()
    return loss_total, global_targets


@dataclass
class Update:
    loss_total: torch.Tensor      # summed token loss of this rank's micro-batches (on the device)
    targets: torch.Tensor         # target tokens of the global batch (on the device)
    grad_norm: torch.Tensor       # before clipping
    stop_requested: bool          # some rank got a stop signal
    nonfinite: bool               # some rank's loss or the gradient norm is NaN/inf: no step was taken


def take_update(model, train_model, optimizer, micro_batches: list[dict], *, lr_factor: float, grad_clip: float,
                world_size: int, device, autocast, stops: StopRequests,
                accumulate=contextlib.nullcontext) -> Update:
    """One optimizer update of the global batch: learning rate, forward/backward, gradient norm,
    the one host sync of the step (stop signals and non-finite values, agreed by all ranks),
    clipping and the step itself with its gradients zeroed after it; when something was non-finite,
    no step, and the gradients stay for the caller's report (which zeroes them)."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * lr_factor
    loss_total, targets = forward_backward(train_model, micro_batches, world_size, device, autocast, accumulate)
    grad_norm = full_value(torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]))
    # (The same on every rank: after DDP's all-reduce, or summed over FSDP's shards.)
    stop_requested, nonfinite = stops.poll(~(torch.isfinite(loss_total) & torch.isfinite(grad_norm)), device)
    if not nonfinite:  # a non-finite update never reaches the weights
        if grad_clip > 0:  # with the norm above: exactly torch's clip_grad_norm_
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip, grad_norm)
        optimizer.step()
        # under DDP the gradients are its buckets: zeroed in place; FSDP makes new shards each step
        optimizer.zero_grad(set_to_none=world_size == 1 or is_sharded(model))
    return Update(loss_total, targets, grad_norm, stop_requested, nonfinite)


def run_summary(cfg: Config, state: TrainingState, final_loss: float, speed: Throughput) -> dict:
    summary = {"final_val_loss": final_loss, "final_val_ppl": perplexity(final_loss),
               "steps": cfg.train.steps, "tokens_seen": state.tokens_seen, "wall_time_s": state.seconds(),
               "optimizer": cfg.optimizer.name, "mols": cfg.mols.enabled, "model": cfg.model.pretrained or cfg.model.size,
               "optimizer_state_bytes": optimizer_state_bytes(state.optimizer)}
    if state.mols is not None and state.mols.calibrations:
        summary["mols_alphas"] = state.mols.calibrations[-1].alphas
        summary["mols_module_snr"] = state.mols.calibrations[-1].module_snr
    if speed.device.type == "cuda":
        summary["peak_memory_gib"] = speed.peak_memory_gib
    return summary


def train(cfg: Config) -> int:
    # -------------------------------------------------------------------------------- set-up
    t = cfg.train
    procs = distributed.setup(t.device, always_group=t.parallel == "fsdp")
    device, is_main = procs.device, procs.is_main
    torch.set_num_threads(t.threads or distributed.host_threads())
    if device.type == "cuda":
        set_tf32(t.tf32)
    accumulation = t.accumulation(procs.world_size)
    check_wandb(cfg)
    stops = StopRequests()  # from here on a signal stops the run at a step boundary, with a checkpoint
    run_dir = cfg.run.directory
    resume_from, saved = prepare_run_dir(run_dir, cfg.run.resume, is_main, procs.world_size)
    changes = check_resume_config(saved, cfg.to_dict(), resume_from, cfg.run.allow_resume_changes) if saved else []

    tokenizer = get_tokenizer(tokenizer_spec(cfg))  # a pretrained model's own, unless data.tokenizer names one
    vocab_size = cfg.model.vocabulary(len(tokenizer))
    vocabulary_note = check_vocabulary(tokenizer, vocab_size)
    check_memory(cfg, vocab_size, device, resolve_precision(t.precision, device))  # before anything is built
    model, precision, autocast = prepare_model(cfg, vocab_size, device)

    optimizer = build_optimizer(cfg.optimizer, model, param_groups(model, cfg.mols.grouping))
    state = TrainingState(model, optimizer, mols=None, streams={})
    mols = None
    if cfg.mols.enabled:
        mols = MoLS(model, optimizer, cfg.mols, estimate_step=cfg.mols_estimate_step, warmup_steps=cfg.warmup_steps,
                    device=device, step=lambda: state.step)
        state.mols = mols

    build_train_stream, build_val_batches, describe_data = data_pipeline(cfg.data)  # documents or instructions
    stream_args = dict(rank=procs.rank, world_size=procs.world_size, vocab_limit=vocab_size)
    state.streams["train"] = build_train_stream(cfg.data, tokenizer, micro_batch=t.micro_batch, **stream_args)
    if cfg.data.prefetch:  # packed ahead in a thread while the device computes; pinned for the copy to a GPU
        state.streams["train"] = Prefetcher(state.streams["train"], cfg.data.prefetch, pin_memory=device.type == "cuda")
    if mols is not None:  # MoLS's extra samples come from an independent order: training data untouched
        mols_micro = cfg.mols.micro_batch or t.micro_batch
        state.streams["mols"] = build_train_stream(cfg.data, tokenizer, micro_batch=mols_micro, seed_offset=1,
                                                   **stream_args)
    if saved is not None:
        state.restore(saved, procs.rank, resume_from)
        del saved
        distributed.check_agreement(state.step, "the step they resumed from", procs.world_size)

    ddp_model = model  # MoLS estimates through this one: no_sync, parameter names of `model`
    accumulate = contextlib.nullcontext  # how micro-batches before an update's last one run
    if t.parallel == "fsdp":  # the model is sharded already (training/fsdp.py)
        accumulate = lambda: accumulating(model, reshard=t.fsdp_reshard_in_accumulation,  # noqa: E731
                                          sync=t.fsdp_gradient_sync == "every_micro_batch")
    elif procs.world_size > 1:
        # The gradients are the all-reduce buckets (no second copy), zeroed in place between steps
        # (set_to_none would let no_sync micro-batches allocate fresh ones); the only buffers, RoPE's
        # frequencies, are the same on every rank: nothing to broadcast before each forward.
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True,
            broadcast_buffers=False)
        accumulate = ddp_model.no_sync
    # compiled whole under DDP or in one process; under FSDP each block was compiled before sharding
    train_model = torch.compile(ddp_model) if t.compile and t.parallel != "fsdp" else ddp_model
    val_batches = build_val_batches(cfg.data, tokenizer, batch_size=t.eval_batch or t.micro_batch, **stream_args)
    selection_batches = (build_val_batches(cfg.data, tokenizer, batch_size=t.eval_batch or t.micro_batch,
                                           part="selection", **stream_args) if cfg.data.val_selection else None)
    harness_batches = None  # train.eval_harness: the reference harness's validation set too
    if t.eval_harness:
        from data.harness import build_harness_val_batches
        harness_batches = build_harness_val_batches(cfg.data, tokenizer, batch_size=t.micro_batch, **stream_args)

    log = RunLog(cfg, run_dir, is_main)
    measurements = None if mols is None else MoLSMeasurements(
        mols, ddp_model, state.streams["mols"], device=device, world_size=procs.world_size, autocast=autocast,
        stops=stops, run_dir=run_dir, is_main=is_main, say=log.say)
    if is_main:
        save_run_records(cfg, run_dir, procs.world_size, device, resumed_at=state.step if resume_from else None)
    seq_len = cfg.data.sequence_tokens  # instruction records: the cut-off (micro-batches pad to their longest)
    tokens_per_step = t.global_batch * seq_len
    log.say(f"run directory: {run_dir}" + (f" (resuming from {resume_from.name})" if resume_from else ""))
    for change in changes:
        log.say(f"changed on resume (run.allow_resume_changes): {change}")
    log.say(describe_data(cfg.data, tokenizer))
    if harness_batches is not None:
        log.say(f"validation also as the reference harness (train.eval_harness): {len(harness_batches)} batches of "
                f"{t.micro_batch} on this rank, seed-42 order, the mean of batch means over batches + 1")
    if vocabulary_note:
        log.say(vocabulary_note)
    log.say(f"model {cfg.model.pretrained or cfg.model.size} ({precision}, vocab {vocab_size}); "
            + model_description(cfg, model))
    log.say(describe_groups(optimizer))
    log.say(f"tokens per step: {'at most ' if cfg.data.instructions else ''}{tokens_per_step:,} = "
            f"{t.global_batch} sequences x {seq_len} tokens "
            f"({procs.world_size} ranks x {t.micro_batch} micro-batch x {accumulation} accumulation); "
            f"{t.steps} steps, warm-up {cfg.warmup_steps}")

    def save_checkpoint() -> str:
        saved_to = state.save(run_dir / "checkpoints" / f"step_{state.step:07d}.pt", cfg.to_dict(), procs.world_size,
                              is_main)
        if is_main:
            checkpoint.prune(run_dir / "checkpoints", t.keep_checkpoints)
        return saved_to.name

    harness = {}  # the latest `val_harness` record

    def run_eval(batches=val_batches, kind: str = "val") -> float:
        val_loss, val_tokens = evaluate(model, batches, device, autocast, lockstep=is_sharded(model))
        log.log(kind, state.step, {"loss": val_loss, "ppl": perplexity(val_loss), "tokens": val_tokens})
        if kind == "val" and harness_batches is not None:  # the harness's number beside ours
            harness.update(evaluate_harness(model, harness_batches, device, autocast, lockstep=is_sharded(model)))
            log.log("val_harness", state.step, harness)
        return val_loss

    def stop(signal_name: str, during: str = "") -> int:
        saved_to = save_checkpoint()
        done = state.step
        log.log("stopped", done, {"signal": signal_name or "(another rank's)", "checkpoint": saved_to})
        log.say(f"stopped by {signal_name or 'a signal to another rank'} {during or f'after update {done}'}: "
                f"checkpoint saved; continue with --set run.resume=auto (exit code {EXIT_PREEMPTED})")
        log.finish()
        return EXIT_PREEMPTED

    # -------------------------------------------------------------------------------- the loop
    if state.step == 0:
        run_eval()
    state.started = time.time()  # training time counts from here (set-up excluded)
    segment_start = state.step
    speed = Throughput(flops_per_token(model, seq_len), procs.world_size, peak_tflops(device, t.peak_tflops),
                       device)
    guard = NonfiniteGuard(t.on_nonfinite, t.max_consecutive_skips)
    while state.step < t.steps:
        step = state.step
        if measurements is not None:  # MoLS's calibration and SNR tracking, when due
            try:
                with speed.paused():
                    for kind, values in measurements.before_update(step):
                        log.log(kind, step, values, console=False)
            except MeasurementInterrupted:
                return stop(stops.name, during=f"during the MoLS measurement before update {step + 1} "
                                               f"(it is redone on resume)")

        factor = lr_factor(step, total_steps=t.steps, warmup_steps=cfg.warmup_steps, min_ratio=t.min_lr_ratio)
        waiting = time.perf_counter()
        micro_batches = [state.streams["train"].next_batch() for _ in range(accumulation)]
        speed.waited(time.perf_counter() - waiting)
        update = take_update(model, train_model, optimizer, micro_batches, lr_factor=factor, grad_clip=t.grad_clip,
                             world_size=procs.world_size, device=device, autocast=autocast, stops=stops,
                             accumulate=accumulate)
        if update.nonfinite:
            where = nonfinite_report(model, bool(torch.isfinite(update.loss_total)))
            optimizer.zero_grad(set_to_none=procs.world_size == 1 or is_sharded(model))
            if guard.record_nonfinite():
                log.log("nonfinite", step + 1, {"where": where, "skipped": guard.skipped, "action": "stop"},
                        console=False)
                log.say(guard.stop_message(step + 1, where, checkpoint.latest_checkpoint(run_dir / "checkpoints")))
                log.finish()
                return EXIT_NONFINITE
            log.log("nonfinite", step + 1, {"where": where, "skipped": guard.skipped, "action": "skip"})
        else:
            guard.record_finite()
        if step == segment_start:  # optimizers create their state lazily, on the first step
            log.say(f"optimizer state: {optimizer_state_bytes(optimizer) / 2**20:.2f} MiB")
        state.step += 1
        # what the model computed: the packed documents' exact global batch, or instruction records
        # padded per micro-batch (this rank's count for every rank: no sync for a statistic)
        step_tokens = procs.world_size * sum(b["input_ids"].numel() for b in micro_batches)
        state.tokens_seen += step_tokens
        speed.step_done(step_tokens)

        done = state.step
        if t.due("log", done):
            loss_total = distributed.all_reduce_tensor(update.loss_total)
            train_loss, grad_norm = torch.stack([loss_total / update.targets, update.grad_norm.double()]).tolist()
            record = {"loss": train_loss, "lr": cfg.optimizer.lr * factor, "tokens": state.tokens_seen,
                      "grad_norm": grad_norm, **speed.report()}
            if guard.skipped:
                record["skipped"] = guard.skipped
            if mols is not None:  # each module's effective learning rate, and the multipliers behind it
                multipliers = mols.multipliers(step)
                record.update({f"lr_{cls}": record["lr"] * m for cls, m in multipliers.items()})
                record["mols_multipliers"] = multipliers
            record["elapsed_min"] = state.seconds() / 60
            record["eta_min"] = (time.time() - state.started) / (done - segment_start) * (t.steps - done) / 60
            log.log("train", done, record, step_of=t.steps)
        if t.due("eval", done):
            with speed.paused():
                run_eval()
        if done == t.steps:
            break  # the final evaluation and checkpoint follow
        if update.stop_requested:
            return stop(stops.name)
        if t.due("checkpoint", done):
            with speed.paused():
                save_checkpoint()

    final_loss = run_eval()
    if state.step != segment_start or resume_from is None or \
            resume_from.parent.resolve() != (run_dir / "checkpoints").resolve():
        save_checkpoint()  # (a finished run resumed keeps the checkpoint it resumed from)
    summary = run_summary(cfg, state, final_loss, speed)
    if harness:  # train.eval_harness: the number the paper's tables are comparable to
        summary["final_harness_loss"], summary["final_harness_ppl"] = harness["loss"], harness["ppl"]
    if selection_batches is not None:  # data.val_selection: what hyper-parameters are chosen on
        summary["final_selection_loss"] = run_eval(selection_batches, "val_selection")
    if is_main:
        write_json_atomic(run_dir / "summary.json", summary)
    log.summary(summary)
    log.finish()
    log.say(f"done: validation perplexity {summary['final_val_ppl']:.2f} after {state.tokens_seen:,} tokens "
            f"in {summary['wall_time_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    distributed.exit_process(main())
