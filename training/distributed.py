"""One process per device under torchrun (NCCL on GPU, gloo on CPU), or a single plain process."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from configs import UserError
from mols import collectives


@dataclass
class Processes:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_preference: str = "auto", always_group: bool = False) -> Processes:
    """This process's rank and device, with the process group started when there are several
    (or, with `always_group`, for one process too: FSDP shards over a group of any size)."""
    use_cuda = torch.cuda.is_available() if device_preference == "auto" else device_preference == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available here "
                        "(use train.device=auto or cpu)")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if (world_size > 1 or always_group) and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        options = {"timeout": COLLECTIVE_TIMEOUT}
        if use_cuda:
            # device_id: NCCL binds its communicator to this GPU at once (no guessing, no lazy
            # init on the first collective); asynchronous error handling: a rank whose collective
            # fails or times out takes the job down instead of leaving the others waiting
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
            options["device_id"] = device
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if world_size == 1:  # FSDP over a group of one
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, **options)
        elif restart and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun keeps its store across restarts: without a fresh prefix the new group would
            # read the dead group's addresses and fail to connect.
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                                  is_master=False, timeout=timedelta(minutes=10))
            dist.init_process_group(backend, store=dist.PrefixStore(f"/mols/restart_{restart}", store),
                                    rank=rank, world_size=world_size, **options)
        else:
            dist.init_process_group(backend=backend, **options)
        global _WAITS
        _WAITS = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    return Processes(rank, world_size, local_rank, device)


# How long a collective of the training step waits for the slowest rank before the run is declared
# hung (NCCL's default): a hung job idles its GPUs this long, not an hour.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
# The ranks' agreements around files (the checkpoint to resume, a save's outcome: every object
# collective) may wait for one rank writing a 7B checkpoint (~80 GB) to a network filesystem: they
# go through a host group of their own with a longer timeout (NCCL's watchdog sees none of them).
WAIT_TIMEOUT = timedelta(minutes=60)
_WAITS = None  # that group (gloo), made by setup()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def host_threads(local_world_size: int | None = None) -> int:
    """CPU threads one rank may use: the cores this process may run on, shared by the node's ranks.

    torchrun sets OMP_NUM_THREADS=1, which leaves host-side work (model set-up, MoLS statistics
    on the CPU) on one core while the node's other cores idle."""
    local = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(local, 1))


def teardown() -> None:
    global _WAITS
    if dist.is_initialized():
        dist.destroy_process_group()
    _WAITS = None


def exit_process(code: int) -> None:
    """Ends the process with `code`; a torchrun worker skips the interpreter's shutdown.

    After an FSDP run, gloo's worker threads outlive destroy_process_group (something FSDP leaves
    behind still references the group; after DDP they are joined), and one may still be freeing
    the last collective's tensors, which needs the GIL. If the interpreter is finalizing by then,
    that thread is ended inside a C++ destructor and the process aborts after a run that succeeded
    ("terminate called without an active exception", SIGABRT): 7 of 54 FSDP runs on a loaded
    2-core machine (torch 2.13), in CI on 2.11 too; 0 of 20 with os._exit. Everything the run
    writes is closed by now; output is flushed here."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# The collectives, through mols/collectives.py's one rule for where their tensors live (NCCL: on
# the GPU); nothing else of the project calls torch.distributed's collectives.
def all_reduce_sum(values: list[float], device: torch.device | None = None) -> list[float]:
    """Host numbers summed over ranks (`device` is kept for callers; the rule picks the device)."""
    return collectives.all_reduce_values(values)


def all_reduce_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (a no-op in a single process)."""
    return collectives.all_reduce(tensor)


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Maximum over ranks, in place (a no-op in a single process)."""
    return collectives.all_reduce(tensor, op="max")


def gather_objects(obj, world_size: int | None = None) -> list:
    """Every rank's `obj` (a small picklable value), on every rank (over the waiting group)."""
    return collectives.all_gather_object(obj, group=_WAITS)


def broadcast_object(obj, source: int = 0):
    """Rank `source`'s `obj` (a small picklable value), on every rank (over the waiting group)."""
    return collectives.broadcast_object(obj, source, group=_WAITS)


def waiting_group():
    """The host group for waits on a rank's file work (torch.distributed.checkpoint's too)."""
    return _WAITS


def raise_if_any(error: "UserError | None", world_size: int) -> None:
    """Collective: every rank raises the first rank's UserError if any rank has one, so no rank is
    left waiting in a collective for a rank that stopped."""
    errors = gather_objects(None if error is None else (type(error), str(error)), world_size)
    for rank, found in enumerate(errors):
        if found is not None:
            kind, message = found
            raise kind(message if world_size == 1 else f"{message} (rank {rank})")


def check_agreement(value, what: str, world_size: int) -> None:
    """Collective: a UserError on every rank when the ranks hold different `value`s of `what`."""
    values = gather_objects(value, world_size)
    if len(set(map(repr, values))) > 1:
        listed = ", ".join(f"rank {rank}: {v}" for rank, v in enumerate(values))
        raise UserError(f"the ranks disagree on {what} ({listed}): do all nodes see the same run directory? "
                        f"(a node-local or stale copy of checkpoints/ can cause this)")


def barrier() -> None:
    collectives.barrier()
