"""MLflow tracking: the only module that imports mlflow (import it inside commands only).

- One pipeline execution = one parent run; each stage = a nested run (`stage_tracker`).
  The parent is FACEGAN_MLFLOW_PARENT when set, else the open parent of this dataset + commit + params,
  recorded in `.facegan/tracking/parents/<key>.json` (stages run as separate processes under `dvc repro`),
  else a new one. The `report` stage finishes it and marks that record finished; a stage run again for the same
  key (`facegan report DATASET`) updates that parent rather than making a copy of the execution. The transfer
  story (pretrain, fine-tunes, table) is one execution too, with a parent of kind "transfer" that
  `transfer-table` finishes.
- Every run is described locally first (a *spec*: experiment, tags, params, parent, start time, a uid
  tag) and every call goes through a JSONL buffer of its own (`Tracker`, one file per run, never
  reused). When the tracking server is down a warning is shown, the work goes on, and whatever could
  not be sent (the run's creation included, files copied beside the buffer) stays on disk until it is
  retried or `facegan track sync` replays it; runs are found again by their uid, so a replay never
  creates one twice and parent/child links survive any outage.
- Store: `tracking.tracking_uri` in params.yaml (`sqlite:///mlflow.db` by default); MLFLOW_TRACKING_URI
  overrides it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import math
import operator
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from facegan.config import Params, TrackingConfig, flatten, local_store, sqlite_file
from facegan.errors import TrackingError, first_line

log = logging.getLogger(__name__)

BUFFERS = Path(".facegan") / "tracking"  # under the project root: buffers, parents/, kept files
PARENT_ENV = "FACEGAN_MLFLOW_PARENT"
KIND = "facegan.kind"  # tag: "pipeline" (parent) or "stage"
KEY = "facegan.pipeline_key"
UID = "facegan.run_uid"  # tag: the run's local id, to find it again when records are replayed
MAX_PARAMS_PER_CALL = 100
MAX_METRICS_PER_CALL = 1000
# files a pipeline writes into the git checkout itself: their changes do not make the code dirty
PIPELINE_WRITES = (":(exclude)dvc.lock", ":(exclude,glob)**/.gitignore")

# fail fast on a dead server: our buffer retries instead of MLflow's minutes-long backoff
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")


def tracking_uri(cfg: TrackingConfig) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking_uri


def client(cfg: TrackingConfig):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(cfg))


def git_state(root: Path = Path(".")) -> dict[str, str]:
    """Commit and dirty flag of the working tree (empty values outside a git checkout). Files the pipeline
    itself rewrites (dvc.lock, the .gitignore files DVC extends) do not count as dirty: the flag would
    otherwise flip in the middle of a `dvc repro`."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", *PIPELINE_WRITES)) if commit else ""
    return {"git_commit": commit, "git_dirty": str(dirty)}


def package_versions() -> dict[str, str]:
    from contextlib import suppress
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("facegan", "torch", "numpy", "dvc", "mlflow", "dlib-bin", "opencv-contrib-python-headless"):
        with suppress(PackageNotFoundError):
            out[f"version.{name}"] = version(name)
    return out


def artifact_location(uri: str, name: str) -> str | None:
    """Where a new experiment of a local SQLite store keeps its runs' files: <the database's folder>/mlruns/<name>
    (in letters, digits, `.`, `-` and `_`: a path, not a URI).
    MLflow's default is ./mlruns of the current folder, so a stage run from another folder with --root left the
    project's files (params snapshots, registered generators) in that folder. A server or file store decides."""
    if (db := sqlite_file(uri)) is None:
        return None
    database = Path(os.path.abspath(db[0]))
    return str(database.parent / "mlruns" / (re.sub(r"[^\w.-]+", "_", name, flags=re.ASCII).strip("._") or "_"))


def _experiment(c, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location(c.tracking_uri, name))
    except Exception:
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def where(root: Path) -> dict[str, str]:
    """Tags naming the machine and project folder of an execution (teams sharing one server)."""
    return {"facegan.host": socket.gethostname(), "facegan.root": str(root.resolve())}


def experiment_id(cfg: TrackingConfig) -> str:
    return _experiment(client(cfg), cfg.experiment)


METRIC_KEY_MAX = 250  # MLflow refuses a longer metric name, and the run's buffered metrics with it


def metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: 'rejected: no face' -> 'rejected.no_face'; a
    name over MLflow's 250 characters is cut, with a hash of the whole name to keep it apart from others."""
    key = "".join(c if c.isalnum() or c in "_-./" else "_" for c in name.replace(": ", ".")).strip("_")
    if len(key) <= METRIC_KEY_MAX:
        return key
    return f"{key[: METRIC_KEY_MAX - 9]}.{hashlib.sha256(name.encode()).hexdigest()[:8]}"


# ---- runs described locally, created when the store can be reached -------------------------------


