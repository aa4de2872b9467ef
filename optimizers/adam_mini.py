"""Adam-mini (adam_mini.Adam_mini): one second moment per block (head, output row or tensor) instead
of per element. It builds its own groups (one per tensor, partitioned by name); they are tagged after."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from configs import check_range
from optimizers.registry import register
from optimizers.shapes import itemsize, model_dims, trainable


@dataclass
class AdamMiniOptions:
    dim: Optional[int] = None           # hidden size (null: from the model config)
    n_heads: Optional[int] = None       # attention heads (null: from the model config)
    n_kv_heads: Optional[int] = None    # key/value heads (null: from the model config)

    def validate(self) -> list[str]:
        problems: list[str] = []
        for name in ("dim", "n_heads", "n_kv_heads"):
            check_range(problems, f"optimizer.options.{name}", getattr(self, name), low=1, optional=True)
        return problems


def _dims(options: AdamMiniOptions, model) -> dict:
    """dim, n_heads, n_kv_heads: the options where set, the model config's otherwise."""
    dims = model_dims(model)
    dims.update({k: v for k, v in dataclasses.asdict(options).items() if v is not None})
    return dims


def adam_mini_problems(options: AdamMiniOptions, model) -> list[str]:
    dims = _dims(options, model)
    missing = [k for k, v in dims.items() if v is None]
    if missing:
        return [f"optimizer.options: adam_mini needs {', '.join(missing)}, which the model config "
                f"does not give: set them in optimizer.options"]
    problems = []
    if dims["dim"] % dims["n_heads"]:
        problems.append(f"optimizer.options: adam_mini needs dim ({dims['dim']}) divisible by "
                        f"n_heads ({dims['n_heads']})")
    if dims["n_heads"] % dims["n_kv_heads"]:
        problems.append(f"optimizer.options: adam_mini needs n_heads ({dims['n_heads']}) divisible by "
                        f"n_kv_heads ({dims['n_kv_heads']})")
    return problems


def adam_mini_state(options: AdamMiniOptions, model, dtype) -> int:
    """A first moment per element and a second moment per block. Adam-mini's blocks of a matrix are
    its rows (of q and k: its heads, fewer); counted as rows. A vector is one block, but biases keep
    a full second moment: vectors are counted at two values per element. Both round up, so this
    is an upper bound (by well under 1%)."""
    return sum((p.numel() + (p.shape[0] if p.ndim >= 2 else p.numel())) * itemsize(p, dtype)
               for p in trainable(model))


@register("adam_mini", options=AdamMiniOptions, state_bytes=adam_mini_state, state_is_bound=True,
          check_model=adam_mini_problems,
          why_not_sharded="keeps one second moment per attention head or neuron block, which a shard cuts through")
def build_adam_mini(cfg, options, model, groups):
    from adam_mini import Adam_mini
    dims = _dims(options, model)
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
