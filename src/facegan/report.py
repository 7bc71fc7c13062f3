"""Stage `report`: one metrics.json (DVC metrics) and sample grid per dataset, logged to MLflow."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

from facegan.config import Params, flatten
from facegan.io import atomic_dir, write_text

log = logging.getLogger(__name__)


def collect(dataset: str, interim: Path, processed: Path, model: Path, evaluation: Path) -> tuple[dict, list[dict]]:
    """The report's metrics (nested, for `dvc metrics show`) and the per-step loss history."""
    ev = json.loads((evaluation / "metrics.json").read_text(encoding="utf-8"))
    with (model / "losses.csv").open(newline="") as f:
        losses = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    counts = {stage: json.loads((interim / stage / "summary.json").read_text()) for stage in ("detect", "align", "matte", "upscale")}
    packed = json.loads((processed / "summary.json").read_text())
    metrics = {
        "dataset": dataset,
        **{k: v for k, v in ev.items() if k.startswith(("fd_", "kid_", "attr_acc"))},
        "num_samples": ev["num_samples"],
        "extractors_ran": sorted(k for k, v in ev["extractors"].items() if v["status"] == "ok"),
        "extractors_unavailable": {k: v["reason"] for k, v in ev["extractors"].items() if v["status"] != "ok"},
        "training": {"steps": int(losses[-1]["step"]), "final_loss_d": losses[-1]["loss_d"], "final_loss_g": losses[-1]["loss_g"]},
        "data": {"faces_detected": counts["detect"]["ok"], "rejected_detect": counts["detect"]["rejected"],
                 "packed": packed["ok"], "rejected_total": packed["rejected"]},
    }
    return metrics, losses


def run_report(params: Params, dataset: str, interim: Path, processed: Path, model: Path, evaluation: Path, dst: Path) -> dict:
    """Write dst/metrics.json + dst/samples.png, then log params, metrics and files to MLflow."""
    metrics, losses = collect(dataset, interim, processed, model, evaluation)
    with atomic_dir(dst) as tmp:
        write_text(tmp / "metrics.json", json.dumps(metrics, indent=1))
        shutil.copyfile(model / "samples.png", tmp / "samples.png")
    from facegan import track

    run_params = {**flatten(params.dataset(dataset), f"datasets.{dataset}."),
                  **flatten(params.train, "train."), **flatten(params.evaluate, "evaluate."), "workers": params.workers}
    numeric = {k: v for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    try:
        track.log_run(
            params.tracking, f"{dataset}-{params.train.model}", run_params, numeric, losses,
            [dst / "samples.png", dst / "metrics.json", model / "losses.csv"],
            {"dataset": dataset, "model": params.train.model, "loss": params.train.loss,
             "extractors": ",".join(metrics["extractors_ran"]), **track.git_state()},
        )
    except Exception as e:  # noqa: BLE001 - tracking must not lose the computed report
        log.warning("MLflow logging failed (%s: %s); the report is written to %s", type(e).__name__, e, dst)
    return metrics
