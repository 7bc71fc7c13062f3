"""2-D convolutions whose backward pass is made of convolutions again (the idea of stylegan2-ada's
conv2d_gradfix, written afresh).

PyTorch's own conv backward is one opaque node; differentiating it again (R1's |grad D(x)|^2, path length's
|J^T y|) goes through its generic double backward. Here the input gradient is a `conv_transpose2d` (or
`conv2d`) node and the weight gradient a node whose own backward is two convolutions, so second-order terms
cost what first-order ones do. Inside `no_weight_grads()` the first backward skips weight (and bias)
gradients: R1 and path length only need the gradient with respect to the input (or w) there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from facegan import ops

_NO_WEIGHT_GRADS = [0]
_TWICE = [0]


@contextmanager
def no_weight_grads() -> Iterator[None]:
    """Backward passes inside the block compute no gradients for conv weights and biases (first-order
    gradients taken with respect to inputs only, as R1 and path length take them)."""
    _NO_WEIGHT_GRADS[0] += 1
    try:
        yield
    finally:
        _NO_WEIGHT_GRADS[0] -= 1


def weight_grads_wanted() -> bool:
    return _NO_WEIGHT_GRADS[0] == 0


@contextmanager
def differentiated_twice() -> Iterator[None]:
    """Forward passes inside the block build a graph a penalty differentiates twice (R1, WGAN-GP, WGAN-div):
    the `Conv2d` modules convolve through the node below there, and as plain nn.Conv2d everywhere else."""
    _TWICE[0] += 1
    try:
        yield
    finally:
        _TWICE[0] -= 1


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class Geometry:
    """Stride, padding and groups of one convolution, and whether it is transposed."""

    transpose: bool
    stride: tuple[int, int]
    padding: tuple[int, int]
    output_padding: tuple[int, int]
    groups: int

    def plain(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        if self.transpose:
            return F.conv_transpose2d(x, w, b, self.stride, self.padding, self.output_padding, self.groups)
        return F.conv2d(x, w, b, self.stride, self.padding, 1, self.groups)

    def adjoint(self, x_shape: torch.Size, y_shape: torch.Size, kernel: torch.Size) -> Geometry:
        """The convolution with the same weight that carries a gradient of the output back to the input."""
        if self.transpose:
            return Geometry(False, self.stride, self.padding, (0, 0), self.groups)
        extra = tuple(
            x - ((y - 1) * s - 2 * p + k)
            for x, y, s, p, k in zip(x_shape[-2:], y_shape[-2:], self.stride, self.padding, kernel, strict=True)
        )
        return Geometry(True, self.stride, self.padding, (extra[0], extra[1]), self.groups)

    def adjoint_conv(self, w: torch.Tensor, x_shape: torch.Size, y_shape: torch.Size) -> tuple[torch.Tensor, Geometry]:
        """(weight, geometry) of the convolution that carries an output gradient back to the input. For a
        depthwise stride-1 conv (the FIR filters) that is a conv with the flipped kernel: oneDNN's depthwise
        conv is up to twice as fast as its transposed one (bench/stylegan2_speed.py's machine)."""
        k = w.shape[-2:]
        depthwise = w.shape[1] == 1 and w.shape[0] == self.groups > 1 and not self.transpose
        if depthwise and self.stride == (1, 1) and all(p <= n - 1 for p, n in zip(self.padding, k, strict=True)):
            pad = (k[0] - 1 - self.padding[0], k[1] - 1 - self.padding[1])
            return w.flip(2, 3), Geometry(False, (1, 1), pad, (0, 0), self.groups)
        return w, self.adjoint(x_shape, y_shape, k)

    def weight_grad(self, gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """d loss / d weight from the output gradient and the input (w only gives the shape and layout)."""
        return torch.ops.aten.convolution_backward(
            gy,
            x,
            w,
            None,
            self.stride,
            self.padding,
            (1, 1),
            self.transpose,
            self.output_padding,
            self.groups,
            (False, True, False),
        )[1]


class _Conv(torch.autograd.Function):
    """y = conv(x, w) + b; backward: the adjoint convolution for x, `_WeightGrad` for w."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, geo: Geometry) -> torch.Tensor:
        ctx.geo = geo
        ctx.save_for_backward(x, w)
        return geo.plain(x, w, b)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        geo: Geometry = ctx.geo
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            w_adj, geo_adj = geo.adjoint_conv(w, x.shape, gy.shape)
            gx = _Conv.apply(gy, w_adj, None, geo_adj)
        if weight_grads_wanted():
            if ctx.needs_input_grad[1]:
                gw = _WeightGrad.apply(gy, x, w.detach(), geo)
            if ctx.needs_input_grad[2]:
                gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None


class _WeightGrad(torch.autograd.Function):
    """gw(gy, x), bilinear: <gw, v> = <gy, conv(x, v)>, so its backward is conv(x, .) for gy and the adjoint
    convolution of gy for x."""

    @staticmethod
    def forward(ctx: Any, gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, geo: Geometry) -> torch.Tensor:
        ctx.geo = geo
        ctx.save_for_backward(gy, x)
        return geo.weight_grad(gy, x, w)

    @staticmethod
    def backward(ctx: Any, ggw: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        gy, x = ctx.saved_tensors
        geo: Geometry = ctx.geo
        g_gy = _Conv.apply(x, ggw, None, geo) if ctx.needs_input_grad[0] else None
        g_x = (
            _Conv.apply(gy, ggw, None, geo.adjoint(x.shape, gy.shape, ggw.shape[-2:]))
            if ctx.needs_input_grad[1]
            else None
        )
        return g_gy, g_x, None, None


def _run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, geo: Geometry) -> torch.Tensor:
    tracked = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad))
    if ops.fast() and tracked:
        device = x.device.type
        if torch.is_autocast_enabled(device):  # cast as autocast would, before the node saves its inputs
            dtype = torch.get_autocast_dtype(device)
            x, w, b = x.to(dtype), w.to(dtype), b.to(dtype) if b is not None else None
        return _Conv.apply(x, w, b, geo)
    return geo.plain(x, w, b)


def conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
) -> torch.Tensor:
    """F.conv2d (dilation 1) with a backward made of convolutions."""
    return _run(x, w, b, Geometry(False, _pair(stride), _pair(padding), (0, 0), groups))


def conv_transpose2d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    output_padding: int | tuple[int, int] = 0,
    groups: int = 1,
) -> torch.Tensor:
    """F.conv_transpose2d (dilation 1) with a backward made of convolutions."""
    return _run(x, w, b, Geometry(True, _pair(stride), _pair(padding), _pair(output_padding), groups))


class Conv2d(torch.nn.Conv2d):
    """`nn.Conv2d` (zero padding, dilation 1) that convolves through `conv2d` above in the passes a penalty
    differentiates twice (`differentiated_twice()`: the DCGAN family's D under R1, WGAN-GP, WGAN-div), so their
    double backward is ordinary convolutions. Every other pass is nn.Conv2d's own, one native backward call and no
    Python node: those steps are launch-bound at the DCGAN family's sizes, where the node's Python cost showed (a
    DCGAN D with the node in every pass: 1.13-1.25x the step time on an H200, 1.00-1.04x on a CPU;
    docs/benchmarks.md). The same parameters and state-dict keys as nn.Conv2d; spectral norm and FreezeD treat it
    as one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or self.dilation != (1, 1) or isinstance(self.padding, str):
            raise ValueError("facegan.ops.conv.Conv2d: zero padding given as numbers, dilation 1 only")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _TWICE[0]:
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)  # type: ignore[arg-type]
