"""Reading a packed dataset: the ZIP of PNGs + dataset.json labels (stylegan2-ada-pytorch's format) that the
`pack` stage writes."""

from __future__ import annotations

import io
import json
import os
import socket
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from facegan.errors import DamagedRecord, StageInputMissing, first_line

ZIP_NAME = "dataset.zip"
_AGAIN = "run the `pack` stage again"


class PackedSetDamaged(DamagedRecord):
    """A packed dataset.zip that is no readable ZIP, holds a damaged image (a copy or a write cut off), or a
    dataset.json that is not what `pack` writes."""


def open_packed(zip_path: Path) -> zipfile.ZipFile:
    """The packed set's ZIP, open for reading; a missing one says to run `pack`, a damaged one to run it again (a
    FileNotFoundError or BadZipFile traceback from the stages that read it, before)."""
    try:
        return zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise StageInputMissing(f"{zip_path}: no packed dataset there: run the `pack` stage first") from None
    except zipfile.BadZipFile as e:  # other OSErrors (a permission, a folder of that name) say what they are
        raise PackedSetDamaged(f"{zip_path}: not a readable packed dataset ({e}): {_AGAIN}") from None


def _member(zf: zipfile.ZipFile, name: str, zip_path: Path) -> bytes:
    """One member's bytes (an image, dataset.json); PackedSetDamaged when they do not decompress (the index reads,
    the data does not)."""
    try:
        return zf.read(name)
    except zipfile.BadZipFile as e:
        raise PackedSetDamaged(f"{zip_path}:{name}: {e}: {_AGAIN}") from None


def image_names(zf: zipfile.ZipFile, limit: int | None = None, seed: int = 0) -> list[str]:
    """The image names in packed order; with `limit` below their count, a subset of that many drawn at random
    (seeded) from all of them, in packed order: packed order is the source files' name order, and the first N by
    name can be one part of a set arranged by class or person."""
    names = sorted(n for n in zf.namelist() if n.endswith(".png"))
    if limit is None or limit >= len(names):
        return names
    keep = np.random.default_rng(seed).choice(len(names), limit, replace=False)
    return [names[i] for i in sorted(keep)]


def packed_shape(zip_path: Path) -> tuple[int, int, int]:
    """(images, height, width) of a packed ZIP, from its index and first image only."""
    with open_packed(zip_path) as zf:
        names = image_names(zf)
        if not names:
            raise StageInputMissing(f"{zip_path}: no images")
        w, h = Image.open(io.BytesIO(_member(zf, names[0], zip_path))).size
    return len(names), h, w


def decode_into(
    zip_path: Path, names: list[str], out: np.ndarray, threads: int = 1, channels_first: bool = False
) -> None:
    """Decode the named PNGs into out[i] (HxWx3, or 3xHxW with channels_first), `threads` at a time; each thread
    reads its share of the ZIP itself, so the compressed set is never held in memory at once."""
    chunks = np.array_split(np.arange(len(names)), max(1, threads))

    def decode(idx: np.ndarray) -> None:
        with open_packed(zip_path) as zf:
            for i in idx:
                im = np.asarray(Image.open(io.BytesIO(_member(zf, names[i], zip_path))).convert("RGB"))
                out[i] = im.transpose(2, 0, 1) if channels_first else im

    with ThreadPoolExecutor(len(chunks)) as pool:
        list(pool.map(decode, chunks))


def load_packed(
    zip_path: Path, limit: int | None = None, threads: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """All images of a packed ZIP (or `limit` of them, a seeded random subset) as an NxHxWx3 uint8 array, labels
    as NxA int64 (or None), and metadata.

    PNGs are decoded by `threads` threads (Pillow releases the GIL while decoding) straight into one
    preallocated array, so the training loop then indexes memory with no per-image Python work.
    """
    meta = packed_meta(zip_path)
    with open_packed(zip_path) as zf:
        names = image_names(zf, limit, seed)
    if not names:
        raise StageInputMissing(f"{zip_path}: no images")
    _, h, w = packed_shape(zip_path)
    images = np.empty((len(names), h, w, 3), np.uint8)
    decode_into(zip_path, names, images, threads)
    return images, _labels(meta, names, zip_path), meta


def decode_packed(zip_path: Path, out: np.ndarray, threads: int = 1) -> None:
    """Every image of a packed ZIP, in packed order, decoded into the caller's Nx3xHxW uint8 array (N, H, W from
    packed_shape): the memory the caller chose (a pinned tensor's, a memory-mapped file's) holds the one copy of
    the set, with no full-size array before it to convert or copy."""
    with open_packed(zip_path) as zf:
        names = image_names(zf)
    decode_into(zip_path, names, out, threads, channels_first=True)


def decoded_memmap(zip_path: Path, cache: Path, threads: int = 1) -> np.ndarray:
    """The packed images decoded once into an Nx3xHxW uint8 .npy file under `cache` (named by the ZIP's sha256,
    so another set never reads a stale one), opened memory-mapped: rows are read from disk when indexed, so
    a set larger than memory trains in the same seeded batch order as the in-memory path. Processes decoding
    the same set at once (DDP ranks) take turns on a lock file beside it: the first decodes, the others find its
    file (one decode and one set-sized temporary, not one per process)."""
    import fcntl

    from facegan.io import atomic_file, sha256_file

    path = cache / f"{sha256_file(zip_path)[:32]}.npy"
    _remove_stale_temporaries(cache, path.stem)  # only dead processes' files: safe without the lock
    if not path.is_file():  # decoded already: no lock to take (a cache others made, read-only here, included)
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f".{path.stem}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when its process dies
            if not path.is_file():  # another process may have decoded it while this one waited
                n, h, w = packed_shape(zip_path)
                # named by host and pid: a killed process's is known (nodes sharing a cache folder lock apart only
                # where the file system's locks reach them)
                own = cache / f".{path.stem}.{socket.gethostname()}.{os.getpid()}.npy"
                with atomic_file(path, tmp=own) as tmp:  # a damaged image, a full disk: the set-sized file goes too
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, h, w))
                    decode_packed(zip_path, out, threads)
                    out.flush()
                    del out
    return np.load(path, mmap_mode="c")  # copy-on-write: torch may wrap it, nothing is ever written back


