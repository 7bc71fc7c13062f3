"""Exponential moving average of the generator's weights (used for sampling and evaluation)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """p_ema <- decay * p_ema + (1 - decay) * p; buffers (BN statistics) are copied. As multi-tensor ops: on
        CUDA a few kernels for the whole net each step instead of one per tensor (StyleGAN2's G at 256²: 98
        parameters and 26 buffers); on CPU the same per-tensor lerp_ and copy_, so the same values."""
        ema_params: list[torch.Tensor] = list(self.model.parameters())
        params: list[torch.Tensor] = list(model.parameters())
        ema_buffers, buffers = list(self.model.buffers()), list(model.buffers())
        if len(ema_params) != len(params) or len(ema_buffers) != len(buffers):
            raise ValueError("the EMA copy and the model have different parameters or buffers")
        if params:
            torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        if buffers:
            torch._foreach_copy_(ema_buffers, buffers)
