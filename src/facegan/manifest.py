"""Manifests: one row per input image per stage, with status and reason; nothing is silently dropped."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_serializer

from facegan.errors import AGAIN, DamagedRecord, StageInputMissing
from facegan.io import read_json, write_text

MANIFEST = "manifest.jsonl"
# Floats are written to a millionth (of a pixel, for coordinates): the digits below differ between machines
# (BLAS/LAPACK kernels, SIMD widths), and same params must give the same bytes on any machine.
DECIMALS = 6


def stable(value):
    """`value` with every float rounded to DECIMALS (lists and dicts walked), for machine-independent files."""
    if isinstance(value, float):
        return round(value, DECIMALS) + 0.0  # + 0.0: -0.0 -> 0.0
    if isinstance(value, list):
        return [stable(v) for v in value]
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items()}
    return value


class Row(BaseModel):
    """What a stage knows about one face (or one rejected input).

    Coordinates: `box` and `landmarks` are in the source image's pixels; `transform` is the 2x3
    affine matrix from source pixels to this stage's output pixels.
    """

    model_config = ConfigDict(extra="forbid")

    source: str
    file: str | None = None
    status: Literal["ok", "rejected"] = "ok"
    reason: str | None = None
    stage: str = ""
    box: list[float] | None = None
    landmarks: list[list[float]] | None = None
    transform: list[list[float]] | None = None
    backends: dict[str, str] = {}
    extra: dict[str, float | int | str | None] = {}

    @field_serializer("box", "landmarks", "transform", "extra")
    def _stable(self, value):
        return stable(value)

    # an accepted row always has its file, box and transform; asking a rejected one is a bug
    @property
    def out_file(self) -> str:
        return _present(self.file, "file", self)

    @property
    def face_box(self) -> list[float]:
        return _present(self.box, "box", self)

    @property
    def affine(self) -> list[list[float]]:
        return _present(self.transform, "transform", self)

    def reject(self, stage: str, reason: str) -> Row:
        return self.model_copy(update={"status": "rejected", "reason": reason, "stage": stage, "file": None})


Manifest = list[Row]
V = TypeVar("V")


def _present(value: V | None, name: str, row: Row) -> V:
    if value is None:
        raise ValueError(f"{row.source}: row ({row.status} at {row.stage or 'start'}) has no {name}")
    return value


def write_manifest(folder: Path, rows: Manifest) -> Path:
    path = folder / MANIFEST
    write_text(path, "".join(r.model_dump_json() + "\n" for r in rows))
    return path


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise StageInputMissing(f"no manifest at {path}: run the previous stage first")
    try:
        text = path.read_text(encoding="utf-8")
    except ValueError as e:
        raise DamagedRecord(f"{path}: not UTF-8 text ({e.__class__.__name__}): {AGAIN}") from None
    rows = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 in a file name is no line end
        if not line:
            continue
        try:
            rows.append(Row.model_validate_json(line))
        except ValidationError as e:  # a write cut off, an edit by hand: the stage that writes it runs again
            raise DamagedRecord(f"{path}, line {number}: not a manifest row ({_first_problem(e)}): {AGAIN}") from None
    return rows


def reason_kind(reason: str) -> str:
    """What a rejection counts under: its reason's words before the details, which follow in parentheses or after a
    colon ('blurred (sharpness 12.1 < 20)' -> 'blurred', 'unreadable image: OSError: ...' -> 'unreadable image').
    Counted whole, each distance, sharpness or file had a count of its own."""
    return re.split(r" \(|: ", reason, maxsplit=1)[0]


def summary(rows: Manifest) -> dict[str, int]:
    """Counts: ok, rejected, and one entry per kind of rejection reason (`rejected: <kind>`, see `reason_kind`); each
    row's manifest entry keeps its whole reason."""
    c = Counter(r.status for r in rows)
    out = {"ok": c["ok"], "rejected": c["rejected"]}
    for kind, n in Counter(reason_kind(r.reason or "") for r in rows if r.status == "rejected").most_common():
        out[f"rejected: {kind}"] = n
    return out


SUMMARY = "summary.json"


def read_summary(folder: Path) -> dict[str, int]:
    """The counts a stage wrote beside its manifest (see `summary`)."""
    return read_json(folder / SUMMARY, "a stage's counts")


def _first_problem(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]
