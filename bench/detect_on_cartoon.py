"""Real face detectors scored on the generated cartoon set, whose boxes are known.

    python bench/detect_on_cartoon.py [--raw data/raw/cartoon] [--n 200] [--backends haar hog cnn]

Prints recall and precision at IoU 0.5 per backend (the default pipeline uses the ground-truth
`annotations` backend for cartoon faces; this shows what a photo detector would recover).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from facegan.config import DetectConfig
from facegan.preprocess.annotations import load_annotations
from facegan.preprocess.detect import run_detect
from facegan.preprocess.score import detection


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, default=Path("data/raw/cartoon"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--backends", nargs="+", default=["haar", "hog"])
    args = ap.parse_args()
    files = sorted((args.raw / "images").glob("*.png"))[: args.n]
    names = {f.name for f in files}
    truth = {k: v for k, v in load_annotations(args.raw / "annotations.json").items() if k in names}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        (raw / "images").mkdir(parents=True)
        for f in files:
            shutil.copy(f, raw / "images" / f.name)
        for backend in args.backends:
            run_detect(DetectConfig(backend=backend, multi_face="all", min_size=16), raw, Path(tmp) / backend, 2)
            print(backend, json.dumps(detection(truth, Path(tmp) / backend)))


if __name__ == "__main__":
    main()
