"""Backends with downloaded weights, through their real loading code: BlazeFace, YuNet (+ yunet5 alignment) and
OpenCV super-resolution with the real files from the caches (../shared/scripts/seed-caches.sh); face-alignment's
FAN and rembg's U^2-Net with stand-in weights made here in the exact format and place the libraries load from
(the real files are not obtainable offline: values meaningless, plumbing real). Missing, truncated and
wrong-kind model files each give one clear error naming the file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import (
    BLAZEFACE,
    ROOT,
    SEEDED,
    SUPERRES,
    YUNET,
    needs_blazeface,
    needs_superres,
    needs_yunet,
    u2net_standin,
)
from facegan.config import AlignConfig, DetectConfig, MatteConfig, UpscaleConfig
from facegan.io import read_image
from facegan.manifest import read_manifest
from facegan.preprocess.align import LANDMARKERS, run_align, to_five
from facegan.preprocess.detect import DETECTORS, run_detect
from facegan.preprocess.matte import MATTERS, run_matte
from facegan.preprocess.models import DlibShapes, ModelMissing, ModelUnreadable
from facegan.preprocess.pretrained import models_home, torch_checkpoints
from facegan.preprocess.upscale import UPSCALERS, run_upscale

FACES = ROOT.parent / "shared" / "assets" / "faces" / "face_recognition" / "examples"
needs_photos = pytest.mark.skipif(not FACES.is_dir(), reason=f"real photos not present at {FACES}")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _raw(tmp_path: Path, images: dict[str, np.ndarray]) -> Path:
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    for name, im in images.items():
        Image.fromarray(im).save(raw / "images" / name)
    return raw


def _her_face(box) -> bool:
    x0, y0, x1, y1 = box
    return 150 < (x0 + x1) / 2 < 260 and 60 < (y0 + y1) / 2 < 160 and 50 < x1 - x0 < 200


@needs_yunet
def test_yunet_finds_the_astronaut_with_five_landmarks_where_dlib_puts_them(astronaut, tmp_path):
    cfg = DetectConfig(backend="yunet")
    faces = [f for f in DETECTORS["yunet"](cfg, tmp_path)(astronaut, "a") if f.score >= cfg.score_threshold]
    assert len(faces) == 1 and _her_face(faces[0].box) and 0.6 <= faces[0].score <= 1
    five = faces[0].landmarks
    dlib5 = to_five(DlibShapes(68)(astronaut, faces[0].box))
    iod = np.linalg.norm(dlib5[0] - dlib5[1])
    assert five.shape == (5, 2) and five[0, 0] < five[2, 0] < five[1, 0]  # image-left eye, nose, image-right eye
    assert np.linalg.norm(five - dlib5, axis=1).mean() < 0.15 * iod  # same points, same order as to_five


@needs_blazeface
@pytest.mark.parametrize("variant", ["front", "back"])
def test_blazeface_front_and_back_find_the_astronaut(astronaut, variant, tmp_path):
    if not (torch_checkpoints() / "blazeface.pth").is_file() and not SEEDED:
        pytest.skip("front BlazeFace weights not cached")
    cfg = DetectConfig(backend="blazeface", blazeface=variant)
    faces = [f for f in DETECTORS["blazeface"](cfg, tmp_path)(astronaut, "a") if f.score >= cfg.score_threshold]
    assert len(faces) == 1 and _her_face(faces[0].box), faces


@needs_yunet
@needs_photos
def test_yunet_stage_and_yunet5_alignment_on_real_photos_without_dlib(tmp_path):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    for name in ("obama.jpg", "biden.jpg", "two_people.jpg"):
        shutil.copy(FACES / name, raw / "images" / name)
    rows = run_detect(DetectConfig(backend="yunet", multi_face="all", min_size=40), raw, tmp_path / "detect", workers=2)
    assert sorted(r.source for r in rows) == ["biden.jpg", "obama.jpg", "two_people.jpg", "two_people.jpg"]
    assert all(r.backends == {"detect": "yunet"} and len(r.landmarks) == 5 for r in rows)
    aligned = run_align(AlignConfig(backend="yunet5", size=128), raw, tmp_path / "detect", tmp_path / "align")
    assert [r.status for r in aligned] == ["ok"] * 4
    assert all(r.backends["align"] == "yunet5" and r.extra["align_residual"] < 0.05 for r in aligned)
    # the landmarks found on the crop agree with the ones the detector found on the whole photo
    for d, a in zip(rows, aligned, strict=True):
        iod = np.linalg.norm(np.subtract(d.landmarks[0], d.landmarks[1]))
        assert np.linalg.norm(np.subtract(a.landmarks, d.landmarks), axis=1).mean() < 0.1 * iod


@needs_superres
@pytest.mark.parametrize("model, scale", [("FSRCNN", 2), ("FSRCNN-small", 3), ("ESPCN", 4), ("LapSRN", 8)])
def test_opencv_superres_runs_the_real_models(astronaut, model, scale, tmp_path):
    cfg = UpscaleConfig(backend="opencv", model=model, scale=scale, size=96, models_dir=str(SUPERRES))
    sr = UPSCALERS["opencv"](cfg)
    face = np.asarray(Image.fromarray(astronaut[30:230, 130:330]).resize((40, 40), Image.Resampling.BICUBIC))
    out = sr(face, 96)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    reference = np.asarray(Image.fromarray(astronaut[30:230, 130:330]).resize((96, 96), Image.Resampling.LANCZOS))
    assert np.abs(out.astype(float) - reference).mean() < 20  # a face, not noise


@needs_superres
def test_upscale_stage_with_opencv_writes_the_target_side(astronaut, tmp_path):
    src = tmp_path / "matte"
    src.mkdir()
    from facegan.manifest import Row, write_manifest

    small = np.asarray(Image.fromarray(astronaut[30:230, 130:330]).resize((50, 50)))
    Image.fromarray(small).save(src / "a.png")
    Image.fromarray(astronaut[:200, :200]).save(src / "big.png")
    write_manifest(
        src,
        [
            Row(source="a.png", file="a.png", transform=[[1, 0, 0], [0, 1, 0]]),
            Row(source="big.png", file="big.png", transform=[[1, 0, 0], [0, 1, 0]]),
        ],
    )
    rows = run_upscale(UpscaleConfig(backend="opencv", size=128, models_dir=str(SUPERRES)), src, tmp_path / "up")
    assert [r.backends["upscale"] for r in rows] == ["opencv", "none"]
    assert read_image(tmp_path / "up" / "a.png").shape == (128, 128, 3)
    assert rows[0].transform[0][0] == pytest.approx(128 / 50)


# ---- stand-in weights for the files that cannot be had offline ------------------------------------------


@pytest.fixture
def fan_standin(tmp_path, monkeypatch) -> Path:
    """A randomly initialised 2D-FAN saved as face-alignment loads it: a state dict in torch hub's checkpoints
    folder under the file name of face-alignment's download URL."""
    import torch
    from face_alignment.models import FAN

    from facegan.preprocess.pretrained import fan_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = fan_file()[1]
    assert path.parent == tmp_path / "torch" / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), path)
    return path


