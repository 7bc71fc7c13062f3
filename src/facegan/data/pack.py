"""Stage `pack`: one ZIP of square PNGs + dataset.json labels, the stylegan2-ada-pytorch format.

    00000/img00000000.png ...          images at the training resolution
    dataset.json                       {"labels": [["00000/img00000000.png", [3, 1, 0, ...]], ...],
                                        "label_names": [...], "label_values": {name: [values...]}}

Labels are one integer per attribute (index into label_values[name]). The ZIP is byte-for-byte
reproducible (fixed timestamps and order), so DVC sees the same hash for the same inputs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from facegan.config import PackConfig
from facegan.data.packed import ZIP_NAME
from facegan.errors import FaceganError, StageInputMissing
from facegan.io import atomic_dir, read_image
from facegan.manifest import Manifest, read_manifest
from facegan.preprocess import geometry
from facegan.preprocess.common import accepted, finish

log = logging.getLogger(__name__)

STAGE = "pack"
_EPOCH = (1980, 1, 1, 0, 0, 0)


class LabelsError(FaceganError, ValueError):
    """A label CSV that cannot be used as a whole (not UTF-8, no header, no rows, one image with two labels)."""


def read_labels(path: Path) -> tuple[dict[str, dict[str, str]], list[str], list[str]]:
    """Label CSV (first column: file relative to images/) -> (rows by file, attribute names, problems).
    A missing file is StageInputMissing; one that cannot be used as a whole, LabelsError."""
    problems: list[str] = []
    if not path.is_file():
        raise StageInputMissing(f"label file {path} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's UTF-8 CSV) is not part of the header
    except UnicodeDecodeError as e:
        raise LabelsError(
            f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header or len(header) < 2:
        if header and (sep := next((c for c in ";\t" if c in header[0]), None)):  # a spreadsheet's export
            raise LabelsError(f"{path}: its columns are separated by {sep!r}; separate them by commas (CSV)")
        raise LabelsError(f"{path}: needs a header row 'file,<attribute>,...'")
    names = [h.strip() for h in header[1:]]
    _check_names(path, names)
    rows: dict[str, dict[str, str]] = {}
    for i, rec in enumerate(reader, start=2):
        if len(rec) != len(header):
            problems.append(f"line {i}: {len(rec)} columns, expected {len(header)}")
            continue
        if any(not v.strip() for v in rec):
            problems.append(f"line {i}: empty value")
            continue
        file, labels = rec[0].strip(), {n: v.strip() for n, v in zip(names, rec[1:], strict=True)}
        if rows.get(file, labels) != labels:
            raise LabelsError(f"{path}: line {i} labels {file!r} again, with other values: one row per image")
        rows[file] = labels
    if not rows:
        raise LabelsError(f"{path}: no usable label row under the header" + (f" ({problems[0]})" if problems else ""))
    return rows, names, problems


NAME_BYTES = 200  # an attribute's name, in samples_by_<name>.png and its temporary name: under the 255-byte limit


def _check_names(path: Path, names: list[str]) -> None:
    """LabelsError for a header column that cannot name an attribute: each names a figure (samples_by_<name>.png,
    one file for names that differ in case on macOS and Windows) and a metric (attr_acc.<name>, where MLflow's
    characters become _)."""
    from facegan.track import metric_key

    seen: dict[str, int] = {}
    for column, name in enumerate(names, start=2):
        where = f"{path}: column {column} of the header"
        if not name:
            raise LabelsError(f"{where} has no name: name it, or remove the column")
        if name in (".", "..") or "/" in name or "\\" in name:
            raise LabelsError(f"{where} is named {name!r}: give it a name without / or \\ (it names a file)")
        if len(name.encode()) > NAME_BYTES:
            raise LabelsError(
                f"{where} has a name of {len(name.encode())} bytes: at most {NAME_BYTES} (it names a file)"
            )
        key = metric_key(name).casefold()
        if key in seen:
            first = seen[key]
            raise LabelsError(
                f"{where}, {name!r}, names the same figure and metric as column {first} ({names[first - 2]!r})"
            )
        seen[key] = column


def _natural(v: str) -> tuple:
    """Numbers in numeric order, then strings alphabetically."""
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    if image.shape[:2] == (side, side):
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.LANCZOS))


def run_pack(cfg: PackConfig, raw: Path, src: Path, dst: Path) -> Manifest:
    """Pack the accepted images of `src` into dst/dataset.zip (+ manifest: packed name per row)."""
    rows = read_manifest(src)
    labels: dict[str, dict[str, str]] = {}
    names: list[str] = []
    if cfg.labels and not (raw / cfg.labels).is_file() and "labels" not in cfg.model_fields_set:
        log.info("no %s in %s (pack.labels left at its default): packing without labels", cfg.labels, raw)
    elif cfg.labels:
        if not (raw / cfg.labels).is_file():  # never packed unlabelled: a conditional model would train without labels
            raise StageInputMissing(
                f"label file {raw / cfg.labels} (pack.labels) not found: restore it, or set pack.labels: null "
                "for a set without labels"
            )
        labels, names, problems = read_labels(raw / cfg.labels)
        for p in problems:
            log.warning("%s: %s (row skipped)", raw / cfg.labels, p)
    values = {n: sorted({lab[n] for lab in labels.values()}, key=_natural) for n in names}

    out: Manifest = []
    entries: list[list] = []
    with atomic_dir(dst, f"{STAGE} run") as tmp, zipfile.ZipFile(tmp / ZIP_NAME, "w", zipfile.ZIP_STORED) as zf:
        for row in rows:
            if row.status != "ok":
                out.append(row)
                continue
            if names and row.source not in labels:
                out.append(row.reject(STAGE, "no label row"))
                continue
            idx = len(entries)
            arcname = f"{idx // 1000:05d}/img{idx:08d}.png"
            image = read_image(src / row.out_file)
            zf.writestr(zipfile.ZipInfo(arcname, _EPOCH), _png(_resize(image, cfg.resolution)))
            entries.append(
                [arcname, [values[n].index(labels[row.source][n]) for n in names]] if names else [arcname, None]
            )
            size = (image.shape[1], image.shape[0])
            transform = geometry.compose(geometry.resize_map(size, (cfg.resolution,) * 2), row.affine).tolist()
            out.append(row.model_copy(update={"file": arcname, "stage": STAGE, "transform": transform}))
        meta = {
            "labels": entries if names else None,
            "label_names": names,
            "label_values": values,
            "resolution": cfg.resolution,
        }
        zf.writestr(zipfile.ZipInfo("dataset.json", _EPOCH), json.dumps(meta, indent=0))
        zf.close()
        finish(STAGE, tmp, out)
    accepted(STAGE, out)
    log.info(
        "packed %d images at %dx%d with %d label attribute(s) into %s",
        len(entries),
        cfg.resolution,
        cfg.resolution,
        len(names),
        dst / ZIP_NAME,
    )
    return out
