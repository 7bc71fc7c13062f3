"""`facegan timings` and `facegan summary` against a real MLflow sqlite store written here: the latest execution's
stage runs (pipelines, transfer story, CycleGAN), logged back onto the parents; `report` over every kind of run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT
from facegan.config import TrackingConfig, load_params

T0 = 1_700_000_000_000
MIN = 60_000


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """An sqlite store holding two executions of cartoon (the newest wins), one of sketch, a RUNNING cartoon parent
    (ignored), the transfer story and the CycleGAN run. Returns the uri and the ids of the runs that count."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("facegan", artifact_location=(tmp / "artifacts").as_uri())
    t = [T0]

    def make(tags: dict, minutes: float, parent: str | None = None, metrics=None, params=None, finish=True) -> str:
        tags = {**tags, **({"mlflow.parentRunId": parent} if parent else {})}
        r = c.create_run(exp, start_time=t[0], tags=tags).info.run_id
        for k, v in (metrics or {}).items():
            c.log_metric(r, k, v)
        for k, v in (params or {}).items():
            c.log_param(r, k, v)
        if finish:
            c.set_terminated(r, "FINISHED", end_time=t[0] + int(minutes * MIN))
        t[0] += int(minutes * MIN) + 1000
        return r

    def pipeline(dataset: str, train_minutes: float, fd: float, finish: bool = True) -> str:
        tags = {"facegan.kind": "pipeline", "dataset": dataset, "model": "dcgan", "loss": "nonsaturating"}
        p = make(tags, 0, metrics={"fd_dlib": fd, "training.steps": 400}, finish=False)
        for stage, minutes in (("detect", 1), ("train", train_minutes), ("evaluate", 0.5), ("report", 0.25)):
            make({"facegan.kind": "stage", "stage": stage, "dataset": dataset}, minutes, p)
        if finish:
            c.set_terminated(p, "FINISHED", end_time=t[0])
        return p

    pipeline("cartoon", 20, 50.0)  # an older execution
    ids = {"cartoon": pipeline("cartoon", 10, 40.0), "sketch": pipeline("sketch", 4, 70.0)}
    pipeline("cartoon", 1, 1.0, finish=False)  # still running: not the latest finished
    story = make({"facegan.kind": "transfer", "source": "cartoon", "target": "sketch"}, 0, finish=False)
    for variant, stage, dataset, minutes, fd in (
        ("pretrain", "train", "cartoon", 15, None),
        ("baseline", "train", "sketch", 3, None),
        ("baseline", "evaluate", "sketch", 1, 60.0),
    ):
        make(
            {"facegan.kind": "stage", "stage": stage, "dataset": dataset, "variant": variant},
            minutes,
            story,
            {"fd_dlib": fd} if fd else None,
        )
    make({"facegan.kind": "stage", "stage": "transfer-table", "dataset": "sketch"}, 0.1, story)
    make({"facegan.kind": "row", "stage": "transfer-row", "variant": "baseline"}, 0.05, story)  # inside the table's
    c.log_param(story, "transfer.finetune.steps", "150")
    c.set_terminated(story, "FINISHED", end_time=t[0])
    ids["transfer"] = story
    ids["cyclegan"] = make(
        {"facegan.kind": "stage", "stage": "cyclegan", "dataset": "cartoon", "a": "cartoon", "b": "sketch"},
        8,
        metrics={"a_to_b.fd_dlib": 90.0, "b_to_a.fd_dlib": 45.0},
        params={"cyclegan.steps": "400", "cyclegan.loss": "lsgan"},
    )
    return {"uri": uri, "ids": ids}


