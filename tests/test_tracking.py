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

from conftest import free_port, logs_of, tiny_params, wait_for_text, wait_healthy
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


def test_reproduce_checks_the_reference_statistics_before_it_trains(server, pipeline, tmp_path, monkeypatch):
    """Without the reference statistics (or with ones of other evaluate params) reproduce trained the whole model,
    then stopped at "run refstats first": minutes to hours at real sizes, for an error it could say at once. The
    tiny run scores during training (fid_every 3), which checked them first; params.yaml's default does not."""
    from facegan import reproduce as rep
    from facegan.config import TrackingConfig
    from facegan.errors import StageInputMissing
    from facegan.reproduce import reproduce

    def default_fid_every(raw, source):
        raw["train"]["fid_every"] = 0  # params.yaml's default
        return parse(raw, source)

    parse = rep.parse_params
    monkeypatch.setattr(rep, "parse_params", default_fid_every)
    root, _ = pipeline
    c = _client(server)
    parent = c.search_runs([c.get_experiment_by_name("facegan").experiment_id], "tags.`facegan.kind` = 'pipeline'")[0]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "processed").symlink_to(root / "data" / "processed")  # the run's packed set, no stats
    with pytest.raises(StageInputMissing, match="no reference statistics in .*: run refstats first"):
        reproduce(parent.info.run_id, tmp_path, tracking=TrackingConfig(tracking_uri=server.uri))
    assert not (tmp_path / "reproduce").exists()  # nothing trained


def test_reproduce_of_a_run_the_store_does_not_hold_is_one_error(server, tmp_path):
    from facegan.config import TrackingConfig
    from facegan.errors import TrackingError
    from facegan.reproduce import reproduce

    with pytest.raises(TrackingError, match=rf"no MLflow run {'0' * 32} in {server.uri}$"):
        reproduce("0" * 32, tmp_path, tracking=TrackingConfig(tracking_uri=server.uri))


def test_a_run_is_found_by_the_start_of_its_id_as_the_fid_table_prints_it(server, pipeline):
    """`facegan report` prints `run 46fbf97d`; `facegan reproduce 46fbf97d` said "no MLflow run 46fbf97d"."""
    from facegan import track
    from facegan.config import TrackingConfig
    from facegan.errors import TrackingError

    c = _client(server)
    parent = c.search_runs([c.get_experiment_by_name("facegan").experiment_id], "tags.`facegan.kind` = 'pipeline'")[0]
    short = parent.info.run_id[:8]  # runs_table's `run` column
    cfg = TrackingConfig(tracking_uri=server.uri)
    assert track.fetch_run(short, cfg).info.run_id == parent.info.run_id
    ids = [r.info.run_id for r in c.search_runs([parent.info.experiment_id], "")]
    none = next(p for p in (f"{i:04x}" for i in range(1 << 16)) if not any(r.startswith(p) for r in ids))
    with pytest.raises(TrackingError, match=f"no MLflow run {none} in .*a run id has 32 characters"):
        track.fetch_run(none, cfg)
    stage = next(r for r in ids if r != parent.info.run_id)
    c.delete_run(stage)  # a whole id finds a deleted run: so does its start
    try:
        assert track.fetch_run(stage[:10], cfg).info.run_id == stage
    finally:
        c.restore_run(stage)


def test_the_start_of_several_run_ids_is_one_error_naming_them(tmp_path, monkeypatch):
    """Ids are random: two runs sharing a start are made by the store's answer, not by chance."""
    from types import SimpleNamespace

    from facegan import track
    from facegan.errors import TrackingError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # this test's own store
    cfg = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    track.experiment_id(cfg)  # a store
    runs = [SimpleNamespace(info=SimpleNamespace(run_id=f"abcd{i:028x}")) for i in range(7)]
    answer, asked = [runs], []

    def starting(c, prefix, t, n=6):
        asked.append(prefix)
        return answer[0][:n]

    monkeypatch.setattr(track, "_runs_starting", starting)
    with pytest.raises(TrackingError, match=r"^6 or more runs in .* starts with abcd \(abcd00000000, .*, \.\.\.\)"):
        track.fetch_run("abcd", cfg)
    answer[0] = runs[:2]
    with pytest.raises(TrackingError, match=r"^2 runs in .* starts with abcd \(abcd00000000, abcd00000000\): give"):
        track.fetch_run("abcd", cfg)
    answer[0] = runs[:1]
    assert track.fetch_run("abcd", cfg) is runs[0]
    with pytest.raises(TrackingError, match="no MLflow run abc in"):  # too short to look up by its start
        track.fetch_run("abc", cfg)
    assert asked == ["abcd"] * 3


def test_explore_opens_registered_models_and_runs(server, pipeline, monkeypatch):
    from facegan import track
    from facegan.cli import main
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

    served: list[str] = []  # `explore --run` with the FID table's `run` (the start of the id) serves that run
    demo = type("Demo", (), {"block_thread": lambda self: None, "close": lambda self: None})()
    monkeypatch.setattr("facegan.explore.serve", lambda ref, *args: served.append(ref) or (demo, "http://x"))
    with pytest.raises(SystemExit) as e:
        main(["explore", "--run", parent.info.run_id[:8], "-p", str(Path("nothing.yaml"))])
    assert e.value.code == 0 and served == [parent.info.run_id]


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


