"""StyleGAN2, ADA, FreezeD and transfer from pretrained checkpoints (tiny configs, CPU)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cpu_amp
from facegan.augment.ada import AdaptiveAugment, ada_augment
from facegan.config import AdaConfig, ParamsError, TrainConfig, TransferConfig, parse_section
from facegan.errors import CheckpointError
from facegan.models import build_models
from facegan.models.stylegan2 import make_kernel, upfirdn2d
from facegan.models.transfer import PretrainedMismatch
from facegan.models.weights import mismatch
from facegan.train.checkpoint import load_module, save_checkpoint
from facegan.train.gan import GANTrainer as Trainer
from facegan.train.stepper import NOISE_STREAM, step_generator

TINY = {
    "model": "stylegan2",
    "z_dim": 16,
    "batch_size": 4,
    "lr_g": 0.002,
    "lr_d": 0.002,
    "beta1": 0.0,
    "beta2": 0.99,
    "stylegan2": {"preset": "tiny"},
    "r1": {"every": 2},
    "path_length": {"weight": 2.0, "every": 2},
}


def cfg(**over) -> TrainConfig:
    return TrainConfig.model_validate({**TINY, **over})


def images(n: int = 12, res: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def trainer(c: TrainConfig, res: int = 32) -> Trainer:
    return Trainer(c, images(res=res), None, [], torch.device("cpu"))


@pytest.mark.parametrize("res", [8, 32, 64])
def test_forward_backward_shapes_and_every_parameter_gets_a_gradient(res):
    g, d = build_models(cfg(), res)
    z = torch.randn(4, 16)
    x = g(z)
    assert x.shape == (4, 3, res, res) and torch.isfinite(x).all()
    logits, aux = d(x)
    assert logits.shape == (4,) and aux is None
    logits.sum().backward()
    missing = [n for n, p in [*g.named_parameters(), *d.named_parameters()] if p.grad is None]
    assert missing == []
    with pytest.raises(ValueError, match="power-of-two"):
        build_models(cfg(), 48)


@pytest.mark.parametrize("upsample", [False, True])
def test_training_and_sampling_forms_of_the_modulated_conv_agree(upsample):
    from facegan.models.stylegan2 import ModulatedConv2d

    m = ModulatedConv2d(8, 6, 3, 16, upsample=upsample).double()
    x, s = torch.randn(4, 8, 8, 8, dtype=torch.float64), torch.randn(4, 16, dtype=torch.float64)
    m.train()
    a = m(x, s)
    m.eval()
    assert torch.allclose(a, m(x, s), atol=1e-12)


def test_upfirdn2d_blur_keeps_constant_images_and_upsampling_doubles_the_side():
    x = torch.full((1, 2, 8, 8), 3.0)
    blurred = upfirdn2d(x, make_kernel(), pad=(1, 2))
    assert blurred.shape == (1, 2, 8, 8)
    assert torch.allclose(blurred[..., 2:-2, 2:-2], torch.full_like(blurred[..., 2:-2, 2:-2], 3.0))
    up = upfirdn2d(x, make_kernel() * 4, up=2, pad=(2, 1))
    assert up.shape == (1, 2, 16, 16)
    assert torch.allclose(up[..., 3:-3, 3:-3], torch.full_like(up[..., 3:-3, 3:-3], 3.0))
    down = upfirdn2d(torch.arange(64.0).view(1, 1, 8, 8), make_kernel(), down=2, pad=(1, 1))
    assert down.shape == (1, 1, 4, 4)


def test_style_mixing_takes_coarse_styles_from_z_and_fine_from_mix_z():
    g = build_models(cfg(), 32)[0].eval()
    z1, z2 = torch.randn(3, 16), torch.randn(3, 16)
    w = g.latents(z1, mix_z=z2, mix_index=3)
    assert w.shape == (3, g.n_latent, 16) and g.n_latent == 8
    assert torch.equal(w[:, 0], g.style(z1)) and torch.equal(w[:, 2], g.style(z1))
    assert torch.equal(w[:, 3], g.style(z2)) and torch.equal(w[:, -1], g.style(z2))
    img = g(z1, mix_z=z2, mix_index=3)
    assert img.shape == (3, 3, 32, 32) and not torch.equal(img, g(z1))
    # eval mode uses the fixed noise buffers: repeatable; psi = 0 gives the same image for every z
    assert torch.equal(g(z1), g(z1))
    avg = g(torch.randn(2, 16), psi=0.0)
    assert torch.allclose(avg[0], avg[1], atol=1e-5)


def test_w_avg_moves_once_a_training_pass_whether_or_not_it_mixes_styles():
    g = build_models(cfg(), 32)[0].train()
    z, mix = torch.randn(6, 16), torch.randn(6, 16)
    with torch.no_grad():
        expected = g.style(z).mean(0).lerp(g.w_avg, g.w_avg_beta)  # one step of the moving average, over z's w
    g(z, mix_z=mix, mix_index=3)  # the mixing z's pass is not tracked (stylegan2-ada's skip_w_avg_update)
    assert torch.allclose(g.w_avg, expected, atol=1e-7)
    before = g.w_avg.clone()
    with torch.no_grad():
        g.eval()(z)  # sampling moves nothing
    assert torch.equal(g.w_avg, before)


def test_metrics_draw_each_image_its_own_noise_maps_seeded_and_figures_keep_the_fixed_ones(tmp_path, monkeypatch):
    import facegan.sample
    from facegan.evaluate.run import generate
    from facegan.sample import render
    from facegan.train.run import FIDWatch

    g = build_models(cfg(), 32)[0]
    for name, p in g.named_parameters():
        if name.endswith("noise.weight"):
            p.data.fill_(0.5)  # noise strengths start at 0; trained ones are not
    z = torch.randn(1, 16).repeat(4, 1)  # one z four times: only the noise maps can tell the images apart
    fixed = render(g, z)
    assert all(np.array_equal(fixed[0], im) for im in fixed)  # figures: G's one set of maps for every image
    drawn = render(g, z, batch=3, noise_seed=5)
    assert not any(np.array_equal(drawn[0], im) for im in drawn[1:])  # metrics: each image its own maps
    assert np.array_equal(drawn, render(g, z, batch=3, noise_seed=5))  # seeded
    assert not np.array_equal(drawn, render(g, z, batch=3, noise_seed=6))
    a, _ = generate(g, 16, False, 6, seed=5)
    b, _ = generate(g, 16, False, 6, seed=5)
    z5 = torch.randn(6, 16, generator=torch.Generator().manual_seed(5))
    assert np.array_equal(a, b) and np.array_equal(a, render(g, z5, noise_seed=5))
    assert not np.array_equal(a, render(g, z5))
    assert g.training  # its mode restored
    # the in-training distance draws its maps the same way, from train.seed, the same at every point of the curve
    seen: list = []
    monkeypatch.setattr(facegan.sample, "render", lambda *a, **kw: seen.append(kw) or render(*a, **kw))
    trainer = argparse.Namespace(sampler=g, labels=None)
    loop = argparse.Namespace(trainer=trainer, work=tmp_path, checkpoint=lambda path: None)
    c = cfg(fid_every=1, fid_samples=4, steps=2, seed=3)
    watch = FIDWatch(c, loop, lambda images, desc: {"fd": 1.0, "kid": 0.0}, [], None)
    watch(1), watch(2)
    assert seen == [{"noise_seed": 3 + 7_777}] * 2


def test_ada_is_identity_at_p0_changes_images_at_p1_is_seeded_and_differentiable():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.equal(ada_augment(x, 0.0, torch.Generator().manual_seed(1)), x)
    x.requires_grad_(True)
    a = ada_augment(x, 1.0, torch.Generator().manual_seed(1))
    b = ada_augment(x, 1.0, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and (a - x).abs().mean() > 0.1
    a.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_ada_augments_in_float32_under_autocast():
    """Under mixed precision ADA still samples and recolours in float32 (as stylegan2-ada does): the same pixels
    as without autocast, for float32 reals and for fakes in the amp dtype alike. A bfloat16 sampling grid rounded
    coordinates beyond 128 px to whole pixels."""
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    want = ada_augment(x, 1.0, torch.Generator().manual_seed(3))
    half = x.bfloat16()
    want_half = ada_augment(half.float(), 1.0, torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ada_augment(x, 1.0, torch.Generator().manual_seed(3))
        got_half = ada_augment(half, 1.0, torch.Generator().manual_seed(3))
    assert got.dtype == got_half.dtype == torch.float32
    assert torch.equal(got, want) and torch.equal(got_half, want_half)


def test_ada_sampler_matches_grid_sample_and_r1_flows_through_augmented_reals():
    import torch.nn.functional as F

    from facegan.augment.ada import bilinear_reflect, geometric_matrix

    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    m = geometric_matrix(4, 16, 1.0, torch.Generator().manual_seed(0))
    grid = F.affine_grid(m[:, :2, :], [4, 3, 16, 16], align_corners=False)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    assert torch.allclose(bilinear_reflect(x, grid), ref, atol=1e-12)
    t = trainer(cfg(ada={"enabled": True, "fixed_p": 0.8}, r1={"every": 1}))
    rows = [t.step() for _ in range(2)]
    assert all(r["r1"] > 0 for r in rows)


def test_ada_translations_move_both_axes_or_neither_with_probability_p(monkeypatch):
    """The integer and the fractional translation each gate a sample with one draw shared by x and y, as
    stylegan2-ada does: a sample is translated with probability p. A draw per axis translated 2p - p^2 of them
    (0.75 at p = 0.5), half of those along one axis only."""
    from facegan.augment import ada

    moved = []  # per _translate2d call (integer, then fractional): (n, 2) bool, which axes move
    translate = ada._translate2d

    def record(tx, ty, n):
        moved.append(torch.stack([tx, ty], 1) != 0)
        return translate(tx, ty, n)

    monkeypatch.setattr(ada, "_translate2d", record)
    ada.geometric_matrix(200_000, 64, 0.5, torch.Generator().manual_seed(0))
    integer, frac = moved
    # integer: a gated sample's shift, uniform in [-8, 8] px at 64 px, rounds to 0 px with probability q = 1/16 on
    # each axis independently, so one shared gate gives P(any) = p (1 - q^2), P(one axis only) = p 2q (1 - q)
    q = 1 / 16
    assert integer.any(1).double().mean() == pytest.approx(0.5 * (1 - q * q), abs=0.01)
    assert (integer.sum(1) == 1).double().mean() == pytest.approx(0.5 * 2 * q * (1 - q), abs=0.005)
    # fractional: normal draws are never exactly 0, so a sample moves along both axes or along neither
    assert frac.any(1).double().mean() == pytest.approx(0.5, abs=0.01)
    assert torch.equal(frac[:, 0], frac[:, 1])


def test_ada_p_rises_when_d_overfits_falls_when_it_does_not_and_fixed_p_stays():
    ada = AdaptiveAugment(AdaConfig(enabled=True, speed_kimg=1.0, interval=4), batch_size=10)
    for step in range(40):  # D calls every real image real: r_t = 1 > target 0.6
        ada.observe(torch.ones(10), step)
    assert ada.rt == 1.0 and ada.p == pytest.approx(0.4)  # 10 adjustments of 10*4/1000
    for step in range(40, 200):  # D is unsure: r_t = 0 < 0.6
        ada.observe(torch.tensor([1.0, -1.0] * 5), step)
    assert ada.p == 0.0
    fixed = AdaptiveAugment(AdaConfig(enabled=True, fixed_p=0.3), batch_size=10)
    for step in range(40):
        fixed.observe(torch.ones(10), step)
    assert fixed.p == 0.3


def test_ada_reads_d_against_the_loss_s_level_and_refuses_a_critic_without_one():
    """r_t counted sign(D(real)) whatever the loss: an lsgan D that cannot tell reals from fakes outputs 0.5 (between
    its targets 1 and 0), read as r_t = 1, and p went to 1; a Wasserstein critic's output has no fixed offset.
    lsgan is read against 0.5 now, and the adaptive p refuses the critics (a fixed p is still taken)."""
    c = AdaConfig(enabled=True, speed_kimg=1.0, interval=4)
    unsure = torch.tensor([0.45, 0.55] * 5)  # lsgan's D at its optimum on indistinguishable data: about 0.5
    for loss, rt in (("lsgan", 0.0), ("nonsaturating", 1.0), ("hinge", 1.0)):
        ada = AdaptiveAugment(c, batch_size=10, loss=loss)
        for step in range(4):
            ada.observe(unsure, step)
        assert ada.rt == rt, loss
    assert AdaptiveAugment(c, batch_size=10, loss="lsgan").level == 0.5
    from facegan.train.objective import build_augment  # the trainers' way in: the loss is passed on

    lsgan = parse_section(TrainConfig, {"loss": "lsgan", "ada": {"enabled": True}}, "train")
    assert build_augment(lsgan).level == 0.5 and build_augment(lsgan.model_copy(update={"loss": "hinge"})).level == 0
    for loss in ("wgan", "wgan-gp", "wgan-div"):
        with pytest.raises(ParamsError, match=f"ada: its adaptive p .* a {loss} critic's has none: set ada.fixed_p"):
            parse_section(TrainConfig, {"loss": loss, "d_norm": "layer", "ada": {"enabled": True}}, "train")
        parse_section(TrainConfig, {"loss": loss, "d_norm": "layer", "ada": {"enabled": True, "fixed_p": 0.2}}, "t")


def test_ada_checkpoint_between_adjustments_keeps_the_pending_signs():
    """observe() sums D's signs on D's device between adjustments (no device sync per step); a checkpoint taken
    mid-interval holds that sum, and a run resumed from it moves p exactly as the uninterrupted run."""
    c = AdaConfig(enabled=True, speed_kimg=1.0, interval=4)
    up, down = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]), torch.tensor([1.0, -1.0, 0.0, -0.5, -2.0])
    logits = [up if s % 12 < 8 else down for s in range(20)]  # r_t 1, 1, -0.4, 1, 1: p up, up, down, up, up
    straight = AdaptiveAugment(c, batch_size=5)
    first = AdaptiveAugment(c, batch_size=5)
    for s in range(20):
        straight.observe(logits[s], s)
    for s in range(6):
        first.observe(logits[s], s)
    state = first.state_dict()
    assert state["count"] == 10 and state["sign_sum"] == sum(float(torch.sign(logits[s]).sum()) for s in (4, 5))
    resumed = AdaptiveAugment(c, batch_size=5)
    resumed.load_state_dict(state)
    for s in range(6, 20):
        resumed.observe(logits[s], s)
    assert (resumed.p, resumed.rt) == (straight.p, straight.rt) and straight.p == pytest.approx(0.06)


def test_ada_p_rises_during_training_on_a_few_images():
    """A D that memorises 4 images: the sign of D(real) goes positive and p goes up from 0."""
    c = cfg(ada={"enabled": True, "speed_kimg": 0.05, "interval": 1}, r1={"gamma": 0.0}, lr_d=0.01)
    t = Trainer(c, images(4), None, [], torch.device("cpu"))
    ps = [t.step()["ada_p"] for _ in range(12)]
    assert max(ps) > 0.1, ps


@pytest.mark.parametrize("exact", [True, False], ids=["deterministic", "fast: noise from the noise generator"])
def test_resume_is_exact_with_ada_lazy_r1_path_length_mixing_and_ema(tmp_path, exact):
    c = cfg(ema=0.9, ada={"enabled": True, "speed_kimg": 0.05, "interval": 1}, deterministic=exact)
    straight = trainer(c)
    for _ in range(4):
        straight.step()
    first = trainer(c)
    for _ in range(2):
        first.step()
    save_checkpoint(tmp_path / "ck.pt", first.state_dict())
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert state["augment"]["p"] == first.ada.p and state["kimg"] == pytest.approx(0.008)
    resumed = trainer(c)
    resumed.load_state_dict(state)
    assert resumed.ada.p == first.ada.p and resumed.step_done == 2
    for _ in range(2):
        resumed.step()
    for a, b in ((straight.g, resumed.g), (straight.d, resumed.d), (straight.ema.model, resumed.ema.model)):
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(pa, pb), name
    assert straight.ada.p == resumed.ada.p
    assert torch.equal(straight.objective.pl_mean, resumed.objective.pl_mean)


def test_fast_runs_draw_noise_maps_on_the_device_from_their_own_stream_and_exact_runs_from_the_step_stream():
    """deterministic true (auto on CPU): noise maps and path length's noise come from the step's host stream, layer
    by layer, as before (a seed draws the same on CPU and CUDA); false: one draw on the training device from a
    generator reseeded each step from a stream of its own (no host RNG on CUDA), still a function of (seed, step);
    every other draw (latents, flips, mixing) stays the step stream's, so models without noise maps train alike."""
    exact, fast = trainer(cfg(deterministic=True)), trainer(cfg(deterministic=False))
    gen = torch.Generator().manual_seed(5)
    before = gen.get_state()
    assert exact.noise_generator(gen, 3) is gen
    g = exact.g
    shapes = g.noise_shapes(4)
    kw = g.mixing_kwargs(4, 0.0, torch.Generator().manual_seed(5), torch.device("cpu"))
    stream = torch.Generator().manual_seed(5)
    for got, s in zip(kw["noise"], shapes, strict=True):
        assert torch.equal(got, torch.randn(s, generator=stream))  # the step stream's draws, in layer order

    noise_gen = fast.noise_generator(gen, 3)
    assert torch.equal(gen.get_state(), before)  # nothing drawn from the step's stream
    assert noise_gen.device == fast.device and noise_gen is not gen
    seed = int(torch.randint(2**62, (), generator=step_generator(fast.seed + NOISE_STREAM, 3)))
    assert noise_gen.initial_seed() == seed and fast.noise_generator(gen, 4).initial_seed() != seed
    kw = g.mixing_kwargs(4, 0.0, gen, torch.device("cpu"), noise_gen=fast.noise_generator(gen, 3))
    own = torch.Generator().manual_seed(seed)
    for got, s in zip(kw["noise"], shapes, strict=True):
        assert torch.equal(got, torch.randn(s, generator=own))  # the noise stream's draws, in layer order

    # the same seed trains alike run to run in either mode; the two modes draw other noise
    rows = {k: [t.step() for _ in range(2)] for k, t in (("exact", exact), ("fast", fast))}
    again = trainer(cfg(deterministic=False))
    assert [again.step() for _ in range(2)] == rows["fast"]
    assert rows["fast"][0]["loss_d"] != rows["exact"][0]["loss_d"]
    pl = {k: [r["path_length"] for r in v] for k, v in rows.items()}
    assert pl["fast"] != pl["exact"] and all(any(v) for v in pl.values())  # path length ran, on other noise
    dcgan = {}
    for mode in (True, False):
        t = trainer(TrainConfig(model="dcgan", g_channels=8, d_channels=8, batch_size=4, deterministic=mode))
        dcgan[mode] = [t.step() for _ in range(2)]
    assert dcgan[True] == dcgan[False]


