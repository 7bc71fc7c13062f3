"""dvc.yaml's code deps are complete: every facegan module a stage can run (read from the source by
tests/depgraph.py) is covered by that stage's deps, so `dvc repro` reruns a stage whenever its code changes."""

from __future__ import annotations

import shutil

import depgraph
from conftest import ROOT


def test_every_stage_depends_on_every_module_it_runs():
    missing = {name: depgraph.uncovered(st) for name, st in depgraph.dvc_stages().items()}
    assert {k: v for k, v in missing.items() if v} == {}, "run `make deps` (python tests/depgraph.py --write)"


def test_stages_reach_what_they_run_and_not_the_rest():
    detect = depgraph.stage_modules(ROOT / "stages" / "detect.py")
    assert {
        "facegan.io",
        "facegan.manifest",
        "facegan.parallel",
        "facegan.preprocess.common",
        "facegan.preprocess.detect",
        "facegan.preprocess.models",
        "facegan.chain",
        "facegan.config",
    } <= detect
    assert not {m for m in detect if m.startswith(("facegan.train", "facegan.evaluate", "facegan.data.pack"))}
    assert "facegan.models.dcgan" not in detect  # config reads the model table, not the nets
    train = depgraph.stage_modules(ROOT / "stages" / "train.py")
    assert {
        "facegan.data.packed",
        "facegan.train.gan",
        "facegan.train.objective",
        "facegan.losses",
        "facegan.models.stylegan2",
        "facegan.sample",
        "facegan.sample_style",
        "facegan.augment.ada",
        "facegan.evaluate.run",
        "facegan.config",
        "facegan.chain",
    } <= train
    assert "facegan.preprocess.detect" not in train and "facegan.train.cyclegan" not in train
    table = depgraph.stage_modules(ROOT / "stages" / "transfer_table.py")
    assert "facegan.transfer" in table and "facegan.train.gan" not in table  # the table trains nothing
    for stage in ("generate", "detect", "train", "report"):
        assert not set(depgraph.EXEMPT) & depgraph.stage_modules(ROOT / "stages" / f"{stage}.py")


def test_a_missing_dep_is_reported(tmp_path):
    """Today's detect without io.py, manifest.py, parallel.py and preprocess/common.py: each is named."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    text = (tmp_path / "dvc.yaml").read_text()
    for f in ("io.py", "manifest.py", "parallel.py", "preprocess/common.py"):
        text = text.replace(f"        - src/facegan/{f}\n", "", 1)  # the first stage listing it: generate or detect
    (tmp_path / "dvc.yaml").write_text(text)
    stages = depgraph.dvc_stages(tmp_path)
    missing = depgraph.uncovered(stages["generate"]) + depgraph.uncovered(stages["detect"])
    assert {
        "src/facegan/io.py",
        "src/facegan/parallel.py",
        "src/facegan/manifest.py",
        "src/facegan/preprocess/common.py",
    } <= set(missing)


def test_bytecode_in_a_folder_dep_leaves_its_stages_up_to_date():
    """src/facegan/ops is a folder dep of train and evaluate. Python's __pycache__ in it (after any run that imports
    facegan.ops, `make test` included) counted as a change of the code: `dvc status` listed it as modified for 12
    stages, and `dvc repro` would train again. DVC ignores bytecode; the sources still count."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        ignored = repo.dvcignore.is_ignored
        assert ignored(repo.fs, str(ROOT / "src/facegan/ops/__pycache__/conv.cpython-311.pyc"))
        assert ignored(repo.fs, str(ROOT / "src/facegan/ops/conv.cpython-311.pyc"))
        assert not ignored(repo.fs, str(ROOT / "src/facegan/ops/conv.py"))
