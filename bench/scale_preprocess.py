"""How preprocessing scales: per-image stages over processes and Dask workers, per-dataset steps over rows.

    python bench/scale_preprocess.py                      # everything, the defaults below (~45 min on 2 idle cores)
    python bench/scale_preprocess.py --images 96 --rows 10000 70000    # shorter
    python bench/scale_preprocess.py --skip-images        # only the per-dataset steps (or --skip-rows)

1. Per-image stages: `hog` detection + `dlib68` alignment (run_detect + run_align, as the pipeline calls them)
   on --images real photos (../shared/assets/faces copied round-robin, or scikit-image's astronaut at several
   sizes), with the local runner at 1 and 2 processes and the Dask runner (prefect-dask, a LocalCluster started
   for each stage) at 1 and 2 workers. Prints images/s, speed-up over 1, and the fraction of ideal linear scaling.
2. Per-task overhead of the Dask runner: a no-op over --overhead-items items at chunk size 1 and at one chunk;
   (difference) / (tasks - 1) is the cost of one task, and the one-chunk time the fixed cost of a stage
   (cluster start, flow run). docs/scaling.md turns these and the per-image cost into hours for 70k/200k photos.
3. Per-dataset steps at --rows synthetic rows: near-duplicate search (the Hamming index; the all-pairs search it
   replaced at --old-rows for comparison), manifest write + read, pack (16 px images, so the per-row work is
   measured, not PNG coding of big images), contact sheet. Prints CPU seconds and the growth exponent b of t ~ N^b.

Timings are medians of --rounds (3) interleaved rounds; the machine, threads and settings are printed beside them.
The 1-process side runs in the bench process, as `workers: 1` runs in the stage's, with OpenCV's and torch's own
thread counts (printed); pool and Dask workers take one thread each.
"""

from __future__ import annotations

import argparse
import logging
import operator
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facegan.config import AlignConfig, DetectConfig, OrchestrationConfig, PackConfig
from facegan.io import list_images
from facegan.manifest import Row, read_manifest, write_manifest
from facegan.parallel import LocalPool, map_items
from facegan.preprocess.models import forget_loaded
from facegan.runners import make_pool

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "faces" / "face_recognition" / "examples"


def median_times(
    cases: dict[str, Callable[[], object]], rounds: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Seconds per case: the median of `rounds` rounds, cases interleaved within each round; each case loads its
    models as a fresh process does (one run in this process kept them for the next)."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            forget_loaded()
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """b of t = a * N^b, least squares on log-log."""
    if len(sizes) < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-9)), 1)[0])


# ---- 1. per-image stages ----------------------------------------------------------------------------------


def make_raw(root: Path, n: int, photos: Path) -> tuple[Path, str]:
    import shutil

    from PIL import Image

    raw = root / "raw"
    (raw / "images").mkdir(parents=True)
    files = [p for p in list_images(photos) if p.suffix.lower() in {".jpg", ".jpeg"}] if photos.is_dir() else []
    if files:
        for i in range(n):
            shutil.copy(files[i % len(files)], raw / "images" / f"{i:04d}{files[i % len(files)].suffix}")
        return raw, f"{len(files)} photos of {photos}, round-robin"
    from skimage import data

    base = Image.fromarray(data.astronaut())
    for i in range(n):
        base.resize((512 + 128 * (i % 6),) * 2).save(raw / "images" / f"{i:04d}.png")
    return raw, "skimage.data.astronaut at 512-1152 px"


