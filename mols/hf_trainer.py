"""MoLS for `transformers.Trainer` users: an optimizer with one param group per module class, and a
callback that calibrates at 1% of training and ramps the multipliers in over the warm-up.

    from mols.hf_trainer import MoLSCallback, mols_optimizer

    optimizer = mols_optimizer(model, args)                      # args: your TrainingArguments
    trainer = Trainer(model=model, args=args, train_dataset=..., data_collator=...,
                      optimizers=(optimizer, None),              # the Trainer still builds its scheduler
                      callbacks=[MoLSCallback(samples=2048)])
    trainer.train()

or, equivalently, `MoLSTrainer(model=..., args=..., ..., mols=MoLSCallback(...))`, a Trainer whose
`create_optimizer` builds the grouped optimizer and which adds the callback itself.

- The optimizer is the one `args.optim` names (`Trainer.get_optimizer_cls_and_kwargs`: adamw_torch,
  adamw_torch_fused, adafactor, sgd, ...; optimizers that build their own param groups, such as
  GaLore's, are refused) with the Trainer's weight-decay split kept: each module class's group is
  split into a decayed and a non-decayed group (biases and norms), both tagged with the class.
- The callback (at `on_train_begin`) attaches MoLS to that optimizer: `warmup_steps` is the
  Trainer's own (`args.get_warmup_steps(max_steps)`), `estimate_step` 1% of `max_steps` unless
  given, and MoLS counts updates with the Trainer's `state.global_step`. At the first step on or
  after `estimate_step` (`on_step_begin`) it measures module SNRs from extra micro-batches of the
  training set: a separate DataLoader over the train dataloader's dataset and collate function,
  shuffled with its own seed (so the training batches are not consumed or reordered), batch size
  `micro_batch` (the per-device train batch size by default), `samples` sequences in all.
- MoLS multiplies each group's lr inside `optimizer.step()` and puts it back afterwards, so the
  Trainer's LR scheduler keeps setting the base lr and logs it unchanged.
- State: the callback writes MoLS's state to `mols_state.json` in each checkpoint directory
  (`on_save`) and reads it back when training resumes from that checkpoint (`on_train_begin` with
  `state.global_step` > 0), so a resumed run keeps its multipliers without re-measuring.
- Mixed precision: with `args.bf16` / `args.fp16` the extra forward passes run under the same
  autocast as training. Distributed: each rank measures its own samples (seeded by rank) and
  MoLS merges the moments across ranks (`mols.snr`); only one process has been tested.

This module needs `transformers` (and its `accelerate`); `import mols` alone does not import it.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Callable, Optional

import torch
from transformers import Trainer, TrainerCallback

from mols.groups import param_groups
from mols.scaling import MoLS
from mols.snr import default_loss

STATE_FILE = "mols_state.json"
CHECKPOINT_PREFIX = "checkpoint"   # transformers' PREFIX_CHECKPOINT_DIR


def _decay_names(model: torch.nn.Module) -> set[str]:
    """The parameters the Trainer applies weight decay to (its own rule)."""
    return set(Trainer.get_decay_parameter_names(None, model))


def grouped_parameters(model: torch.nn.Module, weight_decay: float = 0.0, grouping: str = "modules") -> list[dict]:
    """`mols.param_groups(model, grouping)` with each class's group split by the Trainer's weight
    decay rule (biases and norms get none); every group keeps `module_class`."""
    decay = _decay_names(model)
    groups = []
    for group in param_groups(model, grouping):
        for decayed in (True, False):
            pairs = [(n, p) for n, p in zip(group["names"], group["params"]) if (n in decay) == decayed]
            if pairs:
                groups.append({**group, "params": [p for _, p in pairs], "names": [n for n, _ in pairs],
                               "weight_decay": weight_decay if decayed else 0.0})
    return groups


def mols_optimizer(model: torch.nn.Module, args, grouping: str = "modules",
                   optimizer_cls: Optional[type] = None, **optimizer_kwargs) -> torch.optim.Optimizer:
    """The optimizer `args.optim` names (or `optimizer_cls(**optimizer_kwargs)`), built on MoLS's
    param groups with the Trainer's weight-decay split; pass it as `Trainer(optimizers=(opt, None))`."""
    if optimizer_cls is None:
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        if any(key in kwargs for key in ("params", "model", "optimizer_dict")):
            raise ValueError(f"MoLS: optim={args.optim!r} builds its own parameter groups; use an optimizer "
                             "that takes them (adamw_torch, adafactor, sgd, ...) or pass optimizer_cls")
        optimizer_kwargs = {**kwargs, **optimizer_kwargs}
    return optimizer_cls(grouped_parameters(model, args.weight_decay, grouping), **optimizer_kwargs)


