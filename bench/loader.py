"""Data loading vs training consumption.

    python bench/loader.py [--images 2000] [--res 64] [--threads 1 2] [--device cpu|cuda] [--rounds 5] [--steps 10]

1. Decoding the packed ZIP into memory (once per training run): images/s with 1..N threads; decoding it into
   the memory-mapped file of the streaming path (once per dataset).
2. Serving batches (index + uint8->float + copy to the device), images/s, from memory and streamed.
3. Training steps (DCGAN 64, batch 64) on the in-memory set as the loop runs them (`Stepper.advance`, a step's losses
   read during the next), set up by `facegan.train.stepper.runtime` as `run_train` sets it up: images/s consumed.
Every rate is the median of --rounds interleaved rounds (decoding, serving from each path and training alternate
within a round). Prints loader rate / consumption rate per path: above 1 the loader is not the bottleneck.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from facegan.config import TrainConfig
from facegan.data.packed import ZIP_NAME, decoded_memmap, load_packed
from facegan.train.gan import GANTrainer
from facegan.train.images import load_training_data
from facegan.train.stepper import runtime, step_generator


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


def settings(device: torch.device) -> str:
    """The settings in effect, read from torch itself (after `runtime` set them up as training does)."""
    return (f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, deterministic "
            f"{torch.are_deterministic_algorithms_enabled()}, cudnn.benchmark {torch.backends.cudnn.benchmark}, "
            f"TF32 {torch.backends.cuda.matmul.allow_tf32}, device {device}")  # fmt: skip


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def serve(trainer: GANTrainer, batches: int) -> None:
    for i in range(batches):
        trainer.real(i, step_generator(0, i))


def consume(trainer: GANTrainer, steps: int) -> None:
    for _ in range(steps):
        trainer.advance()
    trainer.settle()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="decoding threads to compare")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="training steps per round")
    ap.add_argument("--batches", type=int, default=200, help="batches served per path and round")
    args = ap.parse_args()
    top = max(args.threads)
    cfg = TrainConfig(model="dcgan", g_channels=64, d_channels=64, batch_size=64, device=args.device, threads=top)
    dist, device = runtime(cfg)  # threads, determinism and allocator as run_train sets them
    with tempfile.TemporaryDirectory() as tmp:
        packed = make_zip(Path(tmp), args.images, args.res)
        data = {
            "in memory": load_training_data(packed, top, pin=device.type == "cuda")[0],
            "streamed (memory-mapped)": load_training_data(
                packed, top, memory_budget_gb=1e-9, cache=Path(tmp) / "cache"
            )[0],
        }
        trainers = {name: GANTrainer(cfg, images, None, [], device, dist) for name, images in data.items()}
        training = trainers["in memory"]
        for t in trainers.values():  # warm-up: first batches, first steps
            serve(t, 3)
        consume(training, 2)
        work: dict[str, tuple[Callable[[], object], int]] = {  # side -> (timed call, images it handles)
            **{
                f"decode, {n} thread(s)": ((lambda n=n: load_packed(packed / ZIP_NAME, threads=n)), args.images)
                for n in args.threads
            },
            f"decode into the streaming file, {top} thread(s)": (
                lambda: decoded_memmap(packed / ZIP_NAME, Path(tmp) / f"cache-{time.perf_counter_ns()}", top),
                args.images,
            ),
            **{
                f"serve, {name}": ((lambda t=t: serve(t, args.batches)), args.batches * cfg.batch_size)
                for name, t in trainers.items()
            },
            "train": ((lambda: consume(training, args.steps)), args.steps * cfg.batch_size),
        }
        rates: dict[str, list[float]] = {k: [] for k in work}
        for _ in range(args.rounds):
            for name, (fn, n) in work.items():
                rates[name].append(n / timed(fn, device))
    rate = {k: statistics.median(v) for k, v in rates.items()}
    print(settings(device))
    print(f"median of {args.rounds} interleaved rounds; {args.images} images of {args.res} px")
    for name in work:
        if name != "train" and not name.startswith("serve"):
            print(f"{name:48s}: {rate[name]:9.1f} img/s")
    print(f"{'training consumes (DCGAN 64, batch 64, advance)':48s}: {rate['train']:9.1f} img/s")
    for name in trainers:
        r = rate[f"serve, {name}"]
        print(f"{'serve batches, ' + name:48s}: {r:9.1f} img/s   loader / consumption {r / rate['train']:.1f}")
    print("(the streamed rate here is from the page cache; from a cold disk it is bounded by its read speed)")


if __name__ == "__main__":
    main()
