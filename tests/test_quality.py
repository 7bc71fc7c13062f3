"""Stage `quality`: blurred, too-small and near-duplicate faces are rejected with reasons."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
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
    for name, box in [
        ("p0.png", [0, 0, 100, 100]),
        ("p1.png", [0, 0, 100, 100]),
        ("p1.png", [120, 0, 220, 100]),
        ("p2.png", [0, 0, 100, 100]),
        ("p3.png", [0, 0, 20, 20]),
        ("copy.png", [0, 0, 100, 100]),
    ]:
        file = f"{name[:-4]}_{len(rows)}.png"
        im = cv2.GaussianBlur(face, (0, 0), 6) if name == "p2.png" else face
        write_image(src / file, im)
        rows.append(Row(source=name, file=file, stage="upscale", box=box))
    write_manifest(src, rows)
    out = run_quality(QualityConfig(min_sharpness=10, min_face=32, max_hash_distance=16), raw, src, tmp_path / "q", 2)
    reasons = {r.file or r.source: (r.status, r.reason) for r in out}
    assert [r.status for r in out] == ["ok", "ok", "ok", "rejected", "rejected", "rejected"]
    assert "blurred" in out[3].reason and "too small" in out[4].reason
    assert out[5].reason.startswith("near-duplicate (of p0.png, "), reasons
    assert len(read_manifest(tmp_path / "q")) == 6 and not (tmp_path / "q" / "copy_5.png").exists()
    assert all(isinstance(r.extra["sharpness"], float) for r in out if r.extra.get("sharpness") is not None)


@pytest.mark.parametrize("size", [256, 128], ids=["upscaled", "copied"])
def test_matted_faces_are_judged_by_their_inside_not_by_the_cut_out_edge(tmp_path, size):
    """Sharpness was measured on the matted image, where the cut-out's edge against the flat fill is sharp whatever
    the face: a face blurred with sigma 6 passed min_sharpness 10 once matted. The matte stage's mask now travels
    through upscale (resized with the image, or copied) and sharpness is measured inside it."""
    from facegan.config import UpscaleConfig
    from facegan.io import read_image
    from facegan.preprocess.upscale import run_upscale

    raw, matte, up = tmp_path / "raw", tmp_path / "matte", tmp_path / "upscale"
    face = render(CartoonSource(seed=3), 0).image[40:200, 40:200]
    disk = np.zeros((160, 160), np.uint8)
    cv2.circle(disk, (80, 80), 60, 255, -1)
    rows = []
    for name, im in [("sharp.png", face), ("blurred.png", cv2.GaussianBlur(face, (0, 0), 6))]:
        write_image(raw / "images" / name, im)
        write_image(matte / name, np.where(disk[..., None] > 0, im, 255).astype(np.uint8))  # on a white fill
        write_image(matte / "masks" / name, disk)
        rows.append(Row(source=name, file=name, stage="matte", box=[0, 0, 160, 160], transform=[[1, 0, 0], [0, 1, 0]]))
    write_manifest(matte, rows)
    run_upscale(UpscaleConfig(size=size), matte, up)
    assert read_image(up / "masks" / "blurred.png").shape == (max(size, 160), max(size, 160), 3)
    cfg = QualityConfig(min_sharpness=10, min_face=32, max_hash_distance=-1)
    out = run_quality(cfg, raw, up, tmp_path / "q")
    assert [r.status for r in out] == ["ok", "rejected"] and out[1].reason.startswith("blurred"), out
    for name in ("sharp.png", "blurred.png"):
        (up / "masks" / name).unlink()  # as before: the whole matted image, edge included
    unmasked = run_quality(cfg, raw, up, tmp_path / "q2")
    assert [r.status for r in unmasked] == ["ok", "ok"] and unmasked[1].extra["sharpness"] > 10


def test_of_near_duplicate_photos_the_biggest_face_is_kept(tmp_path):
    """The first copy by name was kept: a 240p copy (its face upscaled from 60 px) over the 480p original. Now the
    copy whose face is biggest in its photo; the manifest keeps its order."""
    raw, src = tmp_path / "raw", tmp_path / "upscale"
    big = render(CartoonSource(seed=3), 0).image
    small = np.asarray(Image.fromarray(big).resize((128, 128)))
    face = big[40:200, 40:200]
    rows = []
    for name, photo, box in [("a_small.png", small, [20, 20, 100, 100]), ("b_big.png", big, [40, 40, 200, 200])]:
        write_image(raw / "images" / name, photo)
        write_image(src / name, face)
        rows.append(Row(source=name, file=name, stage="upscale", box=box))
    write_manifest(src, rows)
    out = run_quality(QualityConfig(min_sharpness=10, min_face=32, max_hash_distance=16), raw, src, tmp_path / "q")
    assert [(r.source, r.status) for r in out] == [("a_small.png", "rejected"), ("b_big.png", "ok")]
    assert out[0].reason.startswith("near-duplicate (of b_big.png, ")


def test_sharpness_and_hash_behave():
    im = render(CartoonSource(seed=5), 1).image
    assert sharpness(im) > 5 * sharpness(cv2.GaussianBlur(im, (0, 0), 4))
    h1, h2 = phash(im), phash(np.asarray(Image.fromarray(im).resize((200, 200))))
    others = [phash(render(CartoonSource(seed=5), i).image) for i in range(2, 8)]
    assert h1.size == 256 and (h1 != h2).sum() <= 8 and min((h1 != o).sum() for o in others) > 40


# ---- near-duplicate search: the Hamming index against the all-pairs search it replaced ----------------------


def _dedupe_all_pairs(rows, max_bits):
    """The previous search (every face against every kept face), kept here as the reference."""
    from facegan.preprocess.quality import _bits

    kept, hashes, out = [], [], []
    for r in rows:
        if r.status != "ok" or r.stage != "quality" or max_bits < 0:
            out.append(r)
            continue
        h = _bits(str(r.extra["phash"]))
        if hashes:
            dist = (np.stack(hashes) != h).sum(1)
            dist[[src == r.source for src in kept]] = h.size + 1
            j = int(np.argmin(dist))
            if dist[j] <= max_bits:
                out.append(r.reject("quality", f"near-duplicate (of {kept[j]}, {int(dist[j])} of {h.size} bits apart)"))
                continue
        hashes.append(h)
        kept.append(r.source)
        out.append(r)
    return out


def _rows(hashes: list[np.ndarray], sources: list[str]) -> list[Row]:
    from facegan.preprocess.quality import _hex

    rows = []
    for i, (h, src) in enumerate(zip(hashes, sources, strict=True)):
        rows.append(Row(source=src, file=f"{i}.png", stage="quality", extra={"phash": _hex(h)}))
    return rows


def _same_decisions(hashes, sources, max_bits=16):
    from facegan.preprocess.quality import dedupe

    rows = _rows(hashes, sources)
    new = dedupe(rows, max_bits)
    old = _dedupe_all_pairs(rows, max_bits)
    assert [(r.status, r.reason) for r in new] == [(r.status, r.reason) for r in old]
    return new


def test_hamming_index_finds_exactly_the_strings_within_the_radius():
    from facegan.preprocess.hamming import HammingIndex

    rng = np.random.default_rng(0)
    for nbits, radius in [(256, 16), (256, 0), (256, 40), (64, 5), (20, 19)]:
        base = rng.random((300, nbits)) < 0.5
        near = base[rng.integers(0, 300, 200)] ^ (rng.random((200, nbits)) < radius / nbits * 1.2)
        stored = np.concatenate([base, near])
        index = HammingIndex(nbits, radius)
        for s in stored:
            index.add(s)
        queries = np.concatenate([near[:50] ^ (rng.random((50, nbits)) < 0.02), rng.random((20, nbits)) < 0.5])
        for q in queries:
            ids, dist = index.within(q)
            full = (stored != q).sum(1)
            assert (
                ids.tolist() == np.flatnonzero(full <= radius).tolist()
                and dist.tolist() == full[full <= radius].tolist()
            )


def test_dedupe_decisions_match_the_all_pairs_search_with_planted_copies():
    rng = np.random.default_rng(1)
    photos = rng.random((400, 256)) < 0.5
    hashes, sources = [], []
    for i in range(600):
        j = int(rng.integers(0, 400)) if i >= 400 else i
        flips = int(rng.integers(0, 30)) if i >= 400 else 0  # copies: some within 16 bits, some just beyond
        h = photos[j].copy()
        h[rng.choice(256, flips, replace=False)] ^= True
        hashes.append(h)
        sources.append(f"p{j}.png" if i >= 400 and rng.random() < 0.2 else f"s{i}.png")  # a few faces of one photo
    out = _same_decisions(hashes, sources)
    assert 50 < sum(r.status == "rejected" for r in out) < 200  # the comparison covered both outcomes


def _default_set_hashes(name: str, limit: int | None):
    from conftest import ROOT
    from facegan.config import load_params
    from facegan.preprocess.quality import phash

    src = load_params(ROOT / "params.yaml").dataset(name).source
    n = src.n if limit is None else min(limit, src.n)
    return [phash(render(src, i).image) for i in range(n)], [f"{i:06d}.png" for i in range(n)]


def test_dedupe_decisions_match_on_the_default_sets_first_images():
    for name in ("cartoon", "sketch"):
        _same_decisions(*_default_set_hashes(name, 40))


@pytest.mark.slow  # 2-5 min: renders the 2000 + 300 photos of params.yaml's two generated sets
def test_dedupe_decisions_match_on_the_whole_default_sets():
    for name in ("cartoon", "sketch"):
        _same_decisions(*_default_set_hashes(name, None))


def test_a_stage_that_accepts_nothing_says_why_in_its_error_and_leaves_no_earlier_faces(tmp_path):
    """The error pointed to the stage's manifest in its temporary output folder, removed by then. It now names the
    first rejections and how many more. The earlier run's output was kept: the next stage (`facegan pack`) went on
    packing faces these params reject, and `dataset show` counted them; the output now says what this run did."""
    from facegan.errors import StageError
    from facegan.manifest import read_summary

    raw, src = tmp_path / "raw", tmp_path / "upscale"
    face = cv2.GaussianBlur(render(CartoonSource(seed=3), 0).image[40:200, 40:200], (0, 0), 6)
    rows = []
    for i in range(5):
        write_image(raw / "images" / f"p{i}.png", face)
        write_image(src / f"b{i}.png", face)
        rows.append(Row(source=f"p{i}.png", file=f"b{i}.png", stage="upscale", box=[0, 0, 100, 100]))
    earlier = [Row(source=f"gone{i}.png", stage="detect").reject("detect", "no face found") for i in range(4)]
    write_manifest(src, earlier + rows)  # rejections of earlier stages are not this stage's reasons
    run_quality(QualityConfig(min_sharpness=0, max_hash_distance=-1), raw, src, tmp_path / "q")
    assert read_summary(tmp_path / "q")["ok"] == 5 and len(list((tmp_path / "q").glob("*.png"))) == 5
    with pytest.raises(StageError) as e:
        run_quality(QualityConfig(min_sharpness=10, max_hash_distance=-1), raw, src, tmp_path / "q")
    assert re.fullmatch(
        r"stage 'quality' accepted no image out of 9: p0\.png: blurred \(sharpness \d+\.\d < 10\.0\); "
        r"p1\.png: blurred \(sharpness \d+\.\d < 10\.0\); p2\.png: blurred \(sharpness \d+\.\d < 10\.0\); and 2 more",
        str(e.value),
    ), str(e.value)
    counts = {"ok": 0, "rejected": 9, "rejected: no face found": 4, "rejected: blurred": 5}
    assert read_summary(tmp_path / "q") == counts
    assert not list((tmp_path / "q").glob("*.png"))
    assert [r.status for r in read_manifest(tmp_path / "q")] == ["rejected"] * 9


def test_rejections_are_counted_by_kind_and_each_row_keeps_its_whole_reason():
    # counted whole, each distance, sharpness or kept file had a count of its own (in summary.json, the stage log,
    # `dataset show` and MLflow, where a long file name made a metric name MLflow refused)
    from facegan.manifest import summary

    reasons = [
        "another person (distance 0.82 > tolerance 0.6)",
        "another person (distance 0.91 > tolerance 0.6)",
        "blurred (sharpness 12.1 < 20.0)",
        "near-duplicate (of a/b.png, 3 of 64 bits apart)",
        "near-duplicate (of c.png, 5 of 64 bits apart)",
        "unreadable image: OSError: image file is truncated",
        "no face found",
    ]
    rows = [Row(source=f"{i}.png").reject("verify", r) for i, r in enumerate(reasons)] + [Row(source="ok.png")]
    assert summary(rows) == {
        "ok": 1,
        "rejected": 7,
        "rejected: another person": 2,
        "rejected: near-duplicate": 2,
        "rejected: blurred": 1,
        "rejected: unreadable image": 1,
        "rejected: no face found": 1,
    }
    assert [r.reason for r in rows[:7]] == reasons
