"""Face models for the preprocessing backends: dlib (HOG, CNN, 68/5-point predictors, 128-D encoder)
and OpenCV cascades, located offline and loaded lazily once per worker process (models with downloaded
weights: facegan.preprocess.pretrained).

dlib's model files ship in the `face_recognition_models` wheel; OpenCV's frontal-face cascade ships
in `cv2.data`. Heavy imports happen on first use, so `facegan --help` stays fast and backend objects
pickle cheaply into worker processes (each process builds its own model once).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from facegan.errors import FaceganError, ModelFileInvalid, ModelFileMissing
from facegan.preprocess.annotations import Face, load_annotations

log = logging.getLogger(__name__)


class ModelFileError(FaceganError):
    """A model file that cannot be used: one line naming it and what to do (the CLI and stages print it, exit 2)."""


class ModelMissing(ModelFileError, ModelFileMissing):
    """A model file that is not installed; the message says which file, where it was looked for, how to get it."""


class ModelUnreadable(ModelFileError, ModelFileInvalid):
    """A model file that is there but truncated or of another kind (see pretrained.loading)."""


def dlib_model(name: str) -> Path:
    """Path of one of dlib's model files from the face_recognition_models wheel."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pkg_resources deprecation warning
            import face_recognition_models
    except ImportError as e:
        raise ModelMissing(
            f"dlib model {name} needs the face_recognition_models package: pip install face_recognition_models"
        ) from e
    path = Path(face_recognition_models.__file__).parent / "models" / name
    if not path.is_file():
        raise ModelMissing(f"{name} not found in {path.parent} (reinstall face_recognition_models)")
    return path


# models built in this process, shared by every copy of a backend: a worker unpickles the stage's backend
# once per chunk of images, and must not read a 100 MB model file again each time; each with the lock its users
# hold (Lazy.using)
_MODELS: dict[tuple, tuple[object, threading.Lock]] = {}
_LOCK = threading.Lock()
LOADS: Counter[str] = Counter()  # model loads in this process, per backend class (logs and tests)


def forget_loaded() -> None:
    """Drop the models this process has loaded: the next use loads them again, as a stage's fresh process does
    (the benches time a stage run in this process against pools of new processes, model loading on both sides)."""
    with _LOCK:
        _MODELS.clear()


class Lazy:
    """Base for backends holding a heavy model: built on first use in each process, never pickled, and
    shared by every equal copy in the process (same class and same settings: see `cache_key`). Run it inside
    `using()`: threads of one process (a Dask worker's) then take turns."""

    _model = None
    _in_use: threading.Lock | None = None
    # whether threads may run the model at once: OpenCV's and dlib's keep per-call state (YuNet's input size,
    # cascade and network buffers), and two threads in one crash or mix their results
    thread_safe = False

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_model", "_in_use")}

    def cache_key(self) -> tuple:
        """What the loaded model depends on: the class and its plain settings (strings, numbers, paths)."""
        plain = (str, int, float, bool, type(None), Path)
        return (
            type(self).__module__,
            type(self).__qualname__,
            *sorted((k, str(v)) for k, v in self.__getstate__().items() if isinstance(v, plain)),
        )

    def model(self):
        if self._model is None:
            key = self.cache_key()
            with _LOCK:  # a Dask worker may run chunks on several threads
                if key not in _MODELS:
                    _MODELS[key] = self.load(), threading.Lock()
                    LOADS[type(self).__name__] += 1
                    log.debug("loaded %s in process %d", key, os.getpid())
            self._model, self._in_use = _MODELS[key]
        return self._model

    @contextmanager
    def using(self) -> Iterator:
        """The model, for this thread alone while the block runs (for all at once where `thread_safe`)."""
        model = self.model()
        with nullcontext() if self.thread_safe or self._in_use is None else self._in_use:
            yield model

    def load(self):  # pragma: no cover - overridden
        raise NotImplementedError


class Annotations(Lazy):
    """The faces of an annotations file per image key (the `annotations` backends'), read once per process. It
    holds the file's absolute path and a stamp of its version, so a backend pickles in a few hundred bytes into
    every chunk of images whatever the file's size (the backends held the faces: O(images^2) bytes pickled a
    stage); a rewritten file has another stamp, so a long-running process (`facegan serve`) reads it again."""

    thread_safe = True  # a dict that is only read

    def __init__(self, path: Path):
        self.path = os.path.abspath(path)  # Dask workers may run in another working directory
        self.version = stamp(Path(self.path))
        self.model()  # a missing or malformed file stops the stage here, before any image

    def __call__(self, key: str) -> list[Face]:
        with self.using() as faces:
            return faces.get(key, [])

    def load(self) -> dict[str, list[Face]]:
        mine = self.cache_key()
        for key in [k for k in _MODELS if k[:2] == mine[:2] and ("path", self.path) in k]:
            del _MODELS[key]  # an earlier version of this file (model() calls load() holding _LOCK)
        return load_annotations(Path(self.path))