def test_sync_with_root_from_elsewhere_sends_to_the_root_s_store(tmp_path, monkeypatch):
    """`track sync --root project` from another folder sent the project's buffers to ./mlflow.db of that folder
    (and deleted them): the project's store never got them. A buffer named twice was reported "not sent"."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "mlflow.db").write_text("not yet a database")  # the store fails: the records stay in a buffer
    monkeypatch.chdir(project)
    run_stage("generate", "cartoon", _offline_params("sqlite:///mlflow.db"), project)
    (buffer,) = (project / ".facegan/tracking").glob("generate@cartoon-*.jsonl")
    (project / "mlflow.db").unlink()
    _params_naming(project, "sqlite:///mlflow.db")  # the project's own store, relative: in the project
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = _cli(["track", "sync", "--root", str(project), str(buffer), str(buffer)], elsewhere, env)
    assert r.returncode == 0 and r.stdout.strip().startswith("sent ") and "from 1 of 1 file(s)" in r.stdout, r.stderr
    assert not buffer.exists() and not (elsewhere / "mlflow.db").exists() and list(elsewhere.iterdir()) == []
    c = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("facegan").experiment_id], "tags.`facegan.kind` = 'stage'")
    assert [run.data.tags["stage"] for run in runs] == ["generate"]


def test_sync_sends_a_buffer_to_the_store_it_was_written_for(tmp_path, monkeypatch):
    """A buffer written while MLFLOW_TRACKING_URI named a server, synced in a shell without it, went into the local
    store without a word: buffers did not say which store they were for."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    server = f"http://127.0.0.1:{free_port()}"  # down
    run_stage("generate", "cartoon", _offline_params(server), tmp_path)
    (buffer,) = (tmp_path / ".facegan/tracking").glob("generate@cartoon-*.jsonl")
    _params_naming(tmp_path, "sqlite:///mlflow.db")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = _cli(["track", "sync"], tmp_path, env)
    assert r.returncode == 1 and f"{buffer.name}: written for the store {server}, not sqlite:///mlflow.db" in r.stderr
    assert buffer.exists() and not (tmp_path / "mlflow.db").exists()
    from facegan import track

    old = tmp_path / ".facegan/tracking/train@cartoon-old.jsonl"  # its run was made there before the store went
    spec = track.run_spec(TrackingConfig(tracking_uri=server), {"facegan.kind": "stage", "stage": "train"}, {"a": 1})
    old.write_text(json.dumps({"op": "run", **spec, "run_id": "f" * 32, "params_sent": True}) + "\n")
    no_store = tmp_path / ".facegan/tracking/detect@cartoon-older.jsonl"  # written before buffers named a store
    spec = track.run_spec(TrackingConfig(), {"facegan.kind": "stage", "stage": "detect"})
    no_store.write_text(json.dumps({"op": "run", **{k: v for k, v in spec.items() if k != "store"}}) + "\n")
    gone = tmp_path / ".facegan/tracking/evaluate@cartoon-older.jsonl"  # of before, its run made in another store
    spec = track.run_spec(TrackingConfig(), {"facegan.kind": "stage", "stage": "evaluate"})
    spec = {**{k: v for k, v in spec.items() if k != "store"}, "run_id": "e" * 32, "params_sent": True}
    gone.write_text(json.dumps({"op": "run", **spec}) + "\n")
    os.utime(gone, (1_000_000_000, 1_000_000_000))  # its stage's last write: the KILLED run's end
    parent_gone = tmp_path / ".facegan/tracking/align@cartoon-older.jsonl"  # its own run not made, its parent's was
    spec = track.run_spec(TrackingConfig(), {"facegan.kind": "stage", "stage": "align"})
    spec["parent"] = {**track.run_spec(TrackingConfig(), {"facegan.kind": "pipeline"}), "run_id": "d" * 32}
    parent_gone.write_text(json.dumps({"op": "run", **{k: v for k, v in spec.items() if k != "store"}}) + "\n")
    r = _cli(["track", "sync"], tmp_path, env)  # it failed on "Run ... not found" at every sync
    assert r.returncode == 1 and "from 1 of 5 file(s)" in r.stdout, r.stderr[-2000:]
    assert f"{gone.name}: its run {'e' * 32} is not in sqlite:///mlflow.db: written for another store?" in r.stderr
    assert f"{parent_gone.name}: its run {'d' * 32} is not in" in r.stderr
    assert not list((tmp_path / ".facegan/tracking").glob("*.lock")) and gone.stat().st_mtime == 1_000_000_000
    down = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}  # a store down cannot say "not there"
    r = _cli(["track", "sync", str(gone)], tmp_path, down)
    assert r.returncode == 1 and f"not sent {gone} (kept)" in r.stderr, r.stderr[-2000:]
    r = _cli(["track", "sync", "--any-store"], tmp_path, env)  # the server moved: here, then
    assert r.returncode == 0 and "from 4 of 4 file(s)" in r.stdout, r.stderr[-2000:]
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("facegan").experiment_id], "tags.`facegan.kind` = 'stage'")
    assert sorted(run.data.tags["stage"] for run in runs) == ["align", "detect", "evaluate", "generate", "train"]
    (killed,) = [run for run in runs if run.data.tags["stage"] == "evaluate"]
    assert killed.info.status == "KILLED" and killed.info.end_time == 1_000_000_000_000
    (align,) = [run for run in runs if run.data.tags["stage"] == "align"]
    assert c.get_run(align.data.tags["mlflow.parentRunId"]).data.tags["facegan.kind"] == "pipeline"  # made here
    assert {run.data.params.get("a") for run in runs} == {"1", None}  # its params, sent again
    assert not list((tmp_path / ".facegan/tracking").glob("*.jsonl"))