def run_spec(
    cfg: TrackingConfig,
    tags: dict[str, str],
    params: dict[str, Any] | None = None,
    parent: dict | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Everything needed to create a run later: experiment, tags, params, parent spec, start time, uid."""
    return {
        "run_id": run_id,
        "uid": uuid.uuid4().hex,
        "store": _store(cfg),  # where its buffer, if one is left, is to be sent (`sync` checks)
        "experiment": cfg.experiment,
        "tags": dict(tags),
        "params": {k: "null" if v is None else str(v) for k, v in (params or {}).items()},
        "parent": parent,
        "start_ms": int(time.time() * 1000),
    }


def ensure_run(c, spec: dict[str, Any]) -> str:
    """The run of `spec` (its parent first), created when needed; found again by its uid tag, so creating
    it twice is impossible. Sets spec["run_id"], then spec["params_sent"] once the spec's params are stored: a
    store failing between the two leaves the params to the next call (`complete` says whether one is due)."""
    if not spec.get("run_id"):
        exp = _experiment(c, spec["experiment"])
        found = c.search_runs([exp], f"tags.`{UID}` = '{spec['uid']}'", max_results=1)
        if found:
            spec["run_id"] = found[0].info.run_id
        else:
            tags = {**spec["tags"], UID: spec["uid"]}
            if spec.get("parent"):
                tags["mlflow.parentRunId"] = ensure_run(c, spec["parent"])
            spec["run_id"] = c.create_run(exp, start_time=spec.get("start_ms"), tags=tags).info.run_id
    if spec.get("parent") and not complete(spec["parent"]):  # e.g. its params failed where it was created
        ensure_run(c, spec["parent"])
    if spec.get("params") and not spec.get("params_sent"):
        send_params(c, spec["run_id"], spec["params"])
        spec["params_sent"] = True
    return spec["run_id"]


def complete(spec: dict[str, Any]) -> bool:
    """Whether the run of `spec`, its params and its parent's (recursively) are all in the store."""
    return (
        bool(spec.get("run_id"))
        and (not spec.get("params") or bool(spec.get("params_sent")))
        and (not spec.get("parent") or complete(spec["parent"]))
    )


def send_params(c, run_id: str, params: dict[str, str]) -> None:
    """Params not yet on the run (MLflow refuses to log one twice), in batches; one already there with another
    value stays as it is, and the log says which (the run describes another configuration than this one)."""
    existing = c.get_run(run_id).data.params
    from mlflow.entities import Param

    if differ := sorted(k for k, v in params.items() if k in existing and existing[k] != v):
        shown = ", ".join(f"{k}={existing[k]!r} (not {params[k]!r})" for k in differ[:5])
        log.warning(
            "MLflow run %s keeps the params it has (a param is logged once): %s%s",
            run_id,
            shown,
            f" and {len(differ) - 5} more" if len(differ) > 5 else "",
        )
    fresh = [Param(k, v) for k, v in params.items() if k not in existing]
    for i in range(0, len(fresh), MAX_PARAMS_PER_CALL):
        c.log_batch(run_id, params=fresh[i : i + MAX_PARAMS_PER_CALL])


class BufferUnusable(ValueError):
    """A buffer file `sync` cannot send as it is (in use by a live stage, not a buffer, a damaged line): it stays."""


class NullTracker:
    """Tracking switched off (tracking.enabled: false): every call is a no-op."""

    run_id = parent = parent_spec = folder = None

    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...
    def set_tags(self, tags: dict) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def flush(self) -> bool:
        return True

    def end(self, status: str = "FINISHED") -> None: ...


class Tracker:
    """One MLflow run written through a buffer file of its own; an unreachable server never stops the work.

    The buffer's first line is the run's spec (with the run id once created), then one line per
    record not yet sent. While the run is live its buffer is locked, so `facegan track sync` leaves it alone."""

    def __init__(self, cfg: TrackingConfig, buffer: Path, spec: dict[str, Any], pending: list[dict] | None = None):
        self.cfg, self.buffer, self.spec = cfg, buffer, spec
        self.pending: list[dict[str, Any]] = list(pending or [])
        self.warned = False
        self.last_try = 0.0
        self._mutex = threading.RLock()  # the records are appended by the stage while a background flush sends
        self._background: threading.Thread | None = None
        buffer.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _try_lock(buffer)
        self._rewrite()

    @classmethod
    def open(cls, cfg: TrackingConfig, folder: Path, name: str, spec: dict[str, Any]) -> Tracker:
        """A new run's tracker with a fresh buffer file in `folder`: `<name>-<time>-<uid>.jsonl`."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return cls(cfg, folder / f"{name}-{stamp}-{uuid.uuid4().hex[:8]}.jsonl", spec)

    @classmethod
    def load(cls, cfg: TrackingConfig, buffer: Path, lines: list[dict[str, Any]] | None = None) -> Tracker:
        """The tracker of a buffer left on disk (by an outage), to send it (`lines`: its records, when read already).
        A last line cut off by a process killed while appending it is left out (with a warning): the records before
        it are whole."""
        lines = _records(buffer) if lines is None else lines
        header = lines[0] if lines and lines[0].get("op") == "run" else None
        if header is None or not (header.get("run_id") or header.get("uid")):
            raise BufferUnusable(f"{buffer}: not a facegan tracking buffer (its first line must describe the run)")
        spec = {k: v for k, v in header.items() if k != "op"}
        return cls(cfg, buffer, spec, [o for o in lines[1:] if o.get("op") != "run"])

    @property
    def run_id(self) -> str | None:
        return self.spec.get("run_id")

    @property
    def parent_spec(self) -> dict | None:
        self.wait()  # the background creation may be creating the parent: readers get it afterwards
        return self.spec.get("parent")

    def wait(self) -> None:
        """Until the background creation of the run (flush_in_background) is over."""
        if self._background is not None and threading.current_thread() is not self._background:
            self._background.join()

    @property
    def parent(self) -> str | None:
        return (self.spec.get("parent") or {}).get("run_id")

    @property
    def folder(self) -> Path:
        return self.buffer.parent

    @property
    def files(self) -> Path:
        """Where files logged as artifacts are copied when they cannot be sent (a later run may overwrite them)."""
        return self.buffer.with_name(self.buffer.stem + ".files")

    # -- recording (always local first) --------------------------------------------------------
    def _rewrite(self) -> None:
        from facegan.io import write_text

        write_text(self.buffer, "".join(json.dumps(o) + "\n" for o in [{"op": "run", **self.spec}, *self.pending]))

    def _record(self, op: dict[str, Any]) -> None:
        with self._mutex:
            self.pending.append(op)
            line = (json.dumps(op) + "\n").encode("utf-8")
            fd = os.open(self.buffer, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:  # one write per line: a process killed meanwhile leaves whole lines, but for a rare partial one
                while line:
                    line = line[os.write(fd, line) :]
            finally:
                os.close(fd)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                self._record({"op": "metric", "key": k, "value": float(v), "step": int(step or 0), "ts": ts})
        if time.time() - self.last_try > 10:
            self.flush()

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self._record({"op": "tag", "key": k, "value": str(v)})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_file():
            self._record({"op": "artifact", "path": str(path.resolve()), "artifact_path": artifact_path})

    def register(
        self, dataset: str, checkpoint: Path, metric: str, value: float, scored_as: dict[str, str] | None = None
    ) -> None:
        """Register this run's generator as `facegan-<dataset>` (alias `best` when it is the best, `register_if_best`)
        once sent."""
        if checkpoint.is_file():
            self._record(
                {
                    "op": "register",
                    "path": str(checkpoint.resolve()),
                    "dataset": dataset,
                    "metric": metric,
                    "value": float(value),
                    "scored_as": scored_as or {},
                }
            )

    # -- sending -------------------------------------------------------------------------------
    def flush_in_background(self) -> None:
        """Create the run from a thread: importing mlflow and opening the store (~3 s a process) then overlaps the
        stage's work instead of preceding it. `end()` waits for it."""

        def create() -> None:
            with contextlib.suppress(Exception):  # a failure shows in flush(), which keeps the records
                client(self.cfg)  # imports mlflow and opens the store (cached per URI) outside the lock
            self.flush()

        self.last_try = time.time()  # log_metrics does not flush meanwhile
        self._background = threading.Thread(target=create, name=f"mlflow {self.buffer.stem}", daemon=True)
        self._background.start()

    def flush(self) -> bool:
        """Create the run if needed and send what is pending; on failure keep it (and warn once).
        True when nothing is left."""
        with self._mutex:
            return self._flush()

    def _flush(self) -> bool:
        self.last_try = time.time()
        if not self.pending and complete(self.spec):
            return True
        try:
            self.deliver()
        except Exception as e:  # noqa: BLE001 - any failure of the store means: keep the data
            self._keep_files()
            if not self.warned:
                log.warning(
                    "MLflow at %s is unreachable (%s): the work goes on, %d record(s) are kept in %s "
                    "and retried; `facegan track sync` sends them later",
                    tracking_uri(self.cfg),
                    not_a_database(tracking_uri(self.cfg), empty=False) or first_line(e, with_type=True),
                    len(self.pending),
                    self.buffer,
                )
                self.warned = True
            return False
        if self.warned:
            log.info("MLflow reachable again: buffered records of run %s sent", self.run_id)
            self.warned = False
        return True

    def deliver(self) -> None:
        """Create the run (and its parent) if needed, then send every pending record; raises when the store fails."""
        c = client(self.cfg)
        if not complete(self.spec):
            before = json.dumps(self.spec)
            try:
                ensure_run(c, self.spec)
            finally:
                if json.dumps(self.spec) != before:
                    self._rewrite()  # the run id (and what else is stored) is on disk before anything else is sent
        self._send(c)

    def _send(self, c) -> None:
        """Replay the pending records into the run; each group leaves `pending` once it is stored."""
        from mlflow.entities import Metric, RunTag

        run_id = self.run_id
        assert run_id is not None, "records are sent once the run exists"
        ops = self.pending
        params = {o["key"]: o["value"] for o in ops if o["op"] == "param"}
        if params:
            send_params(c, run_id, params)
        tags = [RunTag(o["key"], o["value"]) for o in ops if o["op"] == "tag"]
        if tags:
            c.log_batch(run_id, tags=tags)
        metrics = [Metric(o["key"], o["value"], o["ts"], o["step"]) for o in ops if o["op"] == "metric"]
        for i in range(0, len(metrics), MAX_METRICS_PER_CALL):
            c.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_CALL])
        self._drop(lambda o: o["op"] in ("param", "tag", "metric"))
        for o in [o for o in ops if o["op"] == "artifact"]:
            if Path(o["path"]).is_file():
                c.log_artifact(run_id, o["path"], o.get("artifact_path"))
            self._drop(lambda p, o=o: p is o)
        for o in [o for o in ops if o["op"] == "register"]:
            try:
                register_if_best(
                    self.cfg, run_id, o["dataset"], Path(o["path"]), o["metric"], o["value"], o.get("scored_as")
                )
            except Exception as e:  # noqa: BLE001 - the registry is a convenience, not the record
                log.warning("could not register the generator in the MLflow model registry: %s", e)
            self._drop(lambda p, o=o: p is o)
        for o in [o for o in ops if o["op"] == "end"]:
            c.set_terminated(self.run_id, o["status"], o.get("ts"))
        self._drop(lambda o: True)

    def _drop(self, sent) -> None:
        self.pending = [o for o in self.pending if not sent(o)]
        self._rewrite()

    def _keep_files(self) -> None:
        """Copy the files still to send beside the buffer: the originals may be rewritten before the sync."""
        changed = False
        for i, o in enumerate(self.pending):
            src = Path(o.get("path", ""))
            if o["op"] in ("artifact", "register") and src.is_file() and self.files not in src.parents:
                kept = self.files / str(i) / src.name
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, kept)
                o["path"] = str(kept.resolve())
                changed = True
        if changed:
            self._rewrite()

    def end(self, status: str = "FINISHED") -> None:
        """Final flush and close the run; what cannot be sent stays in the buffer file (with the run's spec)."""
        self.wait()
        self._background = None
        self._record({"op": "end", "status": status, "ts": int(time.time() * 1000)})
        if not self.flush():
            log.warning(
                "MLflow run %s: %d record(s) not sent; they are in %s (`facegan track sync`)",
                self.run_id or f"(not created yet, uid {self.spec['uid'][:8]})",
                len(self.pending),
                self.buffer,
            )
        else:
            self.discard()
        _unlock(self._lock)
        self._lock = None

    def discard(self) -> None:
        """Remove the buffer and its kept files (everything was sent)."""
        self.buffer.unlink(missing_ok=True)
        shutil.rmtree(self.files, ignore_errors=True)


