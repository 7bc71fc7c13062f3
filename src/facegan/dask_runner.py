"""`orchestration.runner: dask`: per-image work as chunked Prefect tasks on a Dask cluster (prefect-dask).

Each `DaskPool.map` is one Prefect flow run whose task runner is a `DaskTaskRunner`: on the scheduler at
`orchestration.dask.address`, or on a LocalCluster of `dask.local_workers` processes started for it and
closed after it. Chunks of `chunk_size` images are tasks; their results come back in submission order, so
manifests are in source order and byte-identical to a local run. A worker that dies takes its unfinished chunks
with it (finished ones are fetched and released as they finish: none of those is redone); Dask's scheduler gives
them to the remaining workers or to the worker its nanny restarts (a chunk rewrites the same files, so a half-done
one is harmless); a LocalCluster's nannies restart its workers for as long as the map runs. Chunks whose workers
die on every try (Dask's `allowed-failures`) fail the map with one error naming their images, and so do a cluster
left without a running worker for `dask.workers_timeout_s` and a lost connection to the scheduler. Heavy models
load once per worker process (facegan.preprocess.models.Lazy).
A failed chunk stops the map: its other chunks see the map's stop event (a `distributed.Event`) before their next
image and end, and the error is raised once all of them have (or after STOP_TIMEOUT_S, with a warning), so
nothing writes into the stage's output folder after the stage has failed and removed it (without a worker or a
scheduler, at once: nothing runs them). The error is the one
line the caller prints: Prefect's tracebacks of the failed task and flow runs go to the Prefect API (its UI), not
to this terminal.

Workers must import this facegan and read/write the data folder at the same absolute path (a shared or
network file system on a real cluster). Imported only when the dask runner is chosen.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # busy machines start it slowly
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # here and in the workers: no per-connection chatter

from distributed import Event, KilledWorker, LocalCluster
from distributed.client import FutureCancelledError
from distributed.deploy.cluster import Cluster
from prefect import Flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from facegan.config import DaskConfig, OrchestrationConfig, ParamsError
from facegan.errors import StageError
from facegan.parallel import WORKER_DEATH, auto_chunk, progress

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

STOP_CHECK_S = 0.1  # a running chunk asks the scheduler whether its map has stopped at most this often
WORKERS_CHECK_S = 2.0  # a map waiting for its chunks asks the scheduler how many workers it has at most this often
GIVEN_UP_TOGETHER_S = 1.0  # Dask gives up on the chunks one death took in one go: their errors arrive this close
STOP_TIMEOUT_S = 120.0  # how long a failed map waits for its other chunks to stop (each ends after its current image)
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


@task(task_run_name="{desc}[{start}:{stop}]", cache_policy=NO_CACHE, persist_result=False)
def run_chunk(
    fn: Callable[[T], R], items: list[T], desc: str, start: int, stop: int, halt: str, quiet: bool
) -> list[R] | None:
    """One task: `fn` over a contiguous slice of the stage's images, in order; None when the map stopped (its event
    `halt` set: another chunk failed) before this chunk was done. `quiet`: a worker of the LocalCluster started for
    this map, whose stderr is the caller's: Prefect's run-error tracebacks stay off it."""
    if quiet:
        quiet_run_errors()
    event, asked, out = Event(halt), -math.inf, []
    for x in items:
        if time.monotonic() - asked >= STOP_CHECK_S:  # always before the first image
            if event.is_set():
                return None
            asked = time.monotonic()
        out.append(fn(x))
    return out


class _NoRunErrors(logging.Filter):
    """Drops Prefect's ERROR records of failed flow and task runs (their tracebacks): the caller raises the error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name in RUN_LOGGERS)


NO_RUN_ERRORS = _NoRunErrors()


