"""Super-resolution of real faces: OpenCV dnn_superres models vs bicubic and Lanczos, PSNR / SSIM and images/s.

    python bench/superres.py [--photos DIR] [--side 192] [--factors 2 4] [--rounds 3] [--models-dir DIR]

Faces: every face dlib's HOG detector finds in the real photos of ../shared/assets/faces (plus
scikit-image's astronaut), cropped square (1.4 x the box) from faces of at least --min-face px and
resampled (INTER_AREA) to --side px: the sizes the `upscale` stage meets (a face below the 128 px target
is brought up to it). Each crop is downscaled by the factor with PIL's antialiased bicubic (the degradation the
models were trained on) and brought back to its side by each method, exactly as the `upscale` stage calls it
(`UPSCALERS`: `lanczos`, or `opencv` with a model applied until the side is reached, then INTER_AREA to the
side). PSNR and SSIM on the luminance (BT.601 Y, 0-255, skimage.metrics), averaged over faces. Speed:
upscales per second over all faces, the median of --rounds interleaved rounds, with OpenCV's thread count
printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facegan.config import UpscaleConfig
from facegan.io import list_images, read_image
from facegan.preprocess.models import DlibDetector
from facegan.preprocess.pretrained import superres_dir
from facegan.preprocess.upscale import UPSCALERS

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "faces"
MODELS = {"FSRCNN": (2, 3, 4), "FSRCNN-small": (2, 3, 4), "ESPCN": (2, 3, 4), "LapSRN": (2, 4, 8)}


def face_crops(photos: Path, min_face: int, side: int, limit: int) -> list[np.ndarray]:
    """Square crops (box side x 1.4) of every face found of at least min_face px, resampled to side x side."""
    from skimage import data

    images = [read_image(p) for p in list_images(photos)] if photos.is_dir() else []
    images.append(data.astronaut())
    det = DlibDetector("hog", upsample=1, max_side=1600)
    crops = []
    for im in images:
        for face in det(im):
            x0, y0, x1, y1 = face.box
            size = int(1.4 * max(x1 - x0, y1 - y0))
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            left, top = int(cx - size / 2), int(cy - size / 2)
            if size >= min_face and left >= 0 and top >= 0 and left + size <= im.shape[1] and top + size <= im.shape[0]:
                crop = im[top : top + size, left : left + size]
                crops.append(cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA))
    return crops[:limit]


def luminance(im: np.ndarray) -> np.ndarray:
    return im.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--factors", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-face", type=int, default=128, help="smallest face crop used (px, before resampling)")
    ap.add_argument("--side", type=int, default=192, help="face crop side (px): the high-resolution reference")
    ap.add_argument("--limit", type=int, default=60, help="at most this many faces")
    ap.add_argument("--models-dir", default=None, help="default: $FACEGAN_MODELS/superres (~/.cache/facegan/superres)")
    args = ap.parse_args()
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    crops = face_crops(args.photos, args.min_face, args.side, args.limit)
    print(
        f"{len(crops)} faces from {args.photos} + skimage astronaut, {args.side} px crops; "
        f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads"
    )
    models_dir = superres_dir(args.models_dir)
    for factor in args.factors:
        low = [
            np.asarray(
                Image.fromarray(c).resize((c.shape[1] // factor, c.shape[0] // factor), Image.Resampling.BICUBIC)
            )
            for c in crops
        ]
        methods = {
            "bicubic": lambda im, side: np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.BICUBIC)),
            "lanczos": UPSCALERS["lanczos"](UpscaleConfig()),
        }
        for model, scales in MODELS.items():
            for scale in scales:
                if scale <= factor and factor % scale == 0 and (models_dir / f"{model}_x{scale}.pb").is_file():
                    cfg = UpscaleConfig(backend="opencv", model=model, scale=scale, models_dir=str(models_dir))
                    runs = factor // scale
                    methods[f"{model} x{scale}" + (f" ({runs} passes)" if runs > 1 else "")] = UPSCALERS["opencv"](cfg)
        quality: dict[str, tuple[float, float]] = {}
        times: dict[str, list[float]] = {name: [] for name in methods}
        for rnd in range(args.rounds):
            for name, up in methods.items():  # interleaved: every method once per round
                t0 = time.perf_counter()
                outs = [up(lr, hr.shape[0]) for lr, hr in zip(low, crops, strict=True)]
                times[name].append(time.perf_counter() - t0)
                if rnd == 0:
                    ys = [(luminance(o), luminance(hr)) for o, hr in zip(outs, crops, strict=True)]
                    quality[name] = (
                        float(np.mean([peak_signal_noise_ratio(t, o, data_range=255) for o, t in ys])),
                        float(np.mean([structural_similarity(t, o, data_range=255) for o, t in ys])),
                    )
        best = max((n for n in methods if n not in ("bicubic", "lanczos")), key=lambda n: quality[n][0], default=None)
        print(f"\nx{factor} (downscaled by {factor}, upscaled back; PSNR/SSIM on Y, mean over {len(crops)} faces)")
        print("| method | PSNR (dB) | SSIM | images/s |\n|---|---|---|---|")
        for name in methods:
            rate = len(crops) / statistics.median(times[name])
            psnr, ssim = quality[name]
            print(f"| {name}{' (best)' if name == best else ''} | {psnr:.2f} | {ssim:.4f} | {rate:.1f} |")
        lanczos = quality["lanczos"][0]
        if best:
            print(
                f"best model {best}: {quality[best][0] - lanczos:+.2f} dB over Lanczos, "
                f"{quality[best][0] - quality['bicubic'][0]:+.2f} dB over bicubic"
            )


if __name__ == "__main__":
    main()
