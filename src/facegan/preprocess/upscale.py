"""Stage `upscale`: bring faces smaller than the target side up to it; larger ones pass unchanged.

Backends (UPSCALERS) share one signature: `upscaler(image_rgb, side) -> side x side image`.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from facegan.config import UpscaleConfig
from facegan.io import read_image, write_image
from facegan.manifest import Manifest, Row
from facegan.parallel import Pool
from facegan.preprocess import geometry
from facegan.preprocess.common import MASKS, run_per_image
from facegan.registry import pick

STAGE = "upscale"
Upscaler = Callable[[np.ndarray, int], np.ndarray]


def lanczos(image: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.LANCZOS))


def _opencv(cfg: UpscaleConfig) -> Upscaler:
    from facegan.preprocess.pretrained import OpenCVSuperRes, superres_dir

    sr = OpenCVSuperRes(cfg.model, cfg.scale, superres_dir(cfg.models_dir))
    sr.check()
    sr.model()  # an unreadable model file stops the stage before any image
    return sr


UPSCALERS: dict[str, Callable[[UpscaleConfig], Upscaler]] = {"lanczos": lambda cfg: lanczos, "opencv": _opencv}


def _upscale_one(row: Row, *, cfg: UpscaleConfig, upscaler: Upscaler, src: Path, dst: Path) -> Row:
    image = read_image(src / row.out_file)
    h, w = image.shape[:2]
    factor = 1.0
    mask = src / MASKS / row.out_file  # the matte stage's, carried along for the quality stage
    if min(h, w) < cfg.size:
        factor = cfg.size / min(h, w)
        image = upscaler(image, cfg.size)
        write_image(dst / row.out_file, image)
        if mask.is_file():
            big = Image.fromarray(read_image(mask)[..., 0]).resize((cfg.size, cfg.size), Image.Resampling.NEAREST)
            write_image(dst / MASKS / row.out_file, np.asarray(big))
        transform = geometry.compose(geometry.resize_map((w, h), (cfg.size, cfg.size)), row.affine).tolist()
    else:
        for file in (row.out_file, *([f"{MASKS}/{row.out_file}"] if mask.is_file() else [])):
            (dst / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / file, dst / file)
        transform = row.affine
    return row.model_copy(
        update={
            "stage": STAGE,
            "transform": transform,
            "backends": {**row.backends, STAGE: cfg.backend if factor > 1 else "none"},
            "extra": {**row.extra, "upscale_factor": round(factor, 4)},
        }
    )


def run_upscale(cfg: UpscaleConfig, src: Path, dst: Path, workers: int | Pool = 1) -> Manifest:
    upscaler = pick(UPSCALERS, cfg.backend, "upscale backend")(cfg)
    return run_per_image(STAGE, functools.partial(_upscale_one, cfg=cfg, upscaler=upscaler), src, dst, workers)
