"""MLflow tracking: the only module that imports mlflow (import it inside commands only).

- One pipeline execution = one parent run; each stage = a nested run (`stage_tracker`).
  The parent is FACEGAN_MLFLOW_PARENT when set (Prefect flows set it), else the RUNNING parent of
  the same dataset + commit + params + machine + project folder (stages run as separate processes under
  `dvc repro`; two clones or two people sharing one server are two executions), else new.
  The `report` stage finishes it.
- Every call goes through a local JSONL buffer first (`Tracker`): when the tracking server is down
  a warning is shown, training goes on, and whatever could not be sent stays on disk until
  `facegan track sync` replays it.
- Store: `sqlite:///mlflow.db` by default; MLFLOW_TRACKING_URI overrides it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from facegan.config import Params, TrackingConfig, flatten

log = logging.getLogger(__name__)

PARENT_ENV = "FACEGAN_MLFLOW_PARENT"
KIND = "facegan.kind"  # tag: "pipeline" (parent) or "stage"
KEY = "facegan.pipeline_key"
MAX_PARAMS_PER_CALL = 100
MAX_METRICS_PER_CALL = 1000

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
    """Commit and dirty flag of the working tree (empty values outside a git checkout)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "HEAD")
    return {"git_commit": commit, "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))) if commit else ""}


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("facegan", "torch", "numpy", "dvc", "mlflow", "dlib-bin", "opencv-contrib-python-headless"):
        try:
            out[f"version.{name}"] = version(name)
        except PackageNotFoundError:
            pass
    return out


def experiment_id(cfg: TrackingConfig) -> str:
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment)
    if exp:
        return exp.experiment_id
    try:
        return c.create_experiment(cfg.experiment)
    except Exception:  # noqa: BLE001 - another process sharing the server created it meanwhile
        exp = c.get_experiment_by_name(cfg.experiment)
        if exp is None:
            raise
        return exp.experiment_id


class NullTracker:
    """Tracking switched off (tracking.enabled: false): every call is a no-op."""

    run_id = parent = None

    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...
    def set_tags(self, tags: dict) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def flush(self) -> bool:
        return True
    def end(self, status: str = "FINISHED") -> None: ...


def metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: 'rejected: no face' -> 'rejected.no_face'."""
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in name.replace(": ", ".")).strip("_")


class Tracker:
    """One MLflow run written through a local buffer; an unreachable server never stops the work."""

    def __init__(self, cfg: TrackingConfig, buffer: Path, run_id: str | None = None, parent: str | None = None):
        self.cfg, self.buffer, self.run_id, self.parent = cfg, buffer, run_id, parent
        self.pending: list[dict[str, Any]] = []
        self.warned = False
        self.last_try = 0.0
        buffer.parent.mkdir(parents=True, exist_ok=True)
        self.header = json.dumps({"op": "run", "run_id": run_id, "parent": parent}) + "\n"
        buffer.write_text(self.header, encoding="utf-8")  # `facegan track sync` needs the run id

    # -- recording (always local first) --------------------------------------------------------
    def _record(self, op: dict[str, Any]) -> None:
        self.pending.append(op)
        with self.buffer.open("a", encoding="utf-8") as f:
            f.write(json.dumps(op) + "\n")

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

    # -- sending -------------------------------------------------------------------------------
    def flush(self) -> bool:
        """Send what is pending; on failure keep it (and warn once). True when nothing is left."""
        self.last_try = time.time()
        if not self.pending:
            return True
        if self.run_id is None:
            return False
        try:
            send(client(self.cfg), self.run_id, self.pending)
        except Exception as e:  # noqa: BLE001 - any failure of the store means: keep the data
            if not self.warned:
                log.warning("MLflow at %s is unreachable (%s: %s): training goes on, %d record(s) are kept in %s "
                            "and retried; `facegan track sync %s` sends them later",
                            tracking_uri(self.cfg), type(e).__name__, str(e)[:200], len(self.pending), self.buffer, self.buffer)
                self.warned = True
            return False
        self.pending.clear()
        self.buffer.write_text(self.header, encoding="utf-8")
        if self.warned:
            log.info("MLflow reachable again: buffered records sent")
            self.warned = False
        return True

    def end(self, status: str = "FINISHED") -> None:
        """Final flush and close the run; what cannot be sent stays in the buffer file (with the run id)."""
        self._record({"op": "end", "status": status})
        if not self.flush():
            log.warning("MLflow run %s: %d record(s) not sent; they are in %s (`facegan track sync %s`)",
                        self.run_id, len(self.pending), self.buffer, self.buffer)
        elif self.buffer.exists():
            self.buffer.unlink()


def send(c, run_id: str, ops: list[dict[str, Any]]) -> None:
    """Replay buffered operations into run `run_id` (params, tags and metrics batched)."""
    from mlflow.entities import Metric, Param, RunTag

    params = {o["key"]: o["value"] for o in ops if o["op"] == "param"}
    tags = [RunTag(o["key"], o["value"]) for o in ops if o["op"] == "tag"]
    metrics = [Metric(o["key"], o["value"], o["ts"], o["step"]) for o in ops if o["op"] == "metric"]
    existing = c.get_run(run_id).data.params if params else {}
    fresh = [Param(k, v) for k, v in params.items() if k not in existing]
    for i in range(0, len(fresh), MAX_PARAMS_PER_CALL):
        c.log_batch(run_id, params=fresh[i : i + MAX_PARAMS_PER_CALL])
    if tags:
        c.log_batch(run_id, tags=tags)
    for i in range(0, len(metrics), MAX_METRICS_PER_CALL):
        c.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_CALL])
    for o in ops:
        if o["op"] == "artifact" and Path(o["path"]).is_file():
            c.log_artifact(run_id, o["path"], o.get("artifact_path"))
    for o in ops:
        if o["op"] == "end":
            c.set_terminated(run_id, o["status"])


def sync(cfg: TrackingConfig, buffer: Path) -> int:
    """Send a buffer file left by an outage; returns the number of records sent."""
    lines = [json.loads(line) for line in buffer.read_text(encoding="utf-8").splitlines() if line.strip()]
    header = next((o for o in lines if o["op"] == "run"), None)
    if header is None or not header.get("run_id"):
        raise ValueError(f"{buffer}: no run id recorded (the run could never be created); nothing to sync into")
    ops = [o for o in lines if o["op"] != "run"]
    send(client(cfg), header["run_id"], ops)
    buffer.unlink()
    return len(ops)


# ---- pipeline parent and stage runs ------------------------------------------------------------


def where(root: Path | None = None) -> dict[str, str]:
    """The machine and project folder a pipeline runs in: two people (or two clones) running the same commit
    with the same params against one shared server are two pipeline executions, not one."""
    return {"facegan.host": socket.gethostname(), "facegan.root": str((root or Path(".")).resolve())}


def pipeline_key(dataset: str, params: Params, root: Path | None = None) -> str:
    g = git_state()
    payload = json.dumps([dataset, g["git_commit"], g["git_dirty"], params.model_dump(mode="json"), where(root)],
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_params(params: Params, dataset: str) -> dict[str, Any]:
    """The params of one dataset's pipeline, flattened (dataset section, train, evaluate, workers)."""
    return {**flatten(params.dataset(dataset), f"datasets.{dataset}."), **flatten(params.train, "train."),
            **flatten(params.evaluate, "evaluate."), "workers": params.workers}


