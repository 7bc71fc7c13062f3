"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with limited data").

The `bgc` pipeline: blit (x-flip, 90-degree rotations, integer translation), geometric (isotropic
scale, rotation, anisotropic scale, fractional translation) and colour (brightness, contrast, luma
flip, hue rotation, saturation) transforms, each applied to a sample with probability p (a translation
moves both axes or neither: one draw per sample gates x and y together, as in stylegan2-ada). The
geometric ones are composed into one sampling matrix and applied by a single reflect-padded bilinear
`grid_sample` (the paper upsamples with a wavelet filter first; we sample directly). Every random
number comes from the step's generator, so training stays reproducible and resumable.

p follows the overfitting heuristic r_t = E[sign(D(real) - level)], level being D's output halfway between its
real and fake targets (0 for the logistic and hinge losses, as in the paper; 0.5 for lsgan's; a Wasserstein
critic has none, so train.ada needs a fixed_p there): every `interval` steps p moves by
batch * interval / (speed_kimg * 1000) towards keeping r_t at `target`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from facegan.config import D_LEVEL, AdaConfig
from facegan.device import to_device

LN2 = math.log(2)


def _rand(shape: int | tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64)


def _randn(shape: int | tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _gate(values: torch.Tensor, identity: float, p: float, gen: torch.Generator) -> torch.Tensor:
    """Keep each sample's random value(s) with probability p, else the identity value. values is (n,) or
    (n, k): one draw per sample gates all its k values together (a translation's x and y), so the sample is
    transformed with probability p; a draw per value would transform it with probability 1 - (1 - p)^k."""
    keep = (_rand(len(values), gen) < p).reshape(-1, *[1] * (values.dim() - 1))
    return torch.where(keep, values, torch.full_like(values, identity))


def _mat(n: int, rows: list[list[torch.Tensor | float]]) -> torch.Tensor:
    out = torch.zeros(n, len(rows), len(rows[0]), dtype=torch.float64)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            out[:, i, j] = v
    return out


def _scale2d(sx, sy, n):
    return _mat(n, [[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _translate2d(tx, ty, n):
    return _mat(n, [[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _rotate2d(theta, n):
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat(n, [[c, -s, 0], [s, c, 0], [0, 0, 1]])


def geometric_matrix(n: int, size: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, 3) sampling matrices in normalised coordinates (output pixel -> input pixel)."""
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    flip = _gate(torch.floor(_rand(n, gen) * 2), 0, p, gen)
    m = m @ _scale2d(1 - 2 * flip, 1, n)
    quarter = _gate(torch.floor(_rand(n, gen) * 4), 0, p, gen)
    m = m @ _rotate2d(quarter * (math.pi / 2), n)
    shift = _gate(torch.round((_rand((n, 2), gen) * 2 - 1) * 0.125 * size) * 2 / size, 0, p, gen)  # (n, [x, y])
    m = m @ _translate2d(shift[:, 0], shift[:, 1], n)
    iso = _gate(torch.exp2(_randn(n, gen) * 0.2), 1, p, gen)
    m = m @ _scale2d(iso, iso, n)
    p_rot = 1 - math.sqrt(max(0.0, 1 - p))  # two rotations: the chance of any rotation stays p
    m = m @ _rotate2d(_gate((_rand(n, gen) * 2 - 1) * math.pi, 0, p_rot, gen), n)
    aniso = _gate(torch.exp2(_randn(n, gen) * 0.2), 1, p, gen)
    m = m @ _scale2d(aniso, 1 / aniso, n)
    m = m @ _rotate2d(_gate((_rand(n, gen) * 2 - 1) * math.pi, 0, p_rot, gen), n)
    frac = _gate(_randn((n, 2), gen) * 0.125 * 2, 0, p, gen)
    return m @ _translate2d(frac[:, 0], frac[:, 1], n)


def color_matrix(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 4, 4) affine colour transforms acting on RGB in [-1, 1]."""
    eye = torch.eye(4, dtype=torch.float64)
    v = torch.tensor([1, 1, 1, 0], dtype=torch.float64) / math.sqrt(3)  # the luma axis
    vv = torch.outer(v, v)
    c = eye.repeat(n, 1, 1)
    b = _gate(_randn(n, gen) * 0.2, 0, p, gen)
    c = _mat(n, [[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]]) @ c
    k = _gate(torch.exp2(_randn(n, gen) * 0.5), 1, p, gen)
    c = _mat(n, [[k, 0, 0, 0], [0, k, 0, 0], [0, 0, k, 0], [0, 0, 0, 1]]) @ c
    flip = _gate(torch.floor(_rand(n, gen) * 2), 0, p, gen)
    c = (eye - 2 * vv * flip[:, None, None]) @ c
    theta = _gate((_rand(n, gen) * 2 - 1) * math.pi, 0, p, gen)
    axis = v[:3]
    cross = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=torch.float64)
    rot = eye.repeat(n, 1, 1)
    rot[:, :3, :3] = (
        torch.cos(theta)[:, None, None] * torch.eye(3, dtype=torch.float64)
        + torch.sin(theta)[:, None, None] * cross
        + (1 - torch.cos(theta))[:, None, None] * torch.outer(axis, axis)
    )
    c = rot @ c
    s = _gate(torch.exp2(_randn(n, gen) * 1.0), 1, p, gen)
    return (vv + (eye - vv) * s[:, None, None]) @ c


def _reflect(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinate reflected about the image edges (-0.5 and size - 0.5), then clamped inside."""
    period = 2 * size
    c = torch.remainder(coord + 0.5, period)
    c = torch.where(c >= size, period - c, c) - 0.5
    return c.clamp(0, size - 1)


def bilinear_reflect(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """grid_sample(x, grid, bilinear, reflection padding, align_corners=False) written with gathers, so that
    it is twice differentiable in x (R1 on augmented reals needs that; aten's grid_sampler is not)."""
    n, c, h, w = x.shape
    gx = _reflect((grid[..., 0] + 1) * w / 2 - 0.5, w)
    gy = _reflect((grid[..., 1] + 1) * h / 2 - 0.5, h)
    x0, y0 = gx.floor().clamp(0, w - 1), gy.floor().clamp(0, h - 1)
    fx, fy = (gx - x0)[:, None], (gy - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    flat = x.reshape(n, c, h * w)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        idx = (yy * w + xx).reshape(n, 1, -1).expand(-1, c, -1)
        return flat.gather(2, idx).reshape(n, c, *yy.shape[1:])

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


def ada_augment(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Augment a batch (N, 3, H, W) in [-1, 1]; differentiable in x. p = 0 returns x unchanged. Computed in
    float32 (returned in float32), under autocast too: a half-precision sampling grid rounds pixel coordinates
    (bfloat16 keeps 8 bits: beyond 128 px bilinear becomes nearest) and would augment the fakes, which come in the
    amp dtype, differently from the float32 reals."""
    if p <= 0:
        return x
    with torch.autocast(x.device.type, enabled=False):
        return _augment(x.float(), p, gen)


def _augment(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    m = geometric_matrix(n, h, p, gen)
    col = to_device(color_matrix(n, p, gen).to(x.dtype), x.device)
    theta = to_device(m[:, :2, :].to(x.dtype), x.device)
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    x = bilinear_reflect(x, grid)
    x = torch.einsum("nij,njhw->nihw", col[:, :3, :3], x) + col[:, :3, 3, None, None]
    return x


class AdaptiveAugment:
    """ADA with its adaptive probability p; `state_dict()` goes into checkpoints."""

    def __init__(self, cfg: AdaConfig, batch_size: int, loss: str = "nonsaturating"):
        self.cfg, self.batch_size = cfg, batch_size
        # D's logits are read against the loss's level between real and fake (0 for the logistic and hinge losses,
        # 0.5 for lsgan's targets 1 and 0: against 0, lsgan's unsure D read as overfitting and drove p to 1)
        self.level = D_LEVEL.get(loss, 0.0)
        self.p = cfg.fixed_p if cfg.fixed_p is not None else cfg.initial_p
        # sign_sum: a tensor on D's device between adjustments (no device sync per step), a float in checkpoints.
        # Both are of the global batch: under DDP each step's sum is summed over the processes (`total`, queued on
        # the device), so every rank keeps the same p and a checkpoint, made by rank 0 between adjustments, holds
        # every rank's pending signs (it held rank 0's alone, and a resumed run moved p by other r_t).
        self.sign_sum: float | torch.Tensor = 0.0
        self.count, self.rt = 0, 0.0
        self.total: Callable[[torch.Tensor], torch.Tensor] = lambda x: x  # sum over processes (Dist.total)
        self.world = 1

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return ada_augment(x, self.p, gen)

    def observe(self, real_logits: torch.Tensor, step: int) -> None:
        """Accumulate sign(D(real) - level); every `interval` D updates move p towards the target r_t."""
        # integers: exact in float32 up to 2^24
        signs = torch.sign(real_logits.detach().float() - self.level)
        self.sign_sum = self.sign_sum + self.total(signs.sum())
        self.count += real_logits.numel() * self.world  # every rank's slice is the same size
        if (step + 1) % self.cfg.interval or not self.count:
            return
        self.rt = float(self.sign_sum) / self.count  # the one device sync
        self.sign_sum, self.count = 0.0, 0
        if self.cfg.fixed_p is None:
            delta = self.batch_size * self.cfg.interval / (self.cfg.speed_kimg * 1000)
            direction = (self.rt > self.cfg.target) - (self.rt < self.cfg.target)
            self.p = min(max(self.p + direction * delta, 0.0), 1.0)

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": float(self.sign_sum), "count": self.count, "rt": self.rt}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.sign_sum = float(state["p"]), float(state["sign_sum"])
        self.count, self.rt = int(state["count"]), float(state["rt"])
