"""Feature-extraction speed for FID: facegan's Inception vs pytorch-fid's, like for like.

    python bench/fid.py [--n 200] [--batch 50] [--rounds 5] [--threads 2] [--python .venv-ref/bin/python]

Both sides run in the SAME interpreter and torch build (the reference environment: pytorch-fid needs
torchvision, i.e. torch 2.14.1; facegan's extractor is imported there from src/), with the same torch thread
count, on the same PNG files, each in a fresh process per round, rounds interleaved (facegan, pytorch-fid,
facegan, ...). Two decoding budgets are compared:
  serial   - one decoder on each side, as each runs with its smallest setting: pytorch-fid num_workers=0 decodes in
             the main thread between batches; facegan threads=1 decodes in one background thread, which can
             decode the next batch while the main thread computes features (what `threads: 1` runs in facegan:
             the same number of decoders, not the same schedule);
  parallel - W decoders on both sides (facegan W threads, pytorch-fid W DataLoader worker processes), each
             side's pool start-up inside its timed region.
Model loading and one warm-up batch are outside the timed region. Prints the settings, the median images/s
of each side over the rounds and the ratio facegan / pytorch-fid (goal >= 1.5 on CPU). Uses the real
Inception file from the torch hub cache when present, else a deterministic stand-in (same architecture and cost).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import os, sys, time, pathlib, torch
side, folder, batch, threads, decoders, standin = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
torch.set_num_threads(threads)
files = sorted(pathlib.Path(folder).glob('*.png'))
if side == 'facegan':
    from facegan.config import EvaluateConfig
    from facegan.evaluate import inception
    from facegan.evaluate.extractors import make_extractor
    if standin:  # the stand-in file's hash is not the published one
        weights = inception.hub_checkpoint_dir() / inception.WEIGHTS_NAME
        inception.WEIGHTS_SHA256_PREFIX = inception.sha256_file(weights)[:8]
    ex = make_extractor('inception', EvaluateConfig(batch_size=batch))
    run = lambda fs: ex.folder(fs, threads=decoders, digests=[])  # as `facegan fid` (it looks for copies)
else:
    from pytorch_fid.fid_score import get_activations
    from pytorch_fid.inception import InceptionV3
    model = InceptionV3([3]).eval()
    run = lambda fs: get_activations([str(f) for f in fs], model, batch, 2048, 'cpu', decoders if decoders > 1 else 0)
run(files[:batch])  # warm-up: model load, first batch
t = time.perf_counter()
feats = run(files)
print(len(files) / (time.perf_counter() - t), torch.__version__, torch.get_num_threads(), feats.shape[0])
"""


def _round(python: Path, side: str, imgs: Path, args, decoders: int, standin: bool, env: dict) -> tuple[float, str]:
    r = subprocess.run(
        [
            str(python),
            "-c",
            WORKER,
            side,
            str(imgs),
            str(args.batch),
            str(args.threads),
            str(decoders),
            str(int(standin)),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if r.returncode:
        sys.exit(f"{side} failed:\n{r.stderr[-3000:]}")
    speed, version, threads, n = r.stdout.strip().splitlines()[-1].split()
    assert int(threads) == args.threads and int(n) == args.n
    return float(speed), version


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--size", type=int, default=64, help="side of the test images")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads, both sides")
    ap.add_argument("--decoders", type=int, default=2, help="decoders of the parallel budget, both sides")
    ap.add_argument(
        "--python",
        type=Path,
        default=ROOT / ".venv-ref" / "bin" / "python",
        help="the interpreter both sides run in (needs torch, torchvision, pytorch-fid)",
    )
    args = ap.parse_args()
    if not args.python.is_file():
        sys.exit(f"no reference environment at {args.python}: `make test` builds it (.venv-ref)")

    from facegan.config import CartoonSource
    from facegan.data.cartoon import render
    from facegan.evaluate import inception
    from facegan.evaluate.standin import write_stand_in_weights
    from facegan.io import write_image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = CartoonSource(n=args.n, size=args.size, seed=1)
        for i in range(args.n):
            write_image(tmp / "imgs" / f"{i:05d}.png", render(cfg, i).image)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": str(args.threads),
        }
        if (inception.hub_checkpoint_dir() / inception.WEIGHTS_NAME).is_file():
            which = "real weights"
        else:
            which, env["TORCH_HOME"] = "stand-in weights", str(tmp / "th")
            os.environ["TORCH_HOME"] = env["TORCH_HOME"]
            write_stand_in_weights(inception.hub_checkpoint_dir() / inception.WEIGHTS_NAME)
        results = {}
        for budget, decoders in (("serial", 1), ("parallel", args.decoders)):
            speeds: dict[str, list[float]] = {"facegan": [], "pytorch-fid": []}
            for _ in range(args.rounds):
                for side in speeds:
                    speed, version = _round(
                        args.python, side, tmp / "imgs", args, decoders, which != "real weights", env
                    )
                    speeds[side].append(speed)
            results[budget] = {k: statistics.median(v) for k, v in speeds.items()}

    print(
        f"{args.n} images {args.size}x{args.size} -> Inception 299, batch {args.batch}, {which}; both sides: "
        f"torch {version} ({args.python}), {args.threads} torch threads, CPU; median of {args.rounds} "
        "interleaved rounds, one process per round"
    )
    for budget, r in results.items():
        how = (
            "1 decoder (pytorch-fid inline, facegan 1 background thread)"
            if budget == "serial"
            else f"{args.decoders} decoders (threads / worker processes)"
        )
        print(
            f"{budget:8s} ({how}): facegan {r['facegan']:7.1f} img/s, pytorch-fid {r['pytorch-fid']:7.1f} img/s, "
            f"ratio {r['facegan'] / r['pytorch-fid']:.2f}   (goal >= 1.5)"
        )


if __name__ == "__main__":
    main()
