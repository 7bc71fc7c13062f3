"""Reading a packed dataset: the ZIP of PNGs + dataset.json labels (stylegan2-ada-pytorch's format) that the
`pack` stage writes."""

from __future__ import annotations

import io
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ZIP_NAME = "dataset.zip"


def load_packed(zip_path: Path, limit: int | None = None, threads: int = 1) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """All images of a packed ZIP as an NxHxWx3 uint8 array, labels as NxA int64 (or None), and metadata.

    PNGs are decoded by `threads` threads (Pillow releases the GIL while decoding) straight into one
    preallocated array, so the training loop then indexes memory with no per-image Python work.
    """
    with zipfile.ZipFile(zip_path) as zf:
        meta = json.loads(zf.read("dataset.json"))
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))[:limit]
        blobs = [zf.read(n) for n in names]
    if not blobs:
        raise ValueError(f"{zip_path}: no images")
    first = np.asarray(Image.open(io.BytesIO(blobs[0])).convert("RGB"))
    images = np.empty((len(blobs), *first.shape), np.uint8)

    def decode(i: int) -> None:
        images[i] = np.asarray(Image.open(io.BytesIO(blobs[i])).convert("RGB"))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(decode, range(len(blobs))))
    return images, _labels(meta, names), meta


def load_labels(zip_path: Path) -> np.ndarray | None:
    """The NxA label rows of a packed ZIP (or None), from dataset.json alone: no image is decoded."""
    with zipfile.ZipFile(zip_path) as zf:
        meta = json.loads(zf.read("dataset.json"))
    return _labels(meta, sorted(k for k, _ in meta["labels"] or []))


def _labels(meta: dict, names: list[str]) -> np.ndarray | None:
    if not meta.get("labels"):
        return None
    by_name = dict((k, v) for k, v in meta["labels"])
    return np.asarray([by_name[n] for n in names], dtype=np.int64)
