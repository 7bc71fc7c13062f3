"""Feature extractors for Frechet distances, by name. Each maps NxHxWx3 uint8 images to NxD floats.

- `inception`: the standard FID network (needs the pytorch-fid weight file; see inception.py).
  Mode `legacy` resizes to 299 inside the network exactly as pytorch-fid does (bilinear);
  mode `clean` resizes each channel in float with PIL bicubic first, as clean-fid does.
- `dlib`: dlib's 128-D face-recognition embedding; its model ships in the face_recognition_models
  wheel, so it always works offline. Images are cropped to the face region of our alignment
  template and resized to dlib's 150x150 chip.
- `attributes`: the 256-D pooled features of the dataset's attribute classifier (labelled sets).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from facegan.config import EvaluateConfig
from facegan.errors import FaceganError
from facegan.io import ZipMember
from facegan.registry import pick


class ExtractorUnavailable(FaceganError, RuntimeError):
    """An extractor that cannot run here (missing weights or classifier); the message says why."""


DECODE_THREADS = 4  # PIL releases the GIL while decoding


@dataclass
class Extractor:
    name: str
    dims: int
    fn: Callable[[np.ndarray], np.ndarray]  # one batch
    batch_size: int

    def folder(
        self,
        paths: Sequence[Path | ZipMember],
        desc: str = "",
        threads: int = DECODE_THREADS,
        digests: list[bytes] | None = None,
    ) -> np.ndarray:
        """Features of image files of any size and mode, in the order of `paths`. Decoded on `threads` threads a
        chunk of 2 batches at a time, the next chunk while this one's features are computed (memory holds two
        chunks of decoded images, not the folder); batched by image size within a chunk, so a folder of mixed
        sizes runs smaller batches (the same features), one of a single size the batches of `__call__`. With
        `digests`, each image's pixel digest is appended to it in the same order (equal for equal pixels, whatever
        the file format)."""
        chunk = 2 * self.batch_size
        out = np.zeros((len(paths), self.dims), dtype=np.float64)
        with (
            ThreadPoolExecutor(max_workers=threads) as pool,
            tqdm(
                total=len(paths),
                desc=desc or f"features ({self.name})",
                unit="image",
                dynamic_ncols=True,
                mininterval=1.0,
            ) as bar,
        ):
            hashed = digests is not None
            pending = [pool.submit(_read, path, hashed) for path in paths[:chunk]]
            try:
                for start in range(0, len(paths), chunk):
                    read = [f.result() for f in pending]
                    images = [im for im, _ in read]
                    if digests is not None:
                        digests += [d for _, d in read]
                    pending = [pool.submit(_read, path, hashed) for path in paths[start + chunk : start + 2 * chunk]]
                    by_shape: dict[tuple[int, ...], list[int]] = {}
                    for i, im in enumerate(images):
                        by_shape.setdefault(im.shape, []).append(i)
                    for group in by_shape.values():
                        for b in range(0, len(group), self.batch_size):
                            rows = group[b : b + self.batch_size]
                            out[[start + i for i in rows]] = np.asarray(self.fn(np.stack([images[i] for i in rows])))
                            bar.update(len(rows))
            finally:  # an error: the decodes not yet started are dropped, not waited for
                for f in pending:
                    f.cancel()
        return out

    def __call__(self, images: np.ndarray, desc: str = "") -> np.ndarray:
        out = []
        for i in tqdm(
            range(0, len(images), self.batch_size),
            desc=desc or f"features ({self.name})",
            unit="batch",
            dynamic_ncols=True,
            mininterval=1.0,
        ):
            out.append(np.asarray(self.fn(images[i : i + self.batch_size]), dtype=np.float64))
        return np.concatenate(out) if out else np.zeros((0, self.dims))


def _read(path: Path | ZipMember, digest: bool = False) -> tuple[np.ndarray, bytes]:
    """The image and, with `digest`, a digest of its shape and pixels."""
    import hashlib

    from facegan.io import ImageError, read_image

    try:
        im = read_image(path)
    except ImageError as e:  # which file of the folder
        raise ImageError(f"{path}: {e}") from None
    if not digest:
        return im, b""
    h = hashlib.blake2b(str(im.shape).encode(), digest_size=16)
    h.update(im.tobytes())
    return im, h.digest()


def clean_resize(batch: np.ndarray, size: int = 299, pool: ThreadPoolExecutor | None = None) -> np.ndarray:
    """clean-fid's resize: each channel as a float image, PIL bicubic, clipped to 0..255 -> (N, 3, size, size)."""

    def one(im: np.ndarray) -> np.ndarray:
        chans = [
            np.asarray(
                Image.fromarray(im[..., c].astype(np.float32), mode="F").resize((size, size), Image.Resampling.BICUBIC)
            )
            for c in range(3)
        ]
        return np.clip(np.stack(chans), 0, 255)

    return np.stack(list(pool.map(one, batch)) if pool else [one(im) for im in batch])


