"""The embedded cartoon dataset: deterministic per seed, ground truth consistent with the pixels."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from facegan.config import CartoonSource
from facegan.data.cartoon import EYE_COLORS, FACE_COLORS, HAIR_COLORS, LABEL_VALUES, generate, render
from facegan.io import read_image

CFG = CartoonSource(n=10, size=128, seed=3)


def test_render_is_deterministic_per_seed_and_index():
    a, b = render(CFG, 4), render(CFG, 4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.box == b.box and a.landmarks == b.landmarks and a.labels == b.labels
    other = render(CFG.model_copy(update={"seed": 4}), 4)
    assert not np.array_equal(a.image, other.image)
    assert not np.array_equal(a.image, render(CFG, 5).image)


def test_label_vocabulary_is_cartoonset_like():
    assert len(HAIR_COLORS) >= 6 and len(EYE_COLORS) >= 4 and len(FACE_COLORS) >= 4
    assert LABEL_VALUES["glasses"] == ["0", "1"]
    assert len(LABEL_VALUES["hairstyle"]) >= 4 and len(LABEL_VALUES["face_shape"]) >= 3


@pytest.mark.parametrize("index", range(12))
def test_ground_truth_is_consistent(index):
    s = render(CartoonSource(n=12, size=128, seed=0), index)
    x0, y0, x1, y1 = s.box
    assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128, "face box inside the image"
    lm = np.array(s.landmarks)
    assert lm.shape == (5, 2)
    assert ((lm[:, 0] > x0) & (lm[:, 0] < x1) & (lm[:, 1] > y0) & (lm[:, 1] < y1)).all(), "landmarks inside the box"
    # every landmark sits on the drawn head
    assert all(s.mask[int(round(y)), int(round(x))] == 255 for x, y in lm)
    # the face ellipse fills ~pi/4 of its box; hair/ears only add to that
    inside = s.mask[int(np.ceil(y0)) : int(y1), int(np.ceil(x0)) : int(x1)]
    assert (inside == 255).mean() > 0.7
    # eyes are left/right of the nose, mouth below the eyes (up to the +/-25 degree rotation)
    eye_mid = lm[:2].mean(0)
    mouth_mid = lm[3:].mean(0)
    assert np.linalg.norm(mouth_mid - eye_mid) > np.linalg.norm(lm[1] - lm[0]) * 0.6
    assert s.labels.keys() == LABEL_VALUES.keys()


def test_labels_cover_every_value_over_a_few_hundred_faces():
    seen = {k: set() for k in LABEL_VALUES}
    rng_cfg = CartoonSource(n=300, size=64, seed=1)
    from facegan.data.cartoon import draw_head

    for i in range(300):
        labels = draw_head(np.random.default_rng([rng_cfg.seed, i])).labels
        for k, v in labels.items():
            seen[k].add(v)
    assert seen == {k: set(v) for k, v in LABEL_VALUES.items()}


def test_generate_writes_images_masks_annotations_labels_and_is_worker_independent(tmp_path):
    generate(CFG, tmp_path / "a", workers=1)
    generate(CFG, tmp_path / "b", workers=2)

    def digest(root):
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    da, db = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert da == db
    assert sum(k.startswith("images/") for k in da) == 10 and sum(k.startswith("masks/") for k in da) == 10
    ann = json.loads((tmp_path / "a" / "annotations.json").read_text())
    assert len(ann["images"]) == 10 and len(ann["landmarks"]) == 5
    with (tmp_path / "a" / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == sorted(ann["images"])
    for r in rows:
        for k, vals in LABEL_VALUES.items():
            assert r[k] in vals
    im = read_image(tmp_path / "a" / "images" / "000000.png")
    assert im.shape == (128, 128, 3) and im.dtype == np.uint8
