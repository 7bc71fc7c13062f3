"""The chain of stages for one dataset: where each stage reads and writes, and how to run it.

The DVC stage scripts (stages/), the CLI and the Prefect flows all call `run_stage`, so the
logic lives here once. Heavy modules (torch, cv2, mlflow) are imported inside each stage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from facegan.config import Params, ParamsError, flatten, load_params
from facegan.errors import StageError, UnknownName
from facegan.layout import Layout
from facegan.track import Tracker

log = logging.getLogger(__name__)


def _pool(p: Params):
    """Where per-image stages spread their images: `workers` local processes, or the Dask runner."""
    from facegan.runners import make_pool

    return make_pool(p.orchestration, p.workers)


def _report_stage(stage: str, at: Layout, t: Tracker) -> dict:
    """Counts per reason (summary.json) + a contact sheet of accepted and rejected samples, both to MLflow."""
    from facegan.manifest import SUMMARY, read_summary
    from facegan.preprocess.common import contact_sheet

    folder = at.interim(stage)
    sheet = contact_sheet(stage, folder, at.raw / "images")
    for path in (folder / SUMMARY, sheet):
        t.log_artifact(path)
    return read_summary(folder)


def _generate(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.data.cartoon import generate

    source = p.dataset(at.dataset).source
    if source.kind != "cartoon":
        raise ParamsError(
            f"dataset {at.dataset!r} has source.kind {source.kind!r}: only 'cartoon' datasets are generated"
        )
    return {"images": generate(source, at.raw, _pool(p))}


def _detect(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.preprocess.detect import run_detect

    run_detect(p.dataset(at.dataset).detect, at.raw, at.interim("detect"), _pool(p))
    return _report_stage("detect", at, t)


def _verify(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.preprocess.verify import run_verify

    run_verify(p.dataset(at.dataset).verify, at.raw, at.interim("detect"), at.interim("verify"), _pool(p))
    return _report_stage("verify", at, t)


def _align(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.preprocess.align import run_align

    run_align(p.dataset(at.dataset).align, at.raw, at.interim("verify"), at.interim("align"), _pool(p))
    return _report_stage("align", at, t)


def _matte(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.preprocess.matte import run_matte

    run_matte(p.dataset(at.dataset).matte, at.interim("align"), at.interim("matte"), _pool(p))
    return _report_stage("matte", at, t)


def _upscale(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.preprocess.upscale import run_upscale

    run_upscale(p.dataset(at.dataset).upscale, at.interim("matte"), at.interim("upscale"), _pool(p))
    return _report_stage("upscale", at, t)


def _quality(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.preprocess.quality import run_quality

    run_quality(p.dataset(at.dataset).quality, at.raw, at.interim("upscale"), at.interim("quality"), _pool(p))
    return _report_stage("quality", at, t)


def _pack(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.data.pack import run_pack
    from facegan.manifest import read_summary

    run_pack(p.dataset(at.dataset).pack, at.raw, at.interim("quality"), at.packed)
    return read_summary(at.packed)


def _classifier(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.evaluate.classifier import run_classifier

    report = run_classifier(p.evaluate.classifier, at.packed, at.classifier, p.evaluate.seed)
    return {f"val_accuracy.{k}": v for k, v in report.get("val_accuracy", {}).items()}


def _refstats(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.evaluate.run import run_refstats

    status = run_refstats(p.evaluate, at.packed, at.stats, at.classifier)
    return {f"n_real.{k}": v["n"] for k, v in status["extractors"].items() if v["status"] == "ok"}


def _train(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.evaluate.run import Scorer
    from facegan.train.run import run_train

    fid = p.train.fid_every
    scorer = Scorer(p.train.fid_extractor, p.evaluate, at.stats, at.classifier, at.packed) if fid else None
    before = _model_before(at)
    result = run_train(
        p.train, at.packed, at.model, scorer=scorer, on_step=t.log_metrics, work=at.checkpoints, stale="restart"
    )
    _drop_stale_evaluation(at, before)
    # every figure the model wrote (samples by label, style mixing, ...); none on a DDP rank other than 0
    for path in sorted(at.model.glob("*")):
        if path.suffix in (".png", ".gif", ".csv"):
            t.log_artifact(path)
    # the speed of the steps this run trained (all steps divided into a resumed part's seconds was far too fast)
    return {} if result.seconds_per_step is None else {"seconds_per_step": result.seconds_per_step}


def _model_before(at: Layout) -> str | None:
    """The sha256 of the model a training may replace: its checkpoint, else (`dvc repro` deletes the model before
    train runs) the work folder's, which a finished training copied there; None where there is no evaluation or
    report to keep, or on a DDP rank other than 0."""
    from facegan.io import sha256_cached
    from facegan.train.checkpoint import CHECKPOINT

    if os.environ.get("RANK", "0") != "0" or not (at.evaluation.exists() or at.report.exists()):
        return None
    return sha256_cached(at.model / CHECKPOINT) or sha256_cached(at.checkpoints / CHECKPOINT)


def _drop_stale_evaluation(at: Layout, model_before: str | None) -> None:
    """Remove the evaluation and report of a model this training replaced (`model_before`: its checkpoint's
    sha256): an evaluate stopped before it wrote left the old model's distances beside the new model, and the
    transfer table, `report` and `summary` read them as its own (`dvc repro` deletes the outputs before it runs
    evaluate and report; the stage commands and the study's runs did not)."""
    import shutil

    from facegan.io import sha256_cached
    from facegan.train.checkpoint import CHECKPOINT

    if os.environ.get("RANK", "0") != "0":  # DDP: rank 0 writes and removes
        return
    stale = [f for f in (at.evaluation, at.report) if f.exists() or f.is_symlink()]
    if stale and sha256_cached(at.model / CHECKPOINT) != model_before:
        for folder in stale:
            if folder.is_symlink():  # the link, never what it names
                folder.unlink()
            else:
                shutil.rmtree(folder)
            log.info("removed %s: it is of the model this training replaced", folder)


def _evaluate(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.evaluate.run import run_evaluate
    from facegan.train.checkpoint import CHECKPOINT

    return run_evaluate(p.evaluate, at.model / CHECKPOINT, at.packed, at.stats, at.evaluation, at.classifier)


def _report(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan.report import run_report

    return run_report(
        p,
        at.dataset,
        at.root / "data" / "interim" / at.dataset,
        at.packed,
        at.model,
        at.evaluation,
        at.report,
        tracker=t,
    )


def _cyclegan(p: Params, at: Layout, t: Tracker) -> dict:
    from facegan import translate

    metrics = translate.run(p, at.root, on_step=t.log_metrics)
    t.set_tags({"a": p.cyclegan.a, "b": p.cyclegan.b, "model": "cyclegan"})
    model = at.root / translate.OUT / "model"
    for path in (
        model / "samples.png",
        model / "translated_a_to_b.png",
        model / "translated_b_to_a.png",
        model / "losses.csv",
        at.root / translate.OUT / "metrics.json",
    ):
        t.log_artifact(path)
    return {d: metrics[d] for d in (*translate.DIRECTIONS, "seconds_per_step") if d in metrics} | {
        "num_samples": metrics["num_samples"],  # per direction: the FID table ranks rows of one count together
    }


# In dependency order: raw -> detect -> verify -> align -> matte -> upscale -> quality -> pack
# -> (classifier, refstats) -> train -> evaluate -> report
STAGES: dict[str, tuple[Callable[[Params, Layout, Tracker], dict | None], str]] = {
    "generate": (_generate, "Draw the embedded cartoon dataset into data/raw/<dataset>."),
    "detect": (_detect, "Find faces and cut crops with context (square unless detect.square is false)."),
    "verify": (_verify, "Keep only faces of one identity (distance to reference photos)."),
    "align": (_align, "Warp each face onto its template (align.template: five points, or FFHQ's crop)."),
    "matte": (_matte, "Remove the background."),
    "upscale": (_upscale, "Bring small faces up to the target size."),
    "quality": (_quality, "Reject blurred, too-small and near-duplicate faces."),
    "pack": (_pack, "Write the training ZIP (stylegan2-ada format) with labels."),
    "classifier": (_classifier, "Attribute classifier trained on the real packed images (labelled sets)."),
    "refstats": (_refstats, "Feature statistics of the real packed images."),
    "train": (_train, "Train the generator; checkpoints, sample grids, loss log."),
    "evaluate": (_evaluate, "Frechet distances (+ attribute accuracy) of generated vs real images."),
    "report": (_report, "metrics.json + sample grid; the pipeline's MLflow run, FID table, model registry."),
}
# stages over two datasets, run for the first one named in their params section
PAIR_STAGES: dict[str, tuple[Callable[[Params, Layout, Tracker], dict | None], str]] = {
    "cyclegan": (
        _cyclegan,
        "CycleGAN between cyclegan.a and cyclegan.b: translated grids both ways, FID per direction.",
    ),
}


def without_generate(names: list[str], dataset: str, p: Params) -> list[str]:
    """`names` without `generate` when the dataset's images are imported (source.kind other than cartoon: `facegan
    dataset add` put them in data/raw/<dataset>); a chain of stages (CLI, Prefect) starts at detect for it."""
    return [n for n in names if n != "generate" or p.dataset(dataset).source.kind == "cartoon"]


def _no_path_read_elsewhere(name: str, p: Params, root: Path | str) -> None:
    """ParamsError for a relative file path in the params that stage `name` would read in the current folder while
    its project root is another (--root, a flow's root): `train.init_from` fine-tuned from whatever file of that
    name was here, without a word."""
    with contextlib.suppress(OSError):
        if os.path.samefile(root, os.curdir):
            return
    paths = {"train.init_from": p.train.init_from} if name == "train" else {}
    fid_train = name == "train" and p.train.fid_every and p.train.fid_extractor == "inception"
    if (name in ("refstats", "evaluate", "cyclegan") or fid_train) and "inception" in p.evaluate.extractors:
        paths["evaluate.inception_weights"] = p.evaluate.inception_weights
    for key, path in paths.items():
        if path is not None and not path.is_absolute():
            raise ParamsError(
                f"{key} {path}: a relative path, read in the current folder ({Path.cwd()}), not in the project "
                f"root {Path(root).resolve()}: give an absolute path, or run the command in the root"
            )


def run_stage(
    name: str,
    dataset: str,
    params: Params | Path | str = "params.yaml",
    root: Path | str = ".",
    variant: str | None = None,
) -> float:
    """Run one stage for one dataset (tracked as a nested MLflow run); returns the seconds it took.
    Afterwards the params that wrote its outputs are recorded (facegan.provenance, for caches)."""
    from facegan import provenance, track

    stages = STAGES | PAIR_STAGES
    if name not in stages:
        raise UnknownName(f"unknown stage {name!r}; stages: {', '.join(stages)}")
    p = params if isinstance(params, Params) else load_params(params)
    p.dataset(dataset)  # unknown dataset -> ParamsError before any work
    if name == "cyclegan" and dataset != p.cyclegan.a:
        raise ParamsError(f"stage cyclegan runs for cyclegan.a ({p.cyclegan.a!r}), not {dataset!r}")
    _no_path_read_elsewhere(name, p, root)
    root = Path(root).resolve()  # absolute: Dask workers may run in another working directory
    if name == "train" and p.train.nproc > 1:
        from facegan.launch import in_torchrun

        if not in_torchrun():
            return _train_distributed(p, dataset, root, variant)
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    # the run's parent: stages over two datasets have none (a run of their own, with their params section);
    # the transfer story's runs (pretrain, fine-tunes) share one; every other stage is in its dataset's chain
    parent = "none" if name in PAIR_STAGES else "transfer" if p.transfer.includes(dataset, variant) else "dataset"
    t: Tracker
    if p.tracking.enabled and rank0:
        t = track.stage_tracker(p.tracking, name, dataset, p, root, parent, name if parent == "none" else None, variant)
    else:
        t = track.NullTracker()  # type: ignore[assignment]  # Tracker's interface, recording nothing
    t0 = time.perf_counter()
    log.info("stage %s: dataset %s", name, dataset)
    at = Layout(root, dataset, variant)
    try:
        metrics = stages[name][0](p, at, t) or {}
        if rank0:
            provenance.record(root, at.io(name)[1], provenance.stage_params(p, at.params(name)))
    except BaseException:
        t.end("FAILED" if not isinstance(sys.exc_info()[1], KeyboardInterrupt) else "KILLED")
        raise
    seconds = time.perf_counter() - t0
    t.log_metrics({track.metric_key(k): v for k, v in flatten(metrics).items()} | {"stage_seconds": seconds})
    t.end()
    log.info("stage %s done in %.1f s", name, seconds)
    return seconds


def _train_distributed(p: Params, dataset: str, root: Path, variant: str | None) -> float:
    """Re-run the train stage as train.nproc processes under torchrun (DDP); rank 0 tracks and writes."""
    import yaml

    from facegan.io import exclusive
    from facegan.launch import relaunch

    t0 = time.perf_counter()
    with exclusive(Layout(root, dataset, variant).checkpoints, "training"):
        pass  # a busy folder is one line here, before any process starts; rank 0 then holds it (train.loop.held)
    # a spec of this launch's own: a second launch of the same dataset must not rewrite what these ranks read
    (root / ".facegan").mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"ddp-{dataset}-{variant or 'main'}-", suffix=".yaml", dir=root / ".facegan")
    spec = Path(name)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False))
    args = ["-m", "facegan.chain", "train", dataset, str(spec), str(root), *([variant] if variant else [])]
    try:
        code = relaunch(p.train.nproc, args)
    finally:
        spec.unlink(missing_ok=True)
    if code:
        raise StageError(f"distributed training ({p.train.nproc} processes) failed with exit code {code}")
    return time.perf_counter() - t0


