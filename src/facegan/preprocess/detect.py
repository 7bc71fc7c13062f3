"""Stage `detect`: find faces in raw images and cut out square crops with context around each.

Backends (DETECTORS) share one signature: `detector(image_rgb, key) -> list[Face]` in raw pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facegan.config import DetectConfig
from facegan.data.sources import shown_name, utf8_name
from facegan.errors import StageError, StageInputMissing
from facegan.io import IMAGE_SUFFIXES, ImageError, atomic_dir, is_image_file, read_image, visible_files, write_image
from facegan.manifest import Manifest, Row
from facegan.parallel import Pool, map_items
from facegan.preprocess import geometry
from facegan.preprocess.annotations import Face
from facegan.preprocess.common import CONTACT_SHEET, MASKS, RGBA, accepted, finish, guarded, resolve
from facegan.registry import pick

log = logging.getLogger(__name__)

STAGE = "detect"
Detector = Callable[[np.ndarray, str], list[Face]]
_FACE = re.compile(r"(.*)_f\d+")


class AnnotationDetector:
    """Boxes from an annotations file (hand-made, or the generator's ground truth)."""

    def __init__(self, faces: Callable[[str], list[Face]]):
        self.faces = faces  # an image key's faces: models.Annotations pickles as the file's path, not its faces

    def __call__(self, image: np.ndarray, key: str) -> list[Face]:
        return self.faces(key)


def _annotations(cfg: DetectConfig, raw: Path) -> Detector:
    from facegan.preprocess.models import Annotations

    return AnnotationDetector(Annotations(raw / cfg.annotations))


def _dlib(kind: str) -> Callable[[DetectConfig, Path], Detector]:
    from facegan.preprocess.models import DlibDetector

    return lambda cfg, raw: DlibDetector(kind, cfg.upsample, cfg.max_side)


def _ready(detector):
    """Check and load a model-file backend here, so a missing or unreadable file stops the stage before any image."""
    detector.check()
    detector.model()
    return detector


def _blazeface(cfg: DetectConfig, raw: Path) -> Detector:
    from facegan.preprocess.pretrained import BlazeFace

    return _ready(BlazeFace(cfg.blazeface, cfg.model and str(resolve(cfg.model, raw)), cfg.score_threshold))


def _yunet(cfg: DetectConfig, raw: Path) -> Detector:
    from facegan.preprocess.pretrained import YuNet

    return _ready(YuNet(cfg.model and str(resolve(cfg.model, raw)), cfg.score_threshold, cfg.max_side))


def _cascade(cfg: DetectConfig, raw: Path) -> Detector:
    from facegan.preprocess.models import CascadeDetector

    path = None if cfg.cascade is None else str(resolve(cfg.cascade, raw))
    detector = CascadeDetector(path, cfg.min_size, cfg.max_side, equalize=cfg.backend == "anime")
    detector.model()  # a missing or unreadable cascade stops the stage before any image
    return detector


DETECTORS: dict[str, Callable[[DetectConfig, Path], Detector]] = {
    "annotations": _annotations,
    "hog": _dlib("hog"),
    "cnn": _dlib("cnn"),
    "haar": _cascade,
    "anime": _cascade,
    "blazeface": _blazeface,
    "yunet": _yunet,
}


def output_name(key: str, k: int | None, stem: str | None = None) -> str:
    """Crop file name for face k of raw image `key`: its path with the suffix folded into the name (`a/b.jpg` ->
    `a/b_jpg.png`), or `stem` (from `crop_stems`) where that name could be another image's. A name the stages write
    beside the faces gets a `_`: `masks/a.png` -> `masks_/a.png` (the matte stage's masks go to `masks/`),
    `contact_sheet.png` -> `contact_sheet_.png` (its faces `contact_sheet__f0.png`, ...); `crop_stems` tells such
    a crop from one of `masks_/a.png`."""
    if stem is None:
        p = Path(key)
        stem = str(p.with_suffix("")) + ("" if p.suffix.lower() == ".png" else "_" + p.suffix.lstrip(".").lower())
        parts = list(Path(stem).parts)
        # casefold: one name on case-insensitive disks
        if (parts[0].casefold() in (MASKS, RGBA) and len(parts) > 1) or (
            len(parts) == 1 and f"{parts[0]}.png".casefold() == CONTACT_SHEET
        ):
            stem = str(Path(parts[0] + "_", *parts[1:]))
        stem = _fit(stem)
    return f"{stem}{'' if k is None else f'_f{k}'}.png"


NAME_BYTES = 160  # a crop name's last part before `_h<hash>`, `_f<k>`, `.png` and a temporary name's `.` + `.tmp.png`


def _fit(stem: str) -> str:
    """`stem` with its last part cut to NAME_BYTES of UTF-8 plus a hash of the whole part: a photo named with up to
    the file system's 255 bytes got a crop name over them once `_f0.png` and `.tmp.png` were added, and the whole
    detect stage failed (Errno 36) on that one photo."""
    head, _, last = stem.rpartition("/")
    raw = last.encode()
    if len(raw) <= NAME_BYTES:
        return stem
    short = raw[: NAME_BYTES - 11].decode("utf-8", "ignore") + "~" + hashlib.sha256(raw).hexdigest()[:10]
    return f"{head}/{short}" if head else short


def crop_stems(keys: list[str], multi_face: bool) -> dict[str, str]:
    """Crop names for the images whose usual name (`output_name`) another image's crop could get too: `x.jpg` and
    `x.JPG`, names differing only in case (one file on case-insensitive disks), and with several faces an image,
    `two_jpg_f1.png` and face 1 of `two.jpg`. Those get their usual name plus a hash of their key: a file per crop,
    named by its key alone, whatever order workers take. Every other image keeps its usual name (not in the dict)."""

    def clashes(stems: dict[str, str]) -> set[str]:
        count = Counter(s.casefold() for s in stems.values())
        out = {k for k, s in stems.items() if count[s.casefold()] > 1}
        if multi_face:  # `<stem>_f<k>` is face k of the image with that stem
            out |= {k for k, s in stems.items() if (m := _FACE.fullmatch(s.casefold())) and count[m.group(1)]}
        return out

    stems = {k: output_name(k, None)[: -len(".png")] for k in keys}
    # `_h<hash>`, never `_f<digits>`: a renamed crop cannot read as a face of another image
    renamed = {k: f"{stems[k]}_h{hashlib.sha256(k.encode()).hexdigest()[:8]}" for k in clashes(stems)}
    if still := clashes(stems | renamed):  # only for files named after these very hashes
        raise StageError(f"crop names of {', '.join(sorted(still)[:3])} meet other images' crop names: rename them")
    return renamed


def crop_transform(box: tuple[float, ...], margin: float, square: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """Translation from raw pixels to a crop centred on the box, (1 + 2*margin) times its size; square
    crops take the longer side. Returns the 2x3 transform and the crop's (width, height)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if square:
        w = h = max(w, h)
    cw, ch = max(1, math.ceil(w * (1 + 2 * margin))), max(1, math.ceil(h * (1 + 2 * margin)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[1.0, 0.0, cw / 2 - cx], [0.0, 1.0, ch / 2 - cy]]), (cw, ch)


def plausible(face: Face, w: int, h: int) -> Face | None:
    """The face as a detector could mean it for a w x h image, or None: a finite box, not empty, overlapping the
    image, at most twice its size (YuNet on some thin strips answered boxes of 10^11 px; a NaN box cannot be
    written to the manifest). Landmarks that are not all finite are dropped, the face kept."""
    x0, y0, x1, y1 = face.box
    overlaps = x0 < x1 and y0 < y1 and x1 > 0 and y1 > 0 and x0 < w and y0 < h
    if not (np.isfinite(face.box).all() and overlaps and x1 - x0 <= 2 * w and y1 - y0 <= 2 * h):
        return None
    if face.landmarks is not None and not np.isfinite(face.landmarks).all():
        return dataclasses.replace(face, landmarks=None)
    return face


def _detect_one(
    row: Row, *, cfg: DetectConfig, detector: Detector, images: Path, dst: Path, stems: dict[str, str]
) -> list[Row]:
    image = read_image(images / row.source)
    h, w = image.shape[:2]
    if min(h, w) < cfg.min_size:
        raise ImageError(f"image too small for a face of detect.min_size {cfg.min_size} px ({w}x{h} px)")
    found = detector(image, row.source)
    faces = [f for f in (plausible(f, w, h) for f in found if f.score >= cfg.score_threshold) if f is not None]
    if not faces:
        raise ImageError("no face found")
    big = [f for f in faces if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= cfg.min_size]
    if not big:
        raise ImageError(f"faces too small (< {cfg.min_size} px)")
    big.sort(key=lambda f: -f.area)
    chosen = big[:1] if cfg.multi_face == "largest" else big
    out = []
    for k, face in enumerate(chosen):
        m, size = crop_transform(face.box, cfg.margin, cfg.square)
        crop = geometry.warp(image, m, size, border=geometry.cv2.BORDER_REPLICATE)
        name = output_name(row.source, None if len(chosen) == 1 else k, stems.get(row.source))
        write_image(dst / name, crop)
        out.append(
            row.model_copy(
                update={
                    "file": name,
                    "stage": STAGE,
                    "box": list(face.box),
                    "landmarks": None if face.landmarks is None else face.landmarks.tolist(),
                    "transform": m.tolist(),
                    "backends": {STAGE: cfg.backend},
                    "extra": {
                        "faces_found": len(faces),
                        "score": face.score,
                        "image_w": image.shape[1],
                        "image_h": image.shape[0],
                    },
                }
            )
        )
    return out


def _detect_guarded(row: Row, **kw) -> list[Row]:
    result = guarded(STAGE, _detect_one, row, **kw)
    return result if isinstance(result, list) else [result]


def run_detect(cfg: DetectConfig, raw: Path, dst: Path, workers: int | Pool = 1) -> Manifest:
    """Detect faces in raw/images/*; one manifest row per face found, or per rejected file."""
    images = raw / "images"
    if not images.is_dir():
        raise StageInputMissing(f"no images folder at {images}")
    files = visible_files(images)  # every one gets a row: a file that is no image a rejected one
    keys = [str(p.relative_to(images)) for p in files]
    if bad := [shown_name(k) for k in keys if not utf8_name(k)]:
        raise StageInputMissing(
            f"{images}: {len(bad)} file name(s) are not UTF-8 text ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); manifests store names as UTF-8: rename them"
        )
    if not any(is_image_file(p) for p in files):
        raise StageInputMissing(f"no images in {images} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    detector = pick(DETECTORS, cfg.backend, "detect backend")(cfg, raw)
    rows = [Row(source=k, stage=STAGE) for k in keys]
    stems = crop_stems([r.source for r in rows], cfg.multi_face != "largest")
    with atomic_dir(dst, f"{STAGE} run") as tmp:
        fn = functools.partial(_detect_guarded, cfg=cfg, detector=detector, images=images, dst=tmp, stems=stems)
        out = [r for group in map_items(fn, rows, workers, desc=STAGE) for r in group]
        finish(STAGE, tmp, out)
    accepted(STAGE, out)
    return out
