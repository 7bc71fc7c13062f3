"""The embedded default dataset: CartoonSet-like faces on cluttered backgrounds, with ground truth.

Each head is drawn in a 512x512 canonical frame (so its landmarks are exact), shrunk with area
interpolation (anti-aliasing), rotated and placed at a random position on a random background.
Beside the images the generator writes everything a preprocessing step can be scored against:

    images/000123.png      the input photo-like image (RGB)
    masks/000123.png       the head's foreground mask (0/255)
    annotations.json       per image: face box and 5 landmarks (eyes, nose tip, mouth corners)
    labels.csv             per image: hair/eye/face colour, glasses, hairstyle, face shape

Every image depends only on (seed, index): the output is identical for any worker count.
"""

from __future__ import annotations

import csv
import functools
import io as _io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facegan.config import CartoonSource
from facegan.io import atomic_dir, write_image, write_text
from facegan.parallel import Pool, map_items

log = logging.getLogger(__name__)

HAIR_COLORS = {
    "black": (32, 26, 24),
    "brown": (105, 64, 36),
    "blond": (232, 198, 108),
    "red": (178, 62, 30),
    "gray": (162, 162, 168),
    "blue": (52, 92, 204),
    "pink": (232, 118, 172),
}
EYE_COLORS = {"brown": (112, 70, 38), "blue": (58, 122, 214), "green": (56, 152, 78), "gray": (118, 130, 142)}
FACE_COLORS = {
    "pale": (255, 226, 206),
    "light": (240, 198, 162),
    "tan": (204, 152, 108),
    "brown": (150, 98, 64),
    "dark": (92, 60, 40),
}
HAIRSTYLES = ("short", "long", "bob", "spiky", "bun")
FACE_SHAPES = {"round": 1.05, "oval": 1.22, "long": 1.38}  # height / width of the face ellipse
LABEL_VALUES: dict[str, list[str]] = {
    "hair_color": list(HAIR_COLORS),
    "eye_color": list(EYE_COLORS),
    "face_color": list(FACE_COLORS),
    "glasses": ["0", "1"],
    "hairstyle": list(HAIRSTYLES),
    "face_shape": list(FACE_SHAPES),
}
LANDMARK_NAMES = ["left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right"]
CANVAS = 512


@dataclass(frozen=True)
class Head:
    """One drawn head in canonical coordinates."""

    rgb: np.ndarray  # CANVAS x CANVAS x 3 uint8
    alpha: np.ndarray  # CANVAS x CANVAS uint8 (0/255)
    landmarks: np.ndarray  # 5x2 float
    outline: np.ndarray  # Kx2 float, the face ellipse (for the box)
    labels: dict[str, str]


def _jitter(rng: np.random.Generator, color: tuple[int, int, int], amount: int = 10) -> tuple[int, ...]:
    return tuple(int(c) for c in np.clip(np.array(color) + rng.integers(-amount, amount + 1, 3), 0, 255))


def _shade(color: tuple[int, ...], f: float) -> tuple[int, ...]:
    return tuple(int(np.clip(c * f, 0, 255)) for c in color)


def _ellipse(shape: tuple[int, int], c: tuple[float, float], axes: tuple[float, float], angle: float = 0) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (round(c[0]), round(c[1])), (max(1, round(axes[0])), max(1, round(axes[1]))), angle, 0, 360, 255, -1)
    return m > 0


