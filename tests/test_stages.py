"""Each preprocessing stage on a tiny cartoon set: outputs, manifests, geometry, packing."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegan.config import DetectConfig, MatteConfig, PackConfig
from facegan.data.pack import run_pack
from facegan.data.packed import ZIP_NAME, load_packed
from facegan.io import read_image
from facegan.manifest import read_manifest
from facegan.preprocess import geometry
from facegan.preprocess.common import contact_sheet
from facegan.preprocess.detect import crop_stems, output_name, run_detect
from facegan.preprocess.matte import run_matte


def test_every_stage_keeps_one_row_per_input(layout):
    n = len(list((layout.raw / "images").iterdir()))
    for stage in ("detect", "verify", "align", "matte", "upscale", "quality"):
        rows = read_manifest(layout.interim(stage))
        assert len(rows) == n
        assert all(r.status == "ok" for r in rows), [r.reason for r in rows if r.status != "ok"]
        assert all((layout.interim(stage) / r.file).is_file() for r in rows)
        summary = json.loads((layout.interim(stage) / "summary.json").read_text())
        assert summary == {"ok": n, "rejected": 0}
        sheet = read_image(layout.interim(stage) / "contact_sheet.png")
        assert sheet.shape[1] == 8 * 98 + 2 and sheet.shape[0] == -(-n // 8) * 98 + 2  # n thumbnails, 8 a row


def test_preprocessing_scores_name_their_backend_and_never_score_the_ground_truth_itself(layout, tmp_path):
    from facegan.manifest import write_manifest
    from facegan.preprocess.score import GROUND_TRUTH_USED, score

    interim = layout.root / "data" / "interim" / "cartoon"
    s = score(layout.raw, interim)
    # the default chain detects and aligns with `annotations`: the ground truth itself, so no score
    assert s["detect"] == {
        "backend": "annotations",
        "recall": GROUND_TRUTH_USED,
        "precision": GROUND_TRUTH_USED,
        "faces_true": s["detect"]["faces_found"],
        "faces_found": s["detect"]["faces_found"],
    }
    assert s["align"]["backend"] == "annotations" and s["align"]["landmark_error_iod_pct"] == GROUND_TRUTH_USED
    assert s["matte"]["backend"] == "grabcut" and 0.6 < s["matte"]["matte_iou"] <= 1.0
    assert s["matte"]["seeded_by"] == {"box": "annotations", "landmarks": "annotations"}

    # the same rows from a model backend are scored: half the boxes shifted off their face, landmarks moved
    fake = tmp_path / "interim"
    for stage in ("detect", "align", "matte"):
        (fake / stage).mkdir(parents=True)
        rows = read_manifest(interim / stage)
        for i, r in enumerate(rows):
            r.backends = {k: "hog" if k == "detect" else "dlib68" if k == "align" else v for k, v in r.backends.items()}
            if stage == "detect" and i % 2:
                w = r.box[2] - r.box[0]
                r.box = [r.box[0] + w, r.box[1], r.box[2] + w, r.box[3]]
            if stage == "align":
                r.landmarks = (np.asarray(r.landmarks) + 1.0).tolist()
        write_manifest(fake / stage, rows)
    (fake / "matte" / "masks").symlink_to(interim / "matte" / "masks")
    s = score(layout.raw, fake)
    n = s["detect"]["faces_true"]
    assert s["detect"]["backend"] == "hog" and s["detect"]["recall"] == round((n + 1) // 2 / n, 4)
    assert s["align"]["backend"] == "dlib68" and 0 < s["align"]["landmark_error_iod_pct"] < 10


def test_detect_crops_are_square_and_centred_on_the_box(layout, tiny_params_obj):
    margin = tiny_params_obj.dataset("cartoon").detect.margin
    for r in read_manifest(layout.interim("detect")):
        crop = read_image(layout.interim("detect") / r.file)
        assert crop.shape[0] == crop.shape[1]
        x0, y0, x1, y1 = geometry.box_of(r.transform, r.box)
        assert abs((x0 + x1) / 2 - crop.shape[1] / 2) < 1 and abs((y0 + y1) / 2 - crop.shape[0] / 2) < 1
        assert crop.shape[0] == pytest.approx(max(x1 - x0, y1 - y0) * (1 + 2 * margin), abs=1.01)


def test_align_puts_landmarks_on_the_template(layout, tiny_params_obj):
    cfg = tiny_params_obj.dataset("cartoon").align
    for r in read_manifest(layout.interim("align")):
        side = read_image(layout.interim("align") / r.file).shape[0]
        assert side <= cfg.size
        assert side == r.extra["align_side"]
        mapped = geometry.apply(r.transform, r.landmarks)
        target = geometry.template5(side, cfg.eye_distance, cfg.eye_y)
        # eyes land within 4% of the side (a similarity cannot fit 5 cartoon points exactly)
        assert np.abs(mapped[:2] - target[:2]).max() < 0.04 * side


def test_matte_separates_head_from_background(layout, tiny_params_obj):
    fill = np.array(tiny_params_obj.dataset("cartoon").matte.fill)
    for r in read_manifest(layout.interim("matte")):
        img = read_image(layout.interim("matte") / r.file)
        mask = read_image(layout.interim("matte") / "masks" / r.file)[..., 0] > 127
        assert 0.2 < mask.mean() < 0.95
        assert np.abs(img[~mask].astype(int) - fill).mean() < 25, "background becomes the fill colour"
        c = img.shape[0] // 2
        assert mask[c, c], "the face centre is kept"


def test_upscale_brings_small_faces_to_size(layout, tiny_params_obj):
    size = tiny_params_obj.dataset("cartoon").upscale.size
    rows = read_manifest(layout.interim("upscale"))
    for r in rows:
        im = read_image(layout.interim("upscale") / r.file)
        assert min(im.shape[:2]) >= size
        if r.extra["align_side"] < size:
            assert r.backends["upscale"] == "lanczos" and r.extra["upscale_factor"] > 1


def test_pack_is_stylegan2_ada_format_with_labels(layout, tiny_params_obj):
    zpath = layout.packed / ZIP_NAME
    res = tiny_params_obj.dataset("cartoon").pack.resolution
    with zipfile.ZipFile(zpath) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
        meta = json.loads(zf.read("dataset.json"))
    assert names[0] == "00000/img00000000.png" and len(names) == 12
    assert [e[0] for e in meta["labels"]] == names
    assert meta["label_names"] == ["hair_color", "eye_color", "face_color", "glasses", "hairstyle", "face_shape"]
    images, labels, _ = load_packed(zpath)
    assert images.shape == (12, res, res, 3) and labels.shape == (12, 6)
    for j, name in enumerate(meta["label_names"]):
        assert labels[:, j].max() < len(meta["label_values"][name])
    # labels follow their source image
    rows = [r for r in read_manifest(layout.packed) if r.status == "ok"]
    csv_rows = dict(line.split(",", 1) for line in (layout.raw / "labels.csv").read_text().splitlines()[1:])
    for r, lab in zip(rows, labels, strict=True):
        values = [meta["label_values"][n][i] for n, i in zip(meta["label_names"], lab, strict=True)]
        assert ",".join(values) == csv_rows[r.source]
    # each row's transform maps the raw image to the packed one: the quality stage's, then the resize to res
    before = {r.source: r for r in read_manifest(layout.interim("quality")) if r.status == "ok"}
    for r in rows:
        side = read_image(layout.interim("quality") / before[r.source].out_file).shape[0]
        assert side != res  # the packing resizes
        at_quality = geometry.apply(before[r.source].affine, r.landmarks)
        assert np.allclose(geometry.apply(r.affine, r.landmarks), (at_quality + 0.5) * res / side - 0.5, atol=1e-5)


def test_pack_is_byte_reproducible(layout, tiny_params_obj, tmp_path):
    run_pack(tiny_params_obj.dataset("cartoon").pack, layout.raw, layout.interim("upscale"), tmp_path / "again")
    assert (tmp_path / "again" / ZIP_NAME).read_bytes() == (layout.packed / ZIP_NAME).read_bytes()


def test_matte_is_deterministic(layout, tiny_params_obj, tmp_path):
    run_matte(tiny_params_obj.dataset("cartoon").matte, layout.interim("align"), tmp_path / "m", workers=2)
    for r in read_manifest(tmp_path / "m"):
        assert np.array_equal(read_image(tmp_path / "m" / r.file), read_image(layout.interim("matte") / r.file))


def test_matte_keeps_rgba_cutouts_on_request(layout, tiny_params_obj, tmp_path):
    cfg = tiny_params_obj.dataset("cartoon").matte.model_copy(update={"rgba": True})
    run_matte(cfg, layout.interim("align"), tmp_path / "m")
    rows = read_manifest(tmp_path / "m")
    for r in rows:
        rgba = np.asarray(Image.open(tmp_path / "m" / "rgba" / Path(r.file).with_suffix(".png")))
        mask = read_image(tmp_path / "m" / "masks" / r.file)[..., 0] > 127
        assert rgba.shape[2] == 4 and np.array_equal(rgba[..., :3], read_image(layout.interim("align") / r.file))
        assert rgba[..., 3][mask].mean() > 200 and rgba[..., 3][~mask].mean() < 55  # soft alpha follows the mask
        # the composited image is unchanged by the option
        assert np.array_equal(read_image(tmp_path / "m" / r.file), read_image(layout.interim("matte") / r.file))
    assert len(rows) == len(list((tmp_path / "m" / "rgba").iterdir()))


def test_detect_records_every_bad_file_with_a_reason(layout, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(layout.raw, raw)
    images = raw / "images"
    (images / "notes.txt").write_text("not an image")
    (images / "broken.png").write_bytes((images / "000000.png").read_bytes()[:200])
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(images / "unannotated.png")
    (images / "sub").mkdir()
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).convert("CMYK").save(images / "sub" / "cmyk.jpg")
    rows = run_detect(DetectConfig(), raw, tmp_path / "detect", workers=2)
    by_source = {r.source: r for r in rows}
    assert len(rows) == 12 + 4
    assert by_source["notes.txt"].reason.startswith("unreadable image")
    assert by_source["broken.png"].reason.startswith("unreadable image")
    assert by_source["unannotated.png"].reason == "no face found"
    assert by_source["sub/cmyk.jpg"].reason == "image too small for a face of detect.min_size 16 px (9x9 px)"  # decoded
    assert sum(r.status == "ok" for r in rows) == 12
    assert (images / "notes.txt").read_text() == "not an image", "inputs are never modified"


def test_detect_all_faces_and_min_size(layout, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(layout.raw, raw)
    ann = json.loads((raw / "annotations.json").read_text())
    first = ann["images"]["000000.png"][0]
    small = {"box": [1, 1, 9, 9], "landmarks": None}
    ann["images"]["000000.png"] = [first, {**first, "box": [b + 2 for b in first["box"]]}, small]
    (raw / "annotations.json").write_text(json.dumps(ann))
    rows = run_detect(DetectConfig(multi_face="all", min_size=16), raw, tmp_path / "d")
    faces = [r for r in rows if r.source == "000000.png"]
    assert len(faces) == 2 and {r.file for r in faces} == {"000000_f0.png", "000000_f1.png"}
    assert all(r.extra["faces_found"] == 3 for r in faces)


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="no images in"):
        run_detect(DetectConfig(), tmp_path, tmp_path / "out")


def test_output_names_are_unique_per_source():
    assert output_name("a.png", None) == "a.png"
    assert output_name("a.jpg", None) == "a_jpg.png"
    assert output_name("x/a.JPEG", 2) == "x/a_jpeg_f2.png"
    # names the stages write beside the faces: the stem takes the `_`, so face k of a raw contact_sheet.png is not
    # a raw contact_sheet_f<k>.png's crop
    assert output_name("contact_sheet.png", None) == "contact_sheet_.png"
    assert output_name("contact_sheet.png", 0) == "contact_sheet__f0.png" != output_name("contact_sheet_f0.png", None)
    assert output_name("masks/a.png", 1) == "masks_/a_f1.png" and output_name("x/masks/a.png", None) == "x/masks/a.png"


def test_photos_named_up_to_the_file_system_s_limit_get_crops(tmp_path):
    """A photo of 240 bytes of name got a crop name over the 255-byte limit once `_f0.png` and the temporary
    `.tmp.png` were added: the whole detect stage failed (Errno 36) on that one photo."""
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    names = ["n" * 236 + ".jpg", "n" * 235 + "m.jpg", "é" * 120 + ".png", "short.jpg"]  # 240, 240, 244, 9 bytes
    for name in names:
        _solid(raw / "images" / name, [(200, 60, 60)])
    ann = {"images": {name: [{"box": [30, 30, 70, 70]}, {"box": [5, 5, 25, 25]}] for name in names}}
    (raw / "annotations.json").write_text(json.dumps(ann))
    rows = run_detect(DetectConfig(multi_face="all", margin=0.0), raw, tmp_path / "d")
    assert [r.status for r in rows] == ["ok"] * 8 and len({r.file for r in rows}) == 8
    assert all(len(Path(r.out_file).name.encode()) <= 180 and (tmp_path / "d" / r.out_file).is_file() for r in rows)
    assert output_name("short.jpg", 0) == "short_jpg_f0.png"  # names that fit are as they were
    assert output_name("d/" + "n" * 236 + ".jpg", None).startswith("d/" + "n" * 149 + "~")


def _solid(path: Path, colours: list[tuple[int, int, int]]) -> None:
    """An image of vertical bands, one colour each (JPEG keeps solid bands close to their colour)."""
    image = np.concatenate([np.full((100, 100 // len(colours), 3), c, np.uint8) for c in colours], axis=1)
    Image.fromarray(image).save(path, quality=98)


@pytest.mark.parametrize("workers", [1, 2])
def test_crops_of_names_that_meet_get_a_file_each_named_by_their_key(tmp_path, workers):
    """`x.jpg`/`x.JPG` and face 1 of `two.jpg`/`two_jpg_f1.png` used to share one crop file (the last writer's
    pixels under both rows; with 2 workers, one's temporary file taken by the other)."""
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    red, green, blue, yellow, magenta = (230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20), (230, 20, 230)
    _solid(raw / "images" / "x.jpg", [red])
    _solid(raw / "images" / "x.JPG", [green])
    _solid(raw / "images" / "two.jpg", [blue, yellow])
    _solid(raw / "images" / "two_jpg_f1.png", [magenta])
    faces = {
        "x.jpg": [[30, 30, 70, 70]],
        "x.JPG": [[30, 30, 70, 70]],
        "two.jpg": [[5, 30, 45, 70], [62, 38, 86, 62]],  # the larger (face 0) on blue, face 1 on yellow
        "two_jpg_f1.png": [[30, 30, 70, 70]],
    }
    ann = {"images": {k: [{"box": b} for b in boxes] for k, boxes in faces.items()}}
    (raw / "annotations.json").write_text(json.dumps(ann))
    cfg = DetectConfig(multi_face="all", margin=0.0)
    rows = run_detect(cfg, raw, tmp_path / "d", workers=workers)
    colour = {("x.jpg", 0): red, ("x.JPG", 0): green, ("two.jpg", 0): blue, ("two.jpg", 1): yellow}
    colour[("two_jpg_f1.png", 0)] = magenta
    seen: dict[str, int] = {}
    got = {}
    for r in rows:
        k = seen[r.source] = seen.get(r.source, -1) + 1
        got[(r.source, k)] = read_image(tmp_path / "d" / r.file)[10:-10, 10:-10].reshape(-1, 3).mean(0)
    assert got.keys() == colour.keys() and len({r.file for r in rows}) == 5
    for key, c in colour.items():
        assert np.abs(got[key] - c).max() < 12, (key, got[key])
    names = {r.source: r.file for r in rows}
    assert [r.file for r in rows if r.source == "two.jpg"] == ["two_jpg_f0.png", "two_jpg_f1.png"]  # as always
    assert re.fullmatch(r"two_jpg_f1_h[0-9a-f]{8}\.png", names["two_jpg_f1.png"])
    assert re.fullmatch(r"x_jpg_h[0-9a-f]{8}\.png", names["x.jpg"]) and names["x.jpg"] != names["x.JPG"]
    assert crop_stems(["b.png", "a.jpg", "a.JPG"], False) == crop_stems(["a.JPG", "a.jpg", "b.png"], False)
    assert crop_stems(["a.png", "a_f1.png", "b.jpg"], multi_face=False) == {}  # one face an image: no face names


def test_raw_names_the_stages_write_beside_the_faces_get_crops_of_their_own(tmp_path):
    """A raw folder `masks/` met the matte stage's masks (the mask of `a.png` was written over the face of
    `masks/a.png`, or the other way round); a raw `contact_sheet.png` was the contact sheet's name."""
    raw = tmp_path / "raw"
    red, green, blue, yellow, magenta = (230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20), (230, 20, 230)
    colours = {"a.png": red, "masks/a.png": green, "Rgba/a.png": blue, "contact_sheet.png": yellow}
    colours["masks_/a.png"] = magenta  # already the escaped name: both get a hash
    for key, c in colours.items():
        (raw / "images" / key).parent.mkdir(parents=True, exist_ok=True)
        _solid(raw / "images" / key, [c])
    ann = {"images": {k: [{"box": [30, 30, 70, 70]}] for k in colours}}
    (raw / "annotations.json").write_text(json.dumps(ann))
    run_detect(DetectConfig(margin=0.0), raw, tmp_path / "d")
    (tmp_path / "d" / "contact_sheet.png").unlink(missing_ok=True)  # as the chain would write it: none yet
    rows = run_matte(MatteConfig(backend="none", rgba=True), tmp_path / "d", tmp_path / "m")
    names = {r.source: r.out_file for r in rows}
    assert names["a.png"] == "a.png" and names["Rgba/a.png"] == "Rgba_/a.png"
    assert names["contact_sheet.png"] == "contact_sheet_.png"
    assert re.fullmatch(r"masks_/a_h[0-9a-f]{8}\.png", names["masks/a.png"])
    assert re.fullmatch(r"masks_/a_h[0-9a-f]{8}\.png", names["masks_/a.png"]) and len(set(names.values())) == 5
    contact_sheet("matte", tmp_path / "m", raw / "images")
    for key, c in colours.items():
        face = read_image(tmp_path / "m" / names[key])
        assert np.abs(face[10:-10, 10:-10].reshape(-1, 3).mean(0) - c).max() < 12, key
        assert (read_image(tmp_path / "m" / "masks" / names[key]) == 255).all()  # its mask: `none` keeps it all
        assert read_image(tmp_path / "m" / "rgba" / names[key]).shape == face.shape
    assert len(list((tmp_path / "m" / "masks").rglob("*.png"))) == 5
    assert (tmp_path / "m" / "contact_sheet.png").is_file()


def test_a_second_run_of_a_stage_is_refused_while_the_first_writes_and_the_first_keeps_its_files(
    layout, tmp_path, monkeypatch
):
    """A second run of detect into the same folder used to take the live run's temporary folder for a killed
    run's and remove it: the first run then recreated it and reported success with its earlier crops gone."""
    from facegan.errors import FolderBusy
    from facegan.preprocess import detect

    dst, busy, tried = tmp_path / "detect", [], []
    annotations = detect.DETECTORS["annotations"]

    def second_run_during_the_first(cfg, raw):
        inner = annotations(cfg, raw)

        def detector(image, key):
            if key == "000005.png" and not tried:  # half-way through the first run
                tried.append(key)
                try:
                    run_detect(DetectConfig(), layout.raw, dst)
                except FolderBusy as e:
                    busy.append(str(e))
            return inner(image, key)

        return detector

    monkeypatch.setitem(detect.DETECTORS, "annotations", second_run_during_the_first)
    rows = run_detect(DetectConfig(), layout.raw, dst)
    assert busy == [
        f"{dst}: another detect run is writing here (it holds {tmp_path / '.detect.lock'}); wait for it to end, "
        "or stop it"
    ]
    assert len(rows) == 12 and all(r.status == "ok" for r in rows)
    for r in rows:
        assert np.array_equal(read_image(dst / r.file), read_image(layout.interim("detect") / r.file))


def test_rgba_cutouts_keep_their_subfolders(tmp_path):
    """`a/face.png` and `b/face.png` used to share rgba/face.png (masks/ kept the subfolders)."""
    from facegan.config import MatteConfig
    from facegan.io import write_image
    from facegan.manifest import Row, write_manifest

    src = tmp_path / "align"
    rows = []
    for i, sub in enumerate(("a", "b")):
        write_image(src / sub / "face.png", np.full((16, 16, 3), 60 * (i + 1), np.uint8))
        rows.append(Row(source=f"{sub}/face.jpg", file=f"{sub}/face.png", stage="align"))
    write_manifest(src, rows)
    run_matte(MatteConfig(backend="none", rgba=True), src, tmp_path / "m")
    for i, sub in enumerate(("a", "b")):
        rgba = np.asarray(Image.open(tmp_path / "m" / "rgba" / sub / "face.png"))
        assert rgba.shape == (16, 16, 4) and (rgba[..., :3] == 60 * (i + 1)).all() and (rgba[..., 3] == 255).all()


def test_pack_with_a_missing_label_file_stops_naming_it(layout, tiny_params_obj, tmp_path):
    """A configured label file that was not there used to be passed over: the set packed unlabelled."""
    from facegan.errors import StageInputMissing

    cfg = tiny_params_obj.dataset("cartoon").pack.model_copy(update={"labels": "gone.csv"})
    with pytest.raises(StageInputMissing, match=r"label file .*/gone\.csv \(pack\.labels\) not found: restore it"):
        run_pack(cfg, layout.raw, layout.interim("quality"), tmp_path / "p")
    assert not (tmp_path / "p").exists()
    # a hand-written block that never named a label file (pack.labels left at its default) packs without labels
    default = PackConfig.model_validate({"resolution": cfg.resolution})
    assert default.labels == "labels.csv" and not (tmp_path / "raw" / "labels.csv").exists()
    (tmp_path / "raw").mkdir()
    rows = run_pack(default, tmp_path / "raw", layout.interim("quality"), tmp_path / "p")
    assert sum(r.status == "ok" for r in rows) == 12
    with zipfile.ZipFile(tmp_path / "p" / ZIP_NAME) as zf:
        assert json.loads(zf.read("dataset.json"))["labels"] is None


def _annotated(raw: Path, n: int, box: list[float]) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    face = {"box": box, "landmarks": [[5.0, 6.0], [9.0, 6.0], [7.0, 8.0], [5.0, 10.0], [9.0, 10.0]]}
    (raw / "annotations.json").write_text(json.dumps({"images": {f"{i:06d}.png": [face] for i in range(n)}}))


def test_the_annotations_backends_pickle_small_whatever_the_number_of_annotated_images(tmp_path, monkeypatch):
    """The `annotations` detector and landmarker are pickled into every chunk of images. They held the whole file's
    faces (1.9 MB at 10,000 images, pickled again per chunk: O(images^2) bytes a stage); now its path and version,
    read once per process: a copy unpickled in another process, in another working directory, reads the file."""
    import pickle
    import subprocess
    import sys

    from facegan.config import AlignConfig
    from facegan.manifest import Row
    from facegan.preprocess import align, detect

    monkeypatch.chdir(tmp_path)
    sizes = {}
    for n in (10, 10_000):
        _annotated(Path(f"r{n:05d}"), n, [1, 2, 30, 40])  # relative: resolved where the backend is made
        backends = (
            detect.DETECTORS["annotations"](DetectConfig(), Path(f"r{n:05d}")),
            align.LANDMARKERS["annotations"](AlignConfig(), Path(f"r{n:05d}")),
        )
        sizes[n] = [len(pickle.dumps(b)) for b in backends]
    # equal but for the digits of the file's size in its version stamp
    assert all(abs(a - b) <= 8 for a, b in zip(sizes[10], sizes[10_000], strict=True)), sizes
    assert max(sizes[10_000]) < 1000, sizes

    row = Row(source="000007.png", stage="detect", box=[1, 2, 30, 40], transform=[[1, 0, 0], [0, 1, 0]])
    code = (
        "import pickle, sys; det, lm, row = pickle.load(sys.stdin.buffer); "
        "print(det(None, '000007.png')[0].box, det(None, 'other.png'), lm(None, row).tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps((*backends, row)), capture_output=True, cwd="/", timeout=120
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    five = [[5.0, 6.0], [9.0, 6.0], [7.0, 8.0], [5.0, 10.0], [9.0, 10.0]]
    assert out.stdout.decode().strip() == f"(1.0, 2.0, 30.0, 40.0) [] {five}"


def test_the_annotations_backends_read_a_rewritten_file_again_and_fail_before_any_image(tmp_path):
    """A long-running process (`facegan serve`) holds the faces per file version, not per path: a rewritten file
    is read again. A missing or malformed file stops the stage when the backend is made, naming the file."""
    from facegan.errors import StageInputMissing
    from facegan.preprocess import detect

    raw = tmp_path / "raw"
    _annotated(raw, 3, [1, 2, 30, 40])
    before = detect.DETECTORS["annotations"](DetectConfig(), raw)
    _annotated(raw, 4, [10, 20, 300, 400])
    after = detect.DETECTORS["annotations"](DetectConfig(), raw)
    assert before(None, "000001.png")[0].box == (1, 2, 30, 40)  # made before the rewrite: the file as it was read
    assert after(None, "000001.png")[0].box == (10, 20, 300, 400) and after(None, "000003.png")
    from facegan.preprocess.annotations import AnnotationsError

    for text, problem in (
        ('{"images": {"a.png": [{"no box": 1}]}}', "KeyError"),
        ('{"images": ["a.png"]}', "AttributeError"),  # was an AttributeError traceback
        ('{"images": {"a.png": [{"box": [1, 2, 3]}]}}', "ValueError"),
        (
            '{"images": {"a.png": [{"box": [1, 2, 3, 4], "landmarks": [1, 2]}]}}',
            "ValueError: landmarks of shape \\(2,\\), not 5 or 68",
        ),
        (
            '{"images": {"a.png": [{"box": [1, 2, 3, 4], "landmarks": [[1, 2], [3, 4], [5, 6]]}]}}',
            r"ValueError: .*\(3, 2\)",
        ),
        ("{not json", "JSONDecodeError"),
    ):
        (raw / "annotations.json").write_text(text)
        with pytest.raises(
            AnnotationsError, match=rf"^{raw}/annotations.json: not a facegan annotations file \({problem}"
        ):
            detect.DETECTORS["annotations"](DetectConfig(), raw)
    (raw / "annotations.json").unlink()
    with pytest.raises(StageInputMissing, match=rf"^annotations file not found: {raw}/annotations.json \(the"):
        detect.DETECTORS["annotations"](DetectConfig(), raw)


def test_file_names_that_are_not_utf8_are_one_clear_error_before_any_work(layout, tmp_path):
    """A Latin-1 name (b'caf\\xe9.png') went through every image and then failed writing the manifest with a
    PydanticSerializationError. Now detect refuses at once, naming the file as it can be printed; the import of
    `facegan dataset add` skips such a file with the reason."""
    import os

    from facegan.data.sources import NOT_UTF8_NAME, import_images
    from facegan.errors import StageInputMissing

    raw = tmp_path / "raw"
    shutil.copytree(layout.raw, raw)
    latin1 = os.path.join(os.fsencode(raw / "images"), b"caf\xe9.png")
    shutil.copyfile(raw / "images" / "000000.png", latin1)
    with pytest.raises(StageInputMissing, match=r"1 file name\(s\) are not UTF-8 text \(caf\\xe9\.png\)"):
        run_detect(DetectConfig(backend="annotations"), raw, tmp_path / "detect")
    assert not (tmp_path / "detect").exists()

    report = import_images(raw / "images", tmp_path / "imported")
    assert report.skipped["caf\\xe9.png"] == NOT_UTF8_NAME
    assert len(report.imported) == len(list((raw / "images").glob("*.png"))) - 1
