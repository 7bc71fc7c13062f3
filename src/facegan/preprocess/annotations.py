"""The boxes/landmarks file format shared by the `annotations` detect and align backends.

    {"format": "facegan-annotations/1", "landmarks": [...names...],
     "images": {"relative/path.png": [{"box": [x0, y0, x1, y1], "landmarks": [[x, y], ...]}, ...]}}

Coordinates are pixels of the (EXIF-rotated) raw image. `landmarks` per face is optional.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegan.errors import FaceganError, StageInputMissing


class AnnotationsError(FaceganError, ValueError):
    """An annotations file that is not in the format above; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None = None  # Kx2, raw image pixels
    score: float = 1.0

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def _box(values: list) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


def _face(f: dict) -> Face:
    landmarks = np.asarray(f["landmarks"], float) if f.get("landmarks") else None
    if landmarks is not None and (landmarks.ndim != 2 or landmarks.shape[1] != 2 or len(landmarks) not in (5, 68)):
        raise ValueError(f"landmarks of shape {landmarks.shape}, not 5 or 68 [x, y] points")
    return Face(_box(f["box"]), landmarks)


def load_annotations(path: Path) -> dict[str, list[Face]]:
    """Faces per image key; a clear error when the file is missing or malformed."""
    if not path.is_file():
        raise StageInputMissing(f"annotations file not found: {path} (the 'annotations' backend needs one)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {key: [_face(f) for f in faces] for key, faces in data["images"].items()}
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # a list for a mapping, a box of 3 numbers...
        raise AnnotationsError(f"{path}: not a facegan annotations file ({type(e).__name__}: {e})") from None


def iou(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