def test_fan_loads_standin_weights_through_face_alignment(fan_standin, tmp_path):
    landmarker = LANDMARKERS["fan"](AlignConfig(backend="fan"), tmp_path)  # checks and loads, as the stage does
    fa = landmarker.model.model()
    assert type(fa).__module__ == "face_alignment.api" and type(fa.face_alignment_net).__name__ == "FAN"
    import torch

    saved = torch.load(fan_standin, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in fa.face_alignment_net.state_dict().items())  # these weights


@pytest.mark.slow
def test_fan_align_stage_gives_every_image_a_row_with_standin_weights(fan_standin, astronaut, tmp_path):
    """Stage level (a 2D-FAN forward pass takes seconds on CPU): one row per image, from this backend."""
    from facegan.manifest import Row, write_manifest

    raw = _raw(tmp_path, {"a.png": astronaut})
    (tmp_path / "verify").mkdir()
    Image.fromarray(astronaut).save(tmp_path / "verify" / "a.png")
    write_manifest(
        tmp_path / "verify",
        [
            Row(
                source="a.png",
                file="a.png",
                box=[170.0, 70.0, 250.0, 160.0],
                transform=[[1, 0, 0], [0, 1, 0]],
                backends={"detect": "hog"},
            )
        ],
    )
    out = run_align(AlignConfig(backend="fan", size=64), raw, tmp_path / "verify", tmp_path / "align")
    assert len(read_manifest(tmp_path / "align")) == 1 and out[0].source == "a.png"
    assert out[0].backends["align"] == "fan"  # random weights: any points (or none), but its row, from fan
    assert (out[0].status == "ok" and len(out[0].landmarks) == 5) or out[0].reason


