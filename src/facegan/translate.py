"""Stage `cyclegan`: unpaired face-to-face translation between two packed datasets (`cyclegan` params).

Trains `facegan.train.cyclegan.CycleTrainer` through the shared training loop (checkpoints, resume,
sample grids, losses.csv), then scores each direction: the Frechet distance (and KID) of A translated
to B against B's reference statistics, and the other way round, per extractor; next to each, the
distance of as many untranslated source images to the same statistics (what translation has to beat; none for
the attribute extractor, whose features each set's own classifier makes).
Writes data/cyclegan/model/ and data/cyclegan/metrics.json (DVC metrics) and tracks one MLflow run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facegan import io
from facegan.config import Params, ParamsError
from facegan.errors import StageInputMissing
from facegan.io import write_text
from facegan.layout import Layout

if TYPE_CHECKING:
    from facegan.evaluate.fid import FeatureStats
    from facegan.evaluate.run import Scorer

log = logging.getLogger(__name__)

OUT = Path("data") / "cyclegan"
WORK = Path("data") / "checkpoints" / "cyclegan"  # while training (see facegan.train.loop.Loop), not tracked
DIRECTIONS = {"a_to_b": ("ab", "a", "b"), "b_to_a": ("ba", "b", "a")}
OFF = (
    "The CycleGAN is off (cyclegan.enabled: false in params.yaml): nothing was trained. "
    "Set it to true and `dvc repro` runs it.\n"
)


def require_enabled(p: Params, where: str = "the params file") -> None:
    if not p.cyclegan.enabled:
        raise ParamsError(f"cyclegan.enabled is false in {where}: the CycleGAN is off, nothing to run")


def write_disabled(root: Path) -> None:
    """The stage's DVC outputs while cyclegan.enabled is false: model/DISABLED.txt and metrics.json saying so, so
    that `dvc repro` runs the rest of the pipeline (`facegan cyclegan` and the Prefect flow refuse instead)."""
    io.write_disabled(root / OUT / "model", OFF)
    write_text(root / OUT / "metrics.json", json.dumps({"enabled": False}, indent=1))


def scorers(p: Params, root: Path) -> dict[tuple[str, str], tuple[Scorer, FeatureStats | None]]:
    """(direction, extractor) -> the Scorer of translations into the direction's target, for every extractor
    available, and the source set's real statistics for the untranslated baseline (checked as the target's are;
    None for `attributes`: each set's attribute features come from its own classifier, another feature space).
    Built before training, so statistics that do not fit stop the stage before its hours of steps."""
    from facegan.evaluate.run import scorers_of

    names = {"a": p.cyclegan.a, "b": p.cyclegan.b}
    per_set = {}  # each set's Scorers: a direction's target, the other direction's source (its statistics checked)
    for d, name in names.items():
        at = Layout(root, name)
        per_set[d] = scorers_of(p.evaluate, at.stats, at.classifier, at.packed)
    out: dict[tuple[str, str], tuple[Scorer, FeatureStats | None]] = {}
    for direction, (_, src, dst) in DIRECTIONS.items():
        found, unavailable = per_set[dst]
        for name, scorer in found.items():
            source = per_set[src][0].get(name)
            out[(direction, name)] = (scorer, source.real if source and name != "attributes" else None)
        for name, why in unavailable.items():
            log.warning("extractor %s unavailable, %s not scored with it: %s", name, direction, why)
    return out


def untranslated(source: FeatureStats, target: FeatureStats, n: int, seed: int) -> float:
    """Frechet distance of n of the source set's real images (a seeded draw of its statistics' features) to the
    target's statistics: the baseline with as many images as the translations are scored on (the distance's upward
    bias depends on n: all of the source's would favour the baseline)."""
    from facegan.evaluate.fid import feature_stats, frechet_distance

    feats = source.features
    if n < len(feats):
        feats = feats[np.sort(np.random.default_rng(seed).choice(len(feats), n, replace=False))]
    ours = feature_stats(feats, warn_small=False)
    return frechet_distance(target.mu, target.sigma, ours.mu, ours.sigma)


