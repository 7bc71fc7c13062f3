"""params.yaml -> typed config: bad keys, types and values stop the run with one clear message."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from facegan.config import ParamsError, apply_overrides, flatten, load_params, parse_params


def _raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _error(raw: dict) -> str:
    with pytest.raises(ParamsError) as e:
        parse_params(raw)
    return str(e.value)


def test_project_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.datasets["cartoon"].source.kind == "cartoon"
    assert p.datasets["cartoon"].source.n == 2000
    assert p.train.model == "dcgan"


@pytest.mark.parametrize(
    ("backend", "score", "said"),
    [
        ("yunet", float("nan"), "detect.min_score: got nan; Input should be a finite number"),
        ("hog", float("inf"), "detect.min_score: got inf; Input should be a finite number"),
        ("yunet", -0.1, "detect: min_score -0.1: yunet's scores are confidences from 0 to 1"),
        ("blazeface", 1.5, "detect: min_score 1.5: blazeface's scores are confidences from 0 to 1"),
    ],
)
def test_a_detection_score_threshold_out_of_its_backend_s_range_is_refused(backend, score, said):
    """`facegan check` passed them: YuNet then failed inside OpenCV with an error blaming its model file ("replace
    it"), and a nan threshold dropped every face as "no face found"."""
    raw = _raw()
    raw["datasets"]["cartoon"]["detect"].update(backend=backend, min_score=score)
    assert said in _error(raw)
    raw["datasets"]["cartoon"]["detect"].update(backend="hog", min_score=-0.5)  # dlib's scores go below 0
    assert parse_params(raw).datasets["cartoon"].detect.score_threshold == -0.5


@pytest.mark.parametrize(
    ("runs", "seeds", "said"),
    [
        ({"baseline": {}}, [0, -1], "transfer.seeds.1: got -1; Input should be greater than or equal to 0"),
        ({"x/y": {}}, [0], "transfer row name 'x/y': use ASCII letters, digits, '-' and '_', starting with a letter"),
        ({"../up": {}}, [0], "transfer row name '../up': use ASCII letters"),
        ({"ADA": {}, "ada": {}}, [0], "transfer row names 'ADA' and 'ada' differ only in case"),
    ],
)
def test_transfer_rows_and_seeds_that_cannot_name_a_run_folder_are_refused(runs, seeds, said):
    """A negative seed passed `facegan check` and stopped the study after its first seed's fine-tune, reported under
    transfer.runs.<row>.seed; a row named `../../x` put its runs' folders outside data/."""
    raw = _raw()
    raw["transfer"].update(runs=runs, seeds=seeds)
    assert said in _error(raw)


def test_unknown_key_names_key_and_lists_allowed():
    raw = _raw()
    raw["train"]["lr"] = 0.1
    msg = _error(raw)
    assert "train.lr: unknown key" in msg
    assert "lr_d" in msg and "lr_g" in msg and "steps" in msg


def test_unknown_key_inside_dataset_source_lists_source_keys():
    raw = _raw()
    raw["datasets"]["cartoon"]["source"]["count"] = 5
    msg = _error(raw)
    assert "datasets.cartoon.source.count: unknown key" in msg
    assert "allowed keys here: face_scale, kind, max_rotation, n, seed, size" in msg


def test_wrong_type_names_value():
    raw = _raw()
    raw["train"]["steps"] = "many"
    msg = _error(raw)
    assert "train.steps: got 'many'" in msg and "integer" in msg


def test_wrong_choice_lists_allowed_values():
    raw = _raw()
    raw["datasets"]["cartoon"]["detect"]["backend"] = "hogg"
    msg = _error(raw)
    assert "datasets.cartoon.detect.backend: got 'hogg'" in msg and "'annotations'" in msg


@pytest.mark.parametrize(
    ("path", "value", "expect"),
    [
        (("datasets", "cartoon", "pack", "resolution"), 100, "power of two"),
        (("datasets", "cartoon", "matte", "fill"), [0, 0, 300], "0..255"),
        (("datasets", "cartoon", "source", "face_scale"), [0.5, 0.2], "min <= max"),
        (("train", "lr_g"), -1, "greater than 0"),
        (("evaluate", "extractors"), ["dlib", "dlib"], "listed twice"),
        (("workers",), 0, "greater than or equal to 1"),
    ],
)
def test_bad_values(path, value, expect):
    raw = _raw()
    node = raw
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    msg = _error(raw)
    assert ".".join(path) in msg and expect in msg


def test_pack_larger_than_upscale_is_refused():
    raw = _raw()
    raw["datasets"]["cartoon"]["pack"]["resolution"] = 256
    assert "pack.resolution (256) is larger than upscale.size (128)" in _error(raw)


def test_several_errors_reported_together():
    raw = _raw()
    raw["train"]["steps"] = 0
    raw["evaluate"]["num_samples"] = "x"
    msg = _error(raw)
    assert "2 invalid value(s)" in msg and "train.steps" in msg and "evaluate.num_samples" in msg


def test_yaml_flags_where_a_number_is_expected_are_refused():
    raw = _raw()
    raw["train"]["steps"] = True  # pydantic alone reads it as 1
    raw["train"]["stylegan2"] = {"conv_clamp": True}  # as 1.0: every activation clamped to +-1
    raw["train"]["lr_g"] = False
    msg = _error(raw)
    assert msg.startswith("params: 3 invalid value(s):")
    assert "train.steps: got true (a flag, not a number); Input should be a valid integer" in msg
    assert "train.lr_g: got false (a flag, not a number); Input should be a valid number" in msg
    assert "train.stylegan2.conv_clamp: got true (a flag, not a number)" in msg
    raw = _raw()
    raw["transfer"]["seeds"] = [0, True]  # pydantic alone: [0, 1]
    raw["datasets"]["cartoon"]["matte"]["fill"] = [False, 255, 255]
    msg = _error(raw)
    assert "transfer.seeds.1: got true (a flag, not a number)" in msg
    assert "datasets.cartoon.matte.fill.0: got false (a flag, not a number)" in msg
    raw = _raw()
    raw["train"]["steps"] = {"a": 1}  # a mapping given for a value is still shown
    assert "train.steps: got {'a': 1}; Input should be a valid integer" in _error(raw)
    raw = _raw()
    raw["train"].update(diffaugment=["color"], ada={"enabled": True})
    msg = _error(raw)  # a section's own error names its keys, without a dump of the whole section
    assert msg.endswith("  - train: choose one augmentation: diffaugment or ada.enabled, not both")


def test_unquoted_off_is_amp_off_and_flag_settings_give_one_message():
    raw = _raw()
    raw["train"]["amp"] = yaml.safe_load("off")  # YAML 1.1: false
    assert parse_params(raw).train.amp == "off"
    raw["train"]["amp"] = True
    assert "train.amp: got True; true names no precision: use 'bf16' or 'fp16'" in _error(raw)
    raw = _raw()
    raw["train"]["deterministic"] = "tru"
    raw["train"]["compile"] = "max_autotune"
    msg = _error(raw)
    assert msg.startswith("params: 2 invalid value(s):")  # one per key, not one per branch of bool | Literal
    assert "train.deterministic: got 'tru'; expected true, false or 'auto'" in msg
    expect = "expected true, false, 'default', 'reduce-overhead' or 'max-autotune'"
    assert f"train.compile: got 'max_autotune'; {expect}" in msg
    raw["train"].update(deterministic=False, compile="reduce-overhead")
    assert (parse_params(raw).train.deterministic, parse_params(raw).train.compile) == (False, "reduce-overhead")


def test_unknown_dataset_lists_known(tiny_params_obj):
    with pytest.raises(ParamsError, match="unknown dataset 'dogs'; the params file defines: cartoon"):
        tiny_params_obj.dataset("dogs")


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("train: [unclosed\nsteps: 3\n")
    with pytest.raises(ParamsError) as e:  # one line: where, what, and where the bracket was opened
        load_params(bad)
    assert str(e.value) == (
        f"{bad}: not valid YAML at line 2, column 6: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence that began at line 1, column 8)"
    )
    for text, said in (
        (
            "a: 1\n---\nb: 2\n",
            " at line 2, column 1: expected a single document in the stream (line 1, column 1); "
            "but found another document",
        ),
        (
            "a: &x 1\nb: &x 2\n",
            " at line 2, column 4: found duplicate anchor 'x'; first occurrence (line 1, column 4); second occurrence",
        ),
        ("a: 1\nb: x\x01y\n", " at line 2, column 5: the character U+0001 is not allowed in YAML"),
        ("a: 2026-02-30\n", ": a date or a tagged (!!) value it cannot build (day is out of range for month)"),
        ("a: !!timestamp x\n", ": a date or a tagged (!!) value it cannot build"),
        ("a: !!bool x\n", ": a date or a tagged (!!) value it cannot build"),
    ):
        bad.write_text(text)
        with pytest.raises(ParamsError) as e:
            load_params(bad)
        assert str(e.value) == f"{bad}: not valid YAML{said}", text
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad.write_bytes("train: {model: dcgan}  # caf\u00e9\n".encode("latin-1"))  # saved in another encoding
    with pytest.raises(ParamsError, match=r"p.yaml: not UTF-8 text \(byte 28: invalid continuation byte\); save it as"):
        load_params(bad)


def test_flatten_gives_dotted_leaves(tiny_params_obj):
    flat = flatten(tiny_params_obj)
    assert flat["train.lr_g"] == 0.0002
    assert flat["datasets.cartoon.source.n"] == 12
    assert all(not isinstance(v, dict) for v in flat.values())


def test_stage_with_bad_params_stops_before_any_work(tmp_path):
    raw = _raw()
    raw["train"]["loss"] = "wasserstein-ish"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    r = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "generate.py"), "cartoon"], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode != 0
    assert "train.loss: got 'wasserstein-ish'" in r.stderr and "'nonsaturating'" in r.stderr
    assert not (tmp_path / "data").exists()


