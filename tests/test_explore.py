"""`facegan explore` and facegan.latent: every model kind (tiny models trained here for 2 steps), bad input,
and the page itself driven in headless Chromium (Debian's package) with Playwright."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import STRICT, free_port, wait_healthy
from facegan.config import CycleGANConfig, TrainConfig
from facegan.errors import FaceganError
from facegan.latent import (
    ConditionalSampler,
    DirectionNames,
    ExploreError,
    Sampler,
    StyleSampler,
    Translator,
    VAESampler,
    load_model,
    read_upload,
    resolve,
    sampler_class,
)
from facegan.seeds import seed_z
from facegan.train.checkpoint import save_checkpoint

CPU = torch.device("cpu")
CHROMIUM = Path("/usr/bin/chromium")
LABELS = {"hair": ["black", "blond", "red"], "glasses": ["no", "yes"]}
TINY = {"z_dim": 16, "g_channels": 8, "d_channels": 8, "batch_size": 4}
TRAIN = {
    "dcgan": {},
    "wgan-gp": {"loss": "wgan-gp"},
    "acgan": {},
    "vae": {},
    "stylegan2": {"stylegan2": {"preset": "tiny"}, "r1": {"gamma": 0.0}, "lr_g": 0.002, "beta1": 0.0},
}


def _images(n: int = 8, res: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _train(kind: str, dst: Path, **config) -> Path:
    """Two training steps of a tiny model of `kind` (train `config` beside TINY) on random 32 px images; its
    checkpoint."""
    path = dst / kind / "checkpoint.pt"
    if kind == "cyclegan":
        from facegan.train.cyclegan import CycleTrainer

        cfg = CycleGANConfig(
            enabled=True, g_channels=4, res_blocks=1, d_channels=4, steps=2, decay_start=1, batch_size=2, pool_size=2
        )
        t = CycleTrainer(cfg, _images(), _images(seed=1), CPU)
    else:
        from facegan.train.run import make_trainer

        cfg = TrainConfig.model_validate({**TINY, "model": kind, **TRAIN[kind], **config})
        names = list(LABELS) if kind == "acgan" else []
        labels = torch.stack([torch.arange(8) % 3, torch.arange(8) % 2], 1) if names else None
        t = make_trainer(
            cfg,
            _images(),
            labels,
            [len(LABELS[n]) for n in names],
            CPU,
            label_names=names,
            label_values=LABELS if names else {},
        )
    for _ in range(2):
        t.step()
    save_checkpoint(path, t.state_dict())
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine idle-spinning OpenMP threads made them
    up to 40x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """kind -> checkpoint of a tiny model trained on demand (once per module)."""
    root, cache = tmp_path_factory.mktemp("explore_models"), {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = _train(kind, root)
        return cache[kind]

    return get


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _differs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one level of rounding (a batch may take another conv algorithm than a single image)."""
    return a.shape == b.shape and int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= 1


# ---- the library ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dcgan", "wgan-gp", "acgan", "stylegan2", "vae"])
def test_every_generator_kind_samples_grids_and_interpolates(trained, kind):
    m = load_model(trained(kind))
    assert (
        m.kind == kind
        and m.resolution == 32
        and type(m) is {"acgan": ConditionalSampler, "stylegan2": StyleSampler, "vae": VAESampler}.get(kind, type(m))
    )
    a = m.image(5)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, m.image(5)) and not np.array_equal(a, m.image(6))  # repeatable, seed-driven
    g = m.grid(3, 5)  # 3 x 2 tiles of 32 px with 2 px padding
    assert g.shape == (2 * 34 + 2, 3 * 34 + 2, 3)
    for i in range(5):  # tile i is the image of seed 3 + i
        r, c = divmod(i, 3)
        assert _same(g[2 + 34 * r : 34 + 34 * r, 2 + 34 * c : 34 + 34 * c], m.image(3 + i))
    for mode in ("linear", "slerp"):
        strip = m.interpolation(3, 9, 4, mode)
        assert strip.shape == (36, 4 * 34 + 2, 3)
        assert _same(strip[2:34, 2:34], m.image(3)) and _same(strip[2:34, -34:-2], m.image(9))
    with pytest.raises(ExploreError, match="unknown interpolation 'cubic'; choose linear or slerp"):
        m.interpolation(3, 9, 4, "cubic")
    with pytest.raises(ExploreError, match="between 1 and 64, got 65"):
        m.grid(0, 65)


def test_unconditional_models_refuse_truncation_and_attribute_values(trained):
    m = load_model(trained("dcgan"))
    with pytest.raises(ExploreError, match="a dcgan model has no truncation: psi must be 1"):
        m.image(0, 0.5)
    with pytest.raises(ExploreError, match="unconditional: it takes no attribute values"):
        m.image(0, labels={"hair": "red"})
    with pytest.raises(ExploreError, match="latent directions and style mixing need a StyleGAN2 model"):
        m.image(0, direction=("sefa", 0, 1.0))


def test_acgan_attribute_values_drive_the_labels(trained):
    m = load_model(trained("acgan"))
    assert m.label_names == ["hair", "glasses"] and m.label_values == LABELS
    y = m.labels([0, 1, 2, 3], {"hair": "red", "glasses": "random"})
    assert y[:, 0].tolist() == [2, 2, 2, 2]
    assert torch.equal(y[:, 1], m.labels([0, 1, 2, 3], {})[:, 1])  # the rest comes from each seed
    assert not np.array_equal(m.image(4, labels={"hair": "black"}), m.image(4, labels={"hair": "red"}))
    with pytest.raises(ExploreError, match="unknown value 'green' for hair; valid: black, blond, red"):
        m.image(0, labels={"hair": "green"})
    with pytest.raises(ExploreError, match="unknown attribute 'hat'; attributes: hair, glasses"):
        m.image(0, labels={"hat": "yes"})