def bench_images(args: argparse.Namespace, root: Path) -> None:
    import cv2
    import torch

    from facegan.preprocess.align import run_align
    from facegan.preprocess.detect import run_detect

    raw, what = make_raw(root, args.images, args.photos)
    detect_cfg, align_cfg = DetectConfig(backend="hog"), AlignConfig(backend="dlib68")

    def stage(pool) -> Callable[[], None]:
        def run() -> None:
            run_detect(detect_cfg, raw, root / "detect", pool)
            run_align(align_cfg, raw, root / "detect", root / "align", pool)

        return run

    dask = {
        w: make_pool(OrchestrationConfig(runner="dask", chunk_size=args.chunk_size, dask={"local_workers": w}), 1)
        for w in (1, 2)
    }
    cases = {
        "local, 1 process": stage(LocalPool(1, args.chunk_size)),
        "local, 2 processes": stage(LocalPool(2, args.chunk_size)),
        "dask, 1 worker": stage(dask[1]),
        "dask, 2 workers": stage(dask[2]),
    }
    warm = time.perf_counter()
    map_items(operator.pos, [1], dask[1], "warm-up")  # Prefect's temporary API server: started once per process
    warm = time.perf_counter() - warm
    map_items(operator.pos, [1, 2], LocalPool(2), "warm-up")  # the fork server: started once per process
    print(f"\n## hog detect + dlib68 align: {args.images} images ({what})")
    print(
        f"chunk_size {args.chunk_size or 'auto'}; Prefect API server start {warm:.1f} s and the local pool's fork "
        f"server start (once each, not in the figures); each Dask figure includes starting its LocalCluster, twice "
        f"(one per stage)"
    )
    print(
        f"threads: 1 local process (this process) OpenCV {cv2.getNumThreads()}, torch {torch.get_num_threads()}; "
        "local pool and Dask workers 1 each"
    )
    seconds = median_times(cases, args.rounds)
    base = {"local": seconds["local, 1 process"], "dask": seconds["dask, 1 worker"]}
    print(f"{'runner':22s}{'seconds':>10s}{'img/s':>10s}{'speed-up':>10s}{'of ideal':>10s}")
    for name, t in seconds.items():
        w = 2 if "2" in name else 1
        speed = base[name.split(",")[0]] / t
        print(f"{name:22s}{t:10.1f}{args.images / t:10.2f}{speed:9.2f}x{speed / w:9.0%}")
    ok = sum(r.status == "ok" for r in read_manifest(root / "align"))
    print(
        f"per-image cost (1 local process, detect + align): {seconds['local, 1 process'] / args.images:.3f} s "
        f"({ok} of {args.images} photos gave an aligned face)"
    )


def bench_overhead(args: argparse.Namespace) -> None:
    n = args.overhead_items
    pools = {
        f"chunk 1 ({n} tasks)": make_pool(
            OrchestrationConfig(runner="dask", chunk_size=1, dask={"local_workers": 2}), 1
        ),
        "one chunk (1 task)": make_pool(OrchestrationConfig(runner="dask", chunk_size=n, dask={"local_workers": 2}), 1),
    }
    seconds = median_times(
        {k: (lambda p=p: map_items(operator.pos, list(range(n)), p, "noop")) for k, p in pools.items()}, args.rounds
    )
    t_many, t_one = seconds[f"chunk 1 ({n} tasks)"], seconds["one chunk (1 task)"]
    print(f"\n## Dask runner overhead (2 workers, LocalCluster, a no-op over {n} items)")
    print(f"fixed per stage (cluster start + flow run + 1 task): {t_one:.2f} s")
    print(
        f"per task, 2 workers busy: {(t_many - t_one) / (n - 1) * 1000:.0f} ms of wall time "
        f"(~{(t_many - t_one) / (n - 1) * 2000:.0f} ms of one worker's time)"
    )


# ---- 3. per-dataset steps -----------------------------------------------------------------------------------


def synthetic_rows(n: int, seed: int = 0, dup_fraction: float = 0.05) -> list[Row]:
    """Rows as the quality stage leaves them: random 256-bit photo hashes, a few near-copies (2-20 bits off)."""
    from facegan.preprocess.quality import _hex

    rng = np.random.default_rng(seed)
    bits = rng.random((n, 256)) < 0.5
    dups = np.flatnonzero(rng.random(n) < dup_fraction)
    dups = dups[dups > 0]
    for i in dups:
        j = int(rng.integers(0, i))
        bits[i] = bits[j]
        bits[i, rng.choice(256, int(rng.integers(2, 21)), replace=False)] ^= True
    box = [10.0, 12.0, 110.0, 120.0]
    marks = [[40.0, 50.0], [80.0, 50.0], [60.0, 70.0], [45.0, 95.0], [75.0, 95.0]]
    t = [[1.0, 0.0, -10.0], [0.0, 1.0, -12.0]]
    return [
        Row(
            source=f"{i:06d}.jpg",
            file=f"{i:06d}_jpg.png",
            stage="quality",
            box=box,
            landmarks=marks,
            transform=t,
            backends={"detect": "hog", "align": "dlib68"},
            extra={"phash": _hex(bits[i]), "sharpness": 123.4, "faces_found": 1},
        )
        for i in range(n)
    ]