def stamp(path: Path) -> str:
    """The version of a file as far as its readers can tell: modification time (ns) and size ("" when absent)."""
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_mtime_ns}:{st.st_size}"


def downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Detect on a copy no larger than max_side (huge photos gain nothing but seconds); returns the scale."""
    import cv2

    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s == 1.0:
        return image, 1.0
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA), s


DLIB_MIN_SIDE = 8


class DlibDetector(Lazy):
    """dlib's HOG + linear SVM detector (`hog`) or its CNN (MMOD) detector (`cnn`)."""

    def __init__(self, kind: str, upsample: int, max_side: int):
        self.kind, self.upsample, self.max_side = kind, upsample, max_side

    def load(self):
        import dlib

        if self.kind == "hog":
            return dlib.get_frontal_face_detector()
        return dlib.cnn_face_detection_model_v1(str(dlib_model("mmod_human_face_detector.dat")))

    def __call__(self, image: np.ndarray, key: str = "", max_side: int | None = None) -> list[Face]:
        """Faces in `image`, looked for on a copy no larger than `max_side` (default: the detector's)."""
        small, s = downscale(image, max_side or self.max_side)
        if min(small.shape[:2]) < DLIB_MIN_SIDE:  # no face fits; the CNN raises on images under 4 px a side
            return []
        with self.using() as det:
            if self.kind == "hog":
                rects, scores, _ = det.run(small, self.upsample, 0.0)
                found = list(zip(rects, scores, strict=True))
            else:
                found = [(d.rect, d.confidence) for d in det(small, self.upsample)]
        return [
            Face((r.left() / s, r.top() / s, (r.right() + 1) / s, (r.bottom() + 1) / s), None, float(sc))
            for r, sc in found
        ]


class CascadeDetector(Lazy):
    """OpenCV cascade (`haar`: cv2.data's frontal face; `anime`: lbpcascade_animeface.xml from params)."""

    def __init__(self, path: str | None, min_size: int, max_side: int, equalize: bool):
        self.path, self.min_size, self.max_side, self.equalize = path, min_size, max_side, equalize

    def load(self):
        import cv2

        path = self.path or str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]  # cv2.data has no stubs
        if not Path(path).is_file():
            raise ModelMissing(
                f"cascade file not found: {path} (set detect.cascade; the anime cascade is "
                "lbpcascade_animeface.xml from github.com/nagadomi/lbpcascade_animeface)"
            )
        unreadable = ModelUnreadable(f"{path}: OpenCV could not load this cascade (truncated, or not a cascade XML)")
        try:
            cascade = cv2.CascadeClassifier(path)
        except (cv2.error, SystemError):  # a file that is no XML: OpenCV's parser raises (as a SystemError)
            raise unreadable from None
        if cascade.empty():
            raise unreadable
        return cascade

    def __call__(self, image: np.ndarray, key: str = "") -> list[Face]:
        import cv2

        small, s = downscale(image, self.max_side)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        side = max(8, round(self.min_size * s))
        with self.using() as cascade:
            boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        return [Face((x / s, y / s, (x + w) / s, (y + h) / s)) for x, y, w, h in np.asarray(boxes).reshape(-1, 4)]


class DlibShapes(Lazy):
    """dlib's 68-point (iBUG layout) or 5-point shape predictor, run inside a given face box."""

    def __init__(self, points: int):
        self.points = points

    def load(self):
        import dlib

        name = "shape_predictor_68_face_landmarks.dat" if self.points == 68 else "shape_predictor_5_face_landmarks.dat"
        return dlib.shape_predictor(str(dlib_model(name)))

    def shape(self, image: np.ndarray, box: tuple[float, ...]):
        """dlib's full_object_detection for the face in `box` (what dlib's encoder takes)."""
        import dlib

        with self.using() as predictor:
            return predictor(np.ascontiguousarray(image), dlib.rectangle(*(int(round(v)) for v in box)))

    def __call__(self, image: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
        return np.array([[p.x, p.y] for p in self.shape(image, box).parts()], np.float64)


class DlibEncoder(Lazy):
    """dlib's ResNet face encoder: 128-D embeddings (same person: distance < ~0.6)."""

    def __init__(self, jitter: int = 0):
        self.jitter = jitter
        self.shapes = DlibShapes(5)

    def load(self):
        import dlib

        return dlib.face_recognition_model_v1(str(dlib_model("dlib_face_recognition_resnet_model_v1.dat")))

    def __call__(self, image: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
        image = np.ascontiguousarray(image)
        shape = self.shapes.shape(image, box)
        with self.using() as encoder:
            return np.asarray(encoder.compute_face_descriptor(image, shape, self.jitter))
