"""Pretrained weights for fine-tuning (`train.init_from`): facegan checkpoints and rosinality `.pt` files.

Key mapping from rosinality/stylegan2-pytorch (`train.py` saves {"g", "d", "g_ema", "g_optim",
"d_optim", "args"}; `convert_weight.py` adds "latent_avg"):

| rosinality                          | facegan                       |
|-------------------------------------|-------------------------------|
| `g` / `d` / `g_ema`                 | `G` / `D` / `G_ema`           |
| `style.{1..8}.weight/bias`          | same (mapping network)        |
| `input.input`, `conv1.*`, `to_rgb1.*`, `convs.N.*`, `to_rgbs.N.*`, `noises.noise_N` | same |
| `convs.N.conv1/conv2/skip.*`, `final_conv.*`, `final_linear.*` (D) | same |
| `latent_avg` (top level)            | `w_avg` buffer of G and G_ema |

Our modules use rosinality's names, so the mapping is one-to-one apart from `w_avg`, which is
computed from 4096 mapped latents when the file has no `latent_avg`. rosinality's channel_multiplier
m = 1 or 2 (its configs' values) corresponds to channel_base = 16384 * m, channel_max = 512; a larger m gives
64 px layers wider than 512 beside 512-wide 32 px ones, which no channel_base / channel_max pair builds (the
shapes' mismatch is then named on loading). Its `n_mlp` corresponds to mapping_layers.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from facegan.errors import FaceganError, StageInputMissing
from facegan.io import load_torch
from facegan.models.weights import mismatch

if TYPE_CHECKING:
    from facegan.models.stylegan2 import Generator

log = logging.getLogger(__name__)


class PretrainedMismatch(FaceganError, ValueError):
    """Pretrained weights that do not fit the configured model; the message lists what differs."""


def read_pretrained(path: Path) -> dict:
    """{"G", "D", "G_ema", "source", "ada_p", "step"} from a facegan checkpoint or a rosinality .pt."""
    if not path.is_file():
        raise StageInputMissing(f"train.init_from: no such file: {path}")
    advice = "train.init_from takes a facegan checkpoint.pt or a rosinality stylegan2-pytorch .pt"
    state = load_torch(path, advice, safe_globals=(argparse.Namespace,))  # rosinality's .pt keep their args
    if "format" in state:
        if not {"G", "D"} <= set(state):  # e.g. a CycleGAN's (G_ab, G_ba, ...): no one generator to start from
            kind = "a CycleGAN's checkpoint" if "G_ab" in state else "a checkpoint"
            raise PretrainedMismatch(f"{path}: {kind}, with no G and D to start from: {advice}")
        return {
            "G": state["G"],
            "D": state["D"],
            "G_ema": state.get("G_ema"),
            "source": "facegan",
            "ada_p": (state.get("augment") or {}).get("p"),
            "step": state.get("step", 0),
            "model": state.get("config", {}).get("model"),
        }
    if {"g", "d"} <= set(state):
        g_ema = state.get("g_ema")
        if "latent_avg" in state:
            for sd in (state["g"], g_ema):
                if sd is not None:
                    sd["w_avg"] = state["latent_avg"].reshape(-1).float()
        return {
            "G": state["g"],
            "D": state["d"],
            "G_ema": g_ema,
            "source": "rosinality",
            "ada_p": None,
            "step": 0,
            "model": "stylegan2",
        }
    raise PretrainedMismatch(
        f"{path}: neither a facegan checkpoint (key 'format') nor a rosinality "
        f"stylegan2 checkpoint (keys 'g', 'd'); found keys: {', '.join(map(str, state))[:200]}"
    )


def load_weights(module: nn.Module, weights: dict[str, torch.Tensor], what: str, hint: str) -> list[str]:
    """Strict load with a readable error; returns keys the file lacks that are filled in later (w_avg)."""
    own = module.state_dict()
    problem = mismatch(own, weights, fillable={"w_avg"})
    if problem:
        raise PretrainedMismatch(f"{what} does not fit the configured model: {problem}. {hint}")
    module.load_state_dict({**own, **weights})
    return [k for k in own if k not in weights]


@torch.no_grad()
def fill_w_avg(module: nn.Module, n: int = 4096, seed: int = 0) -> None:
    """w_avg = mean of the mapping network's output over n random z (rosinality's mean_latent)."""
    g = cast("Generator", module)  # a style-based G (it has w_avg)
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(seed)).to(g.w_avg.device)
    g.w_avg.copy_(g.style(z).mean(0))


def apply_pretrained(path: Path, g: nn.Module, d: nn.Module, g_ema: nn.Module | None, model: str) -> dict:
    """Load the file's weights into G, D (and the EMA copy); returns what was loaded, for the log."""
    pre = read_pretrained(path)
    if pre["model"] not in (None, model):
        raise PretrainedMismatch(f"{path} holds a {pre['model']!r} model, train.model is {model!r}")
    hint = (
        f"Check train.model, z_dim, the stylegan2 widths (preset / channel_base / channel_max / mapping_layers) "
        f"and pack.resolution against the file ({pre['source']} checkpoint {path})."
    )
    for module, key in ((g, "G"), (d, "D")):
        if load_weights(module, pre[key], f"{path} [{key}]", hint) and hasattr(module, "w_avg"):
            fill_w_avg(module)
    if g_ema is not None:
        src = pre["G_ema"] if pre["G_ema"] is not None else pre["G"]
        if load_weights(g_ema, src, f"{path} [G_ema]", hint) and hasattr(g_ema, "w_avg"):
            fill_w_avg(g_ema)
    log.info("initialised from %s checkpoint %s (trained %d steps)", pre["source"], path, pre["step"])
    return pre