def test_a_store_file_that_is_no_database_is_one_error_and_is_left_as_it_is(tmp_path, monkeypatch):
    """An mlflow.db of something else gave a 300-line traceback (`reproduce`, `timings`) or a screen of SQL cut off
    mid-address (`track sync`); an empty one was made into a new store by these commands that only read."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_stage("generate", "cartoon", _offline_params(f"http://127.0.0.1:{free_port()}"), tmp_path)  # a buffer
    _params_naming(tmp_path, "sqlite:///mlflow.db")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    for content, why in ((b"", "is an empty file, not an MLflow store"), (b"name,fd\n", "is not an SQLite database")):
        (tmp_path / "mlflow.db").write_bytes(content)
        for args in (["reproduce", "0" * 32], ["timings"], ["track", "sync"]):
            r = _cli(args, tmp_path, env)
            assert r.returncode in (1, 2) and why in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-3000:])
            assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert (tmp_path / "mlflow.db").read_bytes() == content  # not made into a store
        assert list((tmp_path / ".facegan/tracking").glob("generate@cartoon-*.jsonl"))  # the buffer is kept


def test_a_stage_tracking_into_a_file_that_is_no_database_says_so(tmp_path, monkeypatch, caplog):
    """The stage's one warning named SQLAlchemy's error, cut at 200 characters, not what is wrong with the file."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlflow.db").write_text("name,fd\n")
    with caplog.at_level("WARNING", logger="facegan.track"):
        run_stage("generate", "cartoon", _offline_params(f"sqlite:///{tmp_path / 'mlflow.db'}"), tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records if "is unreachable" in r.getMessage()]
    assert f"({tmp_path / 'mlflow.db'} is not an SQLite database, so not an MLflow store" in warning, warning
    assert (tmp_path / "mlflow.db").read_text() == "name,fd\n"


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
    edited = track.pipeline_key("cartoon", params, tmp_path)
    assert edited != clean
    assert track.git_state(tmp_path)["git_dirty"] == "True"
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {a: 1}\n")  # its stages ran: the same execution
    assert track.pipeline_key("cartoon", params, tmp_path) == edited
    # edited again, still uncommitted: another execution too (a finished parent is taken again by its key, so two
    # edits sharing one would merge two executions' runs into one table row)
    (tmp_path / "src/code.py").write_text("x = 3\n")
    assert track.pipeline_key("cartoon", params, tmp_path) not in (clean, edited)


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