def _pretrained(tmp_path: Path, res: int = 32) -> Path:
    t = trainer(cfg(ema=0.9), res)
    t.step()
    path = tmp_path / "pre.pt"
    save_checkpoint(path, t.state_dict())
    return path


def test_freeze_d_leaves_frozen_blocks_unchanged_and_trains_the_rest(tmp_path):
    pre = _pretrained(tmp_path)
    start = torch.load(pre, weights_only=True)["D"]
    t = trainer(cfg(init_from=str(pre), freeze_d=2))
    assert t.frozen and all(n.startswith(("convs.0.", "convs.1.")) for n in t.frozen)
    for _ in range(3):
        t.step()
    after = t.d.state_dict()
    for name in t.frozen:
        assert torch.equal(after[name], start[name]), name
    assert not torch.equal(after["final_linear.1.weight"], start["final_linear.1.weight"])
    assert not torch.equal(after["convs.2.conv1.0.weight"], start["convs.2.conv1.0.weight"])
    with pytest.raises(ParamsError, match="freeze at most"):
        trainer(cfg(init_from=str(pre), freeze_d=9))
    with pytest.raises(ValueError, match="init_from"):
        cfg(freeze_d=2)


# rosinality/stylegan2-pytorch Generator(size=32, style_dim=16, n_mlp=2): its state_dict keys
ROSINALITY_G_32 = (
    [
        "style.1.weight",
        "style.1.bias",
        "style.2.weight",
        "style.2.bias",
        "input.input",
        "conv1.conv.weight",
        "conv1.conv.modulation.weight",
        "conv1.conv.modulation.bias",
        "conv1.noise.weight",
        "conv1.activate.bias",
        "to_rgb1.bias",
        "to_rgb1.conv.weight",
        "to_rgb1.conv.modulation.weight",
        "to_rgb1.conv.modulation.bias",
    ]
    + [
        f"convs.{i}.{k}"
        for i in range(6)
        for k in (
            ["conv.weight", "conv.modulation.weight", "conv.modulation.bias", "noise.weight", "activate.bias"]
            + (["conv.blur.kernel"] if i % 2 == 0 else [])
        )
    ]
    + [
        f"to_rgbs.{i}.{k}"
        for i in range(3)
        for k in ("bias", "upsample.kernel", "conv.weight", "conv.modulation.weight", "conv.modulation.bias")
    ]
    + [f"noises.noise_{i}" for i in range(7)]
)
ROSINALITY_D_32 = (
    ["convs.0.0.weight", "convs.0.1.bias"]
    + [
        f"convs.{i}.{k}"
        for i in (1, 2, 3)
        for k in (
            "conv1.0.weight",
            "conv1.1.bias",
            "conv2.0.kernel",
            "conv2.1.weight",
            "conv2.2.bias",
            "skip.0.kernel",
            "skip.1.weight",
        )
    ]
    + [
        "final_conv.0.weight",
        "final_conv.1.bias",
        "final_linear.0.weight",
        "final_linear.0.bias",
        "final_linear.1.weight",
        "final_linear.1.bias",
    ]
)


