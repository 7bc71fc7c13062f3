"""`facegan` command line: one subcommand per stage, plus running the whole chain.

Heavy libraries are imported inside the commands so that `facegan --help` stays fast. Errors a user can fix
(`facegan.errors.FaceganError`) are turned into one `error: ...` line and exit code 2 in `main()`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from facegan.chain import STAGES

app = typer.Typer(
    help="Turn a folder of face photos or drawings into a trained face generator, reproducibly.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
)

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="params file", dir_okay=False)
# commands of a project root: its params.yaml, not the current folder's, is the one that made its data/
ROOT_PARAMS = typer.Option(
    None,
    "--params",
    "-p",
    dir_okay=False,
    help="params file (default: the params.yaml of --root, else ./params.yaml)",
    show_default=False,
)
ROOT = typer.Option(Path("."), "--root", help="project root holding data/", file_okay=False)
# commands that only read a project: a root that is not there is a typo (it read as an empty project)
EXISTING_ROOT = typer.Option(Path("."), "--root", help="project root holding data/", file_okay=False, exists=True)
# commands that only talk to MLflow: the store is params.yaml's tracking.tracking_uri (MLFLOW_TRACKING_URI wins)
TRACKING_PARAMS = typer.Option(
    None,
    "--params",
    "-p",
    dir_okay=False,
    help="params file whose `tracking` section names the MLflow store "
    "(default: the params.yaml of --root where the command has one and it is there, else ./params.yaml; "
    "MLFLOW_TRACKING_URI overrides it)",
)


def _tracking(params: Path | None, root: Path | None = None):
    from facegan.config import load_tracking

    return load_tracking(params, root)


def _params(params: Path | None, root: Path) -> Path:
    """The params file of a command with --root: -p, else the root's params.yaml, else ./params.yaml."""
    from facegan.config import params_of

    return params_of(params, root)


def _run(names: list[str], dataset: str, params: Path | None, root: Path) -> None:
    from facegan.chain import run_stage
    from facegan.config import load_params
    from facegan.logs import setup_logging

    setup_logging()
    p = load_params(_params(params, root), root=root)
    for name in names:
        run_stage(name, dataset, p, root)


def _add_stage_command(name: str, doc: str) -> None:
    def command(
        dataset: str = typer.Argument(..., help="dataset name from params.yaml"),
        params: Path | None = ROOT_PARAMS,
        root: Path = ROOT,
    ) -> None:
        _run([name], dataset, params, root)

    command.__doc__ = doc
    app.command(name)(command)


for _name, (_fn, _doc) in STAGES.items():
    if _name != "report":  # `report` also shows the cross-run table: defined below
        _add_stage_command(_name, _doc)


@app.command("transfer")
def transfer(
    step: str = typer.Argument(..., help="pretrain | finetune | table | all"),
    run: str | None = typer.Argument(None, help="a row of transfer.runs (finetune only; default: every row)"),
    seed: int | None = typer.Option(None, help="one seed of transfer.seeds (finetune only; default: every seed)"),
    params: Path | None = ROOT_PARAMS,
    root: Path = ROOT,
) -> None:
    """The transfer study: pretrain on transfer.source, fine-tune on transfer.target per row and seed, the table."""
    from facegan import transfer as tr
    from facegan import transfer_table
    from facegan.config import ParamsError, load_params
    from facegan.logs import setup_logging

    setup_logging()
    steps = ("pretrain", "finetune", "table", "all")
    if step not in steps:
        raise ParamsError(f"unknown step {step!r}; steps: {', '.join(steps)}")
    if step != "finetune" and (run is not None or seed is not None):  # `all` ends in the table of every run
        raise ParamsError(f"`transfer {step}` takes no ROW or --seed: they choose the runs of `transfer finetune`")
    params = _params(params, root)
    p = load_params(params, root=root)
    tr._enabled(p, str(params))  # `table` too: it wrote the stage's "study off" outputs over the study's table
    p.transfer.check(run, seed)
    if step in ("pretrain", "all"):
        tr.pretrain(p, root)
    if step in ("finetune", "all"):
        for name in [run] if run else list(p.transfer.runs):
            for s in [seed] if seed is not None else p.transfer.seeds:
                tr.finetune(name, s, p, root)
    if step in ("table", "all"):  # the Markdown as written (rich wrapped its rows and read [x] as markup)
        typer.echo(transfer_table.markdown(transfer_table.table(p, root)), nl=False)


