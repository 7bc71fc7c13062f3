"""The training loop: one loop for every trainer (GANs, the VAE, CycleGAN), and `run_train`.

Randomness per step (batches, flips, noise, fake labels, augmentations) is derived from (seed, step) alone,
so a run resumed from any checkpoint continues exactly as the uninterrupted run would have (bitwise on CPU).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from facegan.config import TrainConfig
from facegan.errors import CheckpointError
from facegan.io import write_text
from facegan.train.checkpoint import load_checkpoint, save_checkpoint
from facegan.train.dist import setup, teardown
from facegan.train.gan import GANTrainer
from facegan.train.images import load_training_data
from facegan.train.stepper import apply_determinism, resolve_device
from facegan.train.trainer import ModelTrainer
from facegan.train.vae import VAETrainer

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
FID_FIELDS = ["step", "fd", "kid"]
TRAINERS: dict[str, type[ModelTrainer]] = {"gan": GANTrainer, "vae": VAETrainer}  # ModelSpec.trainer -> class


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    steps: int
    seconds: float
    losses: list[dict[str, float]]


def to_csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def make_trainer(cfg: TrainConfig, *args: Any, **kwargs: Any) -> ModelTrainer:
    """The trainer of cfg.model's spec (`GANTrainer` for the GANs, `VAETrainer` for the VAE)."""
    return TRAINERS[cfg.spec.trainer](cfg, *args, **kwargs)


class Loop:
    """Resume from dst/checkpoint.pt, step with a progress bar, sample grids every `sample_every` steps,
    checkpoints every `checkpoint_every` steps (and on a non-finite loss), losses.csv at the end. `extra` is
    saved with every checkpoint (e.g. the in-training FID history)."""

    def __init__(self, trainer, dst: Path, steps: int, checkpoint_every: int, sample_every: int, desc: str = "train"):
        self.trainer, self.dst, self.steps, self.desc = trainer, dst, steps, desc
        self.checkpoint_every, self.sample_every = checkpoint_every, sample_every
        self.extra: dict = {}

    def checkpoint(self, path: Path | None = None) -> None:
        save_checkpoint(path or self.dst / CHECKPOINT, {**self.trainer.state_dict(), **self.extra})

    def resume(self) -> dict | None:
        """Load dst/checkpoint.pt into the trainer when it exists; returns its state."""
        path = self.dst / CHECKPOINT
        if not path.is_file():
            return None
        state = load_checkpoint(path)
        try:
            self.trainer.load_state_dict(state)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
        log.info("resumed from %s at step %d", path, self.trainer.step_done)
        return state

    def run(self, on_step: Callable[[dict, int], None] | None = None,
            after_step: Callable[[int], None] | None = None) -> TrainResult:
        """Train to `steps`; `on_step(losses, step)` gets every step's losses (e.g. a tracker's log_metrics),
        `after_step(step)` runs after each step on the main process, before a due checkpoint."""
        t, main = self.trainer, self.trainer.dist.main  # under DDP only rank 0 writes files and reports
        start = t.step_done
        t0 = time.perf_counter()
        bar = tqdm(range(start, self.steps), initial=start, total=self.steps, desc=self.desc, unit="step",
                   dynamic_ncols=True, disable=not main)
        try:
            for _ in bar:
                try:
                    row = t.step()
                except FloatingPointError:
                    if main:
                        self.checkpoint()
                    raise
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.startswith("loss")}, refresh=False)
                done = t.step_done
                if not main:
                    continue
                if on_step:
                    on_step(row, done)
                if done % self.sample_every == 0 or done == self.steps:
                    t.write_samples(self.dst / "progress" / f"step{done:07d}.png")
                if after_step:
                    after_step(done)
                if done % self.checkpoint_every == 0 or done == self.steps:
                    self.checkpoint()
            bar.close()
            seconds = time.perf_counter() - t0
            if main:
                t.write_samples(self.dst / "samples.png", final=True)
                write_text(self.dst / "losses.csv", to_csv(t.history, t.fields))
            log.info("trained %d steps in %.1f s (%.3f s/step)", self.steps - start, seconds,
                     seconds / max(1, self.steps - start))
        finally:
            teardown()
        return TrainResult(self.dst / CHECKPOINT, self.steps, seconds, t.history)


class FIDWatch:
    """In-training Frechet distance: every `fid_every` steps (and at the last), `fid_samples` images at fixed
    noise are scored; fid.csv keeps the curve and best.pt the checkpoint with the lowest distance."""

    def __init__(self, cfg: TrainConfig, loop: Loop, scorer: Callable[..., dict], history: list[dict[str, float]],
                 on_step: Callable[[dict, int], None] | None):
        from facegan.sample import latents

        self.cfg, self.loop, self.scorer, self.history, self.on_step = cfg, loop, scorer, history, on_step
        self.z, self.y = latents(cfg.z_dim, cfg.fid_samples, cfg.seed + 7_777, loop.trainer.labels)

    def __call__(self, done: int) -> None:
        from facegan.sample import render

        if done % self.cfg.fid_every and done != self.cfg.steps:
            return
        score = self.scorer(render(self.loop.trainer.sampler, self.z, self.y), desc=f"FID @ step {done}")
        self.history.append({"step": done, "fd": score["fd"], "kid": score["kid"]})
        if self.on_step:
            self.on_step({"fid_train": score["fd"], "kid_train": score["kid"]}, done)
        best = min(r["fd"] for r in self.history)
        log.info("step %d: Frechet distance %.4f (best %.4f)", done, score["fd"], best)
        if score["fd"] <= best:
            self.loop.checkpoint(self.loop.dst / BEST)
        write_text(self.loop.dst / "fid.csv", to_csv(self.history, FID_FIELDS))


def run_train(cfg: TrainConfig, packed: Path, dst: Path, resume: bool = True,
              scorer: Callable[[np.ndarray], dict] | None = None,
              on_step: Callable[[dict, int], None] | None = None) -> TrainResult:
    """Train cfg.model on packed/dataset.zip; write checkpoint, sample grids and loss log to dst.

    With cfg.fid_every and a `scorer` (see facegan.evaluate.run.Scorer), the Frechet distance of
    cfg.fid_samples images at fixed noise is measured every cfg.fid_every steps (fid.csv) and the
    checkpoint with the lowest one is kept as best.pt. `on_step(values, step)` receives the losses
    of every step and the in-training FID (e.g. a tracker's log_metrics).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist, device_name = setup(cfg.device)
    device = resolve_device(device_name)
    apply_determinism(cfg.deterministic, device)
    images, labels, meta = load_training_data(packed, cfg.loader_threads, pin=device.type == "cuda")
    names = meta.get("label_names") or []
    values = meta.get("label_values") or {}
    trainer = make_trainer(cfg, images, labels, [len(values[n]) for n in names], device, dist, names, values)
    log.info("training %s (%s) on %d images at %dx%d, %d steps, device %s", cfg.model,
             f"{cfg.loss} loss" if cfg.spec.adversarial else "its own loss",
             len(images), trainer.resolution, trainer.resolution, cfg.steps, device)
    loop = Loop(trainer, dst, cfg.steps, cfg.checkpoint_every, cfg.sample_every)
    state = loop.resume() if resume else None
    fid_history: list[dict[str, float]] = list(state.get("fid", [])) if state else []
    loop.extra["fid"] = fid_history
    if cfg.fid_every and not scorer:
        log.warning("train.fid_every is set but no reference statistics were given: no FID during training")
    watch = FIDWatch(cfg, loop, scorer, fid_history, on_step) if cfg.fid_every and scorer else None
    return loop.run(on_step, watch)