# ---- against an sqlite store of the test's own (no server) -------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch) -> str:
    """MLFLOW_TRACKING_URI: a new sqlite store in tmp_path; the working directory is tmp_path/work."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return uri


def _report_inputs(root: Path, monkeypatch) -> None:
    """What the report stage reads, in a few bytes: its metrics collection and ground-truth scoring stubbed."""
    import facegan.preprocess.score
    import facegan.report

    model = root / "data" / "models" / "cartoon"
    model.mkdir(parents=True)
    (model / "samples.png").write_bytes(b"not really a png")
    (model / "losses.csv").write_text("step,loss_d,loss_g\n1,0.5,0.7\n2,0.4,0.8\n")
    metrics = {"dataset": "cartoon", "fd_dlib": 42.0, "num_samples": 8, "training": {"steps": 4}}
    monkeypatch.setattr(facegan.report, "collect", lambda *a: json.loads(json.dumps(metrics)))
    monkeypatch.setattr(facegan.preprocess.score, "score", lambda *a: {})


def test_best_is_judged_by_the_registered_versions_own_score_and_scoring(sqlite_store, tmp_path, monkeypatch, caplog):
    """A re-run of one execution (the same dataset, commit and params, e.g. `dvc repro -f`) put its new distance on
    the run @best's version came from before the registry compared with it: a better retrain was never registered
    (@best kept the old checkpoint, its run showing the new distance) and a worse one lowered the bar. A best scored
    with another Inception resize was a yardstick too."""

    from mlflow.tracking import MlflowClient

    import facegan.report
    from facegan import track
    from facegan.io import sha256_file

    root = tmp_path / "work"
    _report_inputs(root, monkeypatch)
    ckpt = root / "data" / "models" / "cartoon" / "checkpoint.pt"
    score = {"fd_dlib": 0.0}
    monkeypatch.setattr(
        facegan.report,
        "collect",
        lambda *a: {"dataset": "cartoon", **score, "num_samples": 8, "training": {"steps": 4}},
    )
    c = MlflowClient(sqlite_store)

    def report(content: bytes, fd: float, **evaluate) -> tuple[str, str]:
        ckpt.write_bytes(content)
        score["fd_dlib"] = fd
        params = _offline_params(sqlite_store)
        run_stage(
            "report",
            "cartoon",
            params.model_copy(update={"evaluate": params.evaluate.model_copy(update=evaluate)}),
            root,
        )
        best = c.get_model_version_by_alias("facegan-cartoon", "best")
        return str(best.version), best.tags["checkpoint_sha256"]

    assert report(b"generator A", 2.0) == ("1", sha256_file(ckpt))
    assert report(b"generator B", 1.0) == ("2", sha256_file(ckpt))  # the same execution, better: registered
    b = sha256_file(ckpt)
    assert report(b"generator C", 3.0) == ("2", b)  # worse than @best's own 1.0, whatever the run now says
    assert report(b"generator C", 3.0, mode="clean") == ("2", b)  # Inception's resize: no matter to fd_dlib
    assert report(b"generator B", 1.0) == ("2", b)  # @best's very checkpoint: no second version of it
    assert len(c.search_model_versions("name = 'facegan-cartoon'")) == 2
    with logs_of(caplog):  # not comparable: it takes @best
        assert report(b"generator D", 5.0, num_samples=6) == ("3", sha256_file(ckpt))
    said = "facegan-cartoon@best (version 2) was not scored as this run (evaluate.num_samples 16 vs 6)"
    assert said in caplog.text
    tags = c.get_model_version("facegan-cartoon", "3").tags
    assert tags["fd_dlib"] == "5.0" and tags["evaluate.num_samples"] == "6" and "evaluate.mode" not in tags
    assert report(b"generator D", 4.0, num_samples=7) == ("3", tags["checkpoint_sha256"])  # the same one, rescored
    assert c.get_model_version("facegan-cartoon", "3").tags["evaluate.num_samples"] == "7"
    assert report(b"generator E", 4.5, num_samples=7) == ("3", tags["checkpoint_sha256"])  # worse, as it now stands
    for key in ("evaluate.num_samples", "evaluate.max_real", "dataset_sha256"):  # as versions before these tags
        c.delete_model_version_tag("facegan-cartoon", "3", key)
    assert report(b"generator F", 4.5) == ("3", tags["checkpoint_sha256"])  # unknown scoring: the values decide
    assert report(b"generator G", float("nan")) == ("3", tags["checkpoint_sha256"])  # no distance: not registered
    assert len(c.search_model_versions("name = 'facegan-cartoon'")) == 3
    # @best's checkpoint scored again by another metric: the old score's tags go, none is left to mislead
    ckpt.write_bytes(b"generator D")
    run_id = c.get_model_version("facegan-cartoon", "3").run_id
    scoring = {"evaluate.mode": "clean", "evaluate.max_real": "12"}
    assert not track.register_if_best(TrackingConfig(), run_id, "cartoon", ckpt, "fd_inception", 9.0, scoring)
    tags = c.get_model_version("facegan-cartoon", "3").tags
    assert {k: v for k, v in tags.items() if k != "checkpoint_sha256"} == {"fd_inception": "9.0", **scoring}


def test_report_names_an_unknown_experiment_and_an_output_folder_it_cannot_make(sqlite_store, tmp_path, monkeypatch):
    """`facegan report --experiment facgan` (a typo) said "no finished runs found", as for an empty store; an --out
    under a file ended in a NotADirectoryError traceback."""
    root = tmp_path / "work"
    _report_inputs(root, monkeypatch)
    params = _offline_params(sqlite_store)
    run_stage("report", "cartoon", params, root)
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    (root / "afile").write_text("x")

    def said(*argv: str) -> str:  # a process of its own: the CLI sets up logging (root handlers) for its life
        r = _cli(["report", *argv], root, {**os.environ, "MLFLOW_TRACKING_URI": sqlite_store})
        assert r.returncode == 2, r.stderr
        return " ".join(r.stderr.split())

    typo = said("--experiment", "facgan")
    assert "error: no experiment 'facgan' in sqlite:///" in typo and "experiments: Default, facegan" in typo
    sub = root / "afile" / "sub"
    assert f"error: facegan report --out: cannot write to {sub}: Not a directory" in said("--out", str(sub))
    assert (root / "afile").read_text() == "x"


def test_report_run_again_updates_its_execution_instead_of_adding_a_copy(sqlite_store, tmp_path, monkeypatch):
    """`facegan report DATASET` runs the report stage again: the same dataset, commit and params are the same
    execution, so its parent run is updated (one more report under it), not a new parent holding that report alone
    (each was one more copy of the model in the FID table and the `timings` execution). New params: a new parent."""
    from mlflow.tracking import MlflowClient

    from facegan import track
    from facegan.config import parse_params

    root = tmp_path / "work"
    _report_inputs(root, monkeypatch)
    params = _offline_params(sqlite_store)
    for _ in range(3):
        run_stage("report", "cartoon", params, root)
    c = MlflowClient(sqlite_store)
    exp = c.get_experiment_by_name("facegan").experiment_id
    (parent,) = c.search_runs([exp], "tags.`facegan.kind` = 'pipeline'")
    assert parent.info.status == "FINISHED" and parent.data.metrics["fd_dlib"] == 42.0
    assert parent.data.params["train.steps"] == "4"
    reports = c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [r.data.tags["stage"] for r in reports] == ["report"] * 3
    assert [r["run"] for r in track.pipeline_rows(TrackingConfig())] == [parent.info.run_id[:8]]
    assert list((root / ".facegan" / "tracking").glob("*.jsonl")) == []  # everything sent
    # the table's time is the stage runs' (here the newest report's), not the parent's span, which the wait
    # between reports would make longer and longer
    time.sleep(2.0)
    run_stage("report", "cartoon", params, root)
    (row,) = track.pipeline_rows(TrackingConfig())
    newest = max(
        c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"), key=lambda r: r.info.start_time
    )
    span = c.get_run(parent.info.run_id).info
    assert row["wall_s"] == round((newest.info.end_time - newest.info.start_time) / 1000, 1)
    assert row["wall_s"] < (span.end_time - span.start_time) / 1000 - 2.0

    raw = params.model_dump(mode="json")
    raw["train"]["steps"] = 5
    run_stage("report", "cartoon", parse_params(raw), root)  # another execution: a parent of its own
    parents = c.search_runs([exp], "tags.`facegan.kind` = 'pipeline'", order_by=["attributes.start_time ASC"])
    assert [p.data.params["train.steps"] for p in parents] == ["4", "5"]

    c.delete_run(parent.info.run_id)  # a parent deleted in MLflow is not joined again
    run_stage("report", "cartoon", params, root)
    parents = c.search_runs([exp], "tags.`facegan.kind` = 'pipeline'", order_by=["attributes.start_time ASC"])
    assert len(parents) == 2 and parents[-1].info.run_id != parent.info.run_id
    assert parents[-1].data.params["train.steps"] == "4" and parents[-1].info.status == "FINISHED"

    other = f"sqlite:///{tmp_path / 'other.db'}"  # another store: the execution's run there is a new one
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    run_stage("report", "cartoon", params, root)
    c = MlflowClient(other)
    (moved,) = c.search_runs([c.get_experiment_by_name("facegan").experiment_id], "tags.`facegan.kind` = 'pipeline'")
    assert moved.info.status == "FINISHED" and moved.data.params["train.steps"] == "4"
    assert len(c.search_runs([moved.info.experiment_id], f"tags.mlflow.parentRunId = '{moved.info.run_id}'")) == 1


def test_a_transfer_study_scored_otherwise_has_a_parent_of_its_own(sqlite_store, tmp_path, caplog):
    """The study's parent is keyed on its scoring: its runs (their evaluate has transfer.num_samples) and its table
    (params as given) share one, a study scored with another Inception resize or real subset gets another (it took
    the first one's finished parent, whose params then named the first scoring beside the second one's distances);
    a param a run already holds with another value is said in the log, not dropped without a word."""
    from mlflow.tracking import MlflowClient

    from facegan import track
    from facegan.config import parse_params

    root = tmp_path / "work"
    p = _offline_params(sqlite_store)
    assert p.transfer.enabled and p.transfer.num_samples == 24 and p.evaluate.num_samples == 16
    table = track.transfer_parent(p.tracking, p, root)
    runs = p.model_copy(update={"evaluate": p.transfer_evaluate()})  # what transfer.run_params gives a run
    assert track.transfer_parent(p.tracking, runs, root)["uid"] == table["uid"]
    assert table["params"]["evaluate.num_samples"] == "24" and table["params"]["evaluate.mode"] == p.evaluate.mode
    raw = p.model_dump(mode="json")
    raw["evaluate"].update(mode="clean", max_real=5)
    other = track.transfer_parent(p.tracking, parse_params(raw), root)
    assert other["uid"] != table["uid"]
    assert (other["params"]["evaluate.mode"], other["params"]["evaluate.max_real"]) == ("clean", "5")

    c = MlflowClient(sqlite_store)
    run = track.ensure_run(c, dict(table))
    with logs_of(caplog, "facegan"):
        track.send_params(c, run, {**table["params"], "evaluate.mode": "clean", "new.key": "1"})
    stored = c.get_run(run).data.params
    assert stored["evaluate.mode"] == p.evaluate.mode and stored["new.key"] == "1"
    assert f"evaluate.mode={p.evaluate.mode!r} (not 'clean')" in caplog.text


def test_a_missing_alias_of_the_51st_registered_model_is_said_so(sqlite_store):
    """The error for a model reference that names no version tells a missing alias from a missing model by asking
    for the model (a list of the first 50 models called the 51st unregistered) and says when it lists only some."""
    from mlflow.tracking import MlflowClient

    from facegan import track
    from facegan.track import ModelNotFound

    c = MlflowClient(sqlite_store)
    for i in range(51):
        c.create_registered_model(f"facegan-set{i:02d}")
    with pytest.raises(ModelNotFound, match="model facegan-set50 has no alias 'best'"):
        track.registry_checkpoint("models:/facegan-set50@best", TrackingConfig())
    with pytest.raises(ModelNotFound, match=r"no registered model 'facegan-zzz' .*facegan-set49, …\)"):
        track.registry_checkpoint("models:/facegan-zzz@best", TrackingConfig())


def test_the_fid_table_reads_every_page_of_the_store(sqlite_store, monkeypatch):
    """A store holding more pipeline runs than one search page returns lists all of them, newest first (one page of
    1000 left the older executions out of the table without a word); here a page is 2 runs."""
    from mlflow.tracking import MlflowClient

    from facegan import track

    c = MlflowClient(sqlite_store)
    exp = c.create_experiment("facegan")
    made = []
    for i in range(5):
        tags = {"facegan.kind": "pipeline", "dataset": "cartoon", "model": "dcgan", "facegan.pipeline_key": f"k{i}"}
        r = c.create_run(exp, start_time=1_700_000_000_000 + i * 60_000, tags=tags).info.run_id
        c.log_metric(r, "fd_dlib", 40.0 + i)
        c.set_terminated(r, "FINISHED", end_time=1_700_000_000_000 + i * 60_000 + 1000)
        made.append(r[:8])
    monkeypatch.setattr(track, "_PAGE", 2)
    assert [r["run"] for r in track.pipeline_rows(TrackingConfig())] == made[::-1]
    assert [r.info.run_id[:8] for r in track._newest(c, [exp], "", 3)] == made[:1:-1]


def test_parents_copied_by_reports_run_again_count_once(sqlite_store):
    """Stores written before a report run again updated its execution hold copies of its parent (same pipeline key,
    host and folder) with only that report under them: the FID table shows the execution once and `timings` takes
    the execution's newest run of each stage, wherever it is."""
    from mlflow.tracking import MlflowClient

    from facegan import track

    c = MlflowClient(sqlite_store)
    exp = c.create_experiment("facegan")
    t = [1_700_000_000_000]

    def make(tags: dict, parent: str | None = None, minutes: float = 1.0, fd: float | None = None) -> str:
        tags = {**tags, **({"mlflow.parentRunId": parent} if parent else {})}
        r = c.create_run(exp, start_time=t[0], tags=tags).info.run_id
        if fd is not None:
            c.log_metric(r, "fd_dlib", fd)
        c.set_terminated(r, "FINISHED", end_time=t[0] + int(minutes * 60_000))
        t[0] += int(minutes * 60_000) + 1000
        return r

    where = {"facegan.host": "h", "facegan.root": "/p"}
    pipeline = {"facegan.kind": "pipeline", "dataset": "cartoon", "model": "dcgan", "loss": "ns", **where}
    first = make({**pipeline, "facegan.pipeline_key": "k1"}, fd=40.0)
    for stage, minutes in (("detect", 1), ("train", 10), ("report", 0.5)):
        make({"facegan.kind": "stage", "stage": stage, "dataset": "cartoon"}, first, minutes)
    copies = [make({**pipeline, "facegan.pipeline_key": "k1"}, fd=40.0) for _ in range(2)]
    for parent in copies:
        make({"facegan.kind": "stage", "stage": "report", "dataset": "cartoon"}, parent, 0.25)
    elsewhere = make({**pipeline, "facegan.pipeline_key": "k1", "facegan.root": "/q"}, fd=41.0)  # another folder
    sketch = make({**pipeline, "dataset": "sketch", "facegan.pipeline_key": "k2"}, fd=70.0)
    make({"facegan.kind": "stage", "stage": "train", "dataset": "sketch"}, sketch, 4)

    cfg = TrackingConfig()
    assert [r["run"] for r in track.pipeline_rows(cfg)] == [x[:8] for x in (sketch, elsewhere, copies[-1])]
    assert [r["run"] for r in track.pipeline_rows(cfg, dataset="cartoon")] == [x[:8] for x in (elsewhere, copies[-1])]

    c.delete_run(elsewhere)
    got = {r.info.run_id: sorted(s.data.tags["stage"] for s in stages) for r, stages in track.latest_execution(cfg)}
    assert got == {copies[-1]: ["detect", "report", "train"], sketch: ["train"]}
    (cartoon,) = [stages for r, stages in track.latest_execution(cfg) if r.info.run_id == copies[-1]]
    report = next(s for s in cartoon if s.data.tags["stage"] == "report")
    assert report.data.tags["mlflow.parentRunId"] == copies[-1]  # the newest report

    from facegan import timings

    seconds = {x.stage: round(x.seconds) for e in timings.collect(cfg) for x in e.timings}
    assert seconds == {"detect@cartoon": 60, "train@cartoon": 600, "report@cartoon": 15, "train@sketch": 240}