@pytest.fixture
def at_store(store, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.chdir(tmp_path)
    return store


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from facegan.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_timings_of_the_latest_execution(at_store):
    from facegan import timings

    found = timings.collect(TrackingConfig())
    got = {t.stage: round(t.seconds) for e in found for t in e.timings}
    assert got == {
        "detect@cartoon": 60,
        "train@cartoon": 600,  # the newest finished execution, not the older 20 minutes nor the running one
        "evaluate@cartoon": 30,
        "report@cartoon": 15,
        "detect@sketch": 60,
        "train@sketch": 240,
        "evaluate@sketch": 30,
        "report@sketch": 15,
        "pretrain": 900,
        "finetune@baseline": 240,  # train + evaluate
        "transfer-table": 6,
        "cyclegan": 480,
    }
    assert {e.run_id for e in found} == set(at_store["ids"].values())
    text = timings.render(found)
    lines = text.splitlines()
    assert lines[1].startswith("pretrain") and lines[2].startswith("train@cartoon")  # longest first
    assert lines[-1].split()[:3] == ["total", "44m", "36s"] and lines[-1].endswith("100%")
    assert "33.6%" in lines[1]  # 900 s of 2676 s
    short = timings.render(found, top=3).splitlines()
    assert len(short) == 1 + 3 + 1 + 1 and short[4].startswith("(9 more stages)")


def test_timings_command_logs_onto_each_parent(at_store, capsys, tmp_path):
    from mlflow.tracking import MlflowClient

    code, out, err = _cli(capsys, "timings", "--log")
    assert code == 0, err
    assert "train@cartoon" in out and "total" in out and "logged timings.md" in out and "on 4 MLflow run(s)" in out
    c = MlflowClient(at_store["uri"])
    ids = at_store["ids"]
    cartoon = c.get_run(ids["cartoon"]).data.metrics
    assert cartoon["time.train"] == pytest.approx(600) and cartoon["time.total"] == pytest.approx(705)
    assert "time.pretrain" not in cartoon  # each parent gets its own stages' metrics
    story = c.get_run(ids["transfer"]).data.metrics
    assert story["time.pretrain"] == pytest.approx(900) and story["time.finetune.baseline"] == pytest.approx(240)
    assert c.get_run(ids["cyclegan"]).data.metrics["time.cyclegan"] == pytest.approx(480)
    for rid in ids.values():
        assert "timings.md" in {a.path for a in c.list_artifacts(rid)}
        assert c.get_run(rid).info.status == "FINISHED"
    md = Path(c.download_artifacts(ids["sketch"], "timings.md", str(tmp_path))).read_text()
    assert md.startswith("| stage | seconds | time | share |") and "| pretrain | 900.0 | 15m 00s |" in md


def test_timings_without_runs_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    code, out, err = _cli(capsys, "timings")
    assert code == 2 and err.startswith("error: no MLflow store at") and len(err.splitlines()) == 1
    monkeypatch.setenv("COLUMNS", "200")  # rich's usage box folds the message at the terminal's width
    code, out, err = _cli(capsys, "timings", "-q")  # nothing to print and nothing to log
    assert code == 2 and out == "" and "-q prints only what --log logged: add --log, or leave -q out" in err, err
    assert not (tmp_path / "none.db").exists()  # a query never creates a store

    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path / 'empty.db'}").search_experiments()  # a store with no runs
    capsys.readouterr()  # mlflow's own log lines of creating it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    code, out, err = _cli(capsys, "timings")
    assert code == 2 and "error: no finished pipeline, transfer or CycleGAN runs" in err and len(err.splitlines()) == 1


def test_report_lists_every_kind_of_run(at_store, capsys, tmp_path):
    code, out, err = _cli(capsys, "report", "-p", str(ROOT / "params.yaml"), "--out", str(tmp_path / "t"))
    assert code == 0, err
    table = out[: out.index("wrote ")]  # then the files' paths, long in a temporary folder
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 80, out
    for text in ("pretrain", "baseline", "cartoon->sketch", "sketch->cartoon", "dcgan", "stylegan2", "cyclegan"):
        assert text in out
    md = (tmp_path / "t" / "fid_table.md").read_text().splitlines()
    assert len(md) == 2 + 3 + 2 + 2  # three finished pipelines, pretrain + baseline, two CycleGAN directions


def _files(root: Path) -> None:
    """What a finished `dvc repro` leaves for the summary."""
    for ds, fd in (("cartoon", 40.0), ("sketch", 70.0)):
        d = root / "data" / "reports" / ds
        d.mkdir(parents=True)
        (d / "samples.png").write_bytes(b"png")
        metrics = {"dataset": ds, "fd_inception": None, "fd_dlib": fd, "kid_dlib": 0.0123, "training": {"steps": 400}}
        (d / "metrics.json").write_text(json.dumps(metrics))
    (root / "data" / "transfer").mkdir(parents=True)
    rows = {
        "baseline": {
            "pretrained": True,
            "freeze_d": 0,
            "augment": "none",
            "final": {"dlib": {"mean": 60.0, "std": 2.5}},
        },
        "freezed_ada": {
            "pretrained": True,
            "freeze_d": 2,
            "augment": "ada",
            "final": {"dlib": {"mean": 55.5, "std": 1}},
        },
        "scratch": {"pretrained": False, "freeze_d": 0, "augment": "none", "final": {"dlib": {"mean": 99.0, "std": 3}}},
    }
    table = {"source": "cartoon", "target": "sketch", "seeds": [0, 1], "rows": rows}
    (root / "data/transfer/fid_table.json").write_text(json.dumps(table))
    (root / "data/transfer/fid_table.md").write_text("Transfer\n\n| row |\n|---|\n| baseline |\n")
    (root / "data" / "cyclegan" / "model").mkdir(parents=True)
    (root / "data/cyclegan/model/translated_a_to_b.png").write_bytes(b"")  # a CycleGAN that ran (not one that is off)
    cyc = {"a": "cartoon", "b": "sketch", "a_to_b": {"fd_dlib": 90.0, "fd_dlib_untranslated": 120.0}}
    (root / "data/cyclegan/metrics.json").write_text(json.dumps(cyc))


