"""FIR resampling (upfirdn2d: upsample by zero insertion, pad, filter, downsample) in the fewest kernels.

The reference composition is four steps (zero insertion, padding, a depthwise convolution at the upsampled
size, a strided slice). Here upsampling is one strided depthwise `conv_transpose2d` (it inserts the zeros
and filters in one pass, then a crop), downsampling one strided depthwise `conv2d` (padding folded in when
symmetric), and both go through `facegan.ops.conv`, so their double backward is cheap too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facegan import ops
from facegan.ops.conv import conv2d, conv_transpose2d


def _depthwise(kernel: torch.Tensor, c: int, like: torch.Tensor) -> torch.Tensor:
    return kernel[None, None].to(like.dtype).expand(c, 1, *kernel.shape)


def upfirdn2d_reference(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """The plain composition (the same in both directions of each spatial axis)."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    x = F.conv2d(x, _depthwise(kernel.flip(0, 1), c, x), groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by `up` (zero insertion), pad by `pad` (before, after) on each side, filter with `kernel`
    (a true convolution: the kernel is flipped as in upfirdn), keep every `down`-th sample."""
    if not ops.fast() or (up > 1 and down > 1):
        return upfirdn2d_reference(x, kernel, up, down, pad)
    c = x.shape[1]
    if up > 1:
        # convT[j] = sum_i x[i] kernel[j - up*i]: the reference's output m is convT[m + k - 1 - pad[0]] on each
        # axis, k that axis's kernel size; F.pad with negative amounts crops
        y = conv_transpose2d(x, _depthwise(kernel, c, x), stride=up, groups=c)
        crop: list[int] = []
        for axis in (3, 2):  # F.pad's order: width first
            k = kernel.shape[axis - 2]
            start = k - 1 - pad[0]
            end = start + up * x.shape[axis] + pad[0] + pad[1] - k + 1
            crop += [-start, end - y.shape[axis]]
        return F.pad(y, crop)
    weight = _depthwise(kernel.flip(0, 1), c, x)
    if pad[0] == pad[1]:
        return conv2d(x, weight, stride=down, padding=pad[0], groups=c)
    return conv2d(F.pad(x, (pad[0], pad[1], pad[0], pad[1])), weight, stride=down, groups=c)
