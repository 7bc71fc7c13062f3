"""The real preprocessing backends on real photos: skimage's astronaut always, ../shared/assets/faces when present.

Backends with downloaded weights (BlazeFace, YuNet, FAN, U^2-Net, OpenCV super-resolution) are tested in
test_pretrained.py: with the real files from the caches, or stand-in weights where those cannot be had offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import logs_of
from facegan.config import AlignConfig, DetectConfig, MatteConfig, UpscaleConfig, VerifyConfig
from facegan.errors import StageInputMissing
from facegan.io import read_image
from facegan.manifest import read_manifest
from facegan.preprocess.align import LANDMARKERS, run_align, to_five
from facegan.preprocess.detect import DETECTORS, run_detect
from facegan.preprocess.matte import run_matte
from facegan.preprocess.models import CascadeDetector, ModelMissing
from facegan.preprocess.upscale import run_upscale
from facegan.preprocess.verify import run_verify

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "assets" / "faces" / "face_recognition" / "examples"
CASCADE = ROOT.parent / "shared" / "assets" / "cascades" / "lbpcascade_animeface.xml"
needs_assets = pytest.mark.skipif(not FACES.is_dir(), reason=f"real photos not present at {FACES}")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.mark.parametrize("backend", ["hog", "cnn", "haar"])
def test_detectors_find_the_astronaut(astronaut, backend, tmp_path):
    cfg = DetectConfig(backend=backend, upsample=0 if backend == "cnn" else 1)
    faces = [f for f in DETECTORS[backend](cfg, tmp_path)(astronaut, "a") if f.score >= cfg.score_threshold]
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    assert 150 < (x0 + x1) / 2 < 260 and 60 < (y0 + y1) / 2 < 160 and 50 < x1 - x0 < 200  # her face, not the flag


@pytest.mark.parametrize("backend", ["cnn", "yunet"])
def test_tiny_and_thin_images_are_rejected_not_the_end_of_the_stage(astronaut, backend, tmp_path):
    """dlib's CNN raised on images under 4 px a side (4 x 2000 is 3 x 1600 once downscaled to max_side), which
    failed the whole stage; YuNet on strips under 32 px high answered boxes of 10^11 px or failed to allocate
    terabytes. Now such images are rejected one by one (too small for detect.min_size, or no face found: dlib skips
    images under 8 px, YuNet sees them padded to 64 px: at 32 it still found junk faces in strips of 24-31 x 2000-3000,
    not on every run) and the photo's face is kept."""
    from facegan.preprocess.pretrained import YuNet

    if backend == "yunet" and not YuNet.default_path().is_file():
        pytest.skip("no YuNet model file (../shared/scripts/seed-caches.sh puts it in the cache)")
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (2, 2), (3, 50), (50, 3)] + [(h, w) for h in (4, 8, 24, 31) for w in (500, 2000, 3000)]
    for h, w in shapes:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(raw / "images" / f"strip_{h}x{w}.png")
    Image.fromarray(astronaut).save(raw / "images" / "astronaut.png")
    cfg = DetectConfig(backend=backend, upsample=0, min_size=1)  # every strip goes to the detector
    rows = {r.source: r for r in run_detect(cfg, raw, tmp_path / "detect")}
    assert rows["astronaut.png"].status == "ok"
    assert {s: r.status for s, r in rows.items() if s.startswith("strip")} == {
        f"strip_{h}x{w}.png": "rejected" for h, w in shapes
    }
    cfg = DetectConfig(backend=backend, upsample=0, min_size=16)
    small = {r.source: r for r in run_detect(cfg, raw, tmp_path / "detect16") if r.source.startswith("strip_8x")}
    assert small["strip_8x500.png"].reason == "image too small for a face of detect.min_size 16 px (500x8 px)"
    assert rows["strip_24x3000.png"].reason == "no face found"


def test_implausible_boxes_are_dropped(tmp_path, monkeypatch):
    """A NaN box could not be written to the manifest (the next stage failed reading it); a box of 10^11 px was
    taken as a face. Boxes must be finite, overlap the image and be at most twice its size; landmarks that are not
    finite are dropped, their face kept."""
    from facegan.preprocess import detect
    from facegan.preprocess.annotations import Face

    nan = float("nan")
    answers = {
        "nan.png": [Face((nan, 0, 10, 10))],
        "huge.png": [Face((5119.1, -3.3e11, 5119.1 + 40, 3.3e11))],
        "outside.png": [Face((200, 200, 260, 260))],
        "good.png": [Face((nan, nan, nan, nan)), Face((10, 10, 50, 50), np.full((5, 2), nan)), Face((8, 8, 56, 56))],
    }
    monkeypatch.setitem(detect.DETECTORS, "annotations", lambda cfg, raw: lambda image, key: answers[key])
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    for name in answers:
        Image.new("RGB", (64, 64), (120, 100, 90)).save(raw / "images" / name)
    rows = {r.source: r for r in run_detect(DetectConfig(backend="annotations"), raw, tmp_path / "detect")}
    assert {s: (r.status, r.reason) for s, r in rows.items() if s != "good.png"} == {
        s: ("rejected", "no face found") for s in ("nan.png", "huge.png", "outside.png")
    }
    # the biggest face kept: the one whose landmarks were NaN, its box fine (the landmarks dropped)
    assert rows["good.png"].status == "ok" and rows["good.png"].box == [8, 8, 56, 56]
    assert rows["good.png"].extra["faces_found"] == 2
    assert read_manifest(tmp_path / "detect")[0].source  # the manifest reads back


