"""Frechet distance and KID between two folders of images (`facegan fid DIR1 DIR2`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path, PurePosixPath

from facegan.config import EvaluateConfig
from facegan.data.packed import ZIP_NAME, image_names, open_packed
from facegan.errors import StageInputMissing
from facegan.evaluate.extractors import make_extractor
from facegan.evaluate.fid import feature_stats, frechet_distance, kid
from facegan.io import IMAGE_SUFFIXES, ZipMember, list_images, split_images
from facegan.manifest import MANIFEST, read_manifest
from facegan.sample import GRID, SAMPLE_IMAGE

log = logging.getLogger(__name__)
# what a raw dataset's folder holds beside images/ (generate's ground truth, `facegan dataset add`'s references, labels)
RAW_SIDES = ("masks", "references", "annotations.json", "labels.csv")


def compare_folders(
    a: Path, b: Path, cfg: EvaluateConfig, extractor: str = "inception", classifier_dir: Path | None = None
) -> dict:
    """FD and KID of folder b against folder a in one extractor's feature space (`attributes`: the classifier in
    `classifier_dir`), `copies`: how many of b's images have the pixels of one of a's (a copy of the reference
    is no measure of a generator), and `same_images`: whether b holds exactly a's images. Which images a folder
    stands for: `folder_images`."""
    with ExitStack() as stack:
        paths = {folder: folder_images(folder, stack) for folder in (a, b)}
        for folder, found in paths.items():
            if len(found) < 2:
                raise StageInputMissing(f"{folder}: needs at least 2 images, found {len(found)}")
        return _compare(paths[a], paths[b], a, b, cfg, extractor, classifier_dir)


def folder_images(folder: Path, stack: ExitStack) -> Sequence[Path | ZipMember]:
    """The images a folder stands for. A packed dataset's folder (data/processed/<name>): the images of its
    dataset.zip, read where they are (the zip stays open until `stack` closes). A preprocessing stage's folder: the
    faces its manifest accepted, not the masks, contact sheet and other files the stages keep beside them (a row
    naming a file outside the folder is an error). A raw dataset's folder (data/raw/<name>: images/ beside its
    masks/, references/, annotations.json or labels.csv): the images in images/. Any other
    folder: every image file in it and its subfolders, but for the grid.png `facegan sample` writes beside its
    seed<S>_<i>.png images."""
    if (folder / ZIP_NAME).is_file():
        zf = stack.enter_context(open_packed(folder / ZIP_NAME))
        names = image_names(zf)
        log.info("%s: a packed dataset, scoring the %d images of its %s", folder, len(names), ZIP_NAME)
        return [ZipMember(zf, n) for n in names]
    if (folder / MANIFEST).is_file():
        files = [r.out_file for r in read_manifest(folder) if r.status == "ok"]
        # by the names alone: a face may be a link elsewhere (DVC's symlink cache), a name may not leave the folder
        if outside := [f for f in files if PurePosixPath(f).is_absolute() or ".." in PurePosixPath(f).parts]:
            raise StageInputMissing(
                f"{folder}: its {MANIFEST} names faces outside the folder, e.g. {outside[0]}: not a stage's manifest"
            )
        faces = [folder / f for f in files]
        if missing := [f for f in faces if not f.is_file()]:
            raise StageInputMissing(
                f"{folder}: {len(missing)} of the faces its {MANIFEST} accepted are missing, e.g. {missing[0]}: "
                "run its stage again"
            )
        others = max(0, len(list_images(folder)) - len(faces))
        log.info(
            "%s: a stage's folder, scoring the %d faces its %s accepted%s",
            folder,
            len(faces),
            MANIFEST,
            f" (not the {others} other images beside them: masks, contact sheet)" if others else "",
        )
        return faces
    if (folder / "images").is_dir() and any((folder / n).exists() for n in RAW_SIDES):
        log.info("%s: a raw dataset, scoring its images/ (not %s)", folder, ", ".join(RAW_SIDES))
        return _images_in(folder / "images")
    found = _images_in(folder)
    if (folder / GRID) in found and any(SAMPLE_IMAGE.fullmatch(p.name) for p in found if p.parent == folder):
        log.info("%s: `facegan sample`'s images, not its %s (a preview of the first ones)", folder, GRID)
        found.remove(folder / GRID)
    return found


def _images_in(folder: Path) -> list[Path]:
    """`list_images`, saying how many files it left out for their suffix (a format it does not know)."""
    images, others = split_images(folder)
    if others:
        log.warning(
            "%s: %d file(s) not scored, their suffix no image's (%s), e.g. %s",
            folder,
            len(others),
            ", ".join(sorted(IMAGE_SUFFIXES)),
            others[0].relative_to(folder),
        )
    return images


def _compare(
    pa: Sequence[Path | ZipMember],
    pb: Sequence[Path | ZipMember],
    a: Path,
    b: Path,
    cfg: EvaluateConfig,
    extractor: str,
    classifier_dir: Path | None,
) -> dict:
    ex = make_extractor(extractor, cfg, classifier_dir)
    da: list[bytes] = []
    db: list[bytes] = []
    fa = ex.folder(pa, desc=f"features of {a.name}", digests=da)
    fb = ex.folder(pb, desc=f"features of {b.name}", digests=db)
    in_a = set(da)
    copies = sum(d in in_a for d in db)
    if copies:
        log.warning(
            "%d of the %d images of %s %s identical (pixel for pixel) to images of %s: a score of images against "
            "themselves measures no generator",
            copies,
            len(db),
            b,
            "is" if copies == 1 else "are",
            a,
        )
    sa = feature_stats(fa, extractor=extractor, mode=cfg.mode)
    sb = feature_stats(fb, extractor=extractor, mode=cfg.mode)
    kid_mean, kid_std = kid(fa, fb, seed=cfg.seed)
    return {
        "fd": frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma),
        "kid": kid_mean,
        "kid_std": kid_std,
        "n_a": len(fa),
        "n_b": len(fb),
        "copies": copies,
        # the reference itself, however often each of its images is there; a subset of it still scores
        "same_images": set(da) == set(db),
        "extractor": extractor,
        "mode": cfg.mode,
    }
