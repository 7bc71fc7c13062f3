"""The GAN objective's named terms, regularisers usable by any GAN, D held still during G's update, the model
registry and which config changes a checkpoint may be resumed under."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from conftest import killed_at, tiny_params
from facegan.config import ParamsError, TrainConfig
from facegan.errors import CheckpointError
from facegan.models import MODELS
from facegan.train.gan import GANTrainer
from facegan.train.run import TRAINERS, make_trainer, run_train

CPU = torch.device("cpu")


def images(n: int = 12, res: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def dcgan(**over) -> TrainConfig:
    return TrainConfig.model_validate({"z_dim": 8, "g_channels": 4, "d_channels": 4, "batch_size": 4, **over})


def test_terms_are_named_and_their_weighted_sum_is_the_loss():
    t = GANTrainer(
        dcgan(model="acgan", loss="wgan-gp", d_norm="layer", aux_weight=0.5),
        images(),
        torch.zeros(12, 2).long(),
        [2, 3],
        CPU,
    )
    gen, aug = t.generators(0)
    real, y = t.real(0, gen)
    z, yf = t.latents(4, gen)
    fake = t.generate(z, yf, gen).detach()
    d = t.objective.d_terms(t.d_run, real, fake, y, yf, gen, aug, 0)
    assert list(d.values) == ["loss_d", "penalty", "aux_d", "d_real", "d_fake", "d_real_sign"]
    assert d.weights == {"loss_d": 1.0, "penalty": 1.0, "aux_d": 0.5}  # d_real / d_fake are only logged
    v = d.values
    assert torch.allclose(d.total(), v["loss_d"] + v["penalty"] + 0.5 * v["aux_d"])


def test_d_real_sign_is_read_against_the_loss_s_level():
    """The logged r_t (d_real_sign, the transfer study's overfitting plot) counted sign(D(real)) while ADA reads
    sign(D(real) - level): for lsgan's unsure D (0.5) the column said 1.0, ADA 0.0."""
    for loss, said in (("lsgan", 0.0), ("nonsaturating", 1.0)):
        t = GANTrainer(dcgan(loss=loss), images(), None, [], CPU)
        gen, aug = t.generators(0)
        real, _ = t.real(0, gen)

        def unsure(x, y):  # D's output on each image: 0.45 or 0.55, about lsgan's level
            return torch.tensor([0.45, 0.55] * (len(x) // 2)).view(-1, 1), None

        d = t.objective.d_terms(unsure, real, real.clone(), None, None, gen, aug, 0)
        assert float(d.values["d_real_sign"]) == said, loss


@pytest.mark.parametrize(
    ("model", "extra", "columns"),
    [
        ("dcgan", {}, ["step", "loss_d", "d_real", "d_fake", "d_real_sign", "loss_g"]),
        ("wgan-gp", {"loss": "wgan-gp"}, ["step", "loss_d", "penalty", "d_real", "d_fake", "d_real_sign", "loss_g"]),
        (
            "dcgan",
            {"r1": {"gamma": 1.0, "every": 2}, "d_norm": "layer", "ada": {"enabled": True}},
            ["step", "loss_d", "d_real", "d_fake", "d_real_sign", "r1", "loss_g", "ada_p"],
        ),
    ],
)
def test_loss_columns_come_from_the_term_names(model, extra, columns):
    t = GANTrainer(dcgan(model=model, **extra), images(), None, [], CPU)
    for _ in range(2):
        t.step()
    assert t.fields == columns


def test_r1_takes_no_batch_norm_d():
    """R1 through D's batch norm in training mode: each sample's gradient took in the batch's other logits (0.08
    against 0.41 for its own), no longer the per-sample penalty it stands for. A batch-norm D, asked for or the
    model's (d_norm auto), is refused with R1; auto is not switched to layer norm (a checkpoint says "auto" for
    either D: a resume would load one into the other). A checkpoint's saved config is not checked again for it
    (its G loads as before: sample, explore, evaluate)."""
    from facegan.config import ParamsError, parse_section
    from facegan.train.checkpoint import train_config

    with pytest.raises(
        ParamsError, match="a batch-norm D is not allowed with it \\(set d_norm layer, instance or none; auto"
    ):
        parse_section(TrainConfig, {"model": "acgan", "r1": {"gamma": 1.0}}, "train")
    with pytest.raises(
        ParamsError, match="a batch-norm D is not allowed with it \\(set d_norm layer, instance or none\\)"
    ):
        parse_section(TrainConfig, {"r1": {"gamma": 1.0}, "d_norm": "batch"}, "train")
    assert parse_section(TrainConfig, {"model": "acgan"}, "train").resolved_d_norm == "batch"  # no R1: as before
    for norm in ("layer", "instance", "none"):
        assert parse_section(TrainConfig, {"r1": {"gamma": 1.0}, "d_norm": norm}, "train").resolved_d_norm == norm
    assert parse_section(TrainConfig, {"model": "stylegan2"}, "train").r1_gamma == 10.0  # its D has no batch norm
    old = {"r1": {"gamma": 1.0}, "loss": "wgan", "ada": {"enabled": True}}  # both rules at once, auto: batch
    assert train_config(old).resolved_d_norm == "batch"  # an earlier facegan's checkpoint: its G still loads


def test_r1_works_on_dcgan_lazily_and_changes_d():
    rows = {}
    ds = {}
    for gamma in (0.0, 5.0):
        t = GANTrainer(dcgan(r1={"gamma": gamma, "every": 2}, d_norm="layer"), images(), None, [], CPU)
        rows[gamma] = [t.step() for _ in range(3)]
        ds[gamma] = torch.cat([p.detach().flatten() for p in t.d.parameters()])
    assert "r1" not in rows[0.0][0]
    r1 = [r["r1"] for r in rows[5.0]]
    assert r1[0] > 0 and r1[1] == 0 and r1[2] > 0  # steps 0 and 2 of every=2
    assert rows[0.0][0]["loss_d"] == rows[5.0][0]["loss_d"]  # same start, same first D loss
    assert not torch.equal(ds[0.0], ds[5.0])  # the R1 updates moved D


def test_path_length_works_on_a_generator_without_w():
    t = GANTrainer(dcgan(path_length={"weight": 1.0, "every": 1}), images(), None, [], CPU)
    rows = [t.step() for _ in range(2)]
    assert all(r["path_length"] > 0 for r in rows) and float(t.objective.pl_mean) > 0


def test_g_step_leaves_d_gradients_alone():
    """Every update of G (adversarial and path length) runs through D without touching D's .grad."""
    t = GANTrainer(
        dcgan(model="acgan", path_length={"weight": 1.0, "every": 1}), images(), torch.zeros(12, 2).long(), [2, 3], CPU
    )
    seen = []
    update = t.update

    def watched(loss, *opts):
        before = [None if p.grad is None else p.grad.clone() for p in t.d.parameters()]
        update(loss, *opts)
        if t.opt_g in opts:
            after = [p.grad for p in t.d.parameters()]
            seen.append(
                all(
                    (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
                    for a, b in zip(before, after, strict=True)
                )
            )

    t.update = watched
    t.step()
    t.step()
    assert seen == [True, True, True, True]  # 2 steps x (G update + path-length update)
    assert all(p.requires_grad for p in t.d.parameters()), "D's parameters were not handed back"


def test_freezed_blocks_stay_frozen_through_g_steps(tmp_path, layout):
    cfg = tiny_params(steps=1, model="stylegan2", z_dim=16, batch_size=4, stylegan2={"preset": "tiny"}).train
    run_train(cfg, layout.packed, tmp_path)
    ft = cfg.model_copy(update={"init_from": tmp_path / "checkpoint.pt", "freeze_d": 1})
    t = GANTrainer(ft, images(8, 32), None, [], CPU)
    frozen = {n: p.detach().clone() for n, p in t.d.named_parameters() if n in t.frozen}
    assert frozen
    t.step()
    t.step()
    for n, p in t.d.named_parameters():
        assert p.requires_grad == (n not in frozen), n
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def test_every_registered_model_has_a_trainer_and_builds():
    for name, spec in MODELS.items():
        assert spec.trainer in TRAINERS, name
        labels = torch.zeros(8, 2).long() if spec.conditional else None
        t = make_trainer(
            dcgan(model=name, **({"stylegan2": {"preset": "tiny"}} if spec.style else {})),
            images(8),
            labels,
            [2, 3] if spec.conditional else [],
            CPU,
        )
        assert t.step()["step"] == 1
    with pytest.raises(ParamsError, match="unknown model 'gan9000'; choose one of: acgan, dcgan"):
        tiny_params(model="gan9000")


def test_model_defaults_follow_the_model_not_a_dump():
    """R1's gamma left null is the model's default, also after switching model in a dumped config."""
    raw = dcgan().model_dump(mode="json")
    assert TrainConfig.model_validate({**raw, "model": "stylegan2"}).r1_gamma == 10.0
    assert dcgan().r1_gamma == 0.0 and dcgan(r1={"gamma": 0.5}, d_norm="layer").r1_gamma == 0.5
    with pytest.raises(ValueError, match="model 'vae' has no discriminator: unset r1.gamma"):
        dcgan(model="vae", r1={"gamma": 1.0})


def test_resume_accepts_runtime_changes_and_names_the_maths_changes(layout, tmp_path):
    cfg = tiny_params(steps=2).train
    run_train(cfg, layout.packed, tmp_path / "a")
    longer = cfg.model_copy(
        update={
            "steps": 4,
            "checkpoint_every": 1,
            "sample_every": 3,
            "fid_every": 2,
            "device": "cpu",
            "loader_threads": 1,
        }
    )
    resumed = run_train(longer, layout.packed, tmp_path / "a")  # fid_every without a scorer: no FID, a warning
    straight = run_train(cfg.model_copy(update={"steps": 4}), layout.packed, tmp_path / "b")
    assert resumed.losses == straight.losses
    changed = cfg.model_copy(update={"steps": 4, "lr_g": 1e-3, "z_dim": 8})
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint.pt: .*different train config \(train.lr_g: 0.0002 -> 0.001; "
        r"train.z_dim: 100 -> 8\)",
    ):
        run_train(changed, layout.packed, tmp_path / "a")
    with pytest.raises(CheckpointError, match="at step 4, past train.steps 3"):
        run_train(cfg.model_copy(update={"steps": 3}), layout.packed, tmp_path / "a")


def test_a_stage_resumes_its_own_checkpoint_and_restarts_over_a_stale_one(layout, tmp_path, caplog):
    """Training writes to a work folder outside the output; the stage (stale="restart") resumes a checkpoint made
    by the same params, code and data, and starts fresh over one made by other params or other data, keeping the
    earlier folder aside (it was deleted: one edited param cost a killed run's hours, while the warning said to
    "restore the config")."""
    caplog.set_level(logging.INFO, logger="facegan")
    cfg = tiny_params(steps=4, checkpoint_every=2, fid_every=0).train
    straight = run_train(cfg, layout.packed, tmp_path / "straight")
    work, out = tmp_path / "work", tmp_path / "out"
    run_train(cfg.model_copy(update={"steps": 2}), layout.packed, out, work=work, stale="restart")
    assert (work / "checkpoint.pt").is_file() and (out / "checkpoint.pt").is_file()
    resumed = run_train(cfg, layout.packed, out, work=work, stale="restart")  # 2 more steps, same params
    assert resumed.losses == straight.losses and "resumed from" in caplog.text
    caplog.clear()
    other = cfg.model_copy(update={"lr_d": 1e-3})
    before = (work / "checkpoint.pt").read_bytes()
    fresh = run_train(other, layout.packed, out, work=work, stale="restart")
    assert "different train config (train.lr_d: 0.0002 -> 0.001)" in caplog.text and "starting fresh" in caplog.text
    aside = tmp_path / "work.stale"
    assert (aside / "checkpoint.pt").read_bytes() == before  # the earlier run, whole, where the warning says
    assert (
        f"its folder is kept as {aside} (to continue it, restore what changed and move it back in place of {work})"
        in (caplog.text)
    )
    assert fresh.losses == run_train(other, layout.packed, tmp_path / "other").losses
    state = torch.load(work / "checkpoint.pt", weights_only=True)
    state["provenance"]["data"] = "0" * 64  # as if the packed dataset had changed since
    torch.save(state, work / "checkpoint.pt")
    caplog.clear()
    run_train(other, layout.packed, out, work=work, stale="restart")
    assert "was made from other data" in caplog.text and "starting fresh" in caplog.text
    assert (tmp_path / "work.stale-2" / "checkpoint.pt").is_file() and (aside / "checkpoint.pt").read_bytes() == before
    with pytest.raises(CheckpointError, match="was made from other data"):
        torch.save(state, work / "checkpoint.pt")
        run_train(other, layout.packed, out, work=work)  # outside stages: refused, not replaced


def test_a_stage_asked_for_fewer_steps_keeps_the_longer_run_aside(layout, tmp_path, caplog):
    """train.steps lowered below a run's checkpoint: the stage removed the whole work folder (checkpoint, best.pt,
    fid.csv) and trained afresh, while its warning said to raise train.steps or remove the checkpoint. The folder
    is set aside now, with where, and the shorter run is the one asked for."""
    caplog.set_level(logging.INFO, logger="facegan")
    cfg = tiny_params(steps=4, checkpoint_every=2, fid_every=0).train
    work, out = tmp_path / "work", tmp_path / "out"
    run_train(cfg, layout.packed, out, work=work, stale="restart")
    longer = (work / "checkpoint.pt").read_bytes()
    shorter = run_train(cfg.model_copy(update={"steps": 2}), layout.packed, out, work=work, stale="restart")
    aside = tmp_path / "work.step4"
    assert (aside / "checkpoint.pt").read_bytes() == longer
    assert f"the checkpoint is at step 4, past the 2 steps asked now: its folder is kept as {aside}" in caplog.text
    assert shorter.losses == run_train(cfg.model_copy(update={"steps": 2}), layout.packed, tmp_path / "b").losses
    run_train(cfg.model_copy(update={"steps": 1}), layout.packed, out, work=work, stale="restart")
    assert (tmp_path / "work.step2" / "checkpoint.pt").is_file() and (aside / "checkpoint.pt").read_bytes() == longer


def _linked_run(layout, tmp_path: Path) -> tuple[TrainConfig, Path, Path, Path]:
    """A 2-step run whose work folder `work` is a link to `disk` (another disk's folder): (cfg, disk, work, out)."""
    cfg = tiny_params(steps=2, checkpoint_every=1, fid_every=0).train
    disk, work, out = tmp_path / "disk" / "run", tmp_path / "work", tmp_path / "out"
    disk.mkdir(parents=True)
    work.symlink_to(disk, target_is_directory=True)
    run_train(cfg, layout.packed, out, work=work, stale="restart")
    return cfg, disk, work, out


def test_a_linked_work_folder_set_aside_keeps_its_link(layout, tmp_path, caplog):
    """A work folder that is a link to another disk: setting a stale run aside moved the link itself, and the fresh
    run then wrote a real folder in its place, on the project's disk. Its target is moved instead, the link stays."""
    caplog.set_level(logging.INFO, logger="facegan")
    cfg, disk, work, out = _linked_run(layout, tmp_path)
    before = (disk / "checkpoint.pt").read_bytes()
    run_train(cfg.model_copy(update={"lr_d": 1e-3}), layout.packed, out, work=work, stale="restart")
    assert work.is_symlink() and work.resolve() == disk.resolve() and (disk / "checkpoint.pt").is_file()
    assert (tmp_path / "disk" / "run.stale" / "checkpoint.pt").read_bytes() == before
    kept, home = (tmp_path / "disk" / "run.stale").resolve(), disk.resolve()
    assert (
        f"its folder is kept as {kept} (to continue it, restore what changed and move it back in place of {home})"
        in (caplog.text)
    )  # the link's target, where the run goes back (moving it onto the link put it inside the fresh folder)


def test_a_linked_work_folder_whose_target_cannot_move_moves_the_link(layout, tmp_path, caplog, monkeypatch):
    """Where the link's target cannot be renamed (a read-only parent, a mount point), setting the run aside was a
    PermissionError traceback; the link itself is moved then, with a warning saying why."""
    caplog.set_level(logging.INFO, logger="facegan")
    cfg, disk, work, out = _linked_run(layout, tmp_path)
    rename = Path.rename

    def refused(self, target):
        if self == disk.resolve():
            raise PermissionError(13, "Permission denied")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", refused)
    run_train(cfg.model_copy(update={"lr_d": 1e-3}), layout.packed, out, work=work, stale="restart")
    aside = tmp_path / "work.stale"
    assert aside.is_symlink() and (aside / "checkpoint.pt").is_file() and not work.is_symlink()
    assert "cannot set the folder" in caplog.text and "moving the link instead" in caplog.text
    assert f"its folder is kept as {aside}" in caplog.text


def test_a_linked_run_is_not_set_aside_where_no_fresh_folder_can_be_made(layout, tmp_path, monkeypatch):
    """The target renamed (no space needed), then a full disk refused the fresh folder: the link was moved too and
    the warning named a link to nothing, while the run sat unnamed on the disk. Now the run goes back and the stage
    stops with one error; nothing is moved."""
    from facegan.errors import OutputError

    cfg, disk, work, out = _linked_run(layout, tmp_path)
    before = (disk / "checkpoint.pt").read_bytes()
    mkdir = Path.mkdir

    def full(self, *args, **kwargs):
        if self == disk.resolve():
            raise OSError(28, "No space left on device")
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", full)
    with pytest.raises(
        OutputError, match="cannot make a fresh folder there for the new run \\(No space left on device\\)"
    ):
        run_train(cfg.model_copy(update={"lr_d": 1e-3}), layout.packed, out, work=work, stale="restart")
    assert work.is_symlink() and (disk / "checkpoint.pt").read_bytes() == before
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == [".work.lock", "disk", "out", "work"]
        and not (tmp_path / "disk" / "run.stale").exists()
    )


def test_under_ddp_only_rank_0_sets_a_stale_run_aside_and_names_it(layout, tmp_path, caplog):
    """Every rank worked out the set-aside name; one that looked after rank 0 had moved the folder named `.stale-2`,
    a folder that is not there. The other ranks now leave the folder and the warning to rank 0."""
    from types import SimpleNamespace

    from facegan.train.loop import Loop

    cfg = tiny_params(steps=1, checkpoint_every=1, fid_every=0).train
    work = tmp_path / "work"
    run_train(cfg, layout.packed, tmp_path / "out", work=work, stale="restart")

    def refuse(state):
        raise CheckpointError("the checkpoint was written with a different train config (train.lr_d: 1 -> 2)")

    rank1 = SimpleNamespace(dist=SimpleNamespace(main=False), load_state_dict=refuse)
    caplog.clear()
    assert Loop(rank1, tmp_path / "out", 1, 1, 1, work=work).resume(stale="restart") is None
    assert (work / "checkpoint.pt").is_file() and not list(tmp_path.glob("work.*")) and "kept as" not in caplog.text
    rank0 = SimpleNamespace(dist=SimpleNamespace(main=True), load_state_dict=refuse)
    assert Loop(rank0, tmp_path / "out", 1, 1, 1, work=work).resume(stale="restart") is None
    assert (tmp_path / "work.stale" / "checkpoint.pt").is_file() and f"kept as {tmp_path / 'work.stale'}" in caplog.text


def test_a_stage_resumes_over_an_edit_of_code_training_does_not_run(layout, tmp_path, code_copy, caplog):
    """A checkpoint recorded a hash of every .py of facegan: a killed training, then an edit of report.py (or a
    `git pull` that changed only the UI), and the stage threw hours of training away. Now it records the code of
    DVC's train stage (its dvc.yaml code deps): an edit elsewhere resumes, an edit of the training code restarts."""
    caplog.set_level(logging.INFO, logger="facegan")
    cfg = tiny_params(steps=2, checkpoint_every=1, fid_every=0).train
    work, out = tmp_path / "work", tmp_path / "out"

    def train_after_editing(path: str, steps: int) -> None:
        with (code_copy / path).open("a") as f:
            f.write("# an edit\n")
        caplog.clear()
        run_train(cfg.model_copy(update={"steps": steps}), layout.packed, out, work=work, stale="restart")

    run_train(cfg, layout.packed, out, work=work, stale="restart")
    train_after_editing("src/facegan/report.py", 3)
    assert "resumed from" in caplog.text and "at step 2" in caplog.text and "starting fresh" not in caplog.text
    train_after_editing("src/facegan/train/loop.py", 4)
    assert "made from other code" in caplog.text and "starting fresh" in caplog.text


def test_a_resumed_run_writes_the_uninterrupted_bytes(layout, tmp_path, monkeypatch):
    """Not only equal weights: every file of the output (checkpoint.pt included) is byte-identical."""
    cfg = tiny_params(steps=4, checkpoint_every=1, sample_every=2, fid_every=0, model="acgan", ema=0.5).train
    run_train(cfg, layout.packed, tmp_path / "a" / "out", work=tmp_path / "a" / "work", stale="restart")
    with killed_at(monkeypatch, 2):
        run_train(cfg, layout.packed, tmp_path / "b" / "out", work=tmp_path / "b" / "work", stale="restart")
    assert not (tmp_path / "b" / "out").exists()  # nothing published before the end
    run_train(cfg, layout.packed, tmp_path / "b" / "out", work=tmp_path / "b" / "work", stale="restart")
    files = {p.relative_to(tmp_path / "a" / "out") for p in (tmp_path / "a" / "out").rglob("*") if p.is_file()}
    assert files == {p.relative_to(tmp_path / "b" / "out") for p in (tmp_path / "b" / "out").rglob("*") if p.is_file()}
    assert {"checkpoint.pt", "losses.csv", "samples.png"} <= {str(f) for f in files}
    differ = [
        str(f)
        for f in sorted(files)
        if (tmp_path / "a" / "out" / f).read_bytes() != (tmp_path / "b" / "out" / f).read_bytes()
    ]
    assert differ == []


def test_fine_tuning_keeps_frozen_layers_from_wgan_clipping_and_a_fixed_p_over_the_source_p(tmp_path):
    """WGAN's weight clipping clamps the weights D trains, not FreezeD's pretrained ones (it wiped them to +-clip
    at the first step); a fine-tune with ada.fixed_p runs at that p, not at the source run's (it kept the source's
    for its whole length); without fixed_p it starts from the source's."""
    from conftest import tiny_gan
    from facegan.train.checkpoint import save_checkpoint

    pre = tiny_gan({"model": "dcgan", "ada": {"enabled": True}})
    with torch.no_grad():
        for p in pre.d.parameters():
            p.mul_(50)  # pretrained weights well beyond the clip bound
    pre.ada.p = 0.37
    save_checkpoint(tmp_path / "pre.pt", pre.state_dict())
    ft = {"model": "dcgan", "init_from": str(tmp_path / "pre.pt"), "loss": "wgan", "freeze_d": 1}
    t = tiny_gan(ft)
    frozen = {n: p.detach().clone() for n, p in t.d.named_parameters() if n in t.frozen}
    assert frozen and max(p.abs().max() for p in frozen.values()) > 10 * t.cfg.clip
    t.step()
    for n, p in t.d.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
        else:
            assert p.abs().max() <= t.cfg.clip, n
    assert tiny_gan({**ft, "loss": "nonsaturating", "ada": {"enabled": True}}).ada.p == pytest.approx(0.37)
    fixed = tiny_gan({**ft, "loss": "nonsaturating", "ada": {"enabled": True, "fixed_p": 0.1}})
    fixed.step()
    assert fixed.ada.p == 0.1


def test_a_fine_tune_restarts_when_its_pretrained_checkpoint_was_trained_again(layout, tmp_path, caplog):
    """A fine-tune's work checkpoint records the pretrained file it started from: the source trained again at
    the same path makes the fine-tune start fresh from it (it used to resume, 0 steps, the old fine-tune)."""
    caplog.set_level(logging.INFO, logger="facegan")
    pre = tiny_params(steps=2, fid_every=0).train
    run_train(pre, layout.packed, tmp_path / "pre")
    ft = pre.model_copy(update={"init_from": tmp_path / "pre" / "checkpoint.pt", "steps": 2})
    work, out = tmp_path / "work", tmp_path / "out"
    run_train(ft, layout.packed, out, work=work, stale="restart")
    shutil.rmtree(tmp_path / "pre")  # the source trained again, as `dvc repro` does: its output removed first
    run_train(pre.model_copy(update={"lr_g": 1e-3}), layout.packed, tmp_path / "pre")
    caplog.clear()
    again = run_train(ft, layout.packed, out, work=work, stale="restart")
    assert "made from other pretrained checkpoint (train.init_from)" in caplog.text and "starting fresh" in caplog.text
    assert again.losses == run_train(ft, layout.packed, tmp_path / "fresh").losses


def test_lazy_r1_stands_for_the_d_updates_between_its_applications():
    """R1 is applied every `every` steps, and D updates n_critic times a step: its weight and D's Adam correction
    (StyleGAN2's mb_ratio = k / (k + 1)) count k = every * n_critic D updates (they counted `every`: with
    n_critic 2 the effective gamma was half)."""
    from conftest import tiny_gan

    t = tiny_gan({"model": "dcgan", "d_norm": "none", "r1": {"gamma": 1.0, "every": 4}, "n_critic": 2})
    assert (t.objective.r1.weight, t.objective.r1.span) == (0.5, 8)
    assert t.opt_d.param_groups[0]["lr"] == pytest.approx(t.cfg.lr_d * 8 / 9)
    assert t.opt_d.param_groups[0]["betas"] == pytest.approx((t.cfg.beta1 ** (8 / 9), t.cfg.beta2 ** (8 / 9)))
    values = t.step()  # step 0: R1 is due
    assert values["r1"] > 0


def test_settings_the_model_does_not_read_are_named_once(layout, tmp_path, caplog):
    """StyleGAN2 builds its nets from train.stylegan2 and takes no labels: a d_variant 'sn' (no spectral norm
    follows), dcgan widths or acgan's label settings given to it are warned of by name, not silently dropped."""
    caplog.set_level(logging.WARNING, logger="facegan")
    over = {"model": "stylegan2", "z_dim": 16, "batch_size": 4, "stylegan2": {"preset": "tiny"}}
    cfg = tiny_params(steps=1, fid_every=0, d_variant="sn", aux_weight=2.0, **over).train
    cfg = cfg.model_copy(update={"g_channels": 32, "d_channels": 32})  # the defaults: not named
    assert cfg.unread() == ["aux_weight", "d_variant"]
    run_train(cfg, layout.packed, tmp_path)
    assert "model stylegan2 does not read train.aux_weight (2.0), train.d_variant (sn): they are left as is" in (
        caplog.text
    )
    assert "wgan-gp" not in caplog.text
    caplog.clear()  # model wgan-gp with params.yaml's loss (nonsaturating) is not WGAN-GP: said
    run_train(tiny_params(steps=1, fid_every=0, model="wgan-gp").train, layout.packed, tmp_path / "wgan")
    assert caplog.text.count("model wgan-gp trains with loss nonsaturating, not wgan-gp (the model sets") == 1
    assert TrainConfig(model="wgan-gp", loss="wgan-gp").loss_note() is None
    assert TrainConfig(model="wgan-gp", loss="wgan").loss_note() is None
    assert "loss hinge" in TrainConfig(model="wgan-gp", loss="hinge").loss_note()
    assert TrainConfig(model="stylegan2", g_channels=64).unread() == ["g_channels"]
    assert TrainConfig(model="stylegan2").unread() == [] and TrainConfig(model="acgan", aux_weight=2.0).unread() == []


def test_gradient_penalties_score_each_batch_with_its_labels_and_draw_for_the_global_batch(monkeypatch):
    """WGAN-div takes D's gradient at the fakes with the fakes' labels (D(fake, y_fake) is what D's loss trains on
    them; it used the reals' labels). WGAN-GP draws its interpolation weights for the global batch and each process
    takes its slice (each drew its own slice's count from the shared stream: every process the same weights, and
    the step's later draws shifted), so 2 processes interpolate as one process does."""
    from facegan import losses
    from facegan.train.dist import Dist

    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    monkeypatch.setattr(
        losses, "_grad_norm", lambda d, x, labels, augment: seen.append((x, labels)) or x.flatten(1).norm(dim=1)
    )
    real, fake = torch.rand(8, 3, 4, 4), torch.rand(8, 3, 4, 4)
    y_real, y_fake = torch.zeros(8, 2), torch.ones(8, 2)
    losses.divergence_penalty(None, real, fake, y_real, y_fake, torch.Generator(), k=2.0, p=6.0)
    assert [labels is y for (_, labels), y in zip(seen, (y_real, y_fake), strict=True)] == [True, True]

    seen.clear()
    losses.gradient_penalty(None, real, fake, y_real, y_fake, torch.Generator().manual_seed(5), weight=10.0)
    one = seen[0][0]
    halves = []
    for rank in (0, 1):
        seen.clear()
        part = slice(rank * 4, rank * 4 + 4)
        gen = torch.Generator().manual_seed(5)
        losses.gradient_penalty(None, real[part], fake[part], None, None, gen, Dist(rank, 2), weight=10.0)
        halves.append(seen[0][0])
    assert torch.equal(torch.cat(halves), one)


def test_gradient_penalties_see_the_augmented_images_d_s_loss_sees():
    """With DiffAugment or ADA, D's loss scores augmented images, and R1 takes its gradient through the
    augmentation; WGAN-GP's and WGAN-div's D passes scored the plain images, so the constraint held where D is not
    trained. Now D sees augment(x) and the gradient is x's, through the augmentation (here 3x: |grad| triples)."""
    from facegan import losses

    def d(x, labels):  # D = the sum of the pixels: |grad D(augment(x))| = 3 * sqrt(numel) for augment 3x
        return x.sum(dim=(1, 2, 3)), None

    real, fake = torch.rand(4, 3, 4, 4), torch.rand(4, 3, 4, 4)
    norm = 3 * 48**0.5
    gp = losses.gradient_penalty(d, real, fake, None, None, torch.Generator(), augment=lambda v: 3 * v, weight=10.0)
    assert gp.item() == pytest.approx(10.0 * (norm - 1) ** 2)
    div = losses.divergence_penalty(d, real, fake, None, None, torch.Generator(), augment=lambda v: 3 * v, k=2.0, p=6.0)
    assert div.item() == pytest.approx(2.0 * norm**6, rel=1e-5)


@pytest.mark.parametrize("loss", ["wgan-gp", "wgan-div"])
def test_the_objective_gives_its_penalty_the_augmentation_of_the_step(monkeypatch, loss):
    from facegan import losses

    seen: list[torch.Tensor] = []

    def grad_norm(d, x, labels, augment):
        seen.append(augment(x))
        return x.flatten(1).norm(dim=1)

    monkeypatch.setattr(losses, "_grad_norm", grad_norm)
    t = GANTrainer(dcgan(loss=loss, diffaugment=["cutout"]), images(), None, [], CPU)
    gen, aug = t.generators(0)
    real, y = t.real(0, gen)
    fake = t.generate(*t.latents(4, gen), gen).detach()
    t.objective.d_terms(t.d_run, real, fake, y, None, gen, aug, 0)
    assert seen and all(x.shape == real.shape for x in seen)
    assert all((x == 0).flatten(1).float().mean(1).min() > 0.05 for x in seen)  # every image has a cut-out square
