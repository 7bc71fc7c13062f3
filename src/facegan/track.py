"""MLflow tracking: the only module that imports mlflow.

The store is `sqlite:///mlflow.db` by default (no server needed); MLFLOW_TRACKING_URI overrides it.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from facegan.config import TrackingConfig

log = logging.getLogger(__name__)
MAX_PARAMS_PER_CALL = 100


def tracking_uri(cfg: TrackingConfig) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking_uri


def git_state(root: Path = Path(".")) -> dict[str, str]:
    """Commit and dirty flag of the working tree (empty values outside a git checkout)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "HEAD")
    return {"git_commit": commit, "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))) if commit else ""}


def log_run(
    cfg: TrackingConfig,
    run_name: str,
    params: dict[str, object],
    metrics: dict[str, float],
    step_metrics: Iterable[dict[str, float]] = (),
    artifacts: Iterable[Path] = (),
    tags: dict[str, str] | None = None,
) -> str:
    """One MLflow run with params, final metrics, per-step metrics (dicts with a 'step' key) and files."""
    import mlflow
    from mlflow.entities import Metric

    mlflow.set_tracking_uri(tracking_uri(cfg))
    mlflow.set_experiment(cfg.experiment)
    with mlflow.start_run(run_name=run_name, tags=tags or {}) as run:
        items = [(k, "null" if v is None else str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), MAX_PARAMS_PER_CALL):
            mlflow.log_params(dict(items[i : i + MAX_PARAMS_PER_CALL]))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        client = mlflow.tracking.MlflowClient()
        batch = [Metric(k, float(v), 0, int(row["step"])) for row in step_metrics for k, v in row.items() if k != "step"]
        for i in range(0, len(batch), 1000):
            client.log_batch(run.info.run_id, metrics=batch[i : i + 1000])
        for path in artifacts:
            if path.is_file():
                mlflow.log_artifact(str(path))
        log.info("MLflow run %s logged to %s (experiment %r)", run.info.run_id, tracking_uri(cfg), cfg.experiment)
        return run.info.run_id
