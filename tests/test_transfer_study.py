"""The transfer study on tiny data: rows x seeds, the table's spread, noise floor and curves, reproducibility."""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import pytest

from conftest import killed_at, tiny_params
from facegan import io, transfer, transfer_table
from facegan.chain import run_stage
from facegan.config import ParamsError, parse_params
from facegan.errors import StageInputMissing
from facegan.layout import Layout

READY = ("generate", "detect", "verify", "align", "matte", "upscale", "quality", "pack", "refstats")


def study_params():
    raw = tiny_params(n=12).model_dump(mode="json")
    t = raw["transfer"]
    t["seeds"] = [0, 1]
    t["target_images"] = 6
    t["finetune"].update(steps=2, fid_every=1, fid_samples=8)
    t["runs"] = {"baseline": {}, "ada": {"ada": {"enabled": True}}, "scratch": {"pretrained": False}}
    return parse_params(raw)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    p = study_params()
    root = tmp_path_factory.mktemp("study")
    for ds in ("cartoon", "sketch"):
        for stage in READY:
            run_stage(stage, ds, p, root)
    ready = tmp_path_factory.mktemp("ready")
    shutil.copytree(root / "data", ready / "data")  # prepared sets, before any training
    transfer.pretrain(p, root)
    for row, seed in transfer.runs(p):
        transfer.finetune(row, seed, p, root)
    return p, root, ready, transfer_table.table(p, root)


@pytest.mark.slow  # with the shared fixture: minutes (CI runs it in `make test-slow`)
def test_every_row_and_seed_runs_and_the_table_gives_their_spread(study):
    p, root, _, result = study
    rows = result["rows"]
    assert list(rows) == ["baseline", "ada", "scratch"]
    for r in rows.values():
        assert r["seeds"] == [0, 1] and r["kimg"] == pytest.approx(2 * 8 / 1000)
        f = r["final"]["dlib"]
        assert f["n"] == 2 and f["min"] <= f["mean"] <= f["max"] and f["std"] >= 0
        assert len(r["curves"][0]["fd_curve"]) == 2 and len(r["curves"][1]["rt"]) == 2  # FD at steps 1, 2
        assert all(-1 <= v <= 1 for _, v in r["curves"][0]["rt"])
        assert set(r["at_kimg"]) == {"0.008", "0.016"}
    assert rows["ada"]["ada_p_end"] is not None and rows["baseline"]["ada_p_end"] is None
    assert not rows["scratch"]["pretrained"] and rows["baseline"]["pretrained"]
    assert result["baseline"] == "baseline" and rows["baseline"]["vs_baseline"] == {}  # not with itself
    assert result["noise_floor"]["dlib"] > 0 and result["source_model"]["dlib"] > 0
    # the fine-tunes trained on the 6-image subset, the same for every run
    logs = [Layout(root, "sketch", f"{row}-s{s}").model / "checkpoint.pt" for row, s in transfer.runs(p)]
    assert all(path.is_file() for path in logs)
    md = (root / "data/transfer/fid_table.md").read_text()
    assert "Noise floor" in md and "| scratch | scratch |" in md and "fd_dlib (mean ± std)" in md
    curves = (root / "data/transfer/curves.csv").read_text().splitlines()
    assert curves[0] == "row,seed,curve,kimg,value" and any(",ada_p," in line for line in curves)
    for name in ("fid_vs_kimg.png", "overfitting.png"):
        assert (root / "data/transfer" / name).stat().st_size > 5000
    saved = json.loads((root / "data/transfer/fid_table.json").read_text())
    assert saved["rows"]["ada"]["final"]["dlib"]["mean"] == pytest.approx(rows["ada"]["final"]["dlib"]["mean"])


@pytest.mark.slow  # with the shared fixture: minutes (CI runs it in `make test-slow`)
def test_a_rerun_of_one_row_with_its_seed_gives_the_same_distance(study, tmp_path):
    """CPU training is bitwise reproducible and sampling is fixed: the same row and seed, trained again in
    another folder, gives the same Frechet distance (and the same in-training curve)."""
    p, root, ready, _ = study
    shutil.copytree(ready / "data", tmp_path / "data")
    shutil.copytree(root / "data/runs/cartoon/pretrain", tmp_path / "data/runs/cartoon/pretrain")
    transfer.finetune("ada", 1, p, tmp_path)
    for name in ("eval/metrics.json", "models/fid.csv", "models/losses.csv"):
        a = (Layout(root, "sketch", "ada-s1").evaluation.parent / name).read_bytes()
        b = (Layout(tmp_path, "sketch", "ada-s1").evaluation.parent / name).read_bytes()
        assert a == b, name


