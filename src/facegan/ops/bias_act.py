"""Bias + leaky ReLU x gain (+ clamp) as one autograd node.

Written plainly it is three nodes that keep three activations; here one node keeps only its output, whose
sign says where the slope is 1 or `alpha` (gain > 0). Its gradient is a node of its own that is linear in
the incoming gradient with a piecewise-constant slope, so differentiating it again (R1, path length) is one
more multiplication. Without a bias and with gain 1 (a caller that folded both into its convolution, since
lrelu(a z) = a lrelu(z) for a > 0) the node is one pass forward and one backward.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from facegan import ops
from facegan.ops.conv import weight_grads_wanted

ALPHA = 0.2
GAIN = math.sqrt(2)


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.ndim - 2)


def _slope_times(g: torch.Tensor, y: torch.Tensor, alpha: float, gain: float, clamp: float | None) -> torch.Tensor:
    """g * d y / d (x + b): gain where y > 0, alpha * gain elsewhere, 0 where the output was clamped."""
    out = torch.ops.aten.leaky_relu_backward(g, y, alpha, True)
    inplace = ops.inplace()
    if gain != 1:
        out = out.mul_(gain) if inplace else out * gain
    if clamp is not None:
        out = out.masked_fill_(y.abs() >= clamp, 0) if inplace else out.masked_fill(y.abs() >= clamp, 0)
    return out


def activate(z: torch.Tensor, alpha: float, gain: float, clamp: float | None, owned: bool = False) -> torch.Tensor:
    """leaky_relu(z, alpha) * gain, clamped to [-clamp, clamp] when given: the forward of the activation nodes.
    In place where ops.inplace() allows it (z itself only when `owned`, a buffer of the node's own)."""
    inplace = ops.inplace()
    y = F.leaky_relu(z, alpha, inplace=inplace and owned)
    if gain != 1:
        y = y.mul_(gain) if inplace else y * gain
    if clamp is not None:
        y = y.clamp_(-clamp, clamp) if inplace else y.clamp(-clamp, clamp)
    return y


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, b: torch.Tensor | None, alpha: float, gain: float, clamp: float | None
    ) -> torch.Tensor:
        z = x if b is None else x + b.view(_shape(x)).to(x.dtype)
        y = activate(z, alpha, gain, clamp, owned=z is not x)
        ctx.args, ctx.bias_dtype = (alpha, gain, clamp), None if b is None else b.dtype
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        gx = _BiasActGrad.apply(gy, y, *ctx.args)
        gb = None
        if ctx.needs_input_grad[1] and weight_grads_wanted():
            gb = gx.sum([0, *range(2, gx.ndim)]).to(ctx.bias_dtype)  # float32 master bias under fp16 activations
        return (gx if ctx.needs_input_grad[0] else None), gb, None, None, None


class _BiasActGrad(torch.autograd.Function):
    """gx = gy * slope(y): linear in gy, and the slope is constant almost everywhere in y."""

    @staticmethod
    def forward(
        ctx: Any, gy: torch.Tensor, y: torch.Tensor, alpha: float, gain: float, clamp: float | None
    ) -> torch.Tensor:
        ctx.args = (alpha, gain, clamp)
        ctx.save_for_backward(y)
        return _slope_times(gy, y, alpha, gain, clamp)

    @staticmethod
    def backward(ctx: Any, ggx: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        return _BiasActGrad.apply(ggx, y, *ctx.args), None, None, None, None


def lrelu_backward(
    gy: torch.Tensor, y: torch.Tensor, alpha: float = ALPHA, gain: float = GAIN, clamp: float | None = None
) -> torch.Tensor:
    """The gradient through an activation from its output y: gy * (gain, alpha * gain or 0 where clamped), as a
    node that can be differentiated again (the slope is constant almost everywhere in y)."""
    return _BiasActGrad.apply(gy, y, alpha, gain, clamp)


def bias_lrelu(
    x: torch.Tensor, b: torch.Tensor | None, alpha: float = ALPHA, gain: float = GAIN, clamp: float | None = None
) -> torch.Tensor:
    """leaky_relu(x + b, alpha) * gain, clamped to [-clamp, clamp] when given; b broadcast over dim 1 (or none)."""
    tracked = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
    if ops.fast() and tracked:
        return _BiasAct.apply(x, b, alpha, gain, clamp)
    y = F.leaky_relu(x if b is None else x + b.view(_shape(x)).to(x.dtype), alpha) * gain
    return y.clamp(-clamp, clamp) if clamp is not None else y
