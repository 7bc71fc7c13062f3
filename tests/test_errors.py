"""Every known user error through the real entry points (`facegan ...`, `python stages/*.py`): one message
naming the culprit on stderr, exit code 2, no traceback."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, free_port, tiny_params
from facegan.errors import CheckpointError, first_line
from facegan.io import IMAGE_SUFFIXES, load_torch, write_image
from facegan.train.run import run_train

CLI = [sys.executable, "-c", "from facegan.cli import main; main()"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, layout) -> Path:
    """A root with the tiny packed cartoon set, a trained dcgan checkpoint, stages/ and a tiny params.yaml."""
    root = tmp_path_factory.mktemp("errors")
    shutil.copytree(layout.packed, root / "data" / "processed" / "cartoon")
    shutil.copytree(ROOT / "stages", root / "stages")
    p = tiny_params(steps=1, fid_every=0)
    (root / "params.yaml").write_text(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False))
    run_train(p.train, root / "data" / "processed" / "cartoon", root / "ckpt")
    (root / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    (root / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.zeros(2)}, root / "foreign.pt")
    torch.save(torch.nn.Linear(2, 2), root / "model.pt")  # a whole pickled module
    for i in range(2):
        write_image(root / "faces" / f"{i}.png", np.full((32, 32, 3), 60 * i, np.uint8))
    return root


def params_with(root: Path, name: str, **sections) -> str:
    """A copy of the project's params.yaml with dotted overrides, e.g. train={"device": "cuda"}."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    for section, over in sections.items():
        raw[section].update(over)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _models_dir_params(root: Path) -> str:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["datasets"]["cartoon"]["upscale"].update(backend="opencv", models_dir=str(root / "no-models"))
    path = root / "upscale.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _without_config(root: Path) -> Path:
    """A generator checkpoint without its config (it was a KeyError traceback)."""
    path = root / "noconfig.pt"
    state = torch.load(root / "ckpt" / "checkpoint.pt", weights_only=True)
    del state["config"]
    torch.save(state, path)
    return path


def _weights_of_another_width(root: Path) -> Path:
    """A checkpoint whose config says g_channels 16 while its weights are 8 wide."""
    path = root / "wide.pt"
    state = torch.load(root / "ckpt" / "checkpoint.pt", weights_only=True)
    state["config"]["g_channels"] = 16
    torch.save(state, path)
    return path


def _config_of_another_version(root: Path) -> Path:
    """A checkpoint whose saved train config has a key this facegan does not know (another version's)."""
    path = root / "renamed.pt"
    state = torch.load(root / "ckpt" / "checkpoint.pt", weights_only=True)
    state["config"]["zdim"] = state["config"].pop("z_dim")
    torch.save(state, path)
    return path


