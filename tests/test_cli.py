"""The CLI: one subcommand per stage, fast help (no heavy imports at start-up)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

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
    heavy = "('torch', 'cv2', 'mlflow', 'dvc', 'dlib', 'scipy', 'numpy', 'PIL')"
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


def test_a_stage_run_for_another_root_tracks_into_that_root_s_store(tmp_path):
    """A stage command given --root from another folder wrote its MLflow run into the current folder's mlflow.db
    (the default store is relative), while `dvc repro` in that root writes the root's: the runs of one project in
    two stores, and `summary --root` read only one."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    r = _cli("cyclegan", "-p", str(ROOT / "params.yaml"), "--root", str(project), cwd=elsewhere)
    assert r.returncode == 2 and "dataset 'cartoon' is not packed yet" in r.stderr
    assert (project / "mlflow.db").is_file() and not (elsewhere / "mlflow.db").exists()


def test_transfer_and_dataset_commands_give_clear_errors(tmp_path):
    params = str(ROOT / "params.yaml")
    r = _cli("transfer", "warmup", "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "unknown step 'warmup'; steps: pretrain, finetune, table, all" in r.stderr
    r = _cli("transfer", "finetune", "ada", "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "no pretrained model" in r.stderr
    for args, said in (  # a row or seed that chooses nothing, or none of the study's, refused before any work
        (["pretrain", "ada"], "`transfer pretrain` takes no ROW or --seed"),
        (["table", "--seed", "0"], "`transfer table` takes no ROW or --seed"),
        (["all", "ada"], "`transfer all` takes no ROW or --seed"),  # its table needs every run
        (["finetune", "nope"], "unknown transfer row 'nope'; rows: baseline,"),
        (["finetune", "--seed", "99"], "seed 99 is not in transfer.seeds"),
        (["finetune", "pretrain"], "'pretrain' is the source run, not a row"),
    ):
        r = _cli("transfer", *args, "-p", params, "--root", str(tmp_path), cwd=tmp_path)
        assert r.returncode == 2 and said in r.stderr, (args, r.stderr)
        assert not (tmp_path / "data").exists(), args
    r = _cli("cyclegan", "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "dataset 'cartoon' is not packed yet" in r.stderr
    assert (tmp_path / "mlflow.db").is_file()  # the failed stage's run, in the working directory's store
    r = _cli("dataset", "show", "nope", "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "unknown dataset 'nope'" in r.stderr
    r = _cli("dataset", "add", "cartoon", str(tmp_path), "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = _cli("dataset", "list", "-p", params, "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0 and "cartoon" in r.stdout and "sketch" in r.stdout
    for command in (["dataset", "list"], ["summary"], ["track", "sync"]):  # a typo'd root read as an empty project
        r = _cli(*command, "-p", params, "--root", str(tmp_path / "nope"), cwd=tmp_path)
        assert r.returncode == 2 and "does not exist" in r.stderr, (command, r.stderr)


def test_a_command_given_another_root_reads_that_root_s_params_yaml(tmp_path):
    """Without -p, a command with --root read ./params.yaml: from another project's folder, `dataset list --root X`
    listed the wrong project's datasets, and `dataset remove NAME --root X` took the block out of the current
    folder's params.yaml and the folders out of X. The root's params.yaml comes first now, then ./params.yaml."""
    project, here = tmp_path / "project", tmp_path / "here"
    project.mkdir()
    here.mkdir()

    def add_photos(raw):
        raw["datasets"]["photos"] = {**raw["datasets"]["cartoon"], "source": {"kind": "folder"}}

    _params_with(project, add_photos)
    mine = _params_with(here, lambda raw: None)
    before = mine.read_text()
    r = _cli("dataset", "list", "--root", str(project), cwd=here)
    assert r.returncode == 0 and "photos" in r.stdout, r.stderr
    (project / "data/raw/photos/images").mkdir(parents=True)
    r = _cli("dataset", "remove", "photos", "-y", "--root", str(project), cwd=here)
    assert r.returncode == 0 and f"removed {project / 'params.yaml'}: datasets.photos" in r.stdout, r.stderr
    assert "photos" not in (project / "params.yaml").read_text() and mine.read_text() == before
    assert not (project / "data/raw/photos").exists()
    r = _cli("dataset", "list", "--root", str(project), cwd=here)
    assert r.returncode == 0 and "photos" not in r.stdout and "cartoon" in r.stdout
    (project / "params.yaml").unlink()  # then ./params.yaml, as before
    r = _cli("dataset", "list", "--root", str(project), cwd=here)
    assert r.returncode == 0 and "cartoon" in r.stdout
    mine.unlink()
    r = _cli("summary", "--root", str(project), cwd=here)
    assert r.returncode == 2
    assert f"params file not found: {project / 'params.yaml'} nor {here / 'params.yaml'}; give one with -p" in (
        " ".join(r.stderr.split())
    )
    (project / ".dvc").mkdir()  # a DVC project's params with another folder's data: refused, nothing removed
    theirs = _params_with(project, add_photos).read_text()
    (here / "data/raw/photos").mkdir(parents=True)
    r = _cli("dataset", "remove", "photos", "-y", "-p", str(project / "params.yaml"), cwd=here)
    assert r.returncode == 2 and f"is the DVC project {project}'s, but the folders to remove are under" in (
        " ".join(r.stderr.split())
    )
    assert (project / "params.yaml").read_text() == theirs and (here / "data/raw/photos").is_dir()


def _params_with(tmp_path: Path, change) -> Path:
    """params.yaml (studies off, tracking off) changed by `change(raw)`, written in `tmp_path`."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["transfer"]["enabled"] = raw["cyclegan"]["enabled"] = raw["tracking"]["enabled"] = False
    change(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path / "params.yaml"


def test_transfer_table_and_cyclegan_refuse_a_study_that_is_off_and_keep_its_results(tmp_path):
    """`facegan transfer table` with transfer.enabled false wrote the DVC stage's "study off" outputs over the
    study's table, curves and plots, with exit 0; the other steps refused, naming params.yaml whatever -p was."""
    off = _params_with(tmp_path, lambda raw: None)  # both studies off
    other = off.rename(tmp_path / "off.yaml")
    table = tmp_path / "data" / "transfer" / "fid_table.json"
    table.parent.mkdir(parents=True)
    table.write_text('{"rows": {"baseline": {}}}')
    for step in ("table", "pretrain", "all"):
        r = _cli("transfer", step, "-p", str(other), "--root", str(tmp_path), cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert f"transfer.enabled is false in {other}: the study is off, nothing to run" in " ".join(r.stderr.split())
    assert table.read_text() == '{"rows": {"baseline": {}}}' and len(list(table.parent.iterdir())) == 1
    r = _cli("cyclegan", "-p", str(other), "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and f"cyclegan.enabled is false in {other}: the CycleGAN is off" in " ".join(
        r.stderr.split()
    )


def test_report_with_tracking_off_says_there_is_no_table_not_to_run_dvc_repro(tmp_path, monkeypatch):
    """With tracking.enabled false, `facegan report` said "no MLflow store at mlflow.db: run `dvc repro` first",
    which records nothing either, and exited 2 after the report stage had done its work."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # `make test` names the checkout's store
    params = _params_with(tmp_path, lambda raw: None)  # tracking off
    r = _cli("report", "-p", str(params), cwd=tmp_path)
    assert r.returncode == 1 and "no MLflow store" not in r.stderr
    assert f"no FID comparison table: tracking.enabled is false in {params}, and no runs were recorded" in " ".join(
        r.stderr.split()
    )
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "reports").exists()
    from facegan.config import TrackingConfig
    from facegan.track import experiment_id

    experiment_id(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))  # runs recorded before: read
    r = _cli("report", "-p", str(params), cwd=tmp_path)
    assert r.returncode == 1 and "no finished runs found in MLflow" in r.stderr and "tracking.enabled" not in r.stderr


def test_chain_of_an_imported_dataset_starts_at_detect(tmp_path):
    """`facegan dataset add` says `facegan chain NAME`: a folder dataset has nothing to generate (the chain
    stopped there with "only 'cartoon' datasets are generated"); it says so and goes on to detect."""

    def add_photos(raw):
        raw["datasets"]["photos"] = {**raw["datasets"]["cartoon"], "source": {"kind": "folder"}}

    params = _params_with(tmp_path, add_photos)
    (tmp_path / "data/raw/photos/images").mkdir(parents=True)
    Image.new("RGB", (64, 64), "white").save(tmp_path / "data/raw/photos/images/blank.png")  # no annotations
    r = _cli("chain", "photos", "-p", str(params), "--root", str(tmp_path), cwd=tmp_path)
    assert "only 'cartoon' datasets are generated" not in r.stderr
    assert "photos: its images are imported (data/raw/photos), not generated: skipping generate" in r.stderr
    assert "stage detect: dataset photos" in r.stderr  # the chain went on to detect
    r = _cli("generate", "photos", "-p", str(params), "--root", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "only 'cartoon' datasets are generated" in r.stderr  # asked for by name


def test_check_refuses_datasets_dvc_yaml_cannot_build(tmp_path):
    """dvc.yaml's generate iterates over a fixed list: a third cartoon dataset, or one of the list removed, passed
    `facegan check` and broke `dvc repro`."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")

    def third(raw):
        raw["datasets"]["pencil"] = raw["datasets"]["sketch"]

    r = _cli("check", "-p", str(_params_with(tmp_path, third)), cwd=tmp_path)
    assert r.returncode == 2 and "`dvc repro` cannot run it" in r.stderr
    assert (
        "cartoon dataset pencil: dvc.yaml's generate stage (foreach: ['cartoon', 'sketch']) does not draw it"
        in r.stderr
    )
    r = _cli("check", "-p", str(_params_with(tmp_path, lambda raw: raw["datasets"].pop("sketch"))), cwd=tmp_path)
    assert r.returncode == 2 and "runs for sketch, not a cartoon dataset of the params" in r.stderr

    def photos(raw):
        raw["datasets"]["photos"] = {**raw["datasets"]["cartoon"], "source": {"kind": "folder"}}

    r = _cli("check", "-p", str(_params_with(tmp_path, photos)), cwd=tmp_path)
    assert r.returncode == 2 and "dataset photos: no data/raw/photos.dvc" in r.stderr
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/photos.dvc").write_text("outs:\n- path: photos\n")  # what `facegan dataset add` writes
    r = _cli("check", "-p", str(tmp_path / "params.yaml"), cwd=tmp_path)
    assert r.returncode == 0 and "datasets: cartoon, sketch, photos" in r.stdout, r.stderr
    (tmp_path / "dvc.yaml").write_text("stages:\n  generate:\n    foreach: [1, cartoon, sketch]\n")
    r = _cli("check", "-p", str(tmp_path / "params.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "runs for 1, not a cartoon dataset of the params" in r.stderr, r.stderr
    no_generate = "cartoon dataset cartoon, sketch: dvc.yaml has no generate stage over a list of datasets"
    for text in ("", "stages: {}\n", "stages:\n  generate:\n    cmd: echo\n", "stages: [generate]\n"):
        (tmp_path / "dvc.yaml").write_text(text)  # empty, emptied, edited, not DVC's shape: none draws cartoon
        r = _cli("check", "-p", str(tmp_path / "params.yaml"), cwd=tmp_path)
        assert r.returncode == 2 and no_generate in r.stderr and "Traceback" not in r.stderr, (text, r.stderr)

    def only_photos(raw):
        raw["datasets"] = {"photos": {**raw["datasets"]["cartoon"], "source": {"kind": "folder"}}}

    r = _cli("check", "-p", str(_params_with(tmp_path, only_photos)), cwd=tmp_path)  # nothing to draw: no need
    assert r.returncode == 0 and "datasets: photos" in r.stdout, r.stderr
    _params_with(tmp_path, lambda raw: None)
    for foreach in ("{cartoon: {n: 1}, sketch: {n: 2}}", "${generated}"):  # DVC's other forms: a mapping, a variable
        (tmp_path / "dvc.yaml").write_text(f"stages:\n  generate:\n    foreach: {foreach}\n    do: {{cmd: echo}}\n")
        r = _cli("check", "-p", str(tmp_path / "params.yaml"), cwd=tmp_path)
        assert r.returncode == 0 and "datasets: cartoon, sketch" in r.stdout, (foreach, r.stderr)
    (tmp_path / "dvc.yaml").write_text("stages:\n  generate:\n    foreach: {cartoon: {n: 1}}\n    do: {cmd: echo}\n")
    r = _cli("check", "-p", str(tmp_path / "params.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "cartoon dataset sketch: dvc.yaml's generate stage (foreach: ['cartoon'])" in r.stderr
    (tmp_path / "dvc.yaml").write_text("stages:\n  generate:\n    foreach: [cartoon, sketch\n")  # an edit that broke it
    r = _cli("check", "-p", str(tmp_path / "params.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (
        f"error: {tmp_path / 'dvc.yaml'}: not valid YAML at line 4, column 1: expected ',' or ']', but got "
        "'<stream end>' (while parsing a flow sequence that began at line 3, column 14)"
    )


def test_reproduce_names_what_it_did_not_compare_and_fails_when_nothing_was(tmp_path, monkeypatch):
    """A recorded metric that comes back None (its extractor unavailable here) is listed, not silently dropped;
    with nothing compared the command fails (it said "reproduced: every metric within 1e-06", exit 0)."""
    from typer.testing import CliRunner

    from facegan import reproduce
    from facegan.cli import app

    monkeypatch.chdir(tmp_path)
    runs = {
        "all": {"fd_dlib": (1.5, 1.5), "kid_dlib": (0.01, 0.01)},
        "some": {"fd_dlib": (1.5, 1.5), "fd_inception": (20.0, None), "kid_inception": (0.1, None)},
        "none": {"fd_inception": (20.0, None)},
        "empty": {},
        "off": {"fd_dlib": (1.5, 1.6), "fd_inception": (20.0, None)},
    }
    monkeypatch.setattr(reproduce, "reproduce", lambda run_id, *a: runs[run_id])

    def run(run_id: str):
        return CliRunner().invoke(app, ["reproduce", run_id])

    r = run("all")
    assert r.exit_code == 0 and "reproduced: every metric within 1e-06" in r.stdout
    r = run("some")
    assert r.exit_code == 0
    assert "reproduced: the metrics compared (fd_dlib) within 1e-06" in r.stdout
    assert "NOT compared (not measured here): fd_inception, kid_inception" in r.stdout
    assert "fd_inception     recorded 20.00000000  not measured here" in r.stdout
    r = run("none")
    assert r.exit_code == 1
    assert "NOT reproduced: nothing compared: none of the run's recorded metrics (fd_inception)" in r.stderr
    r = run("empty")
    assert r.exit_code == 1 and "the run recorded no fd_*/kid_* metric" in r.stderr
    r = run("off")
    assert r.exit_code == 1 and "NOT reproduced: fd_dlib by 1.00e-01 (> 1e-06); NOT compared" in r.stderr
    # a tolerance no comparison can use, an --out that is a file: refused before the retrain
    monkeypatch.setattr(reproduce, "reproduce", lambda *a: pytest.fail("retrained with a bad option"))
    (tmp_path / "taken.txt").write_text("a file")
    for args, said in (
        (["--tolerance", "nan"], "Invalid value for '--tolerance'"),
        (["--tolerance", "inf"], "inf: give a finite number"),
        (["--tolerance", "-1"], "greater than or equal to 0"),
        (["--out", "taken.txt"], "is a file"),
    ):
        r = CliRunner().invoke(app, ["reproduce", "all", *args])
        assert r.exit_code == 2 and said in " ".join(r.output.split()), r.output