def draw_head(rng: np.random.Generator) -> Head:
    """Draw a random cartoon head (labels chosen uniformly) on a transparent canonical canvas."""
    labels = {k: str(rng.choice(v)) for k, v in LABEL_VALUES.items()}
    labels["glasses"] = "1" if rng.random() < 0.35 else "0"
    hair = _jitter(rng, HAIR_COLORS[labels["hair_color"]])
    skin = _jitter(rng, FACE_COLORS[labels["face_color"]], 8)
    iris = _jitter(rng, EYE_COLORS[labels["eye_color"]], 12)
    style = labels["hairstyle"]

    shape = (CANVAS, CANVAS)
    rgb = np.zeros((*shape, 3), np.uint8)
    alpha = np.zeros(shape, np.uint8)

    def paint(mask: np.ndarray, color: tuple[int, ...]) -> None:
        rgb[mask] = color
        alpha[mask] = 255

    cx, cy = CANVAS / 2 + rng.uniform(-6, 6), 262 + rng.uniform(-6, 6)
    a = rng.uniform(80, 92)
    b = a * FACE_SHAPES[labels["face_shape"]] * rng.uniform(0.97, 1.03)
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS]

    # back hair, neck, ears
    cap = _ellipse(shape, (cx, cy - 0.2 * b), (1.1 * a, 0.98 * b))
    if style == "long":
        paint(_ellipse(shape, (cx, cy - 0.05 * b), (1.22 * a, 1.08 * b)), hair)
        paint(_ellipse(shape, (cx, cy + 0.4 * b), (1.18 * a, 0.95 * b)) & (yy > cy), hair)
    elif style == "bob":
        paint(_ellipse(shape, (cx, cy - 0.02 * b), (1.25 * a, 1.02 * b)) & (yy < cy + 0.75 * b), hair)
    else:
        paint(cap & (yy < cy + 0.05 * b), hair)
        if style == "bun":
            paint(_ellipse(shape, (cx, cy - 1.12 * b), (0.42 * a, 0.38 * a)), hair)
        elif style == "spiky":
            for k in range(7):
                t = math.pi * (0.12 + 0.76 * k / 6)
                bx, by = cx - 1.05 * a * math.cos(t), cy - 0.2 * b - 0.95 * b * math.sin(t)
                tip = (cx - 1.45 * a * math.cos(t), cy - 0.2 * b - 1.3 * b * math.sin(t))
                n = (math.sin(t) * 0.2 * a, -math.cos(t) * 0.2 * a)
                tri = np.array([[bx - n[0], by - n[1]], tip, [bx + n[0], by + n[1]]], np.int32)
                m = np.zeros(shape, np.uint8)
                cv2.fillConvexPoly(m, tri, 255)
                paint(m > 0, hair)
    neck = (np.abs(xx - cx) < 0.36 * a) & (yy > cy + 0.6 * b) & (yy < cy + 1.3 * b)
    paint(neck, _shade(skin, 0.88))
    if style not in ("long", "bob"):
        for side in (-1, 1):
            paint(_ellipse(shape, (cx + side * 0.98 * a, cy + 0.05 * b), (0.17 * a, 0.26 * b)), _shade(skin, 0.92))

    # face
    paint(_ellipse(shape, (cx, cy), (a, b)), skin)

    # fringe: the hair cap above a wavy hairline
    phase, amp = rng.uniform(0, 2 * math.pi), rng.uniform(0.02, 0.07) * b
    hairline = cy - rng.uniform(0.42, 0.55) * b + amp * np.sin(xx / (0.22 * a) + phase)
    if style in ("long", "bob"):
        fringe = _ellipse(shape, (cx, cy - 0.12 * b), (1.12 * a, 1.0 * b)) & (yy < hairline)
        part = rng.uniform(-0.4, 0.4) * a  # side parting: hair falls along the face edge
        fringe |= (
            _ellipse(shape, (cx, cy), (1.12 * a, 1.02 * b))
            & ~_ellipse(shape, (cx + part * 0.1, cy + 0.1 * b), (0.9 * a, 1.0 * b))
            & (yy < cy + 0.3 * b)
        )
    else:
        fringe = cap & (yy < hairline)
    paint(fringe, hair)

    # eyes, brows
    d = rng.uniform(0.36, 0.42) * a
    ey = cy - rng.uniform(0.04, 0.12) * b
    eyes = np.array([[cx - d, ey], [cx + d, ey]])
    brow = _shade(hair, 0.7)
    lift = rng.uniform(-0.05, 0.08) * a
    for side, (ex, _) in zip((-1, 1), eyes, strict=True):
        paint(_ellipse(shape, (ex, ey), (0.17 * a, 0.115 * a)), (250, 250, 250))
        paint(_ellipse(shape, (ex, ey), (0.085 * a, 0.085 * a)), iris)
        paint(_ellipse(shape, (ex, ey), (0.04 * a, 0.04 * a)), (15, 15, 15))
        paint(_ellipse(shape, (ex + 0.03 * a, ey - 0.03 * a), (0.018 * a, 0.018 * a)), (255, 255, 255))
        m = np.zeros(shape, np.uint8)
        p0 = (round(ex - side * 0.02 * a - 0.15 * a), round(ey - 0.24 * a - (lift if side < 0 else 0)))
        p1 = (round(ex - side * 0.02 * a + 0.15 * a), round(ey - 0.24 * a - (lift if side > 0 else 0)))
        cv2.line(m, p0, p1, 255, max(2, round(0.06 * a)))
        paint(m > 0, brow)

    # nose tip, mouth corners
    ny = cy + rng.uniform(0.15, 0.22) * b
    nose = np.array([[cx, ny - 0.2 * a], [cx - 0.075 * a, ny], [cx + 0.075 * a, ny]], np.int32)
    m = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(m, nose, 255)
    paint(m > 0, _shade(skin, 0.8))
    mw, my = rng.uniform(0.22, 0.32) * a, cy + rng.uniform(0.46, 0.56) * b
    smile = rng.uniform(-0.02, 0.14) * a
    curve = np.array([[cx + mw * t, my + smile * (1 - t * t)] for t in np.linspace(-1, 1, 15)], np.int32)
    m = np.zeros(shape, np.uint8)
    cv2.polylines(m, [curve], False, 255, max(2, round(0.055 * a)))
    paint(m > 0, (150, 40, 50))
    mouth = np.array([[cx - mw, my], [cx + mw, my]])

    if labels["glasses"] == "1":
        frame = _jitter(rng, ((20, 20, 20), (90, 50, 30), (150, 20, 30))[rng.integers(3)])
        m = np.zeros(shape, np.uint8)
        t = max(2, round(0.045 * a))
        r = round(0.25 * a)
        for ex, _ in eyes:
            if rng.random() < 0.5:
                cv2.circle(m, (round(ex), round(ey)), r, 255, t)
            else:
                cv2.rectangle(m, (round(ex - r), round(ey - 0.8 * r)), (round(ex + r), round(ey + 0.8 * r)), 255, t)
        cv2.line(m, (round(eyes[0, 0] + r), round(ey)), (round(eyes[1, 0] - r), round(ey)), 255, t)
        for side in (-1, 1):
            cv2.line(
                m, (round(cx + side * (d + r)), round(ey)), (round(cx + side * 0.99 * a), round(ey - 0.05 * b)), 255, t
            )
        paint(m > 0, frame)

    landmarks = np.vstack([eyes, [[cx, ny]], mouth]).astype(np.float64)
    outline = np.asarray(cv2.ellipse2Poly((round(cx), round(cy)), (round(a), round(b)), 0, 0, 360, 5), np.float64)
    return Head(rgb, alpha, landmarks, outline, labels)


def draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cluttered backdrop: gradient, random shapes (some skin-coloured), blur and noise."""
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    bg: np.ndarray = (c0 * (1 - t) + c1 * t).astype(np.uint8).repeat(size, axis=1)
    if rng.random() < 0.5:
        bg = np.ascontiguousarray(bg.transpose(1, 0, 2))
    skins = list(FACE_COLORS.values())
    for _ in range(int(rng.integers(10, 26))):
        color = tuple(
            int(v) for v in (skins[rng.integers(len(skins))] if rng.random() < 0.15 else rng.integers(0, 256, 3))
        )
        kind = rng.integers(4)
        p = rng.integers(-size // 4, size + size // 4, 2)
        r = int(rng.integers(size // 30, size // 4))
        if kind == 0:
            q = p + rng.integers(-size // 3, size // 3, 2)
            cv2.rectangle(
                bg, tuple(int(v) for v in p), tuple(int(v) for v in q), color, -1 if rng.random() < 0.7 else 3
            )
        elif kind == 1:
            cv2.ellipse(
                bg,
                tuple(int(v) for v in p),
                (r, int(rng.integers(size // 30, size // 4))),
                float(rng.uniform(0, 180)),
                0,
                360,
                color,
                -1,
                cv2.LINE_AA,
            )
        elif kind == 2:
            q = p + rng.integers(-size // 2, size // 2, 2)
            cv2.line(
                bg, tuple(int(v) for v in p), tuple(int(v) for v in q), color, int(rng.integers(1, 6)), cv2.LINE_AA
            )
        else:
            pts = (p + rng.integers(-r, r + 1, (int(rng.integers(3, 7)), 2))).astype(np.int32)
            cv2.fillPoly(bg, [pts], color, cv2.LINE_AA)
    sigma = rng.uniform(0, 1.5)
    if sigma > 0.3:
        bg = cv2.GaussianBlur(bg, (0, 0), sigma)
    noise = rng.normal(0, rng.uniform(0, 6), bg.shape)
    out: np.ndarray = np.clip(bg + noise, 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class Sample:
    image: np.ndarray
    mask: np.ndarray
    box: list[float]
    landmarks: list[list[float]]
    labels: dict[str, str]


def pencil(image: np.ndarray) -> np.ndarray:
    """A sepia pencil drawing of an RGB image (colour dodge of the gray image with its blurred negative):
    the `sketch` style, a different look on the same geometry, used as a transfer-learning target."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    blur = cv2.GaussianBlur(255 - gray, (0, 0), sigmaX=max(1.0, image.shape[0] / 120))
    sketch = np.clip(gray * 255 / np.maximum(255 - blur, 1), 0, 255)
    sketch = 0.75 * (255 - (255 - sketch) * 1.6) + 0.25 * gray  # darker strokes, a little tone
    paper = np.array([1.0, 0.93, 0.8], np.float32)
    return np.clip(sketch[..., None] * paper, 0, 255).astype(np.uint8)


