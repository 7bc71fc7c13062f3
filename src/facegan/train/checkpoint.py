"""Checkpoints: everything needed to resume exactly, loadable with torch.load(weights_only=True)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facegan.config import TrainConfig

FORMAT = 2  # 2: Trainer layout (G/D with stem/body, G_ema, label dims)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r}, this facegan reads format {FORMAT}; "
                         "retrain (dvc repro) to get a compatible checkpoint")
    return state


def load_generator(path: Path, ema: bool = True) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """The generator of a checkpoint (its EMA copy when present), in eval mode, with config and state."""
    from facegan.models import build_models

    state = load_checkpoint(path)
    cfg = TrainConfig.model_validate(state["config"])
    g, _ = build_models(cfg, state["resolution"], state.get("label_dims") or [])
    g.load_state_dict(state["G_ema"] if ema and state.get("G_ema") is not None else state["G"])
    return g.eval(), cfg, state