@app.command("cyclegan")
def cyclegan(params: Path | None = ROOT_PARAMS, root: Path = ROOT) -> None:
    """CycleGAN between cyclegan.a and cyclegan.b (packed first): grids both ways, FID per direction."""
    from facegan.config import load_params
    from facegan.translate import require_enabled

    params = _params(params, root)
    p = load_params(params)
    require_enabled(p, str(params))
    _run(["cyclegan"], p.cyclegan.a, params, root)


@app.command("report")
def report(
    dataset: str | None = typer.Argument(None, help="run the report stage for this dataset first"),
    params: Path | None = ROOT_PARAMS,
    root: Path = ROOT,
    model: str | None = typer.Option(None, help="only runs of this model"),
    experiment: list[str] = typer.Option([], help="MLflow experiment(s) (default: tracking.experiment)"),
    out: Path = typer.Option(
        Path("reports"), file_okay=False, help="folder for fid_table.md / .csv / .png (every column)"
    ),
    wide: bool = typer.Option(False, "--wide", help="print every column (default: what fits the terminal)"),
) -> None:
    """The report stage of DATASET (when given), then the FID comparison table across MLflow runs: pipelines,
    the newest transfer story's runs and the newest CycleGAN's directions, grouped by dataset, best first."""
    from facegan import track
    from facegan.config import load_params
    from facegan.io import output_folder
    from facegan.runs_table import cyclegan_rows, ordered, print_table, transfer_rows, write_table

    params = _params(params, root)
    if dataset:
        _run(["report"], dataset, params, root)
    from facegan.config import sqlite_file

    p = load_params(params, root=root)
    db = sqlite_file(track.tracking_uri(p.tracking))
    if not p.tracking.enabled and db is not None and not Path(db[0]).is_file():  # "run dvc repro" would record none
        typer.echo(
            f"no FID comparison table: tracking.enabled is false in {params}, and no runs were recorded", err=True
        )
        raise typer.Exit(0 if dataset else 1)
    exps = experiment or None
    rows = track.pipeline_rows(p.tracking, dataset, model, exps)
    if story := track.latest_transfer(p.tracking, exps):
        rows += transfer_rows(*story)
    if cyc := track.latest_cyclegan(p.tracking, exps):
        rows += cyclegan_rows(cyc)
    rows = ordered([r for r in rows if (not dataset or r["dataset"] == dataset) and (not model or r["model"] == model)])
    if not rows:
        which = " and ".join(f"{k} {v}" for k, v in (("dataset", dataset), ("model", model)) if v)
        typer.echo("no finished runs found in MLflow" + (f" for {which}" if which else ""), err=True)
        raise typer.Exit(1)
    output_folder(out, "facegan report --out")
    print_table(rows, wide)
    files = write_table(rows, out)
    typer.echo("wrote " + ", ".join(str(f) for f in files))


