"""Preprocessing scored against ground truth (the generated sets carry boxes, landmarks, masks; some real photos
too, see bench/preprocess_accuracy.py): detection recall/precision at IoU 0.5, landmark error in % of the
inter-ocular distance, matte IoU.

Each score names the backend that produced it. A backend that read the ground truth itself (`annotations`)
would score itself against its own input: such a score is reported as `n/a (ground truth used)`, never as 1.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facegan.io import ImageError, read_image
from facegan.manifest import Manifest, read_manifest
from facegan.preprocess import geometry
from facegan.preprocess.align import to_five
from facegan.preprocess.annotations import Face, iou, load_annotations
from facegan.preprocess.common import MASKS

GROUND_TRUTH_USED = "n/a (ground truth used)"
READS_GROUND_TRUTH = {"annotations"}  # backends whose output is the annotations file the scores compare against


def _match(truth: list[Face], box: list[float]) -> Face | None:
    best = max(truth, key=lambda f: iou(f.box, box), default=None)
    return best if best is not None and iou(best.box, box) >= 0.5 else None


def detection(truth: dict[str, list[Face]], rows: Manifest) -> dict:
    """Recall and precision at IoU 0.5 of the accepted detect rows (each true face matched at most once)."""
    rows = [r for r in rows if r.status == "ok"]
    n_true = sum(len(v) for v in truth.values())
    used: set[tuple[str, int]] = set()
    tp = 0
    for r in rows:
        faces = truth.get(r.source, [])
        m = _match(faces, r.face_box)
        if m is not None and (r.source, faces.index(m)) not in used:
            used.add((r.source, faces.index(m)))
            tp += 1
    return {
        "recall": round(tp / max(1, n_true), 4),
        "precision": round(tp / max(1, len(rows)), 4),
        "faces_true": n_true,
        "faces_found": len(rows),
    }


def landmark_errors(truth: dict[str, list[Face]], rows: Manifest) -> list[float]:
    """Per aligned face matched to a true face with landmarks: mean 5-point error / inter-ocular distance."""
    errors = []
    for r in rows:
        if r.status != "ok" or not r.landmarks:
            continue
        m = _match(truth.get(r.source, []), r.face_box)
        if m is None or m.landmarks is None:
            continue
        gt = to_five(m.landmarks)
        iod = float(np.linalg.norm(gt[0] - gt[1]))
        errors.append(float(np.linalg.norm(to_five(np.asarray(r.landmarks)) - gt, axis=1).mean()) / iod)
    return errors


def landmarks(truth: dict[str, list[Face]], rows: Manifest) -> dict:
    errors = landmark_errors(truth, rows)
    return {"landmark_error_iod_pct": round(100 * float(np.mean(errors)), 3) if errors else None, "n": len(errors)}


def matte(raw: Path, matte_dir: Path) -> dict:
    ious = []
    for r in read_manifest(matte_dir):
        gt_path, pred_path = raw / "masks" / r.source, matte_dir / MASKS / (r.file or "")
        if r.status != "ok" or not gt_path.is_file() or not pred_path.is_file():
            continue
        try:
            pred = read_image(pred_path)[..., 0] >= 128
            gt = (
                geometry.warp(read_image(gt_path), np.asarray(r.transform), (pred.shape[1], pred.shape[0]))[..., 0]
                >= 128
            )
        except ImageError:
            continue
        union = np.logical_or(pred, gt).sum()
        if union:
            ious.append(float(np.logical_and(pred, gt).sum() / union))
    return {"matte_iou": round(float(np.mean(ious)), 4) if ious else None, "n": len(ious)}


def backend_of(stage: str, rows: Manifest) -> str:
    """The backend(s) that produced a stage's accepted rows, as its manifest records them."""
    return "+".join(sorted({r.backends[stage] for r in rows if r.status == "ok" and stage in r.backends})) or "none"


def _named(stage: str, rows: Manifest, scores: dict, keys: tuple[str, ...]) -> dict:
    backend = backend_of(stage, rows)
    if set(backend.split("+")) & READS_GROUND_TRUTH:
        scores = {**scores, **dict.fromkeys(keys, GROUND_TRUTH_USED)}
    return {"backend": backend, **scores}


def score(raw: Path, interim: Path, annotations: str = "annotations.json") -> dict | None:
    """The three scores, each with its backend, or None when the raw folder has no ground-truth annotations."""
    if not (raw / annotations).is_file():
        return None
    truth = load_annotations(raw / annotations)
    detected, aligned = read_manifest(interim / "detect"), read_manifest(interim / "align")
    matted = read_manifest(interim / "matte")
    return {
        "detect": _named("detect", detected, detection(truth, detected), ("recall", "precision")),
        "align": _named("align", aligned, landmarks(truth, aligned), ("landmark_error_iod_pct",)),
        "matte": {
            **_named("matte", matted, matte(raw, interim / "matte"), ("matte_iou",)),
            "seeded_by": {"box": backend_of("detect", detected), "landmarks": backend_of("align", aligned)},
        },
    }