# (id, argv after the entry point (root-relative paths), expected text in stderr)
CASES = [
    (
        "params-unknown-key",
        lambda r: CLI + ["check", "-p", params_with(r, "bad_key", train={"lr_gee": 1})],
        "train.lr_gee: unknown key",
    ),
    (
        "params-bad-value",
        lambda r: CLI + ["check", "-p", params_with(r, "bad_value", train={"batch_size": 0})],
        "train.batch_size: got 0",
    ),
    ("params-file-missing", lambda r: CLI + ["check", "-p", str(r / "nope.yaml")], "params file not found"),
    (
        "params-moved-key",
        lambda r: CLI + ["check", "-p", params_with(r, "moved", train={"stylegan2": {"r1_gamma": 1}})],
        "stylegan2.r1_gamma is now r1.gamma",
    ),
    ("stage-unknown-dataset", lambda r: [sys.executable, "stages/detect.py", "nope"], "unknown dataset 'nope'"),
    ("stage-input-missing", lambda r: [sys.executable, "stages/pack.py", "cartoon"], "no manifest at"),
    (
        "model-file-missing",
        lambda r: [sys.executable, "stages/upscale.py", "cartoon", _models_dir_params(r)],
        "FSRCNN_x2.pb not found in",
    ),
    (
        "device-unavailable",
        lambda r: [sys.executable, "stages/train.py", "cartoon", params_with(r, "cuda", train={"device": "cuda"})],
        "no CUDA device",
    ),
    (
        "checkpoint-weights-mismatch",
        lambda r: CLI + ["sample", "-c", str(_weights_of_another_width(r)), "-o", str(r / "s")],
        "wide.pt: a dcgan checkpoint whose G weights do not fit the model its config describes: 16 shape mismatch(es),"
        " e.g. stem.0.weight: file (100, 32, 4, 4) vs model (100, 64, 4, 4); stem.1.weight: file (32,) vs model (64,);"
        " stem.1.bias: file (32,) vs model (64,); another facegan version wrote it, or its config was edited: retrain,"
        " or use the version that wrote it\n",
    ),
    (
        "checkpoint-without-config",
        lambda r: CLI + ["sample", "-c", str(_without_config(r)), "-o", str(r / "s")],
        "noconfig.pt: not a generator checkpoint of `facegan train` (keys: ",
    ),
    (
        "checkpoint-unreadable",
        lambda r: CLI + ["sample", "-c", str(r / "corrupt.pt"), "-o", str(r / "s")],
        "corrupt.pt: not a readable checkpoint",
    ),
    (
        "checkpoint-empty",
        lambda r: CLI + ["sample", "-c", str(r / "empty.pt"), "-o", str(r / "s")],
        "empty.pt: not a readable checkpoint (an empty file); give a checkpoint facegan wrote; a damaged one: remove",
    ),
    (
        "checkpoint-pickled-model",  # torch's own message is advice to load it with weights_only=False
        lambda r: CLI + ["sample", "-c", str(r / "model.pt"), "-o", str(r / "s")],
        "model.pt: not a readable checkpoint (torch.load refuses it with weights_only=True, which facegan keeps so "
        "that no file runs code: Unsupported global: GLOBAL torch.nn.modules.linear.Linear was not an allowed "
        "global by default); give a checkpoint facegan wrote; a damaged one: remove it and retrain",
    ),
    (
        "checkpoint-foreign",
        lambda r: CLI + ["sample", "-c", str(r / "foreign.pt"), "-o", str(r / "s")],
        "foreign.pt: not a facegan checkpoint (it holds: weights)",
    ),
    (
        "sample-out-under-a-file",
        lambda r: (
            CLI + ["sample", "-c", str(r / "ckpt" / "checkpoint.pt"), "-n", "1", "-o", str(r / "corrupt.pt" / "s")]
        ),
        "facegan sample --out: cannot write to ",
    ),
    (
        "labels-from-on-unconditional",
        lambda r: CLI + ["sample", "-c", str(r / "ckpt" / "checkpoint.pt"), "--labels-from", str(r / "ckpt")],
        "this model is unconditional: it takes no --labels-from",
    ),
    (
        "labels-on-unconditional",
        lambda r: CLI + ["sample", "-c", str(r / "ckpt" / "checkpoint.pt"), "-l", "hair=red"],
        "this model is unconditional",
    ),
    (
        "pretrained-mismatch",
        lambda r: [
            sys.executable,
            "stages/train.py",
            "cartoon",
            params_with(r, "mismatch", train={"model": "stylegan2", "init_from": str(r / "ckpt" / "checkpoint.pt")}),
        ],
        "holds a 'dcgan' model, train.model is 'stylegan2'",
    ),
    (
        "pretrained-missing",
        lambda r: [
            sys.executable,
            "stages/train.py",
            "cartoon",
            params_with(r, "nopre", train={"init_from": str(r / "missing.pt")}),
        ],
        "train.init_from: no such file",
    ),
    (
        "pretrained-unreadable",
        lambda r: [
            sys.executable,
            "stages/train.py",
            "cartoon",
            params_with(r, "junkpre", train={"init_from": str(r / "corrupt.pt")}),
        ],
        "corrupt.pt: not a readable checkpoint (no file torch.save wrote: neither a zip archive nor a pickle); "
        "train.init_from takes a facegan checkpoint.pt or a rosinality",
    ),
    (
        "extractor-unavailable",
        lambda r: CLI + ["fid", str(r / "faces"), str(r / "faces"), "--extractor", "inception"],
        "Inception weights",
    ),
    (
        "extractor-unknown",
        lambda r: CLI + ["fid", str(r / "faces"), str(r / "faces"), "--extractor", "vgg"],
        "unknown feature extractor 'vgg'",
    ),
    (
        "fid-too-few-images",
        lambda r: CLI + ["fid", str(r / "stages"), str(r / "faces")],
        "needs at least 2 images, found 0",
    ),
    (
        "tracking-server-down",
        lambda r: CLI + ["sample", "--model-uri", "models:/facegan-cartoon@best"],
        "cannot fetch models:/facegan-cartoon@best",
    ),
    (
        "reproduce-server-down",
        lambda r: CLI + ["reproduce", "0" * 32],
        "did not answer",
    ),
    (
        "report-server-down",
        lambda r: CLI + ["report", "-p", str(ROOT / "params.yaml"), "--root", str(r / "empty")],
        "did not answer",
    ),
    (
        "transfer-table-before-the-runs",
        lambda r: CLI + ["transfer", "table", "-p", str(ROOT / "params.yaml"), "--root", str(r / "empty")],
        "of the transfer study has not been evaluated: `facegan transfer finetune baseline --seed 0`",
    ),
    (
        "model-uri-malformed",
        lambda r: CLI + ["sample", "--model-uri", "models:/facegan-cartoon"],
        "model URI 'models:/facegan-cartoon': write models:/NAME@ALIAS",
    ),
    (
        "transfer-without-pretrain",
        lambda r: (
            CLI + ["transfer", "finetune", "baseline", "-p", str(ROOT / "params.yaml"), "--root", str(r / "empty")]
        ),
        "no pretrained model",
    ),
    (
        "cyclegan-not-packed",
        lambda r: [sys.executable, "stages/cyclegan.py", str(ROOT / "params.yaml")],
        "not packed yet",
    ),
    (
        "dataset-without-a-readable-image",
        lambda r: (
            CLI + ["dataset", "add", "mine", str(r / "stages"), "-p", params_with(r, "ds", train={}), "--root", str(r)]
        ),
        f"stages: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})",
    ),
    (
        "dataset-source-missing",
        lambda r: (
            CLI + ["dataset", "add", "mine", str(r / "nowhere"), "-p", params_with(r, "ds", train={}), "--root", str(r)]
        ),
        "nowhere: not found",
    ),
]


