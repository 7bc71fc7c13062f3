"""MLflow with a real `mlflow server` on 127.0.0.1: runs, nesting, registry, table, reproduce, outage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, tiny_params, wait_healthy
from facegan.chain import STAGES, run_stage
from facegan.config import TrackingConfig


class Server:
    """`mlflow server` with its own sqlite store and artifact folder; start/stop keep the same store."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        self.proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=(self.root / "server.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_healthy(f"{self.uri}/health", self.proc, self.root / "server.log", timeout=90)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("mlflow"))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pipeline(server, tmp_path_factory):
    """The whole tiny chain, tracked, against the server."""
    root = tmp_path_factory.mktemp("tracked")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", server.uri)
    mp.chdir(root)
    raw = tiny_params(steps=4, fid_every=2, fid_samples=8).model_dump(mode="json")
    raw["tracking"]["enabled"] = True
    from facegan.config import parse_params

    params = parse_params(raw)
    for stage in STAGES:
        run_stage(stage, "cartoon", params, root)
    yield root, params
    mp.undo()


def _client(server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(server.uri)


def test_pipeline_is_one_parent_with_a_nested_run_per_stage(server, pipeline):
    c = _client(server)
    exp = c.get_experiment_by_name("facegan")
    parents = c.search_runs([exp.experiment_id], "tags.`facegan.kind` = 'pipeline'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["train.steps"] == "4" and parent.data.params["datasets.cartoon.source.n"] == "12"
    assert parent.data.metrics["fd_dlib"] > 0 and parent.data.metrics["training.steps"] == 4
    assert parent.data.tags["dataset"] == "cartoon" and len(parent.data.tags["dataset_sha256"]) == 64
    assert "version.torch" in parent.data.tags and "git_commit" in parent.data.tags
    arts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"samples.png", "metrics.json", "curves.png", "params.yaml"} <= arts

    children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["stage"] for r in children) == sorted(STAGES)
    assert all(r.info.status == "FINISHED" for r in children)
    train = next(r for r in children if r.data.tags["stage"] == "train")
    assert [m.step for m in c.get_metric_history(train.info.run_id, "loss_d")] == [1, 2, 3, 4]
    assert [m.step for m in c.get_metric_history(train.info.run_id, "fid_train")] == [2, 4]
    assert {"samples.png", "losses.csv", "fid.csv"} <= {a.path for a in c.list_artifacts(train.info.run_id)}
    detect = next(r for r in children if r.data.tags["stage"] == "detect")
    assert detect.data.metrics["ok"] == 12


