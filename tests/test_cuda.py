"""CUDA paths (AMP, channels-last, torch.compile): run where a GPU is present, skipped elsewhere."""

from __future__ import annotations

import pytest
import torch

from facegan.config import TrainConfig
from facegan.train.checkpoint import load_checkpoint, save_checkpoint
from facegan.train.gan import GANTrainer as Trainer
from facegan.train.stepper import apply_determinism

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
    pytest.mark.usefixtures("global_torch_settings"),  # each test sets determinism and TF32 as its run would
]

MODELS = {
    "dcgan": {"model": "dcgan", "g_channels": 16, "d_channels": 16},
    "stylegan2": {
        "model": "stylegan2",
        "z_dim": 32,
        "lr_g": 0.002,
        "lr_d": 0.002,
        "beta1": 0.0,
        "beta2": 0.99,
        "stylegan2": {"preset": "tiny"},
        "r1": {"every": 2},
        "path_length": {"weight": 2.0, "every": 2},
        "ada": {"enabled": True, "fixed_p": 0.5},
    },
}


def _trainer(**over) -> Trainer:
    # EMA at a constant decay (no warm-up): `graph` captures it once
    cfg = TrainConfig.model_validate({"batch_size": 8, "device": "cuda", "ema": 0.9, "ema_rampup": None, **over})
    apply_determinism(cfg.deterministic, torch.device("cuda"))  # as run_train does
    gen = torch.Generator().manual_seed(0)  # the same images for every trainer: tests compare their losses
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=gen).pin_memory()
    return Trainer(cfg, images, None, [], torch.device("cuda"))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("model", list(MODELS))
def test_amp_and_channels_last_train_with_finite_losses(model, amp):
    t = _trainer(**MODELS[model], amp=amp, channels_last=True)
    assert t.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert t.scaler.is_enabled() == (amp == "fp16")
    before = {k: v.clone() for k, v in t.g.state_dict().items()}
    rows = [t.step() for _ in range(4)]
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rows)
    assert any(not torch.equal(before[k], v) for k, v in t.g.state_dict().items())
    assert all(p.dtype == torch.float32 for p in t.g.parameters())  # AMP keeps float32 master weights
    with torch.no_grad():
        assert torch.isfinite(t.sampler.eval()(torch.randn(4, t.cfg.z_dim, device="cuda"))).all()


def test_torch_compile_trains():
    t = _trainer(**MODELS["dcgan"], compile=True)
    rows = [t.step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rows)
    assert not any(k.startswith("_orig_mod") for k in t.g.state_dict())  # checkpoints keep plain names


def test_fp32_cuda_matches_cpu_for_one_step():
    """The same seed gives the same first step on CUDA and CPU (up to float error)."""
    cfg = {**MODELS["stylegan2"], "ada": {"enabled": False}, "batch_size": 8, "ema": 0.0}
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    rows = []
    for dev in ("cpu", "cuda"):
        c = TrainConfig.model_validate({**cfg, "device": dev, "deterministic": True})
        apply_determinism(c.deterministic, torch.device(dev))  # exact kernels, no TF32
        rows.append(Trainer(c, images, None, [], torch.device(dev)).step())
    for k in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert rows[0][k] == pytest.approx(rows[1][k], rel=1e-3, abs=1e-4), k


def test_stylegan2_fp16_blocks_train_hundreds_of_steps_with_finite_losses():
    """Mixed precision the stylegan2-ada way (fp16 in the highest-resolution blocks, activations clamped)."""
    over = {**MODELS["stylegan2"], "ada": {"enabled": False}, "stylegan2": {"preset": "tiny", "amp_blocks": 2,
            "conv_clamp": 256.0}}  # fmt: skip
    t = _trainer(**over, amp="fp16", channels_last=True)
    rows = [t.step() for _ in range(300)]
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rows)
    assert t.scaler.get_scale() > 1  # the gradient scaler did not collapse


def test_cuda_graph_replay_gives_the_eager_losses():
    """compile: reduce-overhead (CUDA graphs) on DCGAN: the first steps' losses equal the eager ones."""
    rows = {}
    for mode in (False, "reduce-overhead"):
        t = _trainer(**MODELS["dcgan"], compile=mode, ema=0.0, deterministic=True)
        rows[mode] = [t.step() for _ in range(5)]
    for a, b in zip(rows[False], rows["reduce-overhead"], strict=True):
        for k in ("loss_d", "loss_g"):
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4), k


