"""Geometry shared by the preprocessing stages: affine bookkeeping, similarity fits, warps."""

from __future__ import annotations

import cv2
import numpy as np

# 5-point face template (eye centres, nose tip, mouth corners) from the widely used 112x112
# ArcFace layout, normalised so that the eye centres are 1 apart and their midpoint is the origin.
_ARCFACE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
_EYE_MID = _ARCFACE[:2].mean(axis=0)
TEMPLATE5 = (_ARCFACE - _EYE_MID) / np.linalg.norm(_ARCFACE[1] - _ARCFACE[0])


def template5(size: int, eye_distance: float, eye_y: float) -> np.ndarray:
    """The 5-point template placed in a size x size output: eyes `eye_distance*size` apart at height `eye_y*size`."""
    return TEMPLATE5 * (eye_distance * size) + np.array([size / 2, eye_y * size])


def ffhq_quad(five: np.ndarray) -> np.ndarray:
    """The FFHQ crop (Karras et al. 2019, the dataset's alignment script) from eye centres and mouth corners:
    an oriented square around the eyes and mouth, 4x2 corners (top-left, bottom-left, bottom-right, top-right)."""
    eye_l, eye_r, _, mouth_l, mouth_r = np.asarray(five, np.float64)
    eye_avg, mouth_avg = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    eye_to_eye, eye_to_mouth = eye_r - eye_l, mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_target(size: int) -> np.ndarray:
    """Where ffhq_quad's corners go in a size x size output: its outer edges (FFHQ's script hands PIL `quad + 0.5`,
    pixel centres in PIL's edge coordinates, for the output's corners), at -0.5 and size - 0.5 in the pixel-centre
    coordinates of every transform here."""
    return np.array([[0, 0], [0, size], [size, size], [size, 0]], np.float64) - 0.5


def to3(m: np.ndarray | list) -> np.ndarray:
    """2x3 affine -> 3x3 homogeneous."""
    m = np.asarray(m, dtype=np.float64)
    return np.vstack([m[:2], [0, 0, 1]])


def compose(outer: np.ndarray | list, inner: np.ndarray | list) -> np.ndarray:
    """The 2x3 affine that applies `inner` then `outer`."""
    return (to3(outer) @ to3(inner))[:2]


def apply(m: np.ndarray | list, pts: np.ndarray | list) -> np.ndarray:
    """Map Nx2 points through a 2x3 affine."""
    m = np.asarray(m, dtype=np.float64)
    return np.asarray(pts, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def invert(m: np.ndarray | list) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def box_of(m: np.ndarray | list, box: list[float]) -> list[float]:
    """Axis-aligned bounds of a box's four corners after an affine map."""
    x0, y0, x1, y1 = box
    p = apply(m, [[x0, y0], [x1, y0], [x0, y1], [x1, y1]])
    return [*p.min(axis=0).tolist(), *p.max(axis=0).tolist()]


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst (Umeyama 1991)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / s.var(axis=0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def scale_of(m: np.ndarray | list) -> float:
    """Uniform scale factor of a similarity/affine (sqrt of |det|)."""
    m = np.asarray(m, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def resize_map(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """The affine from a (w, h) image's pixels to those of its resize to (w', h'): a resize lines up pixel areas,
    so pixel centres (at integers) move by half a pixel of each size, x' = (x + 0.5) w'/w - 0.5."""
    fx, fy = dst[0] / src[0], dst[1] / src[1]
    return np.array([[fx, 0, 0.5 * (fx - 1)], [0, fy, 0.5 * (fy - 1)]])


def warp(image: np.ndarray, m: np.ndarray, size: tuple[int, int], border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    """warpAffine to (w, h) that does not alias when shrinking: area-resize first, then warp at ~1:1."""
    s = scale_of(m)
    if s < 0.8:
        h, w = image.shape[:2]
        size_small = (max(1, round(w * s)), max(1, round(h * s)))  # sizes, not fx/fy: cv2 would use s itself
        small = cv2.resize(image, size_small, interpolation=cv2.INTER_AREA)  # as the scale, not the sizes' ratio
        shrink = resize_map((w, h), size_small)
        m = compose(m, invert(shrink))
        image = small
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=border)
