"""Stage `quality`: blurred, too-small and near-duplicate faces are rejected with reasons."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from facegan.config import CartoonSource, QualityConfig
from facegan.data.cartoon import render
from facegan.io import write_image
from facegan.manifest import Row, read_manifest, write_manifest
from facegan.preprocess.quality import phash, run_quality, sharpness


def test_quality_rejects_blur_small_faces_and_duplicate_photos_but_keeps_faces_of_one_photo(tmp_path):
    raw, src = tmp_path / "raw", tmp_path / "upscale"
    photos = {f"p{i}.png": render(CartoonSource(seed=3), i).image for i in range(4)}
    photos["copy.png"] = np.asarray(Image.fromarray(photos["p0.png"]).resize((230, 230)).resize((256, 256)))
    for name, im in photos.items():
        write_image(raw / "images" / name, im)
    face = render(CartoonSource(seed=3), 0).image[40:200, 40:200]
    rows = []
    for name, box in [("p0.png", [0, 0, 100, 100]), ("p1.png", [0, 0, 100, 100]), ("p1.png", [120, 0, 220, 100]),
                      ("p2.png", [0, 0, 100, 100]), ("p3.png", [0, 0, 20, 20]), ("copy.png", [0, 0, 100, 100])]:
        file = f"{name[:-4]}_{len(rows)}.png"
        im = cv2.GaussianBlur(face, (0, 0), 6) if name == "p2.png" else face
        write_image(src / file, im)
        rows.append(Row(source=name, file=file, stage="upscale", box=box))
    write_manifest(src, rows)
    out = run_quality(QualityConfig(min_sharpness=10, min_face=32, max_hash_distance=16), raw, src, tmp_path / "q", 2)
    reasons = {r.file or r.source: (r.status, r.reason) for r in out}
    assert [r.status for r in out] == ["ok", "ok", "ok", "rejected", "rejected", "rejected"]
    assert "blurred" in out[3].reason and "too small" in out[4].reason
    assert out[5].reason.startswith("near-duplicate of p0.png"), reasons
    assert len(read_manifest(tmp_path / "q")) == 6 and not (tmp_path / "q" / "copy_5.png").exists()
    assert all(isinstance(r.extra["sharpness"], float) for r in out if r.extra.get("sharpness") is not None)


def test_sharpness_and_hash_behave():
    im = render(CartoonSource(seed=5), 1).image
    assert sharpness(im) > 5 * sharpness(cv2.GaussianBlur(im, (0, 0), 4))
    h1, h2 = phash(im), phash(np.asarray(Image.fromarray(im).resize((200, 200))))
    others = [phash(render(CartoonSource(seed=5), i).image) for i in range(2, 8)]
    assert h1.size == 256 and (h1 != h2).sum() <= 8 and min((h1 != o).sum() for o in others) > 40