def test_stylegan2_truncation_directions_and_style_mixing(trained):
    m = load_model(trained("stylegan2"))
    assert np.array_equal(m.image(1, 0.0), m.image(2, 0.0))  # psi 0: every seed is the average face
    assert not np.array_equal(m.image(1, 1.0), m.image(1, 0.5))
    assert m.groups == {"coarse": [0, 1, 2], "middle": [3, 4], "fine": [5, 6, 7]}  # 32 px: levels 4-8, 16, 32
    for method in ("sefa", "ganspace"):
        dirs, spread = m.directions(method)
        assert dirs.shape == (m.n_directions, m.z_dim) and torch.allclose(
            dirs @ dirs.T, torch.eye(m.n_directions), atol=1e-4
        )
        assert (spread > 0).all()
        assert np.array_equal(m.image(1, 0.8, direction=(method, 2, 0.0)), m.image(1, 0.8))
        assert _differs(m.image(1, 0.8, direction=(method, 2, 3.0)), m.image(1, 0.8)) > 1
    _, spread = m.directions("ganspace")
    assert torch.all(spread[:-1] >= spread[1:])  # principal axes by falling variance
    assert np.array_equal(m.image(1, mix=(7, ["coarse", "middle", "fine"])), m.image(7))
    assert np.array_equal(m.image(1, mix=(7, [])), m.image(1))
    mixed = m.image(1, mix=(7, ["fine"]))
    assert not np.array_equal(mixed, m.image(1)) and not np.array_equal(mixed, m.image(7))
    assert m.direction_strip(1, "sefa", 0, steps=3).shape == (36, 3 * 34 + 2, 3)
    with pytest.raises(ExploreError, match="unknown direction method 'ica'; choose one of: ganspace, sefa"):
        m.image(1, direction=("ica", 0, 1.0))
    with pytest.raises(ExploreError, match="direction index 10 out of range 0..9"):
        m.image(1, direction=("sefa", 10, 1.0))
    with pytest.raises(ExploreError, match="unknown layer group 'top'; choose from coarse, middle, fine"):
        m.image(1, mix=(7, ["top"]))


def test_vae_reconstructs_an_upload_and_decodes_its_neighbours(trained, tmp_path):
    m = load_model(trained("vae"))
    photo = np.random.default_rng(0).integers(0, 256, (90, 60, 3), dtype=np.uint8)  # not square, not 32 px
    (tmp_path / "face.png").write_bytes(_png(photo))
    out = m.reconstruct(read_upload(tmp_path / "face.png"), n=4, radius=0.0)
    assert out["input"].shape == out["reconstruction"].shape == (32, 32, 3)
    assert out["neighbours"].shape == (36, 4 * 34 + 2, 3)
    assert np.array_equal(out["neighbours"][2:34, 2:34], out["reconstruction"])  # radius 0: the mean code itself
    far = m.reconstruct(photo, n=4, radius=3.0)["neighbours"]
    assert not np.array_equal(far[2:34, 2:34], far[2:34, 36:68])


def test_cyclegan_translates_an_upload_both_ways(trained):
    m = load_model(trained("cyclegan"))
    assert isinstance(m, Translator) and (m.a, m.b) == ("cartoon", "sketch")
    photo = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    out = m.translate(photo)
    assert {k: v.shape for k, v in out.items()} == {
        k: (32, 32, 3) for k in ("input", "a_to_b", "a_to_b_to_a", "b_to_a", "b_to_a_to_b")
    }
    assert not np.array_equal(out["a_to_b"], out["b_to_a"])


def test_bad_checkpoints_and_uploads_are_one_clear_line(trained, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 20)
    torch.save({"state": {}, "label_dims": [3]}, tmp_path / "classifier.pt")  # an attribute classifier's layout
    state = torch.load(trained("dcgan"), weights_only=True)
    torch.save({**state, "format": 1}, tmp_path / "old.pt")
    torch.save({**state, "config": {**state["config"], "model": "biggan"}}, tmp_path / "newer.pt")
    translator = torch.load(trained("cyclegan"), weights_only=True)
    translator["config"]["resblocks"] = translator["config"].pop("res_blocks")
    torch.save(translator, tmp_path / "renamed.pt")
    translator = torch.load(trained("cyclegan"), weights_only=True)
    translator["config"]["g_channels"] = 8  # its weights are 4 wide: a config edited by hand
    torch.save(translator, tmp_path / "wide.pt")
    vae = torch.load(trained("vae"), weights_only=True)
    vae["config"]["d_channels"] = 16  # the encoder's width: the decoder (G) still fits
    torch.save(vae, tmp_path / "wide-encoder.pt")
    cases = {
        tmp_path / "wide.pt": r"wide.pt: a cyclegan checkpoint whose G_ab weights do not fit the model its config "
        r"describes: \d+ shape mismatch\(es\), e.g. \S+: file \(4, 3, 7, 7\) vs model \(8, 3, 7, 7\)",
        tmp_path / "wide-encoder.pt": r"wide-encoder.pt: a vae checkpoint whose encoder \(D\) weights do not fit the "
        r"model its config describes: \d+ shape mismatch\(es\)",
        tmp_path / "newer.pt": r"newer.pt: its train config is not one this facegan reads \(written by another "
        r"version\?\): model: got 'biggan'",
        tmp_path
        / "renamed.pt": r"renamed.pt: its cyclegan config is not one this facegan reads .*resblocks: unknown key",
        tmp_path / "missing.pt": "checkpoint not found: .*missing.pt",
        tmp_path / "junk.pt": r"junk.pt: not a readable checkpoint \(no file torch.save wrote: neither a zip",
        tmp_path / "classifier.pt": r"classifier.pt: not a facegan checkpoint \(it holds: label_dims, state\)",
        tmp_path / "old.pt": "checkpoint format 1, this facegan reads format 2; retrain",
    }
    for path, msg in cases.items():
        with pytest.raises(FaceganError, match=msg) as e:
            load_model(path)
        assert "\n" not in str(e.value)
    (tmp_path / "notes.txt").write_text("not a face")
    (tmp_path / "cut.png").write_bytes(_png(np.zeros((64, 64, 3), np.uint8))[:60])
    with pytest.raises(
        ExploreError,
        match=r"upload 'notes.txt' is not a usable image \(unreadable image: no image format Pillow knows\); "
        r"upload a PNG",
    ):
        read_upload(tmp_path / "notes.txt")
    with pytest.raises(ExploreError, match="upload 'cut.png' is not a usable image"):
        read_upload(tmp_path / "cut.png")
    with pytest.raises(ExploreError, match="upload a face image first"):
        read_upload(None)
    with pytest.raises(ExploreError, match="unknown model 'nope': no such file, and not a models:/NAME@ALIAS URI"):
        resolve("nope")
    with pytest.raises(ExploreError, match="model URI 'models:/bad': write models:/NAME@ALIAS"):
        resolve("models:/bad")


