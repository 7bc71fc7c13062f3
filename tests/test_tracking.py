"""MLflow with a real `mlflow server` on 127.0.0.1: runs, nesting, registry, table, reproduce, outage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import free_port, tiny_params, wait_for_text, wait_healthy
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
            [
                str(mlflow_bin),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
            ],
            stdout=(self.root / "server.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_healthy(f"{self.uri}/health", self.proc, self.root / "server.log", timeout=90)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a busy machine: the graceful shutdown can exceed 30 s
                os.killpg(self.proc.pid, 9)
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
    mp.setenv("FACEGAN_CACHE", str(root / "cache"))  # where registered generators are fetched to
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


def _assert_one_tracked_pipeline(c) -> list:
    """One FINISHED parent holding a FINISHED nested run per stage, with all params, metrics and files."""
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
    assert detect.data.metrics["ok"] == 12 and detect.data.metrics["stage_seconds"] > 0
    assert "contact_sheet.png" in {a.path for a in c.list_artifacts(detect.info.run_id)}
    assert c.get_model_version_by_alias("facegan-cartoon", "best").version == "1"
    return [parent, *children]


def test_pipeline_is_one_parent_with_a_nested_run_per_stage(server, pipeline):
    _assert_one_tracked_pipeline(_client(server))


def _params_naming(root: Path, uri: str) -> dict:
    """root/params.yaml (the project's) whose tracking.tracking_uri is `uri`; an environment without
    MLFLOW_TRACKING_URI, so commands must find the store through params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["tracking"]["tracking_uri"] = uri
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def test_best_generator_is_registered_and_samples_by_uri(server, pipeline, tmp_path):
    c = _client(server)
    mv = c.get_model_version_by_alias("facegan-cartoon", "best")
    assert mv.version == "1"
    env = _params_naming(tmp_path, server.uri)  # tracking.tracking_uri of ./params.yaml, not the environment
    (tmp_path / "tmp").mkdir()
    env["TMPDIR"] = str(tmp_path / "tmp")  # the fetched generator is not left behind in the temporary folder
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from facegan.cli import main; main()",
            "sample",
            "--model-uri",
            "models:/facegan-cartoon@best",
            "-n",
            "2",
            "-o",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["grid.png", "seed0_0000.png", "seed0_0001.png"]
    assert list((tmp_path / "tmp").iterdir()) == []
    (cached,) = (Path(os.environ["FACEGAN_CACHE"]) / "registry" / "facegan-cartoon").iterdir()
    assert cached.name.startswith("1-") and len(list(cached.rglob("checkpoint.pt"))) == 1


def test_report_command_writes_the_comparison_table(server, pipeline):
    root, _ = pipeline
    env = _params_naming(root, server.uri)
    r = subprocess.run(
        [sys.executable, "-c", "from facegan.cli import main; main()", "report", "--out", "tables"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
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
    env = _params_naming(root / "elsewhere", server.uri)  # -p: a params file outside the working directory
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from facegan.cli import main; main()",
            "reproduce",
            parent.info.run_id,
            "-p",
            str(root / "elsewhere" / "params.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "reproduced: every metric within 1e-06" in r.stdout and "fd_dlib" in r.stdout


def test_reproduce_of_a_run_the_store_does_not_hold_is_one_error(server, tmp_path):
    from facegan.config import TrackingConfig
    from facegan.errors import TrackingError
    from facegan.reproduce import reproduce

    with pytest.raises(TrackingError, match=rf"no MLflow run {'0' * 32} in {server.uri}"):
        reproduce("0" * 32, tmp_path, tracking=TrackingConfig(tracking_uri=server.uri))


def test_explore_opens_registered_models_and_runs(server, pipeline):
    from facegan import track
    from facegan.latent import ExploreError, Models, resolve

    c = _client(server)
    exp = c.get_experiment_by_name("facegan").experiment_id
    parent = c.search_runs([exp], "tags.`facegan.kind` = 'pipeline'")[0]
    stage = c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")[0]
    src = resolve("models:/facegan-cartoon@best")
    assert src.registered == ("facegan-cartoon", "1") and src.run_id == parent.info.run_id
    assert src.checkpoint.name == "checkpoint.pt" and src.label == "facegan-cartoon v1"
    assert resolve(parent.info.run_id).registered == resolve(stage.info.run_id).registered == src.registered

    models = Models()
    model, src = models.get("models:/facegan-cartoon/1")
    assert model.kind == "dcgan" and models.get(parent.info.run_id)[0] is model  # loaded once per process
    (row,) = models.rows([src])
    assert row["fd_dlib"] == parent.data.metrics["fd_dlib"] and row["model"] == "dcgan"
    names = models.names(src)
    assert isinstance(names, track.RegistryNames)
    assert names.save("sefa", 3, " big  smile ") == {"sefa": {3: "big smile"}}
    assert c.get_model_version("facegan-cartoon", "1").tags["direction.sefa.3"] == "big smile"
    assert names.save("sefa", 3, "") == {}

    for ref, msg in {
        "models:/facegan-nope@best": r"no registered model 'facegan-nope' in http://127.0.0.1:\d+ "
        r"\(registered: facegan-cartoon\)",
        "models:/facegan-cartoon@worst": "model facegan-cartoon has no alias 'worst'",
        "0" * 32: f"no MLflow run {'0' * 32} in http",
    }.items():
        with pytest.raises(ExploreError, match=msg):
            resolve(ref)


def test_a_registered_generator_is_fetched_once_and_a_failed_fetch_leaves_nothing(server, pipeline, monkeypatch):
    import mlflow

    from facegan import track
    from facegan.config import TrackingConfig
    from facegan.errors import TrackingError

    tracking = TrackingConfig(tracking_uri=server.uri)
    mv = _client(server).get_model_version_by_alias("facegan-cartoon", "best")
    registry = Path(os.environ["FACEGAN_CACHE"]) / "registry" / "facegan-cartoon"
    folder = track.registered_model_dir(mv)
    assert folder.parent == registry and folder.name.startswith("1-")
    first = track.download_checkpoint("models:/facegan-cartoon@best", tracking)
    assert list(folder.rglob("checkpoint.pt")) == [first] and first.stat().st_size > 0

    def refused(**kwargs):
        raise AssertionError(f"fetched again: {kwargs}")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", refused)
    assert track.download_checkpoint("models:/facegan-cartoon/1", tracking) == first  # from the cache

    shutil.rmtree(registry)
    real = monkeypatch.undo

    def cut_off(dst_path, **kwargs):  # the connection drops halfway through the files
        (Path(dst_path) / "model").mkdir()
        (Path(dst_path) / "model" / "checkpoint.pt").write_bytes(b"half a checkpoint")
        raise OSError("connection reset by peer")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", cut_off)
    with pytest.raises(TrackingError, match="cannot fetch models:/facegan-cartoon@best from the tracking store .*: "
                       "connection reset by peer"):  # fmt: skip
        track.download_checkpoint("models:/facegan-cartoon@best", tracking)
    assert list(registry.iterdir()) == []  # no half-fetched model to be taken for a whole one next time
    real()

    folder.mkdir()  # a folder in its place without a checkpoint (not written by facegan) is replaced
    (folder / "notes.txt").write_text("not a model")
    stale = registry / f".{folder.name}.killed"  # a fetch a killed process left, two hours ago
    stale.mkdir()
    os.utime(stale, (time.time() - 7200,) * 2)
    assert track.download_checkpoint("models:/facegan-cartoon@best", tracking) == first
    assert sorted(p.name for p in registry.iterdir()) == [folder.name]
    assert not (folder / "notes.txt").exists() and first.stat().st_size > 0

    (registry.parent.parent / "a-file").write_text("")
    monkeypatch.setenv("FACEGAN_CACHE", str(registry.parent.parent / "a-file"))
    with pytest.raises(TrackingError, match=r"cannot write the model cache .*a-file/registry/facegan-cartoon \(.*\): "
                       "set FACEGAN_CACHE to a writable folder"):  # fmt: skip
        track.download_checkpoint("models:/facegan-cartoon@best", tracking)


@pytest.mark.slow  # starts the app (~15 s); test_explore.py serves a checkpoint in the default run
def test_explore_command_serves_the_best_model_of_the_default_dataset(server, pipeline, tmp_path):
    """`make explore`: `facegan explore` without a model opens models:/facegan-<first dataset>@best."""
    import json
    import urllib.request

    from conftest import free_port

    root, _ = pipeline
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", tmp_path / "params.yaml")
    port = free_port()
    log = tmp_path / "explore.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from facegan.cli import main; main()", "explore", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": server.uri, "COLUMNS": "200"},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/", proc, log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10) as r:
            assert json.load(r)["title"] == "facegan explore: facegan-cartoon v1"
        # the server answers before `launch` returns and the command prints what it serves
        wait_for_text(log, f"serving models:/facegan-cartoon@best at http://127.0.0.1:{port}/", proc)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from facegan.cli import main; main()",
            "explore",
            "--model-uri",
            "models:/facegan-sketch@best",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": server.uri, "COLUMNS": "300"},
    )
    assert r.returncode == 2 and "no registered model 'facegan-sketch'" in r.stderr


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
    r = subprocess.run(
        [sys.executable, "-c", "from facegan.cli import main; main()", "report", "--out", "tables_vae"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
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
        t = track.Tracker(cfg, tmp_path / "buf.jsonl", track.run_spec(cfg, {}, run_id=run.info.run_id))
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
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "from facegan.cli import main; main()",
                "track",
                "sync",
                str(tmp_path / "buf.jsonl"),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": s.uri},
        )
        assert r.returncode == 0 and "sent 5 record(s)" in r.stdout, r.stderr[-2000:]
        assert [m.value for m in c.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4, 5, 6, 7]
        assert c.get_run(run.info.run_id).info.status == "FINISHED"
        assert not (tmp_path / "buf.jsonl").exists()

        # a stage killed (its process gone) before it could end its run: sync ends it as KILLED, never RUNNING
        t = track.Tracker.open(cfg, tmp_path, "killed", track.run_spec(cfg, {"stage": "train"}))
        t.log_metrics({"loss": 1.0}, 1)
        assert t.run_id and not t.pending
        t.log_metrics({"loss": 2.0}, 2)  # kept: the next flush was due in 10 s
        with pytest.raises(ValueError, match="still running"):  # a live stage's buffer is left alone
            track.sync(cfg, t.buffer)
        track._unlock(t._lock)  # what the kernel does when the process dies
        assert track.sync(cfg, t.buffer) == 2  # the metric + the end marker
        assert c.get_run(t.run_id).info.status == "KILLED"
        assert [m.value for m in c.get_metric_history(t.run_id, "loss")] == [1, 2]
    finally:
        s.stop()


def _cli(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from facegan.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )


def _offline_params(uri: str):
    from facegan.config import parse_params

    raw = tiny_params(steps=4, fid_every=2, fid_samples=8).model_dump(mode="json")
    raw["tracking"].update(enabled=True, tracking_uri=uri)
    return parse_params(raw)


@pytest.mark.slow  # the whole tiny chain once more (~1 min on 2 cores) + a server start
def test_server_down_from_the_start_then_sync_creates_every_run(tmp_path, monkeypatch):
    """The whole chain while MLflow is down (no run can even be created), then the server comes up and
    `facegan track sync` creates the parent and every stage run, linked, with all params, metrics and files."""
    import time

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store is params' tracking_uri
    s = Server(tmp_path / "mlflow")
    (tmp_path / "mlflow").mkdir()
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    params = _offline_params(s.uri)
    for stage in STAGES:
        run_stage(stage, "cartoon", params, root)
    buffers = sorted((root / ".facegan/tracking").glob("*.jsonl"))
    assert len(buffers) == len(STAGES) + 1  # one per stage run + the parent's final records
    for out in ("data/models/cartoon/samples.png", "data/reports/cartoon/samples.png"):
        (root / out).unlink()  # as a later run would rewrite them: what was logged is kept beside the buffers
    s.start()
    try:
        env = _params_naming(root, s.uri)
        synced_at = time.time() * 1000
        r = _cli(["track", "sync"], root, env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        assert f"from {len(buffers)} of {len(buffers)} file(s)" in r.stdout
        assert not list((root / ".facegan/tracking").glob("*.jsonl"))
        runs = _assert_one_tracked_pipeline(_client(s))
        assert all(run.info.start_time < synced_at for run in runs), "runs keep the time they really started"
        assert _cli(["track", "sync"], root, env).stdout.strip().endswith("sent 0 record(s) from 0 of 0 file(s)")
    finally:
        s.stop()


def test_sync_of_a_buffer_file_that_is_not_there_is_a_usage_error(tmp_path):
    """Not 'not sent (kept): MLflow at ...: FileNotFoundError', which blamed the store for a mistyped path."""
    r = _cli(["track", "sync", str(tmp_path / "nope.jsonl")], tmp_path, dict(os.environ))
    assert r.returncode == 2 and "does not exist" in r.stderr and "MLflow" not in r.stderr + r.stdout


def test_two_outages_of_one_stage_keep_both_runs(tmp_path, monkeypatch):
    """MLflow down from the start: generate, then detect twice (two buffers: the second never overwrites the
    first). The server comes up: a third detect joins the same parent at once, and `track sync` creates the
    parent's other runs, linked, with their params, metrics and files."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store is params' tracking_uri
    s = Server(tmp_path / "mlflow")
    (tmp_path / "mlflow").mkdir()
    root = tmp_path / "project"
    root.mkdir()
    params = _offline_params(s.uri)
    for stage in ("generate", "detect", "detect"):
        run_stage(stage, "cartoon", params, root)
    buffers = sorted((root / ".facegan/tracking").glob("*.jsonl"))
    assert len(buffers) == 3 and len([b for b in buffers if b.name.startswith("detect@cartoon-")]) == 2
    s.start()
    try:
        run_stage("detect", "cartoon", params, root)  # online again: created at once, under the same parent
        assert sorted((root / ".facegan/tracking").glob("*.jsonl")) == buffers
        r = _cli(["track", "sync", "--root", str(root)], tmp_path, _params_naming(tmp_path, s.uri))
        assert r.returncode == 0 and "from 3 of 3 file(s)" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]
        assert not list((root / ".facegan/tracking").glob("*.jsonl"))
        c = _client(s)
        exp = c.get_experiment_by_name("facegan").experiment_id
        parents = c.search_runs([exp], "tags.`facegan.kind` = 'pipeline'")
        assert len(parents) == 1 and parents[0].data.params["train.steps"] == "4"
        assert (
            parents[0].data.params["datasets.cartoon.source.n"] == "12" and parents[0].data.tags["dataset"] == "cartoon"
        )
        runs = c.search_runs([exp], "tags.`facegan.kind` = 'stage'", order_by=["attributes.start_time ASC"])
        assert [r.data.tags["stage"] for r in runs] == ["generate", "detect", "detect", "detect"]
        assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
        assert all(r.info.status == "FINISHED" and r.data.metrics["stage_seconds"] > 0 for r in runs)
        assert runs[0].data.metrics["images"] == 12 and all(r.data.metrics["ok"] == 12 for r in runs[1:])
        for r in runs[1:]:
            assert {"summary.json", "contact_sheet.png"} <= {a.path for a in c.list_artifacts(r.info.run_id)}
    finally:
        s.stop()


def test_the_parent_key_ignores_what_the_pipeline_itself_writes_into_git(tmp_path):
    """dvc.lock and the .gitignore files DVC extends change in the middle of `dvc repro`: the pipeline key (and
    the git_dirty tag) must not, or one execution splits into two parents, the first left RUNNING."""
    from facegan import track

    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for name, text in (
        ("dvc.lock", "schema: '2.0'\n"),
        ("data/models/.gitignore", "/cartoon\n"),
        ("src/code.py", "x = 1\n"),
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, env=env, check=True)
    params = tiny_params()
    clean = track.pipeline_key("cartoon", params, tmp_path)
    assert track.git_state(tmp_path)["git_dirty"] == "False"
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # a stage finished
    (tmp_path / "data/models/.gitignore").write_text("/cartoon\n/sketch\n")
    assert track.pipeline_key("cartoon", params, tmp_path) == clean
    assert track.git_state(tmp_path)["git_dirty"] == "False"
    (tmp_path / "src/code.py").write_text("x = 2\n")  # the code changed: another execution
    assert track.pipeline_key("cartoon", params, tmp_path) != clean
    assert track.git_state(tmp_path)["git_dirty"] == "True"


CHAIN = """
import sys
import time
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
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", CHAIN, str(tmp_path / "params.json"), ",".join(stages)],
                    cwd=root,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
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
            assert {"summary.json", "contact_sheet.png"} <= {
                a.path for a in c.list_artifacts(by_stage["detect"].info.run_id)
            }
        stored = list((tmp_path / "artifacts").rglob("contact_sheet.png"))
        assert len(stored) == 2 * 6, stored  # the 6 per-image stages of both pipelines, in the server's folder
        for root in roots:
            assert not (root / "mlruns").exists() and not (root / "mlartifacts").exists()
            assert list((root / ".facegan" / "tracking").glob("*.jsonl")) == []  # every record was sent
    finally:
        s.stop()


def test_the_train_stage_logs_every_figure_its_model_wrote(layout, tmp_path):
    """MLflow gets every sample figure of the run: an ACGAN's grids per attribute (and the loss log), not only
    samples.png and the interpolation (the per-label grids, StyleGAN2's style mixing, truncation and SeFa figures
    and the VAE's reconstructions were written but never logged)."""
    from facegan import chain
    from facegan.layout import Layout

    logged: list[str] = []

    class Recorder:
        def log_artifact(self, path, artifact_path=None):
            logged.append(path.name)

        def log_metrics(self, *_a, **_k):
            pass

    at = Layout(layout.root, "cartoon", "acgan-figures")
    p = tiny_params(steps=1, model="acgan", fid_every=0)
    chain._train(p, at, Recorder())
    written = {f.name for f in at.model.iterdir() if f.suffix in (".png", ".gif", ".csv")}
    assert "samples_by_hair_color.png" in written and "interpolation.gif" in written
    assert sorted(logged) == sorted(written)
