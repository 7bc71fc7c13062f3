"""GAN losses by name, and the regularisers any GAN can use.

Adversarial losses (`LOSSES`, chosen by `train.loss`):
- minimax (Goodfellow 2014), nonsaturating (its practical G loss), hinge (Lim & Ye 2017),
- lsgan: least squares (Mao et al. 2017; CycleGAN's default),
- wgan: Wasserstein with weight clipping (Arjovsky 2017),
- wgan-gp: + gradient penalty on interpolates (Gulrajani 2017),
- wgan-div: + k * |grad D|^p on real and fake samples (Wu et al. 2018).

Regularisers: R1 on real images (Mescheder et al. 2018) and the path-length penalty (Karras et al. 2020),
each with its own weight and interval (`train.r1`, `train.path_length`; see facegan.train.objective).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from facegan.device import to_device
from facegan.ops.conv import differentiated_twice, no_weight_grads
from facegan.registry import pick
from facegan.train.dist import Dist

# d(x, labels) -> (adversarial logits, auxiliary logits or None)
Critic = Callable[..., tuple[torch.Tensor, object]]
Augment = Callable[[torch.Tensor], torch.Tensor]  # the augmentation D sees, with this step's draws bound


@dataclass(frozen=True)
class GanLoss:
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]
    # penalty(d, real, fake, labels, gen, **settings) -> weighted scalar, settings read from train.<field>
    penalty: Callable[..., torch.Tensor] | None = None
    penalty_settings: Mapping[str, str] = field(default_factory=dict)  # penalty keyword -> train config field
    clip: bool = False  # clamp D's weights to [-train.clip, train.clip] after each D step


def _d_logistic(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _d_wasserstein(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def _input_grad(
    d: Critic,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    augment: Augment,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(D's logits at augment(x), their sum's gradient w.r.t. x with its graph): the pass a penalty differentiates
    twice. `x` requires grad."""
    with differentiated_twice():
        out, _ = d(augment(x), labels)
    with no_weight_grads():  # d/d input only: the weights get theirs from the penalty's backward
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return out, grad


def _grad_norm(d: Critic, x: torch.Tensor, labels: torch.Tensor | None, augment: Augment) -> torch.Tensor:
    # float32: the penalty runs outside autocast, and under mixed precision the fakes come in its dtype
    _, grad = _input_grad(d, x.detach().float().requires_grad_(True), labels, augment)
    return grad.flatten(1).norm(2, dim=1)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def gradient_penalty(
    d: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    y_real: torch.Tensor | None,
    y_fake: torch.Tensor | None,
    gen: torch.Generator,
    dist: Dist = Dist(),
    augment: Augment = _same,
    *,
    weight: float,
) -> torch.Tensor:
    """weight * (|grad D| - 1)^2 at random interpolates of real and fake images (WGAN-GP), scored with the real
    images' labels. The interpolation weights are drawn for the global batch and sliced per process, as every draw
    of a step is: N processes then train as one does. D sees augment(interpolate), as its loss sees augmented
    images (the gradient is the interpolate's, through the augmentation, as R1's is the real images')."""
    eps = torch.rand(len(real) * dist.world, 1, 1, 1, generator=gen)
    eps = to_device(dist.shard(eps), real.device)
    mixed = eps * real.detach() + (1 - eps) * fake.detach()
    return weight * ((_grad_norm(d, mixed, y_real, augment) - 1) ** 2).mean()


def divergence_penalty(
    d: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    y_real: torch.Tensor | None,
    y_fake: torch.Tensor | None,
    gen: torch.Generator,
    dist: Dist = Dist(),
    augment: Augment = _same,
    *,
    k: float,
    p: float,
) -> torch.Tensor:
    """k * |grad D|^p on real and fake images (WGAN-div), each scored with its own labels (D(fake, y_fake) is the
    function D's loss trains on the fakes) and augmented as D's loss sees them."""
    both = torch.cat([_grad_norm(d, real, y_real, augment), _grad_norm(d, fake, y_fake, augment)])
    return k * (both**p).mean()


def r1_penalty(d: Critic, real: torch.Tensor, labels: torch.Tensor | None, augment: Augment) -> torch.Tensor:
    """Squared gradient norm of D at (augmented) real images, averaged over the batch (unweighted)."""
    out, grad = _input_grad(d, real.detach().requires_grad_(True), labels, augment)
    # + 0 * out: every D parameter is in the graph (DDP expects a gradient for each, even if zero)
    return grad.pow(2).flatten(1).sum(1).mean() + 0 * out.sum()


def path_lengths(fake: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """|J^T y| per sample: the gradient of <fake, noise> w.r.t. the latent (N, D) or per-layer w (N, L, D)."""
    with no_weight_grads():  # d/d input only: the weights get theirs from the penalty's backward
        (grad,) = torch.autograd.grad((fake * noise).sum(), latent, create_graph=True)
    sq = grad.pow(2).sum(-1)
    return (sq.mean(1) if sq.dim() > 1 else sq).sqrt()


LOSSES: dict[str, GanLoss] = {
    "minimax": GanLoss(_d_logistic, lambda fake: -F.softplus(fake).mean()),
    "nonsaturating": GanLoss(_d_logistic, lambda fake: F.softplus(-fake).mean()),
    "hinge": GanLoss(lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(), lambda fake: -fake.mean()),
    "lsgan": GanLoss(
        lambda real, fake: (real - 1).pow(2).mean() + fake.pow(2).mean(), lambda fake: (fake - 1).pow(2).mean()
    ),
    "wgan": GanLoss(_d_wasserstein, lambda fake: -fake.mean(), clip=True),
    "wgan-gp": GanLoss(_d_wasserstein, lambda fake: -fake.mean(), gradient_penalty, {"weight": "gp_weight"}),
    "wgan-div": GanLoss(_d_wasserstein, lambda fake: -fake.mean(), divergence_penalty, {"k": "div_k", "p": "div_p"}),
}


def get_loss(name: str) -> GanLoss:
    return pick(LOSSES, name, "loss")