@app.command("timings")
def timings(
    log: bool = typer.Option(False, "--log", help="also log timings.md + metrics time.<stage> on each parent run"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing but what was logged"),
    top: int = typer.Option(0, min=0, help="show the N longest stages and the rest as one line (0: all)"),
    experiment: list[str] = typer.Option([], help="MLflow experiment(s) (default: tracking.experiment)"),
    params: Path | None = TRACKING_PARAMS,
    root: Path = typer.Option(
        Path("."), "--root", file_okay=False, exists=True, help="project root: where a relative MLflow store is"
    ),
) -> None:
    """Wall time of each stage of the latest execution (from its MLflow stage runs), longest first, with its
    share of the total."""
    from facegan import timings as tm

    if quiet and not log:  # it printed nothing and did nothing, with exit 0
        raise typer.BadParameter("-q prints only what --log logged: add --log, or leave -q out", param_hint="--quiet")
    cfg = _tracking(params, root)
    found = tm.collect(cfg, experiment or None)
    if not quiet:
        typer.echo(tm.render(found, top))
    if log:
        n = tm.log(cfg, found)
        typer.echo(f"logged {tm.ARTIFACT} and time.<stage> metrics on {n} MLflow run(s)")


@app.command("summary")
def summary(params: Path | None = ROOT_PARAMS, root: Path = EXISTING_ROOT) -> None:
    """What the pipeline made and where: samples, tables, UIs, FD per dataset, transfer table, stage times."""
    from facegan.config import load_params
    from facegan.summary import summary as _summary

    typer.echo(_summary(load_params(_params(params, root), root=root), root), nl=False)


@app.command("chain")
def chain(
    dataset: str = typer.Argument(..., help="dataset name from params.yaml"),
    params: Path | None = ROOT_PARAMS,
    root: Path = ROOT,
    start: str = typer.Option("generate", help="first stage to run"),
) -> None:
    """Run the stages from --start to report, in order, without DVC (use `dvc repro` for caching); a dataset of
    imported images (`facegan dataset add`) has nothing to generate and starts at detect."""
    from facegan.chain import without_generate
    from facegan.config import load_params

    names = list(STAGES)
    if start not in names:
        raise typer.BadParameter(f"unknown stage {start!r}; stages: {', '.join(names)}")
    names = names[names.index(start) :]
    params = _params(params, root)
    kept = without_generate(names, dataset, load_params(params))
    if kept != names:
        typer.echo(
            f"{dataset}: its images are imported (data/raw/{dataset}), not generated: skipping generate", err=True
        )
    _run(kept, dataset, params, root)


@app.command("check")
def check(params: Path = PARAMS) -> None:
    """Validate the params file and print the datasets it defines; params.yaml beside a dvc.yaml is also checked
    against it (which datasets `dvc repro` can build)."""
    from facegan.config import ParamsError, load_params
    from facegan.datasets import dvc_problems

    p = load_params(params)
    if params.name == "params.yaml" and (problems := dvc_problems(p, params.resolve().parent)):
        raise ParamsError(f"{params}: valid, but `dvc repro` cannot run it:\n" + "\n".join(f"  {x}" for x in problems))
    typer.echo(f"{params}: valid; datasets: {', '.join(p.datasets)}; model: {p.train.model}")


@app.command("keys")
def keys(
    start: str = typer.Argument("", help="only keys starting so: a section (train, datasets.<name>.detect) or a key"),
) -> None:
    """Every key params.yaml may hold, with its type, default and meaning (params.yaml sets only some)."""
    from facegan.params_keys import listing

    try:
        typer.echo("\n".join(listing(start)))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="START") from None


