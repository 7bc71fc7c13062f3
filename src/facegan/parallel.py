"""Per-image work over a process pool, in input order, with a progress bar.

Workers come from a fork server, not from forking the caller: a process that has already run a
multi-threaded library (dlib's CNN detector, OpenMP/BLAS) can hold locks that a plain fork copies
locked into the child, which then waits forever (seen: `cnn` detection at 1 worker, then 2 workers in
one process hung at 0% CPU). The fork server imports the per-image stages' modules once (no model
is loaded, no thread started), so a worker starts without importing them again.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm.auto import tqdm

PRELOAD = ["numpy", "cv2", "PIL.Image", "dlib", "facegan.preprocess.detect", "facegan.preprocess.verify",
           "facegan.preprocess.align", "facegan.preprocess.matte", "facegan.preprocess.upscale",
           "facegan.preprocess.quality", "facegan.data.cartoon"]

T = TypeVar("T")
R = TypeVar("R")


def _one_thread_each() -> None:
    """Pool workers share the cores: one thread each for OpenCV, torch and onnxruntime (OMP_NUM_THREADS is read
    when those are first imported in the worker) instead of each worker starting one thread per core."""
    import os

    os.environ["OMP_NUM_THREADS"] = "1"
    import cv2

    cv2.setNumThreads(1)


def map_items(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str) -> list[R]:
    """`[fn(x) for x in items]`, on `workers` processes when > 1; results keep the input order.

    `fn` must be picklable (a module-level function or a functools.partial of one).
    """
    bar = tqdm(total=len(items), desc=desc, unit="img", dynamic_ncols=True, mininterval=0.5)
    try:
        if workers <= 1 or len(items) < 2:
            out = []
            for x in items:
                out.append(fn(x))
                bar.update()
            return out
        chunk = max(1, min(32, len(items) // (workers * 8)))
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)  # read when the server starts (once per process)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_one_thread_each) as pool:
            out = []
            for r in pool.map(fn, items, chunksize=chunk):
                out.append(r)
                bar.update()
            return out
    finally:
        bar.close()