def test_module_names_are_rosinalitys():
    g, d = build_models(cfg(), 32)
    assert sorted(set(g.state_dict()) - {"w_avg"}) == sorted(ROSINALITY_G_32)
    assert sorted(d.state_dict()) == sorted(ROSINALITY_D_32)


def test_rosinality_checkpoint_loads_with_latent_avg_and_gives_the_same_images(tmp_path):
    torch.manual_seed(3)
    src_g, src_d = build_models(cfg(), 32)
    ros = {k: v for k, v in src_g.state_dict().items() if k != "w_avg"}
    path = tmp_path / "550000.pt"
    torch.save(
        {
            "g": ros,
            "d": src_d.state_dict(),
            "g_ema": ros,
            "g_optim": {},
            "d_optim": {},
            "args": argparse.Namespace(size=32, channel_multiplier=2),
            "latent_avg": torch.full((16,), 0.25),
        },
        path,
    )
    t = trainer(cfg(init_from=str(path), ema=0.9))
    assert t.pretrained["source"] == "rosinality"
    assert torch.equal(t.g.w_avg, torch.full((16,), 0.25)) and torch.equal(t.ema.model.w_avg, torch.full((16,), 0.25))
    z = torch.randn(2, 16)
    src_g.eval(), t.g.eval()
    assert torch.equal(src_g(z), t.g(z))
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(src_d(x)[0], t.d(x)[0])
    # without latent_avg, w_avg is the mean over mapped latents
    del_avg = tmp_path / "no_avg.pt"
    torch.save({"g": ros, "d": src_d.state_dict()}, del_avg)
    t2 = trainer(cfg(init_from=str(del_avg)))
    assert t2.g.w_avg.abs().sum() > 0


