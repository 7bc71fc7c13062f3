"""Prefect with real parts: a server on 127.0.0.1, `pipelines/serve.py` serving the deployments,
a scheduled deployment triggered through the API, caching on the second run, and the same outputs
as `dvc repro` for the same params."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, free_port, make_dvc_project, sh, wait_healthy

PY = sys.executable


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory):
    """A Prefect server with its own home (sqlite) on a free port; stopped at the end."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "facegan",
        "PATH": str(Path(PY).parent) + os.pathsep + os.environ["PATH"],
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [str(Path(PY).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_healthy(f"http://127.0.0.1:{port}/api/health", server, home / "server.log", timeout=120)
    yield env
    os.killpg(server.pid, 15)
    server.wait(timeout=60)


@pytest.fixture(scope="module")
def served(prefect_env, tmp_path_factory):
    """`pipelines/serve.py` on the tiny params of the DVC test project."""
    dvc_root, dvc_env = make_dvc_project(tmp_path_factory.mktemp("dvcproj"), tracking=False)
    root = tmp_path_factory.mktemp("prefectroot")
    (root / "params.yaml").write_text((dvc_root / "params.yaml").read_text())
    env = {**prefect_env, "TORCH_HOME": dvc_env["TORCH_HOME"]}
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            PY,
            str(ROOT / "pipelines" / "serve.py"),
            "--params",
            str(root / "params.yaml"),
            "--root",
            str(root),
            "--cron",
            "0 3 * * *",
        ],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield root, env, dvc_root, dvc_env
    os.killpg(proc.pid, 15)
    proc.wait(timeout=60)


def _api(env: dict, code: str) -> dict:
    """Run async client code in a fresh process against the test server; it prints one JSON line."""
    r = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


RUN = """
DEPLOYMENT = "facegan-full/nightly-cartoon"
import asyncio, json, time
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import LogSort, TaskRunSort

async def main():
    async with get_client() as c:
        for _ in range(120):  # the serve process registers the deployments
            try:
                dep = await c.read_deployment_by_name(DEPLOYMENT)
                break
            except Exception:
                await asyncio.sleep(1)
        run = await run_deployment(DEPLOYMENT, timeout=600, poll_interval=2)
        for _ in range(300):  # make sure the run and its task runs have settled
            run = await c.read_flow_run(run.id)
            if run.state and run.state.is_final():
                break
            await asyncio.sleep(2)
        tasks = await c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                                       sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)
        logs, page = [], None
        while page is None or len(page) == 200:
            page = await c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
                                     sort=LogSort.TIMESTAMP_ASC, limit=200, offset=len(logs))
            logs += page
        scheds = [s.schedule.cron for s in dep.schedules]
        state = run.state.type.value if run.state else "no state"
        print(json.dumps({"state": state, "schedules": scheds, "params": dep.parameters,
                          "tasks": sorted((t.name, t.state.name if t.state else "no state") for t in tasks),
                          "logs": [l.message for l in logs]}))
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def first_run(served) -> dict:
    """The nightly deployment run once through the server (the tests below share it; each passes alone)."""
    return _api(served[1], RUN)


def test_scheduled_deployment_runs_the_chain_then_caches(served, first_run):
    root, env, _, _ = served
    first = first_run
    assert first["state"] == "COMPLETED"
    assert first["schedules"] == ["0 3 * * *"] and first["params"]["dataset"] == "cartoon"
    names = [n for n, _ in first["tasks"]]
    assert sorted(names) == sorted(
        f"{s}@cartoon"
        for s in (
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
        )
    )
    assert {s for _, s in first["tasks"]} == {"Completed"}
    assert any("detect: 48 ok, 0 rejected" in m for m in first["logs"]), "library logs reach the Prefect run logs"
    metrics = json.loads((root / "data/reports/cartoon/metrics.json").read_text())
    assert metrics["fd_dlib"] > 0 and metrics["training"]["steps"] == 6

    second = _api(env, RUN)
    assert second["state"] == "COMPLETED"
    assert {s for _, s in second["tasks"]} == {"Cached"}, second["tasks"]


def test_prefect_and_dvc_repro_give_identical_outputs(served, first_run):
    root, _, dvc_root, dvc_env = served
    assert first_run["state"] == "COMPLETED"
    sh(["dvc", "repro", "report@cartoon"], dvc_root, dvc_env)  # the cartoon chain the flow ran
    for rel in (
        "data/processed/cartoon/dataset.zip",
        "data/reports/cartoon/metrics.json",
        "data/eval/cartoon/metrics.json",
        "data/stats/cartoon/stats.json",
    ):
        assert (root / rel).read_bytes() == (dvc_root / rel).read_bytes(), f"{rel} differs between Prefect and DVC"


@pytest.mark.slow  # ~2 min: the sketch chain, pretrain, two fine-tunes and the CycleGAN under Prefect
def test_transfer_and_cyclegan_deployments_run_their_chains(served):
    root, env, _, _ = served
    for name, stages in (
        ("facegan-transfer/default", ["train@cartoon", "train@sketch", "evaluate@sketch", "transfer-table"]),
        ("facegan-cyclegan/default", ["pack@sketch", "refstats@sketch", "cyclegan@cartoon"]),
    ):
        got = _api(env, RUN.replace("facegan-full/nightly-cartoon", name))
        assert got["state"] == "COMPLETED", (name, got["tasks"])
        names = {n for n, _ in got["tasks"]}
        assert set(stages) <= names, (name, names)
    table = json.loads((root / "data/transfer/fid_table.json").read_text())
    assert {"baseline", "freezed_ada"} <= set(table["rows"])
    assert all(r["final"]["dlib"]["mean"] > 0 for r in table["rows"].values())
    assert (root / "data/runs/cartoon/pretrain/models/checkpoint.pt").is_file()
    metrics = json.loads((root / "data/cyclegan/metrics.json").read_text())
    assert metrics["a_to_b"]["fd_dlib"] > 0 and metrics["b_to_a"]["fd_dlib"] > 0


def test_flow_parameters_are_validated_by_the_config_models(tmp_path):
    sys.path.insert(0, str(ROOT / "pipelines"))
    from flows import load

    from facegan.config import ParamsError

    with pytest.raises(ParamsError, match="train.steps: got 0"):
        load(str(ROOT / "params.yaml"), {"train.steps": 0})
    assert load(str(ROOT / "params.yaml"), {"train.loss": "hinge"}, model="acgan").train.model == "acgan"


def test_a_flow_for_another_root_tracks_into_that_root_s_store(prefect_env, tmp_path):
    """A flow given `root` from another folder wrote its MLflow runs into the process folder's mlflow.db (the
    default store is relative), while `dvc repro` in that root writes the root's: one project's runs in two
    stores, and `summary --root` read only one."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    env = {k: v for k, v in prefect_env.items() if k != "MLFLOW_TRACKING_URI"}  # params.yaml's sqlite:///mlflow.db
    code = "import sys; sys.path.insert(0, {!r}); from flows import evaluate; "
    code += "evaluate('cartoon', params_file={!r}, root={!r})"
    r = subprocess.run(
        [PY, "-c", code.format(str(ROOT / "pipelines"), str(ROOT / "params.yaml"), str(project))],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode != 0 and "no reference statistics in" in r.stdout + r.stderr, r.stderr[-3000:]
    assert (project / "mlflow.db").is_file() and not (elsewhere / "mlflow.db").exists()


def _flows():
    sys.path.insert(0, str(ROOT / "pipelines"))
    import flows

    return flows


def test_cache_key_covers_outputs_rewritten_under_other_params(tmp_path, monkeypatch):
    """The key of a stage changes when its outputs were rewritten under other params since (what `dvc repro`
    does between two Prefect runs), and comes back once the stage wrote them again under its own."""
    from conftest import tiny_params
    from facegan.chain import run_stage
    from facegan.config import parse_params

    flows = _flows()
    a = tiny_params()
    raw = a.model_dump(mode="json")
    raw["datasets"]["cartoon"]["source"]["seed"] = 7
    b = parse_params(raw)

    def key(p):
        return flows.stage_cache_key(
            None,
            {
                "stage": "generate",
                "dataset": "cartoon",
                "params_json": p.model_dump_json(),
                "root": str(tmp_path),
                "variant": None,
            },
        )

    before = key(a)
    run_stage("generate", "cartoon", a, tmp_path)  # Prefect's first run (the task body is run_stage)
    assert key(a) == before, "a second run must hit the cache"
    monkeypatch.chdir(tmp_path)
    run_stage("generate", "cartoon", a, ".")  # `dvc repro` with the same params (relative paths)
    assert key(a) == before, "outputs DVC wrote under the same params are reused"
    run_stage("generate", "cartoon", b, ".")  # `dvc repro` with other params
    assert key(a) != before, "outputs written under other params must not be reused"
    run_stage("generate", "cartoon", a, tmp_path)
    assert key(a) == before
    (tmp_path / "data/raw/cartoon/labels.csv").write_text("file,hair\n")  # a hand edit
    assert key(a) != before


@pytest.mark.slow  # ~1-2 min: a DVC chain to pack, three Prefect preprocess runs
def test_dvc_repro_with_other_params_between_two_prefect_runs(prefect_env, tmp_path_factory):
    """Prefect A, `dvc repro` of pack under B (only pack reruns: its inputs are unchanged), Prefect A again:
    pack must run again (today it was served from the cache, leaving B's dataset.zip under params A)."""
    root, env = make_dvc_project(tmp_path_factory.mktemp("prefect_dvc"), tracking=False)
    env = {**env, **{k: v for k, v in prefect_env.items() if k.startswith("PREFECT_")}}
    flow = (
        "import sys; sys.path.insert(0, {pipelines!r}); from flows import preprocess; "
        "preprocess('cartoon', {params!r}, {root!r})"
    ).format(pipelines=str(ROOT / "pipelines"), params=str(root / "params.yaml"), root=str(root))
    packed = root / "data/processed/cartoon/dataset.zip"
    sh(["dvc", "repro", "pack@cartoon"], root, env)  # dvc.lock and outputs under A
    sh([PY, "-c", flow], root, env)
    a_bytes, raw_mtime = packed.read_bytes(), (root / "data/raw/cartoon/labels.csv").stat().st_mtime_ns
    p = (root / "params.yaml").read_text()
    # every set (transfer pairs them), and a CycleGAN discriminator that fits 16 px (the params check refuses one
    # that does not)
    (root / "params.yaml").write_text(
        re.sub(r"\bd_layers: 3\b", "d_layers: 2", p.replace("resolution: 32", "resolution: 16"))
    )
    ran = sh(["dvc", "repro", "pack@cartoon"], root, env)
    assert [ln for ln in ran.splitlines() if ln.startswith("Running stage")] == ["Running stage 'pack@cartoon':"]
    assert packed.read_bytes() != a_bytes
    (root / "params.yaml").write_text(p)
    sh([PY, "-c", flow], root, env)
    assert packed.read_bytes() == a_bytes, "Prefect reused the dataset.zip `dvc repro` wrote under other params"
    assert (root / "data/raw/cartoon/labels.csv").stat().st_mtime_ns == raw_mtime, "generate was cached"
    mtime = packed.stat().st_mtime_ns
    sh([PY, "-c", flow], root, env)
    assert packed.stat().st_mtime_ns == mtime, "pack is cached again once it wrote its own outputs"


def test_each_stage_is_keyed_on_the_params_dvc_yaml_lists_for_it():
    """Layout.params (what a cache key and the outputs' record cover) is dvc.yaml's `params:` of every stage."""
    import yaml

    from facegan.chain import PAIR_STAGES, STAGES
    from facegan.layout import Layout

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in (*STAGES, *PAIR_STAGES):
        body = spec[stage].get("do", spec[stage])
        listed = [k.replace("${item}", "cartoon").replace("${key}", "cartoon") for k in body["params"]]
        assert Layout(ROOT, "cartoon").params(stage) == listed, stage


def test_a_stage_is_keyed_on_its_own_code_as_dvc_yaml_lists_it(tmp_path, request):
    """The key hashed every .py of facegan: a docstring edit in report.py reran every stage, training included,
    where `dvc repro` reruns report alone. Now a stage's code is its dvc.yaml code deps (files and folders):
    provenance.code_hash, also what a training checkpoint records as the code that made it."""
    import yaml

    import facegan
    from conftest import tiny_params
    from facegan import provenance
    from facegan.chain import PAIR_STAGES, STAGES
    from facegan.errors import StageError

    flows = _flows()
    assert Path(facegan.__file__).resolve().parents[2] == provenance.REPO == ROOT, "the facegan that runs the stages"
    stages = sorted({*STAGES, *PAIR_STAGES})
    for stage in stages:  # a key that cannot be computed turns Prefect's cache off with a log line, not an error
        assert provenance.stage_code(stage) and len(provenance.code_hash(stage)) == 64, stage
    repo = request.getfixturevalue("code_copy")  # after the checks above, which read the repository itself
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def listed(path: str) -> set[str]:
        """The stages whose dvc.yaml deps name the file or a folder above it: those `dvc repro` reruns."""
        deps = {stage: spec[stage].get("do", spec[stage])["deps"] for stage in stages}
        return {stage: any(path == d or path.startswith(d + "/") for d in deps[stage]) for stage in stages}

    def edit(path: str) -> dict[str, bool]:
        before = {stage: provenance.code_hash(stage) for stage in stages}
        with (repo / path).open("a") as f:
            f.write("# an edit\n")
        return {stage: provenance.code_hash(stage) != before[stage] for stage in stages}

    report_key = _key(flows, "report", tiny_params(), tmp_path)
    for path in ("src/facegan/report.py", "stages/detect.py", "src/facegan/preprocess/detect.py", "src/facegan/io.py"):
        assert edit(path) == listed(path), path
    assert listed("src/facegan/report.py") == {stage: stage == "report" for stage in stages}
    assert _key(flows, "report", tiny_params(), tmp_path) != report_key, "the cache key covers the stage's code"
    assert not any(edit("src/facegan/track.py").values()), "EXEMPT from dvc deps: tracking cannot change an output"
    # a folder dep (its .py files), a foreach stage, and data deps (keyed by their fingerprint) left out
    (repo / "dvc.yaml").write_text(
        "stages:\n  x:\n    foreach: [a]\n    do:\n      cmd: python stages/x.py\n      deps:\n"
        "        - stages/x.py\n        - src/facegan/ops\n        - data/raw/${item}\n"
    )
    (repo / "stages/x.py").write_text("")
    assert list(provenance.stage_code("x")) == ["stages/x.py", "src/facegan/ops"]
    before = provenance.code_hash("x")
    (repo / "src/facegan/ops/new.py").write_text("")
    after = provenance.code_hash("x")
    assert after != before, "a file added to a folder dep"
    (repo / "src/facegan/ops/notes.txt").write_text("")
    assert provenance.code_hash("x") == after, "no .py: not code"
    # a stale or broken dvc.yaml is one error saying what to do, not a traceback from inside a training
    again = r": restore it from git, or rewrite every stage's code deps from the source with `make deps`$"
    with pytest.raises(StageError, match=r"dvc.yaml: cannot read the code deps of stage 'y' \(no 'y'\)" + again):
        provenance.code_hash("y")
    (repo / "stages/x.py").unlink()
    with pytest.raises(StageError, match=r"dvc.yaml: stage 'x' lists stages/x.py, which cannot be read \(No such"):
        provenance.code_hash("x")
    (repo / "dvc.yaml").write_text("stages:\n<<<<<<< HEAD\n  x: [\n")
    with pytest.raises(StageError, match=r"dvc.yaml: cannot read the code deps of stage 'x' \(\w*Error: "):
        provenance.code_hash("x")
    (repo / "dvc.yaml").unlink()  # a facegan installed without its repository
    assert provenance.stage_code("train") == {"src/facegan": provenance.PACKAGE}


def _key(flows, stage: str, p, root: Path, variant: str | None = None) -> str:
    parameters = {"stage": stage, "dataset": "cartoon", "params_json": p.model_dump_json(), "root": str(root)}
    return flows.stage_cache_key(None, {**parameters, "variant": variant})


def test_a_change_of_train_reruns_train_onward_as_dvc_repro_does(tmp_path):
    """Two nights of full(models=[dcgan, wgan-gp]), or train.steps changed: generate, preprocessing, classifier
    and refstats keep their keys (they reran, rewriting every train stage's inputs); train's changes."""
    from conftest import tiny_params
    from facegan.chain import run_stage

    flows = _flows()
    a = tiny_params()
    other_model, more_steps = tiny_params(model="wgan-gp"), tiny_params(steps=5)
    for stage in ("generate", "detect", "pack", "classifier", "refstats"):
        assert _key(flows, stage, a, tmp_path) == _key(flows, stage, other_model, tmp_path), stage
        assert _key(flows, stage, a, tmp_path) == _key(flows, stage, more_steps, tmp_path), stage
    assert _key(flows, "train", a, tmp_path) != _key(flows, "train", more_steps, tmp_path)
    run_stage("generate", "cartoon", other_model, tmp_path)  # outputs written by another model's branch
    before = _key(flows, "generate", a, tmp_path)
    assert before == _key(flows, "generate", other_model, tmp_path), "its outputs are what `a` would write"
    run_stage("generate", "cartoon", a, tmp_path)
    assert _key(flows, "generate", a, tmp_path) == before


def test_a_fine_tune_key_follows_the_contents_of_its_pretrained_checkpoint(tmp_path):
    from conftest import tiny_params

    flows = _flows()
    pretrained = tmp_path / "pretrain.pt"
    pretrained.write_bytes(b"first pretraining")
    p = tiny_params(init_from=str(pretrained), model="stylegan2")
    before = _key(flows, "train", p, tmp_path, "baseline-s0")
    assert _key(flows, "train", p, tmp_path, "baseline-s0") == before
    assert _key(flows, "evaluate", p, tmp_path, "baseline-s0") == _key(flows, "evaluate", p, tmp_path, "baseline-s0")
    pretrained.write_bytes(b"pretraining rerun")  # same path, same params: another model to start from
    assert _key(flows, "train", p, tmp_path, "baseline-s0") != before


def test_full_prepares_once_and_puts_each_model_where_train_and_evaluate_look(monkeypatch):
    """classifier and refstats run once, before the models' branches; params.yaml's model trains into DVC's
    data/models/<dataset>, any other into data/runs/<dataset>/<model> (with one model as with several), and
    train(model=...) / evaluate(model=...) use the same folder."""
    flows = _flows()
    calls: list[tuple[list[str], str | None, str]] = []
    monkeypatch.setattr(flows, "create_progress_artifact", lambda *a, **k: None)
    monkeypatch.setattr(
        flows,
        "_run_stages",
        lambda stages, ds, p, root, variant=None, progress=None: calls.append((list(stages), variant, p.train.model)),
    )
    params = str(ROOT / "params.yaml")  # model: dcgan
    flows.full.fn("cartoon", ["dcgan", "wgan-gp"], params)
    assert calls == [
        (flows.READY, None, "dcgan"),
        (["train", "evaluate", "report"], None, "dcgan"),
        (["train", "evaluate", "report"], "wgan-gp", "wgan-gp"),
    ]
    calls.clear()
    flows.full.fn("cartoon", ["wgan-gp"], params)
    flows.train.fn("cartoon", "wgan-gp", params)
    flows.evaluate.fn("cartoon", "wgan-gp", params)
    flows.train.fn("cartoon", None, params)
    assert [v for _, v, _ in calls] == [None, "wgan-gp", "wgan-gp", "wgan-gp", None]


def test_dataset_stages_of_a_model_branch_run_without_its_variant(monkeypatch, tmp_path):
    """train(model=...) shares the dataset's classifier and reference statistics: those tasks get no variant
    (their outputs are the dataset's), train does."""
    flows = _flows()
    ran: list[tuple[str, str | None]] = []

    class Task:
        def with_options(self, **_):
            return self

        def __call__(self, stage, dataset, params_json, root, variant=None):
            ran.append((stage, variant))
            return 0.0

    class Logger:
        def info(self, *_):
            pass

    monkeypatch.setattr(flows, "stage_task", Task())
    monkeypatch.setattr(flows, "get_run_logger", lambda: Logger())
    flows.train.fn("cartoon", "wgan-gp", str(ROOT / "params.yaml"), str(tmp_path))
    assert ran == [("classifier", None), ("refstats", None), ("train", "wgan-gp")]


def test_serve_schedules_in_the_machines_time_zone_or_the_one_given(monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "pipelines"))
    import serve

    monkeypatch.setenv("TZ", "Europe/Paris")
    assert serve.local_timezone() == ("Europe/Paris", "this machine's, from $TZ")
    monkeypatch.setenv("TZ", "not/a-zone")
    assert serve.local_timezone()[0] != "not/a-zone"
    (nightly, *_) = serve.deployments(ROOT / "params.yaml", ROOT, "0 3 * * *", "America/New_York")
    assert nightly.schedules[0].schedule.timezone == "America/New_York"
    monkeypatch.setattr(sys, "argv", ["serve.py", "--params", str(ROOT / "params.yaml"), "--timezone", "Mars/Base"])
    with pytest.raises(SystemExit):
        serve.main()
    assert "not an IANA time zone name" in capsys.readouterr().err
    served: list = []
    monkeypatch.setattr(serve, "serve", lambda *d: served.extend(d))
    monkeypatch.setattr(sys, "argv", ["serve.py", "--params", str(ROOT / "params.yaml"), "--timezone", "Asia/Tokyo"])
    serve.main()
    assert "in time zone Asia/Tokyo (--timezone)" in capsys.readouterr().out
    assert served[0].schedules[0].schedule.timezone == "Asia/Tokyo"


