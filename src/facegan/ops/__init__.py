"""Training-speed building blocks of the style-based nets, in pure PyTorch (no C++/CUDA extensions).

- `conv`: conv2d / conv_transpose2d whose backward is itself written with conv calls, so the double backward
  that R1 and path length need is two ordinary convolutions instead of PyTorch's generic double backward;
- `bias_act`: bias + leaky ReLU x gain (+ clamp) as one autograd node that keeps only its output;
- `modconv`: the demodulation as a matrix product, a styled layer's epilogue (demodulate, noise, bias,
  activation) as one node, and 1x1 modulated convolutions (toRGB) as one batched matmul;
- `resample`: FIR up/down-sampling with one strided (transposed) depthwise convolution each.

Each op falls back to the plain PyTorch composition when `fast_ops(False)` is active, and so do the choices
the StyleGAN2 nets and trainer make with it (D's gains folded into its convolutions, the skip's blur at the
sampled pixels, reals and fakes in one D pass): the benchmarks time that reference path in the same process,
and tests compare the two.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_FAST = [True]


def fast() -> bool:
    """Whether the custom ops are in use (else the plain PyTorch composition)."""
    return _FAST[0]


def inplace() -> bool:
    """Whether the ops' autograd nodes may write their outputs in place (eager: saves activation-sized copies).
    Under torch.compile they write out of place: inductor fuses either way, and torch 2.11 routes the gradient of
    an autograd.Function whose output was written in place to the wrong slot, so every gradient behind it comes
    out zero (pytorch/pytorch#180642; not in 2.13)."""
    return not torch.compiler.is_compiling()


@contextmanager
def fast_ops(enabled: bool) -> Iterator[None]:
    """Use the custom ops (True) or the plain PyTorch reference path (False) inside the block."""
    before = _FAST[0]
    _FAST[0] = enabled
    try:
        yield
    finally:
        _FAST[0] = before
