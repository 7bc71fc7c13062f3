"""Model registry: name in params.yaml (train.model) -> builder of (generator, discriminator)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from facegan.config import TrainConfig
from facegan.registry import pick


def _dcgan(cfg: TrainConfig, resolution: int) -> tuple[nn.Module, nn.Module]:
    from facegan.models import dcgan

    return dcgan.build(resolution, cfg.z_dim, cfg.g_channels, cfg.d_channels)


MODELS: dict[str, Callable[[TrainConfig, int], tuple[nn.Module, nn.Module]]] = {"dcgan": _dcgan}


def build_models(cfg: TrainConfig, resolution: int) -> tuple[nn.Module, nn.Module]:
    """(G, D) for cfg.model at `resolution`; unknown names list the valid ones."""
    return pick(MODELS, cfg.model, "model")(cfg, resolution)