class _FlakyStore:
    """An MlflowClient whose first `fails` batches of params raise ConnectionError (the store went away)."""

    def __init__(self, uri: str, fails: int):
        from mlflow.tracking import MlflowClient

        self.real, self.fails = MlflowClient(uri), fails

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        if params and self.fails:
            self.fails -= 1
            raise ConnectionError("the store went away")
        return self.real.log_batch(run_id, metrics=metrics, params=params, tags=tags)


def test_params_refused_right_after_the_run_was_created_are_sent_later(sqlite_store, tmp_path, monkeypatch):
    """The store creates the run, then fails on its params: the next delivery (the same process, or `track sync`
    of the buffer it left) sends them; they were lost (the run id made the run look complete)."""
    from facegan import track

    cfg = TrackingConfig()
    store = _FlakyStore(sqlite_store, fails=1)
    monkeypatch.setattr(track, "client", lambda cfg: store)

    t = track.Tracker(cfg, tmp_path / "own.jsonl", track.run_spec(cfg, {"stage": "cyclegan"}, {"a": 1, "b": None}))
    t.log_metrics({"loss": 1.0}, 1)
    assert t.run_id and t.pending  # created, then the params failed: everything kept
    assert t.flush() and not t.pending
    t.end()
    run = store.real.get_run(t.run_id)
    assert run.data.params == {"a": "1", "b": "null"} and run.info.status == "FINISHED"
    assert run.data.metrics == {"loss": 1.0}

    # a parent whose params failed where it was made; the stage's process then died: `track sync` sends them
    store.fails = 1
    parent = track.run_spec(cfg, {"facegan.kind": "pipeline"}, {"train.steps": 4})
    child = track.Tracker.open(cfg, tmp_path, "detect", track.run_spec(cfg, {"stage": "detect"}, None, parent))
    child.log_metrics({"ok": 12.0})
    assert child.pending and parent["run_id"] and not child.run_id
    track._unlock(child._lock)  # what the kernel does when the process dies
    assert track.sync(cfg, child.buffer) == 2  # the metric + the end marker
    header = store.real.get_run(parent["run_id"])
    assert header.data.params == {"train.steps": "4"}
    run = store.real.search_runs([header.info.experiment_id], f"tags.mlflow.parentRunId = '{parent['run_id']}'")[0]
    assert run.data.metrics == {"ok": 12.0} and run.info.status == "KILLED"