def _records(buffer: Path) -> list[dict[str, Any]]:
    """The records of a buffer file, one JSON object a line. A last line without its newline that does not parse
    was cut off by a process killed while writing it: it is dropped with a warning. Any other line that does not
    parse is an error naming the file and line."""
    text = buffer.read_text(encoding="utf-8")
    lines = text.splitlines()
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) and not text.endswith("\n"):
                log.warning(
                    "%s: its last line was cut off (%s) and is left out; the %d record(s) before it are kept",
                    buffer,
                    e.msg,
                    len(out),
                )
                continue
            if not out:  # a buffer's first line describes its run: a file of something else
                raise BufferUnusable(
                    f"{buffer}: not a facegan tracking buffer (line {i} is not a JSON record: {e.msg})"
                ) from None
            raise BufferUnusable(
                f"{buffer}: line {i} is not a JSON record ({e.msg}); mend or remove that line"
            ) from None
        if not isinstance(record, dict):
            raise BufferUnusable(f"{buffer}: line {i} is not a record (a JSON object)")
        out.append(record)
    return out


def _try_lock(path: Path):
    """An exclusive lock on `path`.lock, or None when another live tracker holds it."""
    f = path.with_name(path.name + ".lock").open("a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def _unlock(f) -> None:
    if f is not None:
        with contextlib.suppress(OSError):
            Path(f.name).unlink()
        f.close()


def sync(cfg: TrackingConfig, buffer: Path, any_store: bool = False) -> int:
    """Send a buffer left by an outage (creating its run, and its parent, when they were never created);
    returns the number of records sent. A buffer of a stage still running, one that cannot be read, or (unless
    `any_store`) one written for another store is refused (BufferUnusable); one whose process died before ending
    its run ends it as KILLED."""
    probe = _try_lock(buffer)
    if probe is None:
        raise BufferUnusable(f"{buffer}: in use by a stage that is still running; sync it when that stage is done")
    _unlock(probe)
    last_write = int(buffer.stat().st_mtime * 1000)
    lines = _records(buffer)  # read once: a cut-off last line is warned about once
    header = lines[:1]
    meant = header[0].get("store") if header else None  # buffers written before it was recorded name none
    elsewhere = meant is not None and not _same_store(meant, Path(os.curdir), cfg)
    if elsewhere and not any_store:
        raise BufferUnusable(
            f"{buffer}: written for the store {meant}, not {tracking_uri(cfg)}: sync it with MLFLOW_TRACKING_URI="
            f"{meant} (or -p a params file naming it), or --any-store to send it here"
        )
    made = _made_ids(header[0]) if header and meant is None else []  # a buffer of before: which store?
    gone = next((i for i in made if _gone(cfg, i)), None)
    if gone and not any_store:
        raise BufferUnusable(
            f"{buffer}: its run {gone} is not in {tracking_uri(cfg)}: written for another store? sync it with that "
            "store's MLFLOW_TRACKING_URI (or -p), or --any-store to make its run here"
        )
    t = Tracker.load(cfg, buffer, lines)  # (it rewrites the buffer: checks that refuse it come first)
    if elsewhere or gone:  # ids its run (and parent) got in another store mean nothing here: found by uid, or made
        t.spec = _unsent(t.spec)
    if not any(o["op"] == "end" for o in t.pending):  # its process died before it could end the run
        t._record({"op": "end", "status": "KILLED", "ts": last_write})
    n = len(t.pending)
    try:
        t.deliver()
    finally:
        _unlock(t._lock)
    t.discard()
    return n


def _made_ids(spec: dict[str, Any]) -> list[str]:
    """The run ids a spec and its parents got where they were made."""
    return ([spec["run_id"]] if spec.get("run_id") else []) + (_made_ids(spec["parent"]) if spec.get("parent") else [])


def _gone(cfg: TrackingConfig, run_id: str) -> bool:
    """Whether the store answers that it has no run `run_id` (a store that does not answer: not known, False)."""
    try:
        client(cfg).get_run(run_id)
    except Exception as e:  # noqa: BLE001 - any failure but "no such run" is the store's, for the sync to report
        return getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"
    return False


def _unsent(spec: dict[str, Any]) -> dict[str, Any]:
    """A run spec (and its parent's) as if never sent: no run id, params not sent, no store named (so a sync that
    stops halfway leaves a buffer any store takes)."""
    out = {k: v for k, v in spec.items() if k not in ("run_id", "params_sent", "store")}
    return {**out, **({"parent": _unsent(spec["parent"])} if spec.get("parent") else {})}


@dataclasses.dataclass
class Synced:
    """What `sync_all` did: records sent, files sent whole, and those left on disk with why: `skipped` ones
    (BufferUnusable: a live stage's, unreadable) and `failed` ones (the store did not take them)."""

    sent: int = 0
    files: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[tuple[Path, str]] = dataclasses.field(default_factory=list)
    failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)

    @property
    def left(self) -> int:
        """Buffer files still on disk, not sent: a command reporting this should not say it succeeded."""
        return len(self.skipped) + len(self.failed)


def sync_all(cfg: TrackingConfig, buffers: list[Path], any_store: bool = False) -> Synced:
    """`sync` each buffer in turn; one that is refused or fails stays on disk and the others are still sent."""
    out = Synced()
    if why := not_a_database(tracking_uri(cfg)):  # every buffer would fail on it, each with a screen of SQL
        out.failed = [(f, why) for f in buffers]
        return out
    for f in buffers:
        try:
            out.sent += sync(cfg, f, any_store)
        except BufferUnusable as e:
            out.skipped.append((f, str(e)))
        except Exception as e:  # noqa: BLE001 - the store is unreachable or refused: the file stays for the next sync
            out.failed.append((f, first_line(e, with_type=True)))
        else:
            out.files.append(f)
    return out


