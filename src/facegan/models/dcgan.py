"""DCGAN (Radford et al. 2016): transposed-conv generator, strided-conv discriminator, batch norm."""

from __future__ import annotations

import math

import torch
from torch import nn


def _levels(resolution: int) -> int:
    n = int(math.log2(resolution)) - 2  # 4x4 -> resolution
    if 2 ** (n + 2) != resolution or n < 1:
        raise ValueError(f"DCGAN needs a power-of-two resolution >= 8, got {resolution}")
    return n


class Generator(nn.Module):
    """z (N, z_dim) -> images (N, 3, R, R) in [-1, 1]."""

    def __init__(self, resolution: int = 64, z_dim: int = 100, channels: int = 64):
        super().__init__()
        n = _levels(resolution)
        self.z_dim = z_dim
        width = [channels * 2 ** min(n - 1 - i, 3) for i in range(n)]  # e.g. 512, 256, 128, 64
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, width[0], 4, 1, 0, bias=False), nn.BatchNorm2d(width[0]), nn.ReLU(True),
        ]
        for cin, cout in zip(width, width[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(width[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """images (N, 3, R, R) -> logits (N,)."""

    def __init__(self, resolution: int = 64, channels: int = 64):
        super().__init__()
        n = _levels(resolution)
        width = [channels * 2 ** min(i, 3) for i in range(n)]  # e.g. 64, 128, 256, 512
        layers: list[nn.Module] = [nn.Conv2d(3, width[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for cin, cout in zip(width, width[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(width[-1], 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def init_weights(module: nn.Module) -> None:
    """The DCGAN paper's init: N(0, 0.02) convs, N(1, 0.02) batch-norm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build(resolution: int, z_dim: int, g_channels: int, d_channels: int) -> tuple[Generator, Discriminator]:
    g, d = Generator(resolution, z_dim, g_channels), Discriminator(resolution, d_channels)
    g.apply(init_weights)
    d.apply(init_weights)
    return g, d