def test_direction_names_persist_beside_the_checkpoint(trained):
    path = trained("stylegan2")
    names = DirectionNames(path)
    assert names.path == path.with_name("checkpoint.directions.json")
    names.save("sefa", 2, "  head   tilt ")
    names.save("ganspace", 0, "hair")
    assert DirectionNames(path).load() == {"sefa": {2: "head tilt"}, "ganspace": {0: "hair"}}
    names.save("ganspace", 0, "")
    assert DirectionNames(path).load() == {"sefa": {2: "head tilt"}}
    names.save("sefa", 2, "")


def test_direction_names_keep_what_they_cannot_read(tmp_path, caplog):
    """A names file with an entry that is not {index: name} still gives its other names, and a save refuses to
    rewrite it (the rewrite would drop that entry) instead of replacing it by the one new name."""
    ckpt = tmp_path / "checkpoint.pt"
    names = DirectionNames(ckpt)
    text = '{"sefa": {"0": "smile", "1": "age", "01": "twin", "\u00b2": "sup"}, "ganspace": {"0": "pose"}, "old": 3}'
    names.path.write_text(text)
    assert names.load() == {"sefa": {0: "smile", 1: "age"}, "ganspace": {0: "pose"}}
    assert "ignoring 'sefa': '01', 'sefa': '\u00b2', 'old'" in caplog.text
    with pytest.raises(ExploreError, match=r"holds what is not a direction name \('sefa': '01', .*'old'\)"):
        names.save("sefa", 3, "tilt")
    assert names.path.read_text() == text
    names.path.write_text('{"sefa": {"0": "smile"')  # cut off
    assert names.load() == {}
    with pytest.raises(ExploreError, match="cannot save the name: .* holds what is not a direction name"):
        names.save("sefa", 3, "tilt")
    assert names.path.read_text() == '{"sefa": {"0": "smile"'


def test_direction_names_are_no_dvc_output_change():
    """The names file beside a stage's checkpoint is ignored by DVC: naming a direction must not make the stage
    that trained the model out of date (`dvc repro` would train again and delete the names)."""
    from dvc.repo import Repo

    root = Path(__file__).resolve().parents[1]
    with Repo(str(root)) as repo:
        ignored = repo.dvcignore.is_ignored
        assert ignored(repo.fs, str(root / "data/models/cartoon/checkpoint.directions.json"))
        assert ignored(repo.fs, str(root / "data/runs/ada-s0/best.directions.json"))
        assert not ignored(repo.fs, str(root / "data/models/cartoon/checkpoint.pt"))


def test_models_keep_the_last_used_and_reload_a_rewritten_checkpoint(trained):
    from facegan.latent import Models

    models = Models(keep=2)
    a, b, c = (str(trained(k)) for k in ("dcgan", "wgan-gp", "vae"))
    first = models.get(a)[0]
    assert models.get(a)[0] is first  # loaded once
    models.get(b)
    models.get(c)
    assert len(models._by_key) == 2 and models.get(a)[0] is not first  # a was dropped, then loaded again
    again = models.get(a)[0]
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file written again (a training running)
    fresh = models.get(a)[0]
    assert fresh is not again and [k[0] for k in models._by_key].count(str(Path(a).resolve())) == 1


def test_seed_boxes_take_whole_numbers_and_mixing_needs_a_seed_only_when_used():
    from facegan.explore.app import _mix, _seed

    assert _seed(3.0) == 3 and _seed("12") == 12 and _seed(np.int64(7)) == 7
    assert _seed(3_000_000_000) == 3_000_000_000  # `facegan sample --seed` takes it: the page did not (2^31 - 1)
    for bad in (float("inf"), float("nan"), -1, 2.5, 2**53, "x", 10**400):
        with pytest.raises(ExploreError, match="style seed .* must be a whole number between 0 and 9007199254740991"):
            _seed(bad, "style seed")
    with pytest.raises(ExploreError, match="the to seed box is empty"):
        _seed(None, "to seed")
    with pytest.raises(ExploreError, match="the seed box is empty"):
        _seed("   ")
    assert _mix(None, []) is None and _mix("", None) is None
    assert _mix(5, ["coarse"]) == (5, ["coarse"])
    with pytest.raises(ExploreError, match="the style seed box is empty"):
        _mix(None, ["fine"])


