"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image D sees.

Policies: `color` (brightness, saturation, contrast), `translation` (up to 1/8 of the side, zero
fill), `cutout` (one square of half the side). Randomness comes from an explicit generator, so a
training step is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from facegan.device import to_device


def _rand(shape: tuple[int, ...], gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return to_device(torch.rand(shape, generator=gen).to(like.dtype), like.device)


def color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = len(x)
    x = x + (_rand((n, 1, 1, 1), gen, x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand((n, 1, 1, 1), gen, x) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((n, 1, 1, 1), gen, x) + 0.5) + mean


def translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = to_device(torch.randint(-sy, sy + 1, (n, 1, 1), generator=gen), x.device)
    tx = to_device(torch.randint(-sx, sx + 1, (n, 1, 1), generator=gen), x.device)
    b, gy, gx = torch.meshgrid(
        torch.arange(n, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[b, gy, gx].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = to_device(torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen), x.device)
    ox = to_device(torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen), x.device)
    # the ch x cw square centred at (oy, ox), clipped to the image (it always overlaps it), by comparisons: an
    # indexed write of 0 copies the 0 to the GPU and waits for it (torch 2.11)
    ys = torch.arange(h, device=x.device).view(1, h, 1) - (oy - ch // 2)
    xs = torch.arange(w, device=x.device).view(1, 1, w) - (ox - cw // 2)
    keep = (ys < 0) | (ys >= ch) | (xs < 0) | (xs >= cw)
    return x * keep.to(x.dtype)[:, None]


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policies: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """Apply the policies in the canonical order color -> translation -> cutout, in float32 (returned in float32):
    under mixed precision the fakes come in the amp dtype, and colour factors rounded to it would augment them
    differently from the float32 reals."""
    if any(name in policies for name in POLICIES):
        x = x.float()
    for name in ("color", "translation", "cutout"):
        if name in policies:
            x = POLICIES[name](x, gen)
    return x
