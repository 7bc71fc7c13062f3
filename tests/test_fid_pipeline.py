"""FID plumbing: modes, extractors by name, reference statistics, FID during training."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import logs_of, tiny_params
from facegan.config import EvaluateConfig, ParamsError
from facegan.evaluate.classifier import run_classifier
from facegan.evaluate.extractors import ExtractorUnavailable, clean_resize, make_extractor
from facegan.evaluate.run import Scorer, run_refstats
from facegan.train.checkpoint import load_checkpoint
from facegan.train.run import run_train


@pytest.fixture(scope="module")
def prepared(layout, tiny_params_obj, tmp_path_factory):
    """Classifier + reference statistics (dlib, attributes) of the tiny packed set."""
    root = tmp_path_factory.mktemp("fidprep")
    cfg = tiny_params_obj.evaluate.model_copy(update={"extractors": ["dlib", "attributes"]})
    run_classifier(cfg.classifier.model_copy(update={"epochs": 2}), layout.packed, root / "classifier")
    status = run_refstats(cfg, layout.packed, root / "stats", root / "classifier")
    return cfg, root, status


def test_refstats_records_mode_hash_and_extractors(prepared, layout):
    cfg, root, status = prepared
    assert status["mode"] == "legacy" and len(status["dataset_sha256"]) == 64
    assert status["extractors"]["dlib"] == {"status": "ok", "n": 12, "dims": 128}
    assert status["extractors"]["attributes"]["dims"] == 256
    assert json.loads((root / "stats" / "stats.json").read_text()) == status


def test_scorer_refuses_statistics_of_another_mode(prepared):
    cfg, root, _ = prepared
    with pytest.raises(ValueError, match="computed in mode 'legacy', not 'clean'"):
        Scorer("dlib", cfg.model_copy(update={"mode": "clean"}), root / "stats")


def test_scorer_names_missing_extractor(prepared):
    cfg, root, _ = prepared
    with pytest.raises(ValueError, match="'inception' has no reference statistics"):
        Scorer("inception", cfg, root / "stats")


def test_scorer_of_real_images_is_near_zero_and_of_noise_is_large(prepared, layout):
    from facegan.data.packed import ZIP_NAME, load_packed

    cfg, root, _ = prepared
    real, _, _ = load_packed(layout.packed / ZIP_NAME)
    scorer = Scorer("attributes", cfg, root / "stats", root / "classifier")
    same = scorer(real)
    noise = scorer(np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8))
    assert abs(same["fd"]) < 1e-6 and noise["fd"] > 10 * max(same["fd"], 1e-3)


def test_scorer_refuses_statistics_that_do_not_fit(prepared, layout, tmp_path):
    """Statistics of another packed set, another evaluate.max_real or another classifier, or made while an
    extractor was unavailable that is available now, are refused with what to re-run; none at all is one line."""
    from facegan.errors import StageInputMissing
    from facegan.evaluate.run import STATUS, StatsMismatch

    cfg, root, _ = prepared
    assert Scorer("dlib", cfg, root / "stats", packed=layout.packed).real.n == 12  # its own set: fine
    other = tmp_path / "packed"
    shutil.copytree(layout.packed, other)
    with open(other / "dataset.zip", "ab") as f:  # the set packed again, differently
        f.write(b"\0")
    with pytest.raises(StatsMismatch, match=r"are of another packed set than .*dataset.zip .*: re-run refstats"):
        Scorer("dlib", cfg, root / "stats", packed=other)
    with pytest.raises(StatsMismatch, match=f"are of evaluate.max_real {cfg.max_real}, not 5: re-run refstats"):
        Scorer("dlib", cfg.model_copy(update={"max_real": 5}), root / "stats")
    # all 12 images (max_real above): no seed chose them, another evaluate.seed takes the same statistics
    assert json.loads((root / "stats" / STATUS).read_text())["seed"] is None
    Scorer("dlib", cfg.model_copy(update={"seed": 1}), root / "stats")
    stats = tmp_path / "stats"
    shutil.copytree(root / "stats", stats)
    status = json.loads((stats / STATUS).read_text())
    (stats / STATUS).write_text(json.dumps({**status, "seed": cfg.seed}))  # as if a seeded subset had been drawn
    with pytest.raises(StatsMismatch, match=f"are of evaluate.seed {cfg.seed}, not 1: re-run refstats"):
        Scorer("dlib", cfg.model_copy(update={"seed": 1}), stats)
    status["extractors"]["dlib"] = {"status": "unavailable", "reason": "no dlib here"}
    status["extractors"]["attributes"]["classifier_sha256"] = "0" * 64
    (stats / STATUS).write_text(json.dumps(status))
    with pytest.raises(StatsMismatch, match="'dlib' was unavailable when the statistics .* available now: re-run"):
        Scorer("dlib", cfg, stats)
    with pytest.raises(StatsMismatch, match="attribute statistics in .* are of another classifier: re-run"):
        Scorer("attributes", cfg, stats, root / "classifier")
    with pytest.raises(StageInputMissing, match="no reference statistics in .*nowhere: run refstats first"):
        Scorer("dlib", cfg, tmp_path / "nowhere")


def test_statistics_without_inception_do_not_download_it_at_each_scoring(prepared, tmp_path, monkeypatch):
    """Statistics made while Inception was unavailable: each Scorer looks for the weight file in the caches, it
    does not try to download it (an offline machine would wait on the network at every evaluate)."""
    from facegan.evaluate import inception
    from facegan.evaluate.run import STATUS

    cfg, root, _ = prepared
    stats = tmp_path / "stats"
    shutil.copytree(root / "stats", stats)
    status = json.loads((stats / STATUS).read_text())
    status["extractors"]["inception"] = {"status": "unavailable", "reason": "no weights here"}
    (stats / STATUS).write_text(json.dumps(status))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("FACEGAN_OFFLINE", raising=False)

    tried: list[str] = []

    def no_network(url: str, *args, **kwargs) -> None:
        tried.append(url)
        raise OSError("no network")

    monkeypatch.setattr(inception.torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ExtractorUnavailable, match="no weights here"):
        Scorer("inception", cfg, stats)
    assert tried == []


def test_the_reference_subset_is_drawn_from_the_whole_set(layout):
    """evaluate.max_real below the set's size: a seeded random subset of the packed images (in packed order), not
    the first N by name (a folder sorted by person or class would give a reference of some of them only)."""
    from facegan.data.packed import ZIP_NAME, load_packed

    everything = load_packed(layout.packed / ZIP_NAME)[0]
    some, _, _ = load_packed(layout.packed / ZIP_NAME, limit=6, seed=3)
    again, _, _ = load_packed(layout.packed / ZIP_NAME, limit=6, seed=3)
    other, _, _ = load_packed(layout.packed / ZIP_NAME, limit=6, seed=4)
    at = [next(i for i, im in enumerate(everything) if np.array_equal(im, s)) for s in some]
    assert np.array_equal(some, again) and not np.array_equal(some, other)
    assert at == sorted(at) and at != list(range(6)) and len(set(at)) == 6


def test_attributes_extractor_unavailable_without_classifier(tmp_path):
    with pytest.raises(ExtractorUnavailable, match="no attribute classifier"):
        make_extractor("attributes", EvaluateConfig(), tmp_path)


def test_attributes_extractor_sees_images_at_its_classifier_resolution(prepared, layout):
    from PIL import Image

    from facegan.data.packed import ZIP_NAME, load_packed
    from facegan.evaluate.classifier import load_classifier, to_input

    cfg, root, _ = prepared
    real = load_packed(layout.packed / ZIP_NAME)[0][:4]
    size = real.shape[1]
    net, state = load_classifier(root / "classifier")
    assert state["resolution"] == size
    ex = make_extractor("attributes", cfg, root / "classifier")
    with torch.inference_mode():
        assert np.array_equal(ex(real), net.features(to_input(real)).numpy())  # its own resolution: as it is
        big = np.stack(
            [np.asarray(Image.fromarray(im).resize((2 * size,) * 2, Image.Resampling.NEAREST)) for im in real]
        )
        as_is = net.features(to_input(big)).numpy()
    down = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)) for im in big])
    # larger images (e.g. a `facegan fid` folder) are brought to the scale it learned, by PIL's bicubic
    assert np.array_equal(ex(big), ex(down)) and np.abs(ex(big) - as_is).max() > 1e-3


def test_a_classifier_file_that_is_not_one_is_one_clear_error(prepared, tmp_path):
    """`--classifier DIR` whose classifier.pt holds something else, or weights of other labels: a KeyError, a
    TypeError or torch's size-mismatch traceback."""
    from facegan.errors import CheckpointError
    from facegan.evaluate.classifier import MODEL, load_classifier

    state = torch.load(prepared[1] / "classifier" / MODEL, weights_only=True)
    folder = tmp_path / "classifier"
    folder.mkdir()
    for content, match in (
        ({"G": {}, "config": {}}, r"classifier.pt: not an attribute classifier of the classifier stage \(keys: G, c"),
        ([1, 2], r"not an attribute classifier of the classifier stage \(list\); remove it and run the classifier"),
        (
            {**state, "label_dims": [*state["label_dims"], 3]},
            rf"weights do not fit a classifier of {len(state['label_dims']) + 1} attributes: missing 2, e\.g\. heads",
        ),
    ):
        torch.save(content, folder / MODEL)
        with pytest.raises(CheckpointError, match=match):
            load_classifier(folder)
    from facegan.evaluate.classifier import AttributeNet

    one_value = {**state, "label_dims": [1, 3], "state": AttributeNet([1, 3]).state_dict()}  # a column of one value
    torch.save(one_value, folder / MODEL)  # as the classifier stage writes it: loads
    assert [h.out_features for h in load_classifier(folder)[0].heads] == [1, 3]


