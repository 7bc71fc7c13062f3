"""Stage `quality`: reject blurred faces (variance of the Laplacian, inside the matte stage's head mask), faces
that were too small in the original photo, and near-duplicates (256-bit DCT perceptual hash of the photo within a
Hamming distance), with reasons.

Sharpness and hashes are computed per image in parallel; duplicates are then resolved in one pass (of a group of
copies the biggest face is kept, the first in manifest order among equals), so the result does not depend on the
number of workers.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import cv2
import numpy as np

from facegan.config import QualityConfig
from facegan.io import atomic_dir, read_image
from facegan.manifest import Manifest, Row, read_manifest
from facegan.parallel import Pool, map_items
from facegan.preprocess.common import MASKS, accepted, finish, guarded
from facegan.preprocess.hamming import HammingIndex

STAGE = "quality"
SHARPNESS_SIDE = 128  # sharpness is measured at one scale, so the threshold means the same for every size


MIN_MASKED = 256  # fewer head pixels than this (of 128 x 128) inside the eroded mask: the whole image is measured


def sharpness(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of the gray image at SHARPNESS_SIDE, over the pixels inside `mask` (the matte
    stage's head mask, eroded by 2 px so that the cut-out's edge against the fill is left out: that edge is sharp
    whatever the face, and made every matted face pass), or over the whole image without one."""
    side = (SHARPNESS_SIDE, SHARPNESS_SIDE)
    gray = cv2.cvtColor(cv2.resize(image, side, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(gray, cv2.CV_64F)
    if mask is not None:
        inside = cv2.resize((mask >= 128).astype(np.uint8), side, interpolation=cv2.INTER_NEAREST)
        inside = cv2.erode(inside, np.ones((5, 5), np.uint8)).astype(bool)
        if inside.sum() >= MIN_MASKED:
            return float(lap[inside].var())
    return float(lap.var())


HASH_SIDE = 16  # 16x16 = 256-bit hash: on 2000 generated photos no two distinct ones came closer than 66
# bits, while resized + JPEG-recompressed copies stayed within 4 (the 64-bit hash confused gradients)


def phash(image: np.ndarray) -> np.ndarray:
    """DCT perceptual hash: the 16x16 lowest frequencies of the 64x64 gray image above their median."""
    gray = cv2.cvtColor(cv2.resize(image, (4 * HASH_SIDE,) * 2, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    low = cv2.dct(gray.astype(np.float32))[:HASH_SIDE, :HASH_SIDE].flatten()
    return low > np.median(low[1:])


def _hex(bits: np.ndarray) -> str:
    return np.packbits(bits).tobytes().hex()


def _bits(text: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8)).astype(bool)


def _measure(row: Row, *, cfg: QualityConfig, raw_images: Path, src: Path, dst: Path) -> Row:
    image = read_image(src / row.out_file)
    face_side = _face_side(row) if row.box else float("inf")
    # the hash is of the whole original photo: aligned, matted faces all look alike at 8x8 frequencies
    mask_file = src / MASKS / row.out_file
    sharp = round(sharpness(image, read_image(mask_file)[..., 0] if mask_file.is_file() else None), 2)
    extra = {**row.extra, "sharpness": sharp, "phash": _hex(phash(read_image(raw_images / row.source)))}
    row = row.model_copy(update={"extra": extra})
    if face_side < cfg.min_face:
        return row.reject(STAGE, f"face too small in the photo ({face_side:.0f} px < {cfg.min_face} px)")
    if sharp < cfg.min_sharpness:
        return row.reject(STAGE, f"blurred (sharpness {sharp:.1f} < {cfg.min_sharpness})")
    (dst / row.out_file).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / row.out_file, dst / row.out_file)
    return row.model_copy(update={"stage": STAGE, "backends": {**row.backends, STAGE: "laplacian+phash"}})


def _face_side(row: Row) -> float:
    return min(row.box[2] - row.box[0], row.box[3] - row.box[1]) if row.box else 0.0


def dedupe(rows: Manifest, max_bits: int) -> Manifest:
    """Reject faces whose photo is a near-copy of a kept face's photo (faces of one photo are not). Of a group of
    copies the one whose face is biggest in its photo is kept (a 480p copy over a 240p one that upscale blew up),
    the first in manifest order among equals; the manifest keeps its order.

    Kept hashes go into a multi-index Hamming index, so each face is compared only with the few kept
    photos that could be within `max_bits` (about linear in the number of faces, not quadratic). Of those,
    the closest is named, the earliest kept on a tie: the same decisions as comparing with every kept face."""
    if max_bits < 0:
        return list(rows)
    index: HammingIndex | None = None
    kept: list[str] = []  # source photo of each id in the index
    out = list(rows)
    todo = [i for i, r in enumerate(rows) if r.status == "ok" and r.stage == STAGE]
    for i in sorted(todo, key=lambda i: (-_face_side(rows[i]), i)):
        r = rows[i]
        h = _bits(str(r.extra["phash"]))
        index = index or HammingIndex(h.size, max_bits)
        ids, dist = index.within(h)
        other = np.array([kept[k] != r.source for k in ids.tolist()], bool)
        if other.any():
            ids, dist = ids[other], dist[other]
            j = int(np.argmin(dist))  # the first minimum: ids ascend in the order faces were kept
            out[i] = r.reject(STAGE, f"near-duplicate (of {kept[ids[j]]}, {int(dist[j])} of {h.size} bits apart)")
            continue
        index.add(h)
        kept.append(r.source)
    return out


def run_quality(cfg: QualityConfig, raw: Path, src: Path, dst: Path, workers: int | Pool = 1) -> Manifest:
    rows = read_manifest(src)
    todo = [r for r in rows if r.status == "ok"]
    with atomic_dir(dst, f"{STAGE} run") as tmp:
        fn = functools.partial(guarded, STAGE, _measure, cfg=cfg, raw_images=raw / "images", src=src, dst=tmp)
        done = iter(map_items(fn, todo, workers, desc=STAGE))
        measured = [next(done) if r.status == "ok" else r for r in rows]
        out = dedupe(measured, cfg.max_hash_distance)
        for before, after in zip(measured, out, strict=True):
            if before.status != after.status:  # a near-duplicate: its copied file goes
                (tmp / before.out_file).unlink()
        finish(STAGE, tmp, out)
    accepted(STAGE, out)
    return out