def stage_main(name: str) -> None:
    """Entry point of the scripts in stages/: `python stages/<name>.py DATASET [PARAMS_FILE]`."""
    from facegan.errors import user_errors
    from facegan.logs import setup_logging

    setup_logging()
    args = sys.argv[1:]
    if not 1 <= len(args) <= 2:
        sys.exit(f"usage: python stages/{name}.py DATASET [PARAMS_FILE]")
    with user_errors():
        run_stage(name, args[0], args[1] if len(args) == 2 else "params.yaml")


def cyclegan_main() -> None:
    """Entry point of stages/cyclegan.py: `python stages/cyclegan.py [PARAMS_FILE]`, the stage for cyclegan.a; with
    cyclegan.enabled false its DVC outputs only say so (translate.write_disabled), so `dvc repro` runs the rest."""
    from facegan import translate
    from facegan.errors import user_errors
    from facegan.logs import setup_logging

    setup_logging()
    with user_errors():
        p = load_params(sys.argv[1] if len(sys.argv) > 1 else "params.yaml")
        if p.cyclegan.enabled:
            run_stage("cyclegan", p.cyclegan.a, p)
        else:
            translate.write_disabled(Path("."))


if __name__ == "__main__":  # python -m facegan.chain STAGE DATASET PARAMS_FILE ROOT [VARIANT] (used by torchrun)
    from facegan.errors import user_errors
    from facegan.logs import setup_logging

    setup_logging()
    stage, ds, params_file, root_dir, *rest = sys.argv[1:]
    with user_errors():
        run_stage(stage, ds, params_file, root_dir, rest[0] if rest else None)
