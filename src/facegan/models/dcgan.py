"""DCGAN-family conv nets (Radford et al. 2016) with the options the GAN zoo compares.

Generator: transposed convs (`deconv`) or nearest upsample + 3x3 conv (`upsample`), batch norm;
optionally conditioned on labels (ACGAN): one-hot labels at the input, and with `concat` also
concatenated to the first hidden feature map.
Discriminator: strided convs with batch/instance/layer/no norm, optional spectral norm; returns
the adversarial logit and, when labelled, auxiliary-classifier logits (ACGAN) and an optional
projection term (Miyato & Koyama 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from facegan.models.acgan import one_hot, split_multihot
from facegan.ops.conv import Conv2d


def levels(resolution: int) -> int:
    """Number of 2x up/down-sampling steps between 4x4 and `resolution`."""
    n = int(math.log2(resolution)) - 2
    if 2 ** (n + 2) != resolution or n < 1:
        raise ValueError(f"DCGAN needs a power-of-two resolution >= 8, got {resolution}")
    return n


def _norm(kind: str, c: int) -> nn.Module:
    return {
        "batch": lambda: nn.BatchNorm2d(c),
        "instance": lambda: nn.InstanceNorm2d(c, affine=True),
        "layer": lambda: nn.GroupNorm(1, c),
        "none": nn.Identity,
    }[kind]()


def _up(cin: int, cout: int, arch: str) -> nn.Module:
    if arch == "deconv":
        return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False))


class Generator(nn.Module):
    """(z (N, z_dim), labels (N, A) int, (N, sum of label_dims) float one-hot rows, or None) -> images (N, 3, R, R)
    in [-1, 1]."""

    def __init__(
        self,
        resolution: int = 64,
        z_dim: int = 100,
        channels: int = 64,
        arch: str = "deconv",
        label_dims: Sequence[int] = (),
        label_input: str = "concat",
    ):
        super().__init__()
        n = levels(resolution)
        self.z_dim, self.label_dims = z_dim, tuple(label_dims)
        n_lab = sum(self.label_dims)
        self.hidden_labels = n_lab > 0 and label_input == "concat"
        width = [channels * 2 ** min(n - 1 - i, 3) for i in range(n)]  # e.g. 256, 128, 64, 32
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(z_dim + n_lab, width[0], 4, 1, 0, bias=False), nn.BatchNorm2d(width[0]), nn.ReLU(True)
        )
        layers: list[nn.Module] = []
        cin = width[0] + (n_lab if self.hidden_labels else 0)
        for cout in width[1:]:
            layers += [_up(cin, cout, arch), nn.BatchNorm2d(cout), nn.ReLU(True)]
            cin = cout
        layers += [_up(cin, 3, arch), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not self.label_dims:
            return self.body(self.stem(z[:, :, None, None]))
        if labels is None:
            raise ValueError("this generator is conditional: pass labels")
        # int rows (N, A) are label indices; float rows (N, sum of label_dims) are one-hot encodings or blends of
        # them (the explorer's interpolation between two seeds' labels)
        y = (labels if labels.is_floating_point() else one_hot(labels, self.label_dims)).to(z.dtype)
        x = self.stem(torch.cat([z, y], 1)[:, :, None, None])
        if self.hidden_labels:
            x = torch.cat([x, y[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], 1)
        return self.body(x)


def conv_features(resolution: int, channels: int, norm: str, sn=lambda m: m) -> tuple[nn.Sequential, int]:
    """Strided 4x4 convs from `resolution` down to 4x4 (4 layers at 64 px): (layers, flattened size). The convs
    are facegan.ops' `Conv2d`: nn.Conv2d, except in the passes a penalty differentiates twice (R1, WGAN-GP,
    WGAN-div), whose double backward is then ordinary convolutions, not PyTorch's generic conv double backward."""
    width = [channels * 2 ** min(i, 3) for i in range(levels(resolution))]  # e.g. 32, 64, 128, 256
    layers: list[nn.Module] = [sn(Conv2d(3, width[0], 4, 2, 1)), nn.LeakyReLU(0.2, True)]
    for cin, cout in pairwise(width):
        layers += [sn(Conv2d(cin, cout, 4, 2, 1, bias=norm == "none")), _norm(norm, cout), nn.LeakyReLU(0.2, True)]
    return nn.Sequential(*layers), width[-1] * 16


class Discriminator(nn.Module):
    """images (N, 3, R, R) [, labels] -> (adversarial logits (N,), aux logits per attribute or None)."""

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 64,
        norm: str = "batch",
        spectral: bool = False,
        label_dims: Sequence[int] = (),
        aux_head: str = "softmax",
        projection: bool = False,
    ):
        super().__init__()
        self.label_dims, self.aux_head, self.projection = tuple(label_dims), aux_head, projection
        sn = spectral_norm if spectral or projection else (lambda m: m)
        self.features, feat = conv_features(resolution, channels, norm, sn)
        self.adv = sn(nn.Linear(feat, 1, bias=False))  # == the classic 4x4 valid conv to one logit
        self.aux = nn.ModuleList()
        self.embed = nn.ModuleList()
        if self.label_dims:
            if aux_head == "softmax":
                self.aux.extend(sn(nn.Linear(feat, k)) for k in self.label_dims)
            else:
                self.aux.append(sn(nn.Linear(feat, sum(self.label_dims))))
            if projection:
                self.embed.extend(sn(nn.Embedding(k, feat)) for k in self.label_dims)

    @property
    def blocks(self) -> list[nn.Module]:
        """conv [+ norm] + activation groups from the input side (what FreezeD freezes)."""
        mods = list(self.features)
        starts = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)] + [len(mods)]
        return [nn.Sequential(*mods[a:b]) for a, b in pairwise(starts)]

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        h = self.features(x).flatten(1)
        adv = self.adv(h).flatten()
        if not self.label_dims:
            return adv, None
        if self.projection:
            if labels is None:
                raise ValueError("the projection discriminator needs labels")
            adv = adv + sum((emb(labels[:, a]) * h).sum(1) for a, emb in enumerate(self.embed))
        aux = (
            [head(h) for head in self.aux]
            if self.aux_head == "softmax"
            else split_multihot(self.aux[0](h), self.label_dims)
        )
        return adv, aux


def init_weights(module: nn.Module) -> None:
    """The DCGAN paper's init: N(0, 0.02) convs, N(1, 0.02) norm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        if hasattr(module, "parametrizations"):  # spectral norm keeps the raw weight as .original
            w = module.parametrizations.weight.original  # type: ignore[union-attr]  # a ParametrizationList
        else:
            w = module.weight
        nn.init.normal_(w, 0.0, 0.02)  # type: ignore[arg-type]  # a Parameter either way
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