def test_a_graphed_step_replays_the_eager_losses_and_weights():
    """graph: true on DCGAN (2 D updates a step, EMA): 3 eager steps, the capture, then replays, against the eager
    run: the same losses and weights, exact kernels on both sides."""
    over = {**MODELS["dcgan"], "n_critic": 2, "deterministic": True, "channels_last": True}
    eager, graphed = _trainer(**over), _trainer(**over, graph=True)
    assert graphed.graphed and all(g["capturable"] for g in graphed.opt_g.param_groups + graphed.opt_d.param_groups)
    rows = [(eager.step(), graphed.step()) for _ in range(8)]
    assert graphed.graph is not None and graphed.graph.graph is not None  # captured at step 3, replayed since
    for a, b in rows:
        for k in ("loss_d", "loss_g", "d_real", "d_fake"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), (a["step"], k)
    for net in ("g", "d"):
        mine, theirs = getattr(graphed, net).state_dict(), getattr(eager, net).state_dict()
        for k, v in theirs.items():
            torch.testing.assert_close(mine[k], v, rtol=1e-4, atol=1e-5, msg=f"{net}.{k}")
    torch.testing.assert_close(graphed.sampler.state_dict(), eager.sampler.state_dict(), rtol=1e-4, atol=1e-5)


def _acgan(graph: bool, device: str = "cuda") -> Trainer:
    cfg = TrainConfig(model="acgan", g_channels=16, d_channels=16, batch_size=8, device=device, ema=0.9,
                      ema_rampup=None, amp="bf16", deterministic=True, graph=graph)  # fmt: skip
    apply_determinism(cfg.deterministic, torch.device(device))
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (32, 1), generator=torch.Generator().manual_seed(2))
    return Trainer(cfg, images.pin_memory() if device == "cuda" else images, labels, [3], torch.device(device))


def test_a_graphed_acgan_in_bf16_trains_as_the_eager_one_and_resumes_across_modes(tmp_path):
    """graph with labels in bf16 against an eager twin (the labels reach the replayed step); its checkpoint, through
    a file, resumes eagerly on CUDA and on the CPU, and an eager run's resumes graphed."""
    eager, graphed = _acgan(False), _acgan(True)
    rows = [(eager.step(), graphed.step()) for _ in range(6)]
    assert graphed.graph is not None and graphed.graph.graph is not None
    for a, b in rows:
        for k in ("loss_d", "loss_g", "aux_d", "aux_g"):
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4), (a["step"], k)
    save_checkpoint(tmp_path / "graphed.pt", graphed.state_dict())
    save_checkpoint(tmp_path / "eager.pt", eager.state_dict())
    for graph, device, saved in ((False, "cuda", "graphed"), (False, "cpu", "graphed"), (True, "cuda", "eager")):
        t = _acgan(graph, device)
        t.load_state_dict(load_checkpoint(tmp_path / f"{saved}.pt"))
        groups = t.opt_g.param_groups + t.opt_d.param_groups
        assert all(g["capturable"] is graph and bool(g["fused"]) is (device == "cuda") for g in groups)
        resumed = [t.step() for _ in range(5)]  # graphed: 3 eager steps, the capture, a replay
        assert resumed[0]["step"] == 7 and (t.graph is not None and t.graph.graph is not None) is graph, (graph, device)
        assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in resumed), (graph, device)


def test_fast_runs_draw_stylegan2_noise_on_the_gpu_seeded_per_step():
    """deterministic auto on CUDA: noise maps and path length's noise come from a generator on the GPU, reseeded
    each step from a stream of its own (no host RNG or blocking copy for them); two runs of a seed train alike."""
    over = {**MODELS["stylegan2"], "ada": {"enabled": False}, "ema": 0.0}
    runs = []
    for _ in range(2):
        t = _trainer(**over)
        noise_gen = t.noise_generator(torch.Generator().manual_seed(0), 0)
        assert noise_gen.device.type == "cuda"
        kw = t.g.mixing_kwargs(8, 0.0, torch.Generator(), t.device, noise_gen=noise_gen)
        assert all(n.device.type == "cuda" for n in kw["noise"])
        runs.append([t.step() for _ in range(3)])
    for a, b in zip(*runs, strict=True):
        for k in ("loss_d", "loss_g", "path_length"):
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4), k
    assert any(r["path_length"] for r in runs[0])


@pytest.mark.parametrize(
    "over",
    [
        {**MODELS["dcgan"], "diffaugment": ["color", "translation", "cutout"]},
        {**MODELS["stylegan2"], "ada": {"enabled": False}},
        {**MODELS["stylegan2"], "ada": {"enabled": False}, "amp": "fp16", "channels_last": True},
    ],
    ids=["dcgan-diffaugment", "stylegan2-r1-path-length", "stylegan2-fp16"],
)
def test_steps_as_the_loop_runs_them_never_wait_for_the_gpu(over):
    """deterministic auto (fast) on CUDA: a step run by `advance` makes no synchronising call (each host tensor goes
    through pinned memory, the fused optimisers take fp16's inf check on the GPU); its only wait is for the step
    before, to read that step's losses (an event wait, which the debug mode does not flag: by design), so the host
    queues the next step while the GPU runs this one. Checked with PyTorch's sync debug mode set to raise; the steps
    cover R1 and path length (every 2). ADA is off: it reads D's signs back once every `interval` steps, by design."""
    t = _trainer(**over)
    for _ in range(2):
        t.step()  # warm-up: cudnn's algorithm search, lazy initialisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        rows = [row for _ in range(4) for row in t.advance()]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    rows += t.settle()
    assert [r["step"] for r in rows] == [3, 4, 5, 6]
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rows)
