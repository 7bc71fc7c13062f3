"""The CLI: one subcommand per stage, fast help (no heavy imports at start-up)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT
from facegan.chain import STAGES


def test_help_lists_every_stage():
    r = subprocess.run(
        [sys.executable, "-c", "from facegan.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert r.returncode == 0, r.stderr
    for name in STAGES:
        assert name in r.stdout


def test_importing_cli_does_not_import_heavy_libraries():
    heavy = "('torch', 'cv2', 'mlflow', 'dvc', 'dlib', 'scipy')"
    code = f"import sys, facegan.cli; print(','.join(m for m in {heavy} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""


def test_check_command_reports_errors(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"]["cartoon"]["align"]["size"] = 4
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump(raw))
    r = subprocess.run(
        [sys.executable, "-c", "from facegan.cli import main; main()", "check", "-p", str(bad)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "datasets.cartoon.align.size: got 4" in r.stderr
    ok = subprocess.run(
        [sys.executable, "-c", "from facegan.cli import main; main()", "check", "-p", str(ROOT / "params.yaml")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "datasets: cartoon" in ok.stdout


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in `cwd`: a stage that fails is tracked as a FAILED run, in params.yaml's store, sqlite:///mlflow.db
    relative to the working directory (run from the project's folder, the test wrote into its mlflow.db)."""
    return subprocess.run(
        [sys.executable, "-c", "from facegan.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"COLUMNS": "200", "PATH": ""},
    )


def test_transfer_and_dataset_commands_give_clear_errors(tmp_path):
    params = str(ROOT / "params.yaml")
    r = _cli("transfer", "warmup", "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "unknown step 'warmup'; steps: pretrain, finetune, table, all" in r.stderr
    r = _cli("transfer", "finetune", "ada", "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "no pretrained model" in r.stderr
    r = _cli("cyclegan", "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "dataset 'cartoon' is not packed yet" in r.stderr
    assert (tmp_path / "mlflow.db").is_file()  # the failed stage's run, in the working directory's store
    r = _cli("dataset", "show", "nope", "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "unknown dataset 'nope'" in r.stderr
    r = _cli("dataset", "add", "cartoon", str(tmp_path), "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = _cli("dataset", "list", "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0 and "cartoon" in r.stdout and "sketch" in r.stdout