def test_a_buffer_whose_last_line_was_cut_off_is_synced_without_it(sqlite_store, tmp_path, caplog):
    """A process killed while appending a record leaves half a line: the whole records before it are sent (the
    file was skipped on every `track sync`); the half line is named in a warning. Files `sync_all` cannot send
    are counted apart from those it sent."""
    from facegan import track

    cfg = TrackingConfig()
    spec = track.run_spec(cfg, {"stage": "train"})
    metric = {"op": "metric", "key": "loss", "step": 1, "ts": 1_700_000_000_000}
    lines = [{"op": "run", **spec}, {**metric, "value": 1.0}, {**metric, "value": 2.0, "step": 2}]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(json.dumps(o) + "\n" for o in lines) + json.dumps({**metric, "value": 3.0})[:25])
    damaged = tmp_path / "damaged.jsonl"  # a damaged line that is not the last one is not dropped silently
    damaged.write_text(json.dumps(lines[0]) + "\n" + '{"op": "met\n' + json.dumps(lines[1]) + "\n")
    live = track.Tracker.open(cfg, tmp_path, "live", track.run_spec(cfg, {"stage": "detect"}))  # holds its lock

    assert track.sync(cfg, cut) == 3 and not cut.exists()  # 2 metrics + the end marker
    assert any(str(cut) in r.message and "cut off" in r.message for r in caplog.records)
    assert sum("cut off" in r.message for r in caplog.records) == 1  # the buffer is read once
    again = {"op": "run", **track.run_spec(cfg, {"stage": "again"})}
    cut.write_text(json.dumps(again) + "\n" + json.dumps(lines[1]) + '\n{"op": "metric", "ke')  # once more
    done = track.sync_all(cfg, [damaged, cut, live.buffer])
    assert done.sent == 2 and done.files == [cut] and not cut.exists()
    assert [(f, why.split(": ", 1)[1][:7]) for f, why in done.skipped] == [
        (damaged, "line 2 "),
        (live.buffer, "in use "),
    ]
    assert done.failed == [] and done.left == 2 and damaged.exists()
    from mlflow.tracking import MlflowClient

    c = MlflowClient(sqlite_store)
    (run,) = c.search_runs([c.get_experiment_by_name("facegan").experiment_id], "tags.stage = 'train'")
    assert [m.value for m in c.get_metric_history(run.info.run_id, "loss")] == [1.0, 2.0]
    live.end()


