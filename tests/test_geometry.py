"""Similarity fitting and affine bookkeeping used by alignment."""

from __future__ import annotations

import numpy as np
import pytest

from facegan.preprocess import geometry


def test_similarity_recovers_a_known_transform():
    theta, s, t = np.deg2rad(23.0), 1.7, np.array([12.0, -4.5])
    m = np.array([[s * np.cos(theta), -s * np.sin(theta), t[0]], [s * np.sin(theta), s * np.cos(theta), t[1]]])
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    fit = geometry.similarity(src, geometry.apply(m, src))
    assert np.allclose(fit, m, atol=1e-9)
    assert abs(geometry.scale_of(fit) - s) < 1e-9


def test_compose_and_invert():
    a = np.array([[2.0, 0, 1], [0, 2.0, -3]])
    b = np.array([[0.0, -1, 5], [1, 0, 0]])
    p = np.array([[1.0, 2.0], [-4.0, 0.5]])
    assert np.allclose(geometry.apply(geometry.compose(a, b), p), geometry.apply(a, geometry.apply(b, p)))
    assert np.allclose(geometry.apply(geometry.invert(a), geometry.apply(a, p)), p)


def test_template_places_eyes_as_configured():
    t = geometry.template5(200, eye_distance=0.2, eye_y=0.45)
    assert np.isclose(np.linalg.norm(t[1] - t[0]), 40)
    assert np.allclose(t[:2].mean(0), [100, 90])
    assert t[2, 1] > t[0, 1] and t[3, 1] > t[2, 1], "nose below eyes, mouth below nose"


def test_warp_shrinks_without_aliasing():
    # a 1-pixel checkerboard shrunk 4x must average to grey, not alias into stripes
    board = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)
    im = np.repeat(board[..., None], 3, 2)
    out = geometry.warp(im, np.array([[0.25, 0, 0], [0, 0.25, 0]]), (64, 64))
    assert abs(out[8:-8, 8:-8].mean() - 127.5) < 3 and out[8:-8, 8:-8].std() < 3


def test_ffhq_crop_is_an_upright_square_centred_on_eyes_and_mouth_and_follows_rotation():
    import numpy as np

    from facegan.preprocess import geometry

    five = np.array([[40.0, 50], [80, 50], [60, 70], [45, 90], [75, 90]])
    quad = geometry.ffhq_quad(five)
    side = np.linalg.norm(quad[1] - quad[0])
    assert np.allclose(quad[:, 0].min(), 60 - side / 2) and np.allclose(quad[:, 0].max(), 60 + side / 2)
    assert side == pytest.approx(max(40 * 2.0, 40 * 1.8) * 2)  # 2 * max(2 * eye distance, 1.8 * eye-to-mouth)
    m = geometry.similarity(quad, geometry.ffhq_target(256))
    eyes = geometry.apply(m, five[:2])
    assert eyes[0, 1] == pytest.approx(eyes[1, 1]) and (eyes[:, 0].mean()) == pytest.approx(127.5)  # the middle
    theta = np.deg2rad(30)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    m2 = geometry.similarity(geometry.ffhq_quad(five @ rot.T), geometry.ffhq_target(256))
    assert np.allclose(geometry.apply(m2, five @ rot.T), geometry.apply(m, five), atol=1e-6)  # rotation undone


@pytest.mark.parametrize("backend", ["lanczos"])
def test_upscale_records_where_each_pixel_lands(tmp_path, backend):
    """The upscale stage's transform maps a point of its input to where the resize put it: a blob's centre,
    found in the output, is where the recorded transform says (a resize lines up pixel areas, so centres move by
    half a pixel of each size: 0.5 px at x2, 1.5 px at x4 under a plain scaling)."""
    from facegan.config import UpscaleConfig
    from facegan.io import read_image, write_image
    from facegan.manifest import Row
    from facegan.preprocess.upscale import UPSCALERS, _upscale_one

    h, w, at = 48, 64, (32.0, 20.0)
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - at[0]) ** 2 + (yy - at[1]) ** 2) / (2 * 3.0**2))
    write_image(tmp_path / "src" / "a.png", np.repeat((255 * blob).round().astype(np.uint8)[..., None], 3, 2))
    row = Row(source="a.png", file="a.png", box=[0, 0, w, h], transform=[[1.0, 0, 0], [0, 1.0, 0]])
    for size in (96, 192):  # x2 and x4 along y (48 px), x1.5 and x3 along x
        cfg = UpscaleConfig(backend=backend, size=size)
        out = _upscale_one(row, cfg=cfg, upscaler=UPSCALERS[backend](cfg), src=tmp_path / "src", dst=tmp_path / "out")
        img = read_image(tmp_path / "out" / "a.png")[..., 0].astype(np.float64)
        img = np.where(img > 0.2 * img.max(), img, 0)  # the blob, not the resampling's ringing
        oy, ox = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
        found = np.array([(ox * img).sum(), (oy * img).sum()]) / img.sum()
        assert np.abs(geometry.apply(out.affine, [at])[0] - found).max() < 0.1, (size, found)


