"""Exponential moving average of the generator's weights (used for sampling and evaluation)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn


class EMA:
    """G's weights averaged over training steps. With `rampup` r, the decay at step t (0-based) is
    min(decay, 0.5^(1/(r*t))) (stylegan2-ada's ema_rampup): a half-life of r*t steps, so the average of a short run
    (or of a fine-tune, whose steps count from 0) is not mostly G's starting weights; decay^t of them otherwise."""

    def __init__(self, model: nn.Module, decay: float, rampup: float | None = None):
        self.decay, self.rampup = decay, rampup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def beta(self, step: int) -> float:
        """The decay of the update after step `step` (0-based)."""
        if self.rampup is None:
            return self.decay
        return min(self.decay, 0.5 ** (1 / max(self.rampup * step, 1e-8)))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """p_ema <- beta * p_ema + (1 - beta) * p, beta = self.beta(step) (`decay` without a step); buffers (BN
        statistics) are copied. As multi-tensor ops, one
        per dtype (a list of mixed dtypes, BN's int64 counter among float buffers, takes the per-tensor route): on
        CUDA a few kernels for the whole net each step instead of one per tensor (StyleGAN2's G at 256²: 98
        parameters and 26 buffers); on CPU the same per-tensor lerp_ and copy_, so the same values."""
        ema_params, params = list(self.model.parameters()), list(model.parameters())
        ema_buffers, buffers = list(self.model.buffers()), list(model.buffers())
        if len(ema_params) != len(params) or len(ema_buffers) != len(buffers):
            raise ValueError("the EMA copy and the model have different parameters or buffers")
        beta = self.decay if step is None else self.beta(step)
        for dst, src in _by_dtype(ema_params, params):
            torch._foreach_lerp_(dst, src, 1.0 - beta)
        for dst, src in _by_dtype(ema_buffers, buffers):
            torch._foreach_copy_(dst, src)


def _by_dtype(
    dsts: Sequence[torch.Tensor], srcs: Sequence[torch.Tensor]
) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """(destinations, sources) grouped by the sources' device and dtype."""
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for dst, src in zip(dsts, srcs, strict=True):
        group = groups.setdefault((src.device, src.dtype), ([], []))
        group[0].append(dst)
        group[1].append(src)
    return list(groups.values())


STANDING_BATCHES = 16  # batches of the training batch size whose statistics a sampled EMA net normalises with


@torch.no_grad()
def standing_stats(model: nn.Module, inputs: Callable[[int], tuple[torch.Tensor, ...]], batches: int) -> None:
    """Give `model`'s BatchNorm layers running statistics of its own: their average over `batches` forward passes of
    `inputs(i)` in train mode. An EMA copy otherwise normalises with the statistics the live G gathered (`update`
    copies them), which do not fit the averaged weights: a DCGAN with ema 0.99 sampled images of std 0.05 where its
    own statistics give 0.23 (BigGAN's "standing statistics" fix). Nets without BatchNorm are left as they are."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the passes
    was = model.training
    model.train()
    try:
        for i in range(batches):
            model(*inputs(i))
    finally:
        model.train(was)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
