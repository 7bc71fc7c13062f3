"""Stage `align`: similarity-warp each face crop so its 5 landmarks sit on a fixed template.

Landmark backends (LANDMARKERS) share one signature: `landmarker(crop_rgb, row) -> Kx2 landmarks
in raw-image pixels` (5 points: eye centres, nose tip, mouth corners), or None when none found.

Alignment never invents pixels: a face smaller than the template is aligned at its native scale
(a smaller output) and left to the `upscale` stage, whose super-resolution backend is chosen.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facegan.config import AlignConfig
from facegan.io import ImageError, read_image, write_image
from facegan.manifest import Manifest, Row
from facegan.parallel import Pool
from facegan.preprocess import geometry
from facegan.preprocess.annotations import Face, iou
from facegan.preprocess.common import resolve, run_per_image
from facegan.registry import pick

STAGE = "align"
MIN_SIDE = 16
Landmarker = Callable[[np.ndarray, Row], np.ndarray | None]


class AnnotationLandmarker:
    """Landmarks from the annotations file, for the face whose box best overlaps the detected one."""

    def __init__(self, faces: Callable[[str], list[Face]]):
        self.faces = faces  # an image key's faces: models.Annotations pickles as the file's path, not its faces

    def __call__(self, crop: np.ndarray, row: Row) -> np.ndarray | None:
        candidates = [f for f in self.faces(row.source) if f.landmarks is not None]
        if not candidates or row.box is None:
            return None
        box = row.box
        best = max(candidates, key=lambda f: iou(f.box, box))
        return best.landmarks if iou(best.box, box) > 0.3 else None


def _annotations(cfg: AlignConfig, raw: Path) -> Landmarker:
    from facegan.preprocess.models import Annotations

    return AnnotationLandmarker(Annotations(raw / cfg.annotations))


class ModelLandmarker:
    """A landmark model run on the crop inside the detected box; points mapped back to raw pixels."""

    def __init__(self, model: Callable[[np.ndarray, tuple[float, ...]], np.ndarray | None]):
        self.model = model

    def __call__(self, crop: np.ndarray, row: Row) -> np.ndarray | None:
        pts = self.model(crop, tuple(geometry.box_of(row.affine, row.face_box)))
        return None if pts is None else geometry.apply(geometry.invert(row.affine), pts)


class DlibBoxLandmarker(ModelLandmarker):
    """dlib's 68-point predictor was trained inside dlib's own HOG boxes. Inside another detector's box (YuNet's
    and BlazeFace's include the forehead) its error more than doubles (docs/benchmarks.md), so for those rows the
    box is found again by dlib's HOG in the crop; the detected box stays when HOG finds no face overlapping it."""

    DLIB_BOXES = ("hog", "cnn", "annotations")

    def __init__(self, model, hog):
        super().__init__(model)
        self.hog = hog

    def __call__(self, crop: np.ndarray, row: Row) -> np.ndarray | None:
        box = tuple(geometry.box_of(row.affine, row.face_box))
        if row.backends.get("detect", "hog") not in self.DLIB_BOXES:
            best = max(self.hog(crop), key=lambda f: iou(f.box, box), default=None)
            box = best.box if best is not None and iou(best.box, box) >= 0.3 else box
        pts = self.model(crop, box)
        return None if pts is None else geometry.apply(geometry.invert(row.affine), pts)


def _dlib68(cfg: AlignConfig, raw: Path) -> Landmarker:
    from facegan.preprocess.models import DlibDetector, DlibShapes

    shapes = DlibShapes(68)
    shapes.model()  # a missing model file stops the stage before any image
    return DlibBoxLandmarker(shapes, DlibDetector("hog", upsample=1, max_side=4096))


def _fan(cfg: AlignConfig, raw: Path) -> Landmarker:
    from facegan.preprocess.pretrained import FanLandmarks

    fan = FanLandmarks()
    fan.check()
    fan.model()  # a missing or unreadable weights file stops the stage before any image
    return ModelLandmarker(fan)


def _yunet5(cfg: AlignConfig, raw: Path) -> Landmarker:
    from facegan.preprocess.pretrained import YuNet, YuNetLandmarks

    # the face is known to be in the crop: a low threshold, no downscaling
    yunet = YuNet(cfg.model and str(resolve(cfg.model, raw)), min_score=0.3, max_side=4096)
    yunet.check()
    yunet.model()
    return ModelLandmarker(YuNetLandmarks(yunet))


# where eyes, nose tip and mouth corners sit inside a detected face box, as fractions of its width/height
BOX_POINTS = np.array([[0.3, 0.42], [0.7, 0.42], [0.5, 0.6], [0.36, 0.78], [0.64, 0.78]])