def test_acgan_without_attribute_names_still_samples(tmp_path):
    """A conditional checkpoint written by a trainer built in code without label names: its labels are attr0,
    attr1 with values 0 .. k-1 in the explorer and in `facegan sample`."""
    from facegan.sample import sample_checkpoint
    from facegan.train.run import make_trainer

    cfg = TrainConfig.model_validate({**TINY, "model": "acgan"})
    t = make_trainer(cfg, _images(), torch.stack([torch.arange(8) % 3, torch.arange(8) % 2], 1), [3, 2], CPU)
    t.step()
    save_checkpoint(tmp_path / "checkpoint.pt", t.state_dict())
    m = load_model(tmp_path / "checkpoint.pt")
    assert m.label_names == ["attr0", "attr1"] and m.label_values == {"attr0": ["0", "1", "2"], "attr1": ["0", "1"]}
    assert m.image(0, labels={"attr0": "2"}).shape == (32, 32, 3)
    assert sample_checkpoint(tmp_path / "checkpoint.pt", 2, 0, "attr1=1").shape == (2, 32, 32, 3)


def test_the_page_deletes_its_cached_images(trained):
    from gradio.processing_utils import move_files_to_cache
    from gradio.route_utils import delete_files_created_by_app

    from facegan.explore.app import DELETE_CACHE, build
    from facegan.latent import Models, Source

    path = trained("dcgan")
    demo = build(load_model(path), Source(str(path), path), Models())
    assert demo.delete_cache == DELETE_CACHE and DELETE_CACHE[0] <= 3600 and DELETE_CACHE[1] <= 24 * 3600
    main = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "main-image")
    # a rendered image, as the server hands it to the page (postprocess, then into the block's cache)
    shown = Path(move_files_to_cache(main.postprocess(load_model(path).image(0)), main, postprocess=True)["path"])
    assert shown.is_file()
    delete_files_created_by_app(demo, DELETE_CACHE[1])  # the scheduled sweep: a fresh file stays
    assert shown.is_file()
    time.sleep(0.05)
    delete_files_created_by_app(demo, 0)  # older than the age: gone
    assert not shown.exists()


def test_every_registered_model_has_an_explorer_view():
    from facegan.models import MODELS

    views = {name: sampler_class(spec) for name, spec in MODELS.items()}
    assert views["stylegan2"] is StyleSampler and views["acgan"] is ConditionalSampler and views["vae"] is VAESampler
    assert views["dcgan"] is Sampler


def test_cli_refuses_unusable_models_before_serving(trained, tmp_path, capsys):
    from facegan.cli import main

    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(SystemExit) as e:
        main(["explore", "-c", str(tmp_path / "junk.pt"), "--port", str(free_port())])
    assert e.value.code == 2 and "junk.pt: not a readable checkpoint (" in " ".join(capsys.readouterr().err.split())
    (tmp_path / "params.yaml").write_text("datasets: [")  # another project's broken params: not needed for -c
    with pytest.raises(SystemExit) as e:
        main(["explore", "-c", str(tmp_path / "junk.pt"), "-p", str(tmp_path / "params.yaml"), "--port", "0"])
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 2 and "junk.pt: not a readable checkpoint (" in err
    assert "params.yaml: not valid YAML" in err and "the tracking store is the default one" in err
    with pytest.raises(SystemExit) as e:
        main(["explore", "-c", str(trained("dcgan")), "--run", "0" * 32])
    assert e.value.code == 2 and "give at most one of --model-uri, --checkpoint and --run" in " ".join(
        capsys.readouterr().err.split()
    )


# ---- the page in a real browser ---------------------------------------------------------------------------------


