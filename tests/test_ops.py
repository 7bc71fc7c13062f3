"""facegan.ops: the custom convolution, bias + activation and resampling ops against plain PyTorch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from facegan import ops
from facegan.losses import gradient_penalty, r1_penalty
from facegan.ops.bias_act import bias_lrelu
from facegan.ops.conv import conv2d, conv_transpose2d, differentiated_twice, no_weight_grads
from facegan.ops.modconv import demod_noise_bias_lrelu, modulated_1x1
from facegan.ops.resample import upfirdn2d, upfirdn2d_reference

D64 = torch.float64


def _t(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64).requires_grad_(True)


CONVS = [  # (stride, padding, groups, cin, cout, k)
    (1, 1, 1, 4, 6, 3),
    (2, 1, 1, 4, 6, 3),
    (2, 0, 2, 4, 6, 3),
    (1, 0, 4, 4, 4, 4),  # depthwise, even kernel (the FIR filters)
    (2, 2, 1, 3, 5, 1),
    (1, 1, 2, 2, 4, 3),  # grouped, one input channel per group, two outputs: not depthwise
]


@pytest.mark.parametrize(("stride", "padding", "groups", "cin", "cout", "k"), CONVS)
def test_conv2d_gradcheck_and_gradgradcheck_against_the_definition(stride, padding, groups, cin, cout, k):
    x, w, b = _t(2, cin, 7, 6), _t(cout, cin // groups, k, k, seed=1), _t(cout, seed=2)
    ours = lambda x, w, b: conv2d(x, w, b, stride, padding, groups)  # noqa: E731
    assert torch.allclose(ours(x, w, b), F.conv2d(x, w, b, stride, padding, 1, groups))
    assert gradcheck(ours, (x, w, b))
    assert gradgradcheck(ours, (x, w, b))
    # first and second derivatives equal plain PyTorch's
    gy = _t(*ours(x, w, b).shape, seed=3)
    for fn in (ours, lambda x, w, b: F.conv2d(x, w, b, stride, padding, 1, groups)):
        grads = torch.autograd.grad((fn(x, w, b) * gy).sum(), (x, w, b), create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), (x, w, b), allow_unused=True)
        if fn is ours:
            mine = (grads, second)
        else:
            for a, r in zip([*mine[0], *mine[1]], [*grads, *second], strict=True):
                assert (a is None and r is None) or torch.allclose(a, r, atol=1e-10)


@pytest.mark.parametrize(("stride", "padding", "groups", "cin", "cout", "k"), CONVS)
def test_conv_transpose2d_gradcheck_and_gradgradcheck(stride, padding, groups, cin, cout, k):
    x, w = _t(2, cin, 5, 4), _t(cin, cout // groups, k, k, seed=1)
    extra = 1 if stride == 2 else 0
    ours = lambda x, w: conv_transpose2d(x, w, None, stride, padding, extra, groups)  # noqa: E731
    assert torch.allclose(ours(x, w), F.conv_transpose2d(x, w, None, stride, padding, extra, groups))
    assert gradcheck(ours, (x, w))
    assert gradgradcheck(ours, (x, w))


def test_plain_path_is_pytorch_itself():
    x, w = _t(1, 2, 5, 5), _t(3, 2, 3, 3)
    with ops.fast_ops(False):
        y = conv2d(x, w, padding=1)
    assert y.grad_fn.name() == "ConvolutionBackward0"
    assert conv2d(x, w, padding=1).grad_fn.name() == "_ConvBackward"
    assert ops.fast()


def test_no_weight_grads_skips_only_the_weight_gradients():
    x, w, b = _t(2, 3, 6, 6), _t(4, 3, 3, 3), _t(4)
    gx_all, gw_first, gb_first = torch.autograd.grad(
        conv2d(x, w, b, padding=1).pow(2).sum(), (x, w, b), create_graph=True
    )
    assert gw_first is not None and gb_first is not None
    with no_weight_grads():
        gx, gw_none, gb_none = torch.autograd.grad(
            conv2d(x, w, b, padding=1).pow(2).sum(), (x, w, b), create_graph=True, allow_unused=True
        )
    assert gw_none is None and gb_none is None  # skipped, not computed
    assert torch.allclose(gx, gx_all)
    # the penalty's gradient w.r.t. the weight is still complete
    (gw_skip,) = torch.autograd.grad(gx.pow(2).sum(), w)
    (gw_all,) = torch.autograd.grad(gx_all.pow(2).sum(), w)
    assert torch.allclose(gw_skip, gw_all, atol=1e-10)


@pytest.mark.parametrize("clamp", [None, 0.5])
def test_bias_lrelu_matches_the_composition_and_passes_gradgradcheck(clamp):
    x, b = _t(3, 4, 5, 5), _t(4, seed=1)
    with ops.fast_ops(False):
        ref = bias_lrelu(x, b, clamp=clamp)
    y = bias_lrelu(x, b, clamp=clamp)
    assert torch.equal(y, ref)
    assert y.grad_fn.name() == "_BiasActBackward"
    assert gradcheck(lambda x, b: bias_lrelu(x, b, clamp=clamp), (x, b))
    assert gradgradcheck(lambda x, b: bias_lrelu(x, b, clamp=clamp), (x, b))
    x2, b2 = _t(6, 8), _t(8, seed=1)  # dense layers: (N, C)
    assert gradgradcheck(lambda x, b: bias_lrelu(x, b), (x2, b2))


@pytest.mark.parametrize(("up", "down", "pad"), [(1, 1, (1, 2)), (1, 1, (2, 2)), (2, 1, (2, 1)), (1, 2, (1, 1)),
                                                 (1, 2, (2, 1)), (2, 1, (0, 0)), (2, 1, (5, 4))])  # fmt: skip
@pytest.mark.parametrize("rect", [False, True])
def test_upfirdn2d_equals_the_reference_composition(up, down, pad, rect):
    kernel = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=D64)
    kernel = (kernel[:, None] * (kernel[None, 1:3] if rect else kernel[None])) / 64 * up**2  # 4x4, or 4x2
    x = _t(2, 3, 8, 6)
    ref = upfirdn2d_reference(x, kernel, up, down, pad)
    out = upfirdn2d(x, kernel, up, down, pad)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-12)
    assert gradgradcheck(lambda x: upfirdn2d(x, kernel, up, down, pad), (x,))


STYLEGAN2_R1_PL = {
    "model": "stylegan2", "z_dim": 16, "batch_size": 4, "lr_g": 0.002, "lr_d": 0.002, "beta1": 0.0, "beta2": 0.99,
    "ema": 0.9, "stylegan2": {"preset": "tiny", "style_mixing": 0.9}, "r1": {"gamma": 10.0, "every": 2},
    "path_length": {"weight": 2.0, "every": 3}}  # fmt: skip


def _train(fast: bool, steps: int = 10, settings: dict = STYLEGAN2_R1_PL) -> tuple[list[dict], dict]:
    from facegan.config import TrainConfig
    from facegan.train.gan import GANTrainer

    cfg = TrainConfig.model_validate(settings)
    imgs = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with ops.fast_ops(fast):
        t = GANTrainer(cfg, imgs, None, [], torch.device("cpu"))
        if cfg.model == "stylegan2":
            assert t.objective.joint_d == fast  # with the custom ops D sees reals and fakes in one pass
        rows = [t.step() for _ in range(steps)]
    return rows, {**t.g.state_dict(), **{f"D.{k}": v for k, v in t.d.state_dict().items()}}


def _assert_same_training(fast: tuple[list[dict], dict], plain: tuple[list[dict], dict]) -> None:
    (fast_rows, fast_w), (plain_rows, plain_w) = fast, plain
    for a, b in zip(fast_rows, plain_rows, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(b[k])), (a["step"], k, a[k], b[k])
    assert fast_w.keys() == plain_w.keys()
    for k, v in plain_w.items():
        if v.is_floating_point():
            assert (fast_w[k] - v).norm() <= 1e-5 * max(v.norm(), 1.0), k
        else:
            assert torch.equal(fast_w[k], v), k


def test_training_with_the_custom_ops_equals_training_without_them():
    """StyleGAN2, 10 steps with R1 (every 2) and path length (every 3): losses agree to 1e-5, and every weight
    tensor to 1e-5 relative (in norm: Adam's first step moves a weight by lr * sign(gradient), so a gradient
    element that is zero up to float32 rounding can differ by ~lr in one element; test_style_nets_equal_... checks
    the maths in float64, element by element)."""
    fast = _train(True)
    assert {"r1", "path_length"} <= set(fast[0][0])
    assert sum(r["r1"] > 0 for r in fast[0]) == 5 and sum(r["path_length"] > 0 for r in fast[0]) == 4
    _assert_same_training(fast, _train(False))


DCGAN_PENALTIES = {
    "dcgan + R1": {"model": "dcgan", "d_norm": "none", "r1": {"gamma": 10.0, "every": 2}},
    "wgan-gp": {"model": "wgan-gp", "loss": "wgan-gp", "n_critic": 2},
    "wgan-div, spectral norm": {"model": "wgan-gp", "loss": "wgan-div", "d_variant": "sn", "d_norm": "instance"},
}


@pytest.mark.parametrize("name", list(DCGAN_PENALTIES))
def test_dcgan_penalties_train_the_same_with_the_custom_convolutions(name):
    """In the passes a gradient penalty differentiates twice the DCGAN family's D convolves through
    facegan.ops.conv, so R1's and the penalties' double backward is ordinary convolutions: 10 steps agree with
    the plain nn.Conv2d path within 1e-5. Its other passes are nn.Conv2d's own (one native backward call, no
    Python node: the node in every pass cost 13-25% of a DCGAN step on an H200)."""
    settings = {"z_dim": 16, "batch_size": 4, "g_channels": 8, "d_channels": 8, **DCGAN_PENALTIES[name]}
    fast = _train(True, settings=settings)
    plain = _train(False, settings=settings)
    from facegan.config import TrainConfig
    from facegan.models import MODELS

    cfg = TrainConfig.model_validate(settings)
    _, d = MODELS[cfg.model].build(cfg, 32, ())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    assert d.features[0](x).grad_fn.name() == "ConvolutionBackward0"  # a first-order pass
    with differentiated_twice():
        assert d.features[0](x).grad_fn.name() == "_ConvBackward"
        with ops.fast_ops(False):
            assert d.features[0](x).grad_fn.name() == "ConvolutionBackward0"
    nodes = []  # the penalties' own passes through D are the ones that take the node
    d.features[0].register_forward_hook(lambda _m, _i, out: nodes.append(out.grad_fn.name()))
    r1_penalty(d, x, None, lambda v: v)
    gradient_penalty(d, x, x.flip(0), None, None, torch.Generator().manual_seed(0), weight=1.0)
    d(x, None)
    assert nodes == ["_ConvBackward", "_ConvBackward", "ConvolutionBackward0"]
    assert all(r.get("r1", 0) > 0 or r.get("penalty", 0) > 0 for r in fast[0][::2])  # the penalty ran
    _assert_same_training(fast, plain)


@pytest.mark.parametrize("clamp", [None, 0.3])
def test_style_nets_equal_their_plain_composition_to_second_order(clamp):
    """StyleGAN2's G and D in float64, in training form: outputs, the first-order gradients R1 and path length
    take (w.r.t. the image / w) and the gradients of a loss holding those (second order) w.r.t. every parameter
    are those of the plain composition (folded gains, the fused layer epilogue, the convolutions' own backward)."""
    from facegan.models.stylegan2 import Discriminator, Generator

    torch.manual_seed(0)
    g = Generator(16, style_dim=8, n_mlp=2, channel_base=128, channel_max=8, conv_clamp=clamp).double().train()
    d = Discriminator(16, channel_base=128, channel_max=8, conv_clamp=clamp).double().train()
    z = torch.randn(4, 8, dtype=D64)
    noise = [torch.randn(s, dtype=D64) for s in g.noise_shapes(4)]
    results = []
    for fast in (True, False):
        with ops.fast_ops(fast):
            img, w = g(z, noise=noise, return_w=True)
            (gw,) = torch.autograd.grad((img * noise[-1]).sum(), w, create_graph=True)  # path length's gradient
            x = img.detach().requires_grad_(True)
            out, _ = d(x)
            (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)  # R1's gradient
            params = [*g.parameters(), *d.parameters()]
            second = torch.autograd.grad(img.sum() + gw.pow(2).sum() + out.sum() + gx.pow(2).sum(), params)
            results.append([img, gw, out, gx, *second])
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_bias_lrelu_without_bias_or_gain_is_one_activation_node():
    x = _t(2, 3, 4, 4)
    y = bias_lrelu(x, None, gain=1.0, clamp=0.5)
    assert y.grad_fn.name() == "_BiasActBackward"
    assert torch.equal(y, F.leaky_relu(x, 0.2).clamp(-0.5, 0.5))
    assert gradgradcheck(lambda x: bias_lrelu(x, None, gain=1.0, clamp=0.5), (x,))


@pytest.mark.parametrize("clamp", [None, 0.5])
def test_demod_noise_bias_lrelu_matches_the_composition_to_second_order(clamp):
    """StyleGAN2's layer epilogue as one node: value, gradcheck and gradgradcheck against the plain ops."""
    out, d, noise = _t(3, 4, 5, 5), _t(3, 4, seed=1).abs() + 0.5, _t(3, 1, 5, 5, seed=2)
    nw, b = _t(1, seed=3), _t(4, seed=4)
    fn = lambda *a: demod_noise_bias_lrelu(*a, clamp=clamp)  # noqa: E731
    y = fn(out, d, noise, nw, b)
    assert y.grad_fn.name() == "_DemodActBackward"
    with ops.fast_ops(False):
        ref = fn(out, d, noise, nw, b)
    assert torch.allclose(y, ref, atol=1e-12)
    assert (ref.abs() == 0.5).any() if clamp else True  # the clamp is exercised
    assert gradcheck(fn, (out, d, noise, nw, b))
    assert gradgradcheck(fn, (out, d, noise, nw, b))
    # inside no_weight_grads (path length's first backward) the parameters' gradients are skipped, not the rest
    with no_weight_grads():
        g_out, g_d, g_nw = torch.autograd.grad(fn(out, d, noise, nw, b).sum(), (out, d, nw), allow_unused=True)
    assert g_out is not None and g_d is not None and g_nw is None


@pytest.mark.parametrize("channels_last", [False, True])
def test_modulated_1x1_is_the_conv_of_the_scaled_input(channels_last):
    x, w, s = _t(3, 5, 4, 6), _t(2, 5, 1, 1, seed=1), _t(3, 5, seed=2)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    ref = F.conv2d(x * s.view(3, 5, 1, 1), w)
    out = modulated_1x1(x, w, s)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert gradgradcheck(modulated_1x1, (x, w, s))


@pytest.mark.parametrize("batch", [6, 8])
def test_discriminator_takes_two_batches_in_one_pass(batch):
    """D(reals ++ fakes, parts=2): each logit as D gives it for its own batch (minibatch-stddev groups of 3 for
    a batch of 6, 4 for 8, never across the two)."""
    from facegan.models.stylegan2 import Discriminator

    d = Discriminator(16, channel_base=128, channel_max=8).double()
    a, b = _t(batch, 3, 16, 16), _t(batch, 3, 16, 16, seed=1)
    joint, _ = d(torch.cat([a, b]), parts=2)
    assert torch.allclose(joint, torch.cat([d(a)[0], d(b)[0]]), atol=1e-12)
    if batch == 6:  # as one batch of 12, groups of 4 would straddle the two
        assert not torch.allclose(d(torch.cat([a, b]))[0], joint)
