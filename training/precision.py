"""The model a run trains or evaluates: built from its config, on its device, in its precision.

precision `auto` is bf16 autocast over fp32 weights on a GPU (bf16-mixed) and fp32 on a CPU;
`bf16-pure` casts the weights themselves (the reference harness), never the buffers: RoPE's
inverse frequencies stay fp32, as a model exported and reloaded would have them.
"""
from __future__ import annotations

import contextlib

import torch

from models import build_model
from models.init import initialize_by_name
from training.compat import enable_activation_checkpointing, skip_packed_sequence_detection


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16-mixed" if device.type == "cuda" else "fp32"
    return precision


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast the parameters in place (tied ones stay one tensor); buffers keep their dtype."""
    for param in model.parameters():
        param.data = param.data.to(dtype)


def prepare_model(cfg, vocab_size: int, device: torch.device):
    """The model on its device in its precision, and the autocast context the forward passes run under.

    Built directly on the device (torch's default device during construction), so a GPU rank
    never holds a copy on the host: on a CPU the weights are today's for a given seed; on a GPU
    they come from the GPU's generator (the same on every rank). With `model.init: by_name` they
    are models/init.py's, the same on every device. Under `train.parallel: fsdp` the model is
    built sharded (training/fsdp.py), and bf16-mixed is FSDP's policy rather than autocast.
    Fine-tuning (model.pretrained): the pretrained weights, loaded in fp32 and moved to the
    device, with LoRA adapters from run.seed when model.lora.rank > 0 (models/pretrained.py)."""
    precision = resolve_precision(cfg.train.precision, device)
    skip_packed_sequence_detection()  # a host wait per forward on a GPU, for an answer known here
    if cfg.train.parallel == "fsdp":
        from training.fsdp import build_sharded_model
        return build_sharded_model(cfg, vocab_size, device, precision), precision, contextlib.nullcontext
    torch.manual_seed(cfg.run.seed)
    if cfg.model.pretrained:
        from models.pretrained import build_finetuning_model
        model = build_finetuning_model(cfg.model, seed=cfg.run.seed, device=device)
    else:
        model = build_model(cfg.model.size, vocab_size, attn_implementation=cfg.model.attn_implementation,
                            overrides=cfg.model.overrides, device=device)
    if cfg.init == "by_name" and not cfg.model.pretrained:
        initialize_by_name(model, cfg.run.seed)
    if precision == "bf16-pure":
        cast_parameters(model, torch.bfloat16)
    if cfg.model.gradient_checkpointing:
        enable_activation_checkpointing(model)
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16-mixed"
                else contextlib.nullcontext)
    return model, precision, autocast


def model_description(cfg, model: torch.nn.Module) -> str:
    """The run log's line(s) about the model: its parameters by module class, and for fine-tuning
    what is loaded and what trains."""
    from models import parameter_report

    report = parameter_report(model)
    if not cfg.model.pretrained:
        return report
    from models.pretrained import describe_finetuning
    return describe_finetuning(model, cfg.model) + "\n" + report
