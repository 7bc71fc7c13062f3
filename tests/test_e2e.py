"""End to end: `dvc repro` of the real dvc.yaml on a small copy of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT


def _sh(cmd: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """A git + DVC copy of the project with params shrunk to ~1 minute of work."""
    root = tmp_path_factory.mktemp("e2e")
    for name in ("dvc.yaml", "stages", "src", ".dvcignore"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / name)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    ds = p["datasets"]["cartoon"]
    ds["source"].update(n=48, size=128)
    ds["align"]["size"] = ds["upscale"]["size"] = 64
    ds["pack"]["resolution"] = 32
    p["train"].update(steps=6, batch_size=16, checkpoint_every=3, sample_every=3, g_channels=8, d_channels=8,
                      fid_every=3, fid_samples=16)
    p["evaluate"].update(num_samples=24, max_real=48)
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    bin_dir = str(Path(sys.executable).parent)  # stage commands run `python` and `dvc` from this venv
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "TORCH_HOME": str(root / "torch"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    _sh(["git", "init", "-q"], root, env)
    _sh(["dvc", "init", "-q"], root, env)
    _sh(["dvc", "config", "core.analytics", "false"], root, env)
    _sh(["git", "add", "-A"], root, env)
    _sh(["git", "commit", "-qm", "init"], root, env)
    return root, env


def test_repro_runs_the_chain_then_is_up_to_date_then_reruns_only_downstream(project):
    root, env = project
    out = _sh(["dvc", "repro"], root, env)
    for stage in ("generate", "detect@cartoon", "align@cartoon", "matte@cartoon", "upscale@cartoon",
                  "pack@cartoon", "train@cartoon", "refstats@cartoon", "evaluate@cartoon", "report@cartoon"):
        assert f"Running stage '{stage}'" in out

    metrics = json.loads((root / "data/reports/cartoon/metrics.json").read_text())
    assert metrics["extractors_ran"] == ["dlib"] and metrics["fd_dlib"] > 0
    assert metrics["fd_inception"] is None and "pt_inception-2015-12-05-6726825d.pth" in metrics["extractors_unavailable"]["inception"]
    assert metrics["training"]["steps"] == 6 and metrics["data"]["packed"] == 48
    assert (root / "data/reports/cartoon/samples.png").stat().st_size > 1000
    assert (root / "data/models/cartoon/fid.csv").read_text().splitlines()[1:] and (root / "data/models/cartoon/best.pt").is_file()
    assert "fd_dlib" in _sh(["dvc", "metrics", "show", "--json"], root, env)

    # nothing changed: nothing runs
    again = _sh(["dvc", "repro"], root, env)
    assert "Running stage" not in again
    assert "up to date" in _sh(["dvc", "status"], root, env)

    # one training param changed: only train and what depends on it
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["train"]["steps"] = 7
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    rerun = _sh(["dvc", "repro"], root, env)
    ran = sorted(line.split("'")[1] for line in rerun.splitlines() if line.startswith("Running stage"))
    assert ran == ["evaluate@cartoon", "report@cartoon", "train@cartoon"]
    assert json.loads((root / "data/reports/cartoon/metrics.json").read_text())["training"]["steps"] == 7


def test_dvc_repro_is_tracked_as_parent_and_stage_runs(project):
    root, env = project
    code = (
        "import mlflow, json; c = mlflow.tracking.MlflowClient();"
        "e = c.get_experiment_by_name('facegan');"
        "ps = c.search_runs([e.experiment_id], \"tags.`facegan.kind` = 'pipeline'\", order_by=['attributes.start_time DESC']);"
        "r = ps[-1]; kids = c.search_runs([e.experiment_id], f\"tags.mlflow.parentRunId = '{r.info.run_id}'\");"
        "train = [k for k in kids if k.data.tags['stage'] == 'train'][0];"
        "print(json.dumps({'n': len(ps), 'status': r.info.status, 'params': r.data.params, 'metrics': r.data.metrics,"
        "'artifacts': [a.path for a in c.list_artifacts(r.info.run_id)], 'stages': sorted(k.data.tags['stage'] for k in kids),"
        "'loss_points': len(c.get_metric_history(train.info.run_id, 'loss_d'))}))"
    )
    got = json.loads(_sh([sys.executable, "-c", code], root, env).strip().splitlines()[-1])
    assert got["n"] >= 1 and got["status"] == "FINISHED"
    assert got["params"]["train.steps"] == "6" and got["params"]["datasets.cartoon.source.n"] == "48"
    assert got["metrics"]["fd_dlib"] > 0
    assert {"samples.png", "metrics.json", "curves.png", "params.yaml"} <= set(got["artifacts"])
    assert got["stages"] == sorted(["generate", "detect", "align", "matte", "upscale", "pack", "classifier", "refstats",
                                    "train", "evaluate", "report"])
    assert got["loss_points"] == 6


def test_dvc_exp_sweep_gives_one_metric_table(project):
    """The documented sweep, shrunk: ACGAN over 2 losses x 2 D variants, then the pivot table."""
    root, env = project
    _sh(["dvc", "repro"], root, env)  # no-op when the first test ran
    _sh(["git", "add", "-A"], root, env)
    _sh(["git", "commit", "-qm", "baseline", "--allow-empty"], root, env)
    _sh(["dvc", "exp", "run", "--queue", "-S", "train.model=acgan", "-S", "train.loss=nonsaturating,hinge",
         "-S", "train.d_variant=plain,projection"], root, env)
    _sh(["dvc", "exp", "run", "--run-all", "--jobs", "1"], root, env)
    out = _sh([sys.executable, "-c", "from facegan.cli import main; main()", "exp-table", "--rows", "train.loss",
               "--cols", "train.d_variant", "--metric", "fd_dlib", "--out", "sweep.md"], root, env)
    lines = [ln for ln in (root / "sweep.md").read_text().splitlines() if ln.startswith("| ")]
    assert lines[0] == "| fd_dlib (train.loss \\ train.d_variant) | plain | projection |"
    assert [ln.split(" | ")[0] for ln in lines[1:]] == ["| hinge", "| nonsaturating"]
    cells = [c for ln in lines[1:] for c in ln.strip("| ").split(" | ")[1:]]
    assert len(cells) == 4 and all(float(c) > 0 for c in cells), out