def test_dlib68_landmarks_land_on_the_face(astronaut, tmp_path):
    face = DETECTORS["hog"](DetectConfig(backend="hog"), tmp_path)(astronaut, "a")[0]
    from facegan.preprocess.models import DlibShapes

    pts = DlibShapes(68)(astronaut, face.box)
    assert pts.shape == (68, 2)
    x0, y0, x1, y1 = face.box
    inside = (pts[:, 0] > x0 - 10) & (pts[:, 0] < x1 + 10) & (pts[:, 1] > y0 - 10) & (pts[:, 1] < y1 + 10)
    assert inside.mean() > 0.95
    left_eye, right_eye, nose, mouth_l, mouth_r = to_five(pts)
    assert left_eye[0] < nose[0] < right_eye[0] and nose[1] < (mouth_l[1] + mouth_r[1]) / 2


def test_dlib68_finds_dlibs_own_box_again_inside_another_detectors_box(astronaut, tmp_path):
    from facegan.manifest import Row
    from facegan.preprocess.models import DlibShapes

    face = DETECTORS["hog"](DetectConfig(backend="hog"), tmp_path)(astronaut, "a")[0]
    x0, y0, x1, y1 = face.box
    w, h = x1 - x0, y1 - y0
    tall = [x0 - 0.1 * w, y0 - 0.4 * h, x1 + 0.1 * w, y1 + 0.05 * h]  # like YuNet's or BlazeFace's: with the forehead
    truth = to_five(DlibShapes(68)(astronaut, face.box))
    iod = np.linalg.norm(truth[0] - truth[1])
    landmarker = LANDMARKERS["dlib68"](AlignConfig(backend="dlib68"), tmp_path)

    def error(detector: str) -> float:
        row = Row(source="a", box=tall, transform=[[1, 0, 0], [0, 1, 0]], backends={"detect": detector})
        return float(np.linalg.norm(to_five(landmarker(astronaut, row)) - truth, axis=1).mean() / iod)

    assert error("yunet") < 0.01 < error("hog")  # a dlib box is trusted as it is: inside this one, worse


def test_anime_cascade_loads_and_bad_cascade_is_a_clear_error(tmp_path, astronaut):
    with pytest.raises(ModelMissing, match="cascade file not found"):
        DETECTORS["anime"](DetectConfig(backend="anime", cascade=str(tmp_path / "none.xml")), tmp_path)
    if not CASCADE.is_file():
        pytest.skip(f"anime cascade not present at {CASCADE}")
    det = DETECTORS["anime"](DetectConfig(backend="anime", cascade=str(CASCADE)), tmp_path)
    assert det(astronaut, "a") == []  # loads and runs; a photographed face is not a drawn anime face
    assert CascadeDetector(str(CASCADE), 16, 1600, equalize=True).model().getFeatureType() == 1  # LBP features


def test_backends_without_weights_say_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGAN_OFFLINE", "1")
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelMissing, match=r"FSRCNN_x2\.pb not found"):
        run_upscale(UpscaleConfig(backend="opencv", models_dir=str(tmp_path)), tmp_path, tmp_path / "o")
    from facegan.preprocess.matte import MATTERS

    with pytest.raises(ModelMissing, match=r"rembg|u2net\.onnx"):
        MATTERS["rembg"](MatteConfig(backend="rembg"))
    with pytest.raises(ModelMissing, match=r"face-alignment|2DFAN4"):
        LANDMARKERS["fan"](AlignConfig(backend="fan"), tmp_path)


