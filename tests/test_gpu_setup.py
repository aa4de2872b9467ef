"""How a GPU run is set up, checked on a CPU by standing in for CUDA where needed: the NCCL group
(bound to its GPU, asynchronous error handling, a 10-minute timeout for the step's collectives and
a host group with an hour for the waits around files), TF32 through torch's current API only, and
FSDP compiling each block before it is sharded."""
from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from training import distributed
from training.compat import set_tf32


def test_an_nccl_group_is_bound_to_its_gpu_with_short_step_timeouts_and_a_host_group_for_waits(monkeypatch):
    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.setdefault("set_device", index))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend=None, **kw: calls.update(init=(backend, kw)))
    monkeypatch.setattr(dist, "new_group", lambda **kw: calls.update(new_group=kw) or "waits")
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("RANK", "11")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", raising=False)
    procs = distributed.setup("auto")
    backend, options = calls["init"]
    assert backend == "nccl" and options["device_id"] == torch.device("cuda", 3) == procs.device
    assert options["timeout"] == timedelta(minutes=10)
    assert calls["new_group"] == {"backend": "gloo", "timeout": timedelta(minutes=60)}
    assert distributed.waiting_group() == "waits"
    import os
    assert os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    monkeypatch.setattr(distributed, "_WAITS", None)


def test_tf32_goes_through_the_current_api_only():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    try:
        set_tf32(True)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        set_tf32(False)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def test_fsdp_compiles_each_block_before_sharding_it():
    from training.config import load_config
    from training.fsdp import build_sharded_model, decoder_layers

    cfg = load_config(["configs/quickstart.yaml"], ["model.size=llama_micro", "train.parallel=fsdp",
                                                    "train.compile=true"])
    distributed.setup("cpu", always_group=True)
    try:
        model = build_sharded_model(cfg, 64, torch.device("cpu"), "fp32")
        assert all(layer._compiled_call_impl is not None for layer in decoder_layers(model))
        assert model._compiled_call_impl is None  # the root (and the sharded whole) is not compiled
    finally:
        distributed.teardown()
