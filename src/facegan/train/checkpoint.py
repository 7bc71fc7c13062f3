"""Checkpoints: everything needed to resume exactly, loadable with torch.load(weights_only=True)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facegan.config import ParamsError, StyleGAN2Config, TrainConfig, parse_section
from facegan.errors import CheckpointError, StageInputMissing, flat
from facegan.io import atomic_file, load_torch
from facegan.models.weights import mismatch

log = logging.getLogger(__name__)

FORMAT = 2  # 2: Trainer layout (G/D with stem/body, G_ema, label dims)
CHECKPOINT = "checkpoint.pt"  # the file name of a run's checkpoint in its folder


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    with atomic_file(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StageInputMissing(f"checkpoint not found: {path}")
    state = load_torch(path, "give a checkpoint facegan wrote; a damaged one: remove it and retrain")
    if not isinstance(state, dict) or "format" not in state:
        held = ", ".join(sorted(map(str, state))[:6]) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: not a facegan checkpoint (it holds: {held}); give a checkpoint.pt written by "
            "`facegan train` or a facegan stage"
        )
    if state["format"] != FORMAT:
        found = state["format"]
        raise CheckpointError(
            f"{path}: checkpoint format {found!r}, this facegan reads format {FORMAT}; "
            "retrain (dvc repro) to get a compatible checkpoint"
        )
    return state


def train_config(raw: dict[str, Any]) -> TrainConfig:
    """A checkpoint's train config; configs written before the regularisers left `stylegan2` are moved over."""
    raw = dict(raw)
    sg = dict(raw.get("stylegan2") or {})
    moved = {k: sg.pop(k) for k in list(sg) if k in StyleGAN2Config.MOVED}
    if moved:
        raw["stylegan2"] = sg
        raw.setdefault("r1", {"gamma": moved.get("r1_gamma"), "every": moved.get("r1_every", 16)})
        raw.setdefault("path_length", {"weight": moved.get("pl_weight", 0.0), "every": moved.get("pl_every", 4)})
    return parse_section(TrainConfig, raw, "its train config", saved=True)


def config_error(path: Path, section: str, e: ParamsError) -> CheckpointError:
    """A checkpoint whose saved `section` config this facegan does not read (written by another version: a key
    renamed, a model it does not know), in one line: its first problems (a pydantic traceback, before)."""
    problems = e.problems
    return CheckpointError(
        f"{path}: its {section} config is not one this facegan reads (written by another version?): "
        + "; ".join(problems[:3])
        + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    )


def load_generator(path: Path, ema: bool = True) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """The generator of a checkpoint (its EMA copy when present), in eval mode, with config and state."""
    state = load_checkpoint(path)
    g, cfg = generator_of(state, path, ema)
    return g, cfg, state


def label_schema(state: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """The attribute names of a checkpoint's labels and each one's values, in label order. A conditional
    checkpoint written without them (a trainer built in code, not by `facegan train`) gets attr0, attr1, ... with
    values 0 .. k-1, so its labels can still be chosen."""
    dims = list(state.get("label_dims") or [])
    names = [str(n) for n in state.get("label_names") or []]
    values = {str(n): [str(v) for v in vs] for n, vs in (state.get("label_values") or {}).items()}
    if len(names) != len(dims) or any(len(values.get(n, ())) != k for n, k in zip(names, dims, strict=False)):
        if dims and names:
            log.warning(
                "the label names of this checkpoint (%s) do not fit its labels (%s values): calling them attr0, ...",
                ", ".join(names),
                ", ".join(map(str, dims)),
            )
        names = [f"attr{i}" for i in range(len(dims))]
        values = {n: [str(v) for v in range(k)] for n, k in zip(names, dims, strict=True)}
    return names, values


def generator_of(state: dict[str, Any], path: Path, ema: bool = True) -> tuple[nn.Module, TrainConfig]:
    """The generator held by a loaded `facegan train` checkpoint, in eval mode, and its config."""
    from facegan.models import build_models

    if "G_ab" in state:  # the CycleGAN stage's: it draws no images from noise
        raise CheckpointError(
            f"{path}: a CycleGAN checkpoint (`facegan cyclegan`): it translates images, it does not sample them; "
            "`facegan explore` translates with it"
        )
    if not {"G", "resolution", "config"} <= set(state):
        raise CheckpointError(
            f"{path}: not a generator checkpoint of `facegan train` (keys: {', '.join(sorted(state)[:8])})"
        )
    try:
        cfg = train_config(state["config"])
    except ParamsError as e:
        raise config_error(path, "train", e) from None
    g, _ = build_models(cfg, state["resolution"], state.get("label_dims") or [])
    key = "G_ema" if ema and state.get("G_ema") is not None else "G"
    article = "an" if cfg.model[0] in "aeiou" else "a"  # "an acgan checkpoint"
    load_module(g, state[key], path, f"{article} {cfg.model} checkpoint whose {key} weights")
    return g.eval(), cfg


def load_module(module: nn.Module, weights: Any, path: Path, what: str) -> None:
    """Strict load of a checkpoint's `weights` into `module`. Weights that do not fit the architecture its config
    describes (another version's, or a config edited by hand) are a CheckpointError naming the first keys; what
    torch refuses beyond keys and shapes is a CheckpointError with torch's words."""
    advice = "another facegan version wrote it, or its config was edited: retrain, or use the version that wrote it"
    problem = mismatch(module.state_dict(), weights)
    if problem:
        raise CheckpointError(f"{path}: {what} do not fit the model its config describes: {problem}; {advice}")
    try:
        module.load_state_dict(weights)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as e:  # what torch refuses beyond keys and shapes (tensors without data, ...)
        raise CheckpointError(f"{path}: {what} do not load: {flat(e, 300)}") from None