def _bad_inputs(folder: Path, face: np.ndarray) -> dict[str, str]:
    """Every kind of awkward file; returns file name -> expected outcome ('ok' or a reason fragment)."""
    img = Image.fromarray(face)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.rotate(90, expand=True).save(folder / "rotated.jpg", exif=exif)  # stored sideways: found only upright
    img.convert("CMYK").save(folder / "cmyk.jpg")
    img.convert("L").save(folder / "gray.png")
    img.convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257).save(folder / "sixteen.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = (folder / "cmyk.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("not an image")
    (folder / "gone.jpg").symlink_to(folder.parent / "deleted.jpg")  # a photo library's link to a deleted photo
    Image.new("RGB", (320, 240), (90, 140, 200)).save(folder / "no_face.png")
    Image.new("RGB", (8200, 6400), (200, 200, 190)).save(folder / "huge.png")  # 52 megapixels, flat
    Image.fromarray(_tile_grid(np.asarray(img.resize((120, 140))), 4, 5)).save(folder / "twenty.png")
    return {
        "rotated.jpg": "ok",
        "cmyk.jpg": "ok",
        "gray.png": "ok",
        "rgba.png": "ok",
        "sixteen.png": "ok",
        "corrupt.jpg": "unreadable",
        "truncated.jpg": "unreadable",
        "notes.txt": "unreadable",
        "gone.jpg": "a link to nothing",
        "no_face.png": "no face",
        "huge.png": "no face",
        "twenty.png": "ok",
    }


def _tile_grid(tile: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return np.concatenate([np.concatenate([tile] * cols, axis=1)] * rows, axis=0)


def test_chain_on_awkward_files_gives_every_file_a_row_and_a_reason(tmp_path, astronaut):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    face = astronaut[20:300, 100:340]
    expected = _bad_inputs(raw / "images", face)
    cfg = DetectConfig(backend="hog", multi_face="all", min_size=24)
    rows = run_detect(cfg, raw, tmp_path / "detect", workers=2)
    by_source: dict[str, list] = {}
    for r in rows:
        by_source.setdefault(r.source, []).append(r)
    assert set(by_source) == set(expected)
    for name, outcome in expected.items():
        got = by_source[name]
        if outcome == "ok":
            assert all(r.status == "ok" for r in got), (name, got[0].reason)
        else:
            assert got[0].status == "rejected" and outcome in got[0].reason, (name, got[0].reason)
    assert len(by_source["twenty.png"]) >= 15  # twenty faces, each its own crop
    summary = json.loads((tmp_path / "detect" / "summary.json").read_text())
    assert summary["rejected"] == 6 and summary["ok"] == len(rows) - 6
    assert (raw / "images" / "corrupt.jpg").is_file()  # inputs are never touched
    rotated = by_source["rotated.jpg"][0]
    assert rotated.extra["image_w"] < rotated.extra["image_h"]  # read upright (EXIF applied): portrait, as the crop


@needs_assets
def test_verify_encodes_a_face_in_the_box_of_the_references_detector_whichever_found_it():
    """A YuNet box gave dlib's 5-point shapes, so the encoder's face chip, another framing than the references' HOG
    boxes: the same person's photo was 0.108 from the references instead of 0.063. A box HOG finds no face over is
    used as it is."""
    from facegan.preprocess.annotations import iou
    from facegan.preprocess.models import DlibDetector, DlibEncoder
    from facegan.preprocess.pretrained import YuNet
    from facegan.preprocess.verify import EncodingVerifier, reference_encodings

    if not YuNet.default_path().is_file():
        pytest.skip("no YuNet model file (../shared/scripts/seed-caches.sh puts it in the cache)")
    references = reference_encodings(FACES / "knn_examples" / "train" / "obama")
    verifier, encoder = EncodingVerifier(references), DlibEncoder()
    image = read_image(FACES / "obama-480p.jpg")
    (hog,) = [f.box for f in DlibDetector("hog", 1, 1600)(image)]
    (yunet,) = [f.box for f in DETECTORS["yunet"](DetectConfig(backend="yunet"), Path("."))(image)]
    assert 0.3 < iou(hog, yunet) < 0.8  # the same face, framed otherwise

    def distance(box):
        return float(np.linalg.norm(references - encoder(image, box), axis=1).min())

    assert distance(yunet) > distance(hog) + 0.02  # the framing alone
    assert verifier(image, yunet) == verifier(image, hog) == pytest.approx(distance(hog), abs=1e-6)
    corner = (0.0, 0.0, 60.0, 60.0)  # no face there: its own box
    assert verifier(image, corner) == pytest.approx(distance(corner), abs=1e-6)


@needs_assets
def test_reference_photos_of_a_format_not_read_are_said(tmp_path, caplog):
    """A reference photo whose suffix no image has (an iPhone's .heic) was left out of verify's references unseen."""
    from facegan.preprocess.verify import reference_encodings

    refs = tmp_path / "references"
    refs.mkdir()
    shutil.copy(FACES / "obama.jpg", refs / "obama.jfif")  # a JPEG as a browser saves it: read
    (refs / "IMG_0001.HEIC").write_bytes(b"\0" * 64)
    with logs_of(caplog):
        assert reference_encodings(refs).shape == (1, 128)
    assert f"{refs}: 1 file(s) there are no image by their suffix, e.g. IMG_0001.HEIC, not used" in caplog.text
    (refs / "obama.jfif").unlink()  # nothing but what it cannot read: the error says what is there
    with pytest.raises(FileNotFoundError, match=r"no reference photos in .*references \(1 file\(s\) there are no"):
        reference_encodings(refs)
    Image.new("RGB", (120, 90), (90, 140, 60)).save(refs / "lawn.jpg")  # a photo, but of no face: was a traceback
    with pytest.raises(StageInputMissing, match=r"no face found in any of the 1 photos in .*references: add photos"):
        reference_encodings(refs)


def test_dlib_verification_without_references_is_refused_by_the_params_check():
    # `facegan check` said valid, then verify ended in a ValueError traceback
    with pytest.raises(ValueError, match="backend 'dlib' needs references: a folder of photos"):
        VerifyConfig(backend="dlib")
    assert VerifyConfig(backend="dlib", references="refs").references == "refs"


@needs_assets
def test_real_photos_detect_verify_align_matte_upscale(tmp_path):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    for name in ("obama.jpg", "obama2.jpg", "obama-480p.jpg", "biden.jpg", "two_people.jpg"):
        shutil.copy(FACES / name, raw / "images" / name)
    shutil.copytree(FACES / "knn_examples" / "train" / "obama", raw / "references")
    run_detect(DetectConfig(backend="hog", multi_face="all", min_size=40), raw, tmp_path / "detect", workers=2)
    detected = read_manifest(tmp_path / "detect")
    assert sum(r.source == "two_people.jpg" for r in detected) == 2

    rows = run_verify(
        VerifyConfig(backend="dlib", references="references", tolerance=0.6),
        raw,
        tmp_path / "detect",
        tmp_path / "verify",
        workers=2,
    )
    kept = {r.source for r in rows if r.status == "ok"}
    assert {"obama.jpg", "obama2.jpg", "obama-480p.jpg"} <= kept and "biden.jpg" not in kept
    biden = next(r for r in rows if r.source == "biden.jpg")
    assert "another person" in biden.reason and biden.extra["verify_distance"] > 0.6
    assert all(r.extra["verify_distance"] < 0.6 for r in rows if r.status == "ok")

    aligned = run_align(
        AlignConfig(backend="dlib68", size=128), raw, tmp_path / "verify", tmp_path / "align", workers=2
    )
    ok = [r for r in aligned if r.status == "ok"]
    assert ok and all(len(r.landmarks) == 5 and r.extra["align_residual"] < 0.05 for r in ok)
    ffhq = run_align(
        AlignConfig(backend="dlib68", size=128, template="ffhq"), raw, tmp_path / "verify", tmp_path / "align_ffhq"
    )
    assert [r.status for r in ffhq] == [r.status for r in aligned]
    run_matte(MatteConfig(backend="grabcut"), tmp_path / "align", tmp_path / "matte")
    out = run_upscale(UpscaleConfig(backend="lanczos", size=128), tmp_path / "matte", tmp_path / "upscale")
    for r in out:
        if r.status == "ok":
            assert read_image(tmp_path / "upscale" / r.file).shape == (128, 128, 3)


@pytest.mark.timeout(180)
def test_worker_pool_after_dlib_cnn_ran_in_this_process_does_not_hang(astronaut, tmp_path):
    """A plain fork after dlib's multi-threaded CNN ran here copied held locks and hung at 0 % CPU."""
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(astronaut).save(raw / "images" / f"{i}.png")
    cfg = DetectConfig(backend="cnn", upsample=0)
    one = run_detect(cfg, raw, tmp_path / "one", workers=1)
    two = run_detect(cfg, raw, tmp_path / "two", workers=2)
    assert [r.box for r in two] == [r.box for r in one] and [r.status for r in one] == ["ok", "ok"]


def test_forget_loaded_makes_the_next_use_load_the_model_again():
    """The preprocessing benches ran the 1-worker side in their own process, whose model cache kept the models
    loaded from the first round on, while each 2-worker round started new processes that loaded them: the speed-up
    read too low. `forget_loaded` gives each timed run a fresh process's loads."""
    from facegan.preprocess.models import LOADS, forget_loaded

    before = LOADS["CascadeDetector"]  # settings no other test uses: not loaded before in this process
    first = CascadeDetector(None, 13, 397, True)
    first.model()
    CascadeDetector(None, 13, 397, True).model()  # an equal copy: the loaded model, shared
    assert LOADS["CascadeDetector"] == before + 1
    forget_loaded()
    CascadeDetector(None, 13, 397, True).model()
    assert LOADS["CascadeDetector"] == before + 2
    assert first.model() is not None  # a copy holding the old model keeps it
