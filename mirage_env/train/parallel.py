"""Training data on worker processes: the simulator renders on every core while the accelerator trains.

Every clip and every teacher-forced sample is a deterministic function of its index, so a pool filled on workers
holds exactly what the same pool filled lazily in one process would. Workers are spawned (not forked: the parent
may hold a CUDA context and OpenMP threads) and run torch on one thread each.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.pool import AsyncResult
from typing import Any

import torch


def _init_worker() -> None:
    torch.set_num_threads(1)


def _discard(fn: Callable[[Any], Any], item: Any) -> None:
    fn(item)


def _by_value(fn: Callable[[Any], Any], item: Any) -> bytes:
    """``fn(item)`` pickled by value: multiprocessing would otherwise send every tensor as a shared-memory file
    descriptor, thousands of which exhaust the open-file limit and stall the pool."""
    return pickle.dumps(fn(item), protocol=pickle.HIGHEST_PROTOCOL)


class WorkerPool:
    """``workers`` spawned processes that run picklable callables over items (``workers=0``: in this process)."""

    def __init__(self, workers: int) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        context = multiprocessing.get_context("spawn")
        self._pool = context.Pool(workers, initializer=_init_worker) if workers else None

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(item) for item in items]``, spread over the workers in order."""
        if self._pool is None:
            return [fn(item) for item in items]
        results = self._pool.starmap(_by_value, [(fn, item) for item in items],
                                     chunksize=max(1, len(items) // (4 * self.workers)))
        return [pickle.loads(result) for result in results]

    def run_async(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> AsyncResult | None:
        """Call ``fn`` on every item in the background for its side effects (e.g. filling a cache); None when
        there are no workers (nothing runs)."""
        if self._pool is None:
            return None
        items = list(items)
        return self._pool.starmap_async(_discard, [(fn, item) for item in items],
                                        chunksize=max(1, len(items) // (8 * self.workers)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

