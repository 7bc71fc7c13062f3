"""What every per-image preprocessing stage shares: manifest in, manifest out, atomic output folder."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

from facegan.errors import FaceganError, StageError
from facegan.io import ImageError, atomic_dir, write_text
from facegan.manifest import SUMMARY, Manifest, Row, read_manifest, summary, write_manifest
from facegan.parallel import Pool, map_items

log = logging.getLogger(__name__)

# What stages write beside the faces in their output folders. No face's file may take these names: detect's
# `output_name` steers a raw image's crop away from them (a raw subfolder `masks/` must not meet the masks).
MASKS = "masks"  # the matte stage's 0/255 head masks, one per face, carried by upscale for quality
RGBA = "rgba"  # the matte stage's faces with their alpha (matte.rgba)
CONTACT_SHEET = "contact_sheet.png"

# fn(row, src_folder, dst_folder) -> the row after this stage (ok with a new file, or rejected)
RowFn = Callable[[Row, Path, Path], Row]


def guarded(stage: str, fn: Callable, row: Row, **kwargs):
    """Run fn on one image: unusable images become rejected rows, bugs name the stage and image."""
    try:
        return fn(row, **kwargs)
    except ImageError as e:
        return row.reject(stage, str(e))
    except FaceganError:  # e.g. a missing model file: its own message says what to do
        raise
    except Exception as e:
        raise StageError(f"stage {stage!r} failed on {row.source!r}: {type(e).__name__}: {e}") from e


def resolve(path: str, raw: Path) -> Path:
    """A path from params: absolute or existing as given (~ expanded), else relative to the dataset's raw folder;
    made absolute, as Dask workers started in another folder must read it."""
    p = Path(path).expanduser()
    return (p if p.is_absolute() or p.exists() else raw / p).absolute()


def run_per_image(stage: str, fn: RowFn, src: Path, dst: Path, workers: int | Pool) -> Manifest:
    """Apply `fn` to each accepted row of src's manifest; rejected rows are carried along unchanged."""
    rows = read_manifest(src)
    todo = [r for r in rows if r.status == "ok"]
    with atomic_dir(dst, f"{stage} run") as tmp:
        done = iter(map_items(functools.partial(guarded, stage, fn, src=src, dst=tmp), todo, workers, desc=stage))
        out = [next(done) if r.status == "ok" else r for r in rows]
        finish(stage, tmp, out)
    accepted(stage, out)
    return out


def finish(stage: str, folder: Path, rows: Manifest) -> None:
    """Write the manifest and a summary.json of counts per status/reason, and log the counts. A stage that
    accepted nothing still installs its output (every row rejected, with its reason), then fails (`accepted`):
    the next stage must not go on from an earlier run's faces, nor `dataset show` count them."""
    write_manifest(folder, rows)
    counts = summary(rows)
    write_text(folder / SUMMARY, json.dumps(counts, indent=1))
    log.info(
        "%s: %d ok, %d rejected%s",
        stage,
        counts["ok"],
        counts["rejected"],
        "".join(f"\n  {k}: {v}" for k, v in counts.items() if k.startswith("rejected:")),
    )


def accepted(stage: str, rows: Manifest) -> None:
    """StageError when the stage's output `rows` accept no image (after its output, all rejections, is installed)."""
    if not any(r.status == "ok" for r in rows):
        raise StageError(f"stage {stage!r} accepted no image out of {len(rows)}: {first_rejections(rows, stage)}")


def first_rejections(rows: Manifest, stage: str, n: int = 3) -> str:
    """The first n rejections, photo and reason, and how many more: this stage's own (else earlier stages'), so the
    error itself says why, not only the manifest."""
    rejected = [r for r in rows if r.status == "rejected" and r.stage == stage] or [
        r for r in rows if r.status == "rejected"
    ]
    said = "; ".join(f"{r.source}: {r.reason}" for r in rejected[:n])
    return said + (f"; and {len(rejected) - n} more" if len(rejected) > n else "") if rejected else "none to take"


def contact_sheet(
    stage: str, folder: Path, raw_images: Path, n_ok: int = 40, n_rejected: int = 16, thumb: int = 96
) -> Path:
    """folder/contact_sheet.png: accepted outputs (first rows), then inputs rejected at this stage framed in
    red with their reason; rows are spread over the manifest so the sheet samples the whole set."""
    import cv2
    import numpy as np

    from facegan.io import image_grid, read_image, write_image

    rows = read_manifest(folder)
    ok = [r for r in rows if r.status == "ok"]
    rejected = [r for r in rows if r.status == "rejected" and r.stage == stage]

    def spread(items: list, n: int) -> list:
        return [items[i] for i in np.linspace(0, len(items) - 1, min(n, len(items))).astype(int)] if items else []

    def tile(path: Path) -> np.ndarray:
        try:
            im = read_image(path, max_pixels=60_000_000)
        except ImageError:
            return np.full((thumb, thumb, 3), 128, np.uint8)
        s = thumb / max(im.shape[:2])
        im = cv2.resize(
            im, (max(1, round(im.shape[1] * s)), max(1, round(im.shape[0] * s))), interpolation=cv2.INTER_AREA
        )
        out = np.full((thumb, thumb, 3), 255, np.uint8)
        y, x = (thumb - im.shape[0]) // 2, (thumb - im.shape[1]) // 2
        out[y : y + im.shape[0], x : x + im.shape[1]] = im
        return out

    tiles = [tile(folder / r.out_file) for r in spread(ok, n_ok)]
    for r in spread(rejected, n_rejected):
        t = tile(raw_images / r.source)
        cv2.rectangle(t, (0, 0), (thumb - 1, thumb - 1), (220, 30, 30), 3)
        cv2.rectangle(t, (0, thumb - 16), (thumb - 1, thumb - 1), (220, 30, 30), -1)
        cv2.putText(
            t, (r.reason or "")[:16], (3, thumb - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1, cv2.LINE_AA
        )
        tiles.append(t)
    path = folder / CONTACT_SHEET
    if tiles:
        write_image(path, image_grid(np.stack(tiles), ncols=8))
    return path
