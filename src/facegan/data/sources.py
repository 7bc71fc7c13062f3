"""Importing a custom dataset: images from a folder or a .zip into data/raw/<name>/images.

Content-hash dedupe (the same bytes twice are stored once), non-image files and files the stages' reader
refuses from their header (no image format Pillow knows, over the pixel cap) skipped with a reason; in a
folder, symbolic links to files are followed (broken ones and links to folders are skipped with a reason),
and a zip is read defensively: absolute paths, `..` components and symlinks are refused, and the
file count and total uncompressed size are capped (zip bombs), checked on the bytes actually read.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

from facegan.errors import FaceganError, StageInputMissing
from facegan.io import IMAGE_SUFFIXES, ImageError, is_hidden, is_image_file, open_image
from facegan.parallel import progress

MAX_FILES = 200_000
MAX_BYTES = 20 * 2**30  # 20 GiB uncompressed
NOT_AN_IMAGE_FILE = "not an image file (by its suffix)"
HIDDEN = "hidden (a name starting with '.': a temporary file, a thumbnail)"
NOT_UTF8_NAME = "its name is not UTF-8 text (manifests and params store names as UTF-8): rename it"
NAME_TOO_LONG = "a name of over 255 bytes, the file system's limit (Windows counts characters): rename it"


def utf8_name(name: str) -> bool:
    """Whether a file name decoded from the file system is UTF-8 text (Python keeps other bytes as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_name(name: str) -> str:
    """A file name fit to print: bytes that are not UTF-8 as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


T = TypeVar("T")


class UnsafeArchive(FaceganError, ValueError):
    """A zip that could write outside its folder or expand without bound; nothing was written."""


class NoImages(FaceganError, ValueError):
    """A folder or zip without one readable image; nothing was written."""


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)  # skipped file -> the identical file kept
    skipped: dict[str, str] = field(default_factory=dict)  # file -> reason

    def summary(self) -> str:
        return (
            f"{len(self.imported)} images imported, {len(self.duplicates)} duplicates skipped, "
            f"{len(self.skipped)} other files skipped"
        )


def _left_out(rel: PurePosixPath, name: str) -> str | None:
    """Why the entry at `rel` (named `name` in its zip or folder) is not imported as an image; None: it is."""
    if is_hidden(rel):
        return HIDDEN
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in rel.parts):  # only a zip's can be
        return NAME_TOO_LONG
    if not is_image_file(PurePosixPath(name)):
        return NOT_AN_IMAGE_FILE
    return None


def _safe_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"absolute path in archive: {name!r}")
    if ".." in p.parts:
        raise UnsafeArchive(f"path leaving the archive folder: {name!r}")
    return p


def check_zip(zf: zipfile.ZipFile, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> list[zipfile.ZipInfo]:
    """The archive's regular files, after refusing unsafe entries (before anything is extracted)."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > max_files:
        raise UnsafeArchive(f"{len(infos)} files in the archive, more than the limit of {max_files}")
    total = 0
    for info in infos:
        _safe_name(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchive(f"symbolic link in archive: {info.filename!r}")
        total += info.file_size
        if total > max_bytes:
            raise UnsafeArchive(f"archive expands to more than {max_bytes / 2**30:.1f} GiB")
    return infos


class EntryUnreadable(Exception):
    """One zip member that cannot be read (the reason is the message): it is skipped, the others are imported."""


# what reading a member raises for data it cannot decompress: a CRC that does not match, a deflate, bzip2 or LZMA
# stream that is damaged (bz2's is an OSError without errno: one with an errno is the disk's, and is raised), or one
# cut off
_ENTRY_DAMAGE = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError)


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """Read one member, never more than its declared size (a lying header cannot expand further); EntryUnreadable
    for one that is encrypted, compressed by a method zipfile lacks (Deflate64: Windows' own zips of large folders)
    or damaged."""
    if info.flag_bits & 0x1:
        raise EntryUnreadable("encrypted (a password-protected zip: extract it, then add the folder)")
    try:
        with zf.open(info) as f:
            data = f.read(min(info.file_size, budget) + 1)
    except NotImplementedError:
        method = f"compression method {info.compress_type}"
        raise EntryUnreadable(
            f"{method}, which Python's zipfile does not read: extract the zip, then add the folder"
        ) from None
    except _ENTRY_DAMAGE as e:
        if isinstance(e, OSError) and e.errno is not None:  # a read error of the drive, not damage in the zip
            raise
        raise EntryUnreadable(f"damaged in the zip ({type(e).__name__}: {e})") from None
    if len(data) > info.file_size or len(data) > budget:
        raise UnsafeArchive(f"{info.filename!r} expands beyond its declared size")
    return data


def _unreadable(data: bytes) -> str | None:
    """Why the stages' reader would refuse these bytes from their header alone (no image format Pillow knows,
    over the pixel cap), or None. Damage further in (a file cut off) shows when the detect stage decodes it:
    a rejected row with the reason, as for any image."""
    try:
        with open_image(io.BytesIO(data)):
            return None
    except ImageError as e:
        return str(e)


def _not_a_file(p: Path) -> str | None:
    """Why a folder entry is not imported, or None for a regular file or a symbolic link to one (followed, wherever
    it points: the folder is the user's own, unlike a zip from elsewhere). Links to folders are not followed."""
    if p.is_file():
        return None
    if p.is_symlink():
        return "symbolic link to a folder (not followed)" if p.is_dir() else "broken symbolic link"
    return "not a regular file"


def _store(data: bytes, rel: PurePosixPath, dst: Path, seen: dict[str, str], report: ImportReport) -> None:
    key = str(rel)
    if (why := _unreadable(data)) is not None:
        report.skipped[key] = why
        return
    digest = hashlib.sha256(data).hexdigest()
    if digest in seen:
        report.duplicates[key] = seen[digest]
        return
    target = dst / key
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    seen[digest] = key
    report.imported.append(key)


def _no_images(src: Path, report: ImportReport) -> str:
    text = f"{src}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
    refused = [(k, v) for k, v in report.skipped.items() if v not in (NOT_AN_IMAGE_FILE, HIDDEN)]
    if refused:
        text += f"; {len(refused)} such file(s) refused, e.g. {refused[0][0]}: {refused[0][1]}"
    return text


def _counted(entries: list[T], src: Path) -> Iterator[T]:
    """`entries`, with a progress bar of the files of `src` read so far (a folder of tens of thousands of photos
    takes minutes)."""
    bar = progress(len(entries), f"import {src.name}", unit="file")
    try:
        for entry in entries:
            yield entry
            bar.update()
    finally:
        bar.close()


def import_images(src: Path, dst: Path, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> ImportReport:
    """Copy the images of a folder or .zip into dst (created; must not exist). Nothing is written for an
    unsafe archive. Image names keep their relative paths."""
    if dst.exists():
        raise FileExistsError(f"{dst} already exists")
    report = ImportReport()
    seen: dict[str, str] = {}
    tmp = dst.with_name(f".{dst.name}.importing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if src.is_file() and zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as zf:
                infos = check_zip(zf, max_files, max_bytes)
                budget = max_bytes
                for info in _counted(sorted(infos, key=lambda i: i.filename), src):
                    rel = _safe_name(info.filename)
                    if (why := _left_out(rel, info.filename)) is not None:
                        report.skipped[str(rel)] = why
                        continue
                    try:
                        data = _read_capped(zf, info, budget)
                    except EntryUnreadable as e:
                        report.skipped[str(rel)] = str(e)
                        continue
                    budget -= len(data)
                    _store(data, rel, tmp, seen, report)
        elif src.is_dir():
            for p in _counted([p for p in sorted(src.rglob("*")) if not (p.is_dir() and not p.is_symlink())], src):
                rel = PurePosixPath(p.relative_to(src).as_posix())
                if (why := _not_a_file(p)) is not None:
                    report.skipped[str(rel)] = why
                    continue
                if not utf8_name(str(rel)):
                    report.skipped[shown_name(str(rel))] = NOT_UTF8_NAME
                    continue
                if (why := _left_out(rel, p.name)) is not None:
                    report.skipped[str(rel)] = why
                    continue
                _store(p.read_bytes(), rel, tmp, seen, report)
        else:
            if src.is_file() and src.suffix.lower() == ".zip":  # a download cut off, a copy of part of it
                raise StageInputMissing(f"{src}: not a readable .zip file (damaged, or cut off)")
            raise StageInputMissing(f"{src}: " + ("not a folder or a .zip file" if src.exists() else "not found"))
        if not report.imported:
            raise NoImages(_no_images(src, report))
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