def test_clean_resize_is_pil_bicubic_per_channel():
    const = np.full((2, 32, 48, 3), 77, np.uint8)
    out = clean_resize(const)
    assert out.shape == (2, 3, 299, 299) and np.allclose(out, 77, atol=1e-3)
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))[None]
    r = clean_resize(ramp)[0, 0]
    assert (np.diff(r[150]) >= -1e-3).all(), "a horizontal ramp stays monotone"


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of a bicubic resize (Keys, a = -0.5, the kernel widened by the scale when shrinking,
    weights normalised per output pixel): the resampling clean-fid asks of PIL, written out independently."""

    def cubic(x: np.ndarray) -> np.ndarray:
        x, a = np.abs(x), -0.5
        return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0))

    scale = n_in / n_out
    stretch = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    w = cubic((np.arange(n_in)[None, :] + 0.5 - centres[:, None]) / stretch)
    return w / w.sum(1, keepdims=True)


@pytest.mark.parametrize("shape", [(32, 48), (600, 450)], ids=["enlarged", "shrunk"])
def test_clean_resize_matches_a_written_out_float_bicubic(shape):
    """clean-fid's resize is a float bicubic per channel, clipped, with no rounding to uint8 in between; a resize
    of the uint8 image (PIL bicubic or bilinear) passes the constant and ramp checks above but not this one."""
    from PIL import Image

    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = clean_resize(im[None])[0]
    rows, cols = _bicubic_matrix(shape[0], 299), _bicubic_matrix(shape[1], 299)
    ref = np.clip(np.stack([rows @ im[..., c].astype(np.float64) @ cols.T for c in range(3)]), 0, 255)
    assert ours.shape == (3, 299, 299) and np.abs(ours - ref).max() < 0.02
    quantised = np.asarray(Image.fromarray(im).resize((299, 299), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    assert np.abs(quantised - ref).max() > 0.4  # the uint8 resize rounds: 0.5 off, and more where it clips


def test_inception_modes_give_different_features(tmp_path, monkeypatch):
    from facegan.evaluate import inception

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    path = inception.hub_checkpoint_dir() / inception.WEIGHTS_NAME
    path.parent.mkdir(parents=True)
    torch.save(inception.FIDInceptionV3().state_dict(), path)
    monkeypatch.setattr(inception, "WEIGHTS_SHA256_PREFIX", inception.sha256_file(path)[:8])  # accept the stand-in
    images = np.random.default_rng(1).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    legacy = make_extractor("inception", EvaluateConfig(mode="legacy", batch_size=2))(images)
    clean = make_extractor("inception", EvaluateConfig(mode="clean", batch_size=2))(images)
    assert legacy.shape == clean.shape == (2, 2048)
    assert not np.allclose(legacy, clean)
    # clean mode normalises as clean-fid, (x - 128) / 128; legacy as pytorch-fid, (x - 127.5) / 127.5 (the net
    # takes [0, 1] and maps it by 2x - 1). At 299 px neither resizes.
    net = inception.load_inception(path)
    v = np.random.default_rng(2).integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    x = torch.from_numpy(v).permute(0, 3, 1, 2).double()
    with torch.inference_mode():
        as_cleanfid = net((((x - 128) / 128 + 1) / 2).float()).numpy()
        as_pytorchfid = net((((x - 127.5) / 127.5 + 1) / 2).float()).numpy()

    def rel(a: np.ndarray, b: np.ndarray) -> float:  # the stand-in's features are ~1e-7: relative differences
        return float(np.abs(a - b).max() / np.abs(b).max())

    assert rel(as_cleanfid, as_pytorchfid) > 1e-3  # the two normalisations tell apart here
    clean1 = make_extractor("inception", EvaluateConfig(mode="clean", batch_size=1))(v)
    legacy1 = make_extractor("inception", EvaluateConfig(mode="legacy", batch_size=1))(v)
    assert rel(clean1, as_cleanfid) < 1e-5 and rel(legacy1, as_pytorchfid) < 1e-5


def test_fid_during_training_keeps_best_checkpoint_and_survives_resume(prepared, layout, tmp_path, monkeypatch, caplog):
    cfg, root, _ = prepared
    train = tiny_params(steps=4, fid_every=1, fid_samples=8).train
    scorer = Scorer("dlib", cfg, root / "stats")
    run_train(train, layout.packed, tmp_path / "a", scorer=scorer)
    rows = list(csv.DictReader((tmp_path / "a" / "fid.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and all(float(r["fd"]) > 0 for r in rows)
    best = min(rows, key=lambda r: float(r["fd"]))
    assert load_checkpoint(tmp_path / "a" / "best.pt")["step"] == int(best["step"])

    from facegan.train import stepper

    real = stepper.step_generator
    monkeypatch.setattr(
        stepper,
        "step_generator",
        lambda seed, step: (_ for _ in ()).throw(KeyboardInterrupt) if step == 3 else real(seed, step),
    )
    resumed = tiny_params(steps=4, fid_every=1, fid_samples=8, checkpoint_every=1).train
    with pytest.raises(KeyboardInterrupt):
        run_train(resumed, layout.packed, tmp_path / "b", scorer=scorer)
    monkeypatch.setattr(stepper, "step_generator", real)
    run_train(resumed, layout.packed, tmp_path / "b", scorer=scorer)
    rows_b = list(csv.DictReader((tmp_path / "b" / "fid.csv").open()))
    assert [int(r["step"]) for r in rows_b] == [1, 2, 3, 4]
    assert [r["fd"] for r in rows_b] == [r["fd"] for r in rows], "same curve after a resume"
    # resumed with another sample count (fid_samples, as fid_extractor, may change on a resume): its distances
    # were appended to the curve, and best.pt chosen across both
    more = tiny_params(steps=6, fid_every=1, fid_samples=12, checkpoint_every=1).train
    with caplog.at_level(logging.WARNING, logger="facegan"):
        run_train(more, layout.packed, tmp_path / "b", scorer=scorer)
    assert [int(r["step"]) for r in csv.DictReader((tmp_path / "b" / "fid.csv").open())] == [5, 6]
    assert "measured with dlib on 8 samples and is dlib on 12 samples now: its curve (fid.csv) and best.pt" in (
        caplog.text
    )
    assert load_checkpoint(tmp_path / "b" / "best.pt")["step"] in (5, 6)
    curve = (tmp_path / "b" / "fid.csv").read_bytes()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facegan"):  # nothing to train: the curve of its steps stays
        run_train(more.model_copy(update={"fid_samples": 16}), layout.packed, tmp_path / "b", scorer=scorer)
    assert "start again" not in caplog.text and (tmp_path / "b" / "fid.csv").read_bytes() == curve


def test_fid_extractor_must_have_reference_statistics():
    with pytest.raises(ParamsError, match="train.fid_extractor 'attributes' must be one of evaluate.extractors"):
        tiny_params(fid_every=10, fid_extractor="attributes")


def test_fid_between_folders_of_mixed_sizes_and_modes(tmp_path, prepared):
    import subprocess
    import sys

    from PIL import Image

    from facegan.config import CartoonSource
    from facegan.data.cartoon import render

    cfg = CartoonSource(n=12, size=96, seed=9)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for i in range(6):
        im = Image.fromarray(render(cfg, i).image)
        im.save(a / f"{i}.png")
        other = Image.fromarray(render(cfg, i + 6).image)
        [other.resize((64, 64)), other.convert("CMYK"), other.convert("L"), other, other.resize((80, 80)), other][
            i
        ].save(b / (f"{i}.jpg" if i == 1 else f"{i}.png"))
    cli = [sys.executable, "-c", "from facegan.cli import main; main()", "fid"]
    classifier = prepared[1] / "classifier"
    dlib = [str(a), str(b), "--extractor", "dlib", "--mode", "clean", "--classifier", str(classifier)]
    r = subprocess.run(cli + dlib, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the mode is Inception's resize: dlib's chips are resized one way whatever it says, and the line says so
    said = " ".join(r.stderr.split())  # rich wraps the log lines
    assert "--mode does not apply to --extractor dlib; ignored" in said
    assert "--classifier does not apply to --extractor dlib; ignored" in said
    assert r.stdout.startswith("FD (dlib): ") and "(6 vs 6 images)" in r.stdout  # the logs are stderr's alone
    r = subprocess.run(cli + [*dlib[:-4], "--mode", "bicubic"], capture_output=True, text=True)
    assert r.returncode == 2 and "mode: got 'bicubic'" in r.stderr and "does not apply" not in r.stderr
    r = subprocess.run(cli + [str(a), str(b), "--extractor", "attributes"], capture_output=True, text=True)
    assert r.returncode == 2 and "--extractor attributes needs --classifier" in r.stderr, r.stderr
    said = []
    for other in (a, b):
        r = subprocess.run(
            cli + [str(a), str(other), "--extractor", "attributes", "--classifier", str(classifier)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0 and "does not apply" not in r.stderr, r.stderr
        said.append(r.stdout.split("FD (attributes): ")[1].split()[0])
    assert said[0] == "n/a" and float(said[1]) > 1e-4  # a folder against itself, then against other faces
    # the reference's own images: no score; some of them among others: said, in the result line and the log
    r = subprocess.run(cli + [str(a), str(a), "--extractor", "dlib"], capture_output=True, text=True)
    assert (
        r.returncode == 0 and r.stdout == f"FD (dlib): n/a   KID: n/a   (6 vs 6 images: {a} holds the images of {a})\n"
    )
    # its images with one of them twice: the reference still (it was scored, 0.000265 in the bug hunt)
    twice = tmp_path / "twice"
    shutil.copytree(a, twice)
    shutil.copy(a / "0.png", twice / "0_again.png")
    r = subprocess.run(cli + [str(a), str(twice), "--extractor", "dlib"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("FD (dlib): n/a   KID: n/a   (6 vs 7 images: ")
    mixed, sub = tmp_path / "mixed", tmp_path / "sub"
    mixed.mkdir(), sub.mkdir()
    Image.open(a / "0.png").save(mixed / "0.bmp")  # one of a's images as BMP: the same pixels in another format
    (b / "3.png").rename(mixed / "1.png")
    for i in (1, 2):
        shutil.copy(a / f"{i}.png", sub)
    wide = {**os.environ, "COLUMNS": "1000"}  # rich wraps log lines at the terminal's width
    r = subprocess.run(cli + [str(a), str(mixed), "--extractor", "dlib"], capture_output=True, text=True, env=wide)
    assert r.returncode == 0 and r.stdout.endswith("(6 vs 2 images, 1 of them identical to reference images)\n")
    assert f"1 of the 2 images of {mixed} is identical (pixel for pixel) to images of {a}" in r.stderr
    # a subset of the reference is no copy of it: scored (a real-vs-real baseline), its copies said
    r = subprocess.run(cli + [str(a), str(sub), "--extractor", "dlib"], capture_output=True, text=True, env=wide)
    assert r.returncode == 0 and r.stdout.endswith("(6 vs 2 images, 2 of them identical to reference images)\n")
    assert float(r.stdout.split()[2]) > 0
    (tmp_path / "c").mkdir()
    Image.fromarray(render(cfg, 0).image).save(tmp_path / "c" / "only.png")
    r = subprocess.run(cli + [str(a), str(tmp_path / "c"), "--extractor", "dlib"], capture_output=True, text=True)
    assert r.returncode == 2 and "needs at least 2 images, found 1" in r.stderr


def test_the_classifier_makes_one_batch_at_a_time_float(monkeypatch):
    """Training keeps the images uint8 and converts each batch (it made the whole set float at once: ~12x the
    set's size at peak, 18 GB for 30k images at 128 px)."""
    from facegan.config import ClassifierConfig
    from facegan.evaluate import classifier

    sizes: list[int] = []
    real = classifier.to_input

    def counted(images: np.ndarray) -> torch.Tensor:
        sizes.append(len(images))
        return real(images)

    monkeypatch.setattr(classifier, "to_input", counted)
    images = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 2, (40, 1))
    classifier.train_classifier(images, labels, [2], ClassifierConfig(epochs=1, batch_size=8))
    assert sizes and max(sizes) == 8


