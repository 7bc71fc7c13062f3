"""`orchestration.runner: dask`: per-image stages as chunked Prefect tasks on real Dask clusters on 127.0.0.1
(a LocalCluster started for the run, and a separately started `dask scheduler` + `dask worker`); outputs
byte-identical to the local run, models loaded once per worker, a killed worker's chunks redone elsewhere."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ROOT, free_port, logs_of
from facegan.chain import Layout, run_stage
from facegan.config import AlignConfig, DetectConfig, parse_params
from facegan.manifest import read_manifest
from facegan.preprocess import detect
from facegan.preprocess.align import run_align
from facegan.preprocess.detect import AnnotationDetector, run_detect

TESTS = Path(__file__).resolve().parent
os.environ.setdefault(
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"
)  # Prefect's temporary server, busy cores


@pytest.fixture(scope="module", autouse=True)
def prefect_server_stopped_at_the_end():
    """The runner starts Prefect's temporary API server in this process; stop it while pytest still shows logs.
    The flow runs' last logs are sent first: sent at exit, to a stopped server, they held the exit for 70 s."""
    yield
    import logging

    from prefect.server.api.server import SubprocessASGIServer

    for handler in logging.getLogger("prefect.flow_runs").handlers:
        handler.flush()  # the API log handler's: sends what it holds, and waits

    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()