def test_mismatched_pretrained_weights_give_a_clear_error(tmp_path):
    pre = _pretrained(tmp_path)
    with pytest.raises(PretrainedMismatch, match=r"shape mismatch.*channel_base"):
        trainer(cfg(init_from=str(pre), stylegan2={"preset": "tiny", "channel_max": 16}))
    with pytest.raises(PretrainedMismatch, match="missing"):
        trainer(cfg(init_from=str(_pretrained(tmp_path, 16))))  # 16 px checkpoint into a 32 px model
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(1)}, junk)
    with pytest.raises(PretrainedMismatch, match="neither a facegan checkpoint"):
        trainer(cfg(init_from=str(junk)))
    with pytest.raises(FileNotFoundError, match="init_from"):
        trainer(cfg(init_from=str(tmp_path / "absent.pt")))
    cycle = tmp_path / "cyclegan.pt"  # facegan's format, two generators: was KeyError 'G'
    save_checkpoint(cycle, {"G_ab": {}, "G_ba": {}, "D_a": {}, "D_b": {}, "step": 3})
    with pytest.raises(PretrainedMismatch, match="cyclegan.pt: a CycleGAN's checkpoint, with no G and D to start"):
        trainer(cfg(init_from=str(cycle)))


def test_a_weights_mismatch_names_its_first_keys_and_counts():
    own = {f"w{i}": torch.zeros(2, 3) for i in range(5)} | {"w_avg": torch.zeros(4)}
    file = {f"w{i}": torch.zeros(2, 2) for i in range(4)} | {"extra": torch.zeros(1)}
    assert mismatch(own, dict(own)) == ""
    assert mismatch(own, {f"w{i}": torch.ones(2, 3) for i in range(5)}, {"w_avg"}) == ""  # w_avg may be absent
    assert mismatch(own, file, {"w_avg"}) == (
        "4 shape mismatch(es), e.g. w0: file (2, 2) vs model (2, 3); w1: file (2, 2) vs model (2, 3); "
        "w2: file (2, 2) vs model (2, 3); missing 1, e.g. w4; unexpected 1, e.g. extra"
    )
    assert mismatch(own, {**own, "w0": "text"}) == "1 shape mismatch(es), e.g. w0: file str vs model (2, 3)"
    assert mismatch(own, None) == "the weights are a NoneType, not a state dict"
    bn = torch.nn.BatchNorm2d(3)
    older = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}  # no metadata: torch fills it
    assert mismatch(bn.state_dict(), older) == ""
    bn.load_state_dict(older)
    cut = bn.state_dict()  # version 2 metadata: torch's strict load refuses it without the key, and so does mismatch
    del cut["num_batches_tracked"]
    assert mismatch(bn.state_dict(), cut) == "missing 1, e.g. num_batches_tracked"
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        bn.load_state_dict(cut)
    lin, meta = torch.nn.Linear(2, 2), torch.device("meta")  # keys and shapes fit, the values hold no data
    with pytest.raises(CheckpointError, match=r"x.pt: its G weights do not load: Error\(s\) in loading state_dict"):
        load_module(
            lin,
            {k: torch.empty_like(v, device=meta) for k, v in lin.state_dict().items()},
            Path("x.pt"),
            "its G weights",
        )


