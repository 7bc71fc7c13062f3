"""GAN losses by name: adversarial terms for D and G, plus an optional regulariser on D.

- minimax (Goodfellow 2014), nonsaturating (its practical G loss), hinge (Lim & Ye 2017),
- lsgan: least squares (Mao et al. 2017; CycleGAN's default),
- wgan: Wasserstein with weight clipping (Arjovsky 2017),
- wgan-gp: + gradient penalty on interpolates (Gulrajani 2017),
- wgan-div: + k * |grad D|^p on real and fake samples (Wu et al. 2018).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facegan.config import TrainConfig
from facegan.registry import pick

# penalty(d, real, fake, labels, gen, cfg) -> scalar; d(x, labels) returns (adv_logits, aux)
Penalty = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class GanLoss:
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]
    penalty: Penalty | None = None
    clip: bool = False  # clamp D's weights to [-cfg.clip, cfg.clip] after each D step


def _d_logistic(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _d_wasserstein(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def _grad_norm(d, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    out, _ = d(x, labels)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.flatten(1).norm(2, dim=1)


def gradient_penalty(d, real, fake, labels, gen: torch.Generator, cfg: TrainConfig) -> torch.Tensor:
    eps = torch.rand(len(real), 1, 1, 1, generator=gen).to(real.device)
    mixed = eps * real.detach() + (1 - eps) * fake.detach()
    return cfg.gp_weight * ((_grad_norm(d, mixed, labels) - 1) ** 2).mean()


def divergence_penalty(d, real, fake, labels, gen: torch.Generator, cfg: TrainConfig) -> torch.Tensor:
    both = torch.cat([_grad_norm(d, real, labels), _grad_norm(d, fake, labels)])
    return cfg.div_k * (both ** cfg.div_p).mean()


LOSSES: dict[str, GanLoss] = {
    "minimax": GanLoss(_d_logistic, lambda fake: -F.softplus(fake).mean()),
    "nonsaturating": GanLoss(_d_logistic, lambda fake: F.softplus(-fake).mean()),
    "hinge": GanLoss(lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(), lambda fake: -fake.mean()),
    "lsgan": GanLoss(lambda real, fake: (real - 1).pow(2).mean() + fake.pow(2).mean(), lambda fake: (fake - 1).pow(2).mean()),
    "wgan": GanLoss(_d_wasserstein, lambda fake: -fake.mean(), clip=True),
    "wgan-gp": GanLoss(_d_wasserstein, lambda fake: -fake.mean(), penalty=gradient_penalty),
    "wgan-div": GanLoss(_d_wasserstein, lambda fake: -fake.mean(), penalty=divergence_penalty),
}


def get_loss(name: str) -> GanLoss:
    return pick(LOSSES, name, "loss")