def test_rembg_runs_through_its_session_api_with_a_standin_u2net(astronaut, tmp_path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    u2net_standin(tmp_path / "u2net" / "u2net.onnx")
    from facegan.manifest import Row, write_manifest

    src = tmp_path / "align"
    src.mkdir()
    rows = []
    for i in range(3):
        Image.fromarray(np.ascontiguousarray(astronaut[i * 20 : i * 20 + 256, 100:356])).save(src / f"{i}.png")
        rows.append(
            Row(
                source=f"{i}.png",
                file=f"{i}.png",
                box=[80.0, 40.0, 180.0, 160.0],
                transform=[[1, 0, 0], [0, 1, 0]],
                backends={"detect": "hog", "align": "dlib68"},
            )
        )
    write_manifest(src, rows)
    out = run_matte(MatteConfig(backend="rembg"), src, tmp_path / "matte", workers=2)
    assert [r.status for r in out] == ["ok"] * 3 and all(r.backends["matte"] == "rembg" for r in out)
    for r in out:
        mask = read_image(tmp_path / "matte" / "masks" / r.file)
        assert mask.shape[:2] == (256, 256) and 0 < r.extra["matte_coverage"] < 1  # brighter pixels are "head"


# ---- missing and unusable files ---------------------------------------------------------------------------


def test_missing_files_name_the_file_the_folder_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGAN_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    cases = [
        (
            lambda: DETECTORS["yunet"](DetectConfig(backend="yunet"), tmp_path),
            rf"YuNet model face_detection_yunet_2023mar\.onnx not found in "
            rf"{tmp_path / 'models' / 'detectors'}.*opencv_zoo",
        ),
        (
            lambda: DETECTORS["blazeface"](DetectConfig(backend="blazeface"), tmp_path),
            rf"blazefaceback\.pth not found in {tmp_path / 'torch' / 'hub' / 'checkpoints'}"
            r".*hollance/BlazeFace-PyTorch",
        ),
        (
            lambda: DETECTORS["blazeface"](
                DetectConfig(backend="blazeface", blazeface="front", model="w/blazeface.pth"), tmp_path
            ),
            rf"blazeface\.pth not found in {tmp_path / 'w'}",
        ),
        (lambda: LANDMARKERS["yunet5"](AlignConfig(backend="yunet5"), tmp_path), r"YuNet model .* not found"),
        (
            lambda: LANDMARKERS["fan"](AlignConfig(backend="fan"), tmp_path),
            rf"2DFAN4-\w+\.pth\.tar not found in {tmp_path / 'torch' / 'hub' / 'checkpoints'}; download https://",
        ),
        (lambda: MATTERS["rembg"](MatteConfig(backend="rembg")), rf"u2net\.onnx not found in {tmp_path / 'u2net'}"),
        (
            lambda: MATTERS["rembg"](MatteConfig(backend="rembg", model="nosuch")),
            r"rembg has no model 'nosuch'.*u2netp",
        ),
        (
            lambda: UPSCALERS["opencv"](
                UpscaleConfig(backend="opencv", model="ESPCN", scale=3, models_dir=str(tmp_path))
            ),
            rf"ESPCN_x3\.pb not found in {tmp_path}",
        ),
    ]
    for build, match in cases:
        with pytest.raises(ModelMissing, match=match):
            build()


@pytest.mark.parametrize("damage", ["truncated", "wrong kind"])
def test_truncated_or_wrong_kind_model_files_give_one_clear_error(damage, tmp_path, monkeypatch, fan_standin):
    """.pb (OpenCV), .onnx (YuNet, rembg) and .pth (BlazeFace, FAN): ModelUnreadable naming the file."""
    import torch

    onnx_file = u2net_standin(tmp_path / "kinds" / "net.onnx")
    pth_file = tmp_path / "kinds" / "net.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, pth_file)
    fan_good = shutil.copy(fan_standin, tmp_path / "kinds" / "fan.pth.tar")
    models = tmp_path / "models"
    monkeypatch.setenv("FACEGAN_MODELS", str(models))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))

    def bad(dst: Path, good: Path) -> Path:
        """dst: the first third of a good file of its kind, or a valid file of another kind under its name."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        if damage == "truncated":
            dst.write_bytes(Path(good).read_bytes()[: Path(good).stat().st_size // 3])
        else:
            shutil.copy(pth_file if dst.suffix in (".pb", ".onnx") else onnx_file, dst)
        return dst

    blaze = bad(tmp_path / "blaze" / "blazefaceback.pth", BLAZEFACE if BLAZEFACE.is_file() else fan_good)
    np.save(blaze.parent / "anchorsback.npy", np.zeros((896, 4), np.float32))
    cases = [
        (bad(tmp_path / "u2net" / "u2net.onnx", onnx_file), lambda: MATTERS["rembg"](MatteConfig(backend="rembg"))),
        (blaze, lambda: DETECTORS["blazeface"](DetectConfig(backend="blazeface", model=str(blaze)), tmp_path)),
        (bad(fan_standin, fan_good), lambda: LANDMARKERS["fan"](AlignConfig(backend="fan"), tmp_path)),
    ]
    assert not SEEDED or ((SUPERRES / "FSRCNN_x2.pb").is_file() and YUNET), "the seeded caches lack FSRCNN / YuNet"
    if (SUPERRES / "FSRCNN_x2.pb").is_file():  # truncating needs a real .pb
        pb = bad(models / "superres" / "FSRCNN_x2.pb", SUPERRES / "FSRCNN_x2.pb")
        cases.append((pb, lambda: UPSCALERS["opencv"](UpscaleConfig(backend="opencv", models_dir=str(pb.parent)))))
    if YUNET:
        yunet = bad(models / "detectors" / "face_detection_yunet_2023mar.onnx", YUNET[-1])
        cases.append((yunet, lambda: DETECTORS["yunet"](DetectConfig(backend="yunet"), tmp_path)))
    for path, build in cases:
        with pytest.raises(ModelUnreadable) as e:
            build()
        msg = str(e.value)
        assert msg.startswith(f"{path}: not a usable ") and "replace it" in msg and "\n" not in msg, msg


RACE = """
import sys, threading
import numpy as np
from skimage import data
from facegan.config import DetectConfig
from facegan.preprocess.detect import DETECTORS