def box_landmarks(crop: np.ndarray, row: Row) -> np.ndarray:
    """`box`: no landmark model (anime, drawings): 5 points placed by proportion in the detected box, so
    alignment only centres and scales the face."""
    x0, y0, x1, y1 = row.face_box
    return np.array([x0, y0]) + BOX_POINTS * np.array([x1 - x0, y1 - y0])


LANDMARKERS: dict[str, Callable[[AlignConfig, Path], Landmarker]] = {
    "annotations": _annotations,
    "dlib68": _dlib68,
    "fan": _fan,
    "yunet5": _yunet5,
    "box": lambda cfg, raw: box_landmarks,
}


def to_five(landmarks: np.ndarray) -> np.ndarray:
    """Reduce a landmark set to the 5 template points (68-point iBUG layout or already 5)."""
    pts = np.asarray(landmarks, np.float64)
    if len(pts) == 5:
        return pts
    if len(pts) == 68:
        return np.array([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
    raise ValueError(f"expected 5 or 68 landmarks, got {len(pts)}")


def _fit(cfg: AlignConfig, pts: np.ndarray, side: int) -> np.ndarray:
    """Similarity from crop pixels to a side x side output, by the configured template."""
    if cfg.template == "ffhq":
        return geometry.similarity(geometry.ffhq_quad(pts), geometry.ffhq_target(side))
    return geometry.similarity(pts, geometry.template5(side, cfg.eye_distance, cfg.eye_y))


def within(m: np.ndarray, side: int, shape: tuple[int, ...]) -> bool:
    """Whether every pixel of a side x side warp by `m` reads inside an image of `shape`: the four corner pixels,
    mapped back, lie in [0, w - 1] x [0, h - 1] (OpenCV's pixel centres), give or take half a pixel (a corner 0.1 px
    out reads a tenth of one border pixel)."""
    h, w = shape[:2]
    corners = geometry.apply(geometry.invert(m), [[0, 0], [side - 1, 0], [0, side - 1], [side - 1, side - 1]])
    return bool((corners >= -0.5).all() and (corners[:, 0] <= w - 0.5).all() and (corners[:, 1] <= h - 0.5).all())


def _align_one(row: Row, *, cfg: AlignConfig, landmarker: Landmarker, raw_images: Path, src: Path, dst: Path) -> Row:
    crop = read_image(src / row.out_file)
    found = landmarker(crop, row)
    if found is None:
        raise ImageError("no landmarks found")
    raw_pts = to_five(found)
    crop_pts = geometry.apply(row.affine, raw_pts)
    # fit at full size, then shrink the output if that would upsample the crop
    m = _fit(cfg, crop_pts, cfg.size)
    scale = geometry.scale_of(m)
    side = cfg.size if scale <= 1 else math.ceil(cfg.size / scale)
    if side < MIN_SIDE:
        raise ImageError(f"face too small to align ({side} px < {MIN_SIDE} px)")
    if side != cfg.size:
        m = _fit(cfg, crop_pts, side)
    if within(m, side, crop.shape):
        aligned = geometry.warp(crop, m, (side, side))
    else:  # the aligned square reaches beyond the detect crop (a tight detector box, a wide template): the crop's
        # border would come in as a reflection of it, so the photo itself is warped (its own border only beyond it)
        photo = read_image(raw_images / row.source)
        aligned = geometry.warp(photo, geometry.compose(m, row.affine), (side, side))
    write_image(dst / row.out_file, aligned)
    # how far the 5 points land from the 5-point template (for `ffhq` too: a comparable number)
    residual = np.linalg.norm(
        geometry.apply(m, crop_pts) - geometry.template5(side, cfg.eye_distance, cfg.eye_y), axis=1
    )
    return row.model_copy(
        update={
            "stage": STAGE,
            "landmarks": raw_pts.round(3).tolist(),
            "transform": geometry.compose(m, row.affine).tolist(),
            "backends": {**row.backends, STAGE: cfg.backend},
            "extra": {
                **row.extra,
                "align_scale": round(scale, 4),
                "align_side": side,
                "align_residual": round(float(residual.mean()) / side, 5),
            },
        }
    )


def run_align(cfg: AlignConfig, raw: Path, src: Path, dst: Path, workers: int | Pool = 1) -> Manifest:
    """Align every accepted crop of `src` (detect output) into `dst`."""
    landmarker = pick(LANDMARKERS, cfg.backend, "align backend")(cfg, raw)
    fn = functools.partial(_align_one, cfg=cfg, landmarker=landmarker, raw_images=raw / "images")
    return run_per_image(STAGE, fn, src, dst, workers)