@pytest.mark.slow  # with the shared fixture: minutes (CI runs it in `make test-slow`)
def test_study_errors_name_the_row_the_seed_and_the_missing_model(study, tmp_path):
    p = study[0]
    with pytest.raises(ParamsError, match="unknown transfer row 'nope'; rows: baseline, ada, scratch"):
        transfer.finetune("nope", 0, p, tmp_path)
    with pytest.raises(ParamsError, match=r"seed 7 is not in transfer.seeds \[0, 1\]"):
        transfer.finetune("ada", 7, p, tmp_path)
    with pytest.raises(StageInputMissing, match="no pretrained model"):
        transfer.finetune("ada", 0, p, tmp_path)


@pytest.mark.slow  # with the shared fixture: minutes (CI runs it in `make test-slow`)
def test_a_killed_fine_tune_resumes_and_gives_the_uninterrupted_bytes(study, tmp_path, monkeypatch):
    """The study's runs go through the same checkpointed loop as `train`: killed at step 1, rerun, resumed."""
    p, root, ready, _ = study
    shutil.copytree(ready / "data", tmp_path / "data")
    shutil.copytree(root / "data/runs/cartoon/pretrain", tmp_path / "data/runs/cartoon/pretrain")
    with killed_at(monkeypatch, 1):
        transfer.finetune("baseline", 1, p, tmp_path)
    work = Layout(tmp_path, "sketch", "baseline-s1").checkpoints / "checkpoint.pt"
    assert work.is_file() and not Layout(tmp_path, "sketch", "baseline-s1").model.exists()
    transfer.finetune("baseline", 1, p, tmp_path)
    for name in ("eval/metrics.json", "models/fid.csv", "models/losses.csv"):
        a = (Layout(root, "sketch", "baseline-s1").evaluation.parent / name).read_bytes()
        b = (Layout(tmp_path, "sketch", "baseline-s1").evaluation.parent / name).read_bytes()
        assert a == b, name


@pytest.mark.slow  # with the shared fixture: minutes (CI runs it in `make test-slow`)
def test_the_table_refuses_runs_made_under_other_params(study, tmp_path):
    """The table gave every row the kimg of today's transfer.finetune.steps, and put runs fine-tuned from an older
    pretrained model beside new ones, without a word."""
    p, root, _, _ = study
    raw = p.model_dump(mode="json")
    raw["transfer"]["finetune"]["steps"] = 4
    with pytest.raises(
        transfer_table.StaleRun, match=r"baseline-s0/models/checkpoint.pt: the run trained 2 steps, train.st"
    ):
        transfer_table.table(parse_params(raw), root)
    raw = p.model_dump(mode="json")
    raw["transfer"]["runs"]["ada"] = {"ada": {"enabled": True, "target": 0.3}}
    with pytest.raises(transfer_table.StaleRun, match=r"ada-s0/.*train.ada.target: 0.6 -> 0.3.*finetune ada --seed 0"):
        transfer_table.table(parse_params(raw), root)
    shutil.copytree(root / "data", tmp_path / "data")
    pretrained = transfer.pretrained_checkpoint(p, tmp_path)
    pretrained.write_bytes(pretrained.read_bytes() + b"\0")  # trained again since: other bytes
    with pytest.raises(transfer_table.StaleRun, match="fine-tuned from another pretrained model than"):
        transfer_table.table(p, tmp_path)


