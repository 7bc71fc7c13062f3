"""The transfer study: pretrain a GAN on a large source set, fine-tune it on a small target set once per row
(baseline, FreezeD, DiffAugment, ADA and their combinations, and the same training from random weights as the
control) and seed, then compare the rows by the mean and spread of their Frechet distances, beside the curves
that say why (FD vs kimg, D's overfitting r_t, ADA's p) and the metric's noise floor (two halves of the real
target set).

Each run is the ordinary train + evaluate stages with `train` replaced by the run's config, under
data/runs/<dataset>/<row>-s<seed>/ (chain.Layout variants), so tracking, checkpoints and resume are shared.
The summary (facegan.transfer_table) reads what those runs wrote.
"""

from __future__ import annotations

import logging
from pathlib import Path

from facegan.chain import run_stage
from facegan.config import TRANSFER_PRETRAIN, Params, ParamsError, TrainConfig, load_params
from facegan.errors import FaceganError, StageInputMissing
from facegan.io import write_disabled
from facegan.layout import Layout

log = logging.getLogger(__name__)

PRETRAIN = TRANSFER_PRETRAIN
OFF = (
    "The transfer study is off (transfer.enabled: false in params.yaml): nothing was trained. "
    "Set it to true and `dvc repro` runs it.\n"
)


class StaleRun(FaceganError, RuntimeError):
    """A run of the study made under other params than today's (steps, a row's settings, the pretrained model):
    its distances would sit in the table beside runs they are not comparable with."""


def _enabled(p: Params, where: str = "the params file") -> None:
    if not p.transfer.enabled:
        raise ParamsError(f"transfer.enabled is false in {where}: the study is off, nothing to run")


def _params(params: Params | Path | str) -> Params:
    return params if isinstance(params, Params) else load_params(params)


def pretrained_checkpoint(p: Params, root: Path) -> Path:
    from facegan.train.checkpoint import CHECKPOINT

    return Layout(root, p.transfer.source, PRETRAIN).model / CHECKPOINT


def run_params(p: Params, row: str, root: Path, seed: int | None = None) -> tuple[Params, str, str]:
    """(params with `train` = the run's config, the dataset it trains on, its Layout variant) of the source run
    (`row` = PRETRAIN) or of one row's run with `seed` (the first of transfer.seeds when None)."""
    _enabled(p)
    t = p.transfer
    if row == PRETRAIN:
        return p.model_copy(update={"train": t.pretrain, "evaluate": p.transfer_evaluate()}), t.source, PRETRAIN
    seed = t.seeds[0] if seed is None else seed
    cfg = t.run_config(row, seed, pretrained_checkpoint(p, root).resolve())
    return p.model_copy(update={"train": cfg, "evaluate": p.transfer_evaluate()}), t.target, t.variant(row, seed)


def pretrain(params: Params | Path | str = "params.yaml", root: Path | str = ".") -> float:
    """Train the source model (data/runs/<source>/pretrain) and measure its own Frechet distance there."""
    p, root = _params(params), Path(root)
    rp, dataset, variant = run_params(p, PRETRAIN, root)
    _check_scorable(dataset, root)
    return run_stage("train", dataset, rp, root, variant) + run_stage("evaluate", dataset, rp, root, variant)


def finetune(
    row: str, seed: int | None = None, params: Params | Path | str = "params.yaml", root: Path | str = "."
) -> float:
    """One run of a row: fine-tune the pretrained model on the target set (or train from scratch), evaluate."""
    p, root = _params(params), Path(root)
    p.transfer.check(row, seed)
    rp, dataset, variant = run_params(p, row, root, seed)
    if p.transfer.pretrained(row) and not pretrained_checkpoint(p, root).is_file():
        raise StageInputMissing(
            f"no pretrained model at {pretrained_checkpoint(p, root)}: run "
            "`facegan transfer pretrain` (or `dvc repro pretrain`) first"
        )
    if p.transfer.pretrained(row):
        check_pretrained(p, root)
    _check_scorable(dataset, root)
    return run_stage("train", dataset, rp, root, variant) + run_stage("evaluate", dataset, rp, root, variant)


def check_pretrained(p: Params, root: Path) -> None:
    """StaleRun when the pretrained model there was trained under another `transfer.pretrain` than today's, or has
    not trained its steps: fine-tunes from it, and the table's source model, would be another study's."""
    from facegan.train.checkpoint import load_checkpoint

    path = pretrained_checkpoint(p, root)
    again = "pretrain it again: `facegan transfer pretrain` (or `dvc repro pretrain`)"
    check_trained(path, load_checkpoint(path), p.transfer.pretrain, "transfer.pretrain", "the pretrained model", again)


def check_trained(path: Path, state: dict, cfg: TrainConfig, section: str, what: str, again: str) -> None:
    """StaleRun when the checkpoint `state` read from `path` was trained under another config than `cfg` (the
    params section `section`), or not to its last step: `what` names the model, `again` says how to redo it."""
    if differences := cfg.differences(state["config"], section):
        raise StaleRun(f"{path}: {what} was trained with another config ({'; '.join(differences)}); {again}")
    if state["step"] != cfg.steps:
        raise StaleRun(f"{path}: {what} trained {state['step']} steps, {section}.steps is {cfg.steps} now; {again}")


def _check_scorable(dataset: str, root: Path) -> None:
    """The reference statistics the run's evaluation needs are there, before it trains (the study's runs found
    them missing after their training, and kept a run's minutes of work without a score)."""
    from facegan.evaluate.run import STATUS

    stats = Layout(root, dataset).stats
    if not (stats / STATUS).is_file():
        raise StageInputMissing(
            f"no reference statistics in {stats}: run `facegan refstats {dataset}` (or `dvc repro refstats@{dataset}`) "
            "first; the run would train, then find nothing to score against"
        )


def pretrain_stage(params: Params | Path | str = "params.yaml", root: Path | str = ".") -> None:
    """DVC stage `pretrain`: `pretrain`, or with transfer.enabled false its output folder with a note (`facegan
    transfer` and the Prefect flow refuse a study that is off instead)."""
    p, root = _params(params), Path(root)
    if not p.transfer.enabled:
        return write_disabled(Layout(root, p.transfer.source, PRETRAIN).model.parent, OFF)
    pretrain(p, root)


def finetune_stage(row: str, seed: int, params: Params | Path | str = "params.yaml", root: Path | str = ".") -> None:
    """DVC stage `finetune@ROW-SEED`: `finetune`, or with transfer.enabled false its output folder with a note."""
    p, root = _params(params), Path(root)
    if not p.transfer.enabled:
        return write_disabled(Layout(root, p.transfer.target, p.transfer.variant(row, seed)).model.parent, OFF)
    finetune(row, seed, p, root)


def runs(p: Params) -> list[tuple[str, int]]:
    """Every (row, seed) of the study, rows in params order."""
    return [(row, seed) for row in p.transfer.runs for seed in p.transfer.seeds]
