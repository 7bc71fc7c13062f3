"""Preprocessing scored against ground truth (the generated `cartoon` sets carry boxes, landmarks, masks):
detection recall/precision at IoU 0.5, landmark error in % of the inter-ocular distance, matte IoU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facegan.io import ImageError, read_image
from facegan.manifest import read_manifest
from facegan.preprocess import geometry
from facegan.preprocess.align import to_five
from facegan.preprocess.annotations import Face, iou, load_annotations


def _match(truth: list[Face], box: list[float]) -> Face | None:
    best = max(truth, key=lambda f: iou(f.box, box), default=None)
    return best if best is not None and iou(best.box, box) >= 0.5 else None


def detection(truth: dict[str, list[Face]], detect: Path) -> dict:
    rows = [r for r in read_manifest(detect) if r.status == "ok"]
    n_true = sum(len(v) for v in truth.values())
    used: set[tuple[str, int]] = set()
    tp = 0
    for r in rows:
        faces = truth.get(r.source, [])
        m = _match(faces, r.box)
        if m is not None and (r.source, faces.index(m)) not in used:
            used.add((r.source, faces.index(m)))
            tp += 1
    return {"recall": round(tp / max(1, n_true), 4), "precision": round(tp / max(1, len(rows)), 4),
            "faces_true": n_true, "faces_found": len(rows)}


def landmarks(truth: dict[str, list[Face]], align: Path) -> dict:
    errors = []
    for r in read_manifest(align):
        if r.status != "ok" or not r.landmarks:
            continue
        m = _match(truth.get(r.source, []), r.box)
        if m is None or m.landmarks is None:
            continue
        gt = to_five(m.landmarks)
        iod = float(np.linalg.norm(gt[0] - gt[1]))
        errors.append(float(np.linalg.norm(np.asarray(r.landmarks) - gt, axis=1).mean()) / iod)
    return {"landmark_error_iod_pct": round(100 * float(np.mean(errors)), 3) if errors else None, "n": len(errors)}


def matte(raw: Path, matte_dir: Path) -> dict:
    ious = []
    for r in read_manifest(matte_dir):
        gt_path, pred_path = raw / "masks" / r.source, matte_dir / "masks" / (r.file or "")
        if r.status != "ok" or not gt_path.is_file() or not pred_path.is_file():
            continue
        try:
            pred = read_image(pred_path)[..., 0] >= 128
            gt = geometry.warp(read_image(gt_path), np.asarray(r.transform), (pred.shape[1], pred.shape[0]))[..., 0] >= 128
        except ImageError:
            continue
        union = np.logical_or(pred, gt).sum()
        if union:
            ious.append(float(np.logical_and(pred, gt).sum() / union))
    return {"matte_iou": round(float(np.mean(ious)), 4) if ious else None, "n": len(ious)}


def score(raw: Path, interim: Path, annotations: str = "annotations.json") -> dict | None:
    """All three scores, or None when the raw folder has no ground-truth annotations."""
    if not (raw / annotations).is_file():
        return None
    truth = load_annotations(raw / annotations)
    return {"detect": detection(truth, interim / "detect"), "align": landmarks(truth, interim / "align"),
            "matte": matte(raw, interim / "matte")}
