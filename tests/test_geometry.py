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
    assert eyes[0, 1] == pytest.approx(eyes[1, 1]) and (eyes[:, 0].mean()) == pytest.approx(128)
    theta = np.deg2rad(30)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    m2 = geometry.similarity(geometry.ffhq_quad(five @ rot.T), geometry.ffhq_target(256))
    assert np.allclose(geometry.apply(m2, five @ rot.T), geometry.apply(m, five), atol=1e-6)  # rotation undone