def pipeline_parent(cfg: TrackingConfig, dataset: str, params: Params, root: Path | None = None) -> str:
    """The parent run of this pipeline execution (see module docstring), created when needed."""
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    c, exp = client(cfg), experiment_id(cfg)
    key = pipeline_key(dataset, params, root)
    found = c.search_runs([exp], f"tags.`{KEY}` = '{key}' and attributes.status = 'RUNNING'",
                          order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        return found[0].info.run_id
    tags = {KIND: "pipeline", KEY: key, "dataset": dataset, "model": params.train.model, "loss": params.train.loss,
            "d_variant": params.train.d_variant, "augment": ",".join(params.train.diffaugment) or "none",
            "mlflow.runName": f"{dataset}-{params.train.model}-{params.train.loss}", **git_state(), **package_versions(),
            **where(root)}
    run = c.create_run(exp, tags=tags)
    send(c, run.info.run_id, [{"op": "param", "key": k, "value": "null" if v is None else str(v)}
                              for k, v in {**run_params(params, dataset), "seed": params.train.seed}.items()])
    return run.info.run_id


def stage_tracker(cfg: TrackingConfig, stage: str, dataset: str, params: Params, buffer: Path,
                  section: str | None = None, root: Path | None = None) -> Tracker:
    """A nested run for one stage under the pipeline parent; works offline (everything buffered).

    Stages over two datasets (cyclegan, transfer-table) name their params `section` instead: they get a run
    of their own with that section's params, since no single dataset's pipeline run owns them."""
    try:
        c = client(cfg)
        parent = pipeline_parent(cfg, dataset, params, root) if section is None else None
        tags = {"mlflow.runName": f"{stage}@{dataset}", KIND: "stage", "stage": stage, "dataset": dataset}
        run = c.create_run(experiment_id(cfg), tags=tags | ({"mlflow.parentRunId": parent} if parent else git_state()))
        if section is not None:
            own = {**flatten(getattr(params, section), f"{section}."), **flatten(params.evaluate, "evaluate.")}
            send(c, run.info.run_id, [{"op": "param", "key": k, "value": "null" if v is None else str(v)}
                                      for k, v in own.items()])
        return Tracker(cfg, buffer, run.info.run_id, parent)
    except Exception as e:  # noqa: BLE001
        log.warning("MLflow at %s unreachable (%s: %s); stage %s runs untracked, its records stay in %s",
                    tracking_uri(cfg), type(e).__name__, str(e)[:200], stage, buffer)
        return Tracker(cfg, buffer, None)


# ---- model registry ------------------------------------------------------------------------------


def _generator_model_class():
    import mlflow.pyfunc

    class GeneratorModel(mlflow.pyfunc.PythonModel):
        """pyfunc wrapper: input rows with `seed`, `n` and optional `labels` -> uint8 image arrays."""

        def predict(self, context, model_input, params=None):
            from facegan.sample import sample_checkpoint

            ckpt = Path(context.artifacts["checkpoint"])
            rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
            return [sample_checkpoint(ckpt, int(r.get("n", 1)), int(r.get("seed", 0)), str(r.get("labels", "") or ""))
                    for r in rows]

    return GeneratorModel


def register_if_best(cfg: TrackingConfig, run_id: str, dataset: str, checkpoint: Path, metric: str, value: float) -> bool:
    """Register the run's generator as `facegan-<dataset>` and move alias `best` to it when its
    `metric` (lower is better) beats the current best's."""
    import mlflow

    c = client(cfg)
    name = f"facegan-{dataset}"
    try:
        current = c.get_model_version_by_alias(name, "best")
        best_val = c.get_run(current.run_id).data.metrics.get(metric)
    except Exception:  # noqa: BLE001 - no model or alias yet
        current, best_val = None, None
    if best_val is not None and best_val <= value:
        return False
    import warnings

    mlflow.set_tracking_uri(tracking_uri(cfg))
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        warnings.filterwarnings("ignore", message=".*Passing a Python object as `python_model`.*")
        info = mlflow.pyfunc.log_model(name="generator", python_model=_generator_model_class()(),
                                       artifacts={"checkpoint": str(checkpoint)}, pip_requirements=["facegan"])
    mv = mlflow.register_model(info.model_uri, name)
    c.set_registered_model_alias(name, "best", mv.version)
    c.set_model_version_tag(name, mv.version, metric, str(value))
    log.info("registered %s version %s as @best (%s %.4f)", name, mv.version, metric, value)
    return True


def download_checkpoint(model_uri: str, tracking: TrackingConfig) -> Path:
    """The checkpoint.pt inside a registered generator, e.g. models:/facegan-cartoon@best."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(tracking))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    found = sorted(local.rglob("checkpoint.pt"))
    if not found:
        raise FileNotFoundError(f"{model_uri} holds no checkpoint.pt (is it a facegan generator?)")
    return found[0]


# ---- queries ---------------------------------------------------------------------------------------


def pipeline_runs(cfg: TrackingConfig, dataset: str | None = None, model: str | None = None,
                  experiments: list[str] | None = None) -> list:
    """Finished pipeline (parent) runs, newest first, filtered by dataset/model tags."""
    c = client(cfg)
    names = experiments or [cfg.experiment]
    ids = [e.experiment_id for e in (c.get_experiment_by_name(n) for n in names) if e]
    if not ids:
        return []
    flt = [f"tags.`{KIND}` = 'pipeline'", "attributes.status = 'FINISHED'"]
    if dataset:
        flt.append(f"tags.dataset = '{dataset}'")
    if model:
        flt.append(f"tags.model = '{model}'")
    return list(c.search_runs(ids, " and ".join(flt), order_by=["attributes.start_time DESC"], max_results=1000))


def finish_pipeline(cfg: TrackingConfig, parent: str | None, dataset: str, metrics: dict[str, Any],
                    artifacts: list[Path], buffer: Path, checkpoint: Path | None, tags: dict[str, str]) -> None:
    """The report stage's part: final metrics and files on the parent run, registry, parent finished."""
    if parent is None:
        log.warning("no MLflow parent run (tracking unreachable): pipeline summary kept in %s", buffer)
    t = Tracker(cfg, buffer, parent)
    t.log_metrics({metric_key(k): v for k, v in flatten(metrics).items()})
    t.set_tags(tags)
    for path in artifacts:
        t.log_artifact(path)
    t.end("FINISHED")
    primary = next((k for k in ("fd_inception", "fd_dlib", "fd_attributes") if metrics.get(k) is not None), None)
    if parent and checkpoint and primary and not t.pending:
        try:
            register_if_best(cfg, parent, dataset, checkpoint, primary, float(metrics[primary]))
        except Exception as e:  # noqa: BLE001 - the registry is a convenience, not the record
            log.warning("could not register the generator in the MLflow model registry: %s", e)