def test_a_run_is_current_when_its_checkpoint_matches_its_row_today(tmp_path):
    """The table's check of each run, on checkpoints made here: current, each kind of difference, a project moved
    (init_from's folder), and a checkpoint older than the pretrained hash in its provenance."""
    from facegan.train.checkpoint import load_checkpoint, save_checkpoint

    p = study_params()
    pretrained = transfer.pretrained_checkpoint(p, tmp_path)
    pretrained.parent.mkdir(parents=True)
    pretrained.write_bytes(b"the pretrained model")
    ckpt = tmp_path / "run" / "checkpoint.pt"

    def save(row: str, **change) -> None:
        rp = transfer.run_params(p, row, tmp_path, 0)[0]
        prov = {"code": "c", "data": "d"} | ({"pretrained": io.sha256_file(pretrained)} if row != "scratch" else {})
        state = {"config": rp.train.model_dump(mode="json"), "step": rp.train.steps, "provenance": prov}
        for key, value in change.items():
            state[key] = value(state[key]) if callable(value) else value
        save_checkpoint(ckpt, state)

    def check(row: str) -> int:
        return transfer_table._check_current(transfer.run_params(p, row, tmp_path, 0)[0], row, 0, ckpt)

    save("baseline")
    assert check("baseline") == 2
    save("baseline", config=lambda c: {**c, "init_from": "/elsewhere/pretrain/models/checkpoint.pt"})  # moved
    assert check("baseline") == 2
    save("baseline", provenance={"code": "c", "data": "d"})  # made before provenance recorded the pretrained model
    assert check("baseline") == 2
    save("scratch")
    assert check("scratch") == 2
    stale = transfer_table.StaleRun
    with pytest.raises(stale, match=r"checkpoint.pt: trained from scratch, and the row fine-tunes now; fine-tune it"):
        check("baseline")
    save("baseline")
    with pytest.raises(stale, match=r"fine-tuned from a pretrained model, and the row trains from scratch now"):
        check("scratch")
    with pytest.raises(stale, match=r"train.ada.enabled: False -> True.*`facegan transfer finetune ada --seed 0`"):
        check("ada")
    save("baseline", step=1)
    with pytest.raises(stale, match=r"trained 1 steps, train.steps is 2 now"):
        check("baseline")
    save("baseline")
    pretrained.write_bytes(b"the pretrained model, trained again")
    with pytest.raises(stale, match=r"fine-tuned from another pretrained model than .*checkpoint.pt has now"):
        check("baseline")
    pretrained.unlink()
    with pytest.raises(StageInputMissing, match="no pretrained model at .* to compare"):
        check("baseline")
    assert load_checkpoint(ckpt)["step"] == 2


def test_a_pretrained_model_of_other_settings_and_a_run_scored_otherwise_are_refused(tmp_path):
    """The table put fine-tunes from a pretrained model trained under another transfer.pretrain, and runs scored on
    another number of samples (the distance's bias depends on it), beside today's without a word; `transfer
    finetune` fine-tuned from such a model."""
    from facegan.train.checkpoint import save_checkpoint

    p = study_params()
    pretrained = transfer.pretrained_checkpoint(p, tmp_path)
    pretrained.parent.mkdir(parents=True)
    rp = transfer.run_params(p, transfer.PRETRAIN, tmp_path)[0]
    state = {"config": rp.train.model_dump(mode="json"), "step": rp.train.steps, "provenance": {}}
    save_checkpoint(pretrained, state)
    transfer.check_pretrained(p, tmp_path)  # current
    raw = p.model_dump(mode="json")
    raw["transfer"]["pretrain"]["lr_g"] = 0.0005
    said = r"trained with another config \(transfer.pretrain.lr_g: .* -> 0.0005\); pretrain it again: `facegan transfer"
    with pytest.raises(transfer.StaleRun, match=said):
        transfer.check_pretrained(parse_params(raw), tmp_path)
    with pytest.raises(transfer.StaleRun, match=r"transfer.pretrain.lr_g"):  # before any fine-tune work
        transfer.finetune("baseline", 0, parse_params(raw), tmp_path)
    save_checkpoint(pretrained, {**state, "step": 1})  # a pretraining killed halfway
    with pytest.raises(transfer.StaleRun, match=r"the pretrained model trained 1 steps, transfer.pretrain.steps is 2"):
        transfer.check_pretrained(p, tmp_path)

    run = transfer.run_params(p, "baseline", tmp_path, 0)[0]
    ev = {"num_samples": run.evaluate.num_samples, "mode": run.evaluate.mode}
    transfer_table._check_scored(run, ev, tmp_path / "metrics.json", "again")
    with pytest.raises(transfer.StaleRun, match=rf"metrics.json: scored with other evaluate settings than today's "
                       rf"\(num_samples 96 -> {run.evaluate.num_samples}\); again"):  # fmt: skip
        transfer_table._check_scored(run, {**ev, "num_samples": 96}, tmp_path / "metrics.json", "again")


