"""Shared-memory image buffers that loader workers reuse once the main process has let go of them.

A batch leaves a loader worker in shared memory. Fresh shared memory costs a page fault per
4 kB page on first write; on virtual machines that hand freed pages back to the host that is
over ten times the copy itself (10-18 ms against under 1 ms for a 16 x 480 x 480 x 3 batch on our
2-vCPU test VM). So
each worker keeps the buffers it made, the main process tells it which ones no tensor uses any
more, and the worker writes its next batch into one of those.
"""

from __future__ import annotations

import itertools
import os
import queue
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import get_worker_info


BUFFER_SERIALS = itertools.count()  # never repeats in a process, across WorkerBuffers (persistent workers make several)


def return_queues(num_workers: int) -> list:
    """One queue per loader worker, on which the main process hands back buffer ids."""
    queues = [torch.multiprocessing.Queue() for _ in range(num_workers)]
    for returned in queues:
        returned.cancel_join_thread()  # ids not yet read when the run ends are not worth waiting for at exit
    return queues


def worker_buffers(returns: list | None) -> WorkerBuffers | None:
    """This loader worker's buffers; None in the main process or when buffers are not reused."""
    info = get_worker_info()
    return WorkerBuffers(returns[info.id], info.id) if info is not None and returns else None


def new_shared_bytes(numel: int) -> torch.Tensor:
    """A flat uint8 tensor of `numel` elements in fresh shared memory (public API: `Tensor.share_memory_`, which
    moves a fresh allocation's untouched pages into shared memory; torch has no public shared allocator)."""
    return torch.empty(numel, dtype=torch.uint8).share_memory_()


class WorkerBuffers:
    """Worker side: flat uint8 shared buffers by id, reused after the main process returns their id on `returned`.

    Ids are (process id, serial) and never repeat, so a stale id (meant for another process, or for
    this worker's buffers of an earlier iteration) is ignored.
    """

    def __init__(self, returned: Any, worker: int = 0, keep: int = 8):
        self.returned, self.worker, self.keep = returned, worker, keep  # a multiprocessing queue of ids
        self.free: dict[tuple[int, int], torch.Tensor] = {}
        self.lent: dict[tuple[int, int], torch.Tensor] = {}
        self.largest = 0  # bytes of the largest buffer asked for so far

    def take(self, numel: int) -> tuple[tuple[int, int], torch.Tensor]:
        """The first `numel` bytes of a free buffer large enough, else of a new one as large as the largest asked
        for so far (batches of varying size, the device path's canvases, then soon fit every buffer instead of
        each slightly larger one making fresh memory); lent until its id comes back."""
        self.collect_returned()
        self.largest = max(self.largest, numel)
        ident = next((i for i, buffer in self.free.items() if buffer.numel() >= numel), None)
        if ident is None:
            ident = (os.getpid(), next(BUFFER_SERIALS))
            buffer = new_shared_bytes(self.largest)
        else:
            buffer = self.free.pop(ident)
        self.lent[ident] = buffer
        return ident, buffer[:numel]

    def collect_returned(self) -> None:
        """Move the buffers whose ids came back to the free list (at most `keep` kept; the rest are let go)."""
        while True:
            try:
                ident = self.returned.get_nowait()
            except queue.Empty:
                return
            buffer = self.lent.pop(ident, None)
            if buffer is not None and len(self.free) < self.keep:
                self.free[ident] = buffer


class LentBuffers:
    """Main side: which worker buffer each received batch lives in; returns the ids no tensor uses any more."""

    def __init__(self, queues: list):
        self.queues = queues  # one per loader worker, indexed by its DataLoader worker id
        self.out: list[tuple[int, tuple[int, int], StorageWeakRef]] = []

    def hand_back(self, buffer: tuple | list | None, images: torch.Tensor) -> None:
        """Note that `images` arrived in `buffer` ((worker, id) as the worker sent it, None if not reused),
        then send back the ids of buffers whose received tensors (views included) are all gone."""
        if buffer is not None:
            worker, ident = buffer
            self.out.append((worker, tuple(ident), StorageWeakRef(images.untyped_storage())))  # DataLoader made it a list
        still_used = []
        for worker, ident, ref in self.out:
            if ref.expired():
                self.queues[worker].put(ident)
            else:
                still_used.append((worker, ident, ref))
        self.out = still_used