STYLES = {"color": lambda im: im, "sketch": pencil}


def render(cfg: CartoonSource, index: int) -> Sample:
    """Image `index` of the dataset: a function of (cfg, index) only."""
    rng = np.random.default_rng([cfg.seed, index])
    head = draw_head(rng)
    size = cfg.size
    face_w = rng.uniform(*cfg.face_scale) * size
    a = (head.outline[:, 0].max() - head.outline[:, 0].min()) / 2
    new = max(8, round(CANVAS * face_w / (2 * a)))
    s = new / CANVAS
    rgba = np.dstack([head.rgb, head.alpha])
    small = cv2.resize(rgba, (new, new), interpolation=cv2.INTER_AREA)

    theta = rng.uniform(-cfg.max_rotation, cfg.max_rotation)
    centre = head.outline.mean(axis=0) * s
    rot = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), theta, 1.0)
    outline = head.outline * s @ rot[:, :2].T + rot[:, 2]
    half = (outline.max(axis=0) - outline.min(axis=0)) / 2
    lo, hi = half + 2, size - half - 2
    target = rng.uniform(lo, np.maximum(lo, hi))
    rot[:, 2] += target - centre
    warped = cv2.warpAffine(
        small, rot, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )

    bg = draw_background(rng, size)
    alpha = warped[..., 3:4].astype(np.float32) / 255.0
    image = STYLES[cfg.style](np.clip(warped[..., :3] * alpha + bg * (1 - alpha) + 0.5, 0, 255).astype(np.uint8))
    mask = np.where(warped[..., 3] >= 128, 255, 0).astype(np.uint8)

    to_img = lambda pts: pts * s @ rot[:, :2].T + rot[:, 2]  # noqa: E731
    box_pts = to_img(head.outline)
    box = [*box_pts.min(axis=0).tolist(), *box_pts.max(axis=0).tolist()]
    landmarks = to_img(head.landmarks).round(3).tolist()
    return Sample(image, mask, [round(v, 3) for v in box], landmarks, head.labels)


def _write_one(cfg: CartoonSource, root: Path, index: int) -> tuple[str, dict, dict[str, str]]:
    sample = render(cfg, index)
    name = f"{index:06d}.png"
    write_image(root / "images" / name, sample.image)
    write_image(root / "masks" / name, sample.mask)
    return name, {"box": sample.box, "landmarks": sample.landmarks}, sample.labels


def generate(cfg: CartoonSource, dst: Path, workers: int | Pool = 1) -> int:
    """Write the whole dataset to `dst` (replaced atomically); returns the image count."""
    with atomic_dir(dst, "generate run") as tmp:
        rows = map_items(functools.partial(_write_one, cfg, tmp), range(cfg.n), workers, desc="generate cartoon")
        annotations = {
            "format": "facegan-annotations/1",
            "landmarks": LANDMARK_NAMES,
            "images": {name: [ann] for name, ann, _ in rows},
        }
        write_text(tmp / "annotations.json", json.dumps(annotations, indent=1))
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file", *LABEL_VALUES])
        w.writerows([name, *(labels[k] for k in LABEL_VALUES)] for name, _, labels in rows)
        write_text(tmp / "labels.csv", buf.getvalue())
    log.info("generated %d cartoon faces (%dx%d) in %s", cfg.n, cfg.size, cfg.size, dst)
    return cfg.n