def test_dotted_overrides_are_merged_and_validated_as_one_whole():
    from facegan.config import apply_overrides, load_params

    raw = {"train": {"steps": 4, "ada": {"enabled": False}}}
    out = apply_overrides(raw, {"train.ada.enabled": True, "cyclegan.steps": 9, "workers": 3})
    assert out == {"train": {"steps": 4, "ada": {"enabled": True}}, "cyclegan": {"steps": 9}, "workers": 3}
    assert raw["train"]["ada"]["enabled"] is False  # the input is not modified
    with pytest.raises(ParamsError, match=r"override 'train.steps.x': train.steps is a value \(4\), not a section"):
        apply_overrides(raw, {"train.steps.x": 1})
    with pytest.raises(ParamsError, match="empty key part"):
        apply_overrides(raw, {"train..steps": 1})
    p = load_params(
        ROOT / "params.yaml",
        {"datasets.sketch.pack.resolution": 32, "datasets.cartoon.pack.resolution": 32, "train.loss": "hinge"},
    )
    assert p.datasets["sketch"].pack.resolution == 32 and p.train.loss == "hinge"
    with pytest.raises(
        ParamsError, match=r"params.yaml \+ overrides: 1 invalid value\(s\):\n  - train.stepz: unknown key"
    ):
        load_params(ROOT / "params.yaml", {"train.stepz": 3})