@app.command("sample")
def sample(
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", "-c", exists=True, dir_okay=False, help="checkpoint.pt"
    ),
    model_uri: str | None = typer.Option(
        None, "--model-uri", help="a registered generator, e.g. models:/facegan-cartoon@best"
    ),
    n: int = typer.Option(16, "-n", min=1, help="number of images"),
    seed: int = typer.Option(
        0,
        "--seed",
        "-s",
        min=0,
        max=2**63 - 1,
        help="the first image's seed: image i is seed + i's, as in the explorer",
    ),
    labels: str = typer.Option("", "--labels", "-l", help="conditional models: e.g. hair=blond,glasses=1"),
    labels_from: Path | None = typer.Option(
        None,
        "--labels-from",
        exists=True,
        file_okay=False,
        help="conditional models: each seed's labels a row of this packed dataset (data/processed/NAME), its joint "
        "distribution as `evaluate` draws them, for `facegan fid` (default: uniform per attribute)",
    ),
    out: Path = typer.Option(Path("samples"), "--out", "-o", file_okay=False, help="output folder"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the images of an earlier sample in --out"),
    grid: bool | None = typer.Option(
        None, "--grid/--no-grid", help="grid.png of the first 64 in --out (default: with -n up to 64)"
    ),
    params: Path | None = TRACKING_PARAMS,
) -> None:
    """Write generated images (and a grid of them, up to 64) from a checkpoint."""
    import itertools

    from tqdm.auto import tqdm

    from facegan.io import output_folder
    from facegan.sample import N_FIXED, earlier_samples, sample_stream, write_sample_folder

    if (checkpoint is None) == (model_uri is None):
        raise typer.BadParameter("give exactly one of --checkpoint and --model-uri")
    earlier = earlier_samples(out, overwrite)
    if model_uri:
        from facegan import track

        checkpoint = track.download_checkpoint(model_uri, _tracking(params))
    assert checkpoint is not None
    batches = sample_stream(checkpoint, n, seed, labels, labels_from=labels_from)  # a bad input stops here
    batches = itertools.chain([next(batches)], batches)  # the generator runs before anything is written
    output_folder(out, "facegan sample --out")
    # a folder of more than a grid's worth is for `facegan fid` (which leaves the grid out, as it is named)
    with_grid = n <= N_FIXED if grid is None else grid
    with tqdm(total=n, desc="sampling", unit="image", dynamic_ncols=True, mininterval=1.0) as bar:
        shown = write_sample_folder(batches, out, seed, n, earlier, with_grid, bar)
    wrote = f"wrote {n} image{'s' if n > 1 else ''}"
    if with_grid:
        wrote += " and grid.png" + (f" (the first {shown})" if n > shown else "")
    replaced = f", in place of {len(earlier)} of an earlier sample" if earlier else ""
    typer.echo(f"{wrote} to {out}{replaced}")


@app.command("explore")
def explore(
    model_uri: str | None = typer.Option(
        None,
        "--model-uri",
        help="a registered generator, e.g. models:/facegan-cartoon@best "
        "(default: the best model of the first dataset in params.yaml)",
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        "-c",
        dir_okay=False,
        help="checkpoint.pt of `facegan train` or data/cyclegan/model/checkpoint.pt",
    ),
    run: str | None = typer.Option(
        None,
        "--run",
        help="MLflow run id of a pipeline whose generator is registered, or its first 4+ characters (the FID "
        "table's `run`)",
    ),
    host: str = typer.Option("127.0.0.1", help="address to bind (127.0.0.1: this machine only)"),
    port: int = typer.Option(7860, min=0, max=65535, help="port (0: any free one)"),
    threads: int = typer.Option(0, min=0, help="torch CPU threads (0: torch's default)"),
    params: Path = PARAMS,
) -> None:
    """Latent explorer in the browser: sample, steer and compare trained generators (gradio)."""
    import logging

    from facegan.config import load_params
    from facegan.errors import FaceganError
    from facegan.explore import serve
    from facegan.logs import setup_logging

    setup_logging()
    given = [r for r in (model_uri, str(checkpoint) if checkpoint else None, run) if r]
    if len(given) > 1:
        raise typer.BadParameter("give at most one of --model-uri, --checkpoint and --run")
    p = None
    if not given:  # the default model is named after params.yaml's first dataset
        p = load_params(params)
    elif params.is_file():  # only for its tracking store: a model given needs nothing else from it
        try:
            p = load_params(params)
        except FaceganError as e:
            logging.getLogger("facegan").warning("%s; the tracking store is the default one", e)
    if run is not None and len(run) < 32:  # the start of an id: the store's one run that starts so
        from facegan import track
        from facegan.config import TrackingConfig

        given = [track.fetch_run(run, p.tracking if p else TrackingConfig()).info.run_id]
    ref = given[0] if given or p is None else f"models:/facegan-{next(iter(p.datasets))}@best"
    demo, url = serve(ref, host, port or None, threads, p.tracking if p else None)  # 0: any free port
    typer.echo(f"facegan explore: serving {ref} at {url}  (Ctrl+C stops)")
    try:
        demo.block_thread()
    finally:
        demo.close()


