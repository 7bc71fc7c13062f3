"""Shared DVC storage: a local-directory remote stands in for S3-compatible storage (the same `dvc push/pull`),
and a bare git repository for the shared git server. What one clone computed, another pulls and does not
recompute; an experiment run in one clone travels to the other with `dvc exp push/pull`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import make_dvc_project, sh

PREPROCESS = ("generate", "detect", "verify", "align", "matte", "upscale", "quality")


def preprocessing_only(root: Path, env: dict) -> None:
    """The project's dvc.yaml cut to the preprocessing chain of the small `sketch` set (16 images): a whole
    pipeline in seconds, so `dvc pull`, `dvc repro` and `dvc exp apply` act on every stage."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    stages = {name: spec["stages"][name] for name in PREPROCESS}
    for stage in stages.values():
        stage["foreach"] = ["sketch"] if isinstance(stage["foreach"], list) else {"sketch": "sketch"}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    sh(["git", "commit", "-qam", "preprocessing of sketch only"], root, env)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # ~2 min on shared cores: 7 stage processes, twice, plus clones
def test_push_pull_to_a_fresh_clone_is_up_to_date_and_experiments_travel(tmp_path):
    (tmp_path / "a").mkdir()
    a, env = make_dvc_project(tmp_path / "a", tracking=False)
    preprocessing_only(a, env)
    storage, origin, b = tmp_path / "storage", tmp_path / "origin.git", tmp_path / "b"
    sh(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path, env)
    sh(["dvc", "remote", "add", "-d", "shared", str(storage)], a, env)  # S3: dvc remote add -d shared s3://bucket/path
    sh(["dvc", "repro"], a, env)
    sh(["git", "add", "-A"], a, env)
    sh(["git", "commit", "-qm", "quality of the sketch set"], a, env)
    sh(["git", "remote", "add", "origin", str(origin)], a, env)
    sh(["git", "push", "-q", "origin", "HEAD:main"], a, env)
    assert "pushed" in sh(["dvc", "push"], a, env)

    sh(["git", "clone", "-q", "-b", "main", str(origin), str(b)], tmp_path, env)
    sh(["dvc", "pull"], b, env)
    out = sh(["dvc", "repro"], b, env)
    assert "Running stage" not in out and "up to date" in out, out
    assert "up to date" in sh(["dvc", "status"], b, env)
    quality = Path("data/interim/sketch/quality")
    assert tree(b / quality) == tree(a / quality) and (b / quality / "manifest.jsonl").is_file()

    sh(["dvc", "exp", "run", "-n", "sharper", "-S", "datasets.sketch.quality.min_sharpness=40"], a, env)
    sh(["dvc", "exp", "push", "origin", "sharper"], a, env)
    assert "sharper" in sh(["dvc", "exp", "list", "origin"], b, env)
    sh(["dvc", "exp", "pull", "origin", "sharper"], b, env)
    sh(["dvc", "exp", "apply", "sharper"], b, env)
    assert "min_sharpness: 40" in (b / "params.yaml").read_text()
    out = sh(["dvc", "repro"], b, env)
    assert "Running stage" not in out, out  # the experiment's outputs came with it
    assert tree(b / quality) == tree(a / quality)
