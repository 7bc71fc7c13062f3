"""Custom datasets: `facegan dataset add/list/show/remove`.

`add` imports a folder or .zip into data/raw/<name>/images (facegan.data.sources), tracks it with DVC
(`dvc add`), and writes a params.yaml block with backends suited to the kind of images. dvc.yaml
iterates over `datasets`, so `dvc repro` then builds the new dataset's chain with no edit to it.
params.yaml is edited as text, so its comments and layout survive: the edited text is written beside it, must
load, and replaces it at once as the last step (add: after the import and `dvc add`; remove: after the data is
gone), so a failure anywhere leaves params.yaml as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from facegan.config import DatasetConfig, Params, ParamsError, dataset_name_problem, dvc_stages, load_params
from facegan.data.sources import ImportReport, import_images
from facegan.errors import FaceganError, ModelFileMissing, OutputError, StageError, StageInputMissing, said
from facegan.io import exclusive, visible_files, write_text
from facegan.layout import PER_IMAGE, Layout
from facegan.manifest import SUMMARY, read_summary

log = logging.getLogger(__name__)

IMPORTS = Path(".facegan") / "imports"  # what `dataset add` skipped, in full
# data/<kind>/<dataset>: every folder of one dataset (checkpoints: training's work folder, outside DVC)
DATA_KINDS = (
    "raw",
    "interim",
    "processed",
    "classifiers",
    "stats",
    "checkpoints",
    "models",
    "eval",
    "reports",
    "runs",
)

# Backends per kind of image, per stage: candidates in order of preference (measured on real photos with ground
# truth: docs/benchmarks.md); the first one whose package and model files are on this machine is written into
# params.yaml. Stages not named take the DatasetConfig defaults.
KINDS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "photos": {
        "detect": [{"backend": "yunet", "min_size": 40}, {"backend": "hog", "min_size": 40}],
        "align": [{"backend": "dlib68"}, {"backend": "yunet5"}],
        "matte": [{"backend": "rembg"}, {"backend": "grabcut"}],
        "upscale": [{"backend": "opencv", "model": "FSRCNN", "scale": 2}, {"backend": "lanczos"}],
    },
    "drawings": {
        "detect": [{"backend": "haar", "min_size": 32}],
        "align": [{"backend": "dlib68"}],
        "matte": [{"backend": "none"}],
    },
    "anime": {
        "detect": [{"backend": "anime", "cascade": "lbpcascade_animeface.xml", "min_size": 32}],
        "align": [{"backend": "box"}],
        "matte": [{"backend": "none"}],
    },
}


def _yunet(cfg) -> None:
    from facegan.preprocess.pretrained import YuNet

    _loads(YuNet(cfg.model, 0.6, 1600))


def _rembg(cfg) -> None:
    from facegan.preprocess.pretrained import RembgMatter

    _loads(RembgMatter(cfg.model))


def _superres(cfg) -> None:
    from facegan.preprocess.pretrained import OpenCVSuperRes, superres_dir

    _loads(OpenCVSuperRes(cfg.model, cfg.scale, superres_dir(cfg.models_dir)))


def _loads(backend) -> None:
    """The backend's package and model files are here (`check`) and load and run (`load`, on a blank probe): a
    file that is there but truncated or of another kind is passed over at import, not found out by the stage."""
    backend.check()
    backend.load()


# (stage, backend) -> a check raising ModelFileError when its package or model files are not here or do not load
# (the others need only what `make install` installs)
NEEDS_FILES = {
    ("detect", "yunet"): _yunet,
    ("align", "yunet5"): _yunet,
    ("matte", "rembg"): _rembg,
    ("upscale", "opencv"): _superres,
}


def pick_backends(kind: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The kind's backends available here (the first candidate per stage that can run), and a line per stage
    saying what was chosen and, where a better candidate was passed over, why."""
    from facegan.preprocess.models import ModelFileError

    chosen, notes = {}, []
    for stage, candidates in KINDS[kind].items():
        skipped = []
        for values in candidates:
            check = NEEDS_FILES.get((stage, values["backend"]))
            try:
                if check is not None:
                    check(getattr(DatasetConfig.model_validate({"source": {"kind": "folder"}, stage: values}), stage))
            except ModelFileError as e:
                skipped.append(f"not {values['backend']}: {e}")
                continue
            chosen[stage] = values
            notes.append(f"{stage}: {values['backend']}" + (f" ({'; '.join(skipped)})" if skipped else ""))
            break
    return chosen, notes