@app.command("fid")
def fid(
    folder_a: Path = typer.Argument(..., exists=True, file_okay=False, help="reference images"),
    folder_b: Path = typer.Argument(..., exists=True, file_okay=False, help="images to score"),
    extractor: str = typer.Option("inception", help="inception | dlib | attributes (with --classifier)"),
    mode: str | None = typer.Option(
        None, help="inception's resize: legacy (pytorch-fid's bilinear, the default) | clean (PIL bicubic)"
    ),
    batch_size: int = typer.Option(50, min=1),
    weights: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="pt_inception-2015-12-05-6726825d.pth (default: torch hub cache)"
    ),
    classifier: Path | None = typer.Option(
        None, exists=True, file_okay=False, help="a dataset's attribute classifier (data/classifiers/<dataset>)"
    ),
) -> None:
    """Frechet distance and KID between two folders of images (any sizes and formats). A preprocessing stage's
    folder counts the faces its manifest accepted (not its masks or contact sheet); a packed dataset's folder
    (data/processed/NAME) the images of its dataset.zip."""
    import logging

    from facegan.config import EvaluateConfig, parse_section
    from facegan.evaluate.compare import compare_folders
    from facegan.evaluate.extractors import EXTRACTORS
    from facegan.evaluate.fid import kid_spread
    from facegan.logs import setup_logging
    from facegan.registry import pick

    setup_logging()
    pick(EXTRACTORS, extractor, "feature extractor")  # the options are checked before any is said to be ignored
    cfg = parse_section(
        EvaluateConfig,
        {"mode": "legacy" if mode is None else mode, "batch_size": batch_size, "inception_weights": weights},
        "facegan fid options",
    )
    if extractor == "attributes" and classifier is None:
        raise typer.BadParameter("--extractor attributes needs --classifier")
    ignored = {"--mode": mode, "--weights": weights} if extractor != "inception" else {}
    ignored |= {"--classifier": classifier} if extractor != "attributes" else {}
    for option in (o for o, v in ignored.items() if v is not None):
        logging.getLogger("facegan").warning("%s does not apply to --extractor %s; ignored", option, extractor)
    r = compare_folders(folder_a, folder_b, cfg, extractor, classifier)
    space = f"inception, {r['mode']}" if extractor == "inception" else extractor  # the mode is inception's resize
    counts = f"{r['n_a']} vs {r['n_b']} images"
    if r["same_images"]:  # the reference against itself: no score
        typer.echo(f"FD ({space}): n/a   KID: n/a   ({counts}: {folder_b} holds the images of {folder_a})")
        return
    copies = f", {r['copies']} of them identical to reference images" if r["copies"] else ""
    typer.echo(f"FD ({space}): {r['fd']:.6f}   KID: {r['kid']:.6f} +- {kid_spread(r['kid_std'])}   ({counts}{copies})")


