"""Backends whose pretrained weights are files in the standard caches: face-alignment's BlazeFace detector and
2D-FAN landmarks, OpenCV's YuNet detector (boxes + 5 landmarks), rembg's U^2-Net matting and OpenCV dnn_superres.

Each is located before any image is read (a missing file names itself, the folder searched and how to get it;
nothing is downloaded behind the user's back) and loaded once per process with a probe run, so a truncated file
or one of another kind stops the stage with one `ModelUnreadable` naming it, never a crash deep inside OpenCV,
onnxruntime or torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from facegan.preprocess.annotations import Face, iou
from facegan.preprocess.models import Lazy, ModelFileError, ModelMissing, ModelUnreadable, downscale


def models_home() -> Path:
    """facegan's own model cache: $FACEGAN_MODELS, default ~/.cache/facegan (seed-caches.sh of ../shared fills it)."""
    return Path(os.environ.get("FACEGAN_MODELS") or "~/.cache/facegan").expanduser().absolute()


def superres_dir(models_dir: str | None) -> Path:
    """upscale.models_dir, or $FACEGAN_MODELS/superres; absolute, as Dask workers started in another folder must
    read it."""
    return Path(models_dir).expanduser().absolute() if models_dir else models_home() / "superres"


def torch_checkpoints() -> Path:
    """torch hub's checkpoints folder ($TORCH_HOME/hub/checkpoints), where face-alignment keeps its weights."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def require(path: Path, what: str, how: str) -> Path:
    if not path.is_file():
        raise ModelMissing(f"{what} {path.name} not found in {path.parent}; {how}")
    return path


def _package(module: str, backend: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        dist = module.split(".")[0].replace("_", "-")
        raise ModelMissing(f"{backend} needs the {dist} package ({e}); run `make install`") from None


@contextmanager
def loading(path: Path, kind: str) -> Iterator[None]:
    """Any failure while a library reads or first runs `path` becomes one ModelUnreadable naming the file."""
    try:
        yield
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 - OpenCV, onnxruntime, torch and pickle each raise their own types
        detail = (str(e).strip().splitlines() or [""])[0][:160]
        raise ModelUnreadable(
            f"{path}: not a usable {kind} ({type(e).__name__}{': ' + detail if detail else ''}); "
            "the file is truncated or of another kind: replace it"
        ) from None


@contextmanager
def _environ(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[key]
        else:
            os.environ[key] = old


# ---- detectors -----------------------------------------------------------------------------------------


BLAZEFACE_FILES = {"front": ("blazeface.pth", "anchors.npy"), "back": ("blazefaceback.pth", "anchorsback.npy")}


class BlazeFace(Lazy):
    """face-alignment's BlazeFace: `front` (128 px input, close faces) or `back` (256 px, faces further away).
    The image is padded to a square first: face-alignment's detector would crop a centre square."""

    def __init__(self, variant: str, model: str | None, min_score: float):
        self.variant, self.min_score = variant, min_score
        weights_name, anchors_name = BLAZEFACE_FILES[variant]
        # resolved here, in the stage's process: worker processes may not share its environment (TORCH_HOME)
        self.weights = Path(model).expanduser() if model else torch_checkpoints() / weights_name
        self.anchors = self.weights.parent / anchors_name

    def files(self) -> tuple[Path, Path]:
        return self.weights, self.anchors

    def check(self) -> None:
        _package("face_alignment.detection.blazeface", "detect backend 'blazeface'")
        how = (
            "copy blazeface(back).pth and anchors(back).npy from github.com/hollance/BlazeFace-PyTorch there "
            "(face-alignment's names; TORCH_HOME moves the folder) or set detect.model to the .pth"
        )
        for path in self.files():
            require(path, f"BlazeFace ({self.variant}) file", how)

    def load(self):
        from face_alignment.detection.blazeface.blazeface_detector import BlazeFaceDetector

        weights, anchors = self.files()
        with loading(weights, f"BlazeFace {self.variant} model (.pth state dict, anchors {anchors.name} beside it)"):
            det = BlazeFaceDetector(
                "cpu",
                back_model=self.variant == "back",
                path_to_detector=str(weights),
                path_to_anchor=str(anchors),
                min_score_thresh=self.min_score,
            )
            det.detect_from_image(np.zeros((256, 256, 3) if self.variant == "back" else (128, 128, 3), np.uint8))
        return det

    def __call__(self, image: np.ndarray, key: str = "") -> list[Face]:
        import cv2

        h, w = image.shape[:2]
        square = np.zeros((max(h, w), max(h, w), 3), np.uint8)
        square[:h, :w] = image
        side = 256 if self.variant == "back" else 128  # its input side, exactly (its own resize can miss by 1 px)
        small = cv2.resize(
            square, (side, side), interpolation=cv2.INTER_AREA if len(square) > side else cv2.INTER_LINEAR
        )
        s = len(square) / side
        with self.using() as det:
            found = np.asarray(det.detect_from_image(small), np.float64).reshape(-1, 5)
        return [
            Face((max(0.0, x0 * s), max(0.0, y0 * s), min(float(w), x1 * s), min(float(h), y1 * s)), None, float(score))
            for x0, y0, x1, y1, score in found
        ]


