"""`train.graph`: the step split into host draws and device updates (what a CUDA graph captures), checked on the
CPU, where it runs eagerly; the capture and replay themselves are in tests/test_cuda.py."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from pydantic import ValidationError

from conftest import GAN_LABEL_DIMS, tiny_gan
from facegan.config import TrainConfig
from facegan.train.dist import Dist
from facegan.train.gan import GANTrainer
from facegan.train.graph import StepGraph
from facegan.train.stepper import load_optimizer

CPU = torch.device("cpu")
FIXED_EMA = {"ema_rampup": None}  # tiny_gan's EMA at its constant decay: a warm-up's would change each step
GRAPHABLE = {
    "dcgan-2-critics": {"model": "dcgan", "n_critic": 2, **FIXED_EMA},
    "acgan": {"model": "acgan", **FIXED_EMA},
    "wgan-clipped": {"model": "wgan-gp", "loss": "wgan", "optimizer": "rmsprop", "n_critic": 3, **FIXED_EMA},
}


@pytest.mark.parametrize("over", list(GRAPHABLE.values()), ids=list(GRAPHABLE))
def test_the_split_step_trains_exactly_as_the_eager_one(over, caplog):
    """Draws first, then updates: the same generator stream, so bitwise the same losses and weights."""
    eager = tiny_gan(over)
    with caplog.at_level(logging.WARNING, logger="facegan.train.gan"):
        split = tiny_gan({**over, "graph": True})
    assert "graph applies to CUDA only" in caplog.text
    assert isinstance(split.graph, StepGraph) and eager.graph is None
    assert not split.graphed  # nothing captured on the CPU; the optimisers are not capturable
    assert not split.opt_d.param_groups[0]["capturable"]
    rows = [(eager.step(), split.step()) for _ in range(4)]
    assert split.graph.graph is None
    for a, b in rows:
        assert a == b
    for net in ("g", "d"):
        mine, theirs = getattr(split, net).state_dict(), getattr(eager, net).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), net
    ema = zip(split.ema.model.parameters(), eager.ema.model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in ema)


CAPTURED = {  # what the graph admits, the way each would be captured
    **GRAPHABLE,
    "dcgan-sn-hinge": {"model": "dcgan", "d_variant": "sn", "loss": "hinge", "n_critic": 2, **FIXED_EMA},
    "acgan-projection-lsgan": {"model": "acgan", "d_variant": "projection", "loss": "lsgan", "ema": 0.0},
}


@pytest.mark.parametrize("over", list(CAPTURED.values()), ids=list(CAPTURED))
def test_the_updates_given_their_inputs_depend_on_nothing_else(over, monkeypatch):
    """What a replay relies on: given the inputs, the updates neither draw from the step's generators nor depend on
    the step's number, so the values captured at one step are right at every other. Two twins update from the same
    inputs at steps 0 and 7: the same values and weights, bitwise, and no generator was drawn from."""
    twins = [tiny_gan({**over, "graph": True}) for _ in range(2)]
    inputs = twins[0]._draw(5)
    handed: list[tuple[torch.Generator, torch.Tensor]] = []
    for t in twins:
        real = t.generators

        def generators(step: int, real=real) -> tuple[torch.Generator, torch.Generator]:
            gen, aug = real(step)
            handed.extend((g, g.get_state()) for g in {id(gen): gen, id(aug): aug}.values())
            return gen, aug

        monkeypatch.setattr(t, "generators", generators)
    outs = [t._updates(step, [b.clone() for b in inputs]) for t, step in zip(twins, (0, 7), strict=True)]
    assert outs[0].keys() == outs[1].keys() and all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
    for net in ("g", "d"):
        a, b = (getattr(t, net).state_dict() for t in twins)
        assert all(torch.equal(a[k], b[k]) for k in a), net
    assert handed and all(torch.equal(g.get_state(), state) for g, state in handed)


def test_graph_refuses_several_processes_started_by_torchrun():
    cfg = TrainConfig.model_validate({"batch_size": 4, "g_channels": 4, "d_channels": 4, "graph": True})
    images = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"graph: true captures one process's step; this run has 2 \(torchrun\)"):
        GANTrainer(cfg, images, None, [], CPU, Dist(rank=0, world=2))


def test_the_split_step_draws_each_d_update_its_own_batch():
    t = tiny_gan({**GRAPHABLE["acgan"], "n_critic": 2, "graph": True})
    first, second = t._draw(0)
    assert first.real.shape == (4, 3, 32, 32) and first.z.shape == (4, t.cfg.z_dim)
    assert first.y_real is not None and first.y_fake is not None and first.y_real.shape == (4, len(GAN_LABEL_DIMS))
    assert not torch.equal(first.real, second.real) and not torch.equal(first.z, second.z)
    again = t._draw(0)  # a function of (seed, step)
    assert all(torch.equal(a, b) for a, b in zip(first.tensors(), again[0].tensors(), strict=True))
    assert all(torch.equal(c, t) for c, t in zip(first.clone().tensors(), first.tensors(), strict=True))


@pytest.mark.parametrize(
    ("over", "named"),
    [
        ({"model": "stylegan2", "stylegan2": {"preset": "tiny"}}, "model 'stylegan2'"),
        ({"model": "vae"}, "model 'vae'"),
        ({"model": "wgan-gp", "loss": "wgan-gp"}, "loss 'wgan-gp'"),
        ({"model": "dcgan", "d_norm": "layer", "r1": {"gamma": 1.0}}, "r1.gamma"),
        ({"model": "dcgan", "path_length": {"weight": 2.0}}, "path_length.weight"),
        ({"model": "dcgan", "diffaugment": ["color"]}, "diffaugment"),
        ({"model": "dcgan", "ada": {"enabled": True}}, "ada.enabled"),
        ({"model": "dcgan", "amp": "fp16"}, "amp 'fp16' (use bf16)"),
        ({"model": "dcgan", "compile": "reduce-overhead"}, "compile 'reduce-overhead'"),
        ({"model": "dcgan", "nproc": 2}, "nproc > 1"),
        ({"model": "dcgan", "ema": 0.99}, "ema_rampup (its decay changes each step; null with ema)"),
    ],
)
def test_graph_refuses_a_step_that_decides_on_the_host(over, named):
    with pytest.raises(ValidationError) as e:
        TrainConfig.model_validate({**over, "graph": True})
    assert named in str(e.value) and "graph: true captures" in str(e.value)
    TrainConfig.model_validate(over)  # the same settings without graph are fine


def test_graph_names_everything_in_its_way_at_once():
    with pytest.raises(ValidationError) as e:
        TrainConfig.model_validate({"model": "dcgan", "diffaugment": ["color"], "amp": "fp16", "graph": True})
    assert "diffaugment, amp 'fp16' (use bf16)" in str(e.value)


def test_graph_goes_with_bf16_compile_default_and_resumes_either_way():
    cfg = TrainConfig.model_validate({"model": "dcgan", "amp": "bf16", "compile": "default", "graph": True})
    cfg.check_resumable(TrainConfig(model="dcgan", amp="bf16", compile="default").model_dump(mode="json"), "train")


def test_an_optimiser_keeps_its_own_run_flags_when_loading_a_state():
    """A graphed CUDA run's state (fused, capturable) loads into a CPU optimiser as plain steps, the same values."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones_like(w)
    opt.step()
    saved = opt.state_dict()
    cuda_like = {**saved, "param_groups": [{**g, "fused": True, "capturable": True} for g in saved["param_groups"]]}
    results = []
    for state in (saved, cuda_like):
        v = torch.nn.Parameter(w.detach().clone())
        other = torch.optim.Adam([v], lr=0.1)
        load_optimizer(other, copy.deepcopy(state))  # as from a file (loading shares the given tensors)
        assert other.param_groups[0]["capturable"] is False and other.param_groups[0]["fused"] is None
        v.grad = torch.full_like(v, 0.5)
        other.step()
        results.append(v.detach())
    assert torch.equal(*results)


def test_a_cpu_state_loads_into_a_fused_optimiser_with_its_step_count_where_it_steps():
    """A CPU run resumed on CUDA: the saved plain Adam's step count moves to the parameters, as fused Adam needs
    (on the CPU here: fused Adam runs there too)."""
    w = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones_like(w)
    opt.step()
    fused = torch.optim.Adam([v := torch.nn.Parameter(torch.ones(4))], lr=0.1, fused=True)
    load_optimizer(fused, copy.deepcopy(opt.state_dict()))
    assert fused.param_groups[0]["fused"] is True
    step = fused.state[v]["step"]
    assert step.dtype == torch.float32 and step.device == v.device and float(step) == 1
    v.grad = torch.ones_like(v)
    fused.step()
    assert float(fused.state[v]["step"]) == 2


def test_loading_a_state_of_other_groups_is_refused():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))])
    two = torch.optim.Adam(
        [{"params": [torch.nn.Parameter(torch.ones(2))]}, {"params": [torch.nn.Parameter(torch.ones(1))]}]
    )
    with pytest.raises(ValueError, match="different number of parameter groups"):
        load_optimizer(opt, two.state_dict())
