"""End to end: `dvc repro` of the real dvc.yaml on a small copy of the project."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_dvc_project
from conftest import sh as _sh

CHAIN = [
    "generate",
    "detect",
    "verify",
    "align",
    "matte",
    "upscale",
    "quality",
    "pack",
    "classifier",
    "refstats",
    "train",
    "evaluate",
    "report",
]
RUNS = (
    "import mlflow, json; c = mlflow.tracking.MlflowClient();"
    "e = c.get_experiment_by_name('facegan');"
    "rs = c.search_runs([e.experiment_id], '', max_results=5000);"
    "print(json.dumps([{'id': r.info.run_id, 'status': r.info.status, 'kind': r.data.tags.get('facegan.kind'),"
    "'stage': r.data.tags.get('stage'), 'dataset': r.data.tags.get('dataset'), 'variant': r.data.tags.get('variant'),"
    "'parent': r.data.tags.get('mlflow.parentRunId')} for r in rs]))"
)


def _runs(root: Path, env: dict) -> list[dict]:
    return json.loads(_sh([sys.executable, "-c", RUNS], root, env).strip().splitlines()[-1])


def _assert_one_parent_per_execution(runs: list[dict], chain: dict[str, list[str]]) -> None:
    """Per dataset, one FINISHED parent holding that dataset's `chain` stage runs; the transfer story (when
    it ran) one FINISHED parent of its own; no run left RUNNING."""
    assert not [r for r in runs if r["status"] != "FINISHED"], "runs not FINISHED"
    for dataset, stages in chain.items():
        parents = [r for r in runs if r["kind"] == "pipeline" and r["dataset"] == dataset]
        assert len(parents) == 1, (dataset, parents)
        kids = sorted(r["stage"] for r in runs if r["parent"] == parents[0]["id"])
        assert kids == sorted(stages), (dataset, kids)
        assert not [
            r
            for r in runs
            if r["kind"] == "stage"
            and r["dataset"] == dataset
            and not r["variant"]
            and r["stage"] in CHAIN
            and r["parent"] != parents[0]["id"]
        ], f"{dataset}: stage runs outside the parent"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """A git + DVC copy of the project with params shrunk to ~1 minute of work."""
    return make_dvc_project(tmp_path_factory.mktemp("e2e"))


@pytest.mark.slow  # with the shared fixture: minutes (CI runs it in `make test-slow`)
def test_repro_runs_the_chain_then_is_up_to_date_then_reruns_only_downstream(project):
    root, env = project
    out = _sh(["dvc", "repro"], root, env)
    for stage in (
        "generate@cartoon",
        "generate@sketch",
        "detect@cartoon",
        "align@cartoon",
        "matte@cartoon",
        "upscale@cartoon",
        "pack@cartoon",
        "train@cartoon",
        "refstats@cartoon",
        "evaluate@cartoon",
        "report@cartoon",
        "pack@sketch",
        "pretrain",
        "finetune@baseline-0",
        "finetune@freezed_ada-0",
        "finetune@scratch-0",
        "transfer-table",
        "cyclegan",
    ):
        assert f"Running stage '{stage}'" in out
    table = json.loads((root / "data/transfer/fid_table.json").read_text())
    assert set(table["rows"]) == {"baseline", "freezed_ada", "scratch"}
    assert all(r["final"]["dlib"]["mean"] > 0 and r["seeds"] == [0] for r in table["rows"].values())
    assert table["rows"]["freezed_ada"]["freeze_d"] == 1 and table["rows"]["freezed_ada"]["augment"] == "ada"
    assert not table["rows"]["scratch"]["pretrained"] and table["source_model"]["dlib"] > 0
    assert table["noise_floor"]["dlib"] > 0
    assert (root / "data/runs/sketch/baseline-s0/models/style_mixing.png").is_file()
    for name in ("fid_table.md", "curves.csv", "fid_vs_kimg.png", "overfitting.png"):
        assert (root / "data/transfer" / name).stat().st_size > 0, name
    # the README's loss-curve command (dvc.yaml has no top-level plots: see the next test)
    _sh(["dvc", "plots", "show", "data/models/cartoon/losses.csv", "-x", "step", "-y", "loss_d"], root, env)
    assert "loss_d" in (root / "dvc_plots" / "index.html").read_text()  # dvc_plots/ is git-ignored
    cyc = json.loads((root / "data/cyclegan/metrics.json").read_text())
    assert cyc["a_to_b"]["fd_dlib"] > 0 and cyc["b_to_a"]["fd_dlib"] > 0
    assert (root / "data/cyclegan/model/translated_b_to_a.png").is_file()

    metrics = json.loads((root / "data/reports/cartoon/metrics.json").read_text())
    assert metrics["extractors_ran"] == ["dlib"] and metrics["fd_dlib"] > 0
    assert (
        metrics["fd_inception"] is None
        and "pt_inception-2015-12-05-6726825d.pth" in metrics["extractors_unavailable"]["inception"]
    )
    assert metrics["training"]["steps"] == 6 and metrics["data"]["packed"] == 48
    pre = metrics["preprocessing"]  # the default chain's backends read the ground truth: no fake 1.0 scores
    assert pre["detect"]["backend"] == "annotations" and pre["detect"]["recall"] == "n/a (ground truth used)"
    assert pre["align"]["landmark_error_iod_pct"] == "n/a (ground truth used)" and pre["matte"]["backend"] == "grabcut"
    assert (root / "data/reports/cartoon/samples.png").stat().st_size > 1000
    assert (root / "data/models/cartoon/fid.csv").read_text().splitlines()[1:] and (
        root / "data/models/cartoon/best.pt"
    ).is_file()
    assert "fd_dlib" in _sh(["dvc", "metrics", "show", "--json"], root, env)

    # a clean clone stays clean but for dvc.lock (committed with the full-size data's hashes): every output is
    # git-ignored by the committed .gitignore files
    assert _sh(["git", "status", "--porcelain"], root, env).splitlines() == [" M dvc.lock"]
    # one execution = one FINISHED parent per dataset holding every stage run of that dataset (the dirty flag
    # flipped when dvc.lock was rewritten, splitting it in two), one for the transfer story, nothing RUNNING
    runs = _runs(root, env)
    _assert_one_parent_per_execution(runs, {"cartoon": CHAIN, "sketch": CHAIN})
    [story] = [r for r in runs if r["kind"] == "transfer"]
    assert sorted(f"{r['stage']}@{r['dataset']}/{r['variant']}" for r in runs if r["parent"] == story["id"]) == [
        "evaluate@cartoon/pretrain",
        "evaluate@sketch/baseline-s0",
        "evaluate@sketch/freezed_ada-s0",
        "evaluate@sketch/scratch-s0",
        "train@cartoon/pretrain",
        "train@sketch/baseline-s0",
        "train@sketch/freezed_ada-s0",
        "train@sketch/scratch-s0",
        "transfer-row@sketch/baseline",
        "transfer-row@sketch/freezed_ada",
        "transfer-row@sketch/scratch",
        "transfer-table@sketch/None",
    ]

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
    assert ran == [
        "evaluate@cartoon",
        "evaluate@sketch",
        "report@cartoon",
        "report@sketch",
        "train@cartoon",
        "train@sketch",
    ]
    assert json.loads((root / "data/reports/cartoon/metrics.json").read_text())["training"]["steps"] == 7
    again = [r for r in _runs(root, env) if r["id"] not in {old["id"] for old in runs}]  # this execution's runs
    _assert_one_parent_per_execution(
        again, {"cartoon": ["train", "evaluate", "report"], "sketch": ["train", "evaluate", "report"]}
    )


@pytest.mark.slow  # with the shared fixture: minutes (CI runs it in `make test-slow`)
def test_dvc_repro_is_tracked_as_parent_and_stage_runs(project):
    root, env = project
    code = (
        "import mlflow, json; c = mlflow.tracking.MlflowClient();"
        "e = c.get_experiment_by_name('facegan');"
        "ps = c.search_runs([e.experiment_id], \"tags.`facegan.kind` = 'pipeline'\", "
        "order_by=['attributes.start_time DESC']);"
        "r = ps[-1]; kids = c.search_runs([e.experiment_id], f\"tags.mlflow.parentRunId = '{r.info.run_id}'\");"
        "train = [k for k in kids if k.data.tags['stage'] == 'train'][0];"
        "print(json.dumps({'n': len(ps), 'status': r.info.status, 'params': r.data.params, 'metrics': r.data.metrics,"
        "'artifacts': [a.path for a in c.list_artifacts(r.info.run_id)], "
        "'stages': sorted(k.data.tags['stage'] for k in kids),"
        "'loss_points': len(c.get_metric_history(train.info.run_id, 'loss_d'))}))"
    )
    got = json.loads(_sh([sys.executable, "-c", code], root, env).strip().splitlines()[-1])
    assert got["n"] >= 1 and got["status"] == "FINISHED"
    assert got["params"]["train.steps"] == "6" and got["params"]["datasets.cartoon.source.n"] == "48"
    assert got["metrics"]["fd_dlib"] > 0
    assert {"samples.png", "metrics.json", "curves.png", "params.yaml"} <= set(got["artifacts"])
    assert got["stages"] == sorted(
        [
            "generate",
            "detect",
            "verify",
            "align",
            "matte",
            "upscale",
            "quality",
            "pack",
            "classifier",
            "refstats",
            "train",
            "evaluate",
            "report",
        ]
    )
    assert got["loss_points"] == 6


@pytest.mark.slow  # with the shared fixture: minutes (CI runs it in `make test-slow`)
def test_two_dataset_stages_are_runs_of_their_own(project):
    root, env = project
    code = (
        "import mlflow, json; c = mlflow.tracking.MlflowClient();"
        "e = c.get_experiment_by_name('facegan');"
        "rs = c.search_runs([e.experiment_id], \"tags.`facegan.kind` = 'stage'\", max_results=1000);"
        "print(json.dumps({r.data.tags['stage']: {'parent': r.data.tags.get('mlflow.parentRunId'), "
        "'status': r.info.status,"
        "'params': r.data.params, 'metrics': r.data.metrics} for r in rs "
        "if r.data.tags['stage'] in ('cyclegan', 'transfer-table')}))"
    )
    got = json.loads(_sh([sys.executable, "-c", code], root, env).strip().splitlines()[-1])
    assert set(got) == {"cyclegan", "transfer-table"}
    assert all(r["status"] == "FINISHED" for r in got.values())
    assert got["cyclegan"]["parent"] is None  # the transfer table is the last run of the transfer story's parent
    assert got["cyclegan"]["params"]["cyclegan.b"] == "sketch" and got["cyclegan"]["metrics"]["a_to_b.fd_dlib"] > 0
    assert got["transfer-table"]["parent"] is not None and got["transfer-table"]["metrics"]["baseline.fd_dlib"] > 0


def test_an_experiment_runs_and_is_saved_on_a_fresh_checkout(tmp_path):
    """`dvc exp run` of part of the pipeline (as `make transfer-study` is) on a checkout whose committed
    dvc.lock names outputs that were never built there: with a top-level plot inside such a directory output,
    DVC failed after the run ("failed to load directory ('data', 'models', 'cartoon')") and saved nothing."""
    root, env = make_dvc_project(tmp_path / "fresh", tracking=False)
    assert not (root / ".dvc" / "cache").exists()
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert any(o["path"] == "data/models/cartoon" for o in lock["train@cartoon"]["outs"])
    out = _sh(["dvc", "exp", "run", "-n", "fresh", "generate@sketch"], root, env)
    assert "Ran experiment(s): fresh" in out
    shown = json.loads(_sh(["dvc", "exp", "show", "--json"], root, env))
    names = [r.get("name") for rev in shown for exp in (rev.get("experiments") or []) for r in exp["revs"]]
    assert "fresh" in names, shown


@pytest.mark.slow
def test_dvc_exp_sweep_gives_one_metric_table(project):
    """The documented sweep (`make sweep`), shrunk: ACGAN over 2 losses x 2 D variants up to report@cartoon, then
    the pivot table."""
    root, env = project
    _sh(["dvc", "repro"], root, env)  # no-op when the first test ran
    _sh(["git", "add", "-A"], root, env)
    _sh(["git", "commit", "-qm", "baseline", "--allow-empty"], root, env)
    _sh(
        [
            "dvc",
            "exp",
            "run",
            "--queue",
            "-S",
            "train.model=acgan",
            "-S",
            "train.loss=nonsaturating,hinge",
            "-S",
            "train.d_variant=plain,projection",
            "report@cartoon",
        ],
        root,
        env,
    )
    _sh(["dvc", "exp", "run", "--run-all", "--jobs", "1"], root, env)
    out = _sh(
        [
            sys.executable,
            "-c",
            "from facegan.cli import main; main()",
            "exp-table",
            "--rows",
            "train.loss",
            "--cols",
            "train.d_variant",
            "--metric",
            "data/reports/cartoon/metrics.json:fd_dlib",  # each dataset's report has an fd_dlib
            "--out",
            "sweep.md",
        ],
        root,
        env,
    )
    lines = [ln for ln in (root / "sweep.md").read_text().splitlines() if ln.startswith("| ")]
    # the column used: prefixed with its file where DVC names it (several files have an fd_dlib)
    assert lines[0].endswith("fd_dlib (train.loss \\ train.d_variant) | plain | projection |")
    assert [ln.split(" | ")[0] for ln in lines[1:]] == ["| hinge", "| nonsaturating"]
    cells = [c for ln in lines[1:] for c in ln.strip("| ").split(" | ")[1:]]
    assert len(cells) == 4 and all(float(c) > 0 for c in cells), out