def _inner_optimizer(optimizer):
    """The torch optimizer under accelerate's AcceleratedOptimizer (and similar wrappers)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class MoLSCallback(TrainerCallback):
    """Attaches MoLS to the Trainer's optimizer and calibrates it at `estimate_step`.

    Settings are those of `mols.MoLS` (reference, min_alpha, max_alpha, snr, uncertainty_groups,
    ...: `mols_kwargs`); `samples` sequences are drawn for the calibration in micro-batches of
    `micro_batch` (default: the per-device train batch size); `estimate_step` defaults to 1% of
    the Trainer's max_steps (at least 1); `seed` (default args.seed + 1) orders the extra samples;
    `loss_fn(model, batch)` defaults to `model(**batch).loss`. After training starts, `mols` is
    the MoLS object and `calibration` its last Calibration (None before)."""

    def __init__(self, samples: int = 2048, micro_batch: Optional[int] = None, estimate_step: Optional[int] = None,
                 estimate_fraction: float = 0.01, seed: Optional[int] = None,
                 loss_fn: Callable = default_loss, verbose: bool = True, **mols_kwargs):
        self.samples, self.micro_batch = samples, micro_batch
        self.estimate_step, self.estimate_fraction, self.seed = estimate_step, estimate_fraction, seed
        self.loss_fn, self.verbose, self.mols_kwargs = loss_fn, verbose, mols_kwargs
        self.mols: Optional[MoLS] = None
        self.calibration = None
        self._state = None

    # -- setup ------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        if optimizer is None or model is None:
            raise ValueError("MoLSCallback: the Trainer passed no model or optimizer")
        inner = _inner_optimizer(optimizer)
        if not any("module_class" in g for g in inner.param_groups):
            raise ValueError("MoLSCallback: the optimizer's param groups carry no module_class; build it with "
                             "mols.hf_trainer.mols_optimizer(model, args) and pass optimizers=(optimizer, None), "
                             "or use MoLSTrainer")
        if self.mols is not None:
            for handle in self.mols._hook_handles:   # a second train() call: attach afresh
                handle.remove()
        estimate = self.estimate_step if self.estimate_step is not None \
            else max(1, int(round(self.estimate_fraction * state.max_steps)))
        self.mols = MoLS(model, inner, estimate_step=estimate, warmup_steps=args.get_warmup_steps(state.max_steps),
                         step=lambda: state.global_step, samples=self.samples, **self.mols_kwargs)
        self._dataloader = train_dataloader
        if state.global_step > 0:
            self._resume(args, state)

    def _resume(self, args, state) -> None:
        path = os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}-{state.global_step}", STATE_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self.mols.load_state_dict(json.load(f))
            self.calibration = self.mols.calibrations[-1] if self.mols.calibrations else None
        elif state.global_step > self.mols.estimate_step:
            warnings.warn(f"MoLS: resuming at step {state.global_step} without {path}: the calibration is "
                          "measured again now, at the current step")

    # -- calibration ------------------------------------------------------------------------------
    def _extra_batches(self, args, count: int):
        loader = self._dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            raise ValueError("MoLSCallback: the train dataloader has no dataset to draw calibration samples from")
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        generator = torch.Generator().manual_seed((args.seed + 1 if self.seed is None else self.seed) * 1000 + rank)
        batch = self.micro_batch or args.per_device_train_batch_size
        extra = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, generator=generator,
                                            collate_fn=loader.collate_fn, drop_last=True)
        produced = 0
        while produced < count:   # several passes over a small dataset, each in a new order
            empty = True
            for item in extra:
                empty = False
                yield item
                produced += 1
                if produced == count:
                    return
            if empty:
                raise ValueError(f"MoLSCallback: the training set has fewer than {batch} examples")

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.mols is None or not self.mols.calibration_due(state.global_step):
            return
        device = next(model.parameters()).device
        per_draw = (self.micro_batch or args.per_device_train_batch_size) * max(1, args.world_size)
        count = self.mols.draws("calibrate", per_draw)
        dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        loss_fn = self.loss_fn

        def batches():
            for batch in self._extra_batches(args, count):
                yield {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

        def autocast_loss(m, batch):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return loss_fn(m, batch)

        self.calibration = self.mols.calibrate(model, batches(), loss_fn=autocast_loss)
        if self.verbose and state.is_world_process_zero:
            print(self.calibration.table())

    # -- state ------------------------------------------------------------------------------------
    def on_save(self, args, state, control, **kwargs):
        if self.mols is None or not state.is_world_process_zero:
            return
        directory = os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}-{state.global_step}")
        if os.path.isdir(directory):
            with open(os.path.join(directory, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(self.mols.state_dict(), f, indent=1)

    def multipliers(self) -> dict[str, float]:
        """The multipliers of the current step (1 before the calibration)."""
        return {} if self.mols is None else self.mols.multipliers()


class MoLSTrainer(Trainer):
    """A Trainer with MoLS: `create_optimizer` builds `mols_optimizer(model, args, grouping)` and
    the callback (`mols=MoLSCallback(...)`, default settings when omitted) is added."""

    def __init__(self, *args, mols: Optional[MoLSCallback] = None, grouping: str = "modules", **kwargs):
        self.mols_callback = mols or MoLSCallback()
        self.mols_grouping = grouping
        callbacks = list(kwargs.pop("callbacks", None) or []) + [self.mols_callback]
        super().__init__(*args, callbacks=callbacks, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = mols_optimizer(self.model if model is None else model, self.args, self.mols_grouping)
        return self.optimizer