@app.command("exp-table")
def exp_table(
    rows: str = typer.Option("train.loss", help="param for the table rows"),
    cols: str = typer.Option("train.d_variant", help="param for the table columns"),
    metric: str | None = typer.Option(
        None,
        help="metric in the cells (default: fd_dlib of params.yaml's first dataset, "
        "data/reports/<dataset>/metrics.json:fd_dlib)",
    ),
    where: list[str] = typer.Option(
        [], help="KEY=VALUE: only experiments with this param value (repeatable; commit=REV: one commit's)"
    ),
    out: Path | None = typer.Option(None, dir_okay=False, help="also write the table as Markdown here"),
    all_commits: bool = typer.Option(
        False, "--all-commits", help="the experiments of every commit, not only the current one's (reads the history)"
    ),
) -> None:
    """Pivot the DVC experiments (e.g. a `dvc exp run --queue -S ...` sweep) into one metric table."""
    from facegan.experiments import COMMIT, dvc_experiments, lower_is_better, named, pivot, to_markdown, unscored
    from facegan.io import write_text

    if bad := [w for w in where if "=" not in w]:
        raise typer.BadParameter(f"{bad[0]!r}: expected KEY=VALUE", param_hint="--where")
    if all_commits:
        typer.echo("reading the DVC experiments of every commit (all of the history: minutes in a long one)", err=True)
    exps = dvc_experiments(all_commits=all_commits)
    if metric is None:  # every dataset's report has an fd_dlib: the bare name is a column of several files
        from facegan.config import load_params
        from facegan.experiments import resolve

        first = next(iter(load_params("params.yaml").datasets)) if Path("params.yaml").is_file() else None
        metric = f"data/reports/{first}/metrics.json:fd_dlib" if first else "fd_dlib"
        if not any(resolve(exps, metric) in row for row in exps):  # no report of that dataset (a sweep of another)
            metric = "fd_dlib"
    rows, cols, metric = (named(exps, name) for name in (rows, cols, metric))  # the columns used, named in full
    kept = {k if k == COMMIT else named(exps, k): v for k, v in (w.split("=", 1) for w in where)}
    rkeys, ckeys, cells = pivot(exps, rows, cols, metric, kept)
    left_out = unscored(exps, rows, cols, metric, kept)
    if not cells:
        if left_out:
            said = (
                f"{sum(left_out.values())} experiment(s) with {rows} and {cols} have no {metric} "
                "(failed, queued, running or no finite value)"
            )
        else:
            said = f"no experiments have {rows}, {cols} and {metric}; run a sweep first (see README)" + (
                "" if all_commits else ", or add --all-commits for the experiments of earlier commits"
            )
        typer.echo(said, err=True)
        raise typer.Exit(1)
    table = to_markdown(rkeys, ckeys, cells, rows, cols, metric, lower_is_better(metric), left_out)
    typer.echo(table)
    if out:
        write_text(out, table)  # its folder made when missing


@app.command("exp-args")
def exp_args(
    overlay: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML overlay of params.yaml"),
    params: Path = PARAMS,
) -> None:
    """Print `-S key=value` arguments of `dvc exp run` for every value in OVERLAY (checked against params.yaml
    first), shell-quoted: e.g. `eval dvc exp run "$(facegan exp-args params.transfer-study.yaml)"`."""
    import shlex

    from facegan.experiments import set_args

    typer.echo(" ".join(shlex.quote(a) for a in set_args(overlay, params)))


@app.command("reproduce")
def reproduce(
    run_id: str = typer.Argument(
        ...,
        help="MLflow run id of a pipeline (or one of its stage runs), or its first 4+ characters (the FID table's "
        "`run`)",
    ),
    root: Path = ROOT,
    out: Path | None = typer.Option(None, file_okay=False, help="output folder (default reproduce/<run id>)"),
    tolerance: float = typer.Option(1e-6, min=0.0, help="largest accepted |recorded - reproduced| per metric"),
    params: Path | None = TRACKING_PARAMS,
) -> None:
    """Re-run training + evaluation with the params recorded in RUN_ID and compare the FIDs."""
    import math

    from facegan.logs import setup_logging
    from facegan.reproduce import reproduce as _reproduce
    from facegan.reproduce import verdict

    if not math.isfinite(tolerance):  # nan failed every comparison after a whole retrain, inf passed any
        raise typer.BadParameter(f"{tolerance}: give a finite number", param_hint="--tolerance")
    setup_logging()
    lines, ok = verdict(_reproduce(run_id, root, out, _tracking(params, root)), tolerance)
    for line in lines[:-1]:
        typer.echo(line)
    typer.echo(lines[-1], err=not ok)
    if not ok:
        raise typer.Exit(1)


