"""What stops a run early, and how it says so: preemption signals and non-finite values.

Exit codes of train.py (also in the README):
    0   finished
    2   bad input (config, file, flag, resume mismatch): a message, no traceback
    65  stopped on a non-finite loss or gradient (on_nonfinite: stop, or too many skips);
        the last good checkpoint is kept
    74  a checkpoint could not be written (a full disk, an I/O error): the message names the space
        needed (or the error) and the last good checkpoint, which is kept
    75  stopped by a signal (SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGINT) after saving a checkpoint at
        the step it stopped at: `--set run.resume=auto` continues exactly (EX_TEMPFAIL: try again)
    other non-zero: an internal error, with its traceback
"""
from __future__ import annotations

import signal
from typing import Optional

import torch

from training import distributed

EXIT_NONFINITE = 65
EXIT_PREEMPTED = 75
# SIGHUP: the terminal went away (a dropped ssh session on a login node). A process started with
# it ignored (nohup) keeps ignoring it: that run was meant to outlive the session.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


class StopRequests:
    """Remembers a stop signal instead of dying of it; the loop stops at the next step boundary.

    `poll(nonfinite)` is collective: every rank learns whether any rank was signalled and whether
    any rank saw a non-finite loss, in one small all-reduce per step, so all ranks stop after the
    same step (none saves another step or waits forever for the others)."""

    def __init__(self, signals=STOP_SIGNALS):
        self.received: Optional[int] = None
        for sig in signals:  # train.main puts the previous handlers back when the run ends
            if not (sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN):
                signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.received = signum

    def poll(self, nonfinite_loss: torch.Tensor, device: torch.device) -> tuple[bool, bool]:
        """(stop requested on some rank, loss non-finite on some rank): the step's one wait for the
        device, which the decision to step needs. The flags are filled on the device (a python
        number copied by `torch.tensor(x, device=cuda)` would wait for the GPU's queue first)."""
        flags = torch.zeros(2, device=device)
        flags[0] = float(self.received is not None)
        flags[1] = nonfinite_loss.to(device=device, dtype=torch.float32)
        flags = distributed.all_reduce_tensor(flags).tolist()
        return flags[0] > 0, flags[1] > 0

    def agreed(self, device: torch.device | None = None) -> bool:
        """Collective: whether any rank was signalled (checked between MoLS gradient samples)."""
        return distributed.all_reduce_sum([float(self.received is not None)])[0] > 0

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""


def nonfinite_report(model: torch.nn.Module, loss_finite: bool) -> str:
    """Where the non-finite values are: the loss, then the first parameter (walking back from the
    output, the order backprop reaches them) whose gradient holds NaN or inf, with its module."""
    from torch.distributed.tensor import DTensor

    from mols.groups import base_class

    named = list(model.named_parameters())
    local = [None if p.grad is None else p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
             for _, p in named]
    flags = torch.tensor([g is not None and not bool(torch.isfinite(g).all()) for g in local], dtype=torch.int32,
                         device=next((g.device for g in local if g is not None), "cpu"))
    if any(isinstance(p.grad, DTensor) for _, p in named):  # sharded: each rank saw its shards only
        distributed.all_reduce_max(flags)
    bad = [(name, param) for (name, param), flag in zip(named, flags.tolist()) if flag]
    parts = [] if loss_finite else ["the loss is non-finite"]
    if bad:
        name, param = bad[-1]
        parts.append(f"first non-finite gradient: {name} (module class {base_class(name)}; "
                     f"{len(bad)} of {sum(1 for _ in model.parameters())} parameter tensors non-finite)")
    elif loss_finite:
        parts.append("the gradient norm is non-finite")
    return "; ".join(parts)


class NonfiniteGuard:
    """train.on_nonfinite: `stop` at the first non-finite update, `skip` up to `max_skips` in a row."""

    def __init__(self, policy: str, max_skips: int):
        self.policy, self.max_skips = policy, max_skips
        self.skipped = self.in_a_row = 0

    def record_finite(self) -> None:
        self.in_a_row = 0

    def record_nonfinite(self) -> bool:
        """Count a dropped update; True when the run must stop now."""
        self.skipped += 1
        self.in_a_row += 1
        return self.policy == "stop" or self.in_a_row >= self.max_skips

    def stop_message(self, update: int, where: str, last_good) -> str:
        return (f"stopped: non-finite values in update {update} ({where}); "
                + (f"{self.in_a_row} in a row with on_nonfinite: skip; " if self.policy == "skip" else "")
                + (f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet")
                + f"; exit code {EXIT_NONFINITE}")
