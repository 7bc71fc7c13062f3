"""The transfer-learning story: pretrain StyleGAN2 on a large source set, fine-tune it on a small target
set once per configuration (baseline, FreezeD, ADA, FreezeD + ADA) and compare their FIDs in one table.

Each run is the ordinary `train` (+ `evaluate`) stage with `train` replaced by the run's config, written
under data/runs/<dataset>/<run>/ (chain.Layout variants), so tracking, checkpoints and resume are shared.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from facegan.chain import run_stage
from facegan.config import TRANSFER_PRETRAIN, Params, ParamsError, load_params
from facegan.errors import StageInputMissing
from facegan.io import atomic_dir, write_text
from facegan.layout import Layout

log = logging.getLogger(__name__)

PRETRAIN = TRANSFER_PRETRAIN
TABLE_DIR = Path("data") / "transfer"
COLUMNS = ("fd_inception", "kid_inception", "fd_dlib", "kid_dlib")


def _enabled(p: Params) -> None:
    if not p.transfer.enabled:
        raise ParamsError("transfer.enabled is false in params.yaml")


def pretrained_checkpoint(p: Params, root: Path) -> Path:
    from facegan.train.checkpoint import CHECKPOINT

    return Layout(root, p.transfer.source, PRETRAIN).model / CHECKPOINT


def run_params(p: Params, run: str, root: Path) -> tuple[Params, str]:
    """(params with `train` = the run's config, dataset it trains on)."""
    _enabled(p)
    t = p.transfer
    if run == PRETRAIN:
        return p.model_copy(update={"train": t.pretrain}), t.source
    return p.model_copy(update={"train": t.run_config(run, pretrained_checkpoint(p, root).resolve())}), t.target


def pretrain(params: Params | Path | str = "params.yaml", root: Path | str = ".") -> float:
    """Train the source-domain StyleGAN2 (data/runs/<source>/pretrain/models)."""
    p = params if isinstance(params, Params) else load_params(params)
    rp, dataset = run_params(p, PRETRAIN, Path(root))
    return run_stage("train", dataset, rp, root, PRETRAIN)


def finetune(run: str, params: Params | Path | str = "params.yaml", root: Path | str = ".") -> float:
    """Fine-tune the pretrained model on the target set with one run's config, then evaluate it."""
    p = params if isinstance(params, Params) else load_params(params)
    root = Path(root)
    if run == PRETRAIN:
        raise ParamsError(f"{PRETRAIN!r} is the source run; fine-tune runs: {', '.join(p.transfer.runs)}")
    rp, dataset = run_params(p, run, root)
    if not pretrained_checkpoint(p, root).is_file():
        raise StageInputMissing(
            f"no pretrained model at {pretrained_checkpoint(p, root)}: run "
            "`facegan transfer pretrain` (or `dvc repro pretrain`) first"
        )
    return run_stage("train", dataset, rp, root, run) + run_stage("evaluate", dataset, rp, root, run)


def _describe(p: Params, run: str, root: Path) -> dict:
    cfg = run_params(p, run, root)[0].train
    return {
        "freeze_d": cfg.freeze_d,
        "augment": "ada" if cfg.ada.enabled else ("diffaugment" if cfg.diffaugment else "none"),
        "steps": cfg.steps,
        "kimg": round(cfg.steps * cfg.batch_size / 1000, 2),
    }


def table(params: Params | Path | str = "params.yaml", root: Path | str = ".") -> dict:
    """data/transfer/fid_table.{json,md}: one row per fine-tune run (+ the main model trained from scratch
    on the target, when it was evaluated), lower FID is better."""
    from facegan.train.checkpoint import CHECKPOINT, load_checkpoint

    p = params if isinstance(params, Params) else load_params(params)
    _enabled(p)
    root = Path(root)
    t = p.transfer
    rows: dict[str, dict] = {}
    for run in t.runs:
        at = Layout(root, t.target, run)
        ev = json.loads((at.evaluation / "metrics.json").read_text(encoding="utf-8"))
        state = load_checkpoint(at.model / CHECKPOINT)
        aug = state.get("augment") or {}
        rows[run] = {
            **_describe(p, run, root),
            **{c: ev.get(c) for c in COLUMNS},
            "final_ada_p": round(aug["p"], 4) if "p" in aug else None,
        }
    scratch = Layout(root, t.target).evaluation / "metrics.json"
    if scratch.is_file():
        ev = json.loads(scratch.read_text(encoding="utf-8"))
        rows[f"scratch ({p.train.model})"] = {
            "freeze_d": 0,
            "augment": "-",
            "steps": p.train.steps,
            "kimg": round(p.train.steps * p.train.batch_size / 1000, 2),
            **{c: ev.get(c) for c in COLUMNS},
            "final_ada_p": None,
        }
    result = {"source": t.source, "target": t.target, "runs": rows}
    with atomic_dir(root / TABLE_DIR) as tmp:
        write_text(tmp / "fid_table.json", json.dumps(result, indent=1))
        write_text(tmp / "fid_table.md", markdown(result))
    log.info("transfer table:\n%s", markdown(result))
    _track(p, root, result)
    return result


def _track(p: Params, root: Path, result: dict) -> None:
    """The table as the last run of the transfer story (metrics `<run>.<column>`, the markdown/JSON files),
    copied onto the story's parent run, which it finishes."""
    from facegan import track

    if not p.tracking.enabled:
        return
    t = track.stage_tracker(p.tracking, "transfer-table", p.transfer.target, p, root, parent="transfer")
    metrics = {
        track.metric_key(f"{run}.{c}"): v
        for run, row in result["runs"].items()
        for c, v in row.items()
        if c in COLUMNS and v is not None
    }
    files = [root / TABLE_DIR / name for name in ("fid_table.md", "fid_table.json")]
    t.log_metrics(metrics)
    for path in files:
        t.log_artifact(path)
    t.end()
    track.finish_pipeline(p.tracking, t.parent_spec, "transfer", metrics, files, t.folder, None, {})


def markdown(result: dict) -> str:
    cols = ["freeze_d", "augment", "kimg", *COLUMNS, "final_ada_p"]
    fmt = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [
        f"Fine-tuning {result['source']} -> {result['target']} (Frechet distances: lower is better)",
        "",
        "| run | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    lines += [f"| {run} | " + " | ".join(fmt(row.get(c)) for c in cols) + " |" for run, row in result["runs"].items()]
    return "\n".join(lines) + "\n"