YUNET_MIN_SIDE = 64  # measured: on noise strips 8-60 px high YuNet found junk faces padded to 32, none padded to 64


class YuNet(Lazy):
    """OpenCV's YuNet (cv2.FaceDetectorYN): boxes, 5 landmarks (eyes, nose tip, mouth corners) and a 0-1 score."""

    PATTERN = "face_detection_yunet*.onnx"

    def __init__(self, model: str | None, min_score: float, max_side: int, nms: float = 0.3):
        self.min_score, self.max_side, self.nms = min_score, max_side, nms
        self.path = Path(model).expanduser() if model else self.default_path()

    @classmethod
    def default_path(cls) -> Path:
        """The newest YuNet file in $FACEGAN_MODELS/detectors (by name: face_detection_yunet_<date>.onnx)."""
        folder = models_home() / "detectors"
        found = sorted(folder.glob(cls.PATTERN))
        return found[-1] if found else folder / "face_detection_yunet_2023mar.onnx"

    def check(self) -> None:
        import cv2

        if not hasattr(cv2, "FaceDetectorYN"):
            raise ModelMissing(
                f"detect backend 'yunet' needs cv2.FaceDetectorYN (OpenCV >= 4.5.4), not in {cv2.__version__}"
            )
        require(
            self.path,
            "YuNet model",
            "get face_detection_yunet_2023mar.onnx from github.com/opencv/opencv_zoo "
            "(models/face_detection_yunet) into that folder ($FACEGAN_MODELS/detectors) or set detect.model",
        )

    def load(self):
        import cv2

        with loading(self.path, "YuNet face detector (ONNX for cv2.FaceDetectorYN)"):
            det = cv2.FaceDetectorYN.create(str(self.path), "", (64, 64), self.min_score, self.nms, 5000)
            det.detect(np.zeros((64, 64, 3), np.uint8))
        return det

    def __call__(self, image: np.ndarray, key: str = "") -> list[Face]:
        import cv2

        small, s = downscale(image, self.max_side)
        h, w = small.shape[:2]
        if min(h, w) < YUNET_MIN_SIDE:  # below 64 px a side YuNet answers junk (boxes of 10^11 px) or fails to
            # allocate: padded at the bottom and right, so that coordinates stay the image's
            small = np.pad(small, ((0, max(0, YUNET_MIN_SIDE - h)), (0, max(0, YUNET_MIN_SIDE - w)), (0, 0)))
        with self.using() as det:  # the input size is the detector's state: set and used by one thread at a time
            det.setInputSize((small.shape[1], small.shape[0]))
            _, faces = det.detect(np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_RGB2BGR)))
        out = []
        for f in np.zeros((0, 15)) if faces is None else faces.astype(np.float64):
            x, y, fw, fh = f[:4] / s
            out.append(Face((x, y, x + fw, y + fh), f[4:14].reshape(5, 2) / s, float(f[14])))
        return out


class YuNetLandmarks:
    """align `yunet5`: YuNet run on the crop; the 5 points of the face that best overlaps the detected box."""

    def __init__(self, yunet: YuNet):
        self.yunet = yunet

    def __call__(self, crop: np.ndarray, box: tuple[float, ...]) -> np.ndarray | None:
        faces = self.yunet(crop)
        best = max(faces, key=lambda f: iou(f.box, box), default=None)
        return None if best is None or iou(best.box, box) < 0.3 else best.landmarks


# ---- landmarks, matting, super-resolution ---------------------------------------------------------------


def fan_file() -> tuple[str, Path]:
    """(download URL, cache path) of face-alignment's 2D-FAN weights, as the installed face-alignment names them."""
    from urllib.parse import urlparse

    from face_alignment.api import models_urls

    url = models_urls["2DFAN-4"]
    return url, torch_checkpoints() / Path(urlparse(url).path).name


class FanLandmarks(Lazy):
    """face-alignment's 2D-FAN (68 iBUG points) inside the detected box; weights from the torch hub cache."""

    path: Path | None = None

    def check(self) -> Path:
        _package("face_alignment", "align backend 'fan'")
        url, path = fan_file()  # resolved in the stage's process (workers may not share its TORCH_HOME)
        require(path, "face-alignment's 2D-FAN weights", f"download {url} into that folder (TORCH_HOME moves it)")
        self.path = path
        return path

    def load(self):
        import face_alignment

        path = self.path if self.path is not None else self.check()
        # boxes come from our detect stage: face-alignment's `folder` detector is its no-detector mode (no weights);
        # it reads $TORCH_HOME/hub/checkpoints/<file>: the file check() found
        with (
            loading(path, "2D-FAN state dict for face-alignment"),
            _environ("TORCH_HOME", str(path.parent.parent.parent)),
        ):
            fa = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device="cpu", face_detector="folder", compile=False
            )
        return fa

    def __call__(self, image: np.ndarray, box: tuple[float, ...]) -> np.ndarray | None:
        with self.using() as fa:
            found = fa.get_landmarks_from_image(image, detected_faces=[list(box) + [1.0]])
        return None if not found else np.asarray(found[0], np.float64)


