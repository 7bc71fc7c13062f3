"""Stage `report`: metrics.json (DVC metrics), sample grid and curves per dataset; the pipeline's
MLflow parent run gets the final metrics and files, and the best generator is registered."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import yaml

from facegan.config import EvaluateConfig, Params, ParamsError, dvc_stages
from facegan.errors import AGAIN, DamagedRecord, StageInputMissing
from facegan.evaluate.fid import REFSTATS_AGAIN, extractors_of
from facegan.io import atomic_dir, read_json, read_numbers_csv, write_text

log = logging.getLogger(__name__)


def _need(path: Path, stage: str, dataset: str) -> Path:
    """`path`, or StageInputMissing naming the stage that writes it (a FileNotFoundError traceback before: after a
    training that replaced the model, its evaluation is gone until evaluate runs)."""
    if not path.is_file():
        raise StageInputMissing(f"{path} is not there: run `facegan {stage} {dataset}` (or `dvc repro`) first")
    return path


def collect(dataset: str, interim: Path, processed: Path, model: Path, evaluation: Path) -> dict:
    """The report's metrics (nested, for `dvc metrics show`)."""
    ev = read_json(_need(evaluation / "metrics.json", "evaluate", dataset), "an evaluation's metrics")
    extractors = extractors_of(ev, evaluation / "metrics.json", AGAIN)
    if not isinstance(ev.get("num_samples"), int):
        raise DamagedRecord(f"{evaluation / 'metrics.json'}: not an evaluation's metrics (no num_samples): {AGAIN}")
    losses = read_numbers_csv(_need(model / "losses.csv", "train", dataset))
    if not losses or not math.isfinite(losses[-1].get("step", math.nan)):
        problem = "its last row has no step" if losses else "no steps in it"
        raise DamagedRecord(f"{model / 'losses.csv'}: {problem}: {AGAIN}")
    from facegan.layout import PER_IMAGE
    from facegan.manifest import SUMMARY, read_summary

    counts = {stage: read_summary(_need(interim / stage / SUMMARY, stage, dataset).parent) for stage in PER_IMAGE}
    packed = read_summary(_need(processed / SUMMARY, "pack", dataset).parent)
    metrics = {
        "dataset": dataset,
        **{k: v for k, v in ev.items() if k.startswith(("fd_", "kid_", "attr_acc"))},
        "num_samples": ev["num_samples"],
        "mode": ev.get("mode", "legacy"),
        "extractors_ran": sorted(k for k, v in extractors.items() if v["status"] == "ok"),
        "extractors_unavailable": {k: v["reason"] for k, v in extractors.items() if v["status"] != "ok"},
        "training": {
            "steps": int(losses[-1]["step"]),
            **{f"final_{k}": v for k, v in losses[-1].items() if k != "step"},
        },
        "data": {
            "faces_detected": counts["detect"]["ok"],
            "rejected_detect": counts["detect"]["rejected"],
            "packed": packed["ok"],
            "rejected_total": packed["rejected"],
        },
    }
    return metrics


def plot_curves(model: Path, out: Path) -> None:
    """Loss curves and, when measured, the in-training Frechet distance, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_numbers_csv(model / "losses.csv")
    fid_rows = read_numbers_csv(model / "fid.csv") if (model / "fid.csv").is_file() else []
    fig, axes = plt.subplots(1, 2 if fid_rows else 1, figsize=(10 if fid_rows else 5, 3.2), squeeze=False)
    steps = [r.get("step", math.nan) for r in rows]
    for key in dict.fromkeys(k for r in rows for k in r if k.startswith("loss")):  # loss_d, loss_g; loss (VAE)
        axes[0, 0].plot(steps, [r.get(key, math.nan) for r in rows], label=key, lw=0.8)
    axes[0, 0].set(xlabel="step", title="losses")
    axes[0, 0].legend()
    if fid_rows:
        axes[0, 1].plot([r.get("step", math.nan) for r in fid_rows], [r.get("fd", math.nan) for r in fid_rows], "o-")
        axes[0, 1].set(xlabel="step", title="Frechet distance (fixed noise)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def scored_as(cfg: EvaluateConfig, tags: dict[str, str]) -> dict[str, str]:
    """What makes two runs' distances comparable (the registry's @best compares only such): the Inception resize
    (for Inception's distance), the real subset's size, the number of generated images and the packed set's hash."""
    out = {
        "evaluate.mode": cfg.mode,
        "evaluate.max_real": str(cfg.max_real),
        "evaluate.num_samples": str(cfg.num_samples),
    }
    return out | ({"dataset_sha256": tags["dataset_sha256"]} if "dataset_sha256" in tags else {})


def dataset_hashes(root: Path, processed: Path, stats: Path) -> dict[str, str]:
    """sha256 of the packed ZIP (from refstats) and DVC's md5 of the packed folder (from the project's dvc.lock,
    whose paths are relative to `root`)."""
    out = {}
    status = stats / "stats.json"
    if status.is_file() and "dataset_sha256" in (
        record := read_json(status, "a record of reference statistics", REFSTATS_AGAIN)
    ):
        out["dataset_sha256"] = record["dataset_sha256"]
    lock = root / "dvc.lock"
    if not lock.is_file():
        return out
    try:
        stages = dvc_stages(lock)
    except ParamsError as e:  # a merge left conflict markers in it: the report is still worth writing
        log.warning("%s; the report names no DVC hash of the packed set", e)
        return out
    for stage in stages.values():
        for o in stage.get("outs") or []:
            if isinstance(o, dict) and "path" in o and (root / o["path"]).resolve() == processed.resolve():
                out["dvc_md5"] = o.get("md5", "")
    return out


def run_report(
    params: Params, dataset: str, interim: Path, processed: Path, model: Path, evaluation: Path, dst: Path, tracker=None
) -> dict:
    """Write dst/metrics.json, samples.png, curves.png; then finish the pipeline's MLflow run."""
    from facegan.preprocess.score import score

    metrics = collect(dataset, interim, processed, model, evaluation)
    raw = interim.parent.parent / "raw" / dataset
    scored = score(raw, interim, params.dataset(dataset).detect.annotations)
    if scored:  # ground truth known (generated sets): how well preprocessing recovered it
        metrics["preprocessing"] = scored
    with atomic_dir(dst) as tmp:
        write_text(tmp / "metrics.json", json.dumps(metrics, indent=1))
        shutil.copyfile(_need(model / "samples.png", "train", dataset), tmp / "samples.png")
        plot_curves(model, tmp / "curves.png")
    if params.tracking.enabled and tracker is not None and tracker.folder is not None:
        from facegan import track

        # the exact params of this run, for `facegan reproduce` (copied beside the buffer when it cannot be sent)
        snapshot = tracker.folder / dataset / "params.yaml"
        write_text(snapshot, yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
        tags = {
            "steps": str(metrics["training"]["steps"]),
            # processed is <root>/data/processed/<dataset> (chain.Layout)
            **dataset_hashes(processed.parents[2], processed, processed.parent.parent / "stats" / dataset),
        }
        track.finish_pipeline(
            params.tracking,
            tracker.parent_spec,
            dataset,
            metrics,
            [dst / "samples.png", dst / "metrics.json", dst / "curves.png", snapshot],
            tracker.folder,
            model / "checkpoint.pt",
            tags,
            scored_as(params.evaluate, tags),
        )
    return metrics
