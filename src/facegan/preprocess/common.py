"""What every per-image preprocessing stage shares: manifest in, manifest out, atomic output folder."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

from facegan.io import ImageError, atomic_dir, write_text
from facegan.manifest import Manifest, Row, read_manifest, summary, write_manifest
from facegan.parallel import map_items

log = logging.getLogger(__name__)

# fn(row, src_folder, dst_folder) -> the row after this stage (ok with a new file, or rejected)
RowFn = Callable[[Row, Path, Path], Row]


class StageError(RuntimeError):
    """An unexpected failure inside a stage; the message names the stage and the image."""


def guarded(stage: str, fn: Callable, row: Row, **kwargs):
    """Run fn on one image: unusable images become rejected rows, bugs name the stage and image."""
    try:
        return fn(row, **kwargs)
    except ImageError as e:
        return row.reject(stage, str(e))
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise StageError(f"stage {stage!r} failed on {row.source!r}: {type(e).__name__}: {e}") from e


def run_per_image(stage: str, fn: RowFn, src: Path, dst: Path, workers: int) -> Manifest:
    """Apply `fn` to each accepted row of src's manifest; rejected rows are carried along unchanged."""
    rows = read_manifest(src)
    todo = [r for r in rows if r.status == "ok"]
    with atomic_dir(dst) as tmp:
        done = iter(map_items(functools.partial(guarded, stage, fn, src=src, dst=tmp), todo, workers, desc=stage))
        out = [next(done) if r.status == "ok" else r for r in rows]
        finish(stage, tmp, out)
    return out


def finish(stage: str, folder: Path, rows: Manifest) -> None:
    """Write the manifest and a summary.json of counts per status/reason, and log the counts."""
    write_manifest(folder, rows)
    counts = summary(rows)
    write_text(folder / "summary.json", json.dumps(counts, indent=1))
    log.info("%s: %d ok, %d rejected%s", stage, counts["ok"], counts["rejected"],
             "".join(f"\n  {k}: {v}" for k, v in counts.items() if k.startswith("rejected:")))
    if counts["ok"] == 0:
        raise StageError(f"stage {stage!r} accepted no image out of {len(rows)}; see {folder}/manifest.jsonl")