def test_the_curve_columns_name_the_extractor_of_the_in_training_distance(monkeypatch, tmp_path):
    """The "fd_<x> @ k kimg" columns named the first final extractor; the curve is train.fid_extractor's."""
    record = {"fd_curve": [(0.008, 0.5)], "rt": [], "ada_p": [], "kimg": 0.008, "curve_extractor": "attributes"}
    monkeypatch.setattr(transfer_table, "run_record", lambda p, row, seed, root: {**record, "final": {"dlib": 0.3}})
    monkeypatch.setattr(transfer_table, "_describe", lambda p, row, root: {"pretrained": True, "freeze_d": 0,
                                                                          "augment": "none"})  # fmt: skip
    monkeypatch.setattr(transfer_table, "noise_floor", lambda p, root: {})
    t = SimpleNamespace(runs=["baseline"], seeds=[0], source="cartoon", target="sketch", target_images=None)
    result = transfer_table.summarize(SimpleNamespace(transfer=t), tmp_path)
    assert result["curve_extractor"] == "attributes"
    assert "| fd_dlib | range | vs baseline | fd_attributes @ 0.008 kimg |" in transfer_table.markdown(result)


def test_one_seed_has_no_spread_to_be_beyond():
    """With one seed per row (the default pipeline's tiny study) a difference is never called beyond the spread
    and the table shows no fake "± 0"."""
    one, two = transfer_table._spread([0.25]), transfer_table._spread([0.30, 0.31])
    assert transfer_table._versus(one, transfer_table._spread([0.20])) == pytest.approx((0.05, False))
    assert transfer_table._versus(two, transfer_table._spread([0.20, 0.21]))[1] is True
    assert transfer_table._versus(two, transfer_table._spread([0.29, 0.305]))[1] is False
    row = {"pretrained": True, "freeze_d": 0, "augment": "none", "kimg": 0.3, "at_kimg": {}, "rt_end": None,
           "ada_p_end": None}  # fmt: skip
    result = {
        "target": "sketch", "source": "cartoon", "seeds": [0], "target_images": None,
        "source_model": {}, "noise_floor": {},
        "rows": {"baseline": {**row, "final": {"dlib": one}, "vs_baseline": {}},
                 "ada": {**row, "augment": "ada", "final": {"dlib": one}, "vs_baseline": {"dlib": (0.0, False)}}},
    }  # fmt: skip
    md = transfer_table.markdown(result)
    assert "| 0.25 (1 seed) | - |" in md and "±" not in md.split("| row |")[1] and "beyond" not in md


def _summarize(monkeypatch, tmp_path, finals: dict[tuple[str, int], dict[str, float]]) -> dict:
    """transfer_table.summarize over runs whose evaluation gave `finals` ({(row, seed): {extractor: fd}})."""
    rows = list(dict.fromkeys(row for row, _ in finals))
    seeds = list(dict.fromkeys(seed for _, seed in finals))
    t = SimpleNamespace(runs=rows, seeds=seeds, source="cartoon", target="sketch", target_images=None)
    record = {"fd_curve": [], "rt": [], "ada_p": [], "kimg": 0.3}
    monkeypatch.setattr(transfer_table, "run_record", lambda p, row, seed, root: {**record, "final": finals[row, seed]})
    monkeypatch.setattr(transfer_table, "_describe", lambda p, row, root: {"pretrained": True, "freeze_d": 0,
                                                                          "augment": "none"})  # fmt: skip
    monkeypatch.setattr(transfer_table, "noise_floor", lambda p, root: {})
    return transfer_table.summarize(SimpleNamespace(transfer=t), tmp_path)


def test_without_a_baseline_row_the_first_is_the_base_and_is_not_compared_with_itself(monkeypatch, tmp_path):
    result = _summarize(
        monkeypatch, tmp_path, {("plain", 0): {"dlib": 0.30}, ("plain", 1): {"dlib": 0.31},
                                ("ada", 0): {"dlib": 0.20}, ("ada", 1): {"dlib": 0.21}}
    )  # fmt: skip
    assert result["baseline"] == "plain" and result["rows"]["plain"]["vs_baseline"] == {}
    assert result["rows"]["ada"]["vs_baseline"]["dlib"] == pytest.approx((-0.1, True))
    md = transfer_table.markdown(result).splitlines()
    assert next(line for line in md if line.startswith("| row |")).endswith(
        "| range | vs plain | r_t end | ADA p end |"
    )
    plain = next(line for line in md if line.startswith("| plain |")).split(" | ")
    ada = next(line for line in md if line.startswith("| ada |")).split(" | ")
    assert plain[5:8] == ["0.305 ± 0.0071", "0.3–0.31", "-"] and ada[7] == "-0.1 (beyond spread)"