@contextlib.contextmanager
def explore_server(checkpoint: Path, log: Path):
    """`facegan explore -c CHECKPOINT` on a free 127.0.0.1 port, in its own process group; yields the URL."""
    port = free_port()
    env = {**os.environ, "FACEGAN_LOG_LEVEL": "INFO", "COLUMNS": "200", "GRADIO_TEMP_DIR": str(log.parent / "gradio")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from facegan.cli import main; main()",
            "explore",
            "-c",
            str(checkpoint),
            "--port",
            str(port),
            "--threads",
            "1",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_healthy(url, proc, log, timeout=120)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


@contextlib.contextmanager
def chromium():
    """A page of headless Debian Chromium (fresh profile, nothing reached beyond 127.0.0.1)."""
    if not CHROMIUM.is_file():  # `make test` installs it and sets FACEGAN_TEST_STRICT: there missing is a failure
        assert not STRICT, f"{CHROMIUM} not found although `make test` installs it"
        pytest.skip(f"{CHROMIUM} not found: `apt-get install chromium` (`make test` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            viewport={"width": 1280, "height": 1000},
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            ctx.close()


def _shown(page, elem: str) -> tuple[str, np.ndarray]:
    """(src, pixels as displayed) of the image in component `elem`, once loaded."""
    img = page.locator(f"#{elem} img")
    img.wait_for()
    page.wait_for_function(
        f"() => {{ const i = document.querySelector('#{elem} img'); return i && i.complete && i.naturalWidth > 0; }}"
    )
    return img.get_attribute("src"), np.asarray(Image.open(io.BytesIO(img.screenshot())).convert("RGB"))


def _pixels(page, elem: str) -> np.ndarray:
    """The image in component `elem` as the server sent it (not as displayed: scaled to the page)."""
    src, _ = _shown(page, elem)
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")).astype(int)


def _changed(page, elem: str, old_src: str) -> np.ndarray:
    page.wait_for_function(
        f"(old) => {{ const i = document.querySelector('#{elem} img'); "
        "return i && i.src !== old && i.complete && i.naturalWidth > 0; }",
        arg=old_src,
    )
    return _shown(page, elem)


def _status(page) -> str:
    return page.locator("#status").inner_text()


def _no_error(page) -> None:
    assert "error" not in _status(page).lower(), _status(page)
    assert page.locator(".toast-body").count() == 0  # gradio's own error pop-ups


def _drag(page, elem: str, fraction: float) -> None:
    """Click the range track of slider `elem` at `fraction` of its width, as a person would."""
    box = page.locator(f"#{elem} input[type=range]").bounding_box()
    page.mouse.click(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2)


def test_stylegan2_grid_and_interpolation_are_steered_as_the_main_image(trained):
    """The explorer's grid and interpolation dropped the direction and style mixing set for the main image: tile 0
    of the grid differed from the main image of its seed by up to 255."""
    import facegan.latent

    def most(a: np.ndarray, b: np.ndarray) -> int:
        return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())

    m = load_model(trained("stylegan2"))
    steer = {"direction": ("sefa", 2, 3.0), "mix": (7, ["coarse"])}
    for kw in ({}, steer):
        tiles = np.stack([m.image(3 + i, 0.8, **kw) for i in range(4)])
        assert most(m.grid(3, 4, 0.8, **kw), facegan.latent.grid(tiles)) <= 1  # batch vs one: rounding at most
        ends = facegan.latent.strip(np.stack([m.image(3, 0.8, **kw), m.image(9, 0.8, **kw)]))
        for mode in ("slerp", "linear"):
            assert most(m.interpolation(3, 9, 2, mode, 0.8, **kw), ends) <= 1
    assert _differs(m.grid(3, 4, 0.8, **steer), m.grid(3, 4, 0.8)) > 1
    assert m.interpolation(3, 9, 3.0).shape == m.interpolation(3, 9, 3).shape  # a number box may give a float
    dcgan = load_model(trained("dcgan"))
    with pytest.raises(ExploreError, match="latent directions and style mixing need a StyleGAN2 model"):
        dcgan.grid(3, 4, direction=("sefa", 2, 3.0))
    with pytest.raises(ExploreError, match="latent directions and style mixing need a StyleGAN2 model"):
        dcgan.interpolation(3, 9, mix=(7, ["coarse"]))


def test_browser_slider_seed_names_and_bad_models(trained, tmp_path):
    ckpt = trained("stylegan2")
    (tmp_path / "notes.txt").write_text("no model here")
    with explore_server(ckpt, tmp_path / "server.log") as url, chromium() as page:
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url)
        src0, shown0 = _shown(page, "main-image")
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('seed 0')")
        _no_error(page)

        _drag(page, "amount", 0.9)  # a SeFa direction, about +4 sigma
        src1, shown1 = _changed(page, "main-image", src0)
        assert _differs(shown0, shown1) > 1
        page.locator("#seed input").fill("7")
        page.locator("#seed input").press("Enter")
        src2, shown2 = _changed(page, "main-image", src1)
        assert _differs(shown1, shown2) > 1
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('seed 7')")
        _no_error(page)

        # the grid and the interpolation show the steering of the main image: tile 0 and the strip's start are it
        main = _pixels(page, "main-image")
        h, w = main.shape[:2]
        page.get_by_text("Grid of samples").click()
        page.locator("#grid-button").click()
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('grid of seeds 7..22')")
        assert np.abs(_pixels(page, "grid-image")[2 : 2 + h, 2 : 2 + w].astype(int) - main).max() <= 1
        page.get_by_text("Interpolation between two seeds").click()
        page.locator("#interp-button").click()
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('path from seed 7')")
        assert np.abs(_pixels(page, "interp-image")[2 : 2 + h, 2 : 2 + w].astype(int) - main).max() <= 1
        _no_error(page)

        long = "smile intensity with a slight head tilt to the left and raised brows"  # 68 characters
        page.locator("#name textarea, #name input").first.fill(long)
        page.locator("#save-name").click()
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('(cut to 60 characters)')")
        assert f"named {long[:60]!r} (cut" in _status(page)  # the name stored, not the one typed
        assert page.locator("#name textarea, #name input").first.input_value() == long[:60]
        page.locator("#name textarea, #name input").first.fill("tilt")
        page.locator("#save-name").click()
        page.wait_for_function("() => document.querySelector('#status').innerText.includes(\"named 'tilt'\")")
        assert DirectionNames(ckpt).load() == {"sefa": {0: "tilt"}}
        assert page.locator("#direction input").input_value() == "0: tilt"
        page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)  # the test's artifact

        page.get_by_role("tab", name="Compare").click()
        bad = {
            "models:/facegan-nope": "model URI 'models:/facegan-nope': write models:/NAME@ALIAS",
            str(tmp_path / "nothing.pt"): "unknown model",
            str(trained("cyclegan")): "is a cyclegan translator: compare takes generators",
            str(tmp_path / "notes.txt"): "not a readable checkpoint",
        }
        for ref, msg in bad.items():
            page.locator("#model-b textarea, #model-b input").first.fill(ref)
            page.locator("#compare-button").click()
            page.wait_for_function("(m) => document.querySelector('#status').innerText.includes(m)", arg=msg)
            assert _status(page).startswith("error:")
        page.locator("#model-b textarea, #model-b input").first.fill(str(trained("dcgan")))
        page.locator("#compare-button").click()
        page.wait_for_function("() => document.querySelector('#status').innerText.includes(' vs ')")
        assert _shown(page, "compare-b")[1].size > 0
        _no_error(page)

        page.get_by_role("tab", name="Sample").click()  # the app still serves after every bad input
        _drag(page, "psi", 0.2)
        _, shown3 = _changed(page, "main-image", src2)
        assert _differs(shown2, shown3) > 1
        _no_error(page)
        assert [r for r in requests if not r.startswith((url, "data:", "blob:"))] == []  # nothing from outside
    log = (tmp_path / "server.log").read_text()
    for msg in bad.values():
        assert msg.split(":")[0] in log
    assert "Traceback" not in log
    assert (tmp_path / "explore.png").stat().st_size > 10_000


