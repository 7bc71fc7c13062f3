"""Model `vae`: a convolutional variational autoencoder (Kingma & Welling 2014), the non-adversarial baseline.

Encoder: DCGAN's discriminator layout (strided 4x4 convs, 4 layers at 64 px) -> (mu, log variance).
Decoder: DCGAN's generator (5 transposed convs at 64 px), so samples come from `decoder(z)`, z ~ N(0, I),
exactly as from a GAN generator: sampling, FID and the comparison table treat it like any other model.
"""

from __future__ import annotations

import torch
from torch import nn

from facegan.models.dcgan import conv_features


class Encoder(nn.Module):
    """images (N, 3, R, R) in [-1, 1] -> (mu (N, z_dim), log variance (N, z_dim))."""

    def __init__(self, resolution: int, z_dim: int, channels: int, norm: str = "batch"):
        super().__init__()
        self.features, feat = conv_features(resolution, channels, norm)
        self.mu = nn.Linear(feat, z_dim)
        self.logvar = nn.Linear(feat, z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).flatten(1)
        return self.mu(h), self.logvar(h).clamp(-30, 20)  # exp() stays finite in float32


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, averaged over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return mu + eps * (0.5 * logvar).exp()
