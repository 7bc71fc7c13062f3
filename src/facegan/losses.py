"""GAN losses by name. Each returns (d_loss(real_logits, fake_logits), g_loss(fake_logits))."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facegan.registry import pick


@dataclass(frozen=True)
class GanLoss:
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]


def _d_logistic(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


LOSSES: dict[str, GanLoss] = {
    # Goodfellow et al. 2014, G minimises log(1 - D(G(z))) (saturates early in training)
    "minimax": GanLoss(_d_logistic, lambda fake: -F.softplus(fake).mean()),
    # the practical variant: G maximises log D(G(z))
    "nonsaturating": GanLoss(_d_logistic, lambda fake: F.softplus(-fake).mean()),
    # Lim & Ye 2017 / Miyato et al. 2018
    "hinge": GanLoss(lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(), lambda fake: -fake.mean()),
}


def get_loss(name: str) -> GanLoss:
    return pick(LOSSES, name, "loss")