track_app = typer.Typer(help="MLflow tracking utilities.", no_args_is_help=True)
app.add_typer(track_app, name="track")


@track_app.command("sync")
def track_sync(
    buffers: list[Path] = typer.Argument(
        None, exists=True, dir_okay=False, help="buffer files (default: all in <root>/.facegan/tracking)"
    ),
    params: Path | None = TRACKING_PARAMS,
    root: Path = EXISTING_ROOT,
    any_store: bool = typer.Option(
        False, "--any-store", help="also send buffers written for another store (one moved, say) to this one"
    ),
) -> None:
    """Send records kept locally while the tracking server was unreachable (runs and parents it could not
    create are created now, with their original start times and parent links) to the store they were written
    for."""
    from facegan import track

    cfg = _tracking(params, root)  # the root's store: its buffers were meant for it
    files = (
        list({b.resolve(): b for b in buffers}.values()) if buffers else sorted((root / track.BUFFERS).glob("*.jsonl"))
    )
    done = track.sync_all(cfg, files, any_store)
    for _, why in done.skipped:  # a live stage's buffer, or one that cannot be read: `why` names the file
        typer.echo(f"skipped (kept): {why}", err=True)
    for f, why in done.failed:  # the store is still unreachable: the file stays for the next sync
        typer.echo(f"not sent {f} (kept): MLflow at {track.tracking_uri(cfg)}: {why}", err=True)
    left = f"; {done.left} file(s) left unsent" if done.left else ""
    typer.echo(f"sent {done.sent} record(s) from {len(done.files)} of {len(files)} file(s){left}")
    if done.left:
        raise typer.Exit(1)


dataset_app = typer.Typer(
    help="Custom datasets: add a folder or zip of faces in one command, list, show, remove.", no_args_is_help=True
)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("add")
def dataset_add(
    name: str = typer.Argument(
        ..., help="new dataset name: ASCII letters, digits, - and _, from a letter; unique ignoring case"
    ),
    src: Path = typer.Argument(..., help="folder or .zip of images"),
    kind: str = typer.Option("photos", help="photos | drawings | anime: picks the preprocessing backends"),
    references: Path | None = typer.Option(None, help="folder of photos of the one person to keep (verify stage)"),
    labels: Path | None = typer.Option(None, help="CSV: file,<attribute>,... -> conditional labels (acgan)"),
    cascade: Path | None = typer.Option(None, help="kind anime: path of lbpcascade_animeface.xml"),
    params: Path | None = ROOT_PARAMS,
    root: Path = ROOT,
) -> None:
    """Import images (content-hash dedupe, safe zip), track them with DVC, write their params block."""
    from facegan import datasets
    from facegan.logs import setup_logging

    setup_logging()
    out = datasets.add(name, src, kind, references, labels, cascade, _params(params, root), root)
    typer.echo(f"dataset {name}: {out['import']}")
    shown = 20
    for f, reason in list(out["skipped"].items())[:shown]:
        typer.echo(f"  skipped {f}: {reason}")
    for f, kept in list(out["duplicates"].items())[:shown]:
        typer.echo(f"  duplicate {f} (same bytes as {kept})")
    if len(out["skipped"]) > shown or len(out["duplicates"]) > shown:
        more = max(len(out["skipped"]) - shown, 0) + max(len(out["duplicates"]) - shown, 0)
        typer.echo(f"  ... and {more} more: every one in {out['report_file']}")
    if "references" in out:
        typer.echo(f"references: {out['references']}")
        skipped = [f"skipped reference {f}: {reason}" for f, reason in out["references_skipped"].items()]
        faceless = out["references_without_face"].items()
        skipped += [f"reference {f}: {why}, verify will not use it" for f, why in faceless]
        _echo_first(skipped, shown, f"more: every one in {out['report_file']}")
    for note in out["backends"]:
        typer.echo(f"  backend {note}")
    problems = [f"labels: {problem}" for problem in out.get("label_problems", [])]
    _echo_first(problems, shown, f"more label problems: every one in {out['report_file']}")
    typer.echo(f"next: dvc repro report@{name}   (or: facegan chain {name})")


