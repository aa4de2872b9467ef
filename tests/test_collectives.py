"""mols/collectives.py: the one rule for where a collective's tensors live, and its functions on
2 gloo processes. (tests/test_architecture.py checks that no other file calls a collective.)"""
import os
import tempfile
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mols import collectives


@pytest.mark.parametrize("backend, tensor_device, expected", [
    ("nccl", "cpu", "cuda:3"),            # NCCL takes CUDA tensors only: a host tensor is moved
    ("nccl", None, "cuda:3"),             # host values (counts, flags) too
    ("gloo", "cpu", "cpu"),
    ("gloo", None, "cpu"),
    ("cpu:gloo,cuda:nccl", "cpu", "cpu"),  # a group with a backend per device keeps host tensors on gloo
    ("cpu:gloo,cuda:nccl", None, "cuda:3"),
])
def test_the_backend_decides_where_a_collective_runs(monkeypatch, backend, tensor_device, expected):
    monkeypatch.setattr(collectives, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    tensor = None if tensor_device is None else torch.zeros(1, device=tensor_device)
    assert collectives.backend_device(tensor) == torch.device(expected)


def test_without_a_process_group_every_collective_is_the_identity():
    tensor = torch.tensor([1.0, 2.0])
    assert collectives.all_reduce(tensor) is tensor and tensor.tolist() == [1.0, 2.0]
    assert collectives.all_reduce_values([3, 4]) == [3, 4]
    out = collectives.all_to_all_single(torch.empty(2), tensor)
    assert out.tolist() == [1.0, 2.0]
    assert collectives.all_gather_object("x") == ["x"] and collectives.broadcast_object(5) == 5
    assert collectives.world_size() == 1 and collectives.rank() == 0


def _worker(rank, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    result = {}
    tensor = torch.tensor([float(rank + 1), 10.0 * rank])
    same = collectives.all_reduce(tensor)
    result["sum"], result["in_place"] = tensor.tolist(), same is tensor
    result["max"] = collectives.all_reduce(torch.tensor([float(rank)]), op="max").tolist()
    result["values"] = collectives.all_reduce_values([rank, 1.5])
    received = collectives.all_to_all_single(torch.empty(2), torch.tensor([10.0 * rank, 10.0 * rank + 1]))
    result["all_to_all"] = received.tolist()
    result["gathered"] = collectives.all_gather_object({"rank": rank})
    result["broadcast"] = collectives.broadcast_object(f"from {rank}", source=1)
    collectives.barrier()
    torch.save(result, f"{out_file}.{rank}")
    dist.destroy_process_group()


def test_the_collectives_on_two_gloo_processes():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        workers = mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), out), nprocs=2, join=False)
        deadline = time.monotonic() + 120
        while not workers.join(timeout=1):
            if time.monotonic() > deadline:
                for process in workers.processes:
                    process.kill()
                pytest.fail("the 2-process collectives did not finish in 120 s")
        results = [torch.load(f"{out}.{r}") for r in range(2)]
    for rank, got in enumerate(results):
        assert got["sum"] == [3.0, 10.0] and got["in_place"]
        assert got["max"] == [1.0]
        assert got["values"] == [1.0, 3.0]
        assert got["all_to_all"] == [float(rank), 10.0 + rank]  # chunk r of every rank
        assert got["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert got["broadcast"] == "from 1"
