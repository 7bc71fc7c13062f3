"""Per-image work over a pool of processes (or any `Pool`, e.g. the Dask runner's: facegan.runners picks one),
in input order, with a progress bar.

Local workers come from a fork server, not from forking the caller: a process that has already run a
multi-threaded library (dlib's CNN detector, OpenMP/BLAS) can hold locks that a plain fork copies
locked into the child, which then waits forever (seen: `cnn` detection at 1 worker, then 2 workers in
one process hung at 0% CPU). The fork server imports the per-image stages' modules once (no model
is loaded, no thread started), so a worker starts without importing them again.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Protocol, TypeVar

from tqdm.auto import tqdm

from facegan.errors import StageError

if TYPE_CHECKING:
    pass

PRELOAD = [
    "numpy",
    "cv2",
    "PIL.Image",
    "dlib",
    "facegan.preprocess.detect",
    "facegan.preprocess.verify",
    "facegan.preprocess.align",
    "facegan.preprocess.matte",
    "facegan.preprocess.upscale",
    "facegan.preprocess.quality",
    "facegan.data.cartoon",
]
MAX_AUTO_CHUNK = 32
WORKER_DEATH = "killed, most often for memory, or a crash in a native library"  # what kills a worker process

T = TypeVar("T")
R = TypeVar("R")


def one_thread_each() -> None:
    """Pool workers share the cores: one thread each for OpenCV, torch and onnxruntime (OMP_NUM_THREADS is read
    when those are first imported in the worker) instead of each worker starting one thread per core."""
    import os

    os.environ["OMP_NUM_THREADS"] = "1"
    import cv2

    cv2.setNumThreads(1)


class Pool(Protocol):
    """Somewhere other than this process's local pool that maps a function over items, keeping their order."""

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str) -> list[R]: ...


def auto_chunk(n: int, workers: int, chunk_size: int = 0) -> int:
    """Images per task: `chunk_size` when set, else about 8 tasks per worker, at most MAX_AUTO_CHUNK images each."""
    return chunk_size or max(1, min(MAX_AUTO_CHUNK, n // (max(1, workers) * 8)))


def progress(total: int, desc: str, unit: str = "img") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5)


def map_items(fn: Callable[[T], R], items: Sequence[T], workers: int | Pool, desc: str) -> list[R]:
    """`[fn(x) for x in items]` on `workers` local processes (an int) or on a Pool; results keep the input order.

    `fn` must be picklable (a module-level function or a functools.partial of one).
    """
    return (LocalPool(workers) if isinstance(workers, int) else workers).map(fn, items, desc)


class LocalPool:
    """`workers` processes of this machine (in this process when 1)."""

    def __init__(self, workers: int, chunk_size: int = 0):
        self.workers, self.chunk_size = workers, chunk_size

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str) -> list[R]:
        bar = progress(len(items), desc)
        try:
            if self.workers <= 1 or len(items) < 2:
                out = []
                for x in items:
                    out.append(fn(x))
                    bar.update()
                return out
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)  # read when the server starts (once per process)
            with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=one_thread_each) as pool:
                out = []
                try:
                    for r in pool.map(fn, items, chunksize=auto_chunk(len(items), self.workers, self.chunk_size)):
                        out.append(r)
                        bar.update()
                except BrokenProcessPool:  # its own message names no item and no cause
                    raise StageError(
                        f"{desc}: a worker process died ({WORKER_DEATH}) at or after item {len(out) + 1} of "
                        f"{len(items)}: run it again, with fewer workers if memory ran out"
                    ) from None
                return out
        finally:
            bar.close()