def evaluate(
    trainer, p: Params, root: Path, scoring: dict[tuple[str, str], tuple[Scorer, FeatureStats | None]]
) -> dict:
    """Per direction and extractor: fd/kid of the translations vs the target, beside the untranslated baseline (as
    many of the source set's real images, from its refstats features: no real image is embedded again; null for
    `attributes`)."""
    from facegan.train.images import seeded_subset, to_uint8

    c = p.cyclegan
    images = {"a": trainer.images_a, "b": trainer.images_b}
    metrics: dict = {"a": c.a, "b": c.b, "num_samples": {}}
    for direction, (key, src, _) in DIRECTIONS.items():
        source = seeded_subset(images[src], c.num_samples, p.evaluate.seed)
        moved = to_uint8(trainer.translate(source, key))
        metrics["num_samples"][direction] = len(moved)
        for (towards, name), (scorer, real) in scoring.items():
            if towards != direction:
                continue
            score = scorer(moved, desc=f"{direction} ({name})")
            base = None
            if real is not None and real.n < len(moved):  # fewer real images: a baseline biased upwards, no score
                log.warning(
                    "%s %s: no untranslated baseline: the source's statistics hold %d images, fewer than the %d "
                    "translated (raise evaluate.max_real and run refstats, or lower cyclegan.num_samples)",
                    direction,
                    name,
                    real.n,
                    len(moved),
                )
            elif real is not None:
                base = untranslated(real, scorer.real, len(moved), p.evaluate.seed)
            metrics[direction] = {
                **metrics.get(direction, {}),
                f"fd_{name}": round(score["fd"], 6),
                f"kid_{name}": round(score["kid"], 8),
                f"fd_{name}_untranslated": None if base is None else round(base, 6),
            }
            log.info(
                "%s %s: Frechet distance %.4f (untranslated %s)",
                direction,
                name,
                score["fd"],
                "n/a" if base is None else f"{base:.4f}",
            )
    return metrics


def run(p: Params, root: Path, on_step=None, resume: bool = True) -> dict:
    """Train (or resume) the CycleGAN, write grids and metrics.json; returns the metrics. `on_step(losses, step)`
    gets every step's losses (the stage's tracker). Called through `facegan.chain.run_stage("cyclegan", a)`."""
    from facegan.data.packed import ZIP_NAME, packed_meta
    from facegan.io import sha256_file
    from facegan.provenance import code_hash
    from facegan.train.cyclegan import CycleTrainer
    from facegan.train.images import load_training_data
    from facegan.train.loop import Loop, held
    from facegan.train.stepper import runtime

    require_enabled(p)
    c = p.cyclegan
    for name in (c.a, c.b):
        if not (Layout(root, name).packed / ZIP_NAME).is_file():
            raise StageInputMissing(
                f"dataset {name!r} is not packed yet ({Layout(root, name).packed}): "
                f"run `dvc repro refstats@{name}` first"
            )
    for name in (c.a, c.b):
        packed = Layout(root, name).packed / ZIP_NAME
        size, want = packed_meta(packed).get("resolution"), p.dataset(name).pack.resolution
        if size != want:  # one set packed before its resolution changed: a traceback on the shapes, before
            raise StageInputMissing(
                f"dataset {name!r} is packed at {size} px ({packed}), and datasets.{name}.pack.resolution is {want} "
                f"now: pack it again, `facegan pack {name}` then `facegan refstats {name}` (or `dvc repro "
                f"refstats@{name}`)"
            )
    dist, device = runtime(c)
    with held(root / WORK, dist):
        (a, _, _), (b, _, _) = (
            load_training_data(Layout(root, n).packed, c.loader_threads, memory_budget_gb=c.memory_budget_gb / 2)
            for n in (c.a, c.b)
        )
        trainer = CycleTrainer(c, a, b, device, dist)
        log.info(
            "cyclegan %s <-> %s: %d / %d images at %dpx, %d steps, device %s",
            c.a,
            c.b,
            len(a),
            len(b),
            trainer.resolution,
            c.steps,
            device,
        )
        out = root / OUT
        loop = Loop(
            trainer, out / "model", c.steps, c.checkpoint_every, c.sample_every, desc="cyclegan", work=root / WORK
        )
        loop.extra["provenance"] = {
            "code": code_hash("cyclegan"),
            "data": " ".join(sha256_file(Layout(root, n).packed / ZIP_NAME) for n in (c.a, c.b)),
        }
        scoring = scorers(p, root)  # statistics that do not fit stop the stage here, before training
        if resume:
            loop.resume(stale="restart")
        result = loop.run(on_step=on_step)
        per_step = result.seconds_per_step  # None: resumed at the last step, nothing trained to time
        seconds = {} if per_step is None else {"seconds_per_step": round(per_step, 4)}
        metrics = evaluate(trainer, p, root, scoring) | seconds
        write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
