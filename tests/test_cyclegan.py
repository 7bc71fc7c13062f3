"""CycleGAN (facegan.train.cyclegan, facegan.translate): nets, pool, schedule, losses, stage, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cpu_amp, tiny_params
from facegan.chain import Layout, run_stage
from facegan.config import CycleGANConfig, ParamsError, parse_params
from facegan.models.cyclegan import PatchDiscriminator, ResnetGenerator
from facegan.train.cyclegan import CycleTrainer, ImagePool, ssim
from facegan.train.loop import Loop

CPU = torch.device("cpu")


def _images(n: int, res: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, res, res), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _cfg(**kw) -> CycleGANConfig:
    base = dict(
        enabled=True,
        g_channels=4,
        res_blocks=1,
        d_channels=4,
        steps=4,
        decay_start=2,
        batch_size=2,
        pool_size=3,
        checkpoint_every=2,
        sample_every=2,
        num_samples=8,
    )
    return CycleGANConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def pair_root(tmp_path_factory):
    """cartoon and sketch packed with their dlib statistics (the cyclegan stage's inputs)."""
    root = tmp_path_factory.mktemp("pair")
    p = tiny_params()
    for ds in ("cartoon", "sketch"):
        for stage in ("generate", "detect", "verify", "align", "matte", "upscale", "quality", "pack", "refstats"):
            run_stage(stage, ds, p, root)
    return root, p


def test_generator_keeps_the_shape_and_patchgan_scores_patches():
    g = ResnetGenerator(8, 2)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert len([m for m in g.modules() if m.__class__.__name__ == "ResidualBlock"]) == 2
    assert PatchDiscriminator(8, 3)(x).shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6
    sn = PatchDiscriminator(8, 3, spectral=True)
    assert sum(hasattr(m, "parametrizations") for m in sn.modules()) == 5  # every conv
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.zeros(1, 3, 30, 30))


def test_image_pool_fills_then_swaps_and_round_trips():
    pool = ImagePool(3)
    gen = torch.Generator().manual_seed(0)
    first = torch.arange(3.0)[:, None, None, None].expand(3, 3, 2, 2)
    assert torch.equal(pool.query(first, gen), first) and len(pool.images) == 3
    out = pool.query(torch.full((40, 3, 2, 2), 9.0), gen)
    old = (out[:, 0, 0, 0] < 9).sum().item()
    assert 0 < old <= 3 and len(pool.images) == 3  # some come from the history, the pool never grows
    clone = ImagePool(3)
    clone.load_state_dict(pool.state_dict(), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(clone.images, pool.images, strict=True))
    x = torch.rand(2, 3, 2, 2)
    assert ImagePool(0).query(x, gen) is x


def test_learning_rate_is_constant_then_decays_linearly_to_zero():
    t = CycleTrainer(_cfg(steps=10, decay_start=6, lr=1e-3), _images(4), _images(4, seed=1), CPU)
    assert [round(t.lr_at(s), 6) for s in (0, 6, 8, 10)] == [1e-3, 1e-3, 5e-4, 0.0]


def test_ssim_is_one_for_equal_images_and_lower_for_noise():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(x, x + 0.5 * torch.randn_like(x)).item() < 0.6


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {
            "ssim_weight": 1.0,
            "diffaugment": ["color", "translation"],
            "spectral_norm": True,
            "loss": "hinge",
            "identity_weight": 0.0,
        },
    ],
)
def test_step_logs_every_loss_term(extra):
    t = CycleTrainer(_cfg(**extra), _images(4), _images(4, seed=1), CPU)
    row = t.step()
    assert set(t.fields) <= set(row) and row["step"] == 1
    assert row["cycle"] > 0 and row["adversarial"] > 0
    assert (row["ssim"] > 0) == bool(extra) and (row["identity"] > 0) == (not extra)


def test_g_update_leaves_both_discriminators_gradients_alone():
    """G's update runs through D_a and D_b without touching their .grad (requires_grad off, no DDP sync)."""
    t = CycleTrainer(_cfg(), _images(4), _images(4, seed=1), CPU)
    ds = [t.nets["D_a"], t.nets["D_b"]]
    seen = []
    update = t.update

    def watched(loss, *opts):
        before = [None if p.grad is None else p.grad.clone() for d in ds for p in d.parameters()]
        update(loss, *opts)
        if t.opt_g in opts:
            after = [p.grad for d in ds for p in d.parameters()]
            seen.append(
                all(
                    (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
                    for a, b in zip(before, after, strict=True)
                )
            )

    t.update = watched
    t.step()
    t.step()
    assert seen == [True, True]
    assert all(p.requires_grad for d in ds for p in d.parameters()), "the Ds' parameters were not handed back"


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_trains_under_mixed_precision(amp):
    """CycleGAN's mixed-precision path on CPU autocast (the trainer's amp state, not CUDA's op rules; see
    `cpu_amp`), float16 through the gradient scaler, with SSIM, DiffAugment and the image pool: the nets run in
    the amp dtype, the losses are finite, the weights stay float32 and train."""
    c = _cfg(
        steps=20,
        decay_start=20,
        ssim_weight=1.0,
        diffaugment=["color", "translation"],
        spectral_norm=True,
        loss="hinge",
    )
    t = CycleTrainer(c, _images(4), _images(4, seed=1), CPU)
    scales = cpu_amp(t, amp)
    seen = set()
    for net in t.nets.values():
        net.register_forward_hook(lambda mod, inp, out: seen.add(out.dtype))
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in t.nets.items()}
    rows = [t.step() for _ in range(8)]  # fp16: the scaler skips the first updates while it backs off from 2**16
    assert seen == {amp}
    assert all(np.isfinite(list(r.values())).all() for r in rows) and rows[-1]["ssim"] > 0
    for k, net in t.nets.items():
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in net.parameters()), k
        assert any(not torch.equal(a, b) for a, b in zip(before[k], net.parameters(), strict=True)), k
    assert t.scaler.is_enabled() == (amp == torch.float16)
    assert len(scales) == (16 if amp == torch.float16 else 0)  # G's and D's update per step


