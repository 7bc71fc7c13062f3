"""Model `vae`: architecture, KL, training through the shared loop, figures, resume, FID like the GANs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import cpu_amp, tiny_params
from facegan.chain import Layout, run_stage
from facegan.config import ParamsError, TrainConfig, parse_params
from facegan.models import build_models
from facegan.models.vae import kl_divergence
from facegan.sample import sample_checkpoint
from facegan.train.checkpoint import CHECKPOINT
from facegan.train.loop import Loop
from facegan.train.run import make_trainer
from facegan.train.vae import VAETrainer

CPU = torch.device("cpu")


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"model": "vae", "z_dim": 16, "g_channels": 8, "d_channels": 8, "batch_size": 8, **kw})


def _smooth(n: int, res: int = 32, seed: int = 0) -> torch.Tensor:
    low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return nn.functional.interpolate(low, size=res, mode="bilinear").mul(255).round().to(torch.uint8)


def test_encoder_has_4_conv_layers_and_decoder_5_deconv_layers_at_64px():
    dec, enc = build_models(_cfg(), 64)
    assert sum(isinstance(m, nn.Conv2d) for m in enc.modules()) == 4
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in dec.modules()) == 5
    mu, logvar = enc(torch.rand(3, 3, 64, 64))
    assert mu.shape == logvar.shape == (3, 16)
    assert dec(mu).shape == (3, 3, 64, 64)


def test_kl_divergence_matches_the_closed_form():
    assert kl_divergence(torch.zeros(4, 8), torch.zeros(4, 8)).item() == 0
    # per dim: 0.5 * (mu^2 + e^lv - 1 - lv); mu = 1, lv = 0 -> 0.5; mu = 0, lv = log 2 -> 0.5 * (1 - log 2)
    assert kl_divergence(torch.ones(2, 8), torch.zeros(2, 8)).item() == pytest.approx(4.0)
    assert kl_divergence(torch.zeros(1, 1), torch.full((1, 1), np.log(2))).item() == pytest.approx(
        0.5 * (1 - np.log(2))
    )


def test_kl_weight_ramps_up_over_the_warmup():
    t = VAETrainer(_cfg(vae={"kl_weight": 2.0, "kl_warmup": 4}), _smooth(8), None, [], CPU)
    assert [t.kl_weight(s) for s in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_trains_under_mixed_precision(amp):
    """The encoder and decoder run in the amp dtype on CPU autocast (the trainer's amp state, not CUDA's op
    rules; see `cpu_amp`), float16 through the gradient scaler; the loss and its noise in float32: finite losses,
    float32 weights that train."""
    t = VAETrainer(_cfg(), _smooth(8), None, [], CPU)
    scales = cpu_amp(t, amp)
    seen = set()
    for net in (t.g, t.d):
        net.register_forward_hook(
            lambda mod, inp, out: seen.update(o.dtype for o in (out if isinstance(out, tuple) else [out]))
        )
    before = [p.detach().clone() for p in t.g.parameters()]
    rows = [t.step() for _ in range(10)]  # fp16: the scaler skips the first updates while it backs off from 2**16
    assert seen == {amp}
    assert all(np.isfinite(list(r.values())).all() for r in rows)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in (*t.g.parameters(), *t.d.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before, t.g.parameters(), strict=True))
    assert t.scaler.is_enabled() == (amp == torch.float16)
    assert len(scales) == (10 if amp == torch.float16 else 0)


def test_reconstruction_error_falls_and_figures_are_written(tmp_path):
    t = make_trainer(_cfg(lr_g=2e-3, lr_d=2e-3), _smooth(16), None, [], CPU)
    assert isinstance(t, VAETrainer)
    result = Loop(t, tmp_path, 60, 60, 30).run()
    mse = [r["recon_mse"] for r in result.losses]
    assert np.mean(mse[-5:]) < 0.5 * np.mean(mse[:5])
    assert (tmp_path / "losses.csv").read_text().splitlines()[0] == "step,loss,recon_mse,kl,kl_weight"
    side = 32 + 2  # tile + padding
    assert np.asarray(Image.open(tmp_path / "reconstructions.png")).shape[:2] == (4 * side + 2, 8 * side + 2)
    assert np.asarray(Image.open(tmp_path / "latent_interpolation.png")).shape[:2] == (8 * side + 2, 8 * side + 2)
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "interpolation.gif").is_file()


def test_figures_of_an_odd_set_smaller_than_two_rows(tmp_path):
    # 7 images: the interpolation's halves were 3 and 4 codes (a size mismatch after the final checkpoint, so the
    # run was never delivered and every rerun failed the same way); 3 walks now, and one row of 7 reals above
    # their 7 reconstructions (8 columns put the first reconstruction beside the reals)
    Loop(make_trainer(_cfg(), _smooth(7), None, [], CPU), tmp_path, 2, 2, 2).run()
    side = 32 + 2
    assert np.asarray(Image.open(tmp_path / "reconstructions.png")).shape[:2] == (2 * side + 2, 7 * side + 2)
    assert np.asarray(Image.open(tmp_path / "latent_interpolation.png")).shape[:2] == (3 * side + 2, 8 * side + 2)


def test_resumed_run_equals_the_uninterrupted_one(tmp_path):
    images = _smooth(12)
    straight = make_trainer(_cfg(checkpoint_every=2), images, None, [], CPU)
    Loop(straight, tmp_path / "s", 4, 2, 4).run()
    Loop(make_trainer(_cfg(checkpoint_every=2), images, None, [], CPU), tmp_path / "r", 2, 2, 4).run()
    resumed = make_trainer(_cfg(checkpoint_every=2), images, None, [], CPU)
    loop = Loop(resumed, tmp_path / "r", 4, 2, 4)
    loop.resume()
    loop.run()
    for a, b in ((straight.g, resumed.g), (straight.d, resumed.d)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), name


@pytest.mark.slow  # 35 s; the default run keeps the VAE unit, training and resume tests
def test_vae_is_trained_sampled_and_scored_by_the_gan_stages(layout, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(layout.packed, Layout(root, "cartoon").packed)
    p = tiny_params(model="vae", steps=4)
    for stage in ("refstats", "train", "evaluate"):
        run_stage(stage, "cartoon", p, root, "vae")
    at = Layout(root, "cartoon", "vae")
    metrics = json.loads((at.evaluation / "metrics.json").read_text())
    assert metrics["fd_dlib"] > 0 and metrics["num_samples"] == 16
    images = sample_checkpoint(at.model / CHECKPOINT, 3, seed=1)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert (at.model / "reconstructions.png").is_file()


@pytest.mark.parametrize(
    "change, msg",
    [
        ({"diffaugment": ["color"]}, "unset diffaugment"),
        ({"ada": {"enabled": True}}, "unset ada.enabled"),
        ({"n_critic": 2}, "unset n_critic"),
        ({"d_variant": "sn"}, "unset d_variant"),
        ({"vae": {"kl_weight": -1}}, "train.vae.kl_weight"),
    ],
)
def test_settings_without_meaning_for_a_vae_are_refused(change, msg):
    raw = tiny_params().model_dump(mode="json")
    raw["train"] = {**raw["train"], "model": "vae", **change}
    with pytest.raises(ParamsError, match=msg):
        parse_params(raw)
