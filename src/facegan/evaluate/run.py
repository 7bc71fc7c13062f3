"""Stages `refstats` (real-image statistics, once per packed dataset) and `evaluate` (a checkpoint vs them).

`Scorer` is the one place that turns generated images into a Frechet distance and KID against a
dataset's statistics; the evaluate stage and FID-during-training both use it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from facegan.config import EvaluateConfig
from facegan.data.packed import ZIP_NAME, load_labels, load_packed, packed_meta, packed_shape
from facegan.errors import DamagedRecord, FaceganError, StageError, StageInputMissing
from facegan.evaluate.classifier import MODEL, AttributeNet, accuracy, load_classifier, predict
from facegan.evaluate.extractors import ExtractorUnavailable, make_extractor
from facegan.evaluate.fid import (
    REFSTATS_AGAIN,
    FeatureStats,
    extractors_of,
    feature_stats,
    frechet_distance,
    kid,
    kid_spread,
    load_stats,
    save_stats,
)
from facegan.io import atomic_dir, host_free, read_json, sha256_cached, sha256_file, write_text

log = logging.getLogger(__name__)

STATUS = "stats.json"


class StatsMismatch(FaceganError, ValueError):
    """Reference statistics that do not fit the evaluation asked for (another packed set, mode, evaluate.max_real
    or classifier; an extractor missing from them, or unavailable when they were made and available now)."""


def _classifier_sha256(classifier_dir: Path | None) -> str | None:
    path = classifier_dir / MODEL if classifier_dir else None
    return sha256_file(path) if path and path.is_file() else None


def _unavailable(name: str, err: Exception) -> dict:
    log.warning("EXTRACTOR %r UNAVAILABLE - its Frechet distance is skipped, the run goes on without it. %s", name, err)
    return {"status": "unavailable", "reason": host_free(str(err))}


def run_refstats(cfg: EvaluateConfig, packed: Path, dst: Path, classifier_dir: Path | None = None) -> dict:
    """Feature statistics of (up to cfg.max_real) real packed images, per extractor, into dst/<name>.npz."""
    zip_path = packed / ZIP_NAME
    images, _, _ = load_packed(zip_path, limit=cfg.max_real, seed=cfg.seed)  # a seeded subset of max_real
    drawn = len(images) < packed_shape(zip_path)[0]  # fewer than the set: the seed chose which
    digest = sha256_file(zip_path)
    status: dict = {
        "dataset_sha256": digest,
        "resolution": int(images.shape[1]),
        "mode": cfg.mode,
        "max_real": cfg.max_real,
        "seed": cfg.seed if drawn else None,
        "extractors": {},
    }
    with atomic_dir(dst) as tmp:
        for name in cfg.extractors:
            try:
                extractor = make_extractor(name, cfg, classifier_dir)
            except ExtractorUnavailable as e:
                status["extractors"][name] = _unavailable(name, e)
                continue
            stats = feature_stats(
                extractor(images, desc=f"real features ({name})"), extractor=name, mode=cfg.mode, dataset_sha256=digest
            )
            save_stats(tmp / f"{name}.npz", stats)
            status["extractors"][name] = {"status": "ok", "n": stats.n, "dims": int(stats.mu.shape[0])}
            if name == "attributes":  # its features are the classifier's: statistics of one classifier only
                status["extractors"][name]["classifier_sha256"] = _classifier_sha256(classifier_dir)
        write_text(tmp / STATUS, json.dumps(status, indent=1))
    if not any(v["status"] == "ok" for v in status["extractors"].values()):
        raise ExtractorUnavailable(
            f"no feature extractor is available ({', '.join(cfg.extractors)}); nothing to evaluate"
        )
    return status


def reference_stats(
    name: str, cfg: EvaluateConfig, stats_dir: Path, classifier_dir: Path | None = None, packed: Path | None = None
) -> FeatureStats:
    """One extractor's real statistics in `stats_dir`, checked: with `packed`, they must be of that packed set (its
    dataset.zip's sha256); mode, evaluate.max_real and, for `attributes`, the classifier must be theirs too: a
    StatsMismatch says to re-run refstats otherwise (ExtractorUnavailable: they were not made, the extractor does
    not run here)."""
    if not (stats_dir / STATUS).is_file():
        raise StageInputMissing(f"no reference statistics in {stats_dir}: run refstats first")
    status = read_json(stats_dir / STATUS, "a record of reference statistics", REFSTATS_AGAIN)
    ref = extractors_of(status, stats_dir / STATUS, REFSTATS_AGAIN).get(name)
    if ref is None:
        raise StatsMismatch(
            f"extractor {name!r} has no reference statistics in {stats_dir}: add it to "
            "evaluate.extractors and re-run refstats"
        )
    if ref["status"] != "ok":  # unavailable when they were made: still so, or installed since
        if why := _why_unavailable(name, cfg, classifier_dir):
            if host_free(why) != ref["reason"]:  # e.g. a weights path set since: today's reason is the one to fix
                log.warning("extractor %r: unavailable when the statistics were made, and now: %s", name, why)
            raise ExtractorUnavailable(ref["reason"])  # as recorded (metrics.json keeps the statistics' words)
        raise StatsMismatch(
            f"extractor {name!r} was unavailable when the statistics in {stats_dir} were made and is available "
            f"now: {REFSTATS_AGAIN}"
        )
    if packed is not None and not (packed / ZIP_NAME).is_file():  # not "another packed set": none
        raise StageInputMissing(f"{packed / ZIP_NAME}: no packed dataset there: run the `pack` stage first")
    if packed is not None and status.get("dataset_sha256") != sha256_cached(packed / ZIP_NAME):  # each Scorer asks
        raise StatsMismatch(
            f"the reference statistics in {stats_dir} are of another packed set than {packed / ZIP_NAME} "
            f"(it changed since they were made): {REFSTATS_AGAIN}"
        )
    for key in ("max_real", "seed"):  # which real images they are of (seed None: all, none drawn)
        if status.get(key, getattr(cfg, key)) not in (None, getattr(cfg, key)):
            raise StatsMismatch(
                f"the reference statistics in {stats_dir} are of evaluate.{key} {status[key]}, "
                f"not {getattr(cfg, key)}: {REFSTATS_AGAIN}"
            )
    made_with = ref.get("classifier_sha256", "any")  # statistics made before it was recorded: any
    if name == "attributes" and made_with not in ("any", _classifier_sha256(classifier_dir)):
        raise StatsMismatch(f"the attribute statistics in {stats_dir} are of another classifier: {REFSTATS_AGAIN}")
    if not (stats_dir / f"{name}.npz").is_file():
        raise DamagedRecord(f"{stats_dir / STATUS} lists {name}.npz, which is not there: {REFSTATS_AGAIN}")
    real = load_stats(stats_dir / f"{name}.npz")
    if real.meta.get("mode") != cfg.mode:
        raise StatsMismatch(
            f"reference statistics in {stats_dir} were computed in mode {real.meta.get('mode')!r}, "
            f"not {cfg.mode!r}: statistics of different modes are not comparable (re-run refstats)"
        )
    return real


class Scorer:
    """Frechet distance and KID of generated images against one extractor's real statistics, checked by
    `reference_stats`."""

    def __init__(
        self,
        name: str,
        cfg: EvaluateConfig,
        stats_dir: Path,
        classifier_dir: Path | None = None,
        packed: Path | None = None,
    ):
        self.name, self.cfg = name, cfg
        self.real = reference_stats(name, cfg, stats_dir, classifier_dir, packed)
        self.extractor = make_extractor(name, cfg, classifier_dir)
        self.calls = 0

    def __call__(self, images: np.ndarray, desc: str = "") -> dict:
        stats = feature_stats(
            self.extractor(images, desc=desc or f"generated features ({self.name})"),
            warn_small=self.calls == 0,
            extractor=self.name,
            mode=self.cfg.mode,
        )
        self.calls += 1
        fd = frechet_distance(self.real.mu, self.real.sigma, stats.mu, stats.sigma)
        kid_mean, kid_std = kid(self.real.features, stats.features, seed=self.cfg.seed)
        return {"fd": fd, "kid": kid_mean, "kid_std": kid_std, "n_real": self.real.n, "n_fake": stats.n}


def scorers_of(
    cfg: EvaluateConfig, stats_dir: Path, classifier_dir: Path | None, packed: Path | None
) -> tuple[dict[str, Scorer], dict[str, str]]:
    """The Scorer of each extractor of cfg.extractors that runs here, and why each other one does not; statistics
    that do not fit raise here, before any image is generated or any step trained."""
    scorers: dict[str, Scorer] = {}
    unavailable: dict[str, str] = {}
    for name in cfg.extractors:
        try:
            scorers[name] = Scorer(name, cfg, stats_dir, classifier_dir, packed)
        except ExtractorUnavailable as e:
            _unavailable(name, e)  # said loudly, as refstats says it
            unavailable[name] = str(e)
    return scorers, unavailable


def _why_unavailable(name: str, cfg: EvaluateConfig, classifier_dir: Path | None) -> str | None:
    """Why extractor `name` would not run here now (None: it would), without downloading anything (Inception's
    weight file is looked for first: make_extractor would try to fetch a missing one)."""
    if name == "inception":
        from facegan.evaluate.inception import WeightsUnavailable, find_weights

        try:
            find_weights(cfg.inception_weights, download=False)
        except WeightsUnavailable as e:
            return str(e)
    try:
        make_extractor(name, cfg, classifier_dir)
    except ExtractorUnavailable as e:
        return str(e)
    return None


def label_pool(packed: Path) -> torch.Tensor | None:
    """All label rows of a packed dataset (the real joint distribution), or None when unlabelled."""
    labels = load_labels(packed / ZIP_NAME)
    return torch.from_numpy(labels) if labels is not None else None


def generate(
    g: torch.nn.Module, z_dim: int, conditional: bool, n: int, seed: int, packed: Path | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """n images (NxHxWx3 uint8) from a loaded generator, noise fixed by `seed` (a style-based G's noise maps drawn
    for each image, as the reference metrics draw them); a conditional model gets label rows drawn from the packed
    dataset. Returns (images, labels or None)."""
    from facegan.sample import latents, render

    pool = None
    if conditional:
        if packed is None:
            raise StageInputMissing("a conditional checkpoint needs the packed dataset to draw labels from")
        pool = label_pool(packed)
    z, y = latents(z_dim, n, seed, pool)
    return render(g, z, y, noise_seed=seed), (y.numpy() if y is not None else None)


def _check_trained_on(state: dict, checkpoint: Path, packed: Path) -> None:
    """StatsMismatch when the checkpoint records another packed set than `packed` (packed again since: at another
    resolution, with other labels or images). The fakes would be scored against real images the model never saw,
    or fail on labels it lacks. A checkpoint that records none (made by hand, an older facegan) is not compared."""
    made_from = (state.get("provenance") or {}).get("data")
    zip_path = packed / ZIP_NAME
    if made_from and zip_path.is_file() and made_from != sha256_cached(zip_path):  # the Scorers' hash of it
        raise StatsMismatch(
            f"{checkpoint} was trained on another {ZIP_NAME} than {zip_path} has now (the set was packed again "
            "since): train again before evaluating"
        )


def _classifier_of(classifier_dir: Path, packed: Path) -> tuple[AttributeNet, dict, dict] | None:
    """The attribute classifier (net, its state, the packed set's meta), or None when there is none; StatsMismatch
    when it was trained on other labels than the packed set has (the labels drawn for the fakes are the set's)."""
    loaded = load_classifier(classifier_dir)
    if loaded is None:
        return None
    net, info = loaded
    meta = packed_meta(packed / ZIP_NAME)
    if (info["label_names"], info["label_values"]) != (meta["label_names"], meta["label_values"]):
        raise StatsMismatch(
            f"the attribute classifier in {classifier_dir} was trained on other labels "
            f"({', '.join(info['label_names'])}) than {packed / ZIP_NAME} has ({', '.join(meta['label_names'])}): "
            "re-run the classifier stage"
        )
    if info.get("resolution") not in (None, meta.get("resolution")):  # its net read the fakes at the wrong size
        raise StatsMismatch(
            f"the attribute classifier in {classifier_dir} was trained on {info['resolution']} px images, and "
            f"{packed / ZIP_NAME} is packed at {meta.get('resolution')} px now: re-run the classifier stage"
        )
    return net, info, meta


def run_evaluate(
    cfg: EvaluateConfig, checkpoint: Path, packed: Path, stats_dir: Path, dst: Path, classifier_dir: Path | None = None
) -> dict:
    """Frechet distance (and KID) of generated images to the real statistics, for every available
    extractor; for conditional models also the attribute accuracy of the generated images."""
    from facegan.train.checkpoint import load_generator

    scorers, unavailable = scorers_of(cfg, stats_dir, classifier_dir, packed)  # before any image is generated
    if not scorers:  # a metrics.json of nulls, exit 0, and `report` wrote it as a result
        raise ExtractorUnavailable(
            f"no feature extractor is available ({', '.join(cfg.extractors)}); nothing to evaluate: "
            + "; ".join(f"{k}: {why}" for k, why in unavailable.items())
        )
    metrics: dict = {"num_samples": cfg.num_samples, "mode": cfg.mode, "extractors": {}}
    for extractor, why in unavailable.items():
        metrics["extractors"][extractor] = {"status": "unavailable", "reason": why}
        metrics[f"fd_{extractor}"] = None
    scored = sha256_cached(checkpoint)  # the model these numbers are of
    g, gcfg, state = load_generator(checkpoint)
    _check_trained_on(state, checkpoint, packed)
    conditional = bool(state.get("label_dims"))
    # a stale classifier stops the stage here, before the generation it would waste
    classifier = _classifier_of(classifier_dir, packed) if classifier_dir and conditional else None
    fake, fake_labels = generate(g, gcfg.z_dim, conditional, cfg.num_samples, cfg.seed, packed)
    if classifier and fake_labels is not None:
        net, info, meta = classifier
        acc = accuracy(predict(net, fake), fake_labels, info["label_names"])
        metrics["attr_acc"] = acc
        # attributes of one value are right whatever the image: not in the mean
        told = [a for n, a in acc.items() if len(meta["label_values"][n]) > 1]
        metrics["attr_acc_mean"] = round(float(np.mean(told)), 4) if told else None
        metrics["attr_acc_real"] = info["val_accuracy"]
        log.info(
            "attribute accuracy of generated images: %s (classifier on held-out real: %s)", acc, info["val_accuracy"]
        )
    for name, scorer in scorers.items():
        score = scorer(fake)
        metrics[f"fd_{name}"] = round(score["fd"], 6)
        metrics[f"kid_{name}"] = round(score["kid"], 8)
        metrics["extractors"][name] = {
            "status": "ok",
            "n_real": score["n_real"],
            "n_fake": score["n_fake"],
            "mode": cfg.mode,
            "kid_std": None if score["kid_std"] is None else round(score["kid_std"], 8),
        }
        log.info(
            "Frechet distance (%s, %s): %.4f   KID: %.6f +- %s",
            name,
            cfg.mode,
            score["fd"],
            score["kid"],
            kid_spread(score["kid_std"]),
        )
    if sha256_cached(checkpoint) != scored:  # a training wrote it meanwhile: these numbers are the old model's
        raise StageError(f"{checkpoint} changed while it was scored (a training wrote it): run evaluate again")
    with atomic_dir(dst) as tmp:
        write_text(tmp / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