def _packed_root(root: Path, name: str, content: bytes | None) -> str:
    """A project root beside `root` whose cartoon dataset.zip is `content` (None: not there)."""
    other = root / name
    (other / "data" / "processed" / "cartoon").mkdir(parents=True, exist_ok=True)
    if content is not None:
        (other / "data" / "processed" / "cartoon" / "dataset.zip").write_bytes(content)
    return str(other)


CASES += [
    (
        "checkpoint-of-another-version",
        lambda r: CLI + ["sample", "-c", str(_config_of_another_version(r)), "-o", str(r / "s")],
        "renamed.pt: its train config is not one this facegan reads (written by another version?): zdim: unknown key; "
        "allowed keys here: ada, amp, aux_head,",
    ),
]
CASES += [
    (
        f"{stage}-{what}",
        lambda r, stage=stage, what=what, content=content: (
            CLI + [stage, "cartoon", "-p", str(r / "params.yaml"), "--root", _packed_root(r, what, content)]
        ),
        expected,
    )
    for stage in ("train", "refstats")
    for what, content, expected in (
        ("without-packed-set", None, "no packed dataset there: run the `pack` stage first"),
        ("damaged-packed-set", b"PK\x03\x04 cut off", "not a readable packed dataset (File is not a zip file)"),
    )
]


def _stats_root(root: Path, content: str) -> str:
    """A project root beside `root` with the packed cartoon set and a cartoon stats.json that is `content`."""
    other = root / "damaged-stats"
    if not other.exists():
        shutil.copytree(root / "data" / "processed", other / "data" / "processed")
    (other / "data" / "stats" / "cartoon").mkdir(parents=True, exist_ok=True)
    (other / "data" / "stats" / "cartoon" / "stats.json").write_text(content)
    return str(other)


def _metrics_root(root: Path, content: str) -> str:
    """A project root beside `root` where the transfer study's first run (baseline, seed 0) has metrics.json
    `content`."""
    from facegan.config import load_params
    from facegan.layout import Layout
    from facegan.transfer import run_params

    other = root / "damaged-metrics"
    _, dataset, variant = run_params(load_params(ROOT / "params.yaml"), "baseline", other, 0)
    Layout(other, dataset, variant).evaluation.mkdir(parents=True, exist_ok=True)
    (Layout(other, dataset, variant).evaluation / "metrics.json").write_text(content)
    return str(other)


