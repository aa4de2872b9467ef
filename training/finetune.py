"""`train.py --dry-run` for a fine-tuning config (model.pretrained): what it would load, train and
read, without loading weights or data.

The model is built on the meta device from its config.json alone (a local directory, or a hub name
already in the Hugging Face cache: a dry run never downloads; the paper's models are known by shape
without it, models/pretrained.py), with the same LoRA adapters the run adds; its memory is
training/dry_run.py's estimate, the same one the run checks before it loads.
"""
from __future__ import annotations

GIB = 2**30


def finetune_plan(cfg, world_size: int, gpus_per_node: int) -> str:
    from models.pretrained import lora_alpha_for, meta_finetuning_model
    from mols import count_by_class
    from training.dry_run import head_size, memory_estimate, mols_statistics_bytes

    t, d, lora = cfg.train, cfg.data, cfg.model.lora
    how = (f"LoRA rank {lora.rank} (alpha {lora_alpha_for(lora.rank, lora.alpha):g}, dropout {lora.dropout:g}, "
           f"on {lora.target_modules})" if lora.enabled else "full fine-tuning")
    lines = [f"dry run: fine-tuning {cfg.model.pretrained}, {how}, with {cfg.optimizer.name}"
             f"{' + MoLS' if cfg.mols.enabled else ''} on {world_size} GPU(s) ({gpus_per_node} per node); "
             f"nothing is read or written"]
    model, why = meta_finetuning_model(cfg.model)
    trainable = 0
    if model is None:
        lines.append(f"parameters and memory: not estimated: {why}")
    else:
        counts = count_by_class(model, cfg.mols.grouping, only_trainable=True)
        trainable = sum(counts.values())
        total = sum(p.numel() for p in model.parameters())
        lines.append(f"parameters: {total / 1e6:,.2f}M, {trainable / 1e6:,.3f}M of them train "
                     f"({100 * trainable / total:.2f}%), by MoLS class:")
        lines += [f"  {cls:<8} {count / 1e6:>10,.3f}M  {100 * count / trainable:5.1f}%" for cls, count in counts.items()]
        precision = t.precision if t.precision != "auto" else "bf16-mixed"
        memory = memory_estimate(cfg, model, head_size(model), precision, world_size)
        lines.append(f"estimated memory per GPU ({precision}{' on GPU' if t.precision == 'auto' else ''}"
                     f"{', gradient checkpointing' if cfg.model.gradient_checkpointing else ''}; micro-batches of "
                     f"{t.micro_batch} records at the {d.sequence_tokens}-token cut-off, shorter ones need less "
                     f"activation memory): {sum(memory.values()) / GIB:,.1f} GiB")
        lines += [f"  {part:<18} {value / GIB:>8,.2f} GiB" for part, value in memory.items()]
    if d.instructions:
        template = {None: "the chat template where the tokenizer has one", True: "the chat template",
                    False: "the Alpaca prompt"}[d.chat_template]
        lines.append(f"data: instruction records {d.path} (validation {d.val_path or 'its test split'}), "
                     f"cut off at {d.cutoff_len} tokens, {template}, loss on the responses only")
    else:
        lines.append(f"data: {d.source} documents, {d.seq_len} tokens per sequence")
    accumulation = t.accumulation(world_size)
    lines.append(f"batch: {t.global_batch} sequences per update ({world_size} ranks x {t.micro_batch} micro-batch "
                 f"x {accumulation} accumulation); steps: {t.steps:,} (warm-up {cfg.warmup_steps:,}, then cosine to "
                 f"{t.min_lr_ratio:g} x the peak); learning rate {cfg.optimizer.lr:g}")
    if cfg.mols.enabled:
        host = ""
        if trainable and cfg.mols.stats_device == "cpu":
            host = (f"; host memory for its statistics: "
                    f"{mols_statistics_bytes(cfg, trainable, world_size) / GIB:,.2f} GiB per rank")
        lines.append(f"MoLS: {cfg.mols.samples:,} estimation samples at step {cfg.mols_estimate_step:,}, on the "
                     f"{'LoRA adapters' if lora.enabled else 'full parameters'} (reference {cfg.mols.reference}){host}")
    return "\n".join(lines)