def test_transfer_runs_merge_overrides_and_report_bad_ones():
    t = TransferConfig(
        finetune=TrainConfig(model="stylegan2", steps=9),
        runs={"base": {}, "fa": {"freeze_d": 2, "ada": {"enabled": True}}},
    )
    fa = t.run_config("fa", 3, Path("p.pt"))
    assert fa.freeze_d == 2 and fa.ada.enabled and fa.ada.target == 0.6 and fa.steps == 9 and fa.seed == 3
    assert fa.init_from == Path("p.pt")
    scratch_frozen = (  # TrainConfig's advice, set init_from, is not one a row can follow
        "transfer.runs.s: freeze_d 2 (from the row) freezes pretrained D blocks, and this row trains from random "
        "weights (pretrained: false): set freeze_d: 0 in the row"
    )
    negative = "transfer.runs.s.freeze_d: got -1; Input should be greater than or equal to 0"  # its own problem
    for runs, problems in (
        ({"s": {"pretrained": False, "freeze_d": 2}}, [scratch_frozen]),
        ({"s": {"pretrained": False, "freeze_d": -1}}, [negative]),
    ):
        with pytest.raises(ParamsError) as e:
            parse_section(TransferConfig, {"runs": runs}, "p.yaml")
        assert e.value.problems == problems
    with pytest.raises(ValueError, match=r"freeze_d 1 \(from transfer.finetune\)"):
        TransferConfig(finetune=TrainConfig(freeze_d=1, init_from="p.pt"), runs={"s": {"pretrained": False}})
    with pytest.raises(ParamsError) as e:  # each problem of a row one line, with the keys allowed where it is
        parse_section(TransferConfig, {"runs": {"bad": {"ada": {"targt": 0.5}, "freeze_d": -1}}}, "p.yaml")
    assert e.value.problems == [
        "transfer.runs.bad.ada.targt: unknown key; allowed keys here: enabled, fixed_p, initial_p, interval, "
        "speed_kimg, target",
        "transfer.runs.bad.freeze_d: got -1; Input should be greater than or equal to 0",
    ]
    with pytest.raises(ParamsError, match="unknown transfer row 'x'"):
        t.run_config("x", 0, Path("p.pt"))
    t.check("fa", 0)
    with pytest.raises(ParamsError, match=r"seed 3 is not in transfer.seeds \[0\]"):
        t.check(None, 3)
    with pytest.raises(ValueError, match="a row of transfer.runs is named 'pretrain', the source run's name: rename"):
        TransferConfig(runs={"pretrain": {}})
    with pytest.raises(ValueError, match="repeats a seed"):
        TransferConfig(seeds=[1, 1])
    scratch = TransferConfig(runs={"s": {"pretrained": False}}, target_images=40).run_config("s", 0, Path("p.pt"))
    assert scratch.init_from is None and scratch.max_images == 40