def test_attribute_accuracy_needs_a_classifier_of_the_sets_labels(prepared, layout, tmp_path, monkeypatch):
    """evaluate's attribute accuracy reads each generated image's labels in the packed set's attribute order: a
    classifier trained on other labels (a stale one) is refused instead of scoring the wrong columns, and before
    any image is generated (it was refused after the generation it wasted)."""
    from facegan import sample
    from facegan.evaluate.classifier import MODEL
    from facegan.evaluate.run import StatsMismatch, run_evaluate

    cfg, root, _ = prepared
    cfg = cfg.model_copy(update={"num_samples": 8, "extractors": ["dlib"]})
    run_train(tiny_params(steps=1, model="acgan", fid_every=0).train, layout.packed, tmp_path / "model")
    ckpt = tmp_path / "model" / "checkpoint.pt"
    metrics = run_evaluate(cfg, ckpt, layout.packed, root / "stats", tmp_path / "eval", root / "classifier")
    state = torch.load(root / "classifier" / MODEL, weights_only=True)
    assert list(metrics["attr_acc"]) == state["label_names"] and 0 <= metrics["attr_acc_mean"] <= 1
    stale = tmp_path / "stale"
    shutil.copytree(root / "classifier", stale)
    state["label_names"] = state["label_names"][::-1]  # trained on the attributes in another order
    torch.save(state, stale / MODEL)

    def no_generation(*_a, **_k):
        raise AssertionError("generated images before the classifier was checked")

    real_render = sample.render

    monkeypatch.setattr(sample, "render", no_generation)
    with pytest.raises(StatsMismatch, match="classifier in .*stale was trained on other labels"):
        run_evaluate(cfg, ckpt, layout.packed, root / "stats", tmp_path / "eval2", stale)
    state["label_names"] = state["label_names"][::-1]
    state["resolution"] = 64  # the set packed at 32 px since: its net read the 32 px fakes without a word
    torch.save(state, stale / MODEL)
    with pytest.raises(StatsMismatch, match=r"stale was trained on 64 px images, and .*dataset.zip is packed at 32 px"):
        run_evaluate(cfg, ckpt, layout.packed, root / "stats", tmp_path / "eval2", stale)
    # a model of a set packed before (other labels: an IndexError in the generator; another resolution: scored
    # without a word against statistics of images it never saw), refused before generating
    from facegan.train.checkpoint import load_checkpoint, save_checkpoint

    old = load_checkpoint(ckpt)
    old["provenance"]["data"] = "0" * 64
    save_checkpoint(tmp_path / "old" / "checkpoint.pt", old)
    with pytest.raises(StatsMismatch, match=r"old/checkpoint.pt was trained on another dataset.zip than .* has now"):
        run_evaluate(cfg, tmp_path / "old" / "checkpoint.pt", layout.packed, root / "stats", tmp_path / "e3")
    assert not (tmp_path / "e3").exists()
    # no extractor runs here (inception without its weights): it wrote a metrics.json of nulls with exit 0
    from facegan.evaluate.run import STATUS, ExtractorUnavailable

    stats = tmp_path / "stats"
    shutil.copytree(root / "stats", stats)
    status = json.loads((stats / STATUS).read_text())
    status["extractors"]["inception"] = {"status": "unavailable", "reason": "no Inception weights here"}
    (stats / STATUS).write_text(json.dumps(status))
    only = cfg.model_copy(update={"extractors": ["inception"], "inception_weights": tmp_path / "none.pth"})
    with pytest.raises(ExtractorUnavailable, match=r"^no feature extractor is available \(inception\); nothing to "
                       r"evaluate: inception: no Inception weights here$"):  # fmt: skip
        run_evaluate(only, ckpt, layout.packed, stats, tmp_path / "e4")
    assert not (tmp_path / "e4").exists()
    # a training that writes the model while it is scored: the old model's numbers were written beside the new one
    from facegan.errors import StageError
    from facegan.evaluate import run as evaluate_run

    real_generate = evaluate_run.generate

    def trained_meanwhile(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        save_checkpoint(ckpt, {**load_checkpoint(ckpt), "step": 2})
        return out

    monkeypatch.setattr(sample, "render", real_render)
    monkeypatch.setattr(evaluate_run, "generate", trained_meanwhile)
    with pytest.raises(StageError, match=r"checkpoint.pt changed while it was scored \(a training wrote it\)"):
        run_evaluate(cfg, ckpt, layout.packed, root / "stats", tmp_path / "e6")
    assert not (tmp_path / "e6").exists()
    # a packed set that is gone was called "another packed set": re-run refstats, which then asked for pack
    from facegan.errors import StageInputMissing

    (tmp_path / "gone").mkdir()
    with pytest.raises(StageInputMissing, match=r"gone/dataset.zip: no packed dataset there: run the `pack` stage"):
        run_evaluate(cfg, ckpt, tmp_path / "gone", root / "stats", tmp_path / "e5")


def test_the_cyclegan_baseline_skips_attributes_and_checks_the_source_statistics(prepared, layout, tmp_path, caplog):
    """The untranslated baseline read the source set's <extractor>.npz unchecked: with `attributes` scored and an
    unlabelled source (no attributes.npz) the stage failed after its whole training, and a labelled source's
    attribute features come from its own classifier, another feature space than the target's. Now the baseline is
    None for `attributes`, and the source's other statistics are checked as a target's are."""
    from types import SimpleNamespace

    from facegan import translate
    from facegan.data.packed import ZIP_NAME, load_packed
    from facegan.evaluate.run import STATUS, StatsMismatch
    from facegan.layout import Layout

    cfg, prep, _ = prepared
    p = tiny_params()
    p = p.model_copy(update={"evaluate": cfg})
    root = tmp_path / "root"
    for name in (p.cyclegan.a, p.cyclegan.b):
        at = Layout(root, name)
        shutil.copytree(layout.packed, at.packed)
        shutil.copytree(prep / "stats", at.stats)
        shutil.copytree(prep / "classifier", at.classifier)
    a = Layout(root, p.cyclegan.a)  # unlabelled: no classifier, no attribute statistics
    shutil.rmtree(a.classifier)
    (a.stats / "attributes.npz").unlink()
    status = json.loads((a.stats / STATUS).read_text())
    status["extractors"]["attributes"] = {"status": "unavailable", "reason": "no labels"}
    (a.stats / STATUS).write_text(json.dumps(status))

    scoring = translate.scorers(p, root)
    assert sorted(scoring) == [("a_to_b", "attributes"), ("a_to_b", "dlib"), ("b_to_a", "dlib")]
    assert scoring[("a_to_b", "attributes")][1] is None
    assert scoring[("a_to_b", "dlib")][1].n == 12 and scoring[("b_to_a", "dlib")][1].n == 12

    images = torch.from_numpy(load_packed(layout.packed / ZIP_NAME)[0]).permute(0, 3, 1, 2).contiguous()  # NCHW
    trainer = SimpleNamespace(images_a=images, images_b=images, translate=lambda x, key: x.float() / 127.5 - 1)
    m = translate.evaluate(trainer, p, root, scoring)
    m0_dlib = m["a_to_b"]["fd_dlib"]
    assert m["a_to_b"]["fd_attributes_untranslated"] is None and m["a_to_b"]["fd_attributes"] >= 0
    assert m["a_to_b"]["fd_dlib_untranslated"] >= 0 and m["b_to_a"]["fd_dlib_untranslated"] >= 0

    # source statistics of fewer images than the translations (evaluate.max_real below cyclegan.num_samples): the
    # baseline was scored on all of them, "as many" as it says, and biased upwards; now none, and a warning says why
    from facegan.evaluate.fid import feature_stats

    few = {k: (sc, real and feature_stats(real.features[:5], warn_small=False)) for k, (sc, real) in scoring.items()}
    with caplog.at_level(logging.WARNING, logger="facegan"):
        m = translate.evaluate(trainer, p, root, few)
    assert m["a_to_b"]["fd_dlib_untranslated"] is None and m["a_to_b"]["fd_dlib"] == pytest.approx(m0_dlib)
    said = "a_to_b dlib: no untranslated baseline: the source's statistics hold 5 images, fewer than the 8 translated"
    assert said in caplog.text

    with open(a.packed / ZIP_NAME, "ab") as f:  # the source packed again since its statistics were made
        f.write(b"\0")
    with pytest.raises(StatsMismatch, match=r"are of another packed set than .*cartoon/dataset.zip"):
        translate.scorers(p, root)


def test_the_cyclegan_baseline_is_scored_on_as_many_images_as_the_translations():
    """The Fréchet distance is biased upward by fewer samples: a baseline from all of the source's real features
    (n = 2000) against translations scored on 300 favoured the baseline. Source, target and a 'perfect translation'
    drawn from one distribution: the baseline at n = 300 is near the perfect translation's distance, all 2000 not."""
    from facegan.evaluate.fid import feature_stats, frechet_distance
    from facegan.translate import untranslated

    rng = np.random.default_rng(0)
    source, target, perfect = (feature_stats(rng.normal(size=(n, 32)), warn_small=False) for n in (2000, 2000, 300))
    fd_perfect = frechet_distance(target.mu, target.sigma, perfect.mu, perfect.sigma)
    matched = untranslated(source, target, 300, seed=0)
    everything = untranslated(source, target, 5000, seed=0)  # more than there are: all of them
    assert everything == pytest.approx(frechet_distance(target.mu, target.sigma, source.mu, source.sigma))
    assert abs(matched - fd_perfect) < 0.15 * fd_perfect, (matched, fd_perfect)  # measured: 1.130 vs 1.077
    assert everything < fd_perfect / 2, (everything, fd_perfect)  # measured: 0.300


def test_fid_of_a_stage_folder_scores_its_faces_of_a_sample_folder_not_its_grid_and_of_a_packed_folder_its_zip(
    layout, tmp_path, caplog
):
    """`facegan fid` on a stage's folder scored the matte masks and the contact sheet as faces too, on `facegan
    sample`'s folder its grid.png; on a packed dataset's folder (data/processed/<ds>) it found no image at all."""

    from facegan.evaluate.compare import compare_folders
    from facegan.io import ImageError, list_images
    from facegan.manifest import read_manifest, write_manifest

    upscale = tmp_path / "upscale"
    shutil.copytree(layout.interim("upscale"), upscale)
    faces = [r.out_file for r in read_manifest(upscale) if r.status == "ok"]
    (upscale / "contact_sheet.png").write_bytes((upscale / faces[0]).read_bytes())  # as `facegan chain` leaves one
    assert len(list_images(upscale)) == 2 * len(faces) + 1  # the faces, their masks and the sheet
    plain = tmp_path / "plain"
    for f in faces:
        (plain / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(upscale / f, plain / f)
    packed_copy = tmp_path / "packed"
    with zipfile.ZipFile(layout.packed / "dataset.zip") as zf:
        zf.extractall(packed_copy, [n for n in zf.namelist() if n.endswith(".png")])
    cfg = EvaluateConfig()
    with logs_of(caplog):
        got = compare_folders(layout.packed, upscale, cfg, "dlib")
    assert (got["n_a"], got["n_b"]) == (12, len(faces))
    said = " ".join(caplog.text.split())
    assert f"scoring the {len(faces)} faces its manifest.jsonl accepted (not the {len(faces) + 1} other images" in said
    assert "a packed dataset, scoring the 12 images of its dataset.zip" in said
    want = compare_folders(packed_copy, plain, cfg, "dlib")
    assert got["fd"] == want["fd"] and got["kid"] == want["kid"] and want["n_b"] == len(faces)
    # `facegan sample`'s folder: its grid.png (a preview of the first images) is no sample; elsewhere a grid.png is
    sampled = tmp_path / "sampled"
    sampled.mkdir()
    for i, f in enumerate(faces[:4]):
        shutil.copy(upscale / f, sampled / f"seed0_{i:04d}.png")
    shutil.copy(upscale / "contact_sheet.png", sampled / "grid.png")
    shutil.copy(upscale / faces[4], sampled / ".seed0_0004.png.tmp.png")  # a write cut off: hidden, no image
    assert compare_folders(layout.packed, sampled, cfg, "dlib")["n_b"] == 4
    (sampled / "seed0_0000.png").rename(sampled / "face.png")
    for i in (1, 2, 3):
        (sampled / f"seed0_{i:04d}.png").rename(sampled / f"face{i}.png")
    assert compare_folders(layout.packed, sampled, cfg, "dlib")["n_b"] == 5
    # a JPEG as Windows and browsers save it (.jfif) is an image; a file of a suffix no image has is said, not scored
    Image.open(upscale / faces[5]).convert("RGB").save(sampled / "saved.jfif", format="JPEG")
    (sampled / "photo.heic").write_bytes(b"\0" * 64)
    with logs_of(caplog):
        assert compare_folders(layout.packed, sampled, cfg, "dlib")["n_b"] == 6
    assert (
        "sampled: 1 file(s) not scored, their suffix no image's (" in caplog.text and "e.g. photo.heic" in caplog.text
    )
    linked = tmp_path / "linked"  # faces that are links elsewhere (DVC's symlink cache) are the folder's own
    linked.mkdir()
    shutil.copy(upscale / "manifest.jsonl", linked)
    for f in faces:
        (linked / f).parent.mkdir(parents=True, exist_ok=True)
        (linked / f).symlink_to(upscale / f)
    assert compare_folders(layout.packed, linked, cfg, "dlib")["n_b"] == len(faces)
    raw = tmp_path / "raw"  # a raw dataset's folder: its images, not the ground-truth masks beside them
    shutil.copytree(plain, raw / "images")
    shutil.copytree(upscale / "masks", raw / "masks")
    assert compare_folders(layout.packed, raw, cfg, "dlib")["n_b"] == len(faces)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    with zipfile.ZipFile(damaged / "dataset.zip", "w") as zf:
        zf.writestr("00000/img00000000.png", (upscale / faces[0]).read_bytes())
        zf.writestr("00000/img00000001.png", b"not a png")
    with pytest.raises(ImageError, match=r"damaged/dataset\.zip:00000/img00000001\.png: "):  # where it is, not /tmp
        compare_folders(damaged, upscale, cfg, "dlib")
    rows = read_manifest(upscale)
    write_manifest(upscale, [*rows, rows[0].model_copy(update={"file": "../plain/" + faces[0]})])
    with pytest.raises(FileNotFoundError, match="manifest.jsonl names faces outside the folder, e.g. .*plain"):
        compare_folders(layout.packed, upscale, cfg, "dlib")
    write_manifest(upscale, rows)
    (upscale / faces[1]).unlink()  # a stage folder whose manifest's face is missing
    with pytest.raises(FileNotFoundError, match="1 of the faces its manifest.jsonl accepted are missing, e.g."):
        compare_folders(layout.packed, upscale, cfg, "dlib")