# ---- pipeline parent and stage runs ------------------------------------------------------------


def pipeline_key(dataset: str, params: Params, root: Path = Path("."), exclude: frozenset[str] = frozenset()) -> str:
    """Dataset + git commit + dirty flag (pipeline writes excluded; when dirty, the digest of the uncommitted
    changes) + params (but where they are tracked, and `exclude`d sections): what the stages of one execution share.
    A finished execution's parent is taken again by a stage of the same key, so edits must make another key."""
    g = git_state(root)
    shared = params.model_dump(mode="json", exclude={"tracking", *exclude})
    items = [dataset, g["git_commit"], g["git_dirty"], shared]
    if g["git_dirty"] == "True":  # two different uncommitted edits of one commit are two executions
        items.append(git_diff_digest(root))
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def git_diff_digest(root: Path = Path(".")) -> str:
    """sha256 of the uncommitted changes to tracked files (the pipeline's own writes left out, as in git_state)."""
    try:
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--binary", "--", ".", *PIPELINE_WRITES],
            cwd=root,
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return hashlib.sha256(diff).hexdigest()


def run_params(params: Params, dataset: str) -> dict[str, Any]:
    """The params of one dataset's pipeline, flattened (dataset section, train, evaluate, workers)."""
    return {
        **flatten(params.dataset(dataset), f"datasets.{dataset}."),
        **flatten(params.train, "train."),
        **flatten(params.evaluate, "evaluate."),
        "workers": params.workers,
    }


def _parents(folder: Path) -> Path:
    return folder / "parents"


def pipeline_parent(cfg: TrackingConfig, dataset: str, params: Params, root: Path) -> dict[str, Any]:
    """The spec of this pipeline execution's parent run (see module docstring), created when needed."""
    if os.environ.get(PARENT_ENV):
        return run_spec(cfg, {}, run_id=os.environ[PARENT_ENV])
    from facegan.runs_table import augment_label

    key = pipeline_key(dataset, params, root)

    def new() -> dict[str, Any]:
        tags = {
            KIND: "pipeline",
            KEY: key,
            "dataset": dataset,
            "model": params.train.model,
            "loss": params.train.loss,
            "d_variant": params.train.d_variant,
            "augment": augment_label(params.train.ada.enabled, params.train.diffaugment),
            "mlflow.runName": f"{dataset}-{params.train.model}-{params.train.loss}",
            **git_state(root),
            **package_versions(),
            **where(root),
        }
        return run_spec(cfg, tags, {**run_params(params, dataset), "seed": params.train.seed})

    return _open_parent(cfg, root, key, new)


def transfer_parent(cfg: TrackingConfig, params: Params, root: Path) -> dict[str, Any]:
    """The parent of the transfer study: pretrain, fine-tunes and table share it. Their `train` sections differ, so
    it is keyed on everything else: the transfer section and the study's scoring (`evaluate` with
    transfer.num_samples, which its runs get and the table's params do not) included; a study scored otherwise
    (another evaluate.mode or max_real through --params or Prefect's overrides) took the finished parent of the
    first, whose params then named the first one's scoring beside the second one's distances."""
    t = params.transfer
    evaluate = params.transfer_evaluate()
    scored = params.model_copy(update={"evaluate": evaluate})
    key = pipeline_key(f"transfer:{t.source}->{t.target}", scored, root, frozenset({"train"}))

    def new() -> dict[str, Any]:
        tags = {
            KIND: "transfer",
            KEY: key,
            "source": t.source,
            "target": t.target,
            "mlflow.runName": f"transfer-{t.source}-to-{t.target}",
            **git_state(root),
            **package_versions(),
            **where(root),
        }
        return run_spec(cfg, tags, {**flatten(t, "transfer."), **flatten(evaluate, "evaluate.")})

    return _open_parent(cfg, root, key, new)


def _open_parent(cfg: TrackingConfig, root: Path, key: str, new) -> dict[str, Any]:
    """The parent of execution `key`: read from, or written to, <root>/.facegan/tracking/parents/<key>.json, and
    created in MLflow as soon as the store answers. A record its report closed is taken again (a stage run again
    for the same key, such as `facegan report DATASET`, updates that execution's run instead of starting a copy
    of it), unless it belongs to another store or its run was deleted there."""
    path = _parents(root / BUFFERS) / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # stages running at once agree on one parent
        spec, meta = _read_parent(path)
        if spec is None or not _reusable(cfg, spec, meta, root):
            spec, meta = new(), {}
        elif meta.pop("finished", False):  # reopened: the next stages need not check again
            log.info("MLflow: the finished parent run %s of this execution is taken again", spec.get("run_id") or "")
        if not complete(spec):
            with contextlib.suppress(Exception):  # offline: created later, from any of its stages' buffers
                ensure_run(client(cfg), spec)
        _write_parent(path, spec, {**meta, "store": meta.get("store") or _store(cfg)})
    return spec