class RembgMatter(Lazy):
    """rembg's salient-object models (U^2-Net by default) through rembg's own session API; one onnxruntime
    session per worker process. Files are found where rembg looks: U2NET_HOME, else ~/.rembg/models/<name>/."""

    thread_safe = True  # onnxruntime's InferenceSession.run may be called from several threads at once

    def __init__(self, model: str):
        self.model_name = model

    def session_class(self):
        from rembg.sessions import sessions_class

        by_name = {c.name(): c for c in sessions_class}
        if self.model_name not in by_name:
            raise ModelMissing(
                f"rembg has no model {self.model_name!r} (matte.model); choose one of: {', '.join(sorted(by_name))}"
            )
        return by_name[self.model_name]

    path: Path | None = None

    def check(self) -> Path:
        _package("rembg", "matte backend 'rembg'")
        cls = self.session_class()
        found = cls.resolve_existing(f"{self.model_name}.onnx")  # here, in the stage's process (U2NET_HOME)
        if found is None:
            raise ModelMissing(
                f"rembg model {self.model_name}.onnx not found in {cls.legacy_home()} (U2NET_HOME) nor in "
                f"{cls.model_dir()}; copy it there (rembg's GitHub releases publish it) or choose "
                "matte.backend grabcut"
            )
        self.path = Path(found)
        return self.path

    def load(self):
        from PIL import Image
        from rembg import new_session, remove

        path = self.path if self.path is not None else self.check()
        probe = Image.fromarray(np.tile(np.arange(32, dtype=np.uint8)[:, None, None] * 8, (1, 32, 3)))
        with loading(path, f"rembg {self.model_name} model (ONNX)"), _environ("U2NET_HOME", str(path.parent)):
            session = new_session(self.model_name)  # finds <U2NET_HOME>/<model>.onnx: the file check() found
            remove(probe, session=session, only_mask=True)
        return session

    def __call__(self, image: np.ndarray, row=None) -> np.ndarray:
        from PIL import Image
        from rembg import remove

        with self.using() as session:
            mask = remove(Image.fromarray(image), session=session, only_mask=True)
        return np.asarray(mask, np.float32) / 255.0


SUPERRES_ALGORITHMS = {
    "FSRCNN": "fsrcnn",
    "FSRCNN-small": "fsrcnn",
    "ESPCN": "espcn",
    "EDSR": "edsr",
    "LapSRN": "lapsrn",
}


class OpenCVSuperRes(Lazy):
    """OpenCV dnn_superres with a pretrained FSRCNN / FSRCNN-small / ESPCN / EDSR / LapSRN .pb model, applied
    until the face reaches the side, then resampled (INTER_AREA) to it exactly."""

    def __init__(self, model: str, scale: int, folder: Path):
        self.name, self.scale, self.folder = model, scale, folder

    @property
    def path(self) -> Path:
        return self.folder / f"{self.name}_x{self.scale}.pb"

    def check(self) -> None:
        import cv2

        if not hasattr(cv2, "dnn_superres"):
            raise ModelMissing("upscale backend 'opencv' needs opencv-contrib-python-headless (cv2.dnn_superres)")
        require(
            self.path,
            "super-resolution model",
            "the .pb files are published with OpenCV's dnn_superres models "
            "(github.com/Saafke/FSRCNN_Tensorflow, github.com/fannymonori/TF-ESPCN, TF-LapSRN); set "
            "upscale.models_dir to their folder",
        )

    def load(self):
        import cv2

        sr = cv2.dnn_superres.DnnSuperResImpl_create()  # type: ignore[attr-defined]  # contrib module, no stubs
        with loading(self.path, f"OpenCV dnn_superres {self.name} x{self.scale} model (.pb)"):
            sr.readModel(str(self.path))
            sr.setModel(SUPERRES_ALGORITHMS[self.name], self.scale)
            out = sr.upsample(np.zeros((8, 8, 3), np.uint8))
            if out.shape[:2] != (8 * self.scale, 8 * self.scale):
                raise ValueError(f"it upscales by {out.shape[0] / 8:g}, not {self.scale}")
        return sr

    def __call__(self, image: np.ndarray, side: int) -> np.ndarray:
        import cv2

        out = image
        with self.using() as sr:
            while min(out.shape[:2]) < side:
                out = sr.upsample(np.ascontiguousarray(out[..., ::-1]))[..., ::-1]
        return cv2.resize(np.ascontiguousarray(out), (side, side), interpolation=cv2.INTER_AREA)
