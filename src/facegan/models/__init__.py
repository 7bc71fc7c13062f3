"""Model registry: `train.model` -> one `ModelSpec` (how to build the nets, which trainer steps them, what
the model is). Adding a model touches this table only (plus the file of its nets):

- `dcgan`: DCGAN generator and discriminator (batch norm; `d_variant: sn` adds spectral norm).
- `wgan-gp`: the same generator with a critic without batch norm (layer norm by default), for the
  Wasserstein losses with gradient penalty.
- `acgan`: both conditioned on the dataset's attribute labels (`label_input`, `aux_head`, `d_variant`).
- `stylegan2`: mapping + modulated-conv synthesis G, residual D (`train.stylegan2`), pure PyTorch.
- `vae`: (decoder, encoder) of a variational autoencoder; the decoder takes G's place (`train.vae`).

This module stays free of torch at import time: `facegan.config` reads the table to validate params.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from facegan.errors import ParamsError
from facegan.registry import pick

if TYPE_CHECKING:
    from torch import nn

    from facegan.config import TrainConfig

Builder = Callable[["TrainConfig", int, Sequence[int]], "tuple[nn.Module, nn.Module]"]


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of the project needs to know about a model."""

    build: Builder  # (cfg, resolution, label_dims) -> (G, D); for the VAE (decoder, encoder)
    trainer: Literal["gan", "vae"]  # the trainer that steps it (facegan.train.run.TRAINERS)
    conditional: bool = False  # G and D take the dataset's attribute labels
    adversarial: bool = True  # D is a discriminator (GAN-only settings apply: augmentation, FreezeD, ...)
    style: bool = False  # w-space generator: style mixing, truncation, path length on w, style figures
    d_norm: str = "batch"  # what `d_norm: auto` means for this model
    r1_gamma: float = 0.0  # R1's weight when train.r1.gamma is null (0 = off)
    doc: str = ""


def _conv_pair(cfg: TrainConfig, resolution: int, label_dims: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    from facegan.models import dcgan

    g = dcgan.Generator(resolution, cfg.z_dim, cfg.g_channels, cfg.g_arch, label_dims, cfg.label_input)
    d = dcgan.Discriminator(
        resolution,
        cfg.d_channels,
        cfg.resolved_d_norm,
        cfg.d_variant == "sn",
        label_dims,
        cfg.aux_head,
        cfg.d_variant == "projection",
    )
    g.apply(dcgan.init_weights)
    d.apply(dcgan.init_weights)
    return g, d


def _unconditional(cfg: TrainConfig, resolution: int, label_dims: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    return _conv_pair(cfg, resolution, ())


def _acgan(cfg: TrainConfig, resolution: int, label_dims: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    if not label_dims:
        raise ParamsError("model 'acgan' needs a labelled dataset (pack.labels: a CSV of attributes per image)")
    return _conv_pair(cfg, resolution, label_dims)


def _stylegan2(cfg: TrainConfig, resolution: int, label_dims: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    from facegan.models import stylegan2

    if label_dims:
        raise ParamsError("model 'stylegan2' is unconditional here: use model 'acgan' for attribute labels")
    sg = cfg.stylegan2
    g = stylegan2.Generator(
        resolution, cfg.z_dim, sg.mapping_layers, sg.channel_base, sg.channel_max, sg.lr_mapping,
        amp_blocks=sg.amp_blocks, conv_clamp=sg.conv_clamp,
    )  # fmt: skip
    d = stylegan2.Discriminator(
        resolution, sg.channel_base, sg.channel_max, amp_blocks=sg.amp_blocks, conv_clamp=sg.conv_clamp
    )
    return g, d


def _vae(cfg: TrainConfig, resolution: int, label_dims: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    from facegan.models import dcgan, vae

    if label_dims:
        raise ParamsError("model 'vae' is unconditional: use model 'acgan' for attribute labels")
    decoder = dcgan.Generator(resolution, cfg.z_dim, cfg.g_channels, cfg.g_arch)
    encoder = vae.Encoder(resolution, cfg.z_dim, cfg.d_channels, cfg.resolved_d_norm)
    decoder.apply(dcgan.init_weights)
    encoder.apply(dcgan.init_weights)
    return decoder, encoder


MODELS: dict[str, ModelSpec] = {
    "dcgan": ModelSpec(_unconditional, "gan", doc="DCGAN generator and discriminator"),
    "wgan-gp": ModelSpec(_unconditional, "gan", d_norm="layer", doc="DCGAN generator, critic without batch norm"),
    "acgan": ModelSpec(_acgan, "gan", conditional=True, doc="DCGAN nets conditioned on attribute labels"),
    "stylegan2": ModelSpec(
        _stylegan2, "gan", style=True, r1_gamma=10.0, doc="StyleGAN2 (mapping + modulated convs, residual D)"
    ),
    "vae": ModelSpec(_vae, "vae", adversarial=False, doc="variational autoencoder (D's layout encodes, G's decodes)"),
}


def model_spec(name: str) -> ModelSpec:
    return pick(MODELS, name, "model")


def build_models(cfg: TrainConfig, resolution: int, label_dims: Sequence[int] = ()) -> tuple[nn.Module, nn.Module]:
    """(G, D) for cfg.model (for `vae`: decoder, encoder) at `resolution`; `label_dims` = values per attribute
    (conditional models)."""
    return model_spec(cfg.model).build(cfg, resolution, label_dims)
