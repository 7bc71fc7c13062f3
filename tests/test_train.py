"""Training: finite losses, checkpoints that load with weights_only, exact resume, loss registry."""

from __future__ import annotations

import math
import os
import re
import shutil

import pytest
import torch

from conftest import logs_of, tiny_params
from facegan import train as _  # noqa: F401
from facegan.layout import Layout
from facegan.losses import LOSSES, get_loss
from facegan.models import build_models
from facegan.train import stepper
from facegan.train.checkpoint import load_checkpoint, load_generator
from facegan.train.images import batch_indices
from facegan.train.run import run_train


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_two_steps_every_loss(layout, tmp_path, loss):
    cfg = tiny_params(steps=2, loss=loss).train
    result = run_train(cfg, layout.packed, tmp_path)
    assert len(result.losses) == 2
    assert all(torch.isfinite(torch.tensor([h["loss_d"], h["loss_g"]])).all() for h in result.losses)
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "losses.csv").read_text().startswith("step,loss_d")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and set(state) >= {"G", "D", "opt_G", "opt_D", "config", "rng_torch", "losses"}


def test_a_max_images_above_the_set_size_is_said(layout, tmp_path, caplog):
    """transfer.target_images (train.max_images) at or above the set's size trains on all of it: said, not unseen."""
    cfg = tiny_params(steps=1, max_images=1000).train
    with logs_of(caplog):
        run_train(cfg, layout.packed, tmp_path)
    assert re.search(r"train.max_images 1000: the set has \d+ images, all of them are used", caplog.text)


def test_generator_shapes(tiny_params_obj):
    for res in (32, 64, 128):
        g, d = build_models(tiny_params_obj.train, res)
        x = g(torch.randn(3, tiny_params_obj.train.z_dim))
        assert x.shape == (3, 3, res, res) and x.abs().max() <= 1
        adv, aux = d(x)
        assert adv.shape == (3,) and aux is None


def test_unknown_loss_lists_valid():
    with pytest.raises(
        ValueError,
        match="unknown loss 'relativistic'; choose one of: "
        "hinge, lsgan, minimax, nonsaturating, wgan, wgan-div, wgan-gp",
    ):
        get_loss("relativistic")


