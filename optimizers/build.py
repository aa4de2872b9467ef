"""One builder per method: (cfg, typed options, model, named input groups) -> a torch Optimizer with
MoLS-ready param groups. optimizers/methods.py lists them, one record per method, and its
build_optimizer picks the builder for `optimizer.name`.

Every returned group carries
  module_class  the class of the input group it came from (what MoLS scales),
  base_lr       its peak lr before any schedule (the trainer sets lr = base_lr * factor),
  param_names   the parameters' names (torch saves these in state_dict; import_state checks them),
  role          what the optimizer does with the group (shown by describe_groups).
An input group is split when parts of it are treated differently (Muon vs. AdamW, low-rank vs.
full-rank); each piece keeps the input group's module_class.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from optimizers.combined import CombinedOptimizer
from optimizers.shapes import is_hidden_matrix, model_dims, projection_rank, unwrap_model


@dataclass
class InputGroup:
    """An input param group with each parameter's name (from the model)."""
    module_class: str
    params: list[torch.Tensor]
    names: list[str]
    grouping: str = "modules"

    def split(self, goes_first: Callable[[str, torch.Tensor], bool]) -> tuple["InputGroup", "InputGroup"]:
        first, rest = (InputGroup(self.module_class, [], [], self.grouping),
                       InputGroup(self.module_class, [], [], self.grouping))
        for name, param in zip(self.names, self.params):
            target = first if goes_first(name, param) else rest
            target.params.append(param)
            target.names.append(name)
        return first, rest