def test_registered_generator_takes_rows_where_a_batch_left_columns_out(monkeypatch):
    """A pandas batch where some rows give labels (or n, seed) and others not holds NaN there: the row takes the
    default ('nan' was a label: LabelError "label 'nan'"); a bad value is one clear error."""
    import types

    import pandas as pd

    import facegan.sample
    from facegan import track

    calls = []
    monkeypatch.setattr(facegan.sample, "sample_checkpoint", lambda *a: calls.append(a) or len(calls))
    model = track._generator_model_class()()
    ctx = types.SimpleNamespace(artifacts={"checkpoint": "g/checkpoint.pt"})
    ckpt = Path("g/checkpoint.pt")
    assert model.predict(ctx, pd.DataFrame([{"n": 2, "seed": 7, "labels": "hair=red"}, {"n": 1, "seed": 8}])) == [1, 2]
    assert calls == [(ckpt, 2, 7, "hair=red"), (ckpt, 1, 8, "")]  # not "nan"
    calls.clear()
    assert model.predict(ctx, pd.DataFrame([{"n": 3}, {"seed": 5.0}, {}])) == [1, 2, 3]
    assert calls == [(ckpt, 3, 0, ""), (ckpt, 1, 5, ""), (ckpt, 1, 0, "")]
    assert all(type(v) is int for call in calls for v in call[1:3])
    for row, msg in (
        ({"n": 2.5}, r"input row 0: n must be a whole number >= 1, not 2.5"),
        ({"n": 0}, r"input row 0: n must be a whole number >= 1, not 0"),
        ({"seed": "x"}, r"input row 0: seed must be a whole number >= 0, not 'x'"),
        ({"labels": 3}, r"input row 0: labels must be text \(NAME=VALUE,...\), not 3"),
    ):
        with pytest.raises(ValueError, match=msg):
            model.predict(ctx, pd.DataFrame([row]))


_NO_STORE = "no MLflow store at mlflow.db (nothing tracked yet: run `dvc repro` first)"


def test_looking_up_a_model_never_makes_a_store(tmp_path, monkeypatch):
    """`facegan sample --model-uri` (and the explorer's look-ups) with the default sqlite:///mlflow.db and no such
    file: one error, and no empty mlflow.db left in the working directory."""
    from facegan import track
    from facegan.errors import TrackingError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = TrackingConfig()
    with pytest.raises(TrackingError) as e:
        track.download_checkpoint("models:/facegan-cartoon@best", cfg)
    assert not (tmp_path / "mlflow.db").exists()
    assert str(e.value) == "cannot fetch models:/facegan-cartoon@best: " + _NO_STORE
    with pytest.raises(track.ModelNotFound, match="no MLflow store at mlflow.db"):
        track.registry_checkpoint("models:/facegan-cartoon/1", cfg)
    with pytest.raises(track.ModelNotFound, match="no MLflow store at mlflow.db"):
        track.run_checkpoint("0" * 32, cfg)
    assert not (tmp_path / "mlflow.db").exists()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = _cli(["sample", "--model-uri", "models:/facegan-cartoon@best", "-o", "s"], tmp_path, env)
    assert r.returncode == 2 and "no MLflow store at mlflow.db" in r.stderr, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_sync_fails_while_a_buffer_it_cannot_send_is_left(tmp_path):
    """A buffer `track sync` skips (a damaged line, a live stage's) stays unsent: the command says so and exits 1
    (it said "sent 0 record(s) from 1 of 1 file(s)" and exited 0)."""
    from facegan import track

    cfg = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'never.db'}")
    head = json.dumps({"op": "run", **track.run_spec(cfg, {"stage": "train"})})
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(head + '\n{"op": "met\n{"op": "end", "status": "FINISHED", "ts": 1}\n')
    r = _cli(["track", "sync", str(damaged)], tmp_path, dict(os.environ))
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert r.stdout.strip() == "sent 0 record(s) from 0 of 1 file(s); 1 file(s) left unsent"
    assert f"skipped (kept): {damaged}: line 2 is not a JSON record" in r.stderr and damaged.exists()
    readme = tmp_path / "README.md"  # a file of something else: "mend or remove that line" was no help
    readme.write_text("# facegan\n\nTurn a folder of faces into a generator.\n")
    r = _cli(["track", "sync", str(readme)], tmp_path, dict(os.environ))
    assert r.returncode == 1 and f"skipped (kept): {readme}: not a facegan tracking buffer (line 1 is not" in r.stderr
    assert readme.read_text().startswith("# facegan")


