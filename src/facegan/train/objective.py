"""The GAN objective: what D and G minimise, as named terms.

`GANObjective` owns the adversarial loss, its gradient penalty (wgan-gp / wgan-div), the auxiliary
classification loss (ACGAN), the R1 and path-length regularisers and the augmentation D sees (DiffAugment or
ADA, whose p it steers). Each method returns `Terms`: named tensors that the trainer logs by name (losses.csv
columns, MLflow metric names) and whose weighted sum it optimises. Backward passes are not here: the trainer
hands `Terms.total()` to the stepper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from facegan.augment.ada import AdaptiveAugment
from facegan.augment.diffaugment import diff_augment
from facegan.config import D_LEVEL, TrainConfig
from facegan.device import to_device
from facegan.losses import get_loss, path_lengths, r1_penalty
from facegan.models.acgan import aux_loss
from facegan.train.dist import Dist

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class Terms:
    """Named scalars of one update. `weights` lists the ones that add up to the optimised loss (in order);
    the others (e.g. mean D outputs) are only logged."""

    values: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: torch.Tensor, weight: float | None = 1.0) -> None:
        self.values[name] = value
        if weight is not None:
            self.weights[name] = weight

    def total(self) -> torch.Tensor:
        parts = [self.values[k] if w == 1 else w * self.values[k] for k, w in self.weights.items()]
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out


@dataclass(frozen=True)
class Lazy:
    """A regulariser applied as its own update every `every` steps, scaled by `span`, the updates of its network
    from one application to the next, to make up for the skipped ones (lazy regularisation, Karras et al. 2020):
    `every` for G's path length, `every * n_critic` for D's R1 (D updates n_critic times a step)."""

    weight: float
    every: int
    span: int

    def due(self, step: int) -> bool:
        return step % self.every == 0


def build_augment(cfg: TrainConfig) -> Augment | None:
    """ADA (stateful, adaptive p), DiffAugment, or nothing."""
    if cfg.ada.enabled:
        return AdaptiveAugment(cfg.ada, cfg.batch_size, cfg.loss)
    if cfg.diffaugment:
        return lambda x, gen: diff_augment(x, cfg.diffaugment, gen)
    return None


class GANObjective:
    """D's and G's loss terms for `cfg` (see the module docstring). `autocast` is the stepper's mixed-precision
    context; the gradient penalty and the regularisers run outside it, in float32. `joint_d`: D's logit of a
    sample depends on nothing else in the batch but its minibatch-stddev group (StyleGAN2's D, `joint_batches`),
    so reals and fakes can share one pass (unconditional models)."""

    def __init__(
        self,
        cfg: TrainConfig,
        conditional: bool,
        dist: Dist,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
        joint_d: bool = False,
    ):
        self.cfg, self.conditional, self.dist, self.device, self.autocast = cfg, conditional, dist, device, autocast
        self.joint_d = joint_d and not conditional
        self.loss = get_loss(cfg.loss)
        self.penalty = (
            partial(self.loss.penalty, **{k: getattr(cfg, f) for k, f in self.loss.penalty_settings.items()})
            if self.loss.penalty
            else None
        )
        self.augment_fn = build_augment(cfg)
        self.ada = self.augment_fn if isinstance(self.augment_fn, AdaptiveAugment) else None  # the stateful one
        self.d_level = D_LEVEL.get(cfg.loss, 0.0)  # D's output between real and fake: d_real_sign is read against it
        if self.ada:
            self.ada.total, self.ada.world = dist.total, dist.world
        self.r1 = Lazy(cfg.r1_gamma / 2, cfg.r1.every, cfg.r1.every * cfg.n_critic) if cfg.r1_gamma else None
        pl = cfg.path_length
        self.path_length = Lazy(pl.weight, pl.every, pl.every) if pl.weight else None
        self.pl_mean = torch.zeros((), device=device)

    def augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.augment_fn(x, gen) if self.augment_fn else x

    def d_terms(
        self,
        d: nn.Module,
        real: torch.Tensor,
        fake: torch.Tensor,
        y_real: torch.Tensor | None,
        y_fake: torch.Tensor | None,
        gen: torch.Generator,
        aug: torch.Generator,
        index: int,
        d_penalty: nn.Module | None = None,
    ) -> Terms:
        """loss_d (+ penalty, + aux_d) on a real and a (detached) fake batch; d_real / d_fake: mean D outputs.
        With `joint_d` both batches go through D in one pass (`d(x, None, parts=2)`: per-sample logits as two
        passes give them). Batch `index` feeds ADA's estimate of D's overfitting. The penalty, differentiated
        twice, goes through `d_penalty` (the eager D when `d` is compiled; default `d`)."""
        t = Terms()
        with self.autocast():
            if self.joint_d and len(real) == len(fake):  # one pass of D over both batches (the same logits)
                adv, _ = d(torch.cat([self.augment(real, aug), self.augment(fake, aug)]), None, parts=2)
                adv_real, adv_fake = adv.chunk(2)
            else:
                adv_real, aux_real = d(self.augment(real, aug), y_real)
                adv_fake, aux_fake = d(self.augment(fake, aug), y_fake)
            t.add("loss_d", self.loss.d(adv_real.float(), adv_fake.float()))
            if self.conditional:
                assert y_real is not None and y_fake is not None, "a conditional model trains on labels"
                aux = (
                    aux_loss(aux_real, y_real, self.cfg.aux_head) + aux_loss(aux_fake, y_fake, self.cfg.aux_head)
                ) / 2
        if self.ada:
            self.ada.observe(adv_real, index)
        if self.penalty:
            augment = partial(self.augment, gen=aug)  # what D's loss saw, drawn anew
            t.add("penalty", self.penalty(d_penalty or d, real, fake, y_real, y_fake, gen, self.dist, augment))
        if self.conditional:
            t.add("aux_d", aux, self.cfg.aux_weight)
        t.add("d_real", adv_real.float().mean(), None)
        t.add("d_fake", adv_fake.float().mean(), None)
        # mean sign of D on the reals against its loss's level (ADA's r_t): towards 1 as D overfits its training set
        t.add("d_real_sign", (adv_real.float() - self.d_level).sign().mean(), None)
        return t

    @torch.no_grad()
    def after_d_update(self, d: nn.Module) -> None:
        """WGAN's weight clipping, of the weights D trains (FreezeD's frozen layers keep their pretrained values)."""
        if self.loss.clip:
            for p in d.parameters():
                if p.requires_grad:
                    p.clamp_(-self.cfg.clip, self.cfg.clip)

    def r1_terms(self, d: nn.Module, real: torch.Tensor, y_real: torch.Tensor | None, aug: torch.Generator) -> Terms:
        """r1: |grad D(augmented real)|^2, weighted gamma/2 * every * n_critic (the D updates it stands for)."""
        assert self.r1 is not None
        t = Terms()
        t.add("r1", r1_penalty(d, real, y_real, lambda x: self.augment(x, aug)), self.r1.weight * self.r1.span)
        return t

    def g_terms(self, d: nn.Module, fake: torch.Tensor, y_fake: torch.Tensor | None, aug: torch.Generator) -> Terms:
        """loss_g (+ aux_g): G's adversarial loss on the fake batch (with its graph), and its label loss."""
        t = Terms()
        with self.autocast():
            adv, aux = d(self.augment(fake, aug), y_fake)
            t.add("loss_g", self.loss.g(adv.float()))
            if self.conditional:
                assert y_fake is not None, "a conditional model trains on labels"
                t.add("aux_g", aux_loss(aux, y_fake, self.cfg.aux_head), self.cfg.aux_weight)
        return t

    def path_length_terms(self, fake: torch.Tensor, latent: torch.Tensor, gen: torch.Generator) -> Terms:
        """path_length: deviation of |J^T y| (y: scaled image-space noise, drawn from `gen` on its device) from
        its running mean, weighted weight * every. `latent` is what G was differentiated against (w for
        style-based G, else z)."""
        assert self.path_length is not None
        world = self.dist.world
        noise = torch.randn(len(fake) * world, *fake.shape[1:], generator=gen, device=gen.device)
        noise = to_device(self.dist.shard(noise), fake.device).to(fake.dtype)
        noise = noise / math.sqrt(fake.shape[2] * fake.shape[3])
        lengths = path_lengths(fake, latent, noise)
        self.pl_mean = self.pl_mean.lerp(self.dist.mean(lengths.mean()), 0.01)
        t = Terms()
        # + 0 * fake: as in r1_penalty
        t.add(
            "path_length",
            (lengths - self.pl_mean).pow(2).mean() + 0 * fake.sum(),
            self.path_length.weight * self.path_length.span,
        )
        return t

    def idle(self, *names: str) -> dict[str, torch.Tensor]:
        """Zeros logged for regularisers on the steps they skip (losses.csv keeps one column each)."""
        return {n: torch.zeros((), device=self.device) for n in names}

    def state_dict(self) -> dict:
        return {"augment": self.ada.state_dict() if self.ada else None, "pl_mean": self.pl_mean.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if self.ada:
            self.ada.load_state_dict(state["augment"])
        self.pl_mean = state["pl_mean"].to(self.device)
