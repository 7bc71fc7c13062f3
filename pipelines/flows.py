"""Prefect flows over the same stage functions as the DVC stages (`facegan.chain.run_stage`).

    preprocess(dataset)            generate (cartoon) -> detect -> align -> matte -> upscale -> pack
    train(dataset, model)          classifier -> refstats -> train
    evaluate(dataset, model)       evaluate -> report
    full(dataset, models)          preprocess, classifier and refstats once, then train -> evaluate -> report per model

A model other than params.yaml's (`model`, `models`) lives in data/runs/<dataset>/<model>/ (models, eval, reports);
params.yaml's own in DVC's data/models/<dataset> etc., so `evaluate(model=m)` finds what `full(models=[m])` trained.
    transfer()                     StyleGAN2: pretrain on transfer.source, fine-tune per run on the target, FID table
    cyclegan()                     CycleGAN between cyclegan.a and cyclegan.b, FID per direction

Flow parameters are validated by the same pydantic models as params.yaml (`train` overrides are a
`TrainConfig`; dotted overrides are merged by facegan.config). Every stage is a task whose cache key covers
its inputs on disk, the params it reads (its dvc.yaml `params:`, Layout.params), its code (its dvc.yaml code
deps), the checkpoint a training starts from (train.init_from) and its outputs (reused only while they are what the
stage wrote under these params: facegan.provenance), so a re-run skips finished work, a change of train.steps or of
train's code reruns what `dvc repro` reruns (train onward) and outputs that `dvc repro` rewrote are never reused;
I/O-bound stages retry with back-off. The library's logs go to the Prefect run logs
(PREFECT_LOGGING_EXTRA_LOGGERS=facegan) and a progress artifact follows the chain.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "facegan")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from facegan.chain import run_stage, without_generate
from facegan.config import Params, ParamsError, TrainConfig, load_params
from facegan.io import sha256_file
from facegan.layout import Layout
from facegan.provenance import code_hash, fingerprint, outputs_state, stage_params

logging.getLogger("facegan").setLevel(os.environ.get("FACEGAN_LOG_LEVEL", "INFO"))  # Prefect forwards these records

PREPROCESS = ["generate", "detect", "verify", "align", "matte", "upscale", "quality", "pack"]
TRAIN = ["classifier", "refstats", "train"]
EVALUATE = ["evaluate", "report"]
READY = PREPROCESS + ["classifier", "refstats"]  # a dataset packed, with its reference statistics
IO_BOUND = {"generate", "detect", "verify", "align", "matte", "upscale", "quality", "pack"}


def _init_from(stage: str, p: Params) -> str:
    """The contents of the checkpoint a training starts from (train.init_from: the transfer study's pretrained
    model, rewritten in place when pretraining reruns); its path is in the params."""
    init = p.train.init_from
    if stage != "train" or init is None:
        return ""
    return sha256_file(init) if init.is_file() else "missing"


def stage_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Inputs on disk + the params the stage reads (provenance.stage_params) + its code + the checkpoint training
    starts from + the state of the outputs: "own" while they are what this stage wrote under these params, else
    their current fingerprint, so outputs rewritten since (`dvc repro` under other params, a checkout) are never
    reused. A stage whose outputs were deleted is refreshed (see _run_stages)."""
    root, stage = Path(parameters["root"]), parameters["stage"]
    at = Layout(root, parameters["dataset"], parameters.get("variant"))
    inputs, outputs = at.io(stage)
    p = Params.model_validate_json(parameters["params_json"])
    params = stage_params(p, at.params(stage))
    parts = [
        stage,
        parameters["dataset"],
        str(parameters.get("variant")),
        params,
        code_hash(stage),
        fingerprint(inputs),
        outputs_state(root, outputs, params),
        _init_from(stage, p),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


@task(task_run_name="{stage}@{dataset}", cache_key_fn=stage_cache_key, persist_result=True)
def stage_task(stage: str, dataset: str, params_json: str, root: str, variant: str | None = None) -> float:
    """One chain stage; returns its duration in seconds."""
    params = Params.model_validate_json(params_json)
    return run_stage(stage, dataset, params, root, variant)


def _run_stages(
    stages: list[str],
    dataset: str,
    params: Params,
    root: str,
    variant: str | None = None,
    progress: tuple[Any, int, int] | None = None,
) -> None:
    logger = get_run_logger()
    params_json = params.model_dump_json()
    for i, stage in enumerate(stages):
        if stage not in without_generate([stage], dataset, params):
            kind = params.dataset(dataset).source.kind
            logger.info("%s: source.kind %s, its images are imported: nothing to generate", dataset, kind)
            continue
        outputs = Layout(Path(root), dataset, variant).io(stage)[1]
        # a stage whose outputs are the dataset's (classifier, refstats, ...) runs once for every model
        v = variant if outputs != Layout(Path(root), dataset).io(stage)[1] else None
        t = stage_task.with_options(retries=2, retry_delay_seconds=[2, 10]) if stage in IO_BOUND else stage_task
        if not all(p.exists() for p in outputs):
            t = t.with_options(refresh_cache=True)  # outputs gone: a cached result must not skip the work
        seconds = t(stage, dataset, params_json, root, v)
        logger.info("%s@%s finished (%.1f s)", stage, dataset, seconds)
        if progress:
            artifact, done, total = progress
            update_progress_artifact(artifact, 100.0 * (done + i + 1) / total)


def load(
    params_file: str,
    overrides: dict[str, Any] | None = None,
    train: TrainConfig | None = None,
    model: str | None = None,
    root: str = ".",
) -> Params:
    """params.yaml with dotted overrides, a whole train section and/or a model, validated as one whole; a relative
    MLflow store in it is the project root's (`config.anchored`), where `dvc repro` writes it, not the folder the
    flow's process runs in."""
    if not Path(root).is_dir():  # a typo would make a new, empty project there and run the chain in it
        raise ParamsError(f"root {root!r}: no such folder (the project root, holding data/ and params.yaml)")
    extra = {
        **({"train": train.model_dump(mode="json")} if train is not None else {}),
        **({"train.model": model} if model is not None else {}),
    }
    return load_params(params_file, {**(overrides or {}), **extra}, root=root)


def _variant(params: Params, base: Params) -> str | None:
    """Where a flow's model lives: the model of `base` (params.yaml with the flow's overrides) in DVC's
    data/models/<dataset>, another in data/runs/<dataset>/<model>/ (a Layout variant). One rule for full, train and
    evaluate."""
    model = params.train.model
    return model if model != base.train.model else None


@flow(name="facegan-preprocess")
def preprocess(
    dataset: str = "cartoon", params_file: str = "params.yaml", root: str = ".", overrides: dict[str, Any] | None = None
) -> None:
    """Raw images -> packed training ZIP for one dataset."""
    _run_stages(PREPROCESS, dataset, load(params_file, overrides, root=root), root)


@flow(name="facegan-train")
def train(
    dataset: str = "cartoon",
    model: str | None = None,
    params_file: str = "params.yaml",
    root: str = ".",
    overrides: dict[str, Any] | None = None,
    train_config: TrainConfig | None = None,
) -> None:
    """Classifier, reference statistics and training of one model (default: params.yaml's)."""
    params = load(params_file, overrides, train_config, model, root)
    _run_stages(TRAIN, dataset, params, root, _variant(params, load(params_file, overrides, root=root)))


@flow(name="facegan-evaluate")
def evaluate(
    dataset: str = "cartoon",
    model: str | None = None,
    params_file: str = "params.yaml",
    root: str = ".",
    overrides: dict[str, Any] | None = None,
    train_config: TrainConfig | None = None,
) -> None:
    """FID/KID of a trained model and its report (MLflow run, registry)."""
    params = load(params_file, overrides, train_config, model, root)
    _run_stages(EVALUATE, dataset, params, root, _variant(params, load(params_file, overrides, root=root)))


@flow(name="facegan-full")
def full(
    dataset: str = "cartoon",
    models: list[str] | None = None,
    params_file: str = "params.yaml",
    root: str = ".",
    overrides: dict[str, Any] | None = None,
) -> None:
    """The whole chain: preprocessing, classifier and reference statistics once, then one train/evaluate branch
    per model of `models` (default: params.yaml's; another model in data/runs/<dataset>/<model>)."""
    base = load(params_file, overrides, root=root)
    branch = ["train", *EVALUATE]
    names = list(models) if models else [base.train.model]
    total = len(READY) + len(names) * len(branch)
    artifact = create_progress_artifact(0.0, description=f"facegan chain for {dataset}")
    _run_stages(READY, dataset, base, root, progress=(artifact, 0, total))
    done = len(READY)
    for model in names:
        params = load(params_file, overrides, model=model, root=root)
        variant = _variant(params, base)
        _run_stages(branch, dataset, params, root, variant, progress=(artifact, done, total))
        done += len(branch)


@task(task_run_name="transfer-table", cache_policy=NO_CACHE)  # reads the runs' results: always refreshed
def transfer_table_task(params_json: str, root: str) -> dict:
    from facegan import transfer_table

    return transfer_table.table(Params.model_validate_json(params_json), root)


@flow(name="facegan-transfer")
def transfer(params_file: str = "params.yaml", root: str = ".", overrides: dict[str, Any] | None = None) -> dict:
    """The transfer study: both datasets prepared, the source model trained (and evaluated) on transfer.source,
    then one fine-tune (train + evaluate) on transfer.target per row and seed, then the table (data/transfer/)."""
    from facegan import transfer as tr

    p = load(params_file, overrides, root=root)
    tr.run_params(p, tr.PRETRAIN, Path(root))  # transfer.enabled false -> a clear error before any work
    for ds in (p.transfer.source, p.transfer.target):
        _run_stages(READY, ds, p, root)
    for row, seed in [(tr.PRETRAIN, None), *tr.runs(p)]:
        params, ds, variant = tr.run_params(p, row, Path(root), seed)
        _run_stages(["train", "evaluate"], ds, params, root, variant)
    return transfer_table_task(p.model_dump_json(), root)


@flow(name="facegan-cyclegan")
def cyclegan(params_file: str = "params.yaml", root: str = ".", overrides: dict[str, Any] | None = None) -> None:
    """Both datasets prepared, then the CycleGAN between cyclegan.a and cyclegan.b (data/cyclegan/)."""
    from facegan import translate

    p = load(params_file, overrides, root=root)
    translate.require_enabled(p)  # a clear error before any work
    for ds in (p.cyclegan.a, p.cyclegan.b):
        _run_stages(READY, ds, p, root)
    _run_stages(["cyclegan"], p.cyclegan.a, p, root)