def _echo_first(lines: list[str], shown: int, more: str) -> None:
    """The first `shown` of `lines`, indented, then how many more (`more` says what and where)."""
    for line in lines[:shown]:
        typer.echo(f"  {line}")
    if len(lines) > shown:
        typer.echo(f"  ... and {len(lines) - shown} {more}")


@dataset_app.command("list")
def dataset_list(params: Path | None = ROOT_PARAMS, root: Path = EXISTING_ROOT) -> None:
    """Every dataset with its source, image counts and size on disk."""
    from rich.console import Console
    from rich.table import Table

    from facegan import datasets
    from facegan.config import load_params

    params = _params(params, root)
    names = list(load_params(params).datasets)
    table = Table("dataset", "source", "raw images", "packed", "rejected", "size on disk")
    for name in names:
        d = datasets.describe(name, params, root)
        pack = d["stages"].get("pack", {})
        table.add_row(
            name, d["source"], str(d["raw_images"]), str(pack.get("ok", "-")), str(pack.get("rejected", "-")), d["size"]
        )
    Console().print(table)


@dataset_app.command("show")
def dataset_show(name: str, params: Path | None = ROOT_PARAMS, root: Path = EXISTING_ROOT) -> None:
    """Counts per stage, rejection reasons, label columns, backends and size of one dataset."""
    from rich.console import Console
    from rich.table import Table

    from facegan import datasets

    d = datasets.describe(name, _params(params, root), root)
    con = Console()
    con.print(f"[bold]{name}[/]: source {d['source']}, {d['raw_images']} raw images, {d['size']} on disk")
    con.print("backends (params): " + ", ".join(f"{k} {v}" for k, v in d["backends"].items()))
    if d["backends_used"]:
        con.print(
            "backends used: "
            + ", ".join(
                f"{stage} " + " + ".join(f"{b} ({n})" for b, n in counts.items())
                for stage, counts in d["backends_used"].items()
                if counts
            )
        )
    con.print("labels: " + (", ".join(d["label_columns"]) or d["label_problem"] or "none"), markup=False)
    table = Table("stage", "ok", "rejected", "reasons")
    for stage, counts in d["stages"].items():
        reasons = "; ".join(
            f"{k.split(':', 1)[1].strip()}: {v}" for k, v in counts.items() if k.startswith("rejected:")
        )
        table.add_row(stage, str(counts.get("ok", 0)), str(counts.get("rejected", 0)), reasons or "-")
    con.print(table if d["stages"] else f"not processed yet: dvc repro report@{name} (or: facegan chain {name})")


@dataset_app.command("remove")
def dataset_remove(
    name: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask"),
    params: Path | None = ROOT_PARAMS,
    root: Path = EXISTING_ROOT,
) -> None:
    """Remove a dataset's params block, DVC tracking and data folders (other datasets are not touched)."""
    from facegan import datasets
    from facegan.config import load_params

    params = _params(params, root)
    load_params(params).dataset(name)
    if not yes and not typer.confirm(f"remove dataset {name!r}: its params block, DVC entry and data/*/{name}?"):
        raise typer.Exit(1)
    removed = datasets.remove(name, params, root)
    for r in removed:
        typer.echo(f"removed {r}")


def main(argv: list[str] | None = None) -> None:
    from facegan.errors import user_errors

    with user_errors():
        app(args=argv)
