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
        """p_ema <- decay * p_ema + (1 - decay) * p; buffers (BN statistics) are copied."""
        for pe, p in zip(self.model.parameters(), model.parameters(), strict=True):
            pe.lerp_(p, 1.0 - self.decay)
        for be, b in zip(self.model.buffers(), model.buffers(), strict=True):
            be.copy_(b)
