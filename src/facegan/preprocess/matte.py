"""Stage `matte`: separate the head from the background and fill the background with one colour.

Backends (MATTERS) share one signature: `matter(image_rgb, row) -> float mask in [0, 1]`
(1 = head). The image goes on with the background filled with `fill`; the mask is saved as masks/<file>
beside it (for scoring) and, with `rgba`, the unfilled cut-out with its soft alpha as rgba/<file> (as PNG).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from facegan.config import MatteConfig
from facegan.io import read_image, write_image
from facegan.manifest import Manifest, Row
from facegan.parallel import Pool
from facegan.preprocess import geometry
from facegan.preprocess.common import MASKS, RGBA, run_per_image
from facegan.registry import pick

STAGE = "matte"
Matter = Callable[[np.ndarray, Row], np.ndarray]


def head_rect(row: Row, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The region that may hold the head: the face box widened for hair (above) and neck (below)."""
    x0, y0, x1, y1 = geometry.box_of(row.affine, row.face_box)
    w, h = x1 - x0, y1 - y0
    H, W = shape[:2]
    return (
        max(2, int(x0 - 0.35 * w)),
        max(2, int(y0 - 0.6 * h)),
        min(W - 3, int(x1 + 0.35 * w)),
        min(H - 3, int(y1 + 0.5 * h)),
    )


class GrabCutMatter:
    """OpenCV GrabCut seeded from the face box (probable head) and the landmark hull (sure head)."""

    def __init__(self, iterations: int):
        self.iterations = iterations

    def __call__(self, image: np.ndarray, row: Row) -> np.ndarray:
        mask = np.full(image.shape[:2], cv2.GC_BGD, np.uint8)
        x0, y0, x1, y1 = head_rect(row, image.shape)
        mask[y0:y1, x0:x1] = cv2.GC_PR_FGD
        if row.landmarks:
            hull = cv2.convexHull(geometry.apply(row.affine, row.landmarks).astype(np.int32))
            cv2.fillConvexPoly(mask, hull, cv2.GC_FGD)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut's k-means init is random: keep the stage deterministic
        # rect is unused with GC_INIT_WITH_MASK: None is what OpenCV expects (its stubs say Sequence[int])
        cv2.grabCut(
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
            mask,
            None,
            bgd,
            fgd,
            self.iterations,  # type: ignore[call-overload]
            cv2.GC_INIT_WITH_MASK,
        )
        fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
        return largest_component(fg).astype(np.float32)


def largest_component(fg: np.ndarray) -> np.ndarray:
    """Keep the biggest connected blob of a 0/1 mask and fill its holes."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return fg
    keep = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    contours, _ = cv2.findContours(keep, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(keep)
    cv2.drawContours(filled, contours, -1, 1, -1)
    return filled


def _none(image: np.ndarray, row: Row) -> np.ndarray:
    return np.ones(image.shape[:2], np.float32)


def _rembg(cfg: MatteConfig) -> Matter:
    from facegan.preprocess.pretrained import RembgMatter

    matter = RembgMatter(cfg.model)
    matter.check()
    matter.model()  # an unreadable model file stops the stage before any image
    return matter


MATTERS: dict[str, Callable[[MatteConfig], Matter]] = {
    "grabcut": lambda cfg: GrabCutMatter(cfg.iterations),
    "rembg": _rembg,
    "none": lambda cfg: _none,
}


def _matte_one(row: Row, *, cfg: MatteConfig, matter: Matter, src: Path, dst: Path) -> Row:
    image = read_image(src / row.out_file)
    alpha = matter(image, row)
    soft = cv2.GaussianBlur(alpha, (0, 0), 0.7)[..., None] if cfg.backend != "none" else alpha[..., None]
    out = image * soft + np.array(cfg.fill, np.float32) * (1 - soft)
    write_image(dst / row.out_file, np.clip(out + 0.5, 0, 255).astype(np.uint8))
    write_image(dst / MASKS / row.out_file, (alpha >= 0.5).astype(np.uint8) * 255)
    if cfg.rgba:
        a = np.clip(soft[..., 0] * 255 + 0.5, 0, 255).astype(np.uint8)
        write_image(dst / RGBA / Path(row.out_file).with_suffix(".png"), np.dstack([image, a]))
    return row.model_copy(
        update={
            "stage": STAGE,
            "backends": {**row.backends, STAGE: cfg.backend},
            "extra": {**row.extra, "matte_coverage": round(float(alpha.mean()), 4)},
        }
    )


def run_matte(cfg: MatteConfig, src: Path, dst: Path, workers: int | Pool = 1) -> Manifest:
    matter = pick(MATTERS, cfg.backend, "matte backend")(cfg)
    return run_per_image(STAGE, functools.partial(_matte_one, cfg=cfg, matter=matter), src, dst, workers)