def test_a_distance_some_seeds_lack_is_spread_over_those_that_have_it(monkeypatch, tmp_path):
    result = _summarize(
        monkeypatch, tmp_path, {("baseline", 0): {"dlib": 1.0, "inception": 5.0}, ("baseline", 1): {"dlib": 2.0},
                                ("ada", 0): {"dlib": 1.5}, ("ada", 1): {"dlib": 2.5, "inception": 7.0}}
    )  # fmt: skip
    rows = result["rows"]
    assert rows["baseline"]["final"]["inception"]["n"] == 1 and rows["ada"]["final"]["inception"]["mean"] == 7.0
    assert rows["ada"]["vs_baseline"]["inception"] == (2.0, False)
    md = transfer_table.markdown(result)
    assert "| 5 (1 of 2 seeds) | - | - |" in md and "| 7 (1 of 2 seeds) | - | +2 |" in md


def test_nan_is_no_distance():
    assert transfer_table._spread([math.nan, 30.0]) == {"mean": 30.0, "std": 0.0, "min": 30.0, "max": 30.0, "n": 1}
    assert transfer_table._spread([math.nan]) is None


def test_studies_that_are_off_let_dvc_repro_run_the_rest(tmp_path):
    """transfer.enabled / cyclegan.enabled false: their DVC stages (pretrain, finetune@*, transfer-table, cyclegan)
    write outputs that say so and succeed, so `dvc repro` goes on (they stopped it with exit 2); the commands that
    ask for a study by name still refuse one that is off."""
    import yaml

    from conftest import make_dvc_project, sh

    root, env = make_dvc_project(tmp_path, tracking=False)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["transfer"]["enabled"] = raw["cyclegan"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for kind in ("processed", "stats"):  # the data stages' outputs these stages depend on (not read when off)
        for ds in ("cartoon", "sketch"):
            (root / "data" / kind / ds).mkdir(parents=True, exist_ok=True)
            (root / "data" / kind / ds / "stand-in").write_text(ds)
    out = sh(
        ["dvc", "repro", "--single-item", "--glob", "pretrain", "finetune@*", "transfer-table", "cyclegan"], root, env
    )
    assert out.count("Running stage") == 2 + len(raw["transfer"]["runs"]) + 1, out
    note = (root / "data/runs/cartoon/pretrain" / io.DISABLED).read_text()
    assert "transfer.enabled: false" in note
    assert (root / "data/runs/sketch/baseline-s0" / io.DISABLED).read_text() == note
    assert json.loads((root / "data/transfer/fid_table.json").read_text()) == {"enabled": False}
    assert (root / "data/transfer/fid_table.md").read_text() == note
    assert json.loads((root / "data/cyclegan/metrics.json").read_text()) == {"enabled": False}
    assert "cyclegan.enabled: false" in (root / "data/cyclegan/model" / io.DISABLED).read_text()
    assert "Transfer (data/transfer/fid_table.md):" in sh(["facegan", "summary"], root, env)
    p = parse_params(raw)
    with pytest.raises(ParamsError, match="transfer.enabled is false"):
        transfer.pretrain(p, root)
    with pytest.raises(ParamsError, match="cyclegan.enabled is false"):
        run_stage("cyclegan", "cartoon", p, root)


def test_the_header_counts_the_target_images_trained_on(tmp_path):
    """transfer.target_images above the packed target set's size trained on all of it, and the header said the
    config's number; without a packed set here it says the config's; None (all of the set) is no count."""
    import zipfile

    from facegan.layout import Layout

    def p(n):
        return SimpleNamespace(transfer=SimpleNamespace(target="sketch", target_images=n))

    assert transfer_table._target_images(p(500), tmp_path) == 500
    packed = Layout(tmp_path, "sketch").packed
    packed.mkdir(parents=True)
    with zipfile.ZipFile(packed / "dataset.zip", "w") as zf:
        for i in range(7):
            zf.writestr(f"00000/img{i:08d}.png", b"")
        zf.writestr("dataset.json", "{}")
    assert [transfer_table._target_images(p(n), tmp_path) for n in (500, 5, None)] == [7, 5, None]


def test_a_run_without_reference_statistics_stops_before_it_trains(tmp_path):
    """`transfer pretrain` trained the source model, then found no reference statistics to score it against
    (and kept the trained run, unscored): it says so before training now."""
    from facegan.errors import StageInputMissing

    p = study_params()
    with pytest.raises(
        StageInputMissing, match=r"no reference statistics in .*cartoon: run `facegan refstats cartoon`"
    ):
        transfer.pretrain(p, tmp_path)
    assert not (tmp_path / "data" / "runs").exists()