def _remove_stale_temporaries(cache: Path, stem: str) -> None:
    """Delete the half-written decodes of the set `stem` (.<stem>.<host>.<pid>.npy) that a killed process left:
    each is as large as the set and nothing else ever removes it, even once another process has finished the
    decode. Only this host's whose process is gone: a live process's is still being written, and another host's
    pid (a cache on a shared disk, several nodes) cannot be checked from here."""
    host = socket.gethostname()
    for tmp in cache.glob(f".{stem}.*.npy"):
        owner, _, pid = tmp.name[len(stem) + 2 : -len(".npy")].rpartition(".")
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)  # a concurrent process may have removed it first


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (signal 0 is only checked, never sent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


class _Meta(BaseModel):
    """What `pack` writes into dataset.json. An unlabelled set of stylegan2-ada-pytorch's dataset_tool (`labels`
    null, nothing else) reads too, with the rest empty."""

    labels: list[tuple[str, list[int]]] | None
    label_names: list[str] = []
    label_values: dict[str, list[str]] = {}
    resolution: int | None = Field(None, gt=0)


def packed_meta(zip_path: Path) -> dict:
    """dataset.json of a packed ZIP (labels, label names and values, resolution); PackedSetDamaged when it is not
    there or not what `pack` writes: every label row one index into each attribute's values."""
    where = f"{zip_path}:dataset.json"
    with open_packed(zip_path) as zf:
        try:
            raw = _member(zf, "dataset.json", zip_path)
        except KeyError:
            raise PackedSetDamaged(f"{zip_path}: no dataset.json in it: {_AGAIN}") from None

    def damaged(problem: str) -> PackedSetDamaged:
        return PackedSetDamaged(f"{where}: not the packed set's metadata ({problem}): {_AGAIN}")

    try:
        meta = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise PackedSetDamaged(f"{where}: not JSON ({first_line(e, 120)}): {_AGAIN}") from None
    if not isinstance(meta, dict):
        raise damaged(f"a JSON {type(meta).__name__}")
    try:
        _Meta.model_validate_json(raw, strict=True)  # strict: what is returned is what was checked ("1" is no int)
    except ValidationError as e:
        err = e.errors()[0]
        raise damaged(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    meta = {k: f.get_default() for k, f in _Meta.model_fields.items() if not f.is_required()} | meta  # what it lacks
    names, values = meta["label_names"], meta["label_values"]
    if lacking := [n for n in names if n not in values]:
        raise damaged(f"label_names has {lacking[0]!r}, label_values has not")
    if names and not meta["labels"]:
        raise damaged("label_names without label rows")
    rows = [row for _, row in meta["labels"] or []]
    if any(len(row) != len(names) for row in rows):
        raise damaged("a label row of another length than label_names")
    if rows and names:  # one index into each attribute's values, as the models' embeddings take them
        try:
            indices = np.asarray(rows, np.int64)
        except OverflowError:
            raise damaged("a label index beyond 64 bits") from None
        sizes = np.asarray([len(values[n]) for n in names])
        if (out := (indices < 0) | (indices >= sizes)).any():
            i, j = np.argwhere(out)[0]
            raise damaged(f"{meta['labels'][i][0]}: {names[j]} {indices[i, j]}, not an index of its {sizes[j]} values")
    return meta


def load_labels(zip_path: Path, meta: dict | None = None) -> np.ndarray | None:
    """The NxA label rows of a packed ZIP's images in packed order (or None), from dataset.json and the zip's index
    (`meta`: its `packed_meta`, already read): no image is decoded. Row i is image i's, as `load_packed` gives
    them; an image without a row is PackedSetDamaged."""
    meta = packed_meta(zip_path) if meta is None else meta
    if not meta.get("labels"):
        return None
    with open_packed(zip_path) as zf:
        return _labels(meta, image_names(zf), zip_path)


def _labels(meta: dict, names: list[str], zip_path: Path) -> np.ndarray | None:
    if not meta.get("labels"):
        return None
    by_name = dict((k, v) for k, v in meta["labels"])
    if missing := [n for n in names if n not in by_name]:
        raise PackedSetDamaged(f"{zip_path}:dataset.json: no label row for {missing[0]}: {_AGAIN}")
    return np.asarray([by_name[n] for n in names], dtype=np.int64)
