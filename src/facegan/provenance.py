"""Which params and code wrote a stage's outputs: a record left by `run_stage` after every stage it runs, so a cache
(the Prefect tasks' keys) never reuses outputs that something else rewrote since (`dvc repro` under other
params, `dvc checkout`, a hand edit); and the hash of the code a stage's outputs depend on (`code_hash`: a Prefect
key, and what a training checkpoint was made by).

The record holds a hash of the params the stage reads (`stage_params`: its dvc.yaml `params:`) and the
fingerprint (names, sizes, modification times) of the outputs right after the stage wrote them. `outputs_state`
is "own" when the outputs are exactly what this stage wrote under the given params (or absent: nothing to
reuse), else the outputs' current fingerprint and the params that wrote them, so any rewrite changes a cache
key that includes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from facegan.config import dvc_stages
from facegan.errors import ParamsError, StageError, first_line
from facegan.io import write_text

if TYPE_CHECKING:
    from facegan.config import Params

RECORDS = Path(".facegan") / "outputs"  # under the project root, beside the tracking buffers
OUTPUT_NEUTRAL = frozenset({"workers", "orchestration"})  # where per-image work runs: the same bytes either way
PACKAGE = Path(__file__).resolve().parent  # the facegan that runs
SRC = PACKAGE.parent  # dvc.yaml's `src/`
REPO = SRC.parent  # its dvc.yaml and stages/, when it runs from its repository (`pip install -e`, `make install`)
CODE = ("stages/", "src/")  # the code among a stage's dvc.yaml deps
DEPS_AGAIN = "restore it from git, or rewrite every stage's code deps from the source with `make deps`"


def stage_params(p: Params, keys: list[str]) -> str:
    """The values of the dotted `keys` of `p` (a stage's params: Layout.params), but where per-image work runs,
    as JSON: what a cache key and the record of which params wrote a stage's outputs cover."""
    raw = p.model_dump(mode="json")
    values = {}
    for key in keys:
        if key in OUTPUT_NEUTRAL:
            continue
        node = raw
        for part in key.split("."):  # dataset names hold no dots (config.dataset_name_problem)
            node = node[part]
        values[key] = node
    return json.dumps(values, sort_keys=True)


def fingerprint(paths: list[Path]) -> str:
    """Names, sizes and modification times of everything under `paths` (cheap, catches any rewrite). The same
    for `data/x` and `/abs/data/x`: DVC stages run with relative paths, Prefect tasks with absolute ones."""
    h = hashlib.sha256()
    for i, root in enumerate(paths):
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root] if root.exists() else []
        h.update(f"#{i}".encode())
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(root) if root.is_dir() else f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def params_hash(params_json: str) -> str:
    return hashlib.sha256(params_json.encode()).hexdigest()


def _record_path(root: Path, outputs: list[Path]) -> Path:
    """One record per set of output paths (a stage of a dataset, or of one model variant)."""
    key = hashlib.sha256("|".join(str(p.resolve()) for p in outputs).encode()).hexdigest()[:24]
    return root / RECORDS / f"{key}.json"


def record(root: Path, outputs: list[Path], params_json: str) -> None:
    """After a stage wrote `outputs` under these params (its `stage_params`)."""
    write_text(
        _record_path(root, outputs),
        json.dumps(
            {"params": params_hash(params_json), "outputs": fingerprint(outputs), "paths": [str(p) for p in outputs]}
        ),
    )


def outputs_state(root: Path, outputs: list[Path], params_json: str) -> str:
    """ "own" when `outputs` are absent or untouched since a stage wrote them under these params; otherwise
    a string that changes with their content (fingerprint) and with the params recorded for them."""
    if not any(p.exists() for p in outputs):
        return "own"
    current = fingerprint(outputs)
    path = _record_path(root, outputs)
    rec = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if rec.get("outputs") == current and rec.get("params") == params_hash(params_json):
        return "own"
    return f"written by {rec.get('params', 'unknown params')}: {current}"


def stage_code(stage: str) -> dict[str, Path]:
    """The code a stage's outputs depend on, by dvc.yaml name: its dvc.yaml deps under stages/ and src/ (files and
    folders; tests/depgraph.py derives them from what its script imports, tests/test_dvc_deps.py checks them), so
    an edit counts for the stages `dvc repro` reruns, no more (report.py's, for report alone). A facegan installed
    without its repository (no dvc.yaml beside its src/): the whole package, for every stage."""
    path = REPO / "dvc.yaml"
    if not path.is_file():
        return {"src/facegan": PACKAGE}
    try:
        spec = dvc_stages(path)[stage]
        deps = [d for d in spec.get("do", spec)["deps"] if d.startswith(CODE)]
    except (ParamsError, KeyError, TypeError, AttributeError) as e:  # a merge conflict, a stage left out, ...
        why = f"no {e}" if isinstance(e, KeyError) else first_line(e, 120, with_type=True)
        raise StageError(f"{path}: cannot read the code deps of stage {stage!r} ({why}): {DEPS_AGAIN}") from None
    return {d: SRC / d.removeprefix("src/") if d.startswith("src/") else REPO / d for d in deps}


def code_hash(stage: str) -> str:
    """A hash of `stage_code(stage)`: each file's dvc.yaml name and contents (a folder's: its .py files, the code
    in it)."""
    h = hashlib.sha256()
    for name, dep in stage_code(stage).items():
        files = {name: dep}
        if dep.is_dir():
            files = {f"{name}/{f.relative_to(dep).as_posix()}": f for f in dep.rglob("*.py")}
        for file_name in sorted(files):
            h.update(f"{file_name}\0".encode())
            try:
                h.update(files[file_name].read_bytes())
            except OSError as e:  # renamed since `make deps`
                raise StageError(
                    f"{REPO / 'dvc.yaml'}: stage {stage!r} lists {file_name}, which cannot be read "
                    f"({e.strerror or e}): {DEPS_AGAIN}"
                ) from None
    return h.hexdigest()
