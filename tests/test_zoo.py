"""The GAN zoo on one loop: every model x loss, ACGAN variants, DiffAugment, EMA, sampling by label."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cpu_amp, tiny_params
from facegan.augment.diffaugment import diff_augment
from facegan.config import ParamsError, TrainConfig
from facegan.io import read_image
from facegan.losses import LOSSES
from facegan.models import build_models
from facegan.sample import LabelError, parse_labels, sample_checkpoint
from facegan.train.gan import GANTrainer as Trainer
from facegan.train.run import run_train

DIMS = [3, 2, 4]


def _data(n=24, res=32):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=g)
    labels = torch.stack([torch.randint(0, k, (n,), generator=g) for k in DIMS], 1)
    return images, labels


def _cfg(**kw) -> TrainConfig:
    base = {"steps": 2, "batch_size": 8, "g_channels": 8, "d_channels": 8}
    return TrainConfig(**{**base, **kw})


COMBOS = [(m, loss) for m in ("dcgan", "wgan-gp", "acgan") for loss in sorted(LOSSES)]


@pytest.mark.parametrize(("model", "loss"), COMBOS)
def test_every_model_and_loss_runs_two_steps(model, loss):
    extra = {"d_norm": "layer"} if model == "dcgan" and loss in ("wgan-gp", "wgan-div") else {}
    images, labels = _data()
    t = Trainer(_cfg(model=model, loss=loss, n_critic=2, **extra), images, labels, DIMS, torch.device("cpu"))
    rows = [t.step(), t.step()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(list(r.values())).all() for r in rows)
    if model == "acgan":
        assert rows[-1]["aux_d"] > 0 and rows[-1]["aux_g"] > 0
    if loss in ("wgan-gp", "wgan-div"):
        assert rows[-1]["penalty"] > 0
    if loss == "wgan":
        assert max(p.abs().max().item() for p in t.d.parameters()) <= 0.01 + 1e-7, "weights clipped"


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("model", "loss"), [("dcgan", "wgan-div"), ("wgan-gp", "wgan-gp"), ("acgan", "wgan-div")])
def test_gradient_penalties_train_under_mixed_precision(model, loss, amp):
    """The penalties run outside autocast in float32 while the fakes come from G in the amp dtype (CPU autocast
    in place of CUDA's, see `cpu_amp`; float16 through the gradient scaler): WGAN-div's penalty put them through D
    as they came and failed ('Input type (c10::BFloat16) and bias type (float) should be the same')."""
    extra = {"d_norm": "layer"} if model == "dcgan" else {}
    images, labels = _data()
    t = Trainer(_cfg(model=model, loss=loss, n_critic=2, **extra), images, labels, DIMS, torch.device("cpu"))
    scales = cpu_amp(t, amp)
    seen = []
    t.g.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    before = [p.detach().clone() for p in (*t.g.parameters(), *t.d.parameters())]
    rows = [t.step() for _ in range(4)]  # fp16: the scaler may skip the first updates while it backs off from 2**16
    assert amp in seen  # G ran in the amp dtype
    assert all(np.isfinite(list(r.values())).all() for r in rows) and rows[-1]["penalty"] > 0
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in (*t.g.parameters(), *t.d.parameters()))
    after = [*t.g.parameters(), *t.d.parameters()]
    assert sum(not torch.equal(a, b) for a, b in zip(before, after, strict=True)) > len(before) // 2  # both trained
    assert t.scaler.is_enabled() == (amp == torch.float16)
    assert len(scales) == (12 if amp == torch.float16 else 0)  # 4 x (2 D updates + 1 G update) through the scaler


@pytest.mark.parametrize("res", [64, 128])
@pytest.mark.parametrize("arch", ["deconv", "upsample"])
@pytest.mark.parametrize("variant", ["plain", "sn", "projection"])
@pytest.mark.parametrize("head", ["softmax", "multihot"])
def test_acgan_shapes(res, arch, variant, head):
    cfg = _cfg(model="acgan", g_arch=arch, d_variant=variant, aux_head=head)
    g, d = build_models(cfg, res, DIMS)
    z, y = torch.randn(2, cfg.z_dim), torch.tensor([[0, 1, 3], [2, 0, 1]])
    x = g(z, y)
    assert x.shape == (2, 3, res, res)
    adv, aux = d(x, y)
    assert adv.shape == (2,) and [a.shape for a in aux] == [(2, k) for k in DIMS]


def test_labels_reach_the_generator():
    for mode in ("concat", "noconcat"):
        g, _ = build_models(_cfg(model="acgan", label_input=mode), 32, DIMS)
        g.eval()
        z = torch.randn(1, 100)
        a = g(z, torch.tensor([[0, 0, 0]]))
        b = g(z, torch.tensor([[2, 0, 0]]))
        assert (a - b).abs().max() > 1e-4, f"{mode}: changing a label must change the image"


def test_projection_term_depends_on_labels():
    _, d = build_models(_cfg(model="acgan", d_variant="projection"), 32, DIMS)
    d.eval()
    x = torch.randn(1, 3, 32, 32)
    assert d(x, torch.tensor([[0, 0, 0]]))[0] != d(x, torch.tensor([[1, 1, 1]]))[0]


def test_spectral_norm_bounds_layers():
    _, d = build_models(_cfg(d_variant="sn"), 32)
    d.train()
    for _ in range(30):  # power iterations converge during forward passes
        d(torch.randn(4, 3, 32, 32))
    w = d.features[0].weight.detach().flatten(1)
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_incompatible_choices_are_refused():
    with pytest.raises(ValueError, match="d_norm 'batch' is not allowed"):
        TrainConfig(loss="wgan-gp", d_norm="batch")
    with pytest.raises(ValueError, match="projection.*needs labels"):
        TrainConfig(d_variant="projection")
    assert TrainConfig(loss="wgan-gp").resolved_d_norm == "layer"
    assert TrainConfig(model="wgan-gp").resolved_d_norm == "layer"
    with pytest.raises(ParamsError, match="needs a labelled dataset"):  # one error line, not a traceback
        build_models(_cfg(model="acgan"), 32, [])
    with pytest.raises(ValueError, match="batch_size 7 is the global batch, split over nproc 2"):
        TrainConfig(batch_size=7, nproc=2)


def test_diffaugment_is_reproducible_and_changes_images():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    a = diff_augment(x, ["color", "translation", "cutout"], torch.Generator().manual_seed(1))
    b = diff_augment(x, ["color", "translation", "cutout"], torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.allclose(a, x)
    cut = diff_augment(torch.ones(8, 3, 16, 16), ["cutout"], torch.Generator().manual_seed(0))
    zero_frac = (cut == 0).float().mean().item()
    assert 0.1 < zero_frac < 0.3  # half-side square: a quarter of the area, less where it hits the border
    moved = diff_augment(x, ["translation"], torch.Generator().manual_seed(0))
    assert moved.shape == x.shape


@pytest.mark.parametrize(("h", "w", "ratio"), [(16, 16, 0.5), (7, 6, 0.5), (9, 17, 0.25), (5, 5, 1.0), (3, 3, 0.2)])
def test_cutout_zeroes_the_square_its_draws_place(h, w, ratio):
    """DiffAugment's cutout (a mask built by comparisons) zeroes exactly the pixels the reference's indexed writes
    zero: the ch x cw square at the drawn centre, its indices clamped to the image."""
    from facegan.augment.diffaugment import cutout

    x = torch.rand(64, 3, h, w) + 0.5
    got = cutout(x, torch.Generator().manual_seed(3), ratio)
    gen = torch.Generator().manual_seed(3)  # the same draws, in cutout's order
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (64, 1, 1), generator=gen)
    ox = torch.randint(0, w + (1 - cw % 2), (64, 1, 1), generator=gen)
    b, gy, gx = torch.meshgrid(torch.arange(64), torch.arange(ch), torch.arange(cw), indexing="ij")
    mask = torch.ones(64, h, w)
    mask[b, (gy + oy - ch // 2).clamp(0, h - 1), (gx + ox - cw // 2).clamp(0, w - 1)] = 0
    assert torch.equal(got, x * mask[:, None]) and (got == 0).any()


def test_diffaugment_augments_in_float32():
    """Fakes in the amp dtype are augmented as their float32 values would be (colour factors not rounded to it)."""
    x = (torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1).bfloat16()
    policies = ["color", "translation", "cutout"]
    want = diff_augment(x.float(), policies, torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = diff_augment(x, policies, torch.Generator().manual_seed(2))
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_diffaugment_keeps_gradients():
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    diff_augment(x, ["color", "translation", "cutout"], torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ema_tracks_generator():
    images, labels = _data()
    t = Trainer(_cfg(ema=0.5, ema_rampup=None), images, labels, DIMS, torch.device("cpu"))
    before = [p.clone() for p in t.ema.model.parameters()]
    t.step()
    after = list(t.ema.model.parameters())
    g_params = list(t.g.parameters())
    for b, a, g in zip(before, after, g_params, strict=True):
        assert torch.allclose(a, 0.5 * b + 0.5 * g, atol=1e-6)


def test_ema_warms_up_so_a_short_run_does_not_average_its_random_start():
    """ema_rampup r (default 0.05, stylegan2-ada's): the decay at step t is min(ema, 0.5^(1/(r t))): 0 at the first
    step (the average starts at G after it), a half-life of r t steps, then `ema`. Without it, after t steps the
    average still holds ema^t of G's random start (0.999^1500: 22%)."""
    from facegan.train.ema import EMA

    ema = EMA(torch.nn.Linear(2, 2), 0.999, rampup=0.05)
    assert ema.beta(0) == 0 and ema.beta(20) == pytest.approx(0.5) and ema.beta(10**6) == 0.999
    assert ema.beta(100) == pytest.approx(0.5 ** (1 / 5)) and EMA(torch.nn.Linear(2, 2), 0.999).beta(0) == 0.999
    images, labels = _data()
    warm = Trainer(_cfg(ema=0.999), images, labels, DIMS, torch.device("cpu"))
    flat = Trainer(_cfg(ema=0.999, ema_rampup=None), images, labels, DIMS, torch.device("cpu"))
    start = [p.clone() for p in flat.ema.model.parameters()]
    warm.step()
    flat.step()
    assert all(torch.equal(a, g) for a, g in zip(warm.ema.model.parameters(), warm.g.parameters(), strict=True))
    for e, s0, g in zip(flat.ema.model.parameters(), start, flat.g.parameters(), strict=True):
        assert torch.allclose(e, 0.999 * s0 + 0.001 * g, atol=1e-6)


@pytest.mark.parametrize("model", ["dcgan", "stylegan2"])
def test_ema_multi_tensor_update_equals_the_per_tensor_one_and_keeps_g_layout(model):
    """EMA.update runs as multi-tensor ops (a few CUDA kernels a step): the values of a per-tensor lerp_ / copy_,
    BN's int64 counter included; under channels_last the EMA copy is laid out as G (the multi-tensor kernel's fast
    route needs equal strides)."""
    over = {"stylegan2": {"preset": "tiny"}} if model == "stylegan2" else {}
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig.model_validate(
        {"model": model, "batch_size": 4, "ema": 0.9, "ema_rampup": None, "channels_last": True, **over}
    )
    t = Trainer(cfg, images, None, [], torch.device("cpu"))
    for pe, p in zip(t.ema.model.parameters(), t.g.parameters(), strict=True):
        assert pe.stride() == p.stride()
    assert any(p.dim() == 4 and not p.is_contiguous() for p in t.ema.model.parameters())  # NHWC, as G's
    want = copy.deepcopy(t.ema.model)
    before = [p.clone() for p in want.parameters()]
    t.step()
    with torch.no_grad():
        for pe, p in zip(want.parameters(), t.g.parameters(), strict=True):
            pe.lerp_(p, 1 - 0.9)
        for be, b in zip(want.buffers(), t.g.buffers(), strict=True):
            be.copy_(b)
    got = t.ema.model.state_dict()
    assert any(v.dtype == torch.int64 for v in got.values()) == (model == "dcgan")
    for name, v in want.state_dict().items():
        assert torch.equal(got[name], v), name
    assert any(not torch.equal(b, p) for b, p in zip(before, t.ema.model.parameters(), strict=True))
    with pytest.raises(ValueError, match="different parameters or buffers"):
        t.ema.update(torch.nn.Linear(2, 2))


def test_acgan_run_writes_attribute_grids_gif_and_samples_by_label(layout, tmp_path):
    cfg = tiny_params(steps=2, model="acgan", d_variant="projection", ema=0.9, diffaugment=["translation"]).train
    run_train(cfg, layout.packed, tmp_path)
    for name in ("hair_color", "eye_color", "face_color", "glasses", "hairstyle", "face_shape"):
        assert (tmp_path / f"samples_by_{name}.png").is_file()
    from PIL import Image

    grid = Image.open(tmp_path / "samples_by_hair_color.png")
    assert grid.height > grid.width * 0.8  # 7 hair colours: 7 rows of 8
    gif = Image.open(tmp_path / "interpolation.gif")
    assert gif.n_frames > 10

    ims = sample_checkpoint(tmp_path / "checkpoint.pt", 4, seed=3, labels="hair=blond,glasses=1")
    assert ims.shape == (4, 32, 32, 3) and ims.dtype == np.uint8
    assert np.array_equal(ims, sample_checkpoint(tmp_path / "checkpoint.pt", 4, seed=3, labels="hair=blond,glasses=1"))
    assert not np.array_equal(
        ims, sample_checkpoint(tmp_path / "checkpoint.pt", 4, seed=3, labels="hair=black,glasses=1")
    )
    with pytest.raises(
        LabelError, match="unknown value 'green' for hair_color; valid: black, blond, blue, brown, gray, pink, red"
    ):
        sample_checkpoint(tmp_path / "checkpoint.pt", 1, 0, "hair_color=green")
    with pytest.raises(
        LabelError, match=r"unknown value 'green' for 'hair' \(hair_color: black, .*; hairstyle: bob, bun"
    ):
        sample_checkpoint(tmp_path / "checkpoint.pt", 1, 0, "hair=green")
    with pytest.raises(LabelError, match="unknown label 'hat'; attributes: hair_color, eye_color"):
        sample_checkpoint(tmp_path / "checkpoint.pt", 1, 0, "hat=1")

    cli = [
        sys.executable,
        "-c",
        "from facegan.cli import main; main()",
        "sample",
        "-c",
        str(tmp_path / "checkpoint.pt"),
    ]
    r = subprocess.run([*cli, "-n", "3", "--labels", "glasses=2", "-o", tmp_path / "s"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == "error: unknown value '2' for glasses; valid: 0, 1\n"  # and no bar
    r = subprocess.run([*cli, "-n", "3", "--labels", "eye=blue", "-o", tmp_path / "s"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "grid.png",
        "seed0_0000.png",
        "seed0_0001.png",
        "seed0_0002.png",
    ]
    # again into that folder: refused (the new images would mix with these), nothing removed on bad input
    for name in ("mine.txt", "seed_bank.png", "seed1_12.png"):  # not what facegan sample writes
        (tmp_path / "s" / name).write_text("not a sample")
    earlier = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    r = subprocess.run([*cli, "-n", "2", "--seed", "1", "-o", tmp_path / "s"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == (
        f"error: {tmp_path / 's'}: holds 4 image(s) of an earlier `facegan sample` (grid.png, ...); "
        "give another --out, or --overwrite to replace them\n"
    )
    r = subprocess.run([*cli, "-n", "2", "-l", "glasses=2", "--overwrite", "-o", tmp_path / "s"], capture_output=True)
    assert r.returncode == 2 and b"unknown value '2' for glasses" in r.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == earlier
    r = subprocess.run(
        [*cli, "-n", "2", "--seed", "1", "--overwrite", "-o", tmp_path / "s"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"wrote 2 images and grid.png to {tmp_path / 's'}, in place of 4 of an earlier sample\n"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "grid.png",
        "mine.txt",
        "seed1_0000.png",
        "seed1_0001.png",
        "seed1_12.png",
        "seed_bank.png",
    ]
    # many images: written a batch at a time (the same images as all at once); more than a grid's worth is for
    # `facegan fid`, which would count a grid.png as one more image: none unless asked for
    many = [*cli, "-n", "70", "--seed", "5", "-o", str(tmp_path / "many")]
    r = subprocess.run(many, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == f"wrote 70 images to {tmp_path / 'many'}\n", r.stderr
    files = sorted((tmp_path / "many").iterdir())
    assert [f.name for f in files[:2]] == ["seed5_0000.png", "seed5_0001.png"] and len(files) == 70
    at_once = sample_checkpoint(tmp_path / "checkpoint.pt", 70, seed=5)
    assert all(np.array_equal(read_image(f), im) for f, im in zip(files, at_once, strict=True))
    r = subprocess.run([*many, "--grid", "--overwrite"], capture_output=True, text=True)
    assert r.returncode == 0 and "wrote 70 images and grid.png (the first 64) to" in r.stdout, r.stderr
    assert sorted((tmp_path / "many").iterdir()) == sorted([*files, tmp_path / "many" / "grid.png"])
    h, w = at_once.shape[1:3]
    assert read_image(tmp_path / "many" / "grid.png").shape == (8 * (h + 2) + 2, 8 * (w + 2) + 2, 3)


def test_sample_removes_an_earlier_sample_only_once_the_generator_has_drawn(layout, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from facegan import sample
    from facegan.cli import app

    run_train(tiny_params(steps=1).train, layout.packed, tmp_path / "ckpt")
    cli = ["sample", "-c", str(tmp_path / "ckpt" / "checkpoint.pt"), "-n", "3", "-o", str(tmp_path / "s")]
    assert CliRunner().invoke(app, [*cli, "--no-grid"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    assert sorted(before) == ["seed0_0000.png", "seed0_0001.png", "seed0_0002.png"]  # --no-grid at n <= 64

    def fails(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")  # a checkpoint that loads, a generator that cannot run

    monkeypatch.setattr(sample, "render", fails)
    r = CliRunner().invoke(app, [*cli, "--overwrite"])
    assert isinstance(r.exception, RuntimeError)
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before


def test_a_sample_whose_writes_fail_keeps_the_earlier_sample_whole(layout, tmp_path, monkeypatch):
    """A full disk during `sample --overwrite` deleted the earlier images, then failed with part of the new ones
    written (and a traceback): now the new set is written aside and moved in only once complete."""
    import errno

    from typer.testing import CliRunner

    from facegan import io, sample
    from facegan.cli import app
    from facegan.errors import OutputError

    run_train(tiny_params(steps=1).train, layout.packed, tmp_path / "ckpt")
    out = tmp_path / "s"
    cli = ["sample", "-c", str(tmp_path / "ckpt" / "checkpoint.pt"), "-o", str(out)]
    assert CliRunner().invoke(app, [*cli, "-n", "3", "--seed", "100"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before) == 4  # three images and the grid
    real, calls = io.write_image, []

    def full_disk(path, array):
        calls.append(path)
        if len(calls) == 3:
            (path.parent / f".{path.name}.tmp.png").write_bytes(b"half")  # what a cut-off save leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, array)

    monkeypatch.setattr(sample, "write_image", full_disk)
    r = CliRunner().invoke(app, [*cli, "-n", "5", "--overwrite"])
    assert isinstance(r.exception, OutputError), r.output  # main() makes it one `error:` line, exit 2
    assert str(r.exception) == (
        f"facegan sample --out: cannot write to {out}: No space left on device; the 4 image(s) of the earlier "
        "sample are kept"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing new, nothing lost, nothing hidden
    monkeypatch.setattr(sample, "write_image", real)
    stale = out / sample.STAGING / "seed0_0009.png"  # what a killed run left: removed, never moved in or scored
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    r = CliRunner().invoke(app, [*cli, "-n", "5", "--overwrite"])
    assert r.exit_code == 0 and sorted(p.name for p in out.iterdir()) == [
        "grid.png",
        *(f"seed0_000{i}.png" for i in range(5)),
    ]


def test_a_cut_off_image_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from facegan.io import write_image

    def cut(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half a png")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", cut)
    with pytest.raises(OSError, match="No space left"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_parse_labels_rules():
    names, values = ["hair_color", "hair_style"], {"hair_color": ["a", "b"], "hair_style": ["x"]}
    assert parse_labels("hair_color=b", names, values) == {0: 1}
    assert parse_labels("hair=x", names, values) == {1: 0}  # prefix settled by the value
    values2 = {"hair_color": ["a"], "hair_style": ["a"]}
    with pytest.raises(LabelError, match="'hair' is ambiguous"):
        parse_labels("hair=a", names, values2)
    with pytest.raises(LabelError, match="unconditional"):
        parse_labels("x=1", [], {})
    # the last of two values won, without a word
    with pytest.raises(LabelError, match=r"^hair_color is given twice, as 'a' and 'b': give it once$"):
        parse_labels("hair_color=a,hair_c=b", names, values)
    assert parse_labels("hair_color=b,hair_color=b", names, values) == {0: 1}


def test_unconditional_checkpoint_refuses_labels(layout, tmp_path):
    run_train(tiny_params(steps=1).train, layout.packed, tmp_path)
    with pytest.raises(LabelError, match="unconditional"):
        sample_checkpoint(tmp_path / "checkpoint.pt", 1, 0, "glasses=1")


def test_acgan_resume_is_bitwise_exact(layout, tmp_path, monkeypatch):
    from facegan.train import stepper
    from facegan.train.checkpoint import load_checkpoint

    cfg = tiny_params(steps=4, model="acgan", loss="hinge", ema=0.9, diffaugment=["color", "cutout"], n_critic=2).train
    run_train(cfg, layout.packed, tmp_path / "a")
    real = stepper.step_generator
    monkeypatch.setattr(
        stepper,
        "step_generator",
        lambda seed, step: (_ for _ in ()).throw(KeyboardInterrupt) if step == 3 else real(seed, step),
    )
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, layout.packed, tmp_path / "b")
    monkeypatch.setattr(stepper, "step_generator", real)
    run_train(cfg, layout.packed, tmp_path / "b")
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for net in ("G", "D", "G_ema"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net


def test_params_error_for_unknown_model():
    with pytest.raises(ParamsError, match="train.model: got 'stylegan9'"):
        tiny_params(model="stylegan9")


def test_a_cyclegan_checkpoint_given_to_sample_says_what_it_is_and_where_it_works(tmp_path):
    """It was refused as 'not a generator checkpoint of `facegan train` (keys: D_a, D_b, G_ab, ...)'."""
    from facegan.errors import CheckpointError
    from facegan.train.checkpoint import generator_of

    state = {"format": 1, "G_ab": {}, "G_ba": {}, "D_a": {}, "D_b": {}, "config": {}}
    with pytest.raises(CheckpointError, match=r"c.pt: a CycleGAN checkpoint \(`facegan cyclegan`\): it translates .*"
                       r"`facegan explore` translates with it$"):  # fmt: skip
        generator_of(state, tmp_path / "c.pt")