def test_style_figures(tmp_path):
    from facegan.sample_style import sefa_directions, write_style_figures

    g = build_models(cfg(), 32)[0]
    files = write_style_figures(g, tmp_path)
    from PIL import Image

    sizes = {f.name: Image.open(f).size for f in files}
    assert sizes["style_mixing.png"] == (7 * 34 + 2, 6 * 34 + 2)  # 6 columns + header, 5 rows + header
    assert sizes["truncation.png"] == (6 * 34 + 2, 4 * 34 + 2)
    assert sizes["sefa.png"] == (7 * 34 + 2, 5 * 34 + 2)
    dirs = sefa_directions(g, 5)
    assert dirs.shape == (5, 16) and torch.allclose(dirs @ dirs.T, torch.eye(5), atol=1e-4)
    assert np.asarray(Image.open(tmp_path / "truncation.png")).std() > 0


def test_amp_blocks_put_only_the_highest_resolutions_in_the_amp_dtype_and_conv_clamp_bounds_activations():
    """Per-block precision (stylegan2-ada's num_fp16_res), checked with CPU autocast (bfloat16)."""
    seen: dict = {}
    c = cfg(stylegan2={"preset": "tiny", "amp_blocks": 1, "conv_clamp": 0.5})
    g, d = build_models(c, 32)
    for name, mods in (("g", g.convs), ("d", d.convs)):
        for i, m in enumerate(mods):
            m.register_forward_hook(lambda mod, inp, out, key=(name, i): seen.__setitem__(key, out))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image = g(torch.randn(4, 16))
        logits, _ = d(image)
    f32, bf16 = torch.float32, torch.bfloat16
    assert image.dtype == f32  # the RGB image accumulates in float32 across blocks (stylegan2-ada's toRGB and skip)
    assert [seen["g", i].dtype for i in range(6)] == [f32] * 4 + [bf16] * 2  # 8, 8, 16, 16 px | 32, 32 px
    assert [seen["d", i].dtype for i in range(4)] == [bf16, bf16, f32, f32]  # fromRGB, 32 -> 16 | 16 -> 8, 8 -> 4
    assert logits.dtype == f32 and torch.isfinite(logits).all()
    assert all(seen["g", i].abs().max() <= 0.5 for i in range(6))
    logits.sum().backward()  # through the fused ops in both precisions: float32 gradients for every parameter
    grads = [p.grad for p in (*g.parameters(), *d.parameters())]
    assert all(gr is not None and gr.dtype == f32 and torch.isfinite(gr).all() for gr in grads)
    seen.clear()
    g_all, _ = build_models(cfg(), 32)
    for i, m in enumerate(g_all.convs):
        m.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image = g_all(torch.randn(4, 16))
    assert set(seen.values()) == {bf16}  # amp_blocks 0: every layer follows autocast
    assert image.dtype == f32  # but the image is float32 there too


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_mixed_precision_training_step_runs_on_cpu_autocast(amp):
    """The AMP code path of the trainer (autocast around G and D, per-block precision, conv_clamp, the joint D
    pass, R1 and path length in float32 outside it), on CPU autocast (the trainer's amp state, not CUDA's op
    rules; see `cpu_amp`), float16 through the gradient scaler: 12 steps with finite losses, both regularisers
    applied, every weight still finite, float32 and trained, the scale backed off a few times at most, and the
    first steps' losses those of float32 training from the same seed."""
    c = cfg(
        stylegan2={"preset": "tiny", "amp_blocks": 2, "conv_clamp": 256.0, "style_mixing": 0.9},
        r1={"gamma": 10.0, "every": 2}, channels_last=True,
    )  # fmt: skip
    f32_rows = [(t32 := trainer(c)).step(), t32.step()]
    t = trainer(c)
    scales = cpu_amp(t, amp)
    before = [p.detach().clone() for p in t.g.parameters()]
    seen = []
    t.g.convs[-1].register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    rows = [t.step() for _ in range(12)]
    assert amp in seen  # the highest-resolution block ran in the amp dtype
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rows)
    assert sum(r["r1"] > 0 for r in rows) == 6 and sum(r["path_length"] > 0 for r in rows) == 6
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in (*t.g.parameters(), *t.d.parameters()))
    assert sum(not torch.equal(a, b) for a, b in zip(before, t.g.parameters(), strict=True)) > len(before) // 2
    # every backward went through the scaler: 12 D + 12 G updates, R1's 6 and path length's 6
    assert len(scales) == (36 if amp == torch.float16 else 0) and t.scaler.is_enabled() == (amp == torch.float16)
    assert amp != torch.float16 or t.scaler.get_scale() >= 2**12  # at most 4 overflows in 12 steps (seen: 1)
    # the same seed in float32: the first two steps' losses agree to the amp dtype's precision (seen: <= 1e-3
    # for the losses, 0.8% for path length, whose gradient is taken through the half-precision blocks)
    for a, b in zip(rows[:2], f32_rows, strict=True):
        for k in ("loss_d", "loss_g", "d_real", "d_fake"):
            assert abs(a[k] - b[k]) <= 5e-3, (a["step"], k, a[k], b[k])
        for k in ("r1", "path_length"):
            assert abs(a[k] - b[k]) <= 0.03 * abs(b[k]), (a["step"], k, a[k], b[k])


def test_style_figures_with_fewer_w_dimensions_than_sefa_rows(tmp_path):
    # z_dim 4: SeFa has 4 directions, and its figure asked for 5 (IndexError after the final checkpoint, so the
    # run was never delivered and every rerun failed the same way)
    from PIL import Image

    from facegan.sample_style import write_style_figures

    g = build_models(cfg(z_dim=4), 16)[0]
    write_style_figures(g, tmp_path)
    side = 16 + 2
    assert np.asarray(Image.open(tmp_path / "sefa.png")).shape[:2] == (4 * side + 2, 7 * side + 2)