backend = sys.argv[1]
detector = DETECTORS[backend](DetectConfig(backend=backend), None)
a = data.astronaut()
images = [a, a[::2, ::2].copy(), np.ascontiguousarray(a[:300]), np.ascontiguousarray(a[:, :400])]
alone = [[f.box for f in detector(im, "")] for im in images]
problems = []

def work(i):
    try:
        for _ in range(12):
            if [f.box for f in detector(images[i], "")] != alone[i]:
                problems.append(f"thread {i}: other boxes than alone")
    except Exception as e:
        problems.append(f"thread {i}: {type(e).__name__}: {e}")

threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(problems[:3])
"""


@pytest.mark.parametrize("backend", ["yunet", "haar", "hog"])
def test_threads_of_one_process_share_its_detector_without_mixing_or_crashing(backend):
    """Threads of one process (a Dask worker's, threads_per_worker > 1) share one loaded model: OpenCV's and
    dlib's keep per-call state, and unguarded they crashed (`mapIt != reuseMap.end()`, double free), returned
    the other thread's faces, or killed the process. Run in a child, so a crash is this test's failure."""
    if backend == "yunet" and not YUNET and not SEEDED:
        pytest.skip(f"no YuNet model in {models_home() / 'detectors'}")
    r = subprocess.run([sys.executable, "-c", RACE, backend], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.returncode, r.stdout, r.stderr[-2000:])


def test_model_paths_from_params_are_absolute(tmp_path, monkeypatch):
    # Dask workers started in another folder resolved a relative `detect.model` or `upscale.models_dir` from their
    # own folder, and called the (fine) file truncated
    from facegan.preprocess.common import resolve
    from facegan.preprocess.pretrained import superres_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "yunet.onnx").write_bytes(b"x")
    raw = Path("data/raw/me")
    assert resolve("models/yunet.onnx", raw) == tmp_path / "models" / "yunet.onnx"
    assert resolve("cascade.xml", raw) == tmp_path / "data/raw/me/cascade.xml"  # not there: beside the raw images
    assert superres_dir("models/sr") == tmp_path / "models" / "sr"
    monkeypatch.setenv("FACEGAN_MODELS", "cache")
    assert superres_dir(None) == tmp_path / "cache" / "superres"