@pytest.mark.slow  # a second server and browser (~15 s each); the default run checks uploads in the library test
@pytest.mark.parametrize("kind", ["vae", "cyclegan"])
def test_browser_uploads_good_corrupt_and_non_image_files(trained, tmp_path, kind):
    face = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    (tmp_path / "face.png").write_bytes(_png(face))
    (tmp_path / "cut.png").write_bytes(_png(face)[:100])
    (tmp_path / "notes.txt").write_text("not a face")
    upload, shown = ("vae-upload", "vae-recon") if kind == "vae" else ("cycle-upload", "cycle-ab")
    with explore_server(trained(kind), tmp_path / "server.log") as url, chromium() as page:
        page.goto(url)
        if kind == "vae":
            page.get_by_role("tab", name="Encode").click()
        for name, msg in (
            ("notes.txt", "upload 'notes.txt' is not a usable image"),
            ("cut.png", "upload 'cut.png' is not a usable image"),
        ):
            page.locator(f"#{upload} input[type=file]").set_input_files(str(tmp_path / name))
            page.wait_for_function("(m) => document.querySelector('#status').innerText.includes(m)", arg=msg)
            page.locator(f"#{upload} button[aria-label='Clear']").first.click()
        page.locator(f"#{upload} input[type=file]").set_input_files(str(tmp_path / "face.png"))
        _shown(page, shown)
        page.wait_for_function("() => !document.querySelector('#status').innerText.includes('error')")
        _no_error(page)
        page.screenshot(path=str(tmp_path / f"explore_{kind}.png"), full_page=True)
    log = (tmp_path / "server.log").read_text()
    assert "upload 'notes.txt' is not a usable image" in log and "upload 'cut.png' is not a usable image" in log


@pytest.mark.parametrize("kind", ["dcgan", "acgan"])
def test_sampled_image_i_is_seed_plus_i_whatever_n_and_the_explorers(tmp_path, kind):
    """`facegan sample --seed S -n N`: image i is seed S + i's (its z and labels drawn from streams of that seed), so
    it does not change with N and equals the explorer's image of that seed. One draw for all N made the labels of
    every image depend on N, and with z_dim 100 (not a multiple of 16) torch redrew z's last values with N."""
    from facegan.sample import sample_checkpoint
    from facegan.seeds import MAX_SEED, SeedError
    from facegan.train.run import make_trainer

    cfg = TrainConfig.model_validate({**TINY, "model": kind, "z_dim": 100})
    labels = torch.stack([torch.arange(8) % 3, torch.arange(8) % 2], 1) if kind == "acgan" else None
    names = list(LABELS) if labels is not None else None
    t = make_trainer(cfg, _images(), labels, [3, 2] if names else [], CPU, label_names=names, label_values=LABELS)
    t.step()
    ckpt = tmp_path / "checkpoint.pt"
    save_checkpoint(ckpt, t.state_dict())
    many = sample_checkpoint(ckpt, 5, 7)
    for i in range(5):
        assert np.array_equal(many[i], sample_checkpoint(ckpt, 1, 7 + i)[0]), i
    assert np.array_equal(many[2], load_model(ckpt).image(9))
    with pytest.raises(SeedError, match=f"seeds {MAX_SEED} .. {MAX_SEED + 1}: seeds are 0 .. {MAX_SEED}"):
        sample_checkpoint(ckpt, 2, MAX_SEED)
    with pytest.raises(SeedError, match="seed -1: seeds are 0"):  # one seed: named as one
        sample_checkpoint(ckpt, 1, -1)


def test_sample_labels_from_a_packed_set_draw_its_rows(trained, tmp_path):
    """`facegan sample` drew an acgan's labels uniformly per attribute (glasses on half the images of a set with them
    on 29%), so `facegan fid` of its images measured another label mix than the evaluate stage, which draws the set's
    own rows; `--labels-from` draws a row of the set per seed."""
    import json
    import zipfile

    from facegan.sample import LabelError, sample_stream

    def packed(name: str, rows: list[list[int]] | None, labels: dict = LABELS) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        names = [f"00000/img{i:08d}.png" for i in range(len(rows or [None]))]
        meta = {  # what `pack` writes: an unlabelled set has labels null and no label names
            "labels": [[n, r] for n, r in zip(names, rows, strict=True)] if rows is not None else None,
            "label_names": list(labels) if rows is not None else [],
            "label_values": labels if rows is not None else {},
        }
        with zipfile.ZipFile(folder / "dataset.zip", "w") as zf:
            for n in names:  # the rows are the images' (load_labels reads the names; nothing is decoded)
                zf.writestr(n, b"")
            zf.writestr("dataset.json", json.dumps(meta))
        return folder

    ckpt = trained("acgan")

    def images(**kw) -> np.ndarray:
        return np.concatenate(list(sample_stream(ckpt, 6, 3, **kw)))

    red_glasses = packed("red", [[2, 1]] * 5)
    assert np.array_equal(images(labels_from=red_glasses), images(labels="hair=red,glasses=yes"))
    # a fixed attribute still wins; the others come from the seed's row
    assert np.array_equal(images(labels_from=red_glasses, labels="hair=black"), images(labels="hair=black,glasses=yes"))
    two = images(labels_from=packed("two", [[0, 0], [1, 1]]))
    options = [images(labels="hair=black,glasses=no"), images(labels="hair=blond,glasses=yes")]
    picks = [next(k for k, o in enumerate(options) if np.array_equal(two[i], o[i])) for i in range(6)]
    assert set(picks) == {0, 1}  # each seed takes one of the set's rows, both drawn
    for folder, msg in (
        (packed("other", [[0, 1]], {"hair": ["black", "blond", "red"], "hat": ["no", "yes"]}), "are not the model's"),
        (tmp_path / "red" / "..", "no dataset.zip there"),
        (packed("unlabelled", None), "the set has no labels"),
    ):
        with pytest.raises(LabelError, match=msg):
            sample_stream(ckpt, 2, 0, labels_from=folder)
    with pytest.raises(LabelError, match="this model is unconditional: it takes no --labels-from"):
        sample_stream(trained("dcgan"), 2, 0, labels_from=red_glasses)


