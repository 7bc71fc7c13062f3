"""FreezeD (Mo et al. 2020): keep the first K discriminator blocks of a pretrained D fixed while fine-tuning."""

from __future__ import annotations

from torch import nn

from facegan.errors import ParamsError


def freeze_discriminator(d: nn.Module, k: int) -> list[str]:
    """Turn off gradients of D's first k blocks (input side); returns the frozen parameter names."""
    if k == 0:
        return []
    blocks = getattr(d, "blocks", None)
    if blocks is None:
        raise ParamsError(f"{type(d).__name__} exposes no `blocks`: FreezeD is not available for it")
    if k >= len(blocks):
        raise ParamsError(f"freeze_d {k}: the discriminator has {len(blocks)} blocks; freeze at most {len(blocks) - 1}")
    frozen = {id(p) for b in blocks[:k] for p in b.parameters()}
    names = []
    for name, p in d.named_parameters():
        if id(p) in frozen:
            p.requires_grad_(False)
            names.append(name)
    return names