def test_metric_names_fit_mlflow_and_stay_apart():
    from facegan.track import METRIC_KEY_MAX, metric_key

    assert metric_key("rejected: no face") == "rejected.no_face"
    long_a, long_b = ("rejected: near-duplicate of " + "d/" * 150 + name for name in ("a.png", "b.png"))
    a, b = metric_key(long_a), metric_key(long_b)
    assert len(a) == len(b) == METRIC_KEY_MAX and a != b


def test_stages_run_in_the_root_and_from_elsewhere_share_one_parent(tmp_path, monkeypatch):
    """A stage run from another folder with --root names the store `sqlite:////<root>/mlflow.db`, one run in the
    root `sqlite:///mlflow.db`: the parent record compared the two as text, so one execution got two parent runs,
    the first left RUNNING with its stages."""
    from mlflow.tracking import MlflowClient

    from conftest import ROOT
    from facegan import track
    from facegan.config import anchored, load_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    p = load_params(ROOT / "params.yaml")
    assert p.tracking.tracking_uri == "sqlite:///mlflow.db"
    monkeypatch.chdir(elsewhere)
    first = track.pipeline_parent(anchored(p.tracking, project), "cartoon", p, project)  # `facegan train --root`
    monkeypatch.chdir(project)
    second = track.pipeline_parent(anchored(p.tracking, project), "cartoon", p, project)  # `dvc repro` in the root
    assert first["run_id"] and second["run_id"] == first["run_id"] and second["uid"] == first["uid"]
    c = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = c.get_experiment_by_name(p.tracking.experiment).experiment_id
    assert len(c.search_runs([exp], "tags.`facegan.kind` = 'pipeline'")) == 1
    assert not (elsewhere / "mlflow.db").exists()
    monkeypatch.chdir(elsewhere)  # a record the code before wrote in the root names its store as written there
    cfg = anchored(p.tracking, project)
    assert track._reusable(cfg, {}, {"store": "sqlite:///mlflow.db"}, project)
    assert track._reusable(cfg, {}, {"store": "sqlite:///mlflow.db?timeout=30"}, project)
    assert not track._reusable(cfg, {}, {"store": "sqlite:///other.db"}, project)
    assert not track._reusable(cfg, {}, {"store": "http://127.0.0.1:5000"}, project)


def test_an_experiment_keeps_its_runs_files_beside_its_sqlite_store(tmp_path, monkeypatch):
    """MLflow's default put a new experiment's files in ./mlruns of the current folder: a stage run from another
    folder with --root left the project's params snapshots and registered generators there, for good."""
    from facegan import track

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = TrackingConfig(tracking_uri=f"sqlite:///{project / 'mlflow.db'}", experiment="faces 2024/b")
    c = track.client(cfg)
    exp = track.experiment_id(cfg)
    assert c.get_experiment(exp).artifact_location == str(project / "mlruns" / "faces_2024_b")
    run = c.create_run(exp)
    c.log_text(run.info.run_id, "train:\n", "params.yaml")
    assert (project / "mlruns" / "faces_2024_b" / run.info.run_id / "artifacts" / "params.yaml").is_file()
    assert list(elsewhere.iterdir()) == []
    server = TrackingConfig(tracking_uri="http://127.0.0.1:1")
    assert track.artifact_location(server.tracking_uri, "x") is None  # a server decides where its files go


@pytest.mark.parametrize(
    ("written", "exported"),
    [
        (None, "sqlite:///{root}/mlflow.db"),  # params.yaml's default store, anchored for DVC's temporary copies
        ("sqlite:///runs/mlflow.db  # a comment", "sqlite:///{root}/runs/mlflow.db"),
        ("'sqlite:///quoted.db'", "sqlite:///{root}/quoted.db"),
        ("http://mlflow-host:5000   # a team's server", ""),  # left to params.yaml: the Makefile named a local store
        ("sqlite:////srv/mlflow/mlflow.db", ""),  # absolute: the same from any copy
        ('"sqlite:///my runs.db"', "sqlite:///{root}/my runs.db"),  # quoted, with a space: the whole name
        ("mlruns", "{root}/mlruns"),  # a relative file store, anchored like the SQLite one
        ("{flow}", ""),  # tracking: {tracking_uri: ...}: a line this cannot read names no store over it
    ],
)
def test_make_exports_the_params_store_only_where_it_is_a_relative_sqlite_file(tmp_path, written, exported):
    """The Makefile exported MLFLOW_TRACKING_URI=sqlite:///<checkout>/mlflow.db whatever params.yaml said, and the
    variable wins over tracking.tracking_uri: under `make run`, `sweep`, `serve` or `explore` a team's server set in
    params.yaml was never used, without a word."""
    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "Makefile", tmp_path / "Makefile")
    store = f"  tracking_uri: {written}\n" if written else ""
    tracking = f"tracking:\n  enabled: true\n{store}  experiment: facegan\n"
    if written == "{flow}":
        tracking = "tracking: {enabled: true, tracking_uri: 'http://team:5000'}\n"
    (tmp_path / "params.yaml").write_text(tracking)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    show = ["make", "--no-print-directory", "--eval", 'show: ; @echo "[$$MLFLOW_TRACKING_URI]"', "show"]
    out = subprocess.run(show, cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"[{exported.format(root=tmp_path)}]"
    out = subprocess.run(
        show, cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": "http://x:1"}, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[http://x:1]"  # set outside make: it wins, as everywhere
