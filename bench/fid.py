"""Feature-extraction speed for FID: facegan vs pytorch-fid on the same images, same run.

    python bench/fid.py [--n 200] [--batch 50] [--ref-python .venv-ref/bin/python]

Uses the real Inception file from the torch hub cache when present, else a deterministic stand-in
(same architecture and cost). pytorch-fid runs in the reference environment with its defaults
(DataLoader workers); both decode the same PNG files. Prints images/s of each, their ratio
(goal >= 1.5 on CPU), and the time of the matrix square root of a 2048-D Frechet distance.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

REF = """
import sys, time, pathlib, torch
from pytorch_fid.fid_score import get_activations
from pytorch_fid.inception import InceptionV3
files = sorted(str(p) for p in pathlib.Path(sys.argv[1]).glob('*.png'))
model = InceptionV3([3]).eval()
workers = min(len(__import__('os').sched_getaffinity(0)), 8)
get_activations(files[:int(sys.argv[2])], model, int(sys.argv[2]), 2048, 'cpu', workers)  # warm-up
t = time.perf_counter()
get_activations(files, model, int(sys.argv[2]), 2048, 'cpu', workers)
print(len(files) / (time.perf_counter() - t))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--size", type=int, default=64, help="side of the test images")
    ap.add_argument("--ref-python", type=Path, default=ROOT / ".venv-ref" / "bin" / "python")
    args = ap.parse_args()

    from scipy import linalg

    from facegan.config import CartoonSource, EvaluateConfig
    from facegan.data.cartoon import render
    from facegan.evaluate import inception
    from facegan.evaluate.extractors import make_extractor
    from facegan.evaluate.standin import write_stand_in_weights
    from facegan.io import list_images, write_image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = CartoonSource(n=args.n, size=args.size, seed=1)
        for i in range(args.n):
            write_image(tmp / "imgs" / f"{i:05d}.png", render(cfg, i).image)
        real = inception.hub_checkpoint_dir() / inception.WEIGHTS_NAME
        if real.is_file():
            home, which = os.environ.get("TORCH_HOME", ""), "real weights"
        else:
            home, which = str(tmp / "th"), "stand-in weights"
            os.environ["TORCH_HOME"] = home
            path = write_stand_in_weights(inception.hub_checkpoint_dir() / inception.WEIGHTS_NAME)
            inception.WEIGHTS_SHA256_PREFIX = inception.sha256_file(path)[:8]

        ex = make_extractor("inception", EvaluateConfig(batch_size=args.batch))
        files = list_images(tmp / "imgs")
        ex.folder(files[: args.batch])  # warm-up
        t = time.perf_counter()
        feats = ex.folder(files)
        ours = len(files) / (time.perf_counter() - t)

        ref = None
        if args.ref_python.is_file():
            env = {**os.environ, "TORCH_HOME": home or os.environ.get("TORCH_HOME", ""), "CUDA_VISIBLE_DEVICES": ""}
            r = subprocess.run([str(args.ref_python), "-c", REF, str(tmp / "imgs"), str(args.batch)],
                               env=env, capture_output=True, text=True)
            ref = float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
            if ref is None:
                print(r.stderr[-2000:], file=sys.stderr)

    a = np.cov(feats, rowvar=False) + np.eye(2048) * 1e-3
    t = time.perf_counter()
    linalg.sqrtm(a @ a)
    sqrtm_s = time.perf_counter() - t

    import torch

    print(f"{args.n} images {args.size}x{args.size} -> Inception 299, batch {args.batch}, {which}, "
          f"CPU {torch.get_num_threads()} threads")
    print(f"facegan     {ours:8.1f} images/s")
    if ref:
        print(f"pytorch-fid {ref:8.1f} images/s")
        print(f"ratio facegan/pytorch-fid {ours / ref:.2f}   (goal >= 1.5)")
    else:
        print(f"pytorch-fid: reference environment missing ({args.ref_python}); `make test` builds it")
    print(f"sqrtm of a 2048x2048 product: {sqrtm_s:.2f} s (once per FID; extraction of {args.n} images took "
          f"{args.n / ours:.1f} s)")


if __name__ == "__main__":
    main()
