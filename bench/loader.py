"""Data loading vs training consumption.

    python bench/loader.py [--images 2000] [--res 64] [--threads 1 2 4] [--device cpu|cuda]

1. Decoding the packed ZIP into memory (once per training run): images/s with 1..N threads; decoding it into
   the memory-mapped file of the streaming path (once per dataset).
2. Serving batches (index + uint8->float + copy to the device), images/s, from memory and streamed.
3. One training step (DCGAN 64, batch 64) on the same device, images/s consumed.
Prints loader rate / consumption rate per path: above 1 the loader is not the bottleneck.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facegan.config import TrainConfig
from facegan.data.packed import ZIP_NAME, decoded_memmap, load_packed
from facegan.train.gan import GANTrainer as Trainer
from facegan.train.images import load_training_data
from facegan.train.stepper import step_generator


def make_zip(dst: Path, n: int, res: int) -> Path:
    """A packed ZIP of n noisy gradient images (PNG compresses them like real faces, not like noise)."""
    import io
    import json
    import zipfile

    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:res, 0:res]
    with zipfile.ZipFile(dst / ZIP_NAME, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            base = (np.stack([xx, yy, (xx + yy) // 2], -1) * (255 / res)).astype(np.int16)
            im = np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="PNG")
            zf.writestr(f"{i // 1000:05d}/img{i:08d}.png", buf.getvalue())
        zf.writestr("dataset.json", json.dumps({"labels": None}))
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        packed = make_zip(Path(tmp), args.images, args.res)
        for threads in args.threads:
            t0 = time.perf_counter()
            load_packed(packed / ZIP_NAME, threads=threads)
            sec = time.perf_counter() - t0
            print(f"decode ZIP into memory, {threads} thread(s): {args.images / sec:9.1f} img/s")
        t0 = time.perf_counter()
        decoded_memmap(packed / ZIP_NAME, Path(tmp) / "cache", max(args.threads))
        print(
            f"decode ZIP into the streaming file (once per set), {max(args.threads)} thread(s): "
            f"{args.images / (time.perf_counter() - t0):9.1f} img/s"
        )
        paths = {
            "in memory": load_training_data(packed, max(args.threads), pin=device.type == "cuda")[0],
            "streamed (memory-mapped)": load_training_data(
                packed, max(args.threads), memory_budget_gb=1e-9, cache=Path(tmp) / "cache"
            )[0],
        }
        cfg = TrainConfig(model="dcgan", g_channels=64, d_channels=64, batch_size=64, device=args.device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        serve = {}
        for name, images in paths.items():
            trainer = Trainer(cfg, images, None, [], device)
            for i in range(3):
                trainer.real(i, step_generator(0, i))
            sync()
            t0 = time.perf_counter()
            for i in range(200):
                trainer.real(i, step_generator(0, i))
            sync()
            serve[name] = 200 * cfg.batch_size / (time.perf_counter() - t0)
        trainer.step()
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.step()
        sync()
        consume = args.steps * cfg.batch_size / (time.perf_counter() - t0)
    print(f"training step consumes:   {consume:9.1f} img/s (DCGAN 64, batch 64, {device})")
    for name, rate in serve.items():
        print(f"serve batches, {name:24s}: {rate:9.1f} img/s   loader / consumption {rate / consume:.1f}")
    print("(the streamed rate here is from the page cache; from a cold disk it is bounded by its read speed)")


if __name__ == "__main__":
    main()