def dataset_block(
    name: str,
    kind: str,
    has_labels: bool,
    has_references: bool,
    backends: dict[str, dict[str, Any]] | None = None,
    indent: str = "  ",
) -> str:
    """The params.yaml lines of a new dataset: every section written out, in flow style (backends: pick_backends),
    indented like the file's other datasets (`indent`: one level)."""
    backends = pick_backends(kind)[0] if backends is None else backends
    raw: dict[str, Any] = {"source": {"kind": "folder"}, **{k: dict(v) for k, v in backends.items()}}
    raw["pack"] = {"labels": "labels.csv" if has_labels else None}
    if has_references:  # every face of a group photo goes to verify, which keeps the referenced person's
        raw["verify"] = {"backend": "dlib", "references": "references"}
        raw["detect"] = {**raw.get("detect", {}), "multi_face": "all"}
    cfg = DatasetConfig.model_validate(raw).model_dump(mode="json")
    lines = [f"{indent}{name}:                     # added by `facegan dataset add` (kind: {kind})"]
    for section, values in cfg.items():
        flow = yaml.safe_dump(values, default_flow_style=True, width=10_000, sort_keys=False).strip()
        lines.append(f"{indent * 2}{section}: {flow}")
    return "\n".join(lines) + "\n"


def _datasets_span(text: str) -> tuple[int, int]:
    """(first line index after `datasets:`, index of the next top-level key) in params.yaml lines."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^datasets:\s*(#.*)?$", line)), None)
    if start is None:
        raise ParamsError("params.yaml has no top-level 'datasets:' mapping")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^[^\s#]", lines[i])), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return start + 1, end


def datasets_indent(text: str) -> str:
    """The indentation of the datasets under params.yaml's `datasets:` (two spaces when it lists none)."""
    lines = text.splitlines()
    start, end = _datasets_span(text)
    found = (re.match(r"^(\s+)[^\s#]", line) for line in lines[start:end])
    return next((m.group(1) for m in found if m), "  ")


def insert_block(text: str, block: str) -> str:
    """`block` (dataset_block's lines, indented by datasets_indent) after the last dataset of params.yaml."""
    lines = text.splitlines(keepends=True)
    _, end = _datasets_span(text)
    if end and not lines[end - 1].endswith("\n"):  # the file's last line, without its line break
        lines[end - 1] += "\n"
    return "".join(lines[:end] + [block] + lines[end:])


def remove_block(text: str, name: str) -> str:
    lines = text.splitlines(keepends=True)
    start, end = _datasets_span(text)
    indent = re.escape(datasets_indent(text))
    first = next((i for i in range(start, end) if re.match(rf"^{indent}{re.escape(name)}:", lines[i])), None)
    if first is None:
        raise ParamsError(f"dataset {name!r} not found in params.yaml")
    # the block ends at the next line indented as a dataset or less (the next dataset, a top-level key); blank and
    # comment lines inside it are its own (ending at the first one attached its remaining lines to the dataset
    # before it), those after its last setting stay (a comment there is most often the next dataset's)
    last = next((i for i in range(first + 1, len(lines)) if re.match(rf"^({indent})?[^\s#]", lines[i])), len(lines))
    while last > first + 1 and (not lines[last - 1].strip() or lines[last - 1].lstrip().startswith("#")):
        last -= 1
    return "".join(lines[:first] + lines[last:])


