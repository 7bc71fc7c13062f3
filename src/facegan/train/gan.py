"""The GAN trainer: one `_updates()` that reads top to bottom — D updates (+ R1), then G's update (+ path length).

The maths of each update is in `GANObjective` (named terms); this file schedules the updates, draws the
step's randomness (seeded by (seed, step), so a resumed run continues exactly) and holds what training
changes besides weights: transfer from a pretrained model, FreezeD, ADA's p, the path-length mean.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import torch

from facegan import ops
from facegan.device import to_device
from facegan.models.transfer import apply_pretrained
from facegan.train.freeze import freeze_discriminator
from facegan.train.graph import Batch, Inputs, StepGraph
from facegan.train.objective import GANObjective
from facegan.train.trainer import ModelTrainer

if TYPE_CHECKING:
    from facegan.models.stylegan2 import Generator as StyleGenerator

log = logging.getLogger(__name__)


class GANTrainer(ModelTrainer):
    """Every adversarial model of the registry (dcgan, wgan-gp, acgan, stylegan2)."""

    def _prepare(self) -> None:
        cfg = self.cfg
        self.pretrained = (
            apply_pretrained(cfg.init_from, self.g, self.d, self.ema.model if self.ema else None, cfg.model)
            if cfg.init_from
            else None
        )
        self.frozen = freeze_discriminator(self.d, cfg.freeze_d)
        if self.frozen:
            log.info("FreezeD: %d discriminator parameters frozen (first %d blocks)", len(self.frozen), cfg.freeze_d)
        joint = bool(getattr(self.d, "joint_batches", False)) and ops.fast()
        self.objective = GANObjective(cfg, bool(self.label_dims), self.dist, self.device, self.autocast, joint)
        self.ada = self.objective.ada
        # keep the augmentation strength of the source run, unless this run fixes its own p
        source_p = self.pretrained.get("ada_p") if self.pretrained else None
        if self.ada and source_p is not None and cfg.ada.fixed_p is None:
            self.ada.p = float(source_p)
        if cfg.graph and self.dist.active:  # started by torchrun with nproc 1: DDP's exchanges would replay as captured
            raise ValueError(f"graph: true captures one process's step; this run has {self.dist.world} (torchrun)")
        self.graph = StepGraph(self._draw, self._updates, self.device) if cfg.graph else None
        self.graphed = cfg.graph and self.device.type == "cuda"  # the optimisers step on the device (capturable)
        if cfg.graph and not self.graphed:
            log.warning("graph applies to CUDA only: on %s each step runs eagerly (the same values)", self.device)

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """Lazy regularisers rescale the optimiser of the network they act on (R1: D, path length: G)."""
        r1, pl = self.objective.r1, self.objective.path_length
        return (
            self._optimizer(self.g, self.cfg.lr_g, pl.span if pl else 0),
            self._optimizer(self.d, self.cfg.lr_d, r1.span if r1 else 0),
        )

    def latents(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents (and labels) of a global batch of n, cut to this process's rows."""
        z = to_device(self.dist.shard(torch.randn(n, self.cfg.z_dim, generator=gen)), self.device)
        y = None
        if self.labels is not None:  # fake labels follow the real joint label distribution
            rows = self.dist.shard(torch.randint(len(self.labels), (n,), generator=gen))
            y = to_device(self.labels[rows], self.device)
        return z, y

    def generate(
        self,
        z: torch.Tensor,
        y: torch.Tensor | None,
        gen: torch.Generator,
        g: Any = None,
        noise_gen: torch.Generator | None = None,
        **kw: Any,
    ) -> Any:
        """G's images (through `g`, default `g_run`); a style-based G also gets style mixing from the step's
        generator `gen` and per-layer noise from `noise_gen` (the step's `Stepper.noise_generator`; default `gen`)."""
        g = self.g_run if g is None else g
        if self.cfg.spec.style:
            n = len(z) * self.dist.world
            kw |= cast("StyleGenerator", self.g).mixing_kwargs(
                n, self.cfg.stylegan2.style_mixing, gen, self.device, self.dist.shard, noise_gen
            )
            return g(z, y, **kw)
        return g(z, y) if self.label_dims else g(z)

    def _step(self) -> None:
        """One step: the eager updates, or with `train.graph` the step's draws and (CUDA) a graph's replay of them."""
        step = self.step_done
        logged = self.graph(step) if self.graph else self._updates(step)
        self.record(logged, **({"ada_p": self.ada.p} if self.ada else {}))

    def _draw(self, step: int) -> Inputs:
        """Step `step`'s inputs of each D update (real batch, its labels, latents, their labels), drawn as `_updates`
        draws them when given none: for `train.graph`, whose configurations draw nothing else from the generator."""
        gen, _ = self.generators(step)
        return [self._batch(step * self.cfg.n_critic + k, gen) for k in range(self.cfg.n_critic)]

    def _batch(self, index: int, gen: torch.Generator) -> Batch:
        """D update `index`'s real batch (+ labels) and latents (+ labels), drawn in this order from `gen`."""
        return Batch(*self.real(index, gen), *self.latents(self.cfg.batch_size, gen))

    def _updates(self, step: int, inputs: Inputs | None = None) -> dict[str, torch.Tensor]:
        """n_critic D updates (+ lazy R1), then one G update (+ lazy path length), reusing the last D update's fakes;
        returns the values to log. Each D update's batch and latents are drawn here, or taken from `inputs`."""
        cfg, obj = self.cfg, self.objective
        gen, aug = self.generators(step)
        noise_gen = self.noise_generator(gen, step) if cfg.spec.style or obj.path_length else gen

        for k in range(cfg.n_critic):  # D
            index = step * cfg.n_critic + k
            real, y_real, z, y_fake = self._batch(index, gen) if inputs is None else inputs[k]
            with torch.set_grad_enabled(k == cfg.n_critic - 1), self.autocast():
                fake = self.generate(z, y_fake, gen, noise_gen=noise_gen)  # the last keeps its graph for G's update
            d_terms = obj.d_terms(self.d_run, real, fake.detach(), y_real, y_fake, gen, aug, index, self.d_reg)
            self.update(d_terms.total(), self.opt_d)
            obj.after_d_update(self.d)
        logged = dict(d_terms.values)

        if obj.r1:  # R1 on D, lazily
            if obj.r1.due(step):
                r1 = obj.r1_terms(self.d_reg, real, y_real, aug)
                self.update(r1.total(), self.opt_d)
                logged |= r1.values
            else:
                logged |= obj.idle("r1")

        with self.through(self.d, self.d_run):  # G, through a D that takes no gradients
            g_terms = obj.g_terms(self.d_run, fake, y_fake, aug)
            self.update(g_terms.total(), self.opt_g)
        logged |= g_terms.values

        if obj.path_length:  # path length on G, lazily
            if obj.path_length.due(step):
                pl = obj.path_length_terms(*self._fake_and_latent(gen, noise_gen), noise_gen)
                self.update(pl.total(), self.opt_g)
                logged |= pl.values
            else:
                logged |= obj.idle("path_length")

        self.after_step()
        return logged

    def _fake_and_latent(self, gen: torch.Generator, noise_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Half a batch of fakes (through the eager G: path length differentiates twice) and the latent they are
        differentiated against (w, or z for other G)."""
        world = self.dist.world
        z, y = self.latents(max(world, self.cfg.batch_size // 2 // world * world), gen)
        if self.cfg.spec.style:
            return self.generate(z, y, gen, self.g_reg, noise_gen, return_w=True)
        z.requires_grad_(True)
        return self.generate(z, y, gen, self.g_reg, noise_gen), z

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.objective.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.objective.load_state_dict(state)