def test_resume_is_bitwise_exact(layout, tmp_path, monkeypatch):
    cfg = tiny_params(steps=4).train
    run_train(cfg, layout.packed, tmp_path / "straight")

    real_gen = stepper.step_generator

    def crash_at_3(seed, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return real_gen(seed, step)

    monkeypatch.setattr(stepper, "step_generator", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, layout.packed, tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 2
    monkeypatch.setattr(stepper, "step_generator", real_gen)
    result = run_train(cfg, layout.packed, tmp_path / "resumed")
    # its speed is of the 2 steps it trained: all 4 steps divided into their seconds halved it (a rerun at the end:
    # 0 s over every step, the 0.0002 s/step a CycleGAN's metrics.json showed)
    assert (result.steps, result.trained) == (4, 2) and result.seconds_per_step == result.seconds / 2
    again = run_train(cfg, layout.packed, tmp_path / "resumed")
    assert (again.steps, again.trained, again.seconds_per_step) == (4, 0, None)

    a, b = (
        load_checkpoint(tmp_path / "straight" / "checkpoint.pt"),
        load_checkpoint(tmp_path / "resumed" / "checkpoint.pt"),
    )
    for net in ("G", "D"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs after resume"
    assert a["losses"] == b["losses"]


def test_resume_refuses_a_different_config(layout, tmp_path):
    run_train(tiny_params(steps=2).train, layout.packed, tmp_path)
    with pytest.raises(ValueError, match="different train config"):
        run_train(tiny_params(steps=2, lr_g=1e-3).train, layout.packed, tmp_path)


def test_batches_cover_each_epoch_once():
    n, b = 10, 4
    seen = torch.cat([batch_indices(n, b, s, seed=1) for s in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(n, b, 3, 1), batch_indices(n, b, 3, 1))
    # each epoch's order is drawn once and kept: a batch is a new tensor, so writing into it changes no later batch
    want = torch.randperm(n, generator=torch.Generator().manual_seed(1 * 7_919 + 1))
    first = batch_indices(n, b, 3, 1)
    assert torch.equal(first, want[2:6])
    first.fill_(-1)
    assert torch.equal(batch_indices(n, b, 3, 1), want[2:6])


def test_load_generator_round_trip(layout, tmp_path):
    run_train(tiny_params(steps=2).train, layout.packed, tmp_path)
    g, cfg, state = load_generator(tmp_path / "checkpoint.pt")
    assert not g.training and state["resolution"] == 32
    assert g(torch.zeros(1, cfg.z_dim)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("exact", [True, False])
def test_runtime_sets_determinism_without_filling_new_tensors(global_torch_settings, exact):
    """Deterministic kernels without their NaN fill of every new tensor (a debugging aid costing ~2% of a CPU
    StyleGAN2 step); bitwise resume (test_resume_is_bitwise_exact) holds without it."""
    torch.utils.deterministic.fill_uninitialized_memory = True
    dist, device = stepper.runtime(tiny_params(deterministic=exact, device="cpu", threads=1).train)
    assert not dist.active and device == torch.device("cpu") and torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled() is exact
    assert torch.utils.deterministic.fill_uninitialized_memory is False


@pytest.mark.parametrize(("setting", "exact"), [(True, True), ("auto", False), (False, False)])
def test_cuda_determinism_settings(global_torch_settings, monkeypatch, setting, exact):
    """On CUDA, exact means deterministic kernels, no TF32, no cudnn autotuning, and cuBLAS's fixed workspace
    (without CUBLAS_WORKSPACE_CONFIG its matmuls are not deterministic); fast means the opposite. The flags are
    settable without a GPU."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert stepper.apply_determinism(setting, torch.device("cuda")) is exact
    assert torch.are_deterministic_algorithms_enabled() is exact
    assert torch.backends.cudnn.benchmark is (not exact)
    assert torch.backends.cuda.matmul.allow_tf32 is torch.backends.cudnn.allow_tf32 is (not exact)
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == (":4096:8" if exact else None)


def _dcgan_trainer():
    from facegan.config import TrainConfig
    from facegan.train.gan import GANTrainer

    cfg = TrainConfig.model_validate({"z_dim": 8, "g_channels": 4, "d_channels": 4, "batch_size": 4})
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return GANTrainer(cfg, images, None, [], torch.device("cpu"))


def test_the_loop_reads_each_steps_values_during_the_next():
    """`advance` (what the loop runs) leaves a step's values unread until the next step has been queued; they are
    the values `step` reads at once. A checkpoint's state holds every step's row, the unread left to the loop."""
    eager = _dcgan_trainer()
    rows = [eager.step(), eager.step(), eager.step()]
    assert [r["step"] for r in rows] == [1, 2, 3] and eager.history == rows
    t = _dcgan_trainer()
    assert t.advance() == []
    assert t.advance() == rows[:1] and t.step_done == 2 and t.history == rows[:1]
    assert t.state()["losses"] == rows[:2] and t.history == rows[:1]
    assert t.advance(read_all=True) == rows[1:] and t.history == rows


@pytest.mark.parametrize(("checkpoint_every", "diverged_at", "kept"), [(5, 4, None), (3, 3, None), (2, 4, 2)])
def test_a_non_finite_loss_stops_the_loop_and_keeps_the_last_finite_checkpoint(
    tmp_path, monkeypatch, checkpoint_every, diverged_at, kept
):
    """Step 3's loss is NaN: the loop raises TrainingDiverged (a FloatingPointError, and a FaceganError: one line)
    naming step 3 when it reads that step's values, during step 4 (or at once, before a checkpoint due at step 3).
    The state then, the NaN row included, goes to work/diverged.pt; work/checkpoint.pt stays the last checkpoint of
    finite losses (it was overwritten with the diverged state, which a resume then trained on)."""
    from facegan.errors import FaceganError, TrainingDiverged
    from facegan.train.loop import DIVERGED, Loop

    t = _dcgan_trainer()
    record = t.record

    def nan_at_step_3(values, **extra):
        record({**values, "loss_d": torch.tensor(float("nan"))} if t.step_done == 2 else values, **extra)

    monkeypatch.setattr(t, "record", nan_at_step_3)
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 3: ") as raised:
        Loop(t, tmp_path, steps=6, checkpoint_every=checkpoint_every, sample_every=100).run()
    assert isinstance(raised.value, FloatingPointError) and isinstance(raised.value, FaceganError)
    state = load_checkpoint(tmp_path / DIVERGED)
    assert state["step"] == diverged_at
    assert [r["step"] for r in state["losses"]] == list(range(1, diverged_at + 1))
    losses_d = torch.tensor([r["loss_d"] for r in state["losses"]])
    assert torch.isnan(losses_d[2]) and torch.isfinite(losses_d[:2]).all()
    assert f"the state when it was found, at step {diverged_at}, is saved in {tmp_path / DIVERGED}" in str(raised.value)
    if kept is None:
        assert not (tmp_path / "checkpoint.pt").exists() and "no checkpoint was made before it" in str(raised.value)
    else:
        last = load_checkpoint(tmp_path / "checkpoint.pt")
        assert last["step"] == kept and all(math.isfinite(r["loss_d"]) for r in last["losses"])
        assert f"{tmp_path / 'checkpoint.pt'} (step {kept}), is kept" in str(raised.value)


def test_a_second_training_into_a_busy_work_folder_stops_before_touching_it(layout, tmp_path):
    import subprocess
    import sys

    from facegan.errors import FolderBusy

    work, out = tmp_path / "work", tmp_path / "model"
    run_train(tiny_params(steps=2).train, layout.packed, out, work=work)
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    hold = "import sys, time\nfrom pathlib import Path\nfrom facegan.io import exclusive\n"
    hold += "with exclusive(Path(sys.argv[1]), 'training'):\n    print('held', flush=True)\n    time.sleep(300)\n"
    other = subprocess.Popen([sys.executable, "-c", hold, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        # other params: unheld, stale="restart" would remove the work folder and start again
        with pytest.raises(FolderBusy) as e:
            run_train(tiny_params(steps=4, lr_g=1e-3).train, layout.packed, out, work=work, stale="restart")
        assert str(e.value) == (
            f"{work}: another training is writing here (it holds {tmp_path / '.work.lock'}); "
            "wait for it to end, or stop it"
        )
        assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before
    finally:
        other.kill()
        other.wait()
    # the other process gone (killed: the OS released its lock), training takes the folder
    result = run_train(tiny_params(steps=4, lr_g=1e-3).train, layout.packed, out, work=work, stale="restart")
    assert result.steps == 4 and torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4


@pytest.mark.parametrize(
    "rank0, said",
    [
        (1.0, "another training is writing here (rank 0 found it held)"),
        (2.0, "rank 0 could not take the training lock (its log says why)"),
    ],
)
def test_the_other_ranks_stop_with_what_rank_0_met(tmp_path, rank0, said):
    from facegan.errors import FolderBusy
    from facegan.train.loop import held

    class OtherRank:  # a rank that is not 0 under DDP: all_sum brings rank 0's code
        main = False

        def all_sum(self, values: list[float]) -> list[float]:
            return [values[0] + rank0]

    with (
        pytest.raises(FolderBusy, match=re.escape(f"{tmp_path / 'w'}: {said}")),
        held(tmp_path / "w", OtherRank()),  # type: ignore[arg-type]
    ):
        pytest.fail("went on")


def test_a_checkpoint_of_another_number_of_processes_resumes_and_says_so(tmp_path, caplog):
    """Each DDP process draws its own slice's augmentations: a checkpoint of 2 processes resumed by 1 (a torchrun by
    hand against params' nproc, another machine) continues as 1 process trains, so it says so; it still resumes (nets
    without augmentation or BatchNorm train the same: test_ddp resumes a 1-process checkpoint on 2). A checkpoint
    made before the number was recorded loads without a word."""
    import logging

    from facegan.train.checkpoint import save_checkpoint
    from facegan.train.loop import Loop

    t = _dcgan_trainer()
    t.step()
    state = t.state_dict()
    assert state["world"] == 1
    with caplog.at_level(logging.WARNING, logger="facegan.train.stepper"):
        _dcgan_trainer().load_state_dict(state)
        _dcgan_trainer().load_state_dict({k: v for k, v in state.items() if k != "world"})
        assert caplog.records == []
        save_checkpoint(tmp_path / "checkpoint.pt", {**state, "world": 2})
        resumed = _dcgan_trainer()
        Loop(resumed, tmp_path, steps=4, checkpoint_every=2, sample_every=100).resume(stale="restart")
    assert resumed.step_done == 1 and (tmp_path / "checkpoint.pt").is_file()
    assert [r.getMessage() for r in caplog.records] == [
        "the checkpoint was made by 2 training process(es) and this run has 1: it continues as 1 would train "
        "(augmentations are drawn per process, BatchNorm statistics are per process)"
    ]


def test_the_ema_generator_normalises_with_batchnorm_statistics_of_its_own_weights():
    """An EMA of a BatchNorm G copied the live G's running statistics, which do not fit the averaged weights: the
    EMA net's activations had a fraction of the variance its BatchNorm layers divided by (0.07-0.38 after 150 steps
    at ema 0.99), and its samples were washed out. The sampled net (and the checkpoint's G_ema) now has statistics
    of its own: each BN layer's running variance is its input's variance under the sampling distribution."""
    from facegan.config import TrainConfig
    from facegan.sample import latents
    from facegan.train.gan import GANTrainer

    cfg = TrainConfig.model_validate(
        {"z_dim": 8, "g_channels": 8, "d_channels": 8, "batch_size": 16, "ema": 0.99, "ema_rampup": None,
         "lr_g": 2e-3, "lr_d": 2e-3}
    )  # fmt: skip
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    t = GANTrainer(cfg, images, None, [], torch.device("cpu"))
    for _step in range(150):
        t.advance()
    t.settle()
    g = t.sampler
    norms = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, x, _o, i=i: seen.__setitem__(i, x[0])) for i, m in enumerate(norms)]
    with torch.no_grad():
        g(latents(8, 512, 123, None)[0])  # fresh noise, eval mode: the running statistics are used
    for h in hooks:
        h.remove()
    for i, m in enumerate(norms):
        ratio = seen[i].transpose(0, 1).flatten(1).var(1) / m.running_var
        assert 0.8 < ratio.median() < 1.25, (i, ratio)
    assert torch.equal(t.state_dict()["G_ema"][next(k for k in t.state_dict()["G_ema"] if "running_var" in k)],
                       next(m.running_var for m in norms))  # fmt: skip


def test_a_training_that_replaces_the_model_removes_its_earlier_evaluation(layout, tmp_path):
    """An evaluate stopped before it wrote (Ctrl-C, a crash) left the old model's distances beside a new model, and
    `facegan transfer table` and `report` read them as its own: a table of a 4-step model with its 2-step score;
    the report (samples, figures) of the old model stayed too, and `summary` showed it. A training that leaves the
    model as it was keeps both."""
    from facegan.chain import run_stage

    p = tiny_params(steps=2)
    shutil.copytree(layout.packed, tmp_path / "data" / "processed" / "cartoon")
    at = Layout(tmp_path, "cartoon")
    run_stage("train", "cartoon", p, tmp_path)
    for folder in (at.evaluation, at.report):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text('{"fd_dlib": 0.5}')
    run_stage("train", "cartoon", p, tmp_path)  # trained already: the same model
    assert (
        (at.evaluation / "metrics.json").read_text() == (at.report / "metrics.json").read_text() == '{"fd_dlib": 0.5}'
    )
    shutil.rmtree(at.model)  # as `dvc repro` does before train: the work folder's copy tells the model was the same
    run_stage("train", "cartoon", p, tmp_path)
    assert (at.evaluation / "metrics.json").is_file() and (at.report / "metrics.json").is_file()
    run_stage("train", "cartoon", tiny_params(steps=3), tmp_path)  # resumed to step 3: another model
    assert not at.evaluation.exists() and not at.report.exists() and (at.model / "checkpoint.pt").is_file()


def test_a_relative_init_from_is_not_read_in_another_folder_than_the_root(tmp_path, monkeypatch):
    """`facegan train DATASET --root P` from another folder fine-tuned from that folder's file of init_from's name,
    without a word (only the tracking store was the root's); `~` was not the home folder."""
    from facegan.chain import run_stage
    from facegan.config import ParamsError

    here, root = tmp_path / "here", tmp_path / "root"
    here.mkdir()
    root.mkdir()
    monkeypatch.chdir(here)
    (here / "pre.pt").write_bytes(b"another model")
    p = tiny_params(init_from="pre.pt")
    with pytest.raises(ParamsError, match=r"train.init_from pre.pt: a relative path, read in the current folder "):
        run_stage("train", "cartoon", p, root)
    assert not (root / "data").exists()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tiny_params(init_from="~/pre.pt").train.init_from == tmp_path / "pre.pt"
    unknown = r"train.init_from: got '~nosuchuser9/pre.pt'; ~nosuchuser9/pre.pt: Could not determine home"
    with pytest.raises(ParamsError, match=unknown):
        tiny_params(init_from="~nosuchuser9/pre.pt")  # a RuntimeError traceback before