def _read_parent(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(spec, record) of a parent record file: the record says which store it went to and whether it is finished."""
    if not path.is_file():
        return None, {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data, data.pop("record", None) or {}


def _write_parent(path: Path, spec: dict[str, Any], meta: dict[str, Any]) -> None:
    from facegan.io import write_text

    write_text(path, json.dumps({**spec, "record": meta}, indent=1))


def _store(cfg: TrackingConfig) -> str:
    """The store of `cfg` as a parent record names it: a local one by its absolute path (a stage run in the project
    root names it `sqlite:///mlflow.db`, one run from elsewhere with --root `sqlite:////<root>/mlflow.db`)."""
    return local_store(tracking_uri(cfg), os.curdir)


def _same_store(recorded: str, base: Path, cfg: TrackingConfig) -> bool:
    """Whether a store a record names (a relative local one read in `base`) is the store of `cfg`: compared by
    absolute path, links resolved, without an SQLite query."""
    return local_store(recorded, base, resolve=True) == local_store(tracking_uri(cfg), os.curdir, resolve=True)


def _reusable(cfg: TrackingConfig, spec: dict[str, Any], meta: dict[str, Any], root: Path) -> bool:
    """Whether stages may join the recorded parent: it is this store's, and once finished, its run is still there
    (when the store answers; offline it is kept). A record written before names a relative store as read in
    `root`."""
    if meta.get("store") and not _same_store(meta["store"], root, cfg):
        return False
    if not (meta.get("finished") and spec.get("run_id")):
        return True
    try:
        return client(cfg).get_run(spec["run_id"]).info.lifecycle_stage != "deleted"
    except Exception as e:  # noqa: BLE001 - a store that does not answer cannot say it is gone
        return getattr(e, "error_code", "") != "RESOURCE_DOES_NOT_EXIST"


def close_parent(cfg: TrackingConfig, folder: Path, parent: dict[str, Any]) -> None:
    """The execution is over (report done): its record is marked finished and kept, so a stage run again for the
    same key (same dataset, commit and params) updates this parent instead of making a second one."""
    key = parent.get("tags", {}).get(KEY)
    if not key:
        return
    path = _parents(folder) / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        spec, meta = _read_parent(path)
        if spec is None or spec.get("uid") != parent.get("uid"):
            spec, meta = dict(parent), {"store": _store(cfg)}
        for k in ("run_id", "params_sent"):  # what the finishing process learnt about the run
            spec[k] = spec.get(k) or parent.get(k)
        _write_parent(path, spec, {**meta, "finished": True})


PARENTS = {
    "dataset": lambda cfg, dataset, params, root: pipeline_parent(cfg, dataset, params, root),
    "transfer": lambda cfg, dataset, params, root: transfer_parent(cfg, params, root),
    "none": lambda cfg, dataset, params, root: None,
}


def stage_tracker(
    cfg: TrackingConfig,
    stage: str,
    dataset: str,
    params: Params,
    root: Path,
    parent: str = "dataset",
    section: str | None = None,
    variant: str | None = None,
) -> Tracker:
    """A nested run for one stage under its parent (PARENTS: the dataset's pipeline, the transfer story, or
    none); works offline (buffered in <root>/.facegan/tracking).

    A stage over two datasets (cyclegan) has no parent and names its params `section`: it gets a run of its
    own with that section's params, since no single dataset's pipeline run owns them."""
    parent_spec = PARENTS[parent](cfg, dataset, params, root)
    name = f"{stage}@{dataset}" + (f"/{variant}" if variant else "")
    tags = {
        "mlflow.runName": name,
        KIND: "stage",
        "stage": stage,
        "dataset": dataset,
        **({"variant": variant} if variant else {}),
    }
    own = None
    if section is not None:
        own = {**flatten(getattr(params, section), f"{section}."), **flatten(params.evaluate, "evaluate.")}
    if parent_spec is None:
        tags |= git_state(root)
    t = Tracker.open(
        cfg,
        root / BUFFERS,
        f"{stage}@{dataset}" + (f"-{variant}" if variant else ""),
        run_spec(cfg, tags, own, parent_spec),
    )
    t.flush_in_background()  # the run exists within seconds when MLflow answers; else a warning, created later
    return t


# ---- model registry ------------------------------------------------------------------------------


def _generator_model_class():
    import mlflow.pyfunc

    class GeneratorModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]  # mlflow's lazy submodule
        """pyfunc wrapper: input rows with `seed`, `n` and optional `labels` -> uint8 image arrays."""

        def predict(self, context, model_input, params=None):
            from facegan.sample import sample_checkpoint

            ckpt = Path(context.artifacts["checkpoint"])
            rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
            return [sample_checkpoint(ckpt, *sample_row(r, i)) for i, r in enumerate(rows)]

    return GeneratorModel


def _missing(v: Any) -> bool:
    """No value: absent, None, or NaN / pd.NA (what pandas puts where some rows of a batch give a column and others
    not)."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ in ("NAType", "NaTType")


def _whole(v: Any) -> int | None:
    """`v` as a whole number (5, 5.0, numpy's int64, "5"), else None."""
    if isinstance(v, bool):
        return None
    with contextlib.suppress(TypeError):
        return operator.index(v)
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            return int(v.strip())
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        if (f := float(v)).is_integer():
            return int(f)
    return None


def sample_row(row: dict[str, Any], i: int = 0) -> tuple[int, int, str]:
    """(n, seed, labels) of input row `i` of the registered generator. A missing value (absent, None, NaN) takes its
    default: 1 image, seed 0, no label fixed; a bad one is one ValueError naming the row and the column."""
    out = []
    for name, default, least in (("n", 1, 1), ("seed", 0, 0)):
        v = row.get(name)
        value = default if _missing(v) else _whole(v)
        if value is None or value < least:
            raise ValueError(f"input row {i}: {name} must be a whole number >= {least}, not {v!r}")
        out.append(value)
    labels = row.get("labels")
    if _missing(labels):
        labels = ""
    elif not isinstance(labels, str):
        raise ValueError(f"input row {i}: labels must be text (NAME=VALUE,...), not {labels!r}")
    return out[0], out[1], labels


def register_if_best(
    cfg: TrackingConfig,
    run_id: str,
    dataset: str,
    checkpoint: Path,
    metric: str,
    value: float,
    scored_as: dict[str, str] | None = None,
) -> bool:
    """Register the run's generator as `facegan-<dataset>` and move alias `best` to it when its `metric` (lower is
    better) beats the value the current @best version was registered with (its tags: not its run's metric, which a
    re-run of that execution overwrites), scored the same way: `scored_as` (what makes two distances comparable:
    evaluate.mode for Inception, max_real, num_samples, the packed set's dataset_sha256; a key one side lacks, as
    versions registered before these tags, is unknown, not a difference) and the metric's name. A best scored
    otherwise is no yardstick: the new run takes @best, and the log says why. The generator that already is @best
    (the same checkpoint bytes) is not registered again: its tags take the new score. A distance that is not finite
    is never registered."""
    import mlflow

    from facegan.io import sha256_file

    if not math.isfinite(value):
        log.warning("%s %s is not finite: the generator is not registered", metric, value)
        return False
    scored_as = {k: str(v) for k, v in (scored_as or {}).items()}
    score = {metric: str(value), **scored_as}
    digest = sha256_file(checkpoint)
    c = client(cfg)
    name = f"facegan-{dataset}"
    current = _best_version(c, name)
    if current is not None:
        tags = current.tags or {}
        if tags.get(CHECKPOINT_TAG) == digest:  # this very generator, scored again: the new score replaces the old
            for key in [k for k in tags if k not in score and _is_score_tag(k)]:
                c.delete_model_version_tag(name, current.version, key)
            for key, tag in score.items():
                c.set_model_version_tag(name, current.version, key, tag)
            return False
        best_val = _tag_float(tags.get(metric))
        other = {k: (tags[k], v) for k, v in scored_as.items() if k in tags and tags[k] != v}
        if best_val is not None and not other and best_val <= value:
            return False
        if best_val is None or other:
            log.info(
                "%s@best (version %s) was not scored as this run (%s): this run takes @best",
                name,
                current.version,
                f"no {metric}" if best_val is None else ", ".join(f"{k} {a} vs {b}" for k, (a, b) in other.items()),
            )
    import warnings

    mlflow.set_tracking_uri(tracking_uri(cfg))
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        warnings.filterwarnings("ignore", message=".*Passing a Python object as `python_model`.*")
        info = mlflow.pyfunc.log_model(
            name="generator",
            python_model=_generator_model_class()(),
            artifacts={"checkpoint": str(checkpoint)},
            pip_requirements=["facegan"],
        )
    # the score goes with the version before the alias does: @best never stands without its value
    mv = mlflow.register_model(info.model_uri, name, tags={**score, CHECKPOINT_TAG: digest})
    c.set_registered_model_alias(name, "best", mv.version)
    log.info("registered %s version %s as @best (%s %.4f)", name, mv.version, metric, value)
    return True


def _best_version(c: Any, name: str) -> Any | None:
    """The version alias `best` of registered model `name`, None while there is no such model or alias (a store
    that does not answer raises)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        return c.get_model_version_by_alias(name, "best")
    except MlflowException as e:
        missing = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)}
        if e.error_code in missing:
            return None
        raise


CHECKPOINT_TAG = "checkpoint_sha256"  # a registered version's tag: the sha256 of its checkpoint.pt
PRIMARY = ("fd_inception", "fd_dlib", "fd_attributes")  # the distance a version is registered by, first found


def _is_score_tag(key: str) -> bool:
    """A version's tag that is part of its score (`register_if_best`): the distance or how it was scored."""
    return key in PRIMARY or key.startswith("evaluate.") or key == "dataset_sha256"


def _tag_float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def download_checkpoint(model_uri: str, tracking: TrackingConfig) -> Path:
    """The checkpoint.pt inside a registered generator (models:/NAME@ALIAS or models:/NAME/VERSION), from the
    cache (`fetched_checkpoint`)."""
    from mlflow.exceptions import MlflowException

    try:
        name, how, which = _parse_model_uri(model_uri)
    except ModelNotFound as e:
        raise TrackingError(str(e)) from None
    try:
        c = _reader(tracking)  # a look-up: a sqlite store that is not there is not made (empty) here
    except TrackingError as e:
        raise TrackingError(f"cannot fetch {model_uri}: {e}") from None
    try:
        mv = _model_version(c, name, how, which)
    except (MlflowException, OSError) as e:
        raise _fetch_failed(e, model_uri, tracking) from None
    return fetched_checkpoint(mv, model_uri, tracking)


def _model_version(c: Any, name: str, how: str, which: str) -> Any:
    """The ModelVersion a parsed models:/ URI names (`_parse_model_uri`)."""
    return c.get_model_version_by_alias(name, which) if how == "alias" else c.get_model_version(name, which)


def _fetch_failed(e: Exception, model_uri: str, tracking: TrackingConfig) -> TrackingError:
    from mlflow.exceptions import MlflowException

    down = _store_error(e, tracking) if isinstance(e, MlflowException) else None
    where = f": {down}" if down else f" from the tracking store {tracking_uri(tracking)}: {first_line(e)}"
    return TrackingError(f"cannot fetch {model_uri}{where}")


def fetched_checkpoint(mv: Any, model_uri: str, tracking: TrackingConfig) -> Path:
    """The checkpoint.pt of registered model version `mv` (named `model_uri` in messages), fetched once into the
    cache (`registered_model_dir`) and read from there after: a registered version's files never change. A fetch
    is written to a temporary folder beside its place and moved there whole, so a cut-off one leaves nothing to
    be taken for a model next time."""
    import mlflow
    from mlflow.exceptions import MlflowException

    folder = registered_model_dir(mv)
    if (found := _checkpoint_in(folder)) is not None:
        return found
    try:
        tmp = _fetch_folder(folder)
    except OSError as e:
        raise TrackingError(
            f"cannot write the model cache {folder.parent} ({first_line(e)}): set FACEGAN_CACHE to a writable folder"
        ) from None
    try:
        try:
            source = _reader(tracking).get_model_version_download_uri(mv.name, mv.version)  # this store's registry
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(tmp), tracking_uri=tracking_uri(tracking)
            )
        except (MlflowException, OSError) as e:
            raise _fetch_failed(e, model_uri, tracking) from None
        if _checkpoint_in(tmp) is None:
            raise TrackingError(f"{model_uri} holds no checkpoint.pt (is it a facegan generator?)")
        _move_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = _checkpoint_in(folder)
    assert found is not None
    return found