def test_summary_from_files_and_mlflow(at_store, tmp_path):
    from facegan.summary import summary

    _files(tmp_path)
    text = summary(load_params(ROOT / "params.yaml"), tmp_path)
    lines = text.splitlines()
    assert len(lines) <= 25 and max(len(line) for line in lines if "mlflow ui" not in line) <= 80, text
    assert "data/reports/<dataset>/samples.png  (cartoon, sketch)" in text
    assert "data/transfer/fid_table.md" in text and "data/cyclegan/" in text and "make explore" in text
    assert f"mlflow ui --backend-store-uri {at_store['uri']}" in text
    assert any(line.split()[:3] == ["cartoon", "fd_dlib", "40"] for line in lines)
    study = lines.index("Transfer cartoon -> sketch (fd_dlib, mean ± std over 2 seeds):")
    assert [line.split()[:4] for line in lines[study + 1 : study + 4]] == [
        ["freezed_ada", "55.5", "±", "1"],  # best first
        ["baseline", "60", "±", "2.5"],
        ["scratch", "99", "±", "3"],
    ]
    assert "cartoon->sketch 90 (untranslated 120)" in text
    times = lines.index("Longest stages (MLflow, latest execution: time, share of the total):")
    assert lines[times + 1].split()[:4] == ["pretrain", "15m", "00s", "33.6%"]
    assert lines[times + 6].split()[:3] == ["(7", "more", "stages)"] and lines[-1].split()[:3] == [
        "total",
        "44m",
        "36s",
    ]


def test_summary_reads_single_seed_transfer_tables_and_falls_back_to_the_markdown(tmp_path):
    from facegan.summary import transfer

    (tmp_path / "data" / "transfer").mkdir(parents=True)
    runs = {"baseline": {"fd_dlib": 60.0, "freeze_d": 0}, "ada": {"fd_dlib": 50.0, "augment": "ada"}}
    (tmp_path / "data/transfer/fid_table.json").write_text(json.dumps({"source": "a", "target": "b", "runs": runs}))
    assert transfer(tmp_path) == [
        "Transfer a -> b (fd_dlib):",
        "  ada       50   augment ada",
        "  baseline  60   freeze_d 0",
    ]
    (tmp_path / "data/transfer/fid_table.json").write_text("{}")
    (tmp_path / "data/transfer/fid_table.md").write_text("Title\n\n| row |\n|---|\n" + "| x |\n" * 20)
    assert transfer(tmp_path)[:3] == ["Transfer (data/transfer/fid_table.md):", "  Title", "  | row |"]
    assert len(transfer(tmp_path)) == 9


def test_summary_without_mlflow_skips_the_times(monkeypatch, tmp_path):
    from facegan.summary import summary

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens
    _files(tmp_path)
    text = summary(load_params(ROOT / "params.yaml"), tmp_path)
    assert "fd_dlib" in text and "freezed_ada" in text
    skipped = [line for line in text.splitlines() if line.startswith("Stage times")]
    assert len(skipped) == 1 and skipped[0].startswith("Stage times: skipped (the tracking store http://127.0.0.1:9")
    assert text.rstrip().endswith(")") and "Longest stages" not in text