def bench_rows(args: argparse.Namespace, root: Path) -> None:
    import cv2

    from facegan.data.pack import run_pack
    from facegan.preprocess.common import contact_sheet
    from facegan.preprocess.quality import dedupe

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_quality import _dedupe_all_pairs  # the search dedupe replaced, kept in the tests as its reference

    print(
        f"\n## Per-dataset steps over synthetic rows (5% near-copies): CPU seconds of this process (steadier than "
        f"wall time on shared cores), medians of {args.rounds} round(s)"
    )
    results: dict[str, list[float]] = {}
    tile = np.full((16, 16, 3), 200, np.uint8)
    for n in args.rows:
        rows = synthetic_rows(n)
        folder = root / f"rows{n}"
        (folder / "images").mkdir(parents=True)
        for r in rows:  # 16 px images: pack then measures its per-row work, not PNG coding of big images
            cv2.imwrite(str(folder / "images" / r.file), tile)
        write_manifest(folder / "images", rows)
        cases = {
            "dedupe (Hamming index)": lambda rows=rows: dedupe(rows, 16),
            "manifest write + read": lambda rows=rows, f=folder: (write_manifest(f, rows), read_manifest(f)),
            "pack (16 px images)": lambda f=folder: run_pack(
                PackConfig(resolution=16, labels=None), f, f / "images", f / "packed"
            ),
            "contact sheet": lambda f=folder: contact_sheet("quality", f / "images", f / "images"),
        }
        for name, t in median_times(cases, args.rounds, time.process_time).items():
            results.setdefault(name, []).append(t)
        print(f"  {n} rows done", flush=True)
    old = []
    for n in args.old_rows:
        rows = synthetic_rows(n)
        old.append(
            median_times({"old": lambda rows=rows: _dedupe_all_pairs(rows, 16)}, args.rounds, time.process_time)["old"]
        )
    print(f"{'step':26s}" + "".join(f"{f'{n} rows':>12s}" for n in args.rows) + f"{'exponent':>10s}")
    for name, ts in results.items():
        print(f"{name:26s}" + "".join(f"{t:11.2f}s" for t in ts) + f"{exponent(args.rows, ts):10.2f}")
    if old:
        print(
            f"{'dedupe, all pairs (old)':26s}"
            + "".join(f"{f'{n}: {t:.2f}s':>14s}" for n, t in zip(args.old_rows, old, strict=True))
            + f"   exponent {exponent(args.old_rows, old):.2f}; at 200000 rows, as N^2: "
            f"{old[-1] * (200_000 / args.old_rows[-1]) ** 2 / 3600:.1f} h"
        )
    same = dedupe(synthetic_rows(args.old_rows[0] if args.old_rows else 2000), 16)
    ref = _dedupe_all_pairs(synthetic_rows(args.old_rows[0] if args.old_rows else 2000), 16)
    print(
        "same decisions as the all-pairs search:",
        [(r.status, r.reason) for r in same] == [(r.status, r.reason) for r in ref],
        f"({sum(r.status == 'rejected' for r in same)} near-copies rejected)",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--chunk-size", type=int, default=0, help="orchestration.chunk_size (0 = auto)")
    ap.add_argument("--overhead-items", type=int, default=200)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 70_000, 200_000])
    ap.add_argument("--old-rows", type=int, nargs="*", default=[2000, 4000, 8000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-images", action="store_true")
    ap.add_argument("--skip-rows", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible "
        f"(affinity {len(os.sched_getaffinity(0))}), load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_images:
            bench_images(args, Path(tmp) / "img")
            bench_overhead(args)
        if not args.skip_rows:
            bench_rows(args, Path(tmp) / "rows")
    print(
        f"\nfinished; load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"(this bench's own workers count in it; the figure at the start says what else was running)"
    )


if __name__ == "__main__":
    main()
