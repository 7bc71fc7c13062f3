"""Preprocessing throughput per backend, at 1 and 2 worker processes, on the same images.

    python bench/preprocess.py [--images 16] [--workers 1 2] [--rounds 3] [--photos DIR]

Images: the real photos of ../shared/assets/faces (when present) or scikit-image's astronaut at
several sizes, copied to a temporary raw folder. Each backend runs through its stage function
(`run_detect`, `run_verify`, `run_align`, `run_matte`), exactly as the pipeline calls it.
Prints images/s and the 2-worker speed-up.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from facegan.config import AlignConfig, DetectConfig, MatteConfig, VerifyConfig
from facegan.io import list_images
from facegan.preprocess.align import run_align
from facegan.preprocess.detect import run_detect
from facegan.preprocess.matte import run_matte
from facegan.preprocess.models import forget_loaded
from facegan.preprocess.verify import run_verify

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "faces" / "face_recognition" / "examples"


def make_raw(root: Path, n: int, photos: Path) -> Path:
    raw = root / "raw"
    (raw / "images").mkdir(parents=True)
    files = [p for p in list_images(photos) if p.suffix.lower() in {".jpg", ".jpeg"}] if photos.is_dir() else []
    if files:
        for i in range(n):
            shutil.copy(files[i % len(files)], raw / "images" / f"{i:03d}{files[i % len(files)].suffix}")
        (raw / "refs").mkdir()
        for p in files[:2]:
            shutil.copy(p, raw / "refs" / p.name)
    else:
        from skimage import data

        base = Image.fromarray(data.astronaut())
        for i in range(n):
            base.resize((384 + 64 * (i % 6),) * 2).save(raw / "images" / f"{i:03d}.png")
        (raw / "refs").mkdir()
        base.save(raw / "refs" / "ref.png")
    return raw


def timed(fn) -> float:
    """Seconds of one stage run, its models loaded as in a fresh process (the 1-worker runs are in this one)."""
    forget_loaded()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = make_raw(root, args.images, args.photos)
        n = len(list_images(raw / "images"))
        run_detect(DetectConfig(backend="hog"), raw, root / "detect_ref", 2)  # the input of the later stages
        run_verify(VerifyConfig(), raw, root / "detect_ref", root / "verify_ref", 2)
        run_align(AlignConfig(backend="dlib68"), raw, root / "verify_ref", root / "align_ref", 2)
        cases = {
            "detect hog": lambda w: run_detect(DetectConfig(backend="hog"), raw, root / "o", w),
            "detect cnn (upsample 0)": lambda w: run_detect(
                DetectConfig(backend="cnn", upsample=0), raw, root / "o", w
            ),
            "detect haar": lambda w: run_detect(DetectConfig(backend="haar"), raw, root / "o", w),
            "verify dlib": lambda w: run_verify(
                VerifyConfig(backend="dlib", references=str(raw / "refs"), tolerance=2.0),
                raw,
                root / "detect_ref",
                root / "o",
                w,
            ),
            "align dlib68": lambda w: run_align(AlignConfig(backend="dlib68"), raw, root / "verify_ref", root / "o", w),
            "matte grabcut": lambda w: run_matte(MatteConfig(backend="grabcut"), root / "align_ref", root / "o", w),
        }
        seconds: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for name, fn in cases.items():
                for w in args.workers:
                    seconds.setdefault((name, w), []).append(timed(lambda fn=fn, w=w: fn(w)))
    import cv2
    import dlib
    import torch

    print(
        f"{n} images from {args.photos if args.photos.is_dir() else 'skimage.data.astronaut'}; "
        f"median of {args.rounds} rounds"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; 1 worker (this process): "
        f"OpenCV {cv2.getNumThreads()} threads, torch {torch.get_num_threads()}; pool workers 1 thread each; "
        f"opencv {cv2.__version__}, dlib {dlib.__version__}, torch {torch.__version__}"
    )
    print(f"{'backend':26s}" + "".join(f"{f'{w} worker(s)':>14s}" for w in args.workers) + "   speed-up")
    for name in cases:
        rates = [n / statistics.median(seconds[name, w]) for w in args.workers]
        print(f"{name:26s}" + "".join(f"{r:10.1f} img/s" for r in rates) + f"   {rates[-1] / rates[0]:.2f}x")


if __name__ == "__main__":
    main()