def registered_model_dir(mv: Any) -> Path:
    """Where a registered model version (an MLflow ModelVersion) is kept once fetched: in facegan's cache
    (FACEGAN_CACHE, else ~/.cache/facegan), under registry/NAME/VERSION-KEY, KEY a hash of the version's source,
    creation time and run: the same name and version in two stores, or in a store deleted and made again,
    never share a folder."""
    from facegan.io import cache_root

    key = hashlib.sha256(f"{mv.source}|{mv.creation_timestamp}|{mv.run_id}".encode()).hexdigest()[:16]
    return cache_root() / "registry" / mv.name / f"{mv.version}-{key}"


STALE_FETCH_S = 3600  # a fetch folder untouched this long was left by a killed process


def _fetch_folder(folder: Path) -> Path:
    """A new temporary folder beside `folder`, after removing those that killed fetches left there."""
    from facegan.io import new_dir  # numpy and Pillow: not for every CLI start (`facegan --help` imports this)

    folder.parent.mkdir(parents=True, exist_ok=True)
    for old in folder.parent.glob(".*"):
        with contextlib.suppress(OSError):
            if old.is_dir() and time.time() - old.stat().st_mtime > STALE_FETCH_S:
                shutil.rmtree(old, ignore_errors=True)
    return new_dir(folder.parent, f".{folder.name}.")


def _move_in(tmp: Path, folder: Path) -> None:
    """Rename the complete fetch `tmp` to `folder`. Where another process put the same version there first, keep
    theirs; a folder there without a checkpoint (not written by this code) is replaced."""
    try:
        try:
            os.rename(tmp, folder)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if _checkpoint_in(folder) is None:
                shutil.rmtree(folder)
                os.rename(tmp, folder)
    except OSError as e:
        raise TrackingError(f"cannot write the model cache {folder.parent} ({first_line(e)})") from None


def _checkpoint_in(folder: Path) -> Path | None:
    found = sorted(folder.rglob("checkpoint.pt")) if folder.is_dir() else []
    return found[0] if found else None


class ModelNotFound(ValueError):
    """A model URI, run or version the tracking store does not hold; the message says what exists."""


def _parse_model_uri(uri: str) -> tuple[str, str, str]:
    """models:/NAME@ALIAS -> (NAME, 'alias', ALIAS); models:/NAME/VERSION -> (NAME, 'version', VERSION)."""
    body = uri.removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, "alias", alias
    name, _, version = body.partition("/")
    if not name or not version.isdigit():
        raise ModelNotFound(
            f"model URI {uri!r}: write models:/NAME@ALIAS (e.g. models:/facegan-cartoon@best) or models:/NAME/VERSION"
        )
    return name, "version", version


def _store_error(e: Exception, tracking: TrackingConfig) -> ModelNotFound | None:
    """A ModelNotFound for a store that did not answer; None when `e` says the thing is not there."""
    if getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
        return None
    return ModelNotFound(
        f"the tracking store {tracking_uri(tracking)} did not answer ({first_line(e, 160)}); start it or set "
        "MLFLOW_TRACKING_URI"
    )


def _model_reader(tracking: TrackingConfig):
    """`_reader` for the look-ups of models and runs: no store there is a ModelNotFound."""
    try:
        return _reader(tracking)
    except TrackingError as e:
        raise ModelNotFound(str(e)) from None


def registry_checkpoint(uri: str, tracking: TrackingConfig) -> dict[str, Any]:
    """The checkpoint of a registered generator (downloaded), with its name, version and run id."""
    from mlflow.exceptions import MlflowException

    name, how, which = _parse_model_uri(uri)
    c = _model_reader(tracking)
    try:
        mv = _model_version(c, name, how, which)
    except MlflowException as e:
        if (err := _store_error(e, tracking)) is not None:
            raise err from None
        if _registered(c, name, tracking):
            raise ModelNotFound(f"{uri}: model {name} has no {how} {which!r} in {tracking_uri(tracking)}") from None
        page = c.search_registered_models(max_results=50)
        known = ", ".join(sorted(m.name for m in page)) + (", …" if page.token else "")
        raise ModelNotFound(
            f"{uri}: no registered model {name!r} in {tracking_uri(tracking)} "
            f"(registered: {known or 'none; `make run` registers facegan-<dataset>'})"
        ) from None

    path = fetched_checkpoint(mv, f"models:/{name}/{mv.version}", tracking)
    return {"checkpoint": path, "name": name, "version": str(mv.version), "run_id": mv.run_id}


def _registered(c, name: str, tracking: TrackingConfig) -> bool:
    """Whether the store has a registered model `name` (asked by name: a list of the first 50 said 'no' for the
    51st)."""
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException as e:
        if (err := _store_error(e, tracking)) is not None:
            raise err from None
        return False
    return True


def _runs_starting(c, prefix: str, tracking: TrackingConfig, n: int = 6) -> list:
    """Up to `n` runs (deleted ones too, as a whole id finds them) whose id starts with `prefix`, asked of the store
    itself, experiment page after page."""
    from mlflow.entities import ViewType

    found: list = []
    token = None
    with _answering(tracking):
        while len(found) < n:
            page = c.search_experiments(view_type=ViewType.ALL, max_results=_PAGE, page_token=token)
            if ids := [e.experiment_id for e in page]:
                flt = f"attributes.run_id LIKE '{prefix}%'"
                found += c.search_runs(ids, flt, run_view_type=ViewType.ALL, max_results=n - len(found))
            if not (token := page.token):
                break
    return found