def test_best_generator_is_registered_and_samples_by_uri(server, pipeline, tmp_path):
    c = _client(server)
    mv = c.get_model_version_by_alias("facegan-cartoon", "best")
    assert mv.version == "1"
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri}
    r = subprocess.run([sys.executable, "-c", "from facegan.cli import main; main()", "sample", "--model-uri",
                        "models:/facegan-cartoon@best", "-n", "2", "-o", str(tmp_path / "s")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["grid.png", "seed0_0000.png", "seed0_0001.png"]


def test_report_command_writes_the_comparison_table(server, pipeline):
    root, _ = pipeline
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri}
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", root / "params.yaml")
    r = subprocess.run([sys.executable, "-c", "from facegan.cli import main; main()", "report", "--out", "tables"],
                       capture_output=True, text=True, env=env, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (root / "tables" / "fid_table.md").read_text().splitlines()
    assert md[0].startswith("| run | dataset | model | loss | d_variant | augment | freeze_d | fd_inception | fd_dlib")
    assert len(md) == 3 and "| cartoon | dcgan | nonsaturating | plain | none |" in md[2]
    assert (root / "tables" / "fid_table.png").stat().st_size > 1000
    assert (root / "tables" / "fid_table.csv").read_text().count("\n") == 2


def test_reproduce_gives_the_same_fid(server, pipeline):
    root, _ = pipeline
    c = _client(server)
    parent = c.search_runs([c.get_experiment_by_name("facegan").experiment_id], "tags.`facegan.kind` = 'pipeline'")[0]
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri}
    r = subprocess.run([sys.executable, "-c", "from facegan.cli import main; main()", "reproduce", parent.info.run_id],
                       capture_output=True, text=True, env=env, cwd=root)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "reproduced: every metric within 1e-06" in r.stdout and "fd_dlib" in r.stdout


@pytest.mark.slow
def test_vae_joins_the_fid_comparison_table(server, pipeline):
    root, params = pipeline
    raw = params.model_dump(mode="json")
    raw["train"].update(model="vae")
    from facegan.config import parse_params

    vae = parse_params(raw)
    for stage in ("train", "evaluate", "report"):
        run_stage(stage, "cartoon", vae, root, "vae")
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri}
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", root / "params.yaml")  # `report` reads tracking
    r = subprocess.run([sys.executable, "-c", "from facegan.cli import main; main()", "report", "--out", "tables_vae"],
                       capture_output=True, text=True, env=env, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = (root / "tables_vae" / "fid_table.csv").read_text().splitlines()
    header = rows[0].split(",")
    models = {row.split(",")[header.index("model")]: row.split(",")[header.index("fd_dlib")] for row in rows[1:]}
    assert {"dcgan", "vae"} <= set(models) and float(models["vae"]) > 0


def test_server_down_mid_run_loses_nothing(tmp_path, monkeypatch, caplog):
    from facegan import track

    s = Server(tmp_path)
    s.start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", s.uri)
        cfg = TrackingConfig(experiment="outage")
        c = _client(s)
        run = c.create_run(track.experiment_id(cfg))
        t = track.Tracker(cfg, tmp_path / "buf.jsonl", run.info.run_id)
        for step in range(1, 4):
            t.log_metrics({"loss": float(step)}, step)
        assert t.flush() and not t.pending
        s.stop()
        for step in range(4, 8):
            t.log_metrics({"loss": float(step)}, step)
        t.end()
        assert any("unreachable" in rec.message for rec in caplog.records)
        assert len(t.pending) == 5  # 4 metrics + the end marker, kept on disk
        assert (tmp_path / "buf.jsonl").read_text().count('"op": "metric"') == 4
        s.start()
        r = subprocess.run([sys.executable, "-c", "from facegan.cli import main; main()", "track", "sync",
                            str(tmp_path / "buf.jsonl")], capture_output=True, text=True,
                           env={**os.environ, "MLFLOW_TRACKING_URI": s.uri})
        assert r.returncode == 0 and "sent 5 record(s)" in r.stdout, r.stderr[-2000:]
        assert [m.value for m in c.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4, 5, 6, 7]
        assert c.get_run(run.info.run_id).info.status == "FINISHED"
        assert not (tmp_path / "buf.jsonl").exists()
    finally:
        s.stop()


CHAIN = """
import sys
from pathlib import Path
from facegan.chain import run_stage
from facegan.config import Params
params = Params.model_validate_json(Path(sys.argv[1]).read_text())
for stage in sys.argv[2].split(","):
    run_stage(stage, "cartoon", params, ".")
"""


@pytest.mark.slow  # ~1 min on idle cores (two whole preprocessing chains + training at once), 2-4 when shared
def test_two_concurrent_pipelines_share_a_server_with_sqlite_store_and_artifact_folder(tmp_path):
    """Team scale: one `mlflow server` (sqlite backend store, --artifacts-destination a folder), two pipelines of
    the same commit and params run at once from two project folders: two parents, each with exactly its own
    stages and records, every artifact in the server's folder, nothing left unsent."""
    s = Server(tmp_path)
    s.start()
    try:
        raw = tiny_params(steps=4, fid_every=0).model_dump(mode="json")
        raw["tracking"].update(enabled=True, experiment="team")
        (tmp_path / "params.json").write_text(json.dumps(raw))
        stages = ["generate", "detect", "verify", "align", "matte", "upscale", "quality", "pack", "train"]
        roots = [tmp_path / "alice", tmp_path / "bob"]
        env = {**os.environ, "MLFLOW_TRACKING_URI": s.uri}
        procs = []
        for root in roots:
            root.mkdir()
            procs.append(subprocess.Popen([sys.executable, "-c", CHAIN, str(tmp_path / "params.json"), ",".join(stages)],
                                          cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, out[-3000:]
            assert "unreachable" not in out and "not sent" not in out, out[-3000:]

        c = _client(s)
        exp = c.get_experiment_by_name("team")
        assert exp.artifact_location.startswith("mlflow-artifacts:")  # served by the server, not a local path
        parents = c.search_runs([exp.experiment_id], "tags.`facegan.kind` = 'pipeline'")
        assert sorted(p.data.tags["facegan.root"] for p in parents) == [str(r.resolve()) for r in roots]
        for parent in parents:
            children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
            assert sorted(r.data.tags["stage"] for r in children) == sorted(stages), parent.data.tags["facegan.root"]
            assert all(r.info.status == "FINISHED" for r in children)
            by_stage = {r.data.tags["stage"]: r for r in children}
            assert by_stage["detect"].data.metrics["ok"] == 12
            assert [m.step for m in c.get_metric_history(by_stage["train"].info.run_id, "loss_d")] == [1, 2, 3, 4]
            assert {"summary.json", "contact_sheet.png"} <= {a.path for a in c.list_artifacts(by_stage["detect"].info.run_id)}
        stored = list((tmp_path / "artifacts").rglob("contact_sheet.png"))
        assert len(stored) == 2 * 6, stored  # the 6 per-image stages of both pipelines, in the server's folder
        for root in roots:
            assert not (root / "mlruns").exists() and not (root / "mlartifacts").exists()
            assert list((root / ".facegan" / "tracking").glob("*.jsonl")) == []  # every record was sent
    finally:
        s.stop()
