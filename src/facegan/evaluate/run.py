"""Stages `refstats` (real-image statistics, once per packed dataset) and `evaluate` (a checkpoint vs them)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from facegan.config import EvaluateConfig
from facegan.data.pack import ZIP_NAME, load_packed
from facegan.evaluate.classifier import accuracy, load_classifier, predict
from facegan.evaluate.extractors import make_extractor
from facegan.evaluate.fid import feature_stats, frechet_distance, kid, load_stats, save_stats
from facegan.evaluate.inception import WeightsUnavailable
from facegan.io import atomic_dir, sha256_file, write_text
from facegan.train.checkpoint import load_generator

log = logging.getLogger(__name__)

STATUS = "stats.json"


def _unavailable(name: str, err: Exception) -> dict:
    log.warning("EXTRACTOR %r UNAVAILABLE - its Frechet distance is skipped, the run goes on without it. %s", name, err)
    return {"status": "unavailable", "reason": str(err)}


def run_refstats(cfg: EvaluateConfig, packed: Path, dst: Path) -> dict:
    """Feature statistics of (up to cfg.max_real) real packed images, per extractor, into dst/<name>.npz."""
    zip_path = packed / ZIP_NAME
    images, _, meta = load_packed(zip_path, limit=cfg.max_real)
    digest = sha256_file(zip_path)
    status: dict = {"dataset_sha256": digest, "resolution": meta["resolution"], "extractors": {}}
    with atomic_dir(dst) as tmp:
        for name in cfg.extractors:
            try:
                extractor = make_extractor(name, cfg)
            except WeightsUnavailable as e:
                status["extractors"][name] = _unavailable(name, e)
                continue
            stats = feature_stats(extractor(images, desc=f"real features ({name})"),
                                  extractor=name, mode="legacy", dataset_sha256=digest)
            save_stats(tmp / f"{name}.npz", stats)
            status["extractors"][name] = {"status": "ok", "n": stats.n, "dims": int(stats.mu.shape[0])}
        write_text(tmp / STATUS, json.dumps(status, indent=1))
    if not any(v["status"] == "ok" for v in status["extractors"].values()):
        raise RuntimeError(f"no feature extractor is available ({', '.join(cfg.extractors)}); nothing to evaluate")
    return status


def generate(checkpoint: Path, n: int, seed: int, packed: Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """n images (NxHxWx3 uint8) from a checkpoint, noise fixed by `seed`; conditional models get
    label rows drawn from the packed dataset (the real joint distribution). Returns (images, labels)."""
    from facegan.sample import latents, render

    g, cfg, state = load_generator(checkpoint)
    pool = None
    if state.get("label_dims"):
        if packed is None:
            raise ValueError("a conditional checkpoint needs the packed dataset to draw labels from")
        _, labels, _ = load_packed(packed / ZIP_NAME)
        pool = torch.from_numpy(labels)
    z, y = latents(cfg.z_dim, n, seed, pool)
    return render(g, z, y), (y.numpy() if y is not None else None)


def run_evaluate(cfg: EvaluateConfig, checkpoint: Path, packed: Path, stats_dir: Path, dst: Path,
                 classifier_dir: Path | None = None) -> dict:
    """Frechet distance (and KID) of generated images to the real statistics, for every available
    extractor; for conditional models also the attribute accuracy of the generated images."""
    status = json.loads((stats_dir / STATUS).read_text(encoding="utf-8"))
    fake, fake_labels = generate(checkpoint, cfg.num_samples, cfg.seed, packed)
    metrics: dict = {"num_samples": cfg.num_samples, "extractors": {}}
    loaded = load_classifier(classifier_dir) if classifier_dir and fake_labels is not None else None
    if loaded:
        net, info = loaded
        acc = accuracy(predict(net, fake), fake_labels, info["label_names"])
        metrics["attr_acc"] = acc
        metrics["attr_acc_mean"] = round(float(np.mean(list(acc.values()))), 4)
        metrics["attr_acc_real"] = info["val_accuracy"]
        log.info("attribute accuracy of generated images: %s (classifier on held-out real: %s)", acc, info["val_accuracy"])
    for name in cfg.extractors:
        ref = status["extractors"].get(name)
        if ref is None:
            raise ValueError(f"extractor {name!r} has no reference statistics in {stats_dir}: re-run refstats")
        if ref["status"] != "ok":
            metrics["extractors"][name] = ref
            metrics[f"fd_{name}"] = None
            continue
        real = load_stats(stats_dir / f"{name}.npz")
        extractor = make_extractor(name, cfg)
        stats = feature_stats(extractor(fake, desc=f"generated features ({name})"), extractor=name, mode="legacy")
        if stats.meta["mode"] != real.meta["mode"]:
            raise ValueError(f"statistics of different modes: {stats.meta['mode']} vs {real.meta['mode']}")
        fd = frechet_distance(real.mu, real.sigma, stats.mu, stats.sigma)
        kid_mean, kid_std = kid(real.features, stats.features, seed=cfg.seed)
        metrics[f"fd_{name}"] = round(fd, 6)
        metrics[f"kid_{name}"] = round(kid_mean, 8)
        metrics["extractors"][name] = {"status": "ok", "n_real": real.n, "n_fake": stats.n, "mode": "legacy",
                                       "kid_std": round(kid_std, 8), "dataset_sha256": real.meta.get("dataset_sha256")}
        log.info("Frechet distance (%s): %.4f   KID: %.6f +- %.6f", name, fd, kid_mean, kid_std)
    with atomic_dir(dst) as tmp:
        write_text(tmp / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
