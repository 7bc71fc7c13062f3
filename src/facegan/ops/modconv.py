"""StyleGAN2's modulated convolution, the parts around the convolution itself.

`demodulation`: d[n, o] = 1 / sqrt(sum_{i,k} (w[o, i, k] s[n, i])^2 + eps). The reference forms the
(N, out, in, k, k) tensor of modulated weights to sum it; here the sum over k is taken once on the weight and the
rest is one (N, in) x (in, out) product, a few thousand times less work on activations-sized tensors (same value,
other summation order).

`demod_noise_bias_lrelu`: the rest of a styled layer, lrelu(conv * d + noise_weight * noise + b) * gain (clamped),
as one autograd node. Written plainly it is six passes over the activations forward and about eight backward;
here the gain is folded into d, the noise weight and b (lrelu(a z) = a lrelu(z) for a > 0), the forward is three
passes (one multiply-add with the noise, the bias, the activation) and keeps the output and the conv result; the
backward is made of differentiable ops, so path length can differentiate it again.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from facegan import ops
from facegan.ops.bias_act import ALPHA, GAIN, activate, bias_lrelu, lrelu_backward
from facegan.ops.conv import weight_grads_wanted


def demodulation(w: torch.Tensor, s: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(N, out) coefficients for weight w (out, in, kh, kw) modulated by styles s (N, in); in float32 (or w's wider
    dtype) under autocast too, as the reference's sum of squares is (autocast would run the product in half)."""
    if not ops.fast():
        return torch.rsqrt((w[None] * s[:, None, :, None, None]).pow(2).sum([2, 3, 4]) + eps)
    dtype = torch.promote_types(torch.promote_types(w.dtype, s.dtype), torch.float32)
    with torch.autocast(s.device.type, enabled=False):
        return torch.rsqrt(s.to(dtype).pow(2) @ w.to(dtype).pow(2).sum([2, 3]).t() + eps)


def modulated_1x1(x: torch.Tensor, weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """conv2d(x * s, weight) for a 1x1 weight (out, in, 1, 1) and styles s (N, in): with the custom ops, per-sample
    weights (N, out, in) and one batched matrix product over the pixels, in x's memory format. For few output
    channels (toRGB) that is half the time of scaling x and convolving, forward + backward (bench/stylegan2_speed.py),
    and it never forms the scaled copy of x."""
    n, cin, h, w = x.shape
    if not ops.fast():
        return F.conv2d(x * s.to(x.dtype).view(n, cin, 1, 1), weight)
    per_sample = weight.flatten(1)[None] * s.to(x.dtype)[:, None, :]  # (N, out, in)
    if x.is_contiguous(memory_format=torch.channels_last):  # pixels x channels: (N, HW, in) @ (N, in, out)
        out = torch.bmm(x.permute(0, 2, 3, 1).reshape(n, h * w, cin), per_sample.transpose(1, 2))
        return out.view(n, h, w, -1).permute(0, 3, 1, 2)
    return torch.bmm(per_sample, x.reshape(n, cin, h * w)).view(n, -1, h, w)


class _DemodAct(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        out: torch.Tensor,
        d: torch.Tensor,
        noise: torch.Tensor,
        noise_weight: torch.Tensor,
        b: torch.Tensor,
        gain: float,
        clamp: float | None,
    ) -> torch.Tensor:
        n, c = out.shape[:2]
        scaled_noise = noise.to(out.dtype) * (gain * noise_weight).to(out.dtype)  # (N, 1, H, W): small
        pre = torch.addcmul(scaled_noise, out, (gain * d).to(out.dtype).view(n, c, 1, 1))
        bias = (gain * b).to(out.dtype).view(1, c, 1, 1)
        y = activate(pre.add_(bias) if ops.inplace() else pre + bias, ALPHA, 1.0, clamp, owned=True)
        ctx.gain, ctx.clamp, ctx.dtypes = gain, clamp, (d.dtype, noise_weight.dtype, b.dtype)
        ctx.save_for_backward(out, d, noise, noise_weight, y)
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        out, d, noise, noise_weight, y = ctx.saved_tensors
        gain, (d_dtype, nw_dtype, b_dtype) = ctx.gain, ctx.dtypes
        g = lrelu_backward(gy, y, ALPHA, 1.0, ctx.clamp)  # d loss / d pre-activation
        n, c = out.shape[:2]
        need = ctx.needs_input_grad
        g_out = g_d = g_noise = g_nw = g_b = None
        if need[0]:
            g_out = g * (gain * d).to(g.dtype).view(n, c, 1, 1)
        acc = torch.promote_types(g.dtype, torch.float32)  # reductions of fp16 / bf16 gradients sum in float32
        if need[1]:
            g_d = ((g * out).sum((2, 3), dtype=acc) * gain).to(d_dtype)
        if need[2] or (need[3] and weight_grads_wanted()):
            g_c = g.sum(1, keepdim=True)  # noise is (N, 1, H, W): its gradient sums over channels
            if need[2]:
                g_noise = g_c * (gain * noise_weight).to(g.dtype)
            if need[3] and weight_grads_wanted():
                g_nw = ((g_c * noise.to(g.dtype)).sum(dtype=acc) * gain).to(nw_dtype).view_as(noise_weight)
        if need[4] and weight_grads_wanted():
            g_b = (g.sum((0, 2, 3), dtype=acc) * gain).to(b_dtype)
        return g_out, g_d, g_noise, g_nw, g_b, None, None


def demod_noise_bias_lrelu(
    out: torch.Tensor,
    d: torch.Tensor,
    noise: torch.Tensor,
    noise_weight: torch.Tensor,
    b: torch.Tensor,
    clamp: float | None = None,
) -> torch.Tensor:
    """lrelu(out * d + noise_weight * noise + b) * sqrt(2), clamped to [-clamp, clamp] when given: a styled layer
    after its convolution (out: N, C, H, W; d: N, C demodulation coefficients; noise: N, 1, H, W)."""
    tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (out, d, noise, noise_weight, b))
    if ops.fast() and tracked:
        return _DemodAct.apply(out, d, noise, noise_weight, b, GAIN, clamp)
    out = out * d.to(out.dtype).view(*d.shape, 1, 1)
    return bias_lrelu(out + noise_weight.to(out.dtype) * noise.to(out.dtype), b, clamp=clamp)
