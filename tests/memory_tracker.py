"""Peak memory of the tensors a piece of code keeps alive at once, measured on any device, the CPU
included: tests hold the dry run's memory estimate against it (tests/test_memory_estimate.py).

    with PeakTensorMemory() as tracked:
        train.main([...])
    tracked.peak   # bytes

Every storage an operator creates while the mode is on counts from its creation until the last
reference to it goes (a weak reference to the storage tells), at its current size: FSDP frees and
refills its gathered weights by resizing their storages (`UntypedStorage.resize_`), which is
followed too. Storages made outside torch's dispatcher (numpy arrays wrapped with from_numpy, a
collective backend's own buffers) are not seen: small here, and not what an estimate counts.
"""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTensorMemory(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self._live: dict[int, list] = {}  # storage (its C++ address) -> [weak reference, bytes now]
        self.current = self.peak = 0
        self._resize = None

    def __enter__(self):
        tracker, resize = self, torch.UntypedStorage.resize_
        self._resize = resize

        def tracked_resize(storage, size):
            result = resize(storage, size)
            tracker._add_storage(storage)
            entry = tracker._live.get(storage._cdata)
            if entry is not None and entry[1] != storage.nbytes():
                tracker._change(storage.nbytes() - entry[1])
                entry[1] = storage.nbytes()
            return result

        torch.UntypedStorage.resize_ = tracked_resize
        return super().__enter__()

    def __exit__(self, *exc):
        torch.UntypedStorage.resize_ = self._resize
        return super().__exit__(*exc)

    def _change(self, delta: int) -> None:
        self.current += delta
        self.peak = max(self.peak, self.current)

    def _add_storage(self, storage) -> None:
        key = storage._cdata
        if key in self._live or storage.device.type == "meta":
            return

        def released(_, key=key):
            entry = self._live.pop(key, None)
            if entry is not None:
                self.current -= entry[1]

        self._live[key] = [weakref.ref(storage, released), storage.nbytes()]
        self._change(storage.nbytes())

    def hold(self, *tensors: torch.Tensor) -> None:
        for tensor in tensors:
            self._add(tensor)

    def _add(self, tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        if hasattr(tensor, "to_local"):  # a DTensor: its local shard is what this rank holds
            tensor = tensor.to_local()
        self._add_storage(tensor.untyped_storage())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            self._add(tensor)
        return out