@pytest.mark.parametrize(("scale", "w", "h"), [(0.5, 256, 256), (0.25, 256, 256), (0.125, 256, 256), (0.9, 256, 256),
                                              (0.37, 640, 480), (0.33, 257, 257)])  # fmt: skip
def test_warp_puts_content_where_its_matrix_says(scale, w, h):
    """A blob's centre lands where the matrix maps it, through warp's area-resize shortcut for shrinks too (it
    was 0.25-0.44 px off at 1/2-1/8: the shortcut's resize moves pixel centres by half a pixel of each size; and
    ~0.2-0.3 px where w * scale is not a whole number of pixels)."""
    at = np.array([101.0, 67.0])
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - at[0]) ** 2 + (yy - at[1]) ** 2) / (2 * (6.0 / scale / 4) ** 2))
    im = np.repeat((255 * blob).round().astype(np.uint8)[..., None], 3, 2)
    m = np.array([[scale, 0, 3.0], [0, scale, -2.0]])
    out = geometry.warp(im, m, (int(w * scale) + 8, int(h * scale) + 8))[..., 0].astype(np.float64)
    out = np.where(out > 0.2 * out.max(), out, 0)
    oy, ox = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
    found = np.array([(ox * out).sum(), (oy * out).sum()]) / out.sum()
    assert np.abs(geometry.apply(m, [at])[0] - found).max() < 0.1, found


def test_ffhq_template_matches_ffhqs_own_quad_transform():
    """The `ffhq` template puts content where FFHQ's alignment script does (PIL's QUAD transform of `quad + 0.5`):
    a blob's centre in both outputs within 0.1 px (it was half a pixel down and right)."""
    from PIL import Image

    five = np.array([[110.0, 120.0], [150.0, 118.0], [131.0, 142.0], [115.0, 165.0], [148.0, 163.0]])
    quad = geometry.ffhq_quad(five)
    yy, xx = np.mgrid[0:256, 0:256]
    blob = np.exp(-((xx - 127.0) ** 2 + (yy - 131.0) ** 2) / (2 * 4.0**2))
    im = np.repeat((255 * blob).round().astype(np.uint8)[..., None], 3, 2)
    size = int(round(np.linalg.norm(quad[3] - quad[0])))  # ~1:1, no shrink shortcut
    ref = Image.fromarray(im).transform((size, size), Image.Transform.QUAD, (quad + 0.5).flatten(), Image.BILINEAR)
    ours = geometry.warp(im, geometry.similarity(quad, geometry.ffhq_target(size)), (size, size))

    def centre(a: np.ndarray) -> np.ndarray:
        a = a[..., 0].astype(np.float64)
        a = np.where(a > 0.2 * a.max(), a, 0)
        oy, ox = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
        return np.array([(ox * a).sum(), (oy * a).sum()]) / a.sum()

    assert np.abs(centre(np.asarray(ref)) - centre(ours)).max() < 0.1, (centre(np.asarray(ref)), centre(ours))


def test_an_aligned_face_reaching_beyond_the_detect_crop_is_warped_from_the_photo(tmp_path):
    """Align warped the detect crop: where the template reaches beyond it (a tight box, here margin 0) the output
    showed the crop's border reflected (17% of the pixels for hog boxes on a real photo). Now such a face is warped
    from the photo itself, so the output equals one warp of the photo by the row's own transform."""
    import json

    from facegan.config import AlignConfig, DetectConfig
    from facegan.io import read_image, write_image
    from facegan.manifest import read_manifest
    from facegan.preprocess.align import run_align
    from facegan.preprocess.detect import run_detect

    raw = tmp_path / "raw"
    photo = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    write_image(raw / "images" / "p.png", photo)
    face = {"box": [110, 110, 190, 190], "landmarks": [[130, 135], [170, 135], [150, 155], [135, 172], [165, 172]]}
    (raw / "annotations.json").write_text(json.dumps({"format": "facegan-annotations/1", "images": {"p.png": [face]}}))
    run_detect(DetectConfig(backend="annotations", margin=0.0), raw, tmp_path / "detect")
    out = run_align(AlignConfig(backend="annotations", size=64), raw, tmp_path / "detect", tmp_path / "align")
    (row,) = [r for r in out if r.status == "ok"]
    aligned = read_image(tmp_path / "align" / row.file)
    assert np.array_equal(aligned, geometry.warp(photo, np.array(row.transform), (64, 64)))
    crop = read_image(tmp_path / "detect" / read_manifest(tmp_path / "detect")[0].file)
    from_crop = geometry.warp(crop, geometry.compose(row.transform, geometry.invert(row.affine)), (64, 64))
    assert np.abs(from_crop.astype(int) - aligned).mean() > 20  # the reflected border the old output had
