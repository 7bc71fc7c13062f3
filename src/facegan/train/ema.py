"""Exponential moving average of the generator's weights (used for sampling and evaluation)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """p_ema <- decay * p_ema + (1 - decay) * p; buffers (BN statistics) are copied. As multi-tensor ops, one
        per dtype (a list of mixed dtypes, BN's int64 counter among float buffers, takes the per-tensor route): on
        CUDA a few kernels for the whole net each step instead of one per tensor (StyleGAN2's G at 256²: 98
        parameters and 26 buffers); on CPU the same per-tensor lerp_ and copy_, so the same values."""
        ema_params, params = list(self.model.parameters()), list(model.parameters())
        ema_buffers, buffers = list(self.model.buffers()), list(model.buffers())
        if len(ema_params) != len(params) or len(ema_buffers) != len(buffers):
            raise ValueError("the EMA copy and the model have different parameters or buffers")
        for dst, src in _by_dtype(ema_params, params):
            torch._foreach_lerp_(dst, src, 1.0 - self.decay)
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
