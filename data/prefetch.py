"""Micro-batches made ahead, in a background thread, while the device computes.

    stream = Prefetcher(build_train_stream(...), depth=2, pin_memory=device.type == "cuda")
    batch = stream.next_batch()          # made ahead; pinned host memory when pin_memory
    state = stream.state_dict()          # after the batches handed out, never those made ahead

Packing documents into sequences and collating them runs in the rank's main process (tokenizing
may run in worker processes, data.num_workers): without this, a GPU waits for it at every
micro-batch. The thread keeps up to `depth` batches ready (data.prefetch); with `pin_memory` they
are copied into page-locked memory there, so the copy to the GPU (`to(device, non_blocking=True)`)
does not wait for the host. The batches and their order are exactly the stream's, so a run is
the same with or without prefetching, and a checkpoint holds the position of the batches the run
consumed: a resumed run continues with the first batch it had not trained on.

The stream's first batch is made in the calling thread, so that the stream starts any worker
processes from the main thread (forking from a thread that runs beside torch's own threads risks
inheriting a held lock).
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

import torch

_END = object()  # the thread's last item: it stopped (an error comes as itself)


class Prefetcher:
    def __init__(self, stream, depth: int = 2, pin_memory: bool = False):
        if depth < 1:
            raise ValueError(f"depth must be positive, got {depth}")
        self.stream, self.depth, self.pin_memory = stream, depth, pin_memory
        self._position: dict | None = None   # the stream's state after the last batch handed out
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def micro_batch(self) -> int:
        return self.stream.micro_batch

    def next_batch(self) -> dict:
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        batch, self._position = item
        return batch

    def state_dict(self) -> dict:
        """Where the run stands: the next batch it trains on is the first after this state."""
        return dict(self._position) if self._position is not None else self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.stream.load_state_dict(state)
        self._position = None

    def close(self) -> None:
        """Stop the thread (and the stream's workers); a later `next_batch` starts again from the
        position of the batches handed out."""
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():  # unblock a thread waiting to put a batch
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
            self._thread = self._queue = None
            self._stop = threading.Event()
            if self._position is not None:  # the stream ran ahead: put it back where the run is
                self.stream.load_state_dict(self._position)
        self.stream.close()

    def _start(self) -> None:
        batches = iter(self.stream)
        self._queue = queue.Queue(maxsize=self.depth)
        self._queue.put(self._prepare(next(batches)))  # the first batch (and any worker processes) from here
        self._thread = threading.Thread(target=self._run, args=(batches,), name="mols-prefetch", daemon=True)
        self._thread.start()

    def _prepare(self, item: tuple[dict, dict]) -> tuple[dict, dict]:
        batch, state = item
        if self.pin_memory:
            batch = {key: value.pin_memory() if isinstance(value, torch.Tensor) else value
                     for key, value in batch.items()}
        return batch, dict(state)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, batches: Iterator[tuple[dict, dict]]) -> None:
        try:
            while not self._stop.is_set():
                if not self._put(self._prepare(next(batches))):
                    break
        except BaseException as err:  # handed to the main thread with the next batch it asks for
            self._put(err)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # a generator is closed by the thread that runs it