def dvc_problems(p: Params, project: Path) -> list[str]:
    """Why `dvc repro` of the project in `project` (its dvc.yaml) cannot run these params' datasets (empty: it can).
    dvc.yaml's `generate` iterates over a fixed list (DVC's foreach cannot pick params' cartoon-kind datasets), and
    an imported dataset's images enter DVC as data/raw/<name>.dvc (`facegan dataset add`); the other stages
    iterate over `datasets`."""
    dvc_yaml = project / "dvc.yaml"
    if not dvc_yaml.is_file():
        return []
    # an edit that broke it: one line naming the file, the line and the column
    listed = dvc_stages(dvc_yaml).get("generate", {}).get("foreach")
    if isinstance(listed, dict):  # DVC's foreach over a mapping runs for its keys
        listed = list(listed)
    problems = []
    generated = [n for n, d in p.datasets.items() if d.source.kind == "cartoon"]
    if listed is None and generated:  # a `${...}` foreach is DVC's to read
        problems.append(
            f"cartoon dataset {', '.join(generated)}: dvc.yaml has no generate stage over a list of datasets "
            "(`foreach: [...]`), so no stage makes its data/raw: restore that stage from facegan's dvc.yaml"
        )
    elif isinstance(listed, list):
        listed = [str(n) for n in listed]
        if gone := [n for n in listed if n not in generated]:
            problems.append(
                f"dvc.yaml's generate stage (foreach: {listed}) runs for {', '.join(gone)}, not a cartoon dataset of "
                "the params: remove it from that list"
            )
        if extra := [n for n in generated if n not in listed]:
            problems.append(
                f"cartoon dataset {', '.join(extra)}: dvc.yaml's generate stage (foreach: {listed}) does not draw it, "
                "so no stage makes its data/raw: add it to that list"
            )
    for name, d in p.datasets.items():
        if d.source.kind != "cartoon" and not (project / "data" / "raw" / f"{name}.dvc").is_file():
            problems.append(
                f"dataset {name}: no data/raw/{name}.dvc, so DVC has no images for it: `facegan dataset add {name} SRC`"
            )
    return problems


def _dvc(root: Path, *args: str) -> None:
    if not (root / ".dvc").is_dir():
        log.warning("%s is not a DVC repository: skipped `dvc %s`", root, " ".join(args))
        return
    if args[0] == "add":  # it hashes every file first, without a word
        log.info("dvc %s: hashing the files for DVC (a large folder takes a while)", " ".join(args))
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    if r.returncode:
        raise StageError(f"dvc {' '.join(args)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")


def check_labels(csv_path: Path, images: list[str], duplicates: dict[str, str] | None = None) -> list[str]:
    """Problems of a label CSV against the imported images (bad rows, unknown files, rows of duplicates that were
    not imported, unlabelled images); LabelsError when no row names an imported image (its names are not the
    images' paths in the source: nothing to train on)."""
    from facegan.data.pack import LabelsError, read_labels

    rows, _names, problems = read_labels(csv_path)
    known, duplicates = set(images), duplicates or {}
    if not (known | duplicates.keys()) & rows.keys():
        raise LabelsError(
            f"{csv_path}: no row names an imported image (rows name e.g. {next(iter(rows))!r}, images are e.g. "
            f"{images[0]!r}): its first column must give each image's path inside the source folder or .zip"
        )
    for f in (f for f in rows if f not in known):
        kept = duplicates.get(f)
        if kept is None:
            problems.append(f"row for {f!r}: no such image")
        elif kept not in rows:
            problems.append(f"row for {f!r}: not imported, the same bytes as {kept!r}, which has no row: give it this")
        elif rows[kept] != rows[f]:
            problems.append(f"row for {f!r}: not imported, the same bytes as {kept!r}, whose row says otherwise")
        else:
            problems.append(f"row for {f!r}: not imported, the same bytes as {kept!r}: its row is not used")
    missing = [f for f in images if f not in rows]
    if missing:
        problems.append(
            f"{len(missing)} image(s) without a label row (they will be rejected at pack), "
            f"e.g. {', '.join(missing[:3])}"
        )
    return problems