def fetch_run(run_id: str, tracking: TrackingConfig) -> Any:
    """The MLflow run `run_id`, or the one run whose id starts with it (`facegan report` prints the first 8
    characters); a TrackingError when the store does not answer, holds no such run, or several runs start so."""
    from mlflow.exceptions import MlflowException

    c = _reader(tracking)
    try:
        return c.get_run(run_id)
    except MlflowException as e:
        down = _store_error(e, tracking)
        if down:
            raise TrackingError(str(down)) from None
    found = _runs_starting(c, run_id, tracking) if re.fullmatch(r"[0-9a-f]{4,31}", run_id) else []
    if len(found) == 1:
        log.info("run %s: %s", run_id, found[0].info.run_id)
        return found[0]
    if found:
        many = f"{len(found)}" if len(found) < 6 else "6 or more"
        raise TrackingError(
            f"{many} runs in {tracking_uri(tracking)} have an id that starts with {run_id} "
            f"({', '.join(r.info.run_id[:12] for r in found[:5])}{', ...' if len(found) > 5 else ''}): give more of it"
        )
    hint = "" if len(run_id) >= 32 else " (a run id has 32 characters: give the whole id, or its first 4 or more)"
    raise TrackingError(f"no MLflow run {run_id} in {tracking_uri(tracking)}{hint}")


def run_checkpoint(run_id: str, tracking: TrackingConfig) -> dict[str, Any]:
    """The registered generator of a pipeline run (or of the pipeline a stage run belongs to)."""
    from mlflow.exceptions import MlflowException

    c = _model_reader(tracking)
    try:
        run = c.get_run(run_id)
    except MlflowException as e:
        raise _store_error(e, tracking) or ModelNotFound(
            f"no MLflow run {run_id} in {tracking_uri(tracking)}"
        ) from None
    parent = run.data.tags.get("mlflow.parentRunId")
    pid = parent if run.data.tags.get(KIND) != "pipeline" and parent else run_id
    versions = sorted(c.search_model_versions(f"run_id = '{pid}'"), key=lambda v: int(v.version))
    if not versions:
        raise ModelNotFound(
            f"run {run_id} has no registered generator (only runs that became @best are registered); "
            "give its checkpoint file instead (data/models/<dataset>/checkpoint.pt, "
            "data/cyclegan/model/checkpoint.pt)"
        )
    mv = versions[-1]
    return registry_checkpoint(f"models:/{mv.name}/{mv.version}", tracking)


def run_rows(run_ids: list[str | None], tracking: TrackingConfig) -> list[dict[str, Any]]:
    """The FID comparison row (facegan.runs_table) of each pipeline run; {} where the id is None."""
    from mlflow.exceptions import MlflowException

    from facegan.runs_table import rows_of

    c = _model_reader(tracking)
    out: list[dict[str, Any]] = []
    for rid in run_ids:
        if rid is None:
            out.append({})
            continue
        try:
            run = c.get_run(rid)
            out.extend(rows_of([run], {rid: execution_runs(c, [run.info.experiment_id], [run], run)}))
        except MlflowException as e:
            raise _store_error(e, tracking) or ModelNotFound(
                f"no MLflow run {rid} in {tracking_uri(tracking)}"
            ) from None
    return out


NAME_LENGTH = 60  # characters of a latent direction's name, as a registry tag or in the file beside a checkpoint


def folded(text: str) -> str:
    """`text` with its runs of white space made one space, the ends stripped."""
    return " ".join(text.split())


def direction_name(text: str) -> str:
    """The name a direction keeps for `text` (empty: none), here and in facegan.latent.DirectionNames: folded, cut
    to NAME_LENGTH characters."""
    return folded(text)[:NAME_LENGTH]


class RegistryNames:
    """Names of latent directions kept as tags `direction.<method>.<index>` of a registered model version, so
    everyone who opens that version sees the same named sliders."""

    PREFIX = "direction."

    def __init__(self, name: str, version: str, tracking: TrackingConfig | None = None):
        self.name, self.version, self.tracking = name, version, tracking or TrackingConfig()

    def load(self) -> dict[str, dict[int, str]]:
        tags = client(self.tracking).get_model_version(self.name, self.version).tags
        out: dict[str, dict[int, str]] = {}
        for k, v in tags.items():
            method, _, index = k.removeprefix(self.PREFIX).partition(".")
            if k.startswith(self.PREFIX) and index.isdigit() and v:
                out.setdefault(method, {})[int(index)] = v
        return out

    def save(self, method: str, index: int, name: str) -> dict[str, dict[int, str]]:
        c, key = client(self.tracking), f"{self.PREFIX}{method}.{int(index)}"
        name = direction_name(name)
        if name:
            c.set_model_version_tag(self.name, self.version, key, name)
        elif key in c.get_model_version(self.name, self.version).tags:
            c.delete_model_version_tag(self.name, self.version, key)
        return self.load()


# ---- queries ---------------------------------------------------------------------------------------


def _pipeline_parents(c, ids: list[str], dataset: str | None, model: str | None) -> list:
    flt = [f"tags.`{KIND}` = 'pipeline'", "attributes.status = 'FINISHED'"]
    if dataset:
        flt.append(f"tags.dataset = '{dataset}'")
    if model:
        flt.append(f"tags.model = '{model}'")
    return _newest(c, ids, " and ".join(flt)) if ids else []


def pipeline_rows(
    cfg: TrackingConfig, dataset: str | None = None, model: str | None = None, experiments: list[str] | None = None
) -> list[dict[str, Any]]:
    """The FID table's row (facegan.runs_table) of each finished pipeline (parent) run, newest first, filtered by
    dataset/model tags; one per execution (the newest of the parents an older facegan made again for one key,
    `same_execution`). Its time is the sum of its stage runs' own (`execution_runs`): the parent's span would count
    the idle hours before a `facegan report DATASET` run again."""
    from facegan.runs_table import rows_of

    with _answering(cfg):
        c = _reader(cfg)
        ids = _experiment_ids(c, cfg, experiments)
        parents = _pipeline_parents(c, ids, dataset, model)
        chosen = _one_per_execution(parents)
        return rows_of(chosen, {p.info.run_id: execution_runs(c, ids, parents, p) for p in chosen})


def same_execution(run: Any) -> tuple[str, ...]:
    """What the parents of one execution share: pipeline key, host and project folder. Before a report run again
    reused its execution's parent, each `facegan report DATASET` made a new parent for the same key, holding only
    that report; stores keep those copies. A run without a key is an execution of its own."""
    tags = run.data.tags
    if not tags.get(KEY):
        return (run.info.run_id,)
    return (tags[KEY], tags.get("facegan.host", ""), tags.get("facegan.root", ""))


