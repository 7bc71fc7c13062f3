"""StyleGAN2 (Karras et al. 2020) in pure PyTorch: no custom CUDA ops, so it runs on CPU and any GPU.

Module and parameter names follow rosinality/stylegan2-pytorch, so its `.pt` checkpoints load with
a plain `load_state_dict` (see `facegan.models.transfer`). The FIR filters (upfirdn2d) are written
with standard convolutions; the maths is the paper's: mapping network with 100x lower learning rate,
modulated + demodulated convs, per-layer noise, skip generator, residual discriminator with a
minibatch-stddev feature. Widths follow stylegan2-ada: min(channel_base / resolution, channel_max).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from facegan import ops
from facegan.device import to_device
from facegan.ops.bias_act import bias_lrelu
from facegan.ops.conv import conv2d, conv_transpose2d
from facegan.ops.modconv import demod_noise_bias_lrelu, demodulation, modulated_1x1
from facegan.ops.resample import upfirdn2d

BLUR = (1, 3, 3, 1)
SQRT2 = math.sqrt(2)
SQRT_HALF = math.sqrt(0.5)


def log2_resolution(resolution: int) -> int:
    n = int(math.log2(resolution))
    if 2**n != resolution or resolution < 8:
        raise ValueError(f"StyleGAN2 needs a power-of-two resolution >= 8, got {resolution}")
    return n


def channels(resolution: int, base: int, cap: int) -> int:
    return max(1, min(base // resolution, cap))


def amp_from(resolution: int, blocks: int) -> int:
    """The lowest resolution that runs in the mixed-precision dtype when only the `blocks` highest-resolution
    blocks do (stylegan2-ada's num_fp16_res; never below 8 px); 0: every block follows the autocast context."""
    return max(2 ** (log2_resolution(resolution) + 1 - blocks), 8) if blocks else 0


def precision(x: torch.Tensor, resolution: int, lowest: int) -> AbstractContextManager:
    """Autocast off (float32) for a block below `lowest` px when per-block precision is on, else unchanged."""
    if lowest and resolution < lowest:
        return torch.autocast(x.device.type, enabled=False)
    return nullcontext()


def make_kernel(taps: tuple[int, ...] = BLUR) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


class Blur(nn.Module):
    kernel: torch.Tensor

    def __init__(self, pad: tuple[int, int], scale: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel() * scale**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    kernel: torch.Tensor

    def __init__(self, factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", make_kernel() * factor**2)
        p = len(BLUR) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU x sqrt(2), clamped to +-clamp when given (stylegan2-ada's conv_clamp, for fp16)."""

    def __init__(self, channels: int, clamp: float | None = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_lrelu(x, self.bias, clamp=self.clamp)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time, not at init)."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init)))
        self.scale, self.lr_mul, self.activate = lr_mul / math.sqrt(cin), lr_mul, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return bias_lrelu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale, self.stride, self.padding = 1 / math.sqrt(cin * k * k), stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class PixelNorm(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Conv whose weights are scaled per sample by the style, then demodulated to unit output variance."""

    def __init__(self, cin: int, cout: int, k: int, style_dim: int, demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k))
        self.modulation = EqualLinear(style_dim, cin, bias_init=1.0)
        self.scale, self.k, self.cin, self.cout = 1 / math.sqrt(cin * k * k), k, cin, cout
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            p = (len(BLUR) - 2) - (k - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), scale=2)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)
        return self._fused(x, s) if not self.training else self._scaled(x, s)

    def _scaled(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Training form: scale the input by the style, one shared-weight conv for the batch, scale the output
        by the demodulation coefficients. Same result as `_fused`, but its double backward (R1, path length)
        is that of an ordinary conv instead of a batch-grouped one, which is several times faster on GPUs."""
        out, d = self.undemodulated(x, s)
        return out if d is None else out * d.to(out.dtype).view(len(x), self.cout, 1, 1)

    def undemodulated(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training form up to its last multiplication: (the conv of the style-scaled input, the (N, out)
        demodulation coefficients or None), so that a layer can fold them into what follows."""
        weight = (self.scale * self.weight[0]).to(x.dtype)  # (cout, cin, k, k)
        if self.k == 1 and not self.upsample:
            out = modulated_1x1(x, weight, s)
            return out, demodulation(self.scale * self.weight[0], s) if self.demodulate else None
        x = x * s.to(x.dtype).view(len(x), self.cin, 1, 1)
        if self.upsample:
            out = self.blur(conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = conv2d(x, weight, padding=self.k // 2)
        return out, demodulation(self.scale * self.weight[0], s) if self.demodulate else None

    def _fused(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Sampling form: per-sample modulated weights, one grouped conv (rosinality's formulation)."""
        n, _, h, w = x.shape
        weight = self.scale * self.weight * s.view(n, 1, self.cin, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(n, self.cout, 1, 1, 1)
        x = x.reshape(1, n * self.cin, h, w)
        weight = weight.to(x.dtype)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(n * self.cin, self.cout, self.k, self.k)
            out = conv_transpose2d(x, weight, stride=2, groups=n)
            return self.blur(out.view(n, self.cout, *out.shape[-2:]))
        out = conv2d(x, weight.reshape(n * self.cout, self.cin, self.k, self.k), padding=self.k // 2, groups=n)
        return out.view(n, self.cout, h, w)


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class StyledConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, style_dim: int, upsample: bool = False, clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, k, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(cout, clamp)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if not self.conv.training:
            return self.activate(self.noise(self.conv(x, style), noise))
        out, d = self.conv.undemodulated(x, self.conv.modulation(style))
        assert d is not None, "a styled conv demodulates"
        return demod_noise_bias_lrelu(out, d, noise, self.noise.weight, self.activate.bias, self.activate.clamp)


class ToRGB(nn.Module):
    def __init__(self, cin: int, style_dim: int, upsample: bool = True, clamp: float | None = None):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(cin, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """This block's RGB added to the upsampled image of the blocks before; the image is kept in float32 whatever
        the block's precision (stylegan2-ada's toRGB output and skip): in bfloat16 each addition would round it by
        up to half a uint8 level near +-1."""
        out = self.conv(x, style) + self.bias.to(x.dtype)
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        out = out.to(torch.promote_types(out.dtype, torch.float32))  # float32, or a float64 net's own dtype
        if skip is None:
            return out
        with torch.autocast(out.device.type, enabled=False):  # the 3-channel upsample too, which autocast would cast
            return out + self.upsample(skip)


class ConstantInput(nn.Module):
    def __init__(self, c: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, c, size, size))

    def forward(self, n: int) -> torch.Tensor:
        return self.input.expand(n, -1, -1, -1)


class NoiseBuffers(nn.Module):
    """Fixed per-layer noise (rosinality's `noises`), used in eval mode for repeatable images."""

    def __init__(self, shapes: list[int]):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        for i, r in enumerate(shapes):
            self.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r, generator=gen))

    def get(self, i: int) -> torch.Tensor:
        return getattr(self, f"noise_{i}")


class Generator(nn.Module):
    """Mapping network z -> w, then a skip-architecture synthesis network driven by per-layer styles.

    forward(z, labels=None, psi=1, mix_z=None, mix_index=None, noise=None, return_w=False):
    - `labels`: taken for the trainer's one call form and ignored (a labelled StyleGAN2 is refused when built);
    - psi < 1 pulls w towards the tracked average `w_avg` (truncation trick);
    - mix_z/mix_index: style mixing, layers >= mix_index take their style from mix_z;
    - `noise`: per-layer noise; if None, training mode draws fresh noise, eval mode uses the fixed buffers.
    Under autocast with `amp_blocks` N > 0, only the blocks of the N highest resolutions run in the autocast dtype
    (the mapping network and the low-resolution blocks in float32); `conv_clamp` clamps every activation.
    """

    w_avg: torch.Tensor

    def __init__(
        self,
        resolution: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_base: int = 32768,
        channel_max: int = 512,
        lr_mlp: float = 0.01,
        w_avg_beta: float = 0.995,
        amp_blocks: int = 0,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.resolution, self.style_dim, self.w_avg_beta = resolution, style_dim, w_avg_beta
        self.amp_from = amp_from(resolution, amp_blocks)
        log_size = log2_resolution(resolution)
        ch = {2**i: channels(2**i, channel_base, channel_max) for i in range(2, log_size + 1)}
        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp)]
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, clamp=conv_clamp)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False, clamp=conv_clamp)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        cin = ch[4]
        for i in range(3, log_size + 1):
            cout = ch[2**i]
            self.convs.append(StyledConv(cin, cout, 3, style_dim, upsample=True, clamp=conv_clamp))
            self.convs.append(StyledConv(cout, cout, 3, style_dim, clamp=conv_clamp))
            self.to_rgbs.append(ToRGB(cout, style_dim, clamp=conv_clamp))
            cin = cout
        self.num_layers = (log_size - 2) * 2 + 1
        self.noises = NoiseBuffers([2 ** (2 + (i + 1) // 2) for i in range(self.num_layers)])
        self.n_latent = log_size * 2 - 2
        self.register_buffer("w_avg", torch.zeros(style_dim))

    def mapping(self, z: torch.Tensor, track: bool = True) -> torch.Tensor:
        """w of z; in a training pass (`track`) also one step of `w_avg`'s moving average. The style-mixing z's
        pass never moves it (stylegan2-ada's `skip_w_avg_update`); each other training pass of G does (the main
        one, and path length's on the steps it is due)."""
        with precision(z, 0, self.amp_from):  # float32 when blocks choose their precision
            w = self.style(z.float() if self.amp_from else z)
        if track and self.training and torch.is_grad_enabled() and self.w_avg_beta < 1:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().to(self.w_avg.dtype).mean(0).lerp(self.w_avg, self.w_avg_beta))
        return w

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        return w if psi == 1 else self.w_avg.to(w.dtype).lerp(w, psi)

    def noise_shapes(self, n: int) -> list[tuple[int, int, int, int]]:
        return [(n, 1, 2 ** (2 + (i + 1) // 2), 2 ** (2 + (i + 1) // 2)) for i in range(self.num_layers)]

    def _noise(self, n: int, like: torch.Tensor) -> list[torch.Tensor]:
        if not self.training:
            return [self.noises.get(i) for i in range(self.num_layers)]
        return [torch.randn(s, device=like.device) for s in self.noise_shapes(n)]

    def latents(
        self, z: torch.Tensor, psi: float = 1.0, mix_z: torch.Tensor | None = None, mix_index: int | None = None
    ) -> torch.Tensor:
        """Per-layer styles (N, n_latent, style_dim)."""
        w = self.truncate(self.mapping(z), psi)[:, None].repeat(1, self.n_latent, 1)
        if mix_z is not None and mix_index is not None:
            w2 = self.truncate(self.mapping(mix_z, track=False), psi)
            w[:, mix_index:] = w2[:, None]
        return w

    def synthesis(self, w: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        noise = noise if noise is not None else self._noise(len(w), w)
        with precision(w, 4, self.amp_from):
            x = self.conv1(self.input(len(w)), w[:, 0], noise[0])
            skip = self.to_rgb1(x, w[:, 1])
        i, res = 1, 4
        for conv_up, conv, n1, n2, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs, strict=True
        ):
            res *= 2
            with precision(w, res, self.amp_from):
                x = conv(conv_up(x, w[:, i], n1), w[:, i + 1], n2)
                skip = to_rgb(x, w[:, i + 2], skip)
            i += 2
        return skip

    def forward(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        psi: float = 1.0,
        mix_z: torch.Tensor | None = None,
        mix_index: int | None = None,
        noise: list[torch.Tensor] | None = None,
        return_w: bool = False,
    ):
        w = self.latents(z, psi, mix_z, mix_index)
        img = self.synthesis(w, noise)
        return (img, w) if return_w else img

    def mixing_kwargs(
        self,
        n: int,
        prob: float,
        gen: torch.Generator,
        device: torch.device,
        shard=lambda t: t,
        noise_gen: torch.Generator | None = None,
    ) -> dict:
        """Training-time inputs for the global batch of n, cut to this process's rows by `shard`: per-layer noise
        and, with probability `prob`, a second z for style mixing, drawn from the step's generator `gen`; the noise
        from `noise_gen` instead when given, on its device (one tensor a layer: none of G's inputs alias another)."""
        noise_gen = gen if noise_gen is None else noise_gen
        noise = [
            to_device(shard(torch.randn(s, generator=noise_gen, device=noise_gen.device)), device)
            for s in self.noise_shapes(n)
        ]
        kw: dict = {"noise": noise}
        if prob > 0 and torch.rand((), generator=gen).item() < prob:
            kw["mix_z"] = to_device(shard(torch.randn(n, self.style_dim, generator=gen)), device)
            kw["mix_index"] = int(torch.randint(1, self.n_latent, (), generator=gen))
        return kw


class ConvLayer(nn.Sequential):
    """[blur] -> equalised conv -> [bias + leaky ReLU]: rosinality's ConvLayer, same indices."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        downsample: bool = False,
        bias: bool = True,
        activate: bool = True,
        clamp: float | None = None,
    ):
        layers: list[nn.Module] = []
        stride, padding = 1, k // 2
        if downsample:
            p = (len(BLUR) - 2) + (k - 1)
            layers.append(Blur(((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        layers.append(EqualConv2d(cin, cout, k, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(cout, clamp))
        super().__init__(*layers)
        self.downsample, self.activate = downsample, activate

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """The layers, the output times `gain`. With the custom ops on, `gain` and the activation's sqrt(2)
        are folded into the conv's weight and bias (lrelu(a z) = a lrelu(z) for a > 0): one convolution with
        its bias, then one activation pass; a strided 1x1 conv's blur is computed only at the pixels it reads
        (one strided filter, a quarter of the work)."""
        if not ops.fast():
            out = super().forward(x)
            return out if gain == 1 else out * gain
        blur = cast(Blur, self[0]) if self.downsample else None
        conv = cast(EqualConv2d, self[1 if self.downsample else 0])
        act = cast(FusedLeakyReLU, self[-1]) if self.activate else None
        stride = conv.stride
        if blur is not None and stride > 1 and conv.weight.shape[-1] == 1:  # 1x1: filter only where it samples
            x, stride = upfirdn2d(x, blur.kernel, down=stride, pad=blur.pad), 1
        elif blur is not None:
            x = blur(x)
        if act is None:
            bias = conv.bias * gain if conv.bias is not None else None
            return conv2d(x, conv.weight * (conv.scale * gain), bias, stride, conv.padding)
        g = gain * SQRT2
        y = conv2d(x, conv.weight * (conv.scale * g), act.bias * g, stride, conv.padding)
        return bias_lrelu(y, None, gain=1.0, clamp=act.clamp * gain if act.clamp is not None else None)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, clamp: float | None = None):
        super().__init__()
        self.conv1 = ConvLayer(cin, cin, 3, clamp=clamp)
        self.conv2 = ConvLayer(cin, cout, 3, downsample=True, clamp=clamp)
        self.skip = ConvLayer(cin, cout, 1, downsample=True, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not ops.fast():
            return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2
        # 1/sqrt(2) folded into both branches' weights; the skip's fresh output takes the sum in place
        return self.skip(x, SQRT_HALF).add_(self.conv2(self.conv1(x), SQRT_HALF))


class Discriminator(nn.Module):
    """Residual D: fromRGB, one ResBlock per resolution down to 4x4, minibatch stddev, two dense layers.

    `blocks` (fromRGB first, then the ResBlocks from the highest resolution) is what FreezeD freezes.
    `amp_blocks` and `conv_clamp` as in the Generator (the epilogue after the blocks stays float32).
    """

    joint_batches = True  # forward(x, parts=k): k batches in one pass, each sample's logit as in its own batch

    def __init__(
        self,
        resolution: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        stddev_group: int = 4,
        amp_blocks: int = 0,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        log_size = log2_resolution(resolution)
        self.amp_from = amp_from(resolution, amp_blocks)
        ch = {2**i: channels(2**i, channel_base, channel_max) for i in range(2, log_size + 1)}
        layers: list[nn.Module] = [ConvLayer(3, ch[resolution], 1, clamp=conv_clamp)]
        self.block_resolutions = [resolution]
        cin = ch[resolution]
        for i in range(log_size, 2, -1):
            layers.append(ResBlock(cin, ch[2 ** (i - 1)], conv_clamp))
            self.block_resolutions.append(2**i)
            cin = ch[2 ** (i - 1)]
        self.convs = nn.Sequential(*layers)
        self.stddev_group = stddev_group
        self.final_conv = ConvLayer(cin + 1, ch[4], 3, clamp=conv_clamp)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, ch[4], activate=True), EqualLinear(ch[4], 1))

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.convs)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, parts: int = 1) -> tuple[torch.Tensor, None]:
        """D's logits for x; x may be `parts` batches of equal size in one (reals and fakes): each sample's
        logit is then what its own batch alone gives (minibatch-stddev groups stay inside it)."""
        if self.amp_from:
            out = x
            for block, res in zip(self.convs, self.block_resolutions, strict=True):
                with precision(x, res, self.amp_from):
                    out = block(out if res >= self.amp_from else out.float())
            with precision(x, 0, self.amp_from):
                return self._epilogue(out.float(), parts)
        return self._epilogue(self.convs(x), parts)

    def _epilogue(self, out: torch.Tensor, parts: int = 1) -> tuple[torch.Tensor, None]:
        """Minibatch standard deviation, the last conv and the two dense layers."""
        n, c, h, w = out.shape
        if n % parts:
            raise ValueError(f"a batch of {n} does not split into {parts} equal parts")
        group = min(n // parts, self.stddev_group)
        while (n // parts) % group:  # the largest group size <= stddev_group that divides each part
            group -= 1
        # groups of consecutive samples (rosinality strides them): N DDP processes sharing one global
        # batch then form exactly the groups a single process would
        y = out.float().view(-1, group, c, h, w)
        y = torch.sqrt(y.var(1, unbiased=False) + 1e-8).mean([1, 2, 3])  # one value per group
        y = y.repeat_interleave(group)[:, None, None, None].expand(n, 1, h, w).to(out.dtype)
        out = self.final_conv(torch.cat([out, y], 1))
        return self.final_linear(out.flatten(1)).squeeze(1), None
