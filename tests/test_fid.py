"""Frechet distance / KID maths, the Inception loader (stand-in weights) and the dlib extractor."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from facegan.config import EvaluateConfig
from facegan.evaluate import inception
from facegan.evaluate.extractors import ExtractorUnavailable, make_extractor
from facegan.evaluate.fid import feature_stats, frechet_distance, kid, load_stats, save_stats


def test_frechet_of_identical_stats_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    s = feature_stats(x)
    assert abs(frechet_distance(s.mu, s.sigma, s.mu, s.sigma)) < 1e-8


def test_frechet_matches_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_rejects_non_finite_and_mismatched():
    good = np.eye(2)
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), good)
    with pytest.raises(ValueError, match="different shapes"):
        frechet_distance(np.zeros(2), good, np.zeros(3), np.eye(3))


def test_kid_is_small_for_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, _ = kid(a, b, subsets=20, subset_size=200)
    shifted, _ = kid(a, b + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.01 and shifted > 0.1


def test_kid_matches_direct_unbiased_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 4)), rng.normal(0.5, 1, size=(50, 4))
    k = lambda a, b: (a @ b.T / 4 + 1) ** 3  # noqa: E731
    m = 50
    direct = (
        (k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1))
        + (k(y, y).sum() - np.trace(k(y, y))) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )
    got, std = kid(x, y, subsets=3, subset_size=50)
    # every subset is both sets whole: the std was 0.000000, a precision never measured
    assert got == pytest.approx(direct, abs=1e-6) and std is None
    assert kid(x, y, subsets=3, subset_size=40)[1] > 0 and kid(x, y[:49], subsets=3, subset_size=50)[1] > 0


def test_stats_file_round_trip(tmp_path):
    s = feature_stats(np.random.default_rng(2).normal(size=(20, 5)), extractor="dlib", mode="legacy")
    save_stats(tmp_path / "s.npz", s)
    t = load_stats(tmp_path / "s.npz")
    assert (
        np.allclose(t.mu, s.mu) and np.allclose(t.sigma, s.sigma) and t.meta == {"extractor": "dlib", "mode": "legacy"}
    )


def test_missing_inception_weights_message_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("FACEGAN_OFFLINE", "1")
    with pytest.raises(inception.WeightsUnavailable) as e:
        inception.find_weights()
    msg = str(e.value)
    assert inception.WEIGHTS_NAME in msg and str(tmp_path / "th" / "hub" / "checkpoints") in msg
    # `facegan fid` reads no params.yaml: its option is named, and the extractor that needs no download
    assert "evaluate.inception_weights (facegan fid: --weights)" in msg and "--extractor dlib" in msg
    with pytest.raises(inception.WeightsUnavailable, match=r"not found at .*nope.pth \(.*facegan fid: --weights\)"):
        inception.find_weights(tmp_path / "nope.pth")


def test_stand_in_inception_file_loads_strictly_and_is_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    torch.manual_seed(0)
    net = inception.FIDInceptionV3()
    path = inception.hub_checkpoint_dir() / inception.WEIGHTS_NAME
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    assert inception.find_weights() == path
    with pytest.raises(inception.WeightsUnavailable, match="not the pytorch-fid Inception file.*remove it so a corr"):
        inception.load_inception(path)  # the cache's copy: removed, it is fetched again
    for given in (path, tmp_path / "link.pth"):  # a file the user named, even the cache's: removing it fetches nothing
        if not given.exists():
            given.symlink_to(path)
        with pytest.raises(ExtractorUnavailable) as e:
            make_extractor("inception", EvaluateConfig(inception_weights=given))
        assert str(e.value) == (
            f"{given} is not the pytorch-fid Inception file (sha256 does not start with 6726825d); download "
            f"{inception.WEIGHTS_NAME} from {inception.WEIGHTS_URL} and point --weights or evaluate.inception_weights "
            "at it"
        )
    with pytest.raises(ExtractorUnavailable, match="remove it so a correct copy can be fetched"):
        make_extractor("inception", EvaluateConfig())  # found in the cache
    loaded = inception.load_inception(path, check_hash=False)
    assert len(loaded.state_dict()) == len(net.state_dict())
    with torch.inference_mode():
        feats = loaded(torch.rand(2, 3, 64, 64))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()


def test_stand_in_file_has_the_pytorch_fid_parameter_names():
    keys = set(inception.FIDInceptionV3().state_dict())
    for k in (
        "Conv2d_1a_3x3.conv.weight",
        "Conv2d_1a_3x3.bn.running_var",
        "Mixed_5b.branch5x5_2.conv.weight",
        "Mixed_6e.branch7x7dbl_5.bn.bias",
        "Mixed_7c.branch3x3dbl_3b.conv.weight",
        "fc.weight",
        "fc.bias",
    ):
        assert k in keys
    # torchvision's Inception-v3: 27,161,264 parameters, minus its aux head (3,326,696),
    # plus the FID fc's 8 extra classes
    assert sum(p.numel() for p in inception.FIDInceptionV3().parameters()) == 27_161_264 - 3_326_696 + 8 * 2048 + 8


def test_dlib_extractor_embeds_faces(layout):
    from facegan.data.packed import ZIP_NAME, load_packed

    images, _, _ = load_packed(layout.packed / ZIP_NAME, limit=4)
    ex = make_extractor("dlib", EvaluateConfig(batch_size=2))
    f = ex(images)
    assert f.shape == (4, 128) and np.isfinite(f).all()
    dist = np.linalg.norm(f[:, None] - f[None], axis=2)
    assert (dist[~np.eye(4, dtype=bool)] > 1e-3).all(), "different faces give different embeddings"
    assert np.allclose(ex(images[:1]), f[:1])


def test_a_folder_streams_in_path_order_with_one_bar_and_names_a_bad_file(layout, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from facegan.data.packed import ZIP_NAME, load_packed
    from facegan.io import ImageError, list_images, read_image

    faces, _, _ = load_packed(layout.packed / ZIP_NAME, limit=12)
    for i, face in enumerate(faces):  # three sizes, interleaved: batching by size must not reorder the rows
        Image.fromarray(face).resize((64 + 16 * (i % 3),) * 2).save(tmp_path / f"{i:02d}.png")
    paths = list_images(tmp_path)
    ex = make_extractor("dlib", EvaluateConfig(batch_size=2))
    one_by_one = np.concatenate([ex(read_image(p)[None]) for p in paths])
    capsys.readouterr()
    reads: list = []
    monkeypatch.setattr("facegan.io.read_image", lambda p, *a: reads.append(p) or read_image(p, *a))
    done: list[int] = []
    fn = ex.fn

    def counting(batch):
        # decoded and not yet embedded: this chunk of 2 batches and the next, never the folder
        assert len(reads) - sum(done) <= 4 * ex.batch_size < len(paths)
        done.append(len(batch))
        return fn(batch)

    ex.fn = counting
    got = ex.folder(paths, desc="features of faces")
    assert got.shape == (12, 128) and sum(done) == 12
    np.testing.assert_allclose(got, one_by_one, rtol=1e-6, atol=1e-6)
    totals = {int(t) for t in re.findall(r"features of faces: .*?\d+/(\d+)", capsys.readouterr().err)}
    assert totals == {12}, "one bar over the images, not one per image size"

    (tmp_path / "07.png").write_text("not an image")
    with pytest.raises(ImageError, match=r"07.png: unreadable image: no image format Pillow knows"):
        ex.folder(list_images(tmp_path))


def test_a_singular_covariance_product_is_one_log_line_not_scipy_s_warning(caplog, recwarn):
    """A collapsed set (every image the same features) printed scipy's LinAlgWarning with its source line."""
    import logging

    one = np.tile(np.random.default_rng(0).normal(size=(1, 16)), (5, 1))
    with caplog.at_level(logging.WARNING, logger="facegan"):
        fd = frechet_distance(one.mean(0), np.cov(one, rowvar=False), one[:3].mean(0), np.cov(one[:3], rowvar=False))
    assert fd == pytest.approx(0, abs=1e-12) and not [w for w in recwarn if "singular" in str(w.message)]
    assert "the product of the covariances is singular (images of (nearly) the same features" in caplog.text


def test_other_warnings_of_the_square_root_still_reach_the_caller(monkeypatch):
    from scipy import linalg

    import facegan.evaluate.fid as fid

    real = linalg.sqrtm

    def warns(a):
        warnings.warn("overflow in the square root", RuntimeWarning, stacklevel=1)
        return real(a)

    monkeypatch.setattr(fid.linalg, "sqrtm", warns)
    with pytest.warns(RuntimeWarning, match="overflow in the square root"):
        frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))