def _one_per_execution(runs: list) -> list:
    """`runs` (newest first) without the older parents of an execution already there."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for r in runs:
        if (key := same_execution(r)) not in seen:
            seen.add(key)
            out.append(r)
    return out


def _latest_stages(runs: list) -> list:
    """The stage runs of an execution, newest first, each stage (dataset, variant) once: its newest FINISHED run,
    else its newest (a stage run again, or retried after a failure, counts once). Other runs are kept."""
    runs = sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)
    chosen: dict[tuple, Any] = {}
    for r in runs:
        tags = r.data.tags
        if tags.get(KIND, "stage") != "stage":
            continue
        key = (tags.get("stage"), tags.get("dataset"), tags.get("variant"))
        if key not in chosen or (chosen[key].info.status != "FINISHED" and r.info.status == "FINISHED"):
            chosen[key] = r
    keep = {id(r) for r in chosen.values()}
    return [r for r in runs if r.data.tags.get(KIND, "stage") != "stage" or id(r) in keep]


def finish_pipeline(
    cfg: TrackingConfig,
    parent: dict[str, Any] | None,
    dataset: str,
    metrics: dict[str, Any],
    artifacts: list[Path],
    folder: Path,
    checkpoint: Path | None,
    tags: dict[str, str],
    scored_as: dict[str, str] | None = None,
) -> None:
    """The last stage's part (report; transfer-table with dataset "transfer"): final metrics and files on the
    parent run, registry (`scored_as`: what makes its distance comparable, see `register_if_best`), parent finished
    (all kept in `folder` when MLflow is unreachable), and the execution's parent record closed."""
    if parent is None:
        log.warning("no MLflow parent run for %s: nothing to finish", dataset)
        return
    t = Tracker.open(cfg, folder, f"pipeline@{dataset}", parent)
    t.log_metrics({metric_key(k): v for k, v in flatten(metrics).items()})
    t.set_tags(tags)
    for path in artifacts:
        t.log_artifact(path)
    primary = next((k for k in PRIMARY if metrics.get(k) is not None), None)
    if checkpoint and primary:
        # evaluate.mode is Inception's resize: the other extractors' distances do not depend on it
        scoring = {k: v for k, v in (scored_as or {}).items() if k != "evaluate.mode" or primary == "fd_inception"}
        t.register(dataset, checkpoint, primary, float(metrics[primary]), scoring)
    t.end("FINISHED")
    close_parent(cfg, folder, parent)


# ---- read-only queries over the latest execution (report, timings): they never create a store -------------


SQLITE_HEADER = b"SQLite format 3\x00"  # the first bytes of every SQLite database file


def not_a_database(uri: str, empty: bool = True) -> str | None:
    """Why the SQLite store of `uri` is no store (a file of something else; with `empty`, an empty file, which
    MLflow would turn into a new empty store), else None (a server, a store that is a database, or one not there
    yet). A writer passes empty=False: another stage may be making the store this moment."""
    if (db := sqlite_file(uri)) is None:
        return None
    path = Path(db[0])
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError:
        return None
    if not head:
        return (
            None
            if not empty
            else f"{path} is an empty file, not an MLflow store: remove it (a run tracked next makes a new store there)"
        )
    if head != SQLITE_HEADER:
        return f"{path} is not an SQLite database, so not an MLflow store: point tracking.tracking_uri at the store"
    return None


def _reader(cfg: TrackingConfig):
    """A client over an existing store: a sqlite file that is not there (or is no database) is an error, not a new
    empty store."""
    uri = tracking_uri(cfg)
    if (db := sqlite_file(uri)) is not None:
        path = Path(db[0])
        if not path.is_file():
            raise TrackingError(f"no MLflow store at {path} (nothing tracked yet: run `dvc repro` first)")
        if why := not_a_database(uri):
            raise TrackingError(why)
    return client(cfg)


@contextlib.contextmanager
def _answering(cfg: TrackingConfig):
    """Any failure of the store -> one-line TrackingError naming it."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the store raised (HTTP, SQL, MLflow): one line for people
        raise TrackingError(f"the tracking store {tracking_uri(cfg)} did not answer: {first_line(e)}") from None


_PAGE = 1000  # runs per search request (MLflow's own default)


def _newest(c, ids: list[str], flt: str, n: int | None = None) -> list:
    """The runs matching `flt`, newest first: all of them (page after page; one page of 1000 left a store's older
    executions out of the FID table without a word), or the newest `n`."""
    out: list = []
    token = None
    while n is None or len(out) < n:
        page = c.search_runs(
            ids, flt, order_by=["attributes.start_time DESC"], max_results=min(n or _PAGE, _PAGE), page_token=token
        )
        out.extend(page)
        if not (token := page.token):
            break
    return out[:n]


def _experiment_ids(c, cfg: TrackingConfig, experiments: list[str] | None) -> list[str]:
    """The ids of the experiments named (default: tracking.experiment, none while nothing is tracked); a name given
    that the store does not know is an error naming the ones it does (a typo read as an empty store)."""
    found = {n: c.get_experiment_by_name(n) for n in experiments or [cfg.experiment]}
    if experiments and (unknown := [n for n, e in found.items() if e is None]):
        page = c.search_experiments(max_results=50)
        known = ", ".join(sorted(e.name for e in page)) + (", …" if page.token else "")
        raise TrackingError(
            f"no experiment {', '.join(map(repr, unknown))} in {tracking_uri(cfg)}; experiments: {known or 'none'}"
        )
    return [e.experiment_id for e in found.values() if e is not None]


def child_runs(c, ids: list[str], parent_id: str) -> list:
    """The stage runs nested under `parent_id`, newest first."""
    return _newest(c, ids, f"tags.mlflow.parentRunId = '{parent_id}'")


def execution_runs(c, ids: list[str], parents: list, parent: Any) -> list:
    """The runs under `parent` and under the other `parents` of its execution (`same_execution`: copies an older
    facegan made when a report ran again), newest first, each stage once (`_latest_stages`)."""
    copies = [p for p in parents if same_execution(p) == same_execution(parent)]
    return _latest_stages([s for p in copies for s in child_runs(c, ids, p.info.run_id)])


def latest_transfer(cfg: TrackingConfig, experiments: list[str] | None = None) -> tuple[Any, list] | None:
    """The newest FINISHED transfer parent and its runs (pretrain, fine-tunes, table, rows; each stage's newest,
    across the execution's parents: `execution_runs`), or None."""
    with _answering(cfg):
        c = _reader(cfg)
        ids = _experiment_ids(c, cfg, experiments)
        found = _newest(c, ids, f"tags.`{KIND}` = 'transfer' and attributes.status = 'FINISHED'") if ids else []
        return (found[0], execution_runs(c, ids, found, found[0])) if found else None


def latest_cyclegan(cfg: TrackingConfig, experiments: list[str] | None = None) -> Any | None:
    """The newest FINISHED CycleGAN run (a run of its own, no parent), or None."""
    with _answering(cfg):
        c = _reader(cfg)
        ids = _experiment_ids(c, cfg, experiments)
        flt = f"tags.`{KIND}` = 'stage' and tags.stage = 'cyclegan' and attributes.status = 'FINISHED'"
        found = _newest(c, ids, flt, 1) if ids else []
        return found[0] if found else None


def latest_execution(cfg: TrackingConfig, experiments: list[str] | None = None) -> list[tuple[Any, list]]:
    """(run, its stage runs) of the latest execution: each dataset's newest FINISHED pipeline parent with the newest
    run of each of its stages (`execution_runs`), the newest transfer parent (likewise), and the newest CycleGAN run
    (its own only stage)."""
    with _answering(cfg):
        c = _reader(cfg)
        ids = _experiment_ids(c, cfg, experiments)
        if not ids:
            return []
        parents = _newest(c, ids, f"tags.`{KIND}` = 'pipeline' and attributes.status = 'FINISHED'")
        newest: dict[str, Any] = {}
        for r in parents:
            newest.setdefault(r.data.tags.get("dataset", ""), r)
        out = [(r, execution_runs(c, ids, parents, r)) for _, r in sorted(newest.items())]
    if story := latest_transfer(cfg, experiments):
        out.append(story)
    if cyc := latest_cyclegan(cfg, experiments):
        out.append((cyc, [cyc]))
    return out


def log_table(cfg: TrackingConfig, run_id: str, name: str, text: str, metrics: dict[str, float]) -> None:
    """Add a table (artifact `name`) and its metrics to a run, finished or not (MLflow allows both)."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    with _answering(cfg):
        c = _reader(cfg)
        c.log_text(run_id, text, name)
        batch = [Metric(metric_key(k), float(v), ts, 0) for k, v in metrics.items()]
        for i in range(0, len(batch), MAX_METRICS_PER_CALL):
            c.log_batch(run_id, metrics=batch[i : i + MAX_METRICS_PER_CALL])