def test_an_explorer_served_beyond_this_machine_reads_no_file_a_page_names(trained, tmp_path, monkeypatch):
    """With --host 0.0.0.0 the Compare tab loaded any readable path a visitor typed (weights_only: no code ran, but
    any file was opened and its kind said back). Served so, the page takes the served model and tracked references
    only; on 127.0.0.1 it still takes paths."""
    from facegan.explore import LOOPBACK
    from facegan.latent import Models, Source

    served = resolve(str(trained("dcgan")))
    other = str(trained("acgan"))
    shared = Models(paths=False)
    assert shared.from_page(f" {served.ref} ", served)[1].checkpoint == served.checkpoint
    for ref in (other, str(tmp_path / "nothing.pt"), "/etc/hostname"):
        with pytest.raises(ExploreError, match="served beyond this machine .* not checkpoint paths"):
            shared.from_page(ref, served)
    assert Models().from_page(other, served)[1].checkpoint == Path(other)
    assert "0.0.0.0" not in LOOPBACK and "127.0.0.1" in LOOPBACK
    monkeypatch.chdir(tmp_path)  # a file named like a run id, or a registry URI, is not read for the page either
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # (`make test` names the project's store)
    for ref in ("0" * 32, "models:/facegan-cartoon@best"):
        (tmp_path / ref).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / ref).write_bytes(Path(other).read_bytes())
        with pytest.raises(ExploreError, match="no MLflow store at mlflow.db"):
            shared.from_page(ref, served)
    assert Models().from_page("0" * 32, served)[1].checkpoint == Path("0" * 32)  # on 127.0.0.1 a path is a path
    by_id = Source("0" * 32, served.checkpoint, "0" * 32)  # served by its run id: that name is no file either
    with pytest.raises(ExploreError, match="no MLflow store at mlflow.db"):
        shared.from_page("0" * 32, by_id)


# ---- from a bug hunt of the explorer (2026-12-07): each fails on the code before ------------------------------


def test_an_acgan_interpolation_ends_on_each_seeds_own_image(trained):
    """The strip gave every step seed a's attribute labels: its right end was seed b's z with seed a's hair and
    glasses, not seed b's image. The labels now walk from a's one-hot rows to b's; attributes set stay set."""
    m = load_model(trained("acgan"))
    with torch.no_grad():
        for layer in (m.g.stem[0], m.g.body[0]):  # the label inputs (last rows) of a 2-step model barely show
            layer.weight[-sum(map(len, LABELS.values())) :] *= 200
    a, b = next((a, b) for a, b in ((0, s) for s in range(1, 50)) if not torch.equal(*m.labels([a, b], {})))
    ya, yb = m.labels([a, b], {})
    strip = m.interpolation(a, b, 4, "linear")
    assert _same(strip[2:34, 2:34], m.image(a)) and _same(strip[2:34, -34:-2], m.image(b))
    before = m._draw(seed_z(m.z_dim, [b]), ya[None], 1.0, None, None)[0]  # b's latent, a's labels: the end before
    assert _differs(strip[2:34, -34:-2], before) > 2
    fixed = {"hair": LABELS["hair"][int(ya[0])], "glasses": LABELS["glasses"][int(ya[1])]}
    held = m.interpolation(a, b, 4, "linear", labels=fixed)  # both ends under a's values: b's end is b under them
    assert _same(held[2:34, -34:-2], m.image(b, labels=fixed))
    assert torch.equal(m.blend(torch.stack([ya, ya]), 3), m.blend(torch.stack([ya, ya]), 3)[:1].expand(3, -1))


def test_vae_neighbour_i_is_the_same_whatever_the_number_shown(tmp_path):
    """torch draws normals in blocks: n rows of z_dim drew other last rows for another n (where n * z_dim is no
    multiple of 16), so the neighbours slider changed the faces already shown."""
    m = load_model(_train("vae", tmp_path, z_dim=10))
    decoder, codes = m.g, []
    m.g = lambda c: codes.append(c.clone()) or decoder(c)
    photo = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for n in (5, 6, 3):
        m.reconstruct(photo, n=n, radius=1.0, seed=7)
    assert torch.equal(codes[1][:6], codes[0]) and torch.equal(codes[2], codes[0][:4])  # row 0: the mean code
    assert not torch.equal(codes[0][1], codes[0][2])


