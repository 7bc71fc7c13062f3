"""Frechet distance and KID between two folders of images (`facegan fid DIR1 DIR2`)."""

from __future__ import annotations

import logging
from pathlib import Path

from facegan.config import EvaluateConfig
from facegan.errors import StageInputMissing
from facegan.evaluate.extractors import make_extractor
from facegan.evaluate.fid import feature_stats, frechet_distance, kid
from facegan.io import list_images

log = logging.getLogger(__name__)


def compare_folders(
    a: Path, b: Path, cfg: EvaluateConfig, extractor: str = "inception", classifier_dir: Path | None = None
) -> dict:
    """FD and KID of folder b against folder a in one extractor's feature space (`attributes`: the classifier in
    `classifier_dir`), `copies`: how many of b's images have the pixels of one of a's (a copy of the reference
    is no measure of a generator), and `same_images`: whether b holds exactly a's images."""
    paths = {}
    for folder in (a, b):
        paths[folder] = list_images(folder)
        if len(paths[folder]) < 2:
            raise StageInputMissing(f"{folder}: needs at least 2 images, found {len(paths[folder])}")
    ex = make_extractor(extractor, cfg, classifier_dir)
    da: list[bytes] = []
    db: list[bytes] = []
    fa = ex.folder(paths[a], desc=f"features of {a.name}", digests=da)
    fb = ex.folder(paths[b], desc=f"features of {b.name}", digests=db)
    in_a = set(da)
    copies = sum(d in in_a for d in db)
    if copies:
        log.warning(
            "%d of the %d images of %s %s identical (pixel for pixel) to images of %s: a score of images against "
            "themselves measures no generator",
            copies,
            len(db),
            b,
            "is" if copies == 1 else "are",
            a,
        )
    sa = feature_stats(fa, extractor=extractor, mode=cfg.mode)
    sb = feature_stats(fb, extractor=extractor, mode=cfg.mode)
    kid_mean, kid_std = kid(fa, fb, seed=cfg.seed)
    return {
        "fd": frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma),
        "kid": kid_mean,
        "kid_std": kid_std,
        "n_a": len(fa),
        "n_b": len(fb),
        "copies": copies,
        "same_images": sorted(da) == sorted(db),  # the reference itself (a subset of it, or copies, still score)
        "extractor": extractor,
        "mode": cfg.mode,
    }