def add(
    name: str,
    src: Path,
    kind: str = "photos",
    references: Path | None = None,
    labels: Path | None = None,
    cascade: Path | None = None,
    params_file: Path = Path("params.yaml"),
    root: Path = Path("."),
) -> dict:
    """Import, track and configure a new dataset; returns a report (counts, label problems, the files skipped and
    the duplicates, of the images and of the references: all of them also in <root>/.facegan/imports/<name>.json,
    `report_file`)."""
    if kind not in KINDS:
        raise ParamsError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    p = load_params(params_file)
    if name in p.datasets:
        raise ParamsError(
            f"dataset {name!r} already exists in {params_file} (remove it first: facegan dataset remove {name})"
        )
    problem = dataset_name_problem([*p.datasets, name])
    if problem:  # before any image is copied
        raise ParamsError(problem)
    raw = root / "data" / "raw" / name
    if raw.exists():
        raise ParamsError(f"{raw} already exists; remove it or choose another name")
    dvc_file = raw.with_name(f"{name}.dvc")
    if dvc_file.exists():  # an earlier data/raw/<name>'s record: `dvc add` would replace it, and its undo remove it
        raise ParamsError(
            f"{dvc_file} already exists (DVC tracks images under that name, though {params_file} lists no dataset "
            f"{name!r}); remove it (`dvc remove {dvc_file}`) or choose another name"
        )
    _one_project(params_file, root, "the images would go under")
    if labels is not None and not labels.is_file():
        what = "a folder, not a CSV file" if labels.is_dir() else "not found"
        raise StageInputMissing(f"label file {labels} (--labels): {what}")
    if references is not None and not references.exists():
        raise StageInputMissing(f"reference photos {references} (--references): not found")
    if cascade is not None and kind != "anime":
        raise ParamsError(f"--cascade is for --kind anime, not --kind {kind}: leave it out, or add --kind anime")
    if kind == "anime":
        _check_cascade(cascade)
    original = params_file.read_text(encoding="utf-8")
    _check_writable(params_file, f"dataset add {name}")  # before any image is copied: nothing to undo then
    candidate: Path | None = None
    tracked = False
    try:
        report: ImportReport = import_images(src, raw / "images")
        out: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "import": report.summary(),
            "skipped": report.skipped,
            "duplicates": report.duplicates,
        }
        refs = None
        if references is not None:
            refs = import_images(references, raw / "references")
            out["references"], out["references_skipped"] = refs.summary(), refs.skipped
            from facegan.preprocess.verify import faceless_references

            # as `verify` will find faces: a folder without one is an error naming the folder given
            out["references_without_face"] = faceless_references(
                raw / "references", f"dataset add {name} --references", references
            )
        if labels is not None:
            # its errors name the user's file
            out["label_problems"] = check_labels(labels, report.imported, report.duplicates)
            shutil.copyfile(labels, raw / "labels.csv")
        if cascade is not None:
            shutil.copyfile(cascade, raw / "lbpcascade_animeface.xml")
        backends, out["backends"] = pick_backends(kind)
        indent = datasets_indent(original)
        block = dataset_block(name, kind, labels is not None, references is not None, backends, indent)
        candidate = _candidate(params_file, insert_block(original, block), f"dataset add {name}")
        tracked = True  # from here on, undone by `dvc remove` too
        _dvc(root, "add", str(Path("data") / "raw" / name))
        _install(candidate, params_file)  # params.yaml changes last, at once, or not at all
    except BaseException as e:
        with contextlib.suppress(OSError):  # each undo on its own: one that fails leaves the others to run
            if candidate is not None:
                candidate.unlink(missing_ok=True)
        if tracked and dvc_file.is_file():
            with contextlib.suppress(Exception):
                _dvc(root, "remove", str(dvc_file.relative_to(root)))
        shutil.rmtree(raw, ignore_errors=True)
        if isinstance(e, KeyboardInterrupt):  # Ctrl-C: the exit code alone (130) does not say what was kept
            log.warning("dataset add %s: interrupted; nothing was kept (%s as it was)", name, params_file)
        if isinstance(e, OSError) and not isinstance(e, FaceganError):  # a full disk while importing
            raise OutputError(f"dataset add {name}: {said(e)}; nothing was kept") from None
        raise
    listed = {
        "source": str(src),
        "skipped": report.skipped,
        "duplicates": report.duplicates,
        **(
            {
                "references": {
                    "skipped": refs.skipped,
                    "duplicates": refs.duplicates,
                    "without_face": out["references_without_face"],
                }
            }
            if refs is not None
            else {}
        ),
        **({"label_problems": out["label_problems"]} if labels is not None else {}),
    }
    out["report_file"] = root / IMPORTS / f"{name}.json"  # every one, where the terminal shows the first few
    out["report_file"].parent.mkdir(parents=True, exist_ok=True)
    write_text(out["report_file"], json.dumps(listed, indent=1))  # always: one of an earlier import is replaced
    log.info("dataset %s: %s", name, out["import"])
    return out


def _check_cascade(cascade: Path | None) -> None:
    """Kind anime's cascade file, given and loadable by this OpenCV: before any image is copied, not at detect."""
    if cascade is None or not cascade.is_file():
        where = "" if cascade is None else f" ({cascade}: {'a folder' if cascade.is_dir() else 'not found'})"
        raise ModelFileMissing(
            f"kind 'anime' needs --cascade PATH to lbpcascade_animeface.xml{where} "
            "(github.com/nagadomi/lbpcascade_animeface)"
        )
    from facegan.preprocess.models import CascadeDetector

    CascadeDetector(str(cascade), 24, 0, False).load()


