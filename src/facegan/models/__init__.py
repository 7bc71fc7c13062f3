"""Model registry: train.model -> builder of (generator, discriminator).

- `dcgan`: DCGAN generator and discriminator (batch norm; `d_variant: sn` adds spectral norm).
- `wgan-gp`: the same generator with a critic without batch norm (layer norm by default), for the
  Wasserstein losses with gradient penalty.
- `acgan`: both conditioned on the dataset's attribute labels (`label_input`, `aux_head`, `d_variant`).
- `stylegan2`: mapping + modulated-conv synthesis G, residual D (`train.stylegan2`), pure PyTorch.
- `vae`: (decoder, encoder) of a variational autoencoder; the decoder takes G's place (`train.vae`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from facegan.config import TrainConfig
from facegan.registry import pick


def _conv_pair(cfg: TrainConfig, resolution: int, label_dims: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    from facegan.models import dcgan

    g = dcgan.Generator(resolution, cfg.z_dim, cfg.g_channels, cfg.g_arch, label_dims, cfg.label_input)
    d = dcgan.Discriminator(resolution, cfg.d_channels, cfg.resolved_d_norm, cfg.d_variant == "sn",
                            label_dims, cfg.aux_head, cfg.d_variant == "projection")
    g.apply(dcgan.init_weights)
    d.apply(dcgan.init_weights)
    return g, d


def _unconditional(cfg: TrainConfig, resolution: int, label_dims: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    return _conv_pair(cfg, resolution, ())


def _acgan(cfg: TrainConfig, resolution: int, label_dims: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    if not label_dims:
        raise ValueError("model 'acgan' needs a labelled dataset (pack.labels: a CSV of attributes per image)")
    return _conv_pair(cfg, resolution, label_dims)


def _stylegan2(cfg: TrainConfig, resolution: int, label_dims: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    from facegan.models import stylegan2

    if label_dims:
        raise ValueError("model 'stylegan2' is unconditional here: use model 'acgan' for attribute labels")
    sg = cfg.stylegan2
    g = stylegan2.Generator(resolution, cfg.z_dim, sg.mapping_layers, sg.channel_base, sg.channel_max, sg.lr_mapping)
    d = stylegan2.Discriminator(resolution, sg.channel_base, sg.channel_max)
    return g, d


def _vae(cfg: TrainConfig, resolution: int, label_dims: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    from facegan.models import dcgan, vae

    if label_dims:
        raise ValueError("model 'vae' is unconditional: use model 'acgan' for attribute labels")
    decoder = dcgan.Generator(resolution, cfg.z_dim, cfg.g_channels, cfg.g_arch)
    encoder = vae.Encoder(resolution, cfg.z_dim, cfg.d_channels, cfg.resolved_d_norm)
    decoder.apply(dcgan.init_weights)
    encoder.apply(dcgan.init_weights)
    return decoder, encoder


MODELS: dict[str, Callable[[TrainConfig, int, Sequence[int]], tuple[nn.Module, nn.Module]]] = {
    "dcgan": _unconditional,
    "wgan-gp": _unconditional,
    "acgan": _acgan,
    "stylegan2": _stylegan2,
    "vae": _vae,
}


def build_models(cfg: TrainConfig, resolution: int, label_dims: Sequence[int] = ()) -> tuple[nn.Module, nn.Module]:
    """(G, D) for cfg.model (for `vae`: decoder, encoder) at `resolution`; `label_dims` = values per attribute (conditional models)."""
    return pick(MODELS, cfg.model, "model")(cfg, resolution, label_dims)
