"""Demodulation coefficients of StyleGAN2's modulated convolution.

d[n, o] = 1 / sqrt(sum_{i,k} (w[o, i, k] s[n, i])^2 + eps). The reference forms the (N, out, in, k, k) tensor of
modulated weights to sum it; here the sum over k is taken once on the weight and the rest is one (N, in) x
(in, out) product, a few thousand times less work on activations-sized tensors (same value, other summation
order).
"""

from __future__ import annotations

import torch

from facegan import ops


def demodulation(w: torch.Tensor, s: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(N, out) coefficients for weight w (out, in, kh, kw) modulated by styles s (N, in)."""
    if not ops.fast():
        return torch.rsqrt((w[None] * s[:, None, :, None, None]).pow(2).sum([2, 3, 4]) + eps)
    return torch.rsqrt(s.pow(2) @ w.pow(2).sum([2, 3]).t() + eps)