def test_summary_headline_takes_each_dataset_s_own_metric_and_says_so_without_final_scores(tmp_path):
    """cartoon scored by Inception and sketch by dlib alone: sketch's line is its fd_dlib, not `fd_inception -`;
    a transfer table of runs not evaluated yet names no `fd_None`."""
    from facegan.summary import cyclegan, headline, transfer

    for ds, m in (("cartoon", {"fd_inception": 40.0, "fd_dlib": 0.5}), ("sketch", {"fd_dlib": 0.25, "kid_dlib": 0.01})):
        (tmp_path / "data" / "reports" / ds).mkdir(parents=True)
        (tmp_path / "data" / "reports" / ds / "metrics.json").write_text(json.dumps(m))
    lines = headline(load_params(ROOT / "params.yaml"), tmp_path)
    assert [line.split()[:3] for line in lines[1:]] == [
        ["cartoon", "fd_inception", "40"],
        ["sketch", "fd_dlib", "0.25"],
    ]
    assert lines[0].endswith("(inception, dlib or attributes):")
    # scored by attributes alone (evaluate.extractors: [attributes]): it said `fd_dlib -`
    (tmp_path / "data" / "reports" / "sketch" / "metrics.json").write_text('{"fd_attributes": 1.5, "fd_dlib": null}')
    assert headline(load_params(ROOT / "params.yaml"), tmp_path)[2].split()[:3] == ["sketch", "fd_attributes", "1.5"]
    # a report cut off read as "no report yet", and a CycleGAN's left no line
    (tmp_path / "data" / "reports" / "sketch" / "metrics.json").write_text('{"fd_dlib": 0.2')
    (tmp_path / "data" / "cyclegan").mkdir(parents=True)
    (tmp_path / "data" / "cyclegan" / "metrics.json").write_text("")
    assert headline(load_params(ROOT / "params.yaml"), tmp_path)[2].split(None, 1)[1] == (
        "data/reports/sketch/metrics.json cannot be read (cut off or edited?) (dvc repro report@sketch)"
    )
    assert cyclegan(tmp_path) == [
        "CycleGAN: data/cyclegan/metrics.json cannot be read (cut off or edited?): dvc repro cyclegan"
    ]
    (tmp_path / "data" / "transfer").mkdir(parents=True)
    rows = {"baseline": {"freeze_d": 0, "final": {}}, "ada": {"augment": "ada"}}
    (tmp_path / "data/transfer/fid_table.json").write_text(json.dumps({"source": "a", "target": "b", "rows": rows}))
    assert transfer(tmp_path) == [
        "Transfer a -> b (no final distances yet):",
        "  baseline  -   freeze_d 0",
        "  ada       -   augment ada",
    ]


def test_timings_and_summary_read_the_store_of_the_project_root(store, monkeypatch, tmp_path, capsys):
    """`--root project` from another folder read the current folder's mlflow.db (params' default
    `sqlite:///mlflow.db`, relative): "no MLflow store" there, or another project's stage times beside this project's
    scores. A relative store is now the root's, where `dvc repro` writes it; from the root itself, kept as written."""
    from facegan.config import TrackingConfig, anchored, load_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "mlflow.db").write_bytes(Path(store["uri"].removeprefix("sqlite:///")).read_bytes())
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    _files(project)
    monkeypatch.chdir(elsewhere)
    assert load_tracking(project / "params.yaml", project).tracking_uri == f"sqlite:///{project / 'mlflow.db'}"
    assert load_tracking(project / "params.yaml").tracking_uri == "sqlite:///mlflow.db"  # no root: the current folder
    for args in (["-p", "../project/params.yaml", "--root", "../project"], ["--root", "../project"]):
        code, out, err = _cli(capsys, "timings", *args)  # without -p: the root's params.yaml
        assert code == 0, err
        assert "train@cartoon" in out and out.splitlines()[-1].split()[:3] == ["total", "44m", "36s"]
    code, out, err = _cli(capsys, "summary", "-p", str(project / "params.yaml"), "--root", str(project))
    assert code == 0, err
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in out  # the project's: to be run there
    assert "Longest stages (MLflow, latest execution" in out
    assert out.splitlines()[-1].split()[:3] == ["total", "44m", "36s"]
    assert not (elsewhere / "mlflow.db").exists()  # nothing made here

    monkeypatch.chdir(project)  # from the project itself: as written
    assert load_tracking(Path("params.yaml"), Path(".")).tracking_uri == "sqlite:///mlflow.db"
    assert load_tracking(Path("params.yaml"), project).tracking_uri == "sqlite:///mlflow.db"
    monkeypatch.chdir(elsewhere)
    (tmp_path / "link").symlink_to(project)  # a root reached through a link: that path, not the link's target
    assert anchored(TrackingConfig(), tmp_path / "link").tracking_uri == f"sqlite:///{tmp_path / 'link' / 'mlflow.db'}"
    file_store, absolute, server = TrackingConfig(tracking_uri="mlruns"), f"sqlite:///{tmp_path}/x.db", "http://h:5000"
    assert anchored(file_store, project).tracking_uri == str(project / "mlruns")
    for uri in (absolute, server, "sqlite:///:memory:"):
        assert anchored(TrackingConfig(tracking_uri=uri), project).tracking_uri == uri


def test_reproduce_of_a_transfer_study_run_says_so(at_store, capsys):
    """Given a fine-tune's evaluate run, reproduce said its parent "names no dataset (tag `dataset`)": another run,
    and not why. The study's own run said "not a facegan pipeline run"."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(at_store["uri"])
    story = at_store["ids"]["transfer"]
    (evaluate,) = c.search_runs(
        [c.get_run(story).info.experiment_id], f"tags.mlflow.parentRunId = '{story}' and tags.stage = 'evaluate'"
    )
    for run_id in (evaluate.info.run_id, story):
        code, _, err = _cli(capsys, "reproduce", run_id)
        assert code == 2 and f"run {run_id} belongs to the transfer study" in err and "facegan transfer" in err, err
