"""`orchestration.runner: dask`: per-image work as chunked Prefect tasks on a Dask cluster (prefect-dask).

Each `DaskPool.map` is one Prefect flow run whose task runner is a `DaskTaskRunner`: on the scheduler at
`orchestration.dask.address`, or on a LocalCluster of `dask.local_workers` processes started for it and
closed after it. Chunks of `chunk_size` images are tasks; their results come back in submission order, so
manifests are in source order and byte-identical to a local run. A worker that dies takes its running
chunks with it; Dask's scheduler gives them to the remaining workers (a chunk rewrites the same files, so
a half-done one is harmless). Heavy models load once per worker process (facegan.preprocess.models.Lazy).

Workers must import this facegan and read/write the data folder at the same absolute path (a shared or
network file system on a real cluster). Imported only when the dask runner is chosen.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # busy machines start it slowly
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # here and in the workers: no per-connection chatter

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import as_completed
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from facegan.config import OrchestrationConfig, ParamsError
from facegan.parallel import auto_chunk, progress

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@task(task_run_name="{desc}[{start}:{stop}]", cache_policy=NO_CACHE, persist_result=False)
def run_chunk(fn: Callable[[T], R], items: list[T], desc: str, start: int, stop: int) -> list[R]:
    """One task: `fn` over a contiguous slice of the stage's images, in order."""
    return [fn(x) for x in items]


def check_scheduler(address: str, timeout: float = 10) -> None:
    """Fail in one line, before any flow starts, when nothing listens at `address` (tcp://host:port)."""
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 8786), timeout=timeout):
            pass
    except OSError as e:
        raise ParamsError(
            f"orchestration.dask.address {address}: no Dask scheduler answers ({e}); start one "
            f"(`dask scheduler`, then `dask worker {address}` on each machine) or set address: null "
            "for a LocalCluster of dask.local_workers processes"
        ) from None


def task_runner(cfg: OrchestrationConfig) -> DaskTaskRunner:
    """The scheduler at dask.address, or a LocalCluster of dask.local_workers processes for one flow run."""
    if cfg.dask.address:
        check_scheduler(cfg.dask.address)
        return DaskTaskRunner(address=cfg.dask.address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": cfg.dask.local_workers,
            "processes": True,
            "threads_per_worker": cfg.dask.threads_per_worker,
            "dashboard_address": None,
        }
    )


def api_url() -> str:
    """The Prefect API the flow and every worker report to: PREFECT_API_URL, else the temporary local server
    Prefect itself would start (started here, so that workers join it instead of each starting their own)."""
    url = PREFECT_API_URL.value()
    if url:
        return url
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # one per process: the one Prefect's client uses
    server.start()
    return server.api_url


def _workers() -> int:
    """Workers of the cluster this flow run's task runner is connected to (Prefect runs a copy of the runner)."""
    context = FlowRunContext.get()
    assert context is not None, "called outside the per-image flow"
    runner: Any = context.task_runner  # a DaskTaskRunner (Prefect's type says TaskRunner)
    return max(1, len(runner.client.scheduler_info(n_workers=-1)["workers"]))


class DaskPool:
    """Maps a function over items as chunked Prefect tasks on a Dask cluster; results in input order."""

    def __init__(self, cfg: OrchestrationConfig):
        self.cfg = cfg

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str) -> list[R]:
        if not items:
            return []
        runner = task_runner(self.cfg)

        # prefect-dask's runner is typed against an older TaskRunner generic: the ignore is that stub mismatch only
        @flow(name=f"facegan-{desc}", task_runner=runner, log_prints=False, persist_result=False)  # type: ignore[arg-type]
        def per_image() -> list[Any]:
            size = auto_chunk(len(items), _workers(), self.cfg.chunk_size)
            futures = {}
            # Each task carries the caller's Prefect context to its worker. Inside a task of another flow
            # (pipelines/flows.py: stage task -> this subflow) that context names the outer task, whose module
            # the workers cannot import; the chunks need none of it.
            outer = TaskRunContext.__var__.set(None)  # type: ignore[arg-type]  # "no task" is what the var holds outside tasks
            try:
                for start in range(0, len(items), size):
                    chunk = list(items[start : start + size])
                    futures[start] = run_chunk.submit(fn, chunk, desc, start, start + len(chunk))
            finally:
                TaskRunContext.__var__.reset(outer)
            done: dict[int, list] = {}
            starts = {id(f): start for start, f in futures.items()}
            bar = progress(len(items), desc)
            try:
                for future in as_completed(list(futures.values())):
                    done[starts[id(future)]] = future.result()  # a failed chunk stops the stage with its error
                    bar.update(len(done[starts[id(future)]]))
            finally:
                bar.close()
            return [r for start in sorted(done) for r in done[start]]

        log.info(
            "%s: %d images as Prefect tasks on %s",
            desc,
            len(items),
            self.cfg.dask.address or f"a LocalCluster of {self.cfg.dask.local_workers} worker processes",
        )
        with temporary_settings(updates={PREFECT_API_URL: api_url()}):  # sent to the workers with each task
            return per_image()