CASES += [
    (
        "transfer-table-damaged-metrics",
        lambda r: (
            CLI + ["transfer", "table", "-p", str(ROOT / "params.yaml"), "--root", _metrics_root(r, '["fd_dlib"]')]
        ),
        "metrics.json: not an evaluation's metrics (a JSON list): run the stage that wrote it again",
    ),
    (
        "evaluate-damaged-reference-statistics",
        lambda r: CLI + ["evaluate", "cartoon", "-p", str(r / "params.yaml"), "--root", _stats_root(r, '{"extrac')],
        "stats.json: not JSON (Unterminated string starting at: line 1 column 2 (char 1)): re-run refstats",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_user_errors_are_one_clear_line_and_exit_2(project, case):
    _, argv, expected = case
    env = {
        **os.environ,
        "TORCH_HOME": str(project / "no-torch-cache"),
        "CUDA_VISIBLE_DEVICES": "",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "FACEGAN_DEBUG": "",
    }
    r = subprocess.run(argv(project), cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert expected in r.stderr, r.stderr[-3000:]
    assert r.stderr.count("error: ") == 1, r.stderr[-3000:]


def test_a_torch_file_that_does_not_load_says_why_in_one_phrase(tmp_path):
    def why(obj=None, raw: bytes | None = None, path: Path | None = None, **save) -> str:
        path = path or tmp_path / "f.pt"
        if raw is not None:
            path.write_bytes(raw)
        elif obj is not None:
            torch.save(obj, path, **save)
        with pytest.raises(CheckpointError) as e:
            load_torch(path, "ADVICE")
        message = str(e.value)
        assert message.startswith(f"{path}: not a readable checkpoint (") and message.endswith("); ADVICE")
        return message.split(" (", 1)[1].removesuffix("); ADVICE")

    refused = (
        "torch.load refuses it with weights_only=True, which facegan keeps so that no file runs code: "
        "Unsupported global: GLOBAL torch.nn.modules.linear.Linear was not an allowed global by default"
    )
    assert why(torch.nn.Linear(2, 2)) == refused  # torch's own words: load it with weights_only=False
    assert why(torch.nn.Linear(2, 2), _use_new_zipfile_serialization=False) == refused  # the torch < 1.6 format
    assert why(raw=b"") == "an empty file"
    assert why(raw=b"text") == "no file torch.save wrote: neither a zip archive nor a pickle"
    torch.save({"w": torch.zeros(4)}, tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    assert why(raw=whole[: len(whole) // 2]) == "a zip archive cut off: an interrupted copy or download?"
    damaged = tmp_path / "damaged.pt"  # torch's zip with its pickle overwritten
    with zipfile.ZipFile(tmp_path / "whole.pt") as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, b"\x80\x02garbage" if item.filename.endswith("data.pkl") else src.read(item))
    assert (
        why(path=damaged)
        == "a damaged pickle, or one torch's weights-only loader does not read: Unsupported operand 103"
    )
    assert why(raw=pickle.dumps({"w": 1}, protocol=2)) == "RuntimeError: Invalid magic number; corrupt file?"
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:  # a whole zip archive, not torch's
        z.writestr("notes.txt", "hello")
    assert why(raw=(tmp_path / "other.zip").read_bytes()).startswith("RuntimeError: ")
    (tmp_path / "folder.pt").mkdir()  # not readable at all: the OSError, not a second one from reading it
    assert why(path=tmp_path / "folder.pt").startswith("IsADirectoryError: ")
    legacy = tmp_path / "legacy.pt"  # what it reads, it returns: the old format too
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_torch(legacy, "ADVICE")["w"], torch.ones(3))


def test_first_line_reports_foreign_errors_in_one_line():
    assert first_line(ValueError("bad value\n  at line 2"), with_type=True) == "ValueError: bad value"
    assert first_line(EOFError()) == first_line(EOFError(), with_type=True) == "EOFError"
    assert first_line(RuntimeError("  \n")) == "RuntimeError"
    assert first_line(OSError("x" * 500), limit=10) == "x" * 10


def test_what_the_system_refuses_is_one_line_and_a_bug_keeps_its_traceback(capsys, monkeypatch):
    """A read-only output folder or a full disk in a stage was a PermissionError/OSError traceback; it is one
    `error:` line (exit 2) naming the file. An OSError of another kind is a bug: its traceback stays."""
    import errno

    from facegan.errors import user_errors

    monkeypatch.delenv("FACEGAN_DEBUG", raising=False)
    for err, said in (
        (PermissionError(errno.EACCES, "Permission denied", "/p/data/interim"), "/p/data/interim: Permission denied"),
        (OSError(errno.ENOSPC, "No space left on device", "/p/a.png"), "/p/a.png: No space left on device"),
        (OSError(errno.EROFS, "Read-only file system", "/p/x", None, "/p/y"), "/p/x: /p/y: Read-only file system"),
    ):
        with pytest.raises(SystemExit) as e, user_errors():
            raise err
        assert e.value.code == 2
        assert capsys.readouterr().err == f"error: {said}; fix that and run it again\n"
    with pytest.raises(FileNotFoundError), user_errors():  # not a refusal: facegan should have said what is missing
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/p/q")


def test_a_damaged_manifest_summary_or_metrics_file_is_named_with_its_line(tmp_path):
    """A manifest line, counts or metrics cut off or edited by hand were a pydantic or JSON traceback in `dataset
    show`, `fid` of a stage folder, the next stage and `report`."""
    from facegan.errors import DamagedRecord
    from facegan.io import read_json
    from facegan.manifest import Row, read_manifest, read_summary, write_manifest

    write_manifest(tmp_path, [Row(source="a.png", stage="detect")])
    good = (tmp_path / "manifest.jsonl").read_text()
    (tmp_path / "manifest.jsonl").write_text(good + '{"source": "b.png", "sta\n')
    with pytest.raises(DamagedRecord, match=r"manifest.jsonl, line 2: not a manifest row \(.*\): run the stage"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_bytes(good.encode() + b"\xff\xfe\n")
    with pytest.raises(DamagedRecord, match=r"manifest.jsonl: not UTF-8 text"):
        read_manifest(tmp_path)
    (tmp_path / "summary.json").write_text('{"ok": 3, "rej')
    with pytest.raises(DamagedRecord, match=r"summary.json: not JSON \(.*\): run the stage that wrote it again"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(DamagedRecord, match=r"summary.json: not a stage's counts \(a JSON list\)"):
        read_summary(tmp_path)
    write_manifest(tmp_path, [Row(source="a\u2028b.png", stage="detect")])  # a line separator in a name
    assert [r.source for r in read_manifest(tmp_path)] == ["a\u2028b.png"]
    (tmp_path / "metrics.json").write_text("")
    with pytest.raises(DamagedRecord, match=r"metrics.json: not JSON"):
        read_json(tmp_path / "metrics.json")
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


def test_an_image_of_a_packed_set_that_does_not_decompress_is_named(tmp_path):
    """A dataset.zip whose index reads but whose image data is damaged (Bad CRC) was a BadZipFile traceback."""
    from facegan.data.packed import PackedSetDamaged, load_packed

    png = io_png()
    with zipfile.ZipFile(tmp_path / "dataset.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("00000/img00000000.png", png)
        zf.writestr("dataset.json", '{"labels": null}')  # as stylegan2-ada-pytorch's tool writes an unlabelled set
    data = bytearray((tmp_path / "dataset.zip").read_bytes())
    at = data.index(png[20:40])
    data[at : at + 8] = b"\0" * 8  # the image's bytes damaged, its CRC as it was
    (tmp_path / "dataset.zip").write_bytes(bytes(data))
    with pytest.raises(PackedSetDamaged, match=r"dataset.zip:00000/img00000000.png: Bad CRC-32 .*run the `pack`"):
        load_packed(tmp_path / "dataset.zip")


def io_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


REFSTATS = r"re-run refstats \(`dvc repro -f refstats@<dataset>` or `facegan refstats <dataset>`\)"


def test_a_damaged_record_of_reference_statistics_is_named(tmp_path):
    """A cut-off or hand-edited stats.json ended in a JSONDecodeError, TypeError, AttributeError or KeyError
    traceback in evaluate and report; a listed .npz gone, in a FileNotFoundError."""
    from facegan.config import EvaluateConfig
    from facegan.errors import DamagedRecord
    from facegan.evaluate.fid import feature_stats, save_stats
    from facegan.evaluate.run import reference_stats
    from facegan.report import dataset_hashes

    cfg = EvaluateConfig(extractors=["dlib"])
    status = tmp_path / "stats.json"

    def refused(match: str) -> None:
        with pytest.raises(DamagedRecord, match=match):
            reference_stats("dlib", cfg, tmp_path)

    status.write_text('{"extractors": {"dl')
    refused(r"stats.json: not JSON \(Unterminated string.*\): " + REFSTATS)
    with pytest.raises(DamagedRecord, match=r"stats.json: not JSON .*: " + REFSTATS):
        dataset_hashes(tmp_path, tmp_path / "processed", tmp_path)
    status.write_text("[1, 2]")
    refused(r"stats.json: not a record of reference statistics \(a JSON list\): " + REFSTATS)
    for extractors in ([], {"dlib": "ok"}, {"dlib": {"n": 3}}, {"dlib": {"status": "unavailable"}}):
        status.write_text(json.dumps({"extractors": extractors}))
        refused(r"stats.json: its extractors are not a record of them \(each 'ok' or why not\): " + REFSTATS)
    made = {"max_real": cfg.max_real, "seed": cfg.seed, "extractors": {"dlib": {"status": "ok"}}}
    status.write_text(json.dumps(made))
    refused(r"stats.json lists dlib.npz, which is not there: " + REFSTATS)
    save_stats(tmp_path / "dlib.npz", feature_stats(np.ones((5, 3)), False, extractor="dlib", mode=cfg.mode))
    assert reference_stats("dlib", cfg, tmp_path).n == 5


def test_damaged_feature_statistics_are_named(tmp_path):
    """A cut-off or foreign <extractor>.npz was a BadZipFile, a 'pickled data' ValueError or a KeyError traceback
    (or loaded, and failed later in the distance); one that cannot be opened still says why."""
    from facegan.errors import DamagedRecord
    from facegan.evaluate.fid import feature_stats, load_stats, save_stats

    npz = tmp_path / "dlib.npz"
    rng = np.random.default_rng(0)
    save_stats(npz, feature_stats(rng.random((5, 3)), False, extractor="dlib"))
    assert load_stats(npz).features.shape == (5, 3)
    save_stats(npz, feature_stats(rng.random((5, 1)), False))  # one feature: np.cov is 0-d, as ever
    assert load_stats(npz).sigma.shape == ()
    good = npz.read_bytes()

    def refused(match: str) -> None:
        with pytest.raises(DamagedRecord, match=r"dlib.npz: not feature statistics \(" + match + r"\): " + REFSTATS):
            load_stats(npz)

    npz.write_bytes(good[: len(good) // 2])
    refused(r"not an .npz archive: cut off, or another file")
    npz.write_bytes(b"garbage")
    refused(r"not an .npz archive: cut off, or another file")
    np.savez(npz, mu=np.zeros(3), sigma=np.eye(3), meta=np.array("{}"))
    refused(r"features is not a file in the archive")
    np.savez(npz, mu=np.zeros(3), sigma=np.eye(3), features=np.zeros((4, 3)), meta=np.array("[1]"))
    refused(r"its meta is a JSON list")
    np.savez(npz, mu=np.array(["a", "b"]), sigma=np.eye(2), features=np.zeros((4, 2)), meta=np.array("{}"))
    refused(r"mu <U1\[2\], sigma float64\[2, 2\], features float64\[4, 2\]")
    np.savez(npz, mu=np.zeros(3), sigma=np.eye(2), features=np.zeros((4, 3)), meta=np.array("{}"))
    refused(r"mu float64\[3\], sigma float64\[2, 2\], features float64\[4, 3\]")
    with pytest.raises(FileNotFoundError):
        load_stats(tmp_path / "missing.npz")
    with pytest.raises(IsADirectoryError):
        load_stats(tmp_path)


def test_damaged_packed_metadata_is_named(tmp_path, layout):
    """A packed dataset.json gone, cut off, of another shape or failing its CRC was a KeyError, JSONDecodeError,
    TypeError or ValueError traceback (or PackedSetDamaged inside a second 'not JSON' message)."""
    from facegan.data.packed import PackedSetDamaged, load_labels, load_packed, packed_meta

    source = layout.packed / "dataset.zip"
    with zipfile.ZipFile(source) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    meta = json.loads(members.pop("dataset.json"))
    assert packed_meta(source) == meta  # what pack writes is read as it is
    minimal = {"labels": None, "label_names": [], "label_values": {}, "resolution": None}
    with zipfile.ZipFile(tmp_path / "theirs.zip", "w") as zf:  # an unlabelled set of stylegan2-ada-pytorch's tool
        zf.writestr("dataset.json", '{"labels": null}')
    assert packed_meta(tmp_path / "theirs.zip") == minimal
    images = sorted(members)
    labelled = {
        "labels": [[n, [0]] for n in images],
        "label_names": ["hair"],
        "label_values": {"hair": ["dark"]},
        "resolution": meta["resolution"],
    }
    packed = tmp_path / "dataset.zip"

    def refused(dataset_json: bytes | None, match: str, read=packed_meta) -> None:
        with zipfile.ZipFile(packed, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
            if dataset_json is not None:
                zf.writestr("dataset.json", dataset_json)
        with pytest.raises(PackedSetDamaged, match=match) as e:
            read(packed)
        assert str(e.value).count("run the `pack` stage again") == 1, e.value

    refused(None, r"dataset.zip: no dataset.json in it: run the `pack` stage again")
    refused(b'{"labels": nu', r"dataset.zip:dataset.json: not JSON \(Expecting value.*\): run the `pack` stage")
    refused(b"[]", r"dataset.json: not the packed set's metadata \(a JSON list\): run the `pack` stage again")
    refused(b"{}", r"dataset.json: not the packed set's metadata \(labels: Field required\)")
    bad = {**labelled, "labels": [[images[0], "x"]]}
    refused(json.dumps(bad).encode(), r"\(labels.0.1: Input should be a valid array\)")
    bad = {**labelled, "labels": [[n, [0, 1]] for n in images]}
    refused(json.dumps(bad).encode(), r"\(a label row of another length than label_names\)")
    for rows, problem in (([3], r"hair 3, not an index of its 1 values"), ([-1], r"hair -1, not an index")):
        bad = {**labelled, "labels": [[images[0], [0]], [images[1], rows]]}
        refused(json.dumps(bad).encode(), rf"\({images[1]}: {problem}")
    refused(json.dumps({**labelled, "label_values": {}}).encode(), r"\(label_names has 'hair', label_values has not\)")
    bad = {**labelled, "labels": [[images[0], ["0"]]]}  # strict: what is returned is what was checked
    refused(json.dumps(bad).encode(), r"\(labels.0.1.0: Input should be a valid integer\)")
    refused(json.dumps({**labelled, "label_values": {"hair": [1]}}).encode(), r"label_values.hair.0: Input should be")
    refused(json.dumps({**labelled, "resolution": "32"}).encode(), r"\(resolution: Input should be a valid integer\)")
    bad = {**labelled, "labels": labelled["labels"][1:]}
    refused(json.dumps(bad).encode(), rf"dataset.json: no label row for {images[0]}", load_packed)
    # training reads its labels with load_labels: the same gap is named there, not an IndexError mid-training
    refused(json.dumps(bad).encode(), rf"dataset.json: no label row for {images[0]}", load_labels)
    refused(json.dumps({**labelled, "labels": None}).encode(), r"\(label_names without label rows\)")
    refused(json.dumps({**labelled, "labels": []}).encode(), r"\(label_names without label rows\)")
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("dataset.json", json.dumps(labelled))
    assert load_labels(packed).tolist() == [[0]] * len(images)
    assert load_packed(packed)[1].tolist() == [[0]] * len(images)
    # rows in another order than the images, and one of an image not in the zip: each image still gets its own
    two = {**labelled, "label_values": {"hair": ["dark", "fair"]}}
    two["labels"] = [["00000/gone.png", [1]]] + [[n, [i % 2]] for i, n in reversed(list(enumerate(images)))]
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("dataset.json", json.dumps(two))
    assert load_labels(packed).tolist() == [[i % 2] for i in range(len(images))] == load_packed(packed)[1].tolist()
    raw = bytearray(packed.read_bytes())
    at = raw.rindex(b'"hair"')
    raw[at + 1] = ord("H")  # one byte of the stored JSON: its CRC no longer matches
    packed.write_bytes(bytes(raw))
    with pytest.raises(PackedSetDamaged, match=r"dataset.json: Bad CRC-32 for file 'dataset.json': run") as e:
        packed_meta(packed)
    assert "not JSON" not in str(e.value) and str(e.value).count("run the `pack` stage again") == 1


def test_a_damaged_evaluation_is_named_by_the_report(tmp_path):
    """report read metrics.json unchecked: a JSON list, or extractors without a status, was an AttributeError or
    KeyError traceback."""
    from facegan.errors import DamagedRecord
    from facegan.report import collect

    (tmp_path / "metrics.json").write_text("[1]")
    with pytest.raises(DamagedRecord, match=r"metrics.json: not an evaluation's metrics \(a JSON list\): run the"):
        collect("cartoon", tmp_path, tmp_path, tmp_path, tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"num_samples": 16, "extractors": {"dlib": {}}}))
    with pytest.raises(DamagedRecord, match=r"metrics.json: its extractors are not a record of them"):
        collect("cartoon", tmp_path, tmp_path, tmp_path, tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"extractors": {"dlib": {"status": "ok"}}}))
    with pytest.raises(DamagedRecord, match=r"metrics.json: not an evaluation's metrics \(no num_samples\): run"):
        collect("cartoon", tmp_path, tmp_path, tmp_path, tmp_path)


def test_a_report_without_its_inputs_names_the_stage_to_run(tmp_path):
    """`facegan report DATASET` with no evaluation (a training that replaced the model removes it) was a
    FileNotFoundError traceback; each missing input now names the stage that writes it."""
    from facegan.errors import StageInputMissing
    from facegan.report import collect

    evaluation, model = tmp_path / "eval", tmp_path / "model"
    with pytest.raises(StageInputMissing, match=r"eval/metrics.json is not there: run `facegan evaluate cartoon`"):
        collect("cartoon", tmp_path, tmp_path, model, evaluation)
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"num_samples": 16, "extractors": {}}))
    with pytest.raises(StageInputMissing, match=r"model/losses.csv is not there: run `facegan train cartoon`"):
        collect("cartoon", tmp_path, tmp_path, model, evaluation)
    model.mkdir()
    (model / "losses.csv").write_text("step,loss_d\n1,0.5\n")
    with pytest.raises(StageInputMissing, match=r"detect/summary.json is not there: run `facegan detect cartoon`"):
        collect("cartoon", tmp_path, tmp_path, model, evaluation)


def test_a_damaged_loss_or_distance_curve_is_named_with_its_line(tmp_path):
    """A losses.csv or fid.csv edited by hand was float()'s ValueError traceback in report and the transfer table
    (and report's curves took a row with an empty cell for one, its summary not)."""
    from facegan.errors import DamagedRecord
    from facegan.io import read_numbers_csv
    from facegan.report import collect, plot_curves

    curve = tmp_path / "losses.csv"
    curve.write_text("step,loss_d,loss_g,ada_p\n1,0.5,0.7,\n2,0.4,0.8,0.01\n")
    assert read_numbers_csv(curve) == [
        {"step": 1.0, "loss_d": 0.5, "loss_g": 0.7},
        {"step": 2.0, "loss_d": 0.4, "loss_g": 0.8, "ada_p": 0.01},
    ]
    plot_curves(tmp_path, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    for text, problem in (
        ("step,loss_d\n1,0.5\n2,O.4\n", r"line 3: could not convert string to float: 'O.4'"),
        ("step,loss_d\n1,0.5,0.6\n", r"line 2: more cells than columns"),
        ("step,loss_d,loss_g\n1,0.5,0.7\n2,0.4\n", r"line 3: fewer cells than columns"),
        ("step,loss_d\n1," + "9" * 200_000 + "\n", r"not a CSV of numbers \(field larger than field limit .*\)"),
    ):
        curve.write_text(text)
        with pytest.raises(DamagedRecord, match=r"losses.csv(, |: )" + problem + ": run the stage that wrote it"):
            read_numbers_csv(curve)
    curve.write_bytes(b"step\n\xff\n")
    with pytest.raises(DamagedRecord, match=r"losses.csv: not a CSV of numbers \('utf-8' codec can't decode"):
        read_numbers_csv(curve)
    curve.write_bytes(b"\xef\xbb\xbfstep,loss_d\r\n1,0.5\r\n")  # as a spreadsheet saves it: the mark is no column
    assert read_numbers_csv(curve) == [{"step": 1.0, "loss_d": 0.5}]

    from facegan.layout import PER_IMAGE
    from facegan.manifest import summary

    for stage in PER_IMAGE:
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "summary.json").write_text(json.dumps(summary([])))
    (tmp_path / "summary.json").write_text(json.dumps(summary([])))
    (tmp_path / "metrics.json").write_text(json.dumps({"num_samples": 16, "extractors": {}}))
    curve.write_text("step,loss_d,loss_g\n1,0.5,0.7\n2,,0.8\n")  # loss_d not logged at step 2
    assert collect("cartoon", tmp_path, tmp_path, tmp_path, tmp_path)["training"] == {"steps": 2, "final_loss_g": 0.8}
    plot_curves(tmp_path, tmp_path / "curves.png")  # a gap in loss_d's curve
    for text, problem in (
        ("step,loss_d\n", "no steps in it"),
        ("step,loss_d\n1,0.5\n,0.4\n", "its last row has no step"),
    ):
        curve.write_text(text)
        with pytest.raises(DamagedRecord, match=rf"losses.csv: {problem}: run the stage that wrote it again"):
            collect("cartoon", tmp_path, tmp_path, tmp_path, tmp_path)
