"""`train.py --dry-run` for a fine-tuning config (model.pretrained): what it would load, train and
read, without loading weights or data.

The parameter counts come from the model's config.json alone (a local directory, or a hub name
already in the Hugging Face cache: a dry run never downloads); the model is built on the meta
device with the same LoRA adapters the run adds. Memory is the weights, gradients and an Adam-style
optimizer's two moments (fp32) of what trains; activations depend on the records' lengths and are
not estimated (training/dry_run.py's estimate is for the models built from model.size).
"""
from __future__ import annotations

import torch

GIB = 2**30


def _meta_model(cfg):
    """The model on the meta device (with its LoRA adapters), or the reason it cannot be built."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from models.pretrained import apply_lora

    try:
        config = AutoConfig.from_pretrained(cfg.model.pretrained)
    except (OSError, ValueError) as err:
        return None, f"its config.json is not here ({str(err).splitlines()[0][:160]})"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    lora = cfg.model.lora
    if lora.enabled:
        model = apply_lora(model, lora.rank, lora.alpha, lora.dropout, lora.target_modules)
    return model, ""


def finetune_plan(cfg, world_size: int, gpus_per_node: int) -> str:
    from models.pretrained import lora_alpha_for
    from mols import count_by_class

    t, d, lora = cfg.train, cfg.data, cfg.model.lora
    how = (f"LoRA rank {lora.rank} (alpha {lora_alpha_for(lora.rank, lora.alpha):g}, dropout {lora.dropout:g}, "
           f"on {lora.target_modules})" if lora.enabled else "full fine-tuning")
    lines = [f"dry run: fine-tuning {cfg.model.pretrained}, {how}, with {cfg.optimizer.name}"
             f"{' + MoLS' if cfg.mols.enabled else ''} on {world_size} GPU(s) ({gpus_per_node} per node); "
             f"nothing is read or written"]
    model, why = _meta_model(cfg)
    if model is None:
        lines.append(f"parameters: not counted: {why}")
    else:
        counts = count_by_class(model, cfg.mols.grouping)
        trainable = sum(counts.values())
        total = sum(p.numel() for p in model.parameters())
        lines.append(f"parameters: {total / 1e6:,.2f}M, {trainable / 1e6:,.3f}M of them train "
                     f"({100 * trainable / total:.2f}%), by MoLS class:")
        lines += [f"  {cls:<8} {count / 1e6:>10,.3f}M  {100 * count / trainable:5.1f}%" for cls, count in counts.items()]
        memory = 4 * total + 4 * trainable + 8 * trainable
        lines.append(f"memory per GPU, weights (fp32) + gradients + Adam moments of what trains: {memory / GIB:,.1f} GiB "
                     f"(activations not included)")
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
        lines.append(f"MoLS: {cfg.mols.samples:,} estimation samples at step {cfg.mols_estimate_step:,}, on the "
                     f"{'LoRA adapters' if lora.enabled else 'full parameters'} (reference {cfg.mols.reference})")
    return "\n".join(lines)
