"""Checkpoints: everything needed to resume exactly, loadable with torch.load(weights_only=True)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facegan.config import TrainConfig

FORMAT = 1


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
        raise ValueError(f"{path}: unsupported checkpoint format {state.get('format')!r} (expected {FORMAT})")
    return state


def load_generator(path: Path) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """The generator of a checkpoint, in eval mode, with its training config and the raw state."""
    from facegan.models import build_models

    state = load_checkpoint(path)
    cfg = TrainConfig.model_validate(state["config"])
    g, _ = build_models(cfg, state["resolution"])
    g.load_state_dict(state["G"])
    return g.eval(), cfg, state