def quiet_run_errors() -> None:
    """Keep Prefect's run-error records off this process's console handlers (its API handler, for the UI, keeps
    them: it hangs on the run loggers themselves, not on the root logger)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(NO_RUN_ERRORS)  # once: addFilter skips a filter the handler has


_quiet_maps = 0  # maps running in this process (`facegan serve` may run two at once): the last one removes the filter
_quiet_lock = threading.Lock()


@contextmanager
def run_errors_quiet() -> Iterator[None]:
    """Prefect's run-error tracebacks off this process's console while the block runs: a failed stage says its
    error in one line (the FaceganError's), not three tracebacks before it."""
    global _quiet_maps
    with _quiet_lock:
        _quiet_maps += 1
        quiet_run_errors()
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_maps -= 1
            if not _quiet_maps:
                for handler in logging.getLogger().handlers:
                    handler.removeFilter(NO_RUN_ERRORS)


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


def default_client_address() -> str | None:
    """The scheduler of this process's default Dask client (a notebook's `Client()`) outside Dask workers, or None."""
    from distributed import Client, get_worker

    try:
        get_worker()
        return None  # a task on a Dask worker: its own cluster is the one to use
    except ValueError:
        pass
    try:
        return Client.current(allow_global=True).scheduler.address
    except ValueError:  # no client
        return None


def check_default_client(cfg: OrchestrationConfig) -> None:
    """prefect-dask's runner sends the work to this process's default Dask client whatever it is given: a notebook's
    `Client()` would take the stage meant for dask.address or for a LocalCluster. One error instead, before any
    work, unless the default client is the scheduler at dask.address."""
    found = default_client_address()
    if found is None:
        return
    if cfg.dask.address:
        from distributed.comm import resolve_address

        if resolve_address(cfg.dask.address) == resolve_address(found):
            return
        meant = f"the scheduler at orchestration.dask.address {cfg.dask.address}"
    else:
        meant = f"a LocalCluster of dask.local_workers ({cfg.dask.local_workers}) processes (address: null)"
    raise ParamsError(
        f"this process has a default Dask client of the scheduler at {found}, which prefect-dask would use instead "
        f"of {meant}; close that client, make it with Client(..., set_as_default=False), or set "
        f"orchestration.dask.address: {found} to run the stage there"
    )


class KeptNanniesCluster(LocalCluster):
    """A LocalCluster whose nannies restart their workers for as long as it runs (a restart that fails leaves its
    nanny without a worker: WorkerWatch notices).

    Dask's SpecCluster closes a worker's nanny for good when no worker of its name is registered
    `distributed.deploy.lost-worker-timeout` (15 s) after one died: meant for clusters whose worker jobs vanish. A
    worker that died again while its nanny was restarting it, or whose restart took over 15 s on a busy machine,
    lost its nanny that way: a LocalCluster of one worker was left with none, and the map waited for ever."""

    def _update_worker_status(self, op: str, msg: Any) -> None:
        Cluster._update_worker_status(self, op, msg)  # SpecCluster's adds only that timer to it


def task_runner(cfg: OrchestrationConfig) -> DaskTaskRunner:
    """The scheduler at dask.address, or a LocalCluster of dask.local_workers processes for one flow run."""
    if cfg.dask.address:
        check_scheduler(cfg.dask.address)
    check_default_client(cfg)
    if cfg.dask.address:
        return DaskTaskRunner(address=cfg.dask.address)
    return DaskTaskRunner(
        cluster_class=KeptNanniesCluster,
        cluster_kwargs={
            "n_workers": cfg.dask.local_workers,
            "processes": True,
            "threads_per_worker": cfg.dask.threads_per_worker,
            "dashboard_address": None,
        },
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


def _client() -> Any:
    """The Dask client of this flow run's task runner (Prefect runs a copy of the runner: not `task_runner()`'s)."""
    context = FlowRunContext.get()
    assert context is not None, "called outside the per-image flow"
    runner: Any = context.task_runner  # a DaskTaskRunner (Prefect's type says TaskRunner)
    return runner.client


def _workers(client: Any, status: str | None = None) -> int:
    """The scheduler's workers (with that status only: "running" leaves out those paused for memory)."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return sum(status is None or w.get("status") == status for w in workers)


def wait_for_a_worker(client: Any, cfg: DaskConfig) -> None:
    """A scheduler without workers would hold the stage's chunks for ever: wait workers_timeout_s for one, then fail."""
    if _workers(client):
        return
    log.info("%s: no Dask worker yet; waiting up to %g s for one", cfg.address, cfg.workers_timeout_s)
    try:
        client.wait_for_workers(1, timeout=cfg.workers_timeout_s)
    except TimeoutError:
        raise ParamsError(
            f"orchestration.dask.address {cfg.address}: the Dask scheduler has no workers (waited "
            f"{cfg.workers_timeout_s:g} s); start one on each machine: `dask worker {cfg.address}`"
        ) from None


class NoWorkers(StageError):
    """The map's cluster has had no running worker for `dask.workers_timeout_s`; `paused`: its paused workers."""

    def __init__(self, message: str, paused: int):
        super().__init__(message)
        self.paused = paused


class SchedulerLost(StageError):
    """The connection to the Dask scheduler is lost: nothing can be asked of it, not even to stop the chunks."""


class WorkerWatch:
    """Raises NoWorkers once the map's cluster has had no running worker for `dask.workers_timeout_s` (its chunks
    would wait for ever); asks the scheduler at most every WORKERS_CHECK_S."""

    def __init__(self, client: Any, cfg: DaskConfig, desc: str, total: int):
        self.client, self.cfg, self.desc, self.total = client, cfg, desc, total
        self.asked = -math.inf
        self.none_since: float | None = None

    def check(self, done: int) -> None:
        now = time.monotonic()
        if now - self.asked < WORKERS_CHECK_S:
            return
        self.asked = now
        if _workers(self.client, "running"):
            self.saw_work()
            return
        if self.none_since is None:
            self.none_since = now
        if now - self.none_since < self.cfg.workers_timeout_s:
            return
        again = (
            f"start workers again (`dask worker {self.cfg.address}` on each machine) and run it again"
            if self.cfg.address
            else run_again(self.cfg)
        )
        raise NoWorkers(
            f"{self.desc}: the Dask cluster has had no running worker for {self.cfg.workers_timeout_s:g} s, with "
            f"{done} of {self.total} images done: its workers died ({WORKER_DEATH}), left, or paused for lack of "
            f"memory, and none came back; {again}",
            _workers(self.client, "paused"),
        )

    def saw_work(self) -> None:
        """A worker is running (or has just finished a chunk): the clock of `workers_timeout_s` starts again."""
        self.none_since = None


def run_again(cfg: DaskConfig) -> str:
    """The advice after workers died: how to give each more memory."""
    memory = "more memory per worker" if cfg.address else "fewer dask.local_workers"
    return f"run it again, with {memory} if memory ran out"


def images(start: int, stop: int) -> str:
    """Images start:stop of a map, as a user counts them."""
    return f"images {start + 1}-{stop}" if stop - start > 1 else f"image {stop}"


def killed_workers(desc: str, chunks: list[tuple[int, int]], total: int, cfg: DaskConfig) -> StageError:
    """Dask's KilledWorker for these chunks (start, stop) of the map's images: a worker died every time one of them
    was there, running or waiting its turn (Dask's `distributed.scheduler.allowed-failures` + 1 times), so the image
    that kills it is in one of them, not necessarily in each."""
    where = " and ".join(images(a, b) for a, b in chunks)
    them, their = ("it", "its") if sum(b - a for a, b in chunks) == 1 else ("them", "their")
    return StageError(
        f"{desc}: Dask gave up on {where} of {total}: the workers holding {them} (running, or waiting {their} turn) "
        f"died on every try ({WORKER_DEATH}); {run_again(cfg)}"
    )


def killed(future: Any) -> bool:
    """A chunk's future that Dask gave up on (KilledWorker)."""
    dask_future = future.wrapped_future
    return dask_future.status == "error" and isinstance(dask_future.exception(), KilledWorker)


def chunk_result(future: Any, watch: WorkerWatch, done: int) -> Any:
    """A finished chunk's result, fetched in a thread of its own while the cluster is watched: its worker may die
    before the fetch ends (the result goes with it, and the scheduler has the chunk redone if it has a worker left),
    and a worker busy in native code that holds the GIL answers late (waited for: its result is there)."""
    fetch = threading.Thread(target=future.wait, name="facegan-fetch", daemon=True)  # stores the chunk's final state
    fetch.start()
    fetch.join(WORKERS_CHECK_S)
    while fetch.is_alive():
        if future.wrapped_future.status != "finished":
            watch.check(done)
        fetch.join(WORKERS_CHECK_S)
    return future.result()  # the state the fetch stored, or the chunk's error (not swallowed here)


def gather(
    futures: dict[tuple[int, int], Any], done: dict[tuple[int, int], list], total: int, desc: str, watch: WorkerWatch
) -> None:
    """Fill `done` (a chunk's (start, stop): its results) as the chunks finish, each fetched as soon as it has and
    then released: the scheduler forgets it (a worker that died later would take it along, to be redone). A failed
    chunk raises its error; Dask's own failures are one StageError naming the images."""
    by_id = {id(f): chunk for chunk, f in futures.items()}
    finished: queue.Queue = queue.Queue()
    for future in futures.values():
        future.add_done_callback(finished.put)
    bar = progress(total, desc)
    try:
        while len(done) < len(futures):
            try:
                future = finished.get(timeout=WORKERS_CHECK_S)
            except queue.Empty:
                watch.check(bar.n)
                continue
            chunk = by_id[id(future)]
            try:
                out = chunk_result(future, watch, bar.n)  # a failed chunk stops the stage with its error
            except KilledWorker:  # its own message names a Dask key, not the images
                given_up = {chunk} | {by_id[id(f)] for f in arriving(finished, GIVEN_UP_TOGETHER_S) if killed(f)}
                raise killed_workers(desc, sorted(given_up), total, watch.cfg) from None
            except FutureCancelledError as e:
                if e.reason == "scheduler-connection-lost":
                    check = (
                        f"at {watch.cfg.address}: check that it still runs"
                        if watch.cfg.address
                        else "(in this process)"
                    )
                    raise SchedulerLost(
                        f"{desc}: lost the connection to the Dask scheduler {check}, with {bar.n} of {total} images "
                        "done; run it again"
                    ) from None
                raise StageError(
                    f"{desc}: Dask cancelled {images(*chunk)} of {total} ({e.reason}): run it again"
                ) from None
            assert out is not None, "a chunk stopped while its map went on"  # only stop_chunks sets `halt`
            done[chunk] = out
            future.wrapped_future.release()
            watch.saw_work()
            bar.update(len(out))
    finally:
        bar.close()


def arriving(finished: queue.Queue, seconds: float) -> list[Any]:
    """The futures that finish within `seconds` (those already in `finished` among them)."""
    out, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(finished.get(timeout=left))
        except queue.Empty:
            break
    return out


class DaskPool:
    """Maps a function over items as chunked Prefect tasks on a Dask cluster; results in input order."""

    def __init__(self, cfg: OrchestrationConfig):
        self.cfg = cfg

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str) -> list[R]:
        if not items:
            return []
        runner = task_runner(self.cfg)
        log.info(
            "%s: %d images as Prefect tasks on %s",
            desc,
            len(items),
            self.cfg.dask.address or f"a LocalCluster of {self.cfg.dask.local_workers} worker processes",
        )
        per_image = Flow(
            map_flow,
            name=f"facegan-{desc}",
            task_runner=runner,  # type: ignore[arg-type]  # prefect-dask's is typed against an older TaskRunner generic
            log_prints=False,
            persist_result=False,
        )
        token = uuid.uuid4().hex
        MAPS[token] = Map(self.cfg, fn, items, desc)
        try:
            with run_errors_quiet(), temporary_settings(updates={PREFECT_API_URL: api_url()}):  # sent to the workers
                return per_image(token)
        finally:
            del MAPS[token]


@dataclass(frozen=True)
class Map:
    """What one DaskPool.map works on."""

    cfg: OrchestrationConfig
    fn: Callable
    items: Sequence
    desc: str


MAPS: dict[str, Map] = {}  # the maps running in this process, by the token their flow run is given


def map_flow(token: str) -> list[Any]:
    """One DaskPool.map's flow run: its chunks as tasks, their results in order. It gets its work by token, not from
    a closure: Prefect sends the flow with every chunk (in the flow run's context), and a closure over the items made
    every chunk carry all of them (855 kB a chunk at 20 000 paths: quadratic in the set)."""
    m = MAPS[token]
    dask, total = m.cfg.dask, len(m.items)
    quiet_run_errors()  # here: Prefect has set up this process's logging by now
    client = _client()
    if dask.address:
        wait_for_a_worker(client, dask)
    size = auto_chunk(total, max(1, _workers(client)), m.cfg.chunk_size)
    halt = Event(f"facegan-{m.desc}-{token}", client=client)  # set: every chunk of this map stops
    futures = {}
    done: dict[tuple[int, int], list] = {}
    try:
        # Each task carries the caller's Prefect context to its worker. Inside a task of another flow
        # (pipelines/flows.py: stage task -> this subflow) that context names the outer task, whose module
        # the workers cannot import; the chunks need none of it.
        outer = TaskRunContext.__var__.set(None)  # type: ignore[arg-type]  # "no task" is what the var holds outside tasks
        try:
            for start in range(0, total, size):
                stop = min(start + size, total)
                futures[start, stop] = run_chunk.submit(
                    m.fn, list(m.items[start:stop]), m.desc, start, stop, halt.name, not dask.address
                )
        finally:
            TaskRunContext.__var__.reset(outer)
        gather(futures, done, total, m.desc, WorkerWatch(client, dask, m.desc, total))
    except SchedulerLost:
        raise  # no scheduler to tell the chunks to stop: its workers drop them when they lose it too
    except BaseException as e:
        left = {f"{m.desc}[{a}:{b}]": f for (a, b), f in futures.items() if (a, b) not in done}
        nothing_runs = isinstance(e, NoWorkers) and not e.paused  # paused workers go on with their current chunk
        stop_chunks(halt, left, 0.0 if nothing_runs else None)
        raise
    return [r for chunk in sorted(done) for r in done[chunk]]


def stop_chunks(halt: Event, futures: dict[str, Any], timeout: float | None = None) -> None:
    """After a failed chunk: stop the map's other chunks (`futures` by their names; pending ones end at once, running
    ones after their current image) and wait until they have, so that none writes into the output folder the failed
    stage removes. At most `timeout` (STOP_TIMEOUT_S) in all: a chunk on a worker that hangs would hold it for ever.
    Chunks still running then are named in a warning and the event stays set, so they stop when they next look.
    `timeout` 0: the event is set and nothing waited for (a cluster without workers: a chunk stops before its next
    image if it ever runs again)."""
    timeout = STOP_TIMEOUT_S if timeout is None else timeout
    try:
        halt.set()
        if not timeout:
            return
        deadline = time.monotonic() + timeout
        for future in futures.values():
            future.wait(max(0.0, deadline - time.monotonic()))  # its own error, if any, is not the one to report
        running = [name for name, f in futures.items() if not f.wrapped_future.done()]
        if running:
            log.warning(
                "%d chunk(s) of the failed map did not stop within %g s: %s; they stop "
                "before their next image if they ever run, and the stage's output folder may get files from them",
                len(running),
                timeout,
                ", ".join(running[:5]) + (", ..." if len(running) > 5 else ""),
            )
            return
        halt.clear()  # the scheduler forgets the event
    except Exception as e:  # noqa: BLE001 - the stage's own error is the one to raise
        log.warning("could not stop the other chunks (%s: %s); some may still be running", type(e).__name__, e)