def test_serve_refuses_bad_input_in_one_line_before_it_says_anything_else(monkeypatch, capsys, tmp_path):
    """A missing params file ended in a traceback; a cron that is not one was printed as the schedule, then a
    traceback; a root that is not there was served (each night a new, empty project there)."""
    sys.path.insert(0, str(ROOT / "pipelines"))
    import serve

    served: list = []
    monkeypatch.setattr(serve, "serve", lambda *d: served.extend(d))
    params = ["--params", str(ROOT / "params.yaml"), "--root", str(ROOT), "--timezone", "UTC"]
    for args, why in (
        (["--params", str(tmp_path / "nope.yaml")], f"error: params file not found: {tmp_path / 'nope.yaml'}"),
        (["--cron", "every night"], "error: --cron 'every night': Invalid cron string"),
        (["--root", str(tmp_path / "typo")], f"error: --root '{tmp_path / 'typo'}': no such folder"),
    ):
        monkeypatch.setattr(sys, "argv", ["serve.py", *params, *args])
        with pytest.raises(SystemExit) as stop:
            serve.main()
        out, err = capsys.readouterr()
        assert stop.value.code == 2 and why in err and "Traceback" not in err and out == "", (args, err)
    assert served == []


def test_a_flow_refuses_a_root_that_is_not_there(tmp_path):
    from facegan.config import ParamsError

    flows = _flows()
    with pytest.raises(ParamsError, match="root '.*typo': no such folder"):
        flows.load(str(ROOT / "params.yaml"), root=str(tmp_path / "typo"))
    assert not (tmp_path / "typo").exists()