def test_commands_that_only_track_read_the_tracking_section(tmp_path, monkeypatch):
    from facegan.config import TrackingConfig, load_tracking

    monkeypatch.chdir(tmp_path)
    assert load_tracking() == TrackingConfig()  # no params.yaml here: the defaults
    (tmp_path / "params.yaml").write_text(
        "tracking: {tracking_uri: 'http://127.0.0.1:5000', experiment: x}\ntrain: {steps: -1}\n"
    )  # only `tracking` is read
    assert load_tracking().tracking_uri == "http://127.0.0.1:5000" and load_tracking().experiment == "x"
    (tmp_path / "bad.yaml").write_text("tracking: {tracking_url: x}\n")
    with pytest.raises(ParamsError, match="tracking.tracking_url: unknown key"):
        load_tracking(tmp_path / "bad.yaml")
    with pytest.raises(ParamsError, match="params file not found"):
        load_tracking(tmp_path / "missing.yaml")
    for text, kind in (("- tracking\n", "list"), ("", "NoneType")):  # read as the default store before
        (tmp_path / "list.yaml").write_text(text)
        with pytest.raises(
            ParamsError, match=f"list.yaml: expected a mapping of sections at the top level, got {kind}"
        ):
            load_tracking(tmp_path / "list.yaml")
    project = tmp_path / "project"  # --root without -p: the root's params.yaml first, then the current folder's
    project.mkdir()
    assert load_tracking(root=project).tracking_uri == "http://127.0.0.1:5000"
    (project / "params.yaml").write_text("tracking: {tracking_uri: sqlite:///runs.db}\n")
    assert load_tracking(root=project).tracking_uri == f"sqlite:///{project / 'runs.db'}"


