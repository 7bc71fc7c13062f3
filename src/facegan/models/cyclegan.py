"""CycleGAN's networks (Zhu et al. 2017): ResNet generators and PatchGAN discriminators.

Generator: c7s1-k, two stride-2 downsamplings, `res_blocks` residual blocks, two transposed-conv
upsamplings, c7s1-3 + tanh; instance norm and reflection padding throughout.
Discriminator: the 70x70 PatchGAN for d_layers=3 (C64-C128-C256-C512, then a 1-channel map), leaky ReLU,
instance norm after the first layer, optional spectral norm on every conv. It returns a map of logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _conv_block(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    pad = [nn.ReflectionPad2d(kernel // 2)] if stride == 1 else []
    return [
        *pad,
        nn.Conv2d(cin, cout, kernel, stride, 0 if stride == 1 else 1, bias=False),
        nn.InstanceNorm2d(cout, affine=True),
        nn.ReLU(True),
    ]


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_block(c, c, 3),
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3, bias=False),
            nn.InstanceNorm2d(c, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """images (N, 3, R, R) in [-1, 1] -> translated images, same shape (R divisible by 4)."""

    def __init__(self, channels: int = 64, res_blocks: int = 9):
        super().__init__()
        c = channels
        layers: list[nn.Module] = [
            *_conv_block(3, c, 7),
            *_conv_block(c, 2 * c, 3, 2),
            *_conv_block(2 * c, 4 * c, 3, 2),
        ]
        layers += [ResidualBlock(4 * c) for _ in range(res_blocks)]
        for cin, cout in ((4 * c, 2 * c), (2 * c, c)):
            layers += [
                nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1, bias=False),
                nn.InstanceNorm2d(cout, affine=True),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"the CycleGAN generator needs sides divisible by 4, got {tuple(x.shape[-2:])}")
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """images (N, 3, R, R) -> logits (N, 1, h, w), one per overlapping patch."""

    def __init__(self, channels: int = 64, layers: int = 3, spectral: bool = False):
        super().__init__()
        sn = spectral_norm if spectral else (lambda m: m)
        mods: list[nn.Module] = [sn(nn.Conv2d(3, channels, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        c = channels
        for i in range(1, layers + 1):
            cout = channels * 2 ** min(i, 3)
            stride = 2 if i < layers else 1
            mods += [
                sn(nn.Conv2d(c, cout, 4, stride, 1, bias=False)),
                nn.InstanceNorm2d(cout, affine=True),
                nn.LeakyReLU(0.2, True),
            ]
            c = cout
        mods.append(sn(nn.Conv2d(c, 1, 4, 1, 1)))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
