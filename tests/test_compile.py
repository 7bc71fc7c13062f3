"""train.compile on CPU: the regularisers that differentiate twice (R1, path length, WGAN-GP's penalty) run
through the eager module (torch.compile's graphs have no double backward), and training gives the eager losses."""

from __future__ import annotations

import pytest
import torch

from facegan.config import TrainConfig
from facegan.train.gan import GANTrainer

MODELS = {
    "stylegan2 + R1 + path length": {
        "model": "stylegan2", "z_dim": 32, "beta1": 0.0, "beta2": 0.99, "stylegan2": {"preset": "tiny"},
        "r1": {"gamma": 1.0, "every": 2}, "path_length": {"weight": 2.0, "every": 2},
    },
    "wgan-gp": {"model": "dcgan", "loss": "wgan-gp", "g_channels": 8, "d_channels": 8},
}  # fmt: skip


def _steps(compile_: bool, over: dict, n: int = 3) -> list[dict[str, float]]:
    cfg = TrainConfig.model_validate({"batch_size": 4, "device": "cpu", "ema": 0.0, "compile": compile_, **over})
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    t = GANTrainer(cfg, images, None, [], torch.device("cpu"))
    assert (t.d_run is t.d_reg) != compile_  # compiled: a second, eager path for the double backward
    return [t.step() for _ in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_training_with_double_backward_regularisers_gives_the_eager_losses(name):
    eager, compiled = _steps(False, MODELS[name]), _steps(True, MODELS[name])
    regularised = {"r1", "path_length", "penalty"} & set(eager[0])
    assert regularised and all(eager[0][k] != 0 for k in regularised)  # the double-backward terms ran
    for a, b in zip(eager, compiled, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), k