def _smooth(n: int, seed: int) -> torch.Tensor:
    """Images that can be learnt: 4x4 colour fields upsampled to 32 px."""
    low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear").mul(255).round().to(torch.uint8)


def test_cycle_loss_falls_while_training():
    t = CycleTrainer(
        _cfg(steps=40, decay_start=40, batch_size=4, lr=2e-3, g_channels=8), _smooth(8, 0), _smooth(8, 1), CPU
    )
    cycles = [t.step()["cycle"] for _ in range(40)]
    assert np.mean(cycles[-5:]) < 0.75 * np.mean(cycles[:5])  # measured: 0.76 -> 0.51


def test_resumed_run_equals_the_uninterrupted_one(tmp_path):
    a, b = _images(6), _images(6, seed=1)
    straight = CycleTrainer(_cfg(), a, b, CPU)
    Loop(straight, tmp_path / "s", 4, 2, 2).run()
    first = CycleTrainer(_cfg(), a, b, CPU)
    Loop(first, tmp_path / "r", 2, 2, 2).run()  # stops after step 2 with a checkpoint
    resumed = CycleTrainer(_cfg(), a, b, CPU)
    loop = Loop(resumed, tmp_path / "r", 4, 2, 2)
    loop.resume()
    assert resumed.step_done == 2
    loop.run()
    for k in ("G_ab", "G_ba", "D_a", "D_b"):
        for (name, x), y in zip(
            straight.nets[k].state_dict().items(), resumed.nets[k].state_dict().values(), strict=True
        ):
            assert torch.equal(x, y), f"{k}.{name}"
    assert [r["loss_g"] for r in straight.history] == [r["loss_g"] for r in resumed.history]


@pytest.mark.slow  # the default run covers the stage through `dvc repro` in test_e2e
def test_stage_trains_translates_both_ways_and_scores_each_direction(pair_root):
    root, p = pair_root
    run_stage("cyclegan", "cartoon", p, root)
    out = root / "data" / "cyclegan"
    m = json.loads((out / "metrics.json").read_text())
    for d in ("a_to_b", "b_to_a"):
        assert m[d]["fd_dlib"] > 0 and m[d]["fd_dlib_untranslated"] > 0 and m[d]["kid_dlib"] is not None
    assert m["a"] == "cartoon" and m["b"] == "sketch"
    assert m["num_samples"] == {"a_to_b": 8, "b_to_a": 8}
    model = out / "model"
    assert (model / "checkpoint.pt").is_file() and (model / "losses.csv").read_text().splitlines()[0].startswith(
        "step,loss_g"
    )
    grid = np.asarray(Image.open(model / "translated_a_to_b.png"))
    assert grid.shape[0] == 3 * 32 + 4 * 2  # real, translated, translated back: 3 rows of 32 px with 2 px padding
    assert np.asarray(Image.open(model / "samples.png")).shape[0] == 6 * 32 + 7 * 2


def test_stage_errors_name_the_problem(tmp_path):
    p = tiny_params()
    off = parse_params(
        {**p.model_dump(mode="json"), "cyclegan": {**p.cyclegan.model_dump(mode="json"), "enabled": False}}
    )
    with pytest.raises(ParamsError, match="cyclegan.enabled is false"):
        run_stage("cyclegan", "cartoon", off, tmp_path)
    with pytest.raises(ParamsError, match="runs for cyclegan.a"):
        run_stage("cyclegan", "sketch", p, tmp_path)
    with pytest.raises(FileNotFoundError, match="not packed yet"):
        run_stage("cyclegan", "cartoon", p, tmp_path)
    raw = p.model_dump(mode="json")
    side = p.datasets["cartoon"].pack.resolution
    most = max(n for n in range(1, 7) if side >= 4 * 2**n)
    for change, msg in (
        ({"b": "cartoon"}, "two different datasets"),
        ({"b": "nope"}, "'nope' is not a dataset"),
        ({"decay_start": 10_000}, "after the last step"),
        # InstanceNorm's "Expected more than 1 spatial element" traceback, after the data had loaded
        ({"d_layers": 6}, f"d_layers 6: .* needs 256 px; its datasets are packed at {side} px: use d_layers {most} or"),
    ):
        with pytest.raises(ParamsError, match=msg):
            parse_params({**raw, "cyclegan": {**raw["cyclegan"], **change}})
    assert Layout(tmp_path, "cartoon").packed.parent.exists() is False  # nothing written by the failures


def test_a_set_packed_at_another_resolution_than_its_params_is_named_before_training(layout, tmp_path):
    """Both datasets' pack.resolution changed and one packed again: a ValueError traceback on the image shapes
    after both sets had loaded. Now the set packed before is named, with what to run."""
    import shutil

    raw = tiny_params().model_dump(mode="json")
    for name in ("cartoon", "sketch"):
        raw["datasets"][name]["pack"]["resolution"] = 16
        shutil.copytree(layout.packed, Layout(tmp_path, name).packed)  # packed at 32 px
    raw["cyclegan"]["d_layers"] = 2
    said = (
        r"dataset 'cartoon' is packed at 32 px \(.*dataset.zip\), and datasets.cartoon.pack.resolution is 16 now: "
        r"pack it again, `facegan pack cartoon`"
    )
    with pytest.raises(FileNotFoundError, match=said):
        run_stage("cyclegan", "cartoon", parse_params(raw), tmp_path)
    assert not (tmp_path / "data" / "cyclegan").exists()
