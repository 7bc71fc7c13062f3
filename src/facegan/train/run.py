"""`run_train`: train `train.model` on a packed dataset — the trainer of its spec, stepped by `Loop`, with the
in-training Frechet distance (fid.csv, best.pt) when reference statistics are given."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facegan.config import TrainConfig
from facegan.data.packed import ZIP_NAME
from facegan.io import sha256_file, write_text
from facegan.provenance import code_hash
from facegan.train.gan import GANTrainer
from facegan.train.images import load_training_data, subset
from facegan.train.loop import Loop, TrainResult, held, to_csv
from facegan.train.stepper import interned, runtime
from facegan.train.trainer import ModelTrainer
from facegan.train.vae import VAETrainer

log = logging.getLogger(__name__)

BEST = "best.pt"
FID_FIELDS = ["step", "fd", "kid"]
TRAINERS: dict[str, type[ModelTrainer]] = {"gan": GANTrainer, "vae": VAETrainer}  # ModelSpec.trainer -> class


def make_trainer(cfg: TrainConfig, *args: Any, **kwargs: Any) -> ModelTrainer:
    """The trainer of cfg.model's spec (`GANTrainer` for the GANs, `VAETrainer` for the VAE)."""
    return TRAINERS[cfg.spec.trainer](cfg, *args, **kwargs)


def _fid_setting(config: dict) -> tuple:
    """(extractor, sample count) of a train config's in-training distance."""
    return config.get("fid_extractor"), config.get("fid_samples")


class FIDWatch:
    """In-training Frechet distance: every `fid_every` steps (and at the last), `fid_samples` images at fixed
    noise are scored (the same z and, for a style-based G, the same per-image noise maps each time); fid.csv
    keeps the curve and best.pt the checkpoint with the lowest distance."""

    def __init__(
        self,
        cfg: TrainConfig,
        loop: Loop,
        scorer: Callable[..., dict],
        history: list[dict[str, float]],
        on_step: Callable[[dict, int], None] | None,
    ):
        from facegan.sample import latents

        self.cfg, self.loop, self.scorer, self.history, self.on_step = cfg, loop, scorer, history, on_step
        self.seed = cfg.seed + 7_777  # the curve's own draws, apart from training's
        self.z, self.y = latents(cfg.z_dim, cfg.fid_samples, self.seed, loop.trainer.labels)

    def __call__(self, done: int) -> None:
        from facegan.sample import render

        if done % self.cfg.fid_every and done != self.cfg.steps:
            return
        images = render(self.loop.trainer.sampler, self.z, self.y, noise_seed=self.seed)
        score = self.scorer(images, desc=f"FID @ step {done}")
        self.history.append({"step": done, "fd": score["fd"], "kid": score["kid"]})
        if self.on_step:
            self.on_step({"fid_train": score["fd"], "kid_train": score["kid"]}, done)
        best = min(r["fd"] for r in self.history)
        log.info("step %d: Frechet distance %.4f (best %.4f)", done, score["fd"], best)
        if score["fd"] <= best:
            self.loop.checkpoint(self.loop.work / BEST)
        write_text(self.loop.work / "fid.csv", to_csv(self.history, FID_FIELDS))


def run_train(
    cfg: TrainConfig,
    packed: Path,
    dst: Path,
    resume: bool = True,
    scorer: Callable[[np.ndarray], dict] | None = None,
    on_step: Callable[[dict, int], None] | None = None,
    work: Path | None = None,
    stale: str = "raise",
) -> TrainResult:
    """Train cfg.model on packed/dataset.zip; write checkpoint, sample grids and loss log to dst.

    With `work`, training writes there and copies to dst at the end (see Loop); a checkpoint found there that
    other params, code or data made raises (`stale="raise"`) or is replaced by a fresh start (`"restart"`).

    With cfg.fid_every and a `scorer` (see facegan.evaluate.run.Scorer), the Frechet distance of
    cfg.fid_samples images at fixed latents is measured every cfg.fid_every steps (fid.csv) and the
    checkpoint with the lowest one is kept as best.pt. `on_step(values, step)` receives the losses
    of every step and the in-training FID (e.g. a tracker's log_metrics).
    """
    dist, device = runtime(cfg)
    if unread := cfg.unread():
        log.warning(
            "model %s does not read %s: %s left as is",
            cfg.model,
            ", ".join(f"train.{n} ({getattr(cfg, n)})" for n in unread),
            "it is" if len(unread) == 1 else "they are",
        )
    if note := cfg.loss_note():
        log.warning("%s", note)
    with held(work or dst, dist):  # before the data is loaded
        images, labels, meta = load_training_data(
            packed,
            cfg.loader_threads,
            pin=device.type == "cuda",
            memory_budget_gb=cfg.memory_budget_gb,
            copies=dist.local_world,
        )
        if cfg.max_images is not None and cfg.max_images < len(images):
            images, labels = subset(images, labels, cfg.max_images, cfg.subset_seed)
        elif cfg.max_images is not None:
            log.warning(  # transfer.target_images, in the transfer study's runs
                "train.max_images %d: the set has %d images, all of them are used", cfg.max_images, len(images)
            )
        names = meta.get("label_names") or []
        values = meta.get("label_values") or {}
        trainer = make_trainer(cfg, images, labels, [len(values[n]) for n in names], device, dist, names, values)
        log.info(
            "training %s (%s) on %d images at %dx%d, %d steps, device %s",
            cfg.model,
            f"{cfg.loss} loss" if cfg.spec.adversarial else "its own loss",
            len(images),
            trainer.resolution,
            trainer.resolution,
            cfg.steps,
            device,
        )
        loop = Loop(trainer, dst, cfg.steps, cfg.checkpoint_every, cfg.sample_every, work=work)
        loop.extra["provenance"] = {
            "code": code_hash("train"),  # what DVC's train stage depends on: an edit of report.py keeps it
            "data": sha256_file(packed / ZIP_NAME),
            # the checkpoint it starts from: retrained at the same path, the fine-tune is another run
            **({"pretrained": sha256_file(Path(cfg.init_from))} if cfg.init_from else {}),
        }
        state = loop.resume(stale) if resume else None
        fid_history: list[dict[str, float]] = interned(state.get("fid", [])) if state else []
        then = _fid_setting(state["config"] if state else {})
        more = loop.trainer.step_done < cfg.steps  # nothing to train: the curve stays the one of its steps
        if more and fid_history and then != (now := _fid_setting(cfg.model_dump())):
            # resume-neutral for the weights, not for the curve: distances of another extractor or sample count
            # are no points of this one, nor candidates for best.pt
            log.warning(
                "the in-training distance was measured with %s and is %s now: its curve (fid.csv) and best.pt "
                "start again from this step",
                *(f"{e} on {n} samples" for e, n in (then, now)),
            )
            fid_history = []
            if loop.trainer.dist.main:  # the next point writes both again; a stop before it leaves none stale
                for stale_file in (loop.work / "fid.csv", loop.work / BEST):
                    stale_file.unlink(missing_ok=True)
        loop.extra["fid"] = fid_history
        if cfg.fid_every and not scorer:
            log.warning("train.fid_every is set but no reference statistics were given: no FID during training")
        watch = FIDWatch(cfg, loop, scorer, fid_history, on_step) if cfg.fid_every and scorer else None
        return loop.run(on_step, watch)