def named_input_groups(model: torch.nn.Module, groups: list[dict]) -> list[InputGroup]:
    """The input groups with names; every trainable parameter must be in exactly one of them."""
    name_of = {id(p): n for n, p in unwrap_model(model).named_parameters()}
    seen: dict[int, str] = {}
    named = []
    for index, group in enumerate(groups):
        if "module_class" not in group:
            raise ValueError(f"param group {index} has no 'module_class' (use mols.groups.param_groups)")
        params = list(group["params"])
        names = []
        for param in params:
            name = name_of.get(id(param))
            if name is None:
                raise ValueError(f"param group {group['module_class']!r} holds a tensor that is not a "
                                 f"parameter of the model")
            if id(param) in seen:
                raise ValueError(f"parameter {name} is in more than one param group")
            seen[id(param)] = name
            names.append(name)
        if params:
            named.append(InputGroup(group["module_class"], params, names, group.get("grouping", "modules")))
    missing = [n for n, p in unwrap_model(model).named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"trainable parameters in no param group: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return named


def _group(source: InputGroup, base_lr: float, role: str, **settings) -> dict:
    return {"params": list(source.params), "lr": base_lr, "base_lr": base_lr,
            "module_class": source.module_class, "grouping": source.grouping,
            "param_names": list(source.names), "role": role,
            **settings}


# ---------------------------------------------------------------------------------------------
# One builder per method: (cfg, resolved options, model, named input groups) -> Optimizer
# ---------------------------------------------------------------------------------------------

def _on_cuda(model: torch.nn.Module) -> bool:
    """Fused Adam(W) by default on CUDA: one kernel for the whole update."""
    return next(model.parameters()).device.type == "cuda"


def adam_family(cls, role: str):
    def build(cfg, options, model, groups):
        return cls([_group(g, cfg.lr, role) for g in groups], lr=cfg.lr, betas=tuple(cfg.betas),
                   eps=cfg.eps, weight_decay=cfg.weight_decay, amsgrad=options.amsgrad,
                   fused=_on_cuda(model) if options.fused is None else options.fused)
    return build


def build_nadam(cfg, options, model, groups):
    return torch.optim.NAdam([_group(g, cfg.lr, "nadam") for g in groups], lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps, weight_decay=cfg.weight_decay,
                             momentum_decay=options.momentum_decay,
                             decoupled_weight_decay=options.decoupled_weight_decay)


def build_lamb(cfg, options, model, groups):
    from pytorch_optimizer import Lamb
    return Lamb([_group(g, cfg.lr, "lamb") for g in groups], lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                weight_decay=cfg.weight_decay, **dataclasses.asdict(options))


def build_muon(cfg, options, model, groups):
    """torch.optim.Muon on the hidden 2-D matrices, AdamW on embeddings, head, norms and biases."""
    adamw_lr = cfg.lr * options.adamw_lr_ratio
    muon_groups, adamw_groups = [], []
    for group in groups:
        matrices, rest = group.split(is_hidden_matrix)
        if matrices.params:
            muon_groups.append(_group(matrices, cfg.lr, f"muon ({options.adjust_lr_fn})"))
        if rest.params:
            adamw_groups.append(_group(rest, adamw_lr, "adamw (muon's non-matrix part)"))
    parts = {}
    if muon_groups:
        parts["muon"] = torch.optim.Muon(muon_groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         momentum=options.momentum, nesterov=options.nesterov,
                                         ns_steps=options.ns_steps, adjust_lr_fn=options.adjust_lr_fn)
    if adamw_groups:
        parts["adamw"] = torch.optim.AdamW(adamw_groups, lr=adamw_lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                           weight_decay=cfg.weight_decay)
    return CombinedOptimizer(parts)


def build_adam_mini(cfg, options, model, groups):
    """Adam-mini builds its own groups (one per tensor, partitioned by name); they are tagged after."""
    from adam_mini import Adam_mini
    dims = model_dims(model)
    dims.update({k: v for k, v in dataclasses.asdict(options).items() if v is not None})
    named = [(name, param) for group in groups for name, param in zip(group.names, group.params)]
    optimizer = Adam_mini(named_parameters=named, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                          weight_decay=cfg.weight_decay, dim=dims["dim"], n_heads=dims["n_heads"],
                          n_kv_heads=dims["n_kv_heads"], verbose=False)
    # Adam-mini takes torch.cuda.device_count() as its world size and, when it is > 1, all-gathers
    # block sizes and all-reduces the norm blocks' gradient squares: meant for sharded parameters
    # (FSDP/ZeRO). It crashes on a multi-GPU machine without a process group, and with DDP (this
    # codebase: replicated parameters, gradients already averaged) the reduction is redundant.
    optimizer.world_size = 1
    class_of = {id(p): g.module_class for g in groups for p in g.params}
    grouping_of = {id(p): g.grouping for g in groups for p in g.params}
    name_of = {id(p): n for n, p in named}
    for group in optimizer.param_groups:
        (param,) = group["params"]
        group.update(module_class=class_of[id(param)], grouping=grouping_of[id(param)], base_lr=cfg.lr,
                     param_names=[name_of[id(param)]],
                     role=_adam_mini_role(optimizer, group["name"]))
    return optimizer


def _adam_mini_role(optimizer, lowercase_name: str) -> str:
    """How Adam-mini partitions a tensor, with its own name lists (mirrors its step's branches)."""
    def has(names):
        return any(part in lowercase_name for part in names)
    if has(optimizer.adam_block_names):
        return "adam-mini: adam (one lr per element)"
    if has(optimizer.wqk_names):
        return "adam-mini: one lr per head"
    if has(optimizer.embd_names | optimizer.output_names | optimizer.wv_names | optimizer.mlp_names
           | optimizer.attn_proj_names):
        return "adam-mini: one lr per output row"
    return "adam-mini: one lr per tensor"


def _low_rank_groups(cfg, groups, low_rank_settings: dict, rank: int, name: str) -> list[dict]:
    """Per input group: its hidden matrices in a low-rank group, the rest in a full-rank group."""
    out = []
    for group in groups:
        matrices, rest = group.split(is_hidden_matrix)
        if matrices.params:
            out.append(_group(matrices, cfg.lr, f"{name} low-rank (rank {rank})", rank=rank, **low_rank_settings))
        if rest.params:
            out.append(_group(rest, cfg.lr, f"adamw (full-rank part of {name})"))
    return out


def build_galore(cfg, options, model, groups):
    from galore_torch import GaLoreAdamW
    rank = projection_rank(options, model)
    settings = {k: getattr(options, k) for k in ("update_proj_gap", "scale", "proj_type")}
    # eps is passed explicitly: GaLoreAdamW's own default is 1e-6, not the paper's 1e-8.
    return GaLoreAdamW(_low_rank_groups(cfg, groups, settings, rank, "galore"), lr=cfg.lr, betas=tuple(cfg.betas),
                       eps=cfg.eps, weight_decay=cfg.weight_decay, no_deprecation_warning=True)


def build_apollo(cfg, options, model, groups):
    from apollo_torch import APOLLOAdamW
    rank = projection_rank(options, model)
    settings = {k: getattr(options, k) for k in ("update_proj_gap", "scale", "proj_type", "proj", "scale_type")}
    return APOLLOAdamW(_low_rank_groups(cfg, groups, settings, rank, "apollo"), lr=cfg.lr, betas=tuple(cfg.betas),
                       eps=cfg.eps, weight_decay=cfg.weight_decay, scale_front=options.scale_front,
                       disable_nl=not options.norm_growth_limiter)


def bitsandbytes_adam(class_name: str):
    def build(cfg, options, model, groups):
        import bitsandbytes
        cls = getattr(bitsandbytes.optim, class_name)
        # bitsandbytes' Adam8bit and AdamW8bit run the same kernel (decoupled weight decay); they
        # differ only in their default weight decay, which cfg.weight_decay overrides.
        min_size = options.min_8bit_size
        return cls([_group(g, cfg.lr, f"8-bit state (tensors >= {min_size} elements)") for g in groups],
                   lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                   min_8bit_size=min_size)
    return build


def build_lion(cfg, options, model, groups):
    from pytorch_optimizer import Lion
    return Lion([_group(g, cfg.lr, "lion") for g in groups], lr=cfg.lr, betas=tuple(cfg.betas),
                weight_decay=cfg.weight_decay)


def build_adafactor(cfg, options, model, groups):
    """pytorch_optimizer's AdaFactor with an explicit lr: no relative step, no parameter scaling.

    These are the reference harness's Adafactor settings (transformers' Adafactor with
    relative_step=False, scale_parameter=False, warmup_init=False). torch.optim.Adafactor always
    multiplies the step by the parameter RMS and caps it at 1/sqrt(t), so its lr means something else.
    cfg.eps is not used (Adafactor's eps1 is added to squared gradients).
    """
    from pytorch_optimizer import AdaFactor
    beta1 = cfg.betas[0] if options.momentum else None
    role = "adafactor" + (" (with momentum)" if options.momentum else "")
    return AdaFactor([_group(g, cfg.lr, role) for g in groups], lr=cfg.lr, betas=(beta1, options.beta2_cap),
                     decay_rate=options.decay_rate, weight_decay=cfg.weight_decay,
                     clip_threshold=options.clip_threshold, eps1=options.eps1, relative_step=False,
                     scale_parameter=False, warmup_init=False, momentum_dtype=torch.float32)


def build_soap(cfg, options, model, groups):
    """pytorch_optimizer's SOAP (Adam in Shampoo's eigenbasis), the paper's Table 14 baseline."""
    from pytorch_optimizer import SOAP
    return SOAP([_group(g, cfg.lr, "soap") for g in groups], lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                weight_decay=cfg.weight_decay, precondition_frequency=options.precondition_frequency,
                max_precondition_dim=options.max_precondition_dim)
