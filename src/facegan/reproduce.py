"""`facegan reproduce RUN_ID`: train and evaluate again with the params an MLflow run recorded."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import yaml

from facegan.config import TrackingConfig, parse_params
from facegan.data.packed import ZIP_NAME
from facegan.errors import FaceganError, TrackingError, first_line
from facegan.io import sha256_file
from facegan.layout import Layout

log = logging.getLogger(__name__)


class ReproduceError(FaceganError, ValueError):
    """A run that cannot be reproduced here: not a pipeline run, or the workspace's data differs from its."""


def reproduce(
    run_id: str, root: Path = Path("."), out: Path | None = None, tracking: TrackingConfig = TrackingConfig()
) -> dict[str, tuple[float, float | None]]:
    """Re-run train + evaluate of run `run_id` into `out`; returns {metric: (recorded, reproduced)} for every
    fd_*/kid_* metric the run recorded, reproduced None where it was not measured here (extractor unavailable)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from facegan import track
    from facegan.evaluate.extractors import ExtractorUnavailable
    from facegan.evaluate.run import Scorer, reference_stats, run_evaluate
    from facegan.train.checkpoint import CHECKPOINT
    from facegan.train.run import run_train

    run = track.fetch_run(run_id, tracking)
    parent = run.data.tags.get("mlflow.parentRunId")
    if run.data.tags.get(track.KIND) not in ("pipeline", "transfer"):
        if not parent:
            raise ReproduceError(f"run {run_id} is not a facegan pipeline run (nor a stage of one)")
        run = track.fetch_run(parent, tracking)
    if run.data.tags.get(track.KIND) == "transfer":  # its runs' params are the study's, one per row and seed
        raise ReproduceError(
            f"run {run_id} belongs to the transfer study, not to a dataset's pipeline: `facegan transfer` runs "
            "the study again; give a pipeline run (the FID table's `run`) or one of its stages"
        )
    if run.info.lifecycle_stage == "deleted":
        log.warning("run %s was deleted in %s: reproduced all the same", run.info.run_id, track.tracking_uri(tracking))
    dataset = run.data.tags.get("dataset")
    if not dataset:
        raise ReproduceError(f"run {run.info.run_id} names no dataset (tag `dataset`): not one this command reproduces")
    store = track.tracking_uri(tracking)
    with tempfile.TemporaryDirectory() as tmp:  # the run's params, read and not kept
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="params.yaml", dst_path=tmp, tracking_uri=store
            )
        except (MlflowException, OSError) as e:
            raise TrackingError(
                f"cannot fetch params.yaml of run {run.info.run_id} from {store} (a pipeline's report stage logs it: "
                f"did this execution reach report?): {first_line(e)}"
            ) from None
        text = Path(local).read_text()
    params = parse_params(yaml.safe_load(text), source=f"params of run {run.info.run_id}")
    at = Layout(root, dataset)
    recorded_hash = run.data.tags.get("dataset_sha256")
    current = sha256_file(at.packed / ZIP_NAME) if (at.packed / ZIP_NAME).is_file() else None
    if recorded_hash and current != recorded_hash:
        raise ReproduceError(
            f"the packed dataset differs from the run's (run {recorded_hash[:12]}, workspace "
            f"{(current or 'missing')[:12]}): check out the run's commit ({run.data.tags.get('git_commit', '?')[:10]}) "
            "and `dvc repro` the data stages first"
        )
    out = out or root / "reproduce" / run.info.run_id
    for name in params.evaluate.extractors:  # statistics missing or of other params: said before training
        with contextlib.suppress(ExtractorUnavailable):  # not measured here: the verdict names it
            reference_stats(name, params.evaluate, at.stats, at.classifier, at.packed)
    fid = params.train.fid_every
    scorer = Scorer(params.train.fid_extractor, params.evaluate, at.stats, at.classifier, at.packed) if fid else None
    run_train(params.train, at.packed, out / "model", resume=False, scorer=scorer)
    metrics = run_evaluate(
        params.evaluate, out / "model" / CHECKPOINT, at.packed, at.stats, out / "eval", at.classifier
    )
    return {
        k: (run.data.metrics[k], None if metrics.get(k) is None else float(metrics[k]))
        for k in sorted(run.data.metrics)
        if k.startswith(("fd_", "kid_"))
    }


def verdict(result: dict[str, tuple[float, float | None]], tolerance: float) -> tuple[list[str], bool]:
    """Lines for the user (one per metric, the verdict last) and whether the run is reproduced: every metric
    measured here within `tolerance` of the recorded one, and at least one measured. Metrics not measured here
    are named: a run is never called reproduced on metrics that were not compared."""
    compared = {k: (old, new) for k, (old, new) in result.items() if new is not None}
    missing = [k for k in result if k not in compared]
    lines = [
        f"{k:16s} recorded {old:.8f}  "
        + (
            "not measured here (extractor unavailable)"
            if new is None
            else f"reproduced {new:.8f}  |diff| {abs(old - new):.2e}"
        )
        for k, (old, new) in result.items()
    ]
    if not compared:
        why = (
            f"none of the run's recorded metrics ({', '.join(missing)}) was measured here"
            if missing
            else "the run recorded no fd_*/kid_* metric"
        )
        return [*lines, f"NOT reproduced: nothing compared: {why}"], False
    not_compared = f"; NOT compared (not measured here): {', '.join(missing)}" if missing else ""
    off = {k: abs(old - new) for k, (old, new) in compared.items() if not abs(old - new) <= tolerance}  # NaN: off
    if off:
        diffs = ", ".join(f"{k} by {d:.2e}" for k, d in off.items())
        return [*lines, f"NOT reproduced: {diffs} (> {tolerance:g}){not_compared}"], False
    which = "every metric" if not missing else f"the metrics compared ({', '.join(compared)})"
    return [*lines, f"reproduced: {which} within {tolerance:g}{not_compared}"], True
