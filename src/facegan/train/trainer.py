"""The trainer of a registered model: its G (the sampler, z -> image) and second net D (discriminator or
encoder) built from `facegan.models`, on one packed dataset, with optimisers, EMA and the checkpoint state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from facegan.config import TrainConfig
from facegan.device import to_device
from facegan.errors import CheckpointAhead
from facegan.models import build_models
from facegan.train.dist import Dist
from facegan.train.ema import EMA, STANDING_BATCHES, standing_stats
from facegan.train.stepper import Stepper, load_optimizer


class ModelTrainer(Stepper):
    """G and D of `cfg.model` trained on `images`; subclasses implement `_step()`."""

    def __init__(
        self,
        cfg: TrainConfig,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        label_dims: list[int],
        device: torch.device,
        dist: Dist = Dist(),
        label_names: list[str] | None = None,
        label_values: dict[str, list[str]] | None = None,
    ):
        super().__init__(cfg, device, dist, batch_size=cfg.batch_size, mirror=cfg.mirror)
        self.cfg = cfg
        self.images = images  # (N, 3, R, R) uint8, on CPU (or pinned)
        self.labels = labels if cfg.conditional else None
        self.label_dims = label_dims if cfg.conditional else []
        self.label_names, self.label_values = label_names or [], label_values or {}
        self.resolution = images.shape[-1]
        torch.manual_seed(cfg.seed)
        g, d = build_models(cfg, self.resolution, self.label_dims)
        self.g, self.d = g.to(device).train(), d.to(device).train()
        self.ema = EMA(self.g, cfg.ema, cfg.ema_rampup) if cfg.ema > 0 else None
        self._stats_at: int | None = None  # the step whose EMA weights the EMA net's BatchNorm statistics are of
        self._prepare()
        self.channels_last(self.g, self.d, *([self.ema.model] if self.ema else []))  # EMA as G: one multi-tensor lerp
        # *_run: first-order passes (compiled when train.compile is set); *_reg: passes differentiated twice
        self.g_run, self.g_reg = self.wrap(self.g, broadcast_buffers=False)
        self.d_run, self.d_reg = self.wrap(self.d)
        self.opt_g, self.opt_d = self._optimizers()

    def _prepare(self) -> None:
        """Changes to the fresh networks before they are wrapped and optimised (transfer, FreezeD)."""

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return self._optimizer(self.g, self.cfg.lr_g), self._optimizer(self.d, self.cfg.lr_d)

    def _optimizer(self, module: nn.Module, lr: float, lazy_every: int = 0) -> torch.optim.Optimizer:
        """Adam/RMSprop over the trainable parameters; lazy regularisation rescales lr and betas (StyleGAN2)."""
        params = [p for p in module.parameters() if p.requires_grad]
        c = lazy_every / (lazy_every + 1) if lazy_every else 1.0
        if self.cfg.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr * c, capturable=self.graphed)
        return self.adam(params, lr * c, (self.cfg.beta1**c, self.cfg.beta2**c))

    @property
    def sampler(self) -> nn.Module:
        """The generator to sample from: the EMA copy when enabled, with BatchNorm statistics of its own weights
        (`standing_stats`, made once per step it is asked for: samples, in-training FID, checkpoints)."""
        if not self.ema:
            return self.g
        if self._stats_at != self.step_done:
            standing_stats(self.ema.model, self._standing_inputs, STANDING_BATCHES)
            self._stats_at = self.step_done
        return self.ema.model

    def _standing_inputs(self, i: int) -> tuple[torch.Tensor, ...]:
        """Batch `i` of G's inputs for `standing_stats`: prior noise (and label rows of the set), from a generator of
        their own, so training's random streams are untouched."""
        from facegan.sample import latents

        z, y = latents(self.cfg.z_dim, self.cfg.batch_size, self.cfg.seed * 1_000 + i, self.labels)
        return (to_device(z, self.device),) if y is None else (to_device(z, self.device), to_device(y, self.device))

    def real(self, index: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Batch `index` of real images (and their labels for conditional models)."""
        x, idx = self.batch(self.images, index, gen, self.cfg.seed)
        y = to_device(self.labels[idx], self.device) if self.labels is not None else None
        return x, y

    def after_step(self) -> None:
        """G's buffers averaged over processes, then its EMA updated."""
        if self.dist.active:
            with torch.no_grad():
                for buf in self.g.buffers():
                    if buf.is_floating_point():
                        buf.copy_(self.dist.mean(buf))
        if self.ema:
            self.ema.update(self.g, self.step_done)  # the step being made (step_done counts it after this)

    def write_samples(self, path: Path, final: bool = False) -> None:
        from facegan.sample import write_training_samples

        write_training_samples(self, path, final, self.label_names, self.label_values)

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.state(),
            "G": self.g.state_dict(),
            "D": self.d.state_dict(),
            "G_ema": self.sampler.state_dict() if self.ema else None,  # with its own BatchNorm statistics
            "opt_G": self.opt_g.state_dict(),
            "opt_D": self.opt_d.state_dict(),
            "config": self.cfg.model_dump(mode="json"),
            "resolution": self.resolution,
            "label_dims": self.label_dims,
            "label_names": self.label_names,
            "label_values": self.label_values,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Every check first, then the load: a refused checkpoint leaves the trainer as it was (a stage then starts
        fresh with the fresh nets, not with half of the checkpoint's)."""
        self.warn_world(state)
        self.cfg.check_resumable(state["config"], "train")
        if state["step"] > self.cfg.steps:
            raise CheckpointAhead(
                f"the checkpoint is at step {state['step']}, past train.steps {self.cfg.steps}: "
                "raise train.steps or remove the checkpoint",
                state["step"],
            )
        self.g.load_state_dict(state["G"])
        self.d.load_state_dict(state["D"])
        if self.ema:
            self.ema.model.load_state_dict(state["G_ema"])
            self._stats_at = None
        load_optimizer(self.opt_g, state["opt_G"])
        load_optimizer(self.opt_d, state["opt_D"])
        self.load_state(state)