def test_library_calls_refuse_what_the_page_cannot_send(trained, tmp_path):
    """Seeds out of 0 .. 2^63 - 1 (a negative one drew a large one's image, 2^64 a traceback), NaN or infinite
    psi, amounts, radii and sigmas (a black image), arrays that are not RGB (tracebacks), 0 direction steps."""
    from facegan.seeds import MAX_SEED

    m = load_model(trained("dcgan"))
    for call in (lambda: m.image(-1), lambda: m.grid(MAX_SEED, 2), lambda: m.interpolation(0, 2**64)):
        with pytest.raises(ExploreError, match=f"seeds? .*: seeds are 0 .. {MAX_SEED}"):
            call()
    with pytest.raises(ExploreError, match="psi must be a finite number, got nan"):
        m.image(0, float("nan"))
    s = load_model(trained("stylegan2"))
    with pytest.raises(ExploreError, match="psi must be a finite number, got inf"):
        s.image(0, float("inf"))
    with pytest.raises(ExploreError, match="the direction amount must be a finite number, got nan"):
        s.image(0, direction=("sefa", 0, float("nan")))
    with pytest.raises(ExploreError, match="seed -5: seeds are 0"):
        s.image(0, mix=(-5, ["fine"]))
    with pytest.raises(ExploreError, match="the direction steps must be between 1 and 32, got 0"):
        s.direction_strip(0, "sefa", 0, steps=0)
    v = load_model(trained("vae"))
    face = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    with pytest.raises(ExploreError, match="the neighbour radius must be a finite number, got inf"):
        v.reconstruct(face, radius=float("inf"))
    with pytest.raises(ExploreError, match="the neighbour seed -1: seeds are 0"):
        v.reconstruct(face, seed=-1)
    gray, rgba = face[..., 0], np.dstack([face, np.full((40, 40), 255, np.uint8)])
    assert np.array_equal(v.reconstruct(rgba)["input"], v.reconstruct(face)["input"])  # opaque alpha: the same
    assert v.reconstruct(gray)["input"].shape == v.reconstruct(gray[..., None])["input"].shape == (32, 32, 3)
    t = load_model(trained("cyclegan"))
    for bad in (face.astype(np.float64), face.astype(np.uint16), face[..., :2], np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(ExploreError, match="an image must be an HxW, HxWx1, HxWx3 or HxWx4 uint8 array, not"):
            t.translate(bad)


def test_direction_names_refuse_a_negative_index(tmp_path):
    """`save(method, -1, name)` wrote "-1", which the file's reader refuses: every later save was refused."""
    names = DirectionNames(tmp_path / "checkpoint.pt")
    names.save("sefa", 0, "smile")
    with pytest.raises(ExploreError, match="direction index -1: directions are numbered from 0"):
        names.save("sefa", -1, "tilt")
    assert names.save("sefa", 1, "age") == {"sefa": {0: "smile", 1: "age"}}


def test_page_messages_name_the_box_and_what_is_wrong(trained, tmp_path):
    """An upload gone from the server's cache read 'not a usable image (... No such file or directory:)'; an empty
    model box served with --host said paths are not taken; a folder was 'no such file'; no message named the box."""
    from facegan.latent import Models

    with pytest.raises(ExploreError, match="upload 'face.png' is no longer on the server .*: upload it again"):
        read_upload(tmp_path / "face.png")
    with pytest.raises(ExploreError, match="upload 'folder' is no longer on the server \\(or is no file\\)"):
        read_upload((tmp_path / "folder").mkdir() or tmp_path / "folder")
    served = resolve(str(trained("dcgan")))
    with pytest.raises(ExploreError, match=r"^give model B: models:/NAME@ALIAS, an MLflow run id$"):
        Models(paths=False).from_page("  ", served, "model B")
    with pytest.raises(ExploreError, match=r"^give model A: models:/NAME@ALIAS, an MLflow run id or a checkpoint"):
        Models().from_page("", served, "model A")
    with pytest.raises(ExploreError, match=r"folder: a folder; give the checkpoint file in it \(e.g. .*checkpoint.pt"):
        Models().from_page(str(tmp_path / "folder"), served, "model B")


def test_serve_names_a_bad_address_and_never_shares_or_goes_through_a_proxy(trained, monkeypatch):
    """A --host not of this machine was 'Cannot find empty port' (gradio's words for any failed bind); a proxy in
    the environment made gradio's check of its own URL fail (a traceback); GRADIO_SHARE=true, or a hosted notebook,
    published the page on a public link while it still took file paths."""
    import socket

    import gradio.networking

    from facegan.explore import address_problem, serve

    assert "not an address of this machine" in address_problem("10.255.255.1", 7999)
    assert address_problem("[::1]", 0) is None and address_problem("localhost", None) is None  # as gradio takes them
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert (
            address_problem("127.0.0.1", port)
            == f"port {port} on 127.0.0.1 is in use: choose another --port, or 0 for any free one"
        )
        with pytest.raises(ExploreError, match=f"port {port} on 127.0.0.1 is in use"):
            serve(str(trained("dcgan")), "127.0.0.1", port)
    tunnels: list = []
    monkeypatch.setattr(gradio.networking, "setup_tunnel", lambda *a, **k: tunnels.append(a) or "https://x.gradio.live")
    monkeypatch.setenv("GRADIO_SHARE", "True")
    dead = f"http://127.0.0.1:{free_port()}"  # a proxy that refuses every connection
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, dead)
    monkeypatch.setenv("NO_PROXY", "example.org")
    monkeypatch.delenv("no_proxy", raising=False)
    demo, url = serve(str(trained("dcgan")), "127.0.0.1", free_port())
    try:
        assert url.startswith("http://127.0.0.1:") and demo.share is False and not tunnels
        both = "example.org,127.0.0.1,localhost,::1"  # the user's host stays exempt in the spelling clients read
        assert os.environ["NO_PROXY"] == os.environ["no_proxy"] == both
        assert urllib.request.proxy_bypass_environment("example.org")
        assert urllib.request.proxy_bypass_environment("127.0.0.1")
    finally:
        demo.close()
