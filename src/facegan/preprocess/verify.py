"""Stage `verify`: keep only faces of one identity, by the distance of their face encoding to the
closest encoding of a folder of reference photos (dlib's 128-D ResNet encoder).

Backends (VERIFIERS) share one signature: `verifier(crop_rgb, box_in_crop) -> distance` (lower = the
same person). `none` passes every face through. The distance goes into the manifest either way.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegan.config import VerifyConfig
from facegan.errors import ParamsError, StageInputMissing
from facegan.io import ImageError, read_image, split_images
from facegan.manifest import Manifest, Row
from facegan.parallel import Pool
from facegan.preprocess import geometry
from facegan.preprocess.annotations import iou
from facegan.preprocess.common import run_per_image
from facegan.registry import pick

log = logging.getLogger(__name__)

STAGE = "verify"
Verifier = Callable[[np.ndarray, tuple[float, ...]], float]


MATCH_IOU = 0.3  # a HOG face overlapping the detector's box this much is the same face
HOG_FACE_MAX = 200  # px: verify's HOG sees a larger face scaled down to this (a 1200 px crop took 0.34 s)
HOG_FACE = 100  # px: a smaller face is looked for with one upsampling (HOG finds faces from ~80 px, 40 with it)


class EncodingVerifier:
    """Distance of a face's encoding to the nearest reference encoding. The face is encoded in the box dlib's HOG
    detector, the references' detector, finds over it in the crop: dlib's 5-point shapes (and so the encoder's
    face chip) follow the box they are given, and other detectors frame faces otherwise (a YuNet box added
    0.02-0.14 to the distance of the same person's photos, 0.04-0.06 before). Where HOG finds no face over
    it (IoU < MATCH_IOU: small, turned or drawn faces) the detector's own box is used."""

    def __init__(self, references: np.ndarray, jitter: int = 0):
        from facegan.preprocess.models import DlibDetector, DlibEncoder

        self.references, self.encoder = references, DlibEncoder(jitter)
        # HOG on the crop brought down to a face of HOG_FACE_MAX px (its max_side per crop), upsampled once for a
        # face under HOG_FACE px
        self.hog = {up: DlibDetector("hog", up, max_side=1 << 16) for up in (0, 1)}

    def __call__(self, crop: np.ndarray, box: tuple[float, ...]) -> float:
        face = min(box[2] - box[0], box[3] - box[1])
        s = min(1.0, HOG_FACE_MAX / face) if face > 0 else 1.0
        found = self.hog[int(face * s < HOG_FACE)](crop, max_side=math.ceil(max(crop.shape[:2]) * s))
        hog = max((f.box for f in found), key=lambda b: iou(b, box), default=None)
        enc = self.encoder(crop, hog if hog is not None and iou(hog, box) >= MATCH_IOU else box)
        return float(np.linalg.norm(self.references - enc, axis=1).min())


@dataclass
class Reference:
    """A reference photo: its largest HOG face (`image`, `box`), or why it has none (`why`)."""

    name: str  # its path in the folder
    image: np.ndarray | None = None
    box: tuple[float, ...] | None = None
    why: str = ""


def references(folder: Path, max_side: int = 1600) -> Iterator[Reference]:
    """Each reference photo of `folder` with its largest HOG face (dlib's HOG: the references' detector), one at a
    time; StageInputMissing when the folder holds no image file."""
    from facegan.preprocess.models import DlibDetector

    files, others = split_images(folder) if folder.is_dir() else ([], [])
    said = f"{len(others)} file(s) there are no image by their suffix, e.g. {others[0].name}" if others else ""
    if not files:
        raise StageInputMissing(f"verify.references: no reference photos in {folder}" + (f" ({said})" if said else ""))
    if said:
        log.warning("%s: %s, not used", folder, said)
    detector = DlibDetector("hog", 1, max_side)
    for f in files:
        name = f.relative_to(folder).as_posix()
        try:
            image = read_image(f)
        except ImageError as e:
            yield Reference(name, why=str(e))
            continue
        faces = sorted(detector(image), key=lambda face: -face.area)
        yield Reference(name, image, faces[0].box) if faces else Reference(name, why="no face found")


def no_face_in_any(n: int, folder: Path, what: str = "verify.references") -> StageInputMissing:
    return StageInputMissing(
        f"{what}: no face found in any of the {n} photos in {folder}: add photos in which "
        "the person's face is clear, frontal and not tiny"
    )


def reference_encodings(folder: Path, max_side: int = 1600) -> np.ndarray:
    """One encoding per reference photo (its largest HOG face); photos without a face are skipped, loudly."""
    from facegan.preprocess.models import DlibEncoder

    encoder, out, n = DlibEncoder(), [], 0
    for ref in references(folder, max_side):
        n += 1
        if ref.image is None or ref.box is None:
            log.warning("reference %s skipped: %s", ref.name, ref.why)
            continue
        out.append(encoder(ref.image, ref.box))
    if not out:
        raise no_face_in_any(n, folder)
    log.info("verify: %d reference encodings from %s", len(out), folder)
    return np.stack(out)


def faceless_references(folder: Path, what: str, shown: Path, max_side: int = 1600) -> dict[str, str]:
    """The reference photos in `folder` that `verify` will not use (name -> why: unreadable, no face found), found
    as it finds them; StageInputMissing when that is every one (naming `what` and the folder as `shown`)."""
    skipped, n = {}, 0
    for ref in references(folder, max_side):
        n += 1
        if ref.box is None:
            skipped[ref.name] = ref.why
    if len(skipped) == n:
        raise no_face_in_any(n, shown, what)
    return skipped


def _dlib(cfg: VerifyConfig, raw: Path) -> Verifier:
    if not cfg.references:
        raise ParamsError("verify.backend 'dlib' needs verify.references: a folder of photos of the person to keep")
    folder = Path(cfg.references).expanduser()
    folder = folder if folder.is_absolute() else raw / folder
    return EncodingVerifier(reference_encodings(folder))


VERIFIERS: dict[str, Callable[[VerifyConfig, Path], Verifier | None]] = {"none": lambda cfg, raw: None, "dlib": _dlib}


def _verify_one(row: Row, *, cfg: VerifyConfig, verifier: Verifier | None, src: Path, dst: Path) -> Row:
    extra = dict(row.extra)
    if verifier is not None:
        crop = read_image(src / row.out_file)
        distance = verifier(crop, tuple(geometry.box_of(row.affine, row.face_box)))
        extra["verify_distance"] = round(distance, 4)
        if distance > cfg.tolerance:
            return row.model_copy(update={"extra": extra}).reject(
                STAGE, f"another person (distance {distance:.2f} > tolerance {cfg.tolerance})"
            )
    (dst / row.out_file).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / row.out_file, dst / row.out_file)
    return row.model_copy(update={"stage": STAGE, "extra": extra, "backends": {**row.backends, STAGE: cfg.backend}})


def run_verify(cfg: VerifyConfig, raw: Path, src: Path, dst: Path, workers: int | Pool = 1) -> Manifest:
    """Check every accepted crop of `src` (detect output) against the reference identity."""
    verifier = pick(VERIFIERS, cfg.backend, "verify backend")(cfg, raw)
    return run_per_image(STAGE, functools.partial(_verify_one, cfg=cfg, verifier=verifier), src, dst, workers)