def _one_project(params_file: Path, root: Path, would: str) -> None:
    """Refuse a params file of one project (its folder holds .dvc/ or data/) with the data folders of another
    (`root`): the block would change in one project and the images in the other."""
    project = params_file.absolute().parent  # a params.yaml that is a link (a shared config) is its folder's
    marks = [m for m in (".dvc", "data") if (project / m).is_dir()]
    if marks and root.resolve() != project.resolve():
        kind = "the DVC project" if ".dvc" in marks else "the project"
        raise ParamsError(
            f"{params_file} is {kind} {project}'s, but {would} {root.resolve()}: run it in {project}, or pass "
            f"--root {project}"
        )


def _written(root: Path, name: str) -> list[Path]:
    """Every folder of dataset `name` that a stage or a training holds while it writes there (`io.exclusive`):
    data/<kind>/<name>, each stage's folder under data/interim/<name>, each run's under data/checkpoints/<name>
    (there or only its lock file). refstats, classifier, evaluate and report hold none."""
    data = root / "data"
    folders = [data / kind / name for kind in DATA_KINDS if (data / kind).is_dir()]  # a first run: no folder yet
    for kind in ("interim", "checkpoints"):
        mine = data / kind / name
        if mine.is_dir() and not mine.is_symlink():  # a first run holds `.X.lock` before its folder X is there
            held = {f.name for f in mine.iterdir() if f.is_dir() and not f.name.startswith(".")}
            held |= {f.name[1 : -len(".lock")] for f in mine.glob(".*.lock")}
            folders += [mine / n for n in sorted(held)]
    return folders


def _check_writable(params_file: Path, what: str) -> None:
    """OutputError unless `params_file` may be rewritten (a read-only one stopped an add or remove halfway)."""
    if not os.access(params_file, os.W_OK) or not os.access(params_file.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: cannot write {params_file} (or its folder): not writable; nothing was changed")


def _candidate(params_file: Path, text: str, what: str) -> Path:
    """`text` written beside `params_file` (hidden) and checked to load as params: the file that replaces it once
    the rest succeeded. ParamsError (the candidate removed) when it does not load."""
    target = params_file.resolve()  # a params.yaml that is a link: the file it names changes, the link stays
    path = target.with_name(f".{target.name}.facegan-new")
    try:
        write_text(path, text)
        shutil.copymode(target, path)
        load_params(path)  # the edited file must load, or nothing is kept
    except BaseException as e:
        path.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, FaceganError):
            raise OutputError(f"{what}: cannot write beside {params_file}: {said(e)}") from None
        if isinstance(e, ParamsError):  # the file loaded before the edit: the edit is at fault, not the user
            raise ParamsError(
                f"{what}: the edited {params_file} would not load, so it is left as it was "
                f"({str(e).replace(str(path), str(params_file))}); please report this with your {params_file}"
            ) from None
        raise
    return path


def _install(candidate: Path, params_file: Path) -> None:
    """`candidate` (from `_candidate`) in place of `params_file`, at once (of the file a link names)."""
    os.replace(candidate, params_file.resolve())


def _size(path: Path) -> int:
    """Bytes under `path`; a folder that is a link counts nothing (what it names is the user's: remove keeps it)."""
    if not path.is_dir() or path.is_symlink():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def describe(name: str, params_file: Path = Path("params.yaml"), root: Path = Path(".")) -> dict:
    """What is known about one dataset: images, per-stage counts and rejection reasons, labels, disk use."""
    p = load_params(params_file)
    cfg = p.dataset(name)
    at, data = Layout(root, name), root / "data"
    images = at.raw / "images"
    folders = {**{stage: at.interim(stage) for stage in PER_IMAGE}, "pack": at.packed}
    stages = {stage: read_summary(folder) for stage, folder in folders.items() if (folder / SUMMARY).is_file()}
    label_file = at.raw / (cfg.pack.labels or "")
    label_columns: list[str] = []
    label_problem = None
    if cfg.pack.labels and label_file.is_file():
        from facegan.data.pack import read_labels

        try:
            label_columns = read_labels(label_file)[1]
        except ValueError as e:  # reported, not raised: `show` tells what is there (pack refuses it)
            label_problem = str(e)
    elif cfg.pack.labels and "labels" in cfg.pack.model_fields_set:  # pack stops on it ("labels: none" before)
        label_problem = f"{label_file}: not found (pack.labels names it)"
    return {
        "name": name,
        "source": cfg.source.kind,
        "raw_images": len(visible_files(images)) if images.is_dir() else 0,  # the files detect gives a row
        "stages": stages,
        "label_columns": label_columns,
        "label_problem": label_problem,
        "backends": {s: getattr(cfg, s).backend for s in ("detect", "verify", "align", "matte", "upscale")},
        "backends_used": backends_used(at),
        "size": _human(sum(_size(data / k / name) for k in DATA_KINDS)),
    }