def _inception(cfg: EvaluateConfig, classifier_dir: Path | None) -> Extractor:
    import torch

    from facegan.evaluate.inception import WeightsUnavailable, find_weights, load_inception

    try:
        net = load_inception(find_weights(cfg.inception_weights), given=cfg.inception_weights is not None)
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes it; the stub omits it
    except WeightsUnavailable as e:
        raise ExtractorUnavailable(str(e)) from None
    pool = ThreadPoolExecutor(max_workers=4) if cfg.mode == "clean" else None

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        if cfg.mode == "clean":  # /256: the net's 2x - 1 is then clean-fid's (x - 128) / 128
            x = torch.from_numpy(clean_resize(batch, pool=pool)).div_(256)
        else:
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255)
        return net(x.contiguous(memory_format=torch.channels_last)).numpy()

    return Extractor("inception", 2048, run, cfg.batch_size)


def _attributes(cfg: EvaluateConfig, classifier_dir: Path | None) -> Extractor:
    import torch

    from facegan.evaluate.classifier import load_classifier, to_input

    loaded = load_classifier(classifier_dir) if classifier_dir else None
    if loaded is None:
        raise ExtractorUnavailable(
            f"no attribute classifier in {classifier_dir} (the dataset has no labels, "
            "or the classifier stage has not run)"
        )
    net, state = loaded
    size = state.get("resolution")  # of the images it learned from (classifiers before it was kept: not known)

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        if size and batch.shape[1:3] != (size, size):  # its features are of that scale (e.g. `facegan fid` folders)
            resize = (size, size)
            batch = np.stack([np.asarray(Image.fromarray(im).resize(resize, Image.Resampling.BICUBIC)) for im in batch])
        return net.features(to_input(batch)).numpy()

    width: int = net.heads[0].in_features  # type: ignore[assignment]  # a Linear of the ModuleList
    return Extractor("attributes", width, run, cfg.batch_size)


# The face region of an image aligned with the default template (eyes 0.2 apart at height 0.45),
# as fractions of the side: roughly the framing of dlib's own 150x150 face chips.
DLIB_CROP = (0.17, 0.2, 0.83, 0.86)
DLIB_CHIP = 150


_ENCODER: list = []  # this process's dlib face encoder, loaded on first use


def _encoder():
    if not _ENCODER:
        import warnings

        import dlib

        with warnings.catch_warnings():  # the models package still imports the deprecated pkg_resources
            warnings.simplefilter("ignore", UserWarning)
            import face_recognition_models

        _ENCODER.append(dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location()))
    return _ENCODER[0]


def dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    """128-D embeddings of (N, 150, 150, 3) face chips (in whichever process runs it: the model loads once per
    process). Each chip's embedding is independent of the others in its batch."""
    return np.asarray(_encoder().compute_face_descriptor(list(chips))).reshape(len(chips), 128)


PARALLEL_FROM = 16  # chips per batch from which the worker processes share it


def _dlib(cfg: EvaluateConfig, classifier_dir: Path | None) -> Extractor:
    """dlib's encoder holds the GIL and uses one core: batches are split over `cfg.workers` processes (a fork
    server's, started on the first large batch and kept while the extractor lives)."""
    import cv2

    _encoder()  # fails here, before any work, when dlib or its models are missing
    pool: list = []

    def encode(chips: np.ndarray) -> np.ndarray:
        if cfg.workers < 2 or len(chips) < PARALLEL_FROM:
            return dlib_descriptors(chips)
        if not pool:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from facegan.parallel import one_thread_each

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["numpy", "dlib", "facegan.evaluate.extractors"])  # what the workers run
            pool.append(ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=one_thread_each))
        return np.concatenate(list(pool[0].map(dlib_descriptors, np.array_split(chips, cfg.workers))))

    def run(batch: np.ndarray) -> np.ndarray:
        h, w = batch.shape[1:3]
        x0, y0, x1, y1 = (round(f * s) for f, s in zip(DLIB_CROP, (w, h, w, h), strict=True))
        chips = np.stack(
            [cv2.resize(im[y0:y1, x0:x1], (DLIB_CHIP, DLIB_CHIP), interpolation=cv2.INTER_CUBIC) for im in batch]
        )
        return encode(chips)

    return Extractor("dlib", 128, run, min(cfg.batch_size, 32))


EXTRACTORS: dict[str, Callable[[EvaluateConfig, Path | None], Extractor]] = {
    "inception": _inception,
    "dlib": _dlib,
    "attributes": _attributes,
}


def make_extractor(name: str, cfg: EvaluateConfig, classifier_dir: Path | None = None) -> Extractor:
    """Build extractor `name`; raises ExtractorUnavailable when it cannot run here."""
    return pick(EXTRACTORS, name, "feature extractor")(cfg, classifier_dir)