def dask_params(base, **orchestration):
    raw = base.model_dump(mode="json")
    raw["orchestration"] = {"runner": "dask", **orchestration}
    return parse_params(raw)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_local_cluster_of_two_processes_gives_the_local_runs_bytes(layout, tiny_params_obj, tmp_path):
    """detect (its own map), matte (the shared per-image path) and quality (map + dedupe) on a LocalCluster of 2
    worker processes started for each stage, 3 images a task, over a copy of the local run's data."""
    shutil.copytree(layout.root / "data", tmp_path / "data")
    at = Layout(tmp_path, layout.dataset)
    p = dask_params(tiny_params_obj, chunk_size=3, dask={"local_workers": 2})
    for stage in ("detect", "matte", "quality"):
        shutil.rmtree(at.interim(stage))
        run_stage(stage, "cartoon", p, tmp_path)
        local, remote = tree(layout.interim(stage)), tree(at.interim(stage))
        assert sorted(remote) == sorted(local), stage
        differ = [name for name in local if local[name] != remote[name]]
        assert differ == [], f"{stage}: {differ[:5]} differ from the local run"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` and `dask worker` (2 worker processes, 1 thread each) started as separate commands."""
    log_dir = tmp_path_factory.mktemp("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "DASK_LOGGING__DISTRIBUTED": "warning",
    }
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                env=env,
                stdout=(log_dir / "scheduler.log").open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "dask"),
                    "worker",
                    address,
                    "--nworkers",
                    "2",
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--local-directory",
                    str(log_dir),
                ],
                env=env,
                stdout=(log_dir / "worker.log").open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        from distributed import Client

        # not the process's default client: the runner refuses one that is not the scheduler at dask.address
        client = Client(address, timeout=120, set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        yield address, client
        client.close()
    finally:
        for proc in procs[::-1]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)


def test_separate_scheduler_and_workers_load_the_model_once_per_worker(cluster, layout, tiny_params_obj, tmp_path):
    """dlib's 68-point model (95 MB) is read once per worker process however many chunks each one runs."""
    address, client = cluster
    p = dask_params(tiny_params_obj, chunk_size=1, dask={"address": address})
    cfg = AlignConfig(backend="dlib68", size=64)
    src = layout.interim("verify")
    local = run_align(cfg, layout.raw, src, tmp_path / "local", workers=1)
    before = client.run(_loads)
    remote = run_align(cfg, layout.raw, src, tmp_path / "remote", workers=_pool(p))
    assert remote == local and tree(tmp_path / "remote") == tree(tmp_path / "local")
    loads = {w: n.get("DlibShapes", 0) - before[w].get("DlibShapes", 0) for w, n in client.run(_loads).items()}
    chunks = sum(r.status == "ok" for r in read_manifest(src))
    assert chunks > len(loads) == 2 and set(loads.values()) <= {0, 1} and sum(loads.values()) >= 1, loads


def _loads() -> dict[str, int]:
    from facegan.preprocess.models import LOADS

    return dict(LOADS)


def _pool(p):
    from facegan.runners import make_pool

    return make_pool(p.orchestration, p.workers)


class SlowAnnotations(AnnotationDetector):
    """The annotations detector at a photo's pace, so a worker can be killed in the middle of the stage."""

    def __call__(self, image, key):
        time.sleep(0.4)
        return super().__call__(image, key)


def _started(work: Callable[[], object]) -> tuple[threading.Thread, dict]:
    """`work` in a thread of its own (the old code never returned); its dict gets {"out": what it returned} or
    {"error": what it raised}, and stays empty while it runs."""
    result: dict = {}

    def run() -> None:
        try:
            result["out"] = work()
        except BaseException as e:  # noqa: BLE001 - the caller's assertions show it
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _ran(work: Callable[[], object], timeout: float) -> dict:
    """_started's dict once `work` has returned, or after `timeout` (empty: a hang)."""
    thread, result = _started(work)
    thread.join(timeout=timeout)
    return result


def _slow(cfg: DetectConfig, raw: Path) -> AnnotationDetector:
    from facegan.preprocess.models import Annotations

    return SlowAnnotations(Annotations(raw / cfg.annotations))


def test_a_killed_worker_s_chunks_are_redone_and_every_image_is_accounted_for(
    cluster, layout, tiny_params_obj, tmp_path, monkeypatch
):
    address, client = cluster
    cfg = tiny_params_obj.dataset("cartoon").detect
    monkeypatch.setitem(detect.DETECTORS, "annotations", _slow)
    p = dask_params(tiny_params_obj, chunk_size=2, dask={"address": address})
    pids = client.run(os.getpid)
    thread, result = _started(lambda: run_detect(cfg, layout.raw, tmp_path / "detect", workers=_pool(p)))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.glob(".detect.*/*.png"))) < 2:
        time.sleep(0.05)  # the first crops are written: both workers are busy with their chunks
    address_of = {pid: addr for addr, pid in pids.items()}
    victim = min(pids.values())
    assert client.processing()[address_of[victim]], "the worker to kill has a chunk in hand"
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert "error" not in result, result.get("error")
    assert [(r.source, r.file, r.status) for r in result["out"]] == [
        (r.source, r.file, r.status) for r in read_manifest(layout.interim("detect"))
    ]
    assert tree(tmp_path / "detect") == {
        k: v for k, v in tree(layout.interim("detect")).items() if k != "contact_sheet.png"
    }
    client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed worker
    assert victim not in client.run(os.getpid).values()


class FailingAnnotations(SlowAnnotations):
    """The slow annotations detector, with a bug on one image (a StageError: guarded() turns it into one)."""

    def __call__(self, image, key):
        if key == "000003.png":
            time.sleep(0.4)
            raise RuntimeError("a bug in the detector")
        return super().__call__(image, key)


def _failing(cfg: DetectConfig, raw: Path) -> AnnotationDetector:
    from facegan.preprocess.models import Annotations

    return FailingAnnotations(Annotations(raw / cfg.annotations))


def test_a_failed_stage_stops_its_other_chunks_before_it_reports_the_error(
    cluster, layout, tiny_params_obj, tmp_path, monkeypatch
):
    """The first failed chunk used to stop the stage at once while the others ran on: they wrote crops into the
    temporary output folder after the failed stage had removed it (it reappeared beside dst) and kept the cluster
    busy. Now every chunk of the map has stopped (pending ones at once, running ones after their current image)
    when the error is raised: the cluster is idle and nothing is written afterwards."""
    from facegan.errors import StageError

    address, client = cluster
    cfg = tiny_params_obj.dataset("cartoon").detect
    monkeypatch.setitem(detect.DETECTORS, "annotations", _failing)
    p = dask_params(tiny_params_obj, chunk_size=3, dask={"address": address})  # chunk 0: 1.2 s of images
    with pytest.raises(StageError, match=r"stage 'detect' failed on '000003.png': RuntimeError: a bug in the detector"):
        run_detect(cfg, layout.raw, tmp_path / "detect", workers=_pool(p))
    busy = {w: list(keys) for w, keys in client.processing().items() if keys}
    time.sleep(2.5)  # longer than any chunk's work
    left = [str(q.relative_to(tmp_path)) for q in tmp_path.rglob("*") if q.name != ".detect.lock"]
    assert busy == {} and left == [], (busy, left)


class _Halt:
    """distributed.Event's set/clear, recorded."""

    def __init__(self):
        self.calls: list[str] = []

    def set(self):
        self.calls.append("set")

    def clear(self):
        self.calls.append("clear")


class _Chunk:
    """A PrefectDaskFuture's wait/wrapped_future over a concurrent future (wait returns at its timeout, as
    prefect-dask's does, without raising)."""

    def __init__(self, done: bool):
        import concurrent.futures

        self.wrapped_future: concurrent.futures.Future = concurrent.futures.Future()
        if done:
            self.wrapped_future.set_result(None)

    def wait(self, timeout=None):
        import concurrent.futures

        with contextlib.suppress(concurrent.futures.TimeoutError):
            self.wrapped_future.result(timeout=timeout)


def test_stopping_a_failed_map_waits_a_bounded_time_for_chunks_that_never_end(caplog):
    """A chunk that never ends (a worker hung in native code) held the failed stage without a limit. Now it waits
    `timeout` in all, warns, and leaves the stop event set so that such a chunk stops before its next image if it
    ever gets there (clearing it would let it go on writing). Timeout 0 (a cluster without workers, where nothing
    runs them): the event is set, and nothing waited for or warned."""
    import logging

    from facegan.dask_runner import stop_chunks  # imports Prefect, whose logging set-up drops caplog's root handler

    halt, chunks = _Halt(), {"x[0:3]": _Chunk(done=True), "x[3:6]": _Chunk(done=False), "x[6:9]": _Chunk(done=False)}
    t0 = time.monotonic()
    with logs_of(caplog, "facegan.dask_runner", logging.WARNING):
        stop_chunks(halt, chunks, timeout=0.5)
    assert 0.5 <= time.monotonic() - t0 < 5  # both stuck chunks share the one deadline
    assert halt.calls == ["set"]
    assert [r.getMessage() for r in caplog.records] == [
        "2 chunk(s) of the failed map did not stop within 0.5 s: x[3:6], x[6:9]; they "
        "stop before their next image if they ever run, and the stage's output folder may get files from them"
    ]
    halt = _Halt()
    stop_chunks(halt, {"x[0:3]": _Chunk(done=True), "x[3:6]": _Chunk(done=True)}, timeout=0.5)
    assert halt.calls == ["set", "clear"]  # all stopped: the scheduler forgets the event
    halt, t0 = _Halt(), time.monotonic()
    caplog.clear()
    with logs_of(caplog, "facegan.dask_runner", logging.WARNING):
        stop_chunks(halt, {"x[3:6]": _Chunk(done=False)}, timeout=0)  # a cluster without workers: nothing runs them
    assert time.monotonic() - t0 < 0.5 and halt.calls == ["set"]  # set for good, nothing waited for
    assert caplog.records == []


class _Fetch:
    """A finished chunk's future whose fetch takes `seconds` (None: waits for a redo that never comes, until
    `released`) and then gives [1], or raises `error` as a chunk's failed state does."""

    def __init__(self, status: str, seconds: float | None, error: Exception | None = None):
        self.wrapped_future = types.SimpleNamespace(status=status)
        self.seconds, self.error = seconds, error
        self.released = threading.Event()

    def wait(self) -> None:
        self.released.wait(60 if self.seconds is None else self.seconds)

    def result(self) -> list:
        assert self.seconds is not None, "a lost result was fetched"
        if self.error:
            raise self.error
        return [1]


class _Watch:
    """WorkerWatch's stand-in: the 3rd check finds the cluster without workers for too long."""

    def __init__(self):
        self.checks = 0

    def check(self, done: int) -> None:
        from facegan.dask_runner import NoWorkers

        self.checks += 1
        if self.checks == 3:
            raise NoWorkers("no workers", 0)


def test_a_result_lost_with_the_last_worker_is_one_clear_error_and_a_slow_fetch_is_waited_for(monkeypatch):
    """A chunk that had finished, but whose worker died before its result was fetched, waited for ever for a redo on
    a cluster with no worker left: the watch was not asked meanwhile. A slow fetch of a result that is there (a
    worker holding the GIL in native code) is waited for, without asking the watch: before, a 2 s limit on the
    whole fetch was mistaken for the chunk's own TimeoutError. A chunk's own error comes through unchanged."""
    from distributed import KilledWorker

    from facegan import dask_runner
    from facegan.dask_runner import NoWorkers, chunk_result

    monkeypatch.setattr(dask_runner, "WORKERS_CHECK_S", 0.05)
    watch, lost = _Watch(), _Fetch("lost", None)
    try:
        with pytest.raises(NoWorkers):
            chunk_result(lost, watch, 0)
    finally:
        lost.released.set()  # the fetch thread ends (a closing client cancels it)
    assert watch.checks == 3
    watch = _Watch()
    assert chunk_result(_Fetch("finished", 0.5), watch, 0) == [1]
    assert watch.checks == 0
    killed = KilledWorker("run_chunk-x", None, 3)
    with pytest.raises(KilledWorker) as error:
        chunk_result(_Fetch("error", 0.0, killed), watch, 0)
    assert error.value is killed and watch.checks == 0


def _no_workers_yet(tmp_path: Path):
    """A `dask scheduler` on 127.0.0.1 with no worker."""
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
        + ["--no-dashboard"],
        stdout=(tmp_path / "scheduler.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return f"tcp://127.0.0.1:{port}", proc


def test_a_scheduler_without_workers_is_one_clear_error_not_a_hang(tmp_path):
    """A scheduler that no worker has joined used to hold the stage for ever, saying nothing."""
    from distributed import Client

    from facegan.config import ParamsError
    from facegan.manifest import Row
    from facegan.parallel import map_items
    from facegan.preprocess.common import guarded

    address, proc = _no_workers_yet(tmp_path)
    try:
        Client(address, timeout=60, set_as_default=False).close()  # it answers
        rows = [Row(source="a.png", stage="x"), Row(source="b.png", stage="x")]
        pool = _pool(_params(address, {"workers_timeout_s": 2}))  # 60 s by default
        result = _ran(lambda: map_items(functools.partial(guarded, "x", str), rows, pool, "x"), 120)
        assert result, "the stage hangs on a scheduler without workers"
        error = result.get("error")
        assert isinstance(error, ParamsError), result
        assert str(error) == (
            f"orchestration.dask.address {address}: the Dask scheduler has no workers (waited 2 s); "
            f"start one on each machine: `dask worker {address}`"
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


class _CountedBar:
    """A progress bar that writes how far it is into a file (a worker's function can wait for the map to have
    fetched and released chunks)."""

    def __init__(self, path: Path, total: int, desc: str):
        self.path, self.n = path, 0

    def update(self, n: int) -> None:
        self.n += n
        self.path.write_text(str(self.n))

    def close(self) -> None:
        pass


def test_a_local_cluster_keeps_restarting_a_worker_that_dies(tmp_path, monkeypatch):
    """Dask's SpecCluster closes a worker's nanny for good when no worker of its name is back
    `distributed.deploy.lost-worker-timeout` (15 s) after one died. A restart slower than that (a busy machine), or
    a second death during a restart, left a LocalCluster of one worker with none, and the map waited for ever (seen:
    one image that killed its worker on every try; the map hung until it was killed). Here that timeout is 50 ms,
    shorter than any restart: the old code lost its only worker at the first death.

    Also: the chunks done before the death are not redone (their results were left on the worker, and the scheduler
    recomputed them when it died), and an image that kills its worker on every try is one error naming it, not
    Dask's KilledWorker naming a task key."""
    import dask

    from dying import die_on_2, die_once_on_2
    from facegan import dask_runner
    from facegan.errors import StageError

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))  # the workers'
    monkeypatch.setattr(dask_runner, "progress", functools.partial(_CountedBar, tmp_path / "fetched"))
    pool = _pool(_params(None))  # a LocalCluster of 1 worker, 1 image per chunk
    # allowed-failures 1: a chunk fails once 2 workers died running it (3 by default: 4 restarts, ~30 s)
    with dask.config.set(
        {"distributed.deploy.lost-worker-timeout": "0.05s", "distributed.scheduler.allowed-failures": 1}
    ):
        result = _ran(lambda: pool.map(functools.partial(die_once_on_2, str(tmp_path)), [0, 1, 2, 3], "once"), 240)
        assert result, "the map waits for ever on a LocalCluster whose only nanny was closed"
        assert result == {"out": [0, 10, 20, 30]}
        assert sorted(map(int, (tmp_path / "calls").read_text().split())) == [0, 1, 2, 2, 3]  # 2 died, then redone
        result = _ran(lambda: pool.map(die_on_2, [0, 1, 2, 3], "boom"), 240)
    assert isinstance(result.get("error"), StageError), result
    assert re.fullmatch(  # image 4 may have waited its turn on the dying worker: then Dask counts it too
        r"boom: Dask gave up on (image 3 and image 4 of 4: the workers holding them \(running, or waiting their|"
        r"image 3 of 4: the workers holding it \(running, or waiting its) turn\) died on every try \(killed, most "
        r"often for memory, or a crash in a native library\); run it again, with fewer dask.local_workers if memory "
        r"ran out",
        str(result["error"]),
    ), str(result["error"])


def _scheduler_and_worker(tmp_path: Path) -> tuple[str, subprocess.Popen, subprocess.Popen]:
    """A `dask scheduler` and one `dask worker --no-nanny` (nothing restarts it) on 127.0.0.1."""
    address, scheduler = _no_workers_yet(tmp_path)
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "dask"), "worker", address, "--no-nanny", "--nthreads", "1"]
        + ["--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(tmp_path)],
        stdout=(tmp_path / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return address, scheduler, worker


@pytest.mark.parametrize("killed", ["worker", "scheduler"])
def test_a_cluster_that_loses_its_workers_or_scheduler_is_one_clear_error_not_a_hang(killed, tmp_path):
    """Workers that die with no nanny to restart them left the map's chunks waiting for ever on a scheduler without
    workers. Now the map fails once its cluster has had no running worker for dask.workers_timeout_s, saying how far
    it got, without waiting for chunks that nothing can run. A scheduler that dies was Dask's FutureCancelledError
    naming a task key, as a traceback (it is no FaceganError)."""
    import dask
    from distributed import Client

    from facegan.errors import StageError
    from facegan.parallel import map_items

    address, scheduler, worker = _scheduler_and_worker(tmp_path)
    try:
        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=120)
            # the map's client gives up reconnecting to a lost scheduler after this (30 s by default)
            with dask.config.set({"distributed.comm.timeouts.connect": "5s"}):
                pool = _pool(_params(address, {"workers_timeout_s": 3}))  # 60 s by default
                thread, result = _started(lambda: map_items(time.sleep, [0.3] * 20, pool, "nap"))
                deadline = time.time() + 120
                while time.time() < deadline and not any(client.processing().values()):
                    time.sleep(0.05)
                os.killpg((worker if killed == "worker" else scheduler).pid, signal.SIGKILL)
                thread.join(timeout=320)
        assert result, f"the map waits for ever on a cluster that lost its only {killed}"
        error = result.get("error")
        assert isinstance(error, StageError), result
        expected = {
            "worker": r"nap: the Dask cluster has had no running worker for 3 s, with \d+ of 20 images done: its "
            r"workers died \(killed, most often for memory, or a crash in a native library\), left, or paused for "
            rf"lack of memory, and none came back; start workers again \(`dask worker {re.escape(address)}` on "
            r"each machine\) and run it again",
            "scheduler": rf"nap: lost the connection to the Dask scheduler at {re.escape(address)}: check that it "
            r"still runs, with \d+ of 20 images done; run it again",
        }
        assert re.fullmatch(expected[killed], str(error)), str(error)
    finally:
        for proc in (worker, scheduler):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def test_a_chunk_does_not_carry_the_whole_map(cluster, monkeypatch):
    """Prefect sends the flow run's context (the flow among it) with every chunk: the flow was a closure over all
    the map's items, so each chunk carried every path (855 kB a chunk at 20 000 paths; 53 GB through the scheduler
    for 200 000 photos in chunks of 32). Now a chunk's context is the same few kB whatever the map's size."""
    import cloudpickle
    import prefect_dask.client

    address, _ = cluster
    sizes = []

    def measured(*args, **kwargs):
        context = serialize(*args, **kwargs)
        sizes.append(len(cloudpickle.dumps(context)))
        return context

    serialize = prefect_dask.client.serialize_context
    monkeypatch.setattr(prefect_dask.client, "serialize_context", measured)
    items = [f"/data/raw/celeba/img_align_celeba/{i:06d}.jpg" for i in range(20_000)]  # 48 B each
    pool = _pool(_params(address, chunk_size=10_000))
    assert pool.map(len, items, "len") == [len(x) for x in items]
    assert len(sizes) == 2 and max(sizes) < 50_000, sizes  # the items alone: 960 kB


def test_a_default_dask_client_elsewhere_is_one_clear_error_not_a_silent_detour(cluster):
    """prefect-dask's runner takes the process's default Dask client (a notebook's `Client()`) over dask.address and
    over a LocalCluster: the stage ran on that client's cluster, saying nothing. Now it is one error before any work,
    unless the default client is the scheduler at dask.address."""
    from distributed import Client

    from facegan.config import ParamsError
    from facegan.manifest import Row
    from facegan.parallel import map_items
    from facegan.preprocess.common import guarded

    address, _ = cluster
    rows = [Row(source="a.png", stage="x"), Row(source="b.png", stage="x")]
    with Client(address, timeout=60) as default:  # set as the default, as `Client()` in a notebook is
        found = default.scheduler.address
        with pytest.raises(ParamsError) as error:
            map_items(functools.partial(guarded, "x", str), rows, _pool(_params(None)), "x")
        assert str(error.value) == (
            f"this process has a default Dask client of the scheduler at {found}, which prefect-dask would use "
            "instead of a LocalCluster of dask.local_workers (1) processes (address: null); close that client, make "
            f"it with Client(..., set_as_default=False), or set orchestration.dask.address: {found} to run the "
            "stage there"
        )
        fn = functools.partial(guarded, "x", str)
        assert map_items(fn, rows, _pool(_params(address)), "x") == [fn(r) for r in rows]  # its scheduler: runs


def _params(address: str | None, dask: dict | None = None, **orchestration):
    dask = ({"address": address} if address else {"local_workers": 1}) | (dask or {})
    return parse_params(
        {**_project_params(), "orchestration": {"runner": "dask", "chunk_size": 1, "dask": dask, **orchestration}}
    )


FAILING_MAPS = """
import functools, sys
sys.path.insert(0, {tests!r})
from facegan.errors import FaceganError
from facegan.manifest import Row
from facegan.parallel import map_items
from facegan.preprocess.common import guarded
from facegan.logs import setup_logging
from test_dask import _params, _pool

if __name__ == "__main__":  # not in the LocalCluster's worker processes
    setup_logging()  # as the CLI and the stages do
    rows = [Row(source=f"{{i}}.png", stage="x") for i in range(3)]
    for address in ({address!r}, None):  # the standing cluster, then a LocalCluster (its workers share this stderr)
        try:
            map_items(functools.partial(guarded, "boom", int), rows, _pool(_params(address)), "boom")
        except FaceganError as e:
            print(f"error: {{e}}", file=sys.stderr, flush=True)
"""


def test_a_failed_map_says_its_error_in_one_line_without_prefect_s_tracebacks(cluster, tmp_path):
    """Prefect logged the failed task run's and the flow run's tracebacks on stderr before the stage's one-line
    error (a FaceganError is one line on stderr); they go to the Prefect API (its UI) alone now."""
    address, _ = cluster
    script = tmp_path / "maps.py"
    script.write_text(FAILING_MAPS.format(tests=str(TESTS), address=address))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TESTS)])}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=400, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    error = re.compile(r"error: stage 'boom' failed on '\d.png': TypeError: int\(\) argument must be .*")
    assert sum(bool(error.fullmatch(line)) for line in r.stderr.splitlines()) == 2, r.stderr[-6000:]
    assert "Traceback" not in r.stderr and " ERROR " not in r.stderr, r.stderr[-6000:]


def test_no_scheduler_at_the_address_is_one_clear_error():
    from facegan.config import OrchestrationConfig, ParamsError
    from facegan.parallel import map_items

    port = free_port()
    pool = _pool(
        parse_params(
            {**_project_params(), "orchestration": {"runner": "dask", "dask": {"address": f"tcp://127.0.0.1:{port}"}}}
        )
    )
    with pytest.raises(
        ParamsError, match=rf"orchestration.dask.address tcp://127.0.0.1:{port}: no Dask scheduler answers"
    ):
        map_items(abs, [1, 2], pool, "nothing")
    assert OrchestrationConfig().runner == "local"


def _project_params() -> dict:
    from facegan.config import load_params

    return load_params(ROOT / "params.yaml").model_dump(mode="json")


def test_a_local_worker_that_dies_is_one_error_naming_where_not_a_traceback():
    """A worker process killed (out of memory, a crash in a native library) ended the stage in BrokenProcessPool's
    traceback, which names neither the stage nor how far it got."""
    from dying import die_on_2
    from facegan.errors import StageError
    from facegan.parallel import LocalPool

    assert LocalPool(1).map(abs, [-1, -2], "x") == [1, 2]
    with pytest.raises(StageError, match=r"^boom: a worker process died \(killed, .*\) at or after item [123] of 4: r"):
        LocalPool(2).map(die_on_2, [0, 1, 2, 3], "boom")


def test_the_default_runner_imports_no_dask_or_prefect():
    """Item 8: the local path stays as light as before (prefect-dask, dask, distributed only when chosen)."""
    code = (
        "import sys; from facegan.chain import run_stage; from facegan.runners import make_pool; "
        "from facegan.config import OrchestrationConfig; import facegan.preprocess.detect, facegan.preprocess.quality; "
        "make_pool(OrchestrationConfig(), 2); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'prefect', 'prefect_dask')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr[-2000:]


@pytest.mark.slow  # ~1-2 min: seven stages, each a subflow of chunk tasks
def test_prefect_preprocess_flow_runs_its_per_image_stages_as_subflows_on_the_cluster(
    cluster, layout, tiny_params_obj, tmp_path
):
    """pipelines/flows.py with the dask runner: each stage task opens a subflow of chunk tasks on the cluster."""
    import yaml

    address, _ = cluster
    sys.path.insert(0, str(ROOT / "pipelines"))
    from flows import preprocess

    raw = tiny_params_obj.model_dump(mode="json")
    raw["orchestration"] = {"runner": "dask", "chunk_size": 4, "dask": {"address": address}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    preprocess(dataset="cartoon", params_file=str(tmp_path / "params.yaml"), root=str(tmp_path))
    assert (tmp_path / "data/processed/cartoon/dataset.zip").read_bytes() == (
        layout.packed / "dataset.zip"
    ).read_bytes()
    assert tree(tmp_path / "data/interim/cartoon/quality") == tree(layout.interim("quality"))