def backends_used(at: Layout) -> dict[str, dict[str, int]]:
    """What each stage's manifest records it ran: stage -> {backend: faces} (upscale: `none` for faces already big)."""
    from collections import Counter

    from facegan.manifest import read_manifest

    used = {}
    for stage in ("detect", "verify", "align", "matte", "upscale"):
        if (at.interim(stage) / "manifest.jsonl").is_file():
            rows = read_manifest(at.interim(stage))
            used[stage] = dict(Counter(r.backends[stage] for r in rows if r.status == "ok" and stage in r.backends))
    return used


def remove(name: str, params_file: Path = Path("params.yaml"), root: Path = Path(".")) -> list[str]:
    """Remove a dataset's params block, its DVC tracking and its data folders; returns what was removed."""
    p = load_params(params_file)
    p.dataset(name)
    if len(p.datasets) == 1:
        raise ParamsError(f"{name!r} is the only dataset; params.yaml needs at least one")
    if p.transfer.enabled and name in (p.transfer.source, p.transfer.target):
        raise ParamsError(f"{name!r} is transfer.source/target in params.yaml: change that first")
    if p.cyclegan.enabled and name in (p.cyclegan.a, p.cyclegan.b):
        raise ParamsError(f"{name!r} is cyclegan.a/b in params.yaml: change that first")
    what = f"dataset remove {name}"
    _one_project(params_file, root, "the folders to remove are under")
    _check_writable(params_file, what)
    candidate = _candidate(params_file, remove_block(params_file.read_text(encoding="utf-8"), name), what)
    removed = [f"{params_file}: datasets.{name}"]
    dvc_file = root / "data" / "raw" / f"{name}.dvc"
    held = contextlib.ExitStack()
    try:
        for folder in _written(root, name):  # a stage or training writing there: refused before anything goes
            held.enter_context(exclusive(folder, "stage or training of this dataset"))
        if dvc_file.is_file():
            _dvc(root, "remove", str(dvc_file.relative_to(root)))
            removed.append(str(dvc_file.relative_to(root)))
        for kind in DATA_KINDS:
            folder = root / "data" / kind / name
            if folder.is_symlink():  # a link to a folder of the user's: the link goes, never what it names
                target = os.readlink(folder)
                folder.unlink()
                removed.append(f"{folder.relative_to(root)} (a link to {target}: what it names is kept)")
            elif folder.exists():
                shutil.rmtree(folder)
                removed.append(str(folder.relative_to(root)))
            for left in folder.parent.glob(f".{name}.*"):  # its lock file, a killed run's temporary folder
                if left.is_dir() and not left.is_symlink():
                    shutil.rmtree(left)
                else:
                    left.unlink()
    except BaseException as e:
        with contextlib.suppress(OSError):
            candidate.unlink(missing_ok=True)
        if isinstance(e, KeyboardInterrupt):
            again = f"run `facegan dataset remove {name}` again"
            log.warning("%s: interrupted; %s still lists %s: %s", what, params_file, name, again)
        if isinstance(e, OSError) and not isinstance(e, FaceganError):  # a read-only folder
            raise OutputError(
                f"{what}: cannot remove {said(e)}; {params_file} still lists {name}: fix that and run "
                f"`facegan dataset remove {name}` again"
            ) from None
        raise
    finally:
        held.close()
    _install(candidate, params_file)  # the data gone, the block goes
    if (imported := root / IMPORTS / f"{name}.json").is_file():
        imported.unlink()
        removed.append(str(imported.relative_to(root)))
    return removed