def test_the_readme_params_snippets_are_valid_in_the_project_params():
    """Every YAML block of the README, set over params.yaml as dotted overrides, validates (documented keys
    cannot rot when a setting is renamed)."""
    blocks = re.findall(r"```ya?ml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "the README shows its params as ```yaml blocks"
    for block in blocks:
        over = flatten(yaml.safe_load(block))
        assert over, block
        parse_params(apply_overrides(_raw(), over), source=f"README block {block[:40]!r}")
    speed = flatten(yaml.safe_load(next(b for b in blocks if "amp_blocks" in b)))
    train = parse_params(apply_overrides(_raw(), speed)).train  # the settings take effect: a stylegan2 run
    assert (train.model, train.amp, train.stylegan2.amp_blocks, train.stylegan2.channel_max) == (
        "stylegan2",
        "fp16",
        4,
        512,
    )


@pytest.mark.parametrize(
    "name, expect",
    [
        ("bad name", "dataset name 'bad name': use ASCII letters, digits, '-' and '_', starting with a letter"),
        ("../x", "dataset name '../x': use ASCII letters"),
        ("café", "dataset name 'café': use ASCII letters"),  # NFC and NFD spellings look alike, fold differently
        ("1st", "dataset name '1st': use ASCII letters"),
        ("Cartoon", "dataset names 'cartoon' and 'Cartoon' differ only in case"),
        ("CycleGAN", "dataset name 'CycleGAN': reserved (data/checkpoints/cyclegan/ is the CycleGAN stage's)"),
    ],
)
def test_dataset_names_are_folder_names_on_every_file_system(name, expect):
    raw = _raw()
    raw["datasets"][name] = raw["datasets"]["sketch"]
    assert expect in _error(raw)


def test_keys_lists_every_key_params_yaml_may_hold_with_its_default():
    """Keys the code reads that neither params.yaml nor the docs named (train.max_images, cyclegan.mirror, ...,
    from a review of the docs against the code): `facegan keys` lists every one, from the models that validate them."""
    from facegan.params_keys import keys, listing

    found = {k.name: k for k in keys()}
    assert found["train.max_images"].default == "null" and "seeded subset" in found["train.max_images"].description
    assert found["train.subset_seed"].default == "0" and found["cyclegan.mirror"].default == "True"
    assert found["train.stylegan2.lr_mapping"].default == "0.01" and found["evaluate.workers"].type == "int"
    assert found["datasets.<name>.align.template"].type == "'five' | 'ffhq'"
    assert found["datasets.<name>.source.kind"].default == "required"  # the folder kind's, listed after cartoon's
    assert "with source.kind cartoon: number of images" in found["datasets.<name>.source.n"].description
    # a section whose default is an instance set otherwise than its class: that instance's values
    assert found["transfer.enabled"].default == "False" and found["transfer.pretrain.model"].default == "'stylegan2'"
    assert found["train.model"].default == "'dcgan'"
    assert listing("datasets.cartoon.detect") == listing("datasets.<name>.detect")  # a dataset's name, as typed
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    written = {  # every key params.yaml sets is listed (a dataset's name as <name>; a transfer row's overrides aside)
        re.sub(r"^datasets\.[^.]+\.", "datasets.<name>.", k) for k in flatten(raw) if not k.startswith("transfer.runs.")
    }
    assert written and not written - set(found), sorted(written - set(found))
    assert listing("train.ada")[0] == "train.ada.enabled (bool; default: False)"
    assert listing("train.max_images") == [
        "train.max_images (int | null; default: null): train on a seeded subset of this many packed images "
        "(small-data studies); null = all"
    ]
    with pytest.raises(ValueError, match="no params key starts with 'trian'; sections: cyclegan, datasets, evaluate"):
        listing("trian")
    out = subprocess.run(
        [sys.executable, "-c", "from facegan.cli import main; main()", "keys", "cyclegan.mirror"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "cyclegan.mirror (bool; default: True)\n"
