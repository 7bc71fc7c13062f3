"""Image and file I/O: robust decoding of whatever users throw at us, atomic writes, grids."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import functools
import hashlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any, BinaryIO

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from facegan.errors import AGAIN, CheckpointError, DamagedRecord, FaceganError, FolderBusy, OutputError, first_line

# the photo and drawing formats people have, where this Pillow decodes them: .jfif and .jpe are JPEGs as browsers
# and Windows save them, .apng a PNG; WebP, JPEG 2000 and AVIF need libraries a Pillow build may lack (its JPEG 2000
# plugin names its suffixes even then). A file of another suffix is no image.
_COMMON = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".tif", ".tiff", ".gif")
_MORE = (".webp", ".avif", ".jp2", ".j2k", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi")
_CODEC = {".webp": "webp", ".avif": "avif", ".jp2": "jpg_2000", ".j2k": "jpg_2000"}  # PIL.features names


def _openable() -> frozenset[str]:
    from PIL import features

    Image.init()
    known = Image.registered_extensions()
    return frozenset(
        s for s in (*_COMMON, *_MORE) if known.get(s) in Image.OPEN and (s not in _CODEC or features.check(_CODEC[s]))
    )


IMAGE_SUFFIXES = _openable()
MAX_PIXELS = 100_000_000  # larger images are rejected with a reason, never decoded


class ImageError(FaceganError):
    """An input image that cannot be used; str(e) is the reason recorded in the manifest."""


def list_images(folder: Path) -> list[Path]:
    """Files in `folder` (recursively) whose suffix looks like an image, sorted for determinism; hidden ones
    (`is_hidden`) are left out."""
    return split_images(folder)[0]


def is_hidden(relative: PurePath) -> bool:
    """Whether a path inside a folder is hidden: a part of it starts with '.' (the temporary file of a write cut
    off, `facegan sample`'s unfinished folder, a desktop's thumbnails); import, detect and fid leave it out."""
    return any(part.startswith(".") for part in relative.parts)


def visible_files(folder: Path) -> list[Path]:
    """Every file in `folder` and its subfolders but the hidden ones (`is_hidden`), sorted. A subfolder that is a
    link is walked (once: a link back to a folder already walked is not), and a link to nothing is listed, so
    that its reader says so (`open_image`): rglob passed over both without a word."""
    found: list[Path] = []
    walked: set[str] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            p = Path(top, name)
            if not name.startswith(".") and (p.is_file() or (p.is_symlink() and not p.exists())):
                found.append(p)
    return sorted(found)


def is_image_file(path: PurePath) -> bool:
    """Whether the suffix is one of IMAGE_SUFFIXES (any case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def split_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(`list_images`, the files it leaves out for their suffix, hidden ones aside), both sorted: for commands that
    take a folder's images and say what they did not read (a format they do not know), not drop it unseen."""
    files = visible_files(folder)
    return [p for p in files if is_image_file(p)], [p for p in files if not is_image_file(p)]


# what Pillow raises for a file it cannot open or decode (UnidentifiedImageError is an OSError)
_DECODE_ERRORS = (Image.DecompressionBombError, OSError, SyntaxError, ValueError)


@contextlib.contextmanager
def open_image(fp: Path | BinaryIO, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """Image.open (header only, nothing decoded yet) with the pixel cap; ImageError with a short reason for a file
    that is no image Pillow knows, or is too large. Pillow's own decompression-bomb warning is left out: the cap,
    lower, decides."""
    if isinstance(fp, Path) and fp.is_symlink() and not fp.exists():
        raise ImageError(f"a link to nothing ({os.readlink(fp)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except _DECODE_ERRORS as e:
        raise (ImageError("unreadable image: an empty file (0 bytes)") if _empty(fp) else _unreadable(e)) from None
    with im:
        if im.width * im.height > max_pixels:
            raise ImageError(f"too large: {im.width}x{im.height} > {max_pixels} pixels")
        yield im


@dataclasses.dataclass(frozen=True)
class ZipMember:
    """A file inside an open zip (a packed dataset's image), read where it is; str() names it `archive:member`.
    Several threads may read members of one ZipFile at once (zipfile serialises its reads)."""

    zf: zipfile.ZipFile
    name: str

    def __str__(self) -> str:
        return f"{self.zf.filename}:{self.name}"

    def open(self) -> BinaryIO:
        try:
            return io.BytesIO(self.zf.read(self.name))
        except zipfile.BadZipFile as e:  # the zip's index reads, this member's data does not (Bad CRC)
            raise ImageError(f"damaged in its zip ({e})") from None


def read_image(path: Path | ZipMember, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode any common image to HxWx3 uint8 RGB, applying EXIF rotation.

    Handles CMYK, palette, grayscale, 16-bit and alpha (composited on white). Raises ImageError
    with a short reason for unreadable, truncated or oversized files.
    """
    with open_image(path.open() if isinstance(path, ZipMember) else path, max_pixels) as im:
        try:
            im.load()
            return to_rgb8(_upright(im))
        except _DECODE_ERRORS as e:
            raise _unreadable(e) from None


# EXIF orientation -> the transpose that shows the pixels as the camera's owner saw them (EXIF 2.3, tag 0x0112)
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(im: Image.Image) -> Image.Image:
    """The pixels turned by the EXIF orientation. Only the pixels are wanted: ImageOps.exif_transpose also writes
    the EXIF block back and fails (struct.error) on a damaged tag the camera or an editor left, which must not cost
    the photo; an orientation that cannot be read is none."""
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 -- any damage in the EXIF block: Pillow raises what its parsers raise
        return im
    method = _ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None
    return im.transpose(method) if method is not None else im


def _empty(fp: Path | BinaryIO) -> bool:
    """Whether the file Pillow could not open holds no bytes at all (a copy or download that never started)."""
    try:
        return (fp.stat().st_size if isinstance(fp, Path) else fp.seek(0, os.SEEK_END)) == 0
    except (OSError, ValueError):
        return False


def _unreadable(e: BaseException) -> ImageError:
    if isinstance(e, UnidentifiedImageError):  # its own message is the file's name or a BytesIO's repr
        return ImageError("unreadable image: no image format Pillow knows")
    return ImageError(f"unreadable image: {type(e).__name__}: {e}")


def to_rgb8(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8 RGB of any Pillow mode: 16-bit and float gray scaled to 8 bits, alpha composited on white."""
    if im.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        g = np.clip(np.round(a * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        g = np.clip(np.round(a * 255.0 if a.max() <= 1.0 else a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode in {"RGBA", "LA", "PA"} or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


# zlib level of the PNGs the stages write: the pixels are the same at any level; 1 encodes 256x256 faces ~2.5x faster
# than Pillow's default (6) for ~13 % larger files (the per-image stages write 2000 images each)
PNG_LEVEL = 1


def output_folder(path: Path, what: str) -> Path:
    """`path` made (with its parents) for `what` to be written there: OutputError naming it when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as e:
        raise OutputError(f"{what}: cannot write to {path}: {e.strerror or e}") from None
    return path


def read_json(path: Path, what: str | None = None, again: str = AGAIN) -> Any:
    """A JSON file a stage wrote (metrics, counts); DamagedRecord naming it and saying `again` (what to run) when it
    is no JSON any more (a write cut off, an edit by hand), or with `what` (e.g. "a stage's counts") when it is not
    the JSON object that is; FileNotFoundError when it is not there."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DamagedRecord(f"{path}: not JSON ({first_line(e, 120)}): {again}") from None
    if what is not None and not isinstance(data, dict):
        raise DamagedRecord(f"{path}: not {what} (a JSON {type(data).__name__}): {again}")
    return data


def read_numbers_csv(path: Path) -> list[dict[str, float]]:
    """The rows of a CSV of numbers a stage wrote (losses.csv, fid.csv), each {column: value} without its empty
    cells (a value a step did not log); DamagedRecord naming the file and line where a cell is no number or a row
    has more or fewer cells than the header (an edit by hand), FileNotFoundError when it is not there."""
    rows: list[dict[str, float]] = []

    def damaged(where: str, problem: str) -> DamagedRecord:
        return DamagedRecord(f"{path}{where}: {problem}: {AGAIN}")

    with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: a spreadsheet's byte-order mark is no column
        reader = csv.DictReader(f)
        try:
            for row in reader:
                line = f", line {reader.line_num}"
                if None in row:  # DictReader's key for the cells beyond the header
                    raise damaged(line, "more cells than columns")
                if None in row.values():  # its value for the columns beyond the cells
                    raise damaged(line, "fewer cells than columns")
                try:
                    rows.append({k: float(v) for k, v in row.items() if v != ""})
                except ValueError as e:
                    raise damaged(line, first_line(e, 80)) from None
        except (UnicodeDecodeError, csv.Error) as e:  # no line: the reader's count is of the lines before it
            raise damaged("", f"not a CSV of numbers ({first_line(e, 80)})") from None
    return rows


def write_image(path: Path, array: np.ndarray) -> None:
    """Write an HxWx3 (or HxWx4, HxW) uint8 array atomically; format from the suffix."""
    fmt = Image.registered_extensions()[path.suffix.lower()]
    options = {"compress_level": PNG_LEVEL} if fmt == "PNG" else {}
    with atomic_file(path, path.suffix) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format=fmt, **options)


_ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:[^\s'\"(),/]+/)+([^\s'\"(),/]*)")


def host_free(text: str) -> str:
    """`text` with absolute paths cut to their last two parts (`.../checkpoints/x.pth`): what outputs record must
    not depend on the machine or folder a run happened in (the log keeps the full paths)."""

    def cut(m: re.Match) -> str:
        parts = m.group(0).rstrip("/").split("/")
        return ".../" + "/".join(parts[-2:]) + ("/" if m.group(0).endswith("/") else "")

    return _ABSOLUTE.sub(cut, text)


def cache_root() -> Path:
    """facegan's cache: FACEGAN_CACHE, else ~/.cache/facegan (decoded training sets, fetched registered models)."""
    return Path(os.environ.get("FACEGAN_CACHE", Path.home() / ".cache" / "facegan")).expanduser()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def _sha256_of(path: Path, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def sha256_cached(path: Path) -> str | None:
    """sha256_file, hashed once per version of the file in this process (a file changed since is hashed again);
    None when it is not there. For a packed set or a pretrained model that several checks of one run compare with."""
    if not path.is_file():
        return None
    st = path.stat()
    return _sha256_of(path, st.st_mtime_ns, st.st_size)


def load_torch(path: Path, advice: str, safe_globals: tuple[type, ...] = ()) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; a file it cannot read is one CheckpointError:
    '{path}: not a readable checkpoint ({why}); {advice}'."""
    import torch

    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a foreign or broken file fails in many ways (pickle, zip, struct, ...)
        raise CheckpointError(f"{path}: not a readable checkpoint ({_torch_load_failure(path, e)}); {advice}") from None


def _torch_load_failure(path: Path, e: Exception) -> str:
    """Why torch.load failed, in one phrase: torch's own message for a refused pickle is mostly advice to load
    the file with weights_only=False, which would let the file run code."""
    if isinstance(e, OSError):  # not readable at all (permissions, a folder, an I/O error)
        return first_line(e, with_type=True)
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        return "an empty file"
    if head[:1] != b"\x80" and head != b"PK\x03\x04":  # how torch.load tells its legacy pickle from its zip
        return "no file torch.save wrote: neither a zip archive nor a pickle"
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "a zip archive cut off: an interrupted copy or download?"
    if isinstance(e, pickle.UnpicklingError):
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch bolds its warning with terminal escapes
        _, found, rest = text.partition("WeightsUnpickler error:")
        lines = [line.strip() for line in rest.splitlines() if line.strip()] if found else []
        reason = lines[0].split(". ")[0].rstrip(".")[:200] if lines else first_line(e)
        if reason.startswith("Unsupported global"):
            return (
                f"torch.load refuses it with weights_only=True, which facegan keeps so that no file runs code: {reason}"
            )
        return f"a damaged pickle, or one torch's weights-only loader does not read: {reason}"
    return first_line(e, with_type=True)


@contextlib.contextmanager
def atomic_file(path: Path, suffix: str = "", tmp: Path | None = None) -> Iterator[Path]:
    """A hidden temporary path beside `path` for the block to write (`suffix` for writers that take the format
    from it; `tmp` for one that names its own); it then replaces `path` at once. An error or interrupt removes it
    instead (a full disk left a half-written temporary file behind, a checkpoint's hundreds of MB): `path` is the
    old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp or path.with_name(f".{path.name}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the error (or interrupt) that stopped the write is the one raised
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def exclusive(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder` for this process while the block runs; a second holder, in this process or another, gets
    FolderBusy at once. The lock is the OS's lock on `.<name>.lock` beside the folder (so removing or replacing
    the folder keeps it), and a process that dies releases it."""
    from filelock import FileLock, Timeout

    folder.parent.mkdir(parents=True, exist_ok=True)
    lock, locked = FileLock(folder.parent / f".{folder.name}.lock"), True
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FolderBusy(
            f"{folder}: another {what} is writing here (it holds {lock.lock_file}); wait for it to end, or stop it"
        ) from None
    except NotImplementedError as e:  # a file system without file locks (filelock 4 warns and locks softly)
        logging.getLogger(__name__).warning("%s: not locked (%s): a second %s would not be refused", folder, e, what)
        locked = False
    try:
        yield
    finally:
        if locked:
            lock.release()


def new_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder `parent/<prefix><random>`, with the permissions any folder gets (the umask's): what
    tempfile.mkdtemp makes is private (0700), and a stage's output folder renamed from it stayed unreadable to the
    colleagues, web server or cluster workers that read its parent."""
    while True:
        path = parent / f"{prefix}{os.urandom(6).hex()}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_dir(dst: Path, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `dst`; on success it replaces `dst`, on error it is removed. Temporary
    folders a killed run left beside `dst` are removed first: `dst` itself is only ever absent or complete.
    With `what` (e.g. "detect run"), `dst` is held (`exclusive`) throughout: a second writer gets FolderBusy before
    it removes anything, instead of taking the live run's temporary folder for a killed run's. (Its lock file stays
    beside `dst`: not for folders whose parent is itself a DVC output, as data/runs/<dataset>/<variant>/ is.)"""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(dst, what) if what else contextlib.nullcontext():
        for stale in dst.parent.glob(f".{dst.name}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        tmp = new_dir(dst.parent, f".{dst.name}.")
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)


DISABLED = "DISABLED.txt"  # the only file in a DVC output folder of a stage that is switched off


def write_disabled(folder: Path, note: str) -> None:
    """`folder` (a stage's DVC output) holding only DISABLED.txt with `note`: the stage is switched off in params.yaml,
    and `dvc repro` still finds its outputs and runs the rest of the pipeline."""
    logging.getLogger(__name__).warning("%s (%s)", note.strip(), folder)
    with atomic_dir(folder) as tmp:
        write_text(tmp / DISABLED, note)


def image_grid(images: np.ndarray, ncols: int, pad: int = 2, value: int = 255) -> np.ndarray:
    """Tile NxHxWx3 uint8 images into one grid image, row-major, with `pad` pixels between."""
    n, h, w, c = images.shape
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), value, np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = im
    return grid
