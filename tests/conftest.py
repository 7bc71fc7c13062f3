"""Shared fixtures: a tiny cartoon dataset pushed through the preprocessing chain once per session."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from facegan.chain import Layout, run_stage
from facegan.config import Params, TrainConfig, load_params, parse_params
from facegan.preprocess.pretrained import models_home, torch_checkpoints
from facegan.train.gan import GANTrainer

ROOT = Path(__file__).resolve().parents[1]
# set by `make test`, which installs the reference environment and chromium and seeds the model caches: there a
# missing one is a failure, not a skip ("", "0", "false" or "no" turn it off)
STRICT = os.environ.get("FACEGAN_TEST_STRICT", "").strip().lower() not in ("", "0", "false", "no")

os.environ.setdefault("FACEGAN_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# the model files `make test` seeds from ../shared into the standard caches (../shared/scripts/seed-caches.sh)
YUNET = sorted((models_home() / "detectors").glob("face_detection_yunet*.onnx"))
BLAZEFACE = torch_checkpoints() / "blazefaceback.pth"
SUPERRES = models_home() / "superres"
# where `make test` seeded them (FACEGAN_TEST_STRICT and ../shared there), a missing file is a failure, not a skip
SEEDED = STRICT and (ROOT.parent / "shared" / "assets").is_dir()
needs_yunet = pytest.mark.skipif(
    not YUNET and not SEEDED,
    reason=f"no YuNet model in {models_home() / 'detectors'} (run ../shared/scripts/seed-caches.sh)",
)
needs_blazeface = pytest.mark.skipif(
    not BLAZEFACE.is_file() and not SEEDED, reason=f"no BlazeFace weights at {BLAZEFACE}"
)
needs_superres = pytest.mark.skipif(
    not (SUPERRES / "FSRCNN_x2.pb").is_file() and not SEEDED, reason=f"no .pb models in {SUPERRES}"
)


def u2net_standin(path: Path, output_shift: float = 0.0) -> Path:
    """A tiny ONNX graph with U^2-Net's signature: input `input.1` 1x3x320x320, seven 1x1x320x320 sigmoid maps."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((1, 3, 1, 1), 0.5, np.float32), "w")
    b = numpy_helper.from_array(np.array([output_shift], np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["input.1", "w", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["d0"]),
    ]
    nodes += [helper.make_node("Identity", ["d0"], [f"d{i}"]) for i in range(1, 7)]
    graph = helper.make_graph(
        nodes,
        "u2net_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info(f"d{i}", TensorProto.FLOAT, [1, 1, 320, 320]) for i in range(7)],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def code_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the repository's dvc.yaml, stages/ and src/ (tmp_path/repo) that facegan.provenance reads as the
    code the stages depend on: a test edits it, not the repository."""
    from facegan import provenance

    repo = tmp_path / "repo"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=ignore)
    shutil.copytree(ROOT / "src", repo / "src", ignore=ignore)
    monkeypatch.setattr(provenance, "REPO", repo)
    monkeypatch.setattr(provenance, "SRC", repo / "src")
    return repo


@pytest.fixture
def global_torch_settings():
    """Restores what `stepper.runtime` / `apply_determinism` set process-wide: deterministic mode, its NaN fill,
    cudnn autotuning, TF32, threads."""
    modes = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    fill, threads = torch.utils.deterministic.fill_uninitialized_memory, torch.get_num_threads()
    flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.use_deterministic_algorithms(modes[0], warn_only=modes[1])
    torch.utils.deterministic.fill_uninitialized_memory = fill
    torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    torch.set_num_threads(threads)


def cpu_amp(trainer, dtype: torch.dtype) -> list[float]:
    """Puts `trainer` in the state `amp: bf16 | fp16` gives it on CUDA, on the CPU: its autocast (around G and D,
    and the GAN objective's) in `dtype`, and for float16 the gradient scaler. CPU autocast's op rules are not
    CUDA's (on the CPU, fp16 autocast keeps e.g. layer/group norm, exp and sums in fp16; reflect padding
    returns float32), so this tests the trainers' amp plumbing, not CUDA's numerics. Returns the scales seen at
    each scaler update (one per backward pass; none when the scaler is off, as for bfloat16)."""
    trainer.amp_dtype = dtype  # `Stepper.autocast` reads it at each use
    scales: list[float] = []
    if dtype == torch.float16:
        scaler = trainer.scaler = torch.amp.GradScaler("cpu")
        update = scaler.update

        def counted(*args, **kwargs):
            scales.append(scaler.get_scale())
            update(*args, **kwargs)

        scaler.update = counted
    return scales


def shrink(raw: dict, n: int, n_target: int) -> dict:
    """Every dataset to a few 128 px images packed at 32 px; the transfer runs to a tiny StyleGAN2, the CycleGAN
    to a tiny one."""
    for name, ds in raw["datasets"].items():
        ds["source"].update(n=n if name == "cartoon" else n_target, size=128)
        ds["align"]["size"] = ds["upscale"]["size"] = 64
        ds["pack"]["resolution"] = 32
        ds["quality"]["min_face"] = 16  # faces are 28-58 px in 128 px images
    tiny = {
        "steps": 2,
        "batch_size": 8,
        "z_dim": 16,
        "checkpoint_every": 1,
        "sample_every": 2,
        "fid_every": 0,
        "stylegan2": {"preset": "tiny"},
        "r1": {"every": 2},
    }
    t = raw["transfer"]
    t["pretrain"].update(tiny)
    t["finetune"].update(tiny)
    t["num_samples"] = 24  # each run's final distance: 256 samples are ~20 s of dlib features a run on 2 cores
    t["runs"] = {
        "baseline": {},
        "freezed_ada": {"freeze_d": 1, "ada": {"enabled": True}},
        "scratch": {"pretrained": False},
    }
    raw["cyclegan"].update(
        g_channels=4,
        res_blocks=1,
        d_channels=4,
        steps=2,
        decay_start=1,
        batch_size=2,
        pool_size=2,
        num_samples=8,
        checkpoint_every=1,
        sample_every=2,
    )
    return raw


def tiny_params(n: int = 12, **train) -> Params:
    """The project's params.yaml shrunk to seconds: few small images, a few training steps."""
    raw = shrink(load_params(ROOT / "params.yaml").model_dump(mode="json"), n, 8)
    raw["workers"] = 1
    raw["train"].update(
        {
            "steps": 4,
            "batch_size": 8,
            "checkpoint_every": 2,
            "sample_every": 2,
            "g_channels": 8,
            "d_channels": 8,
            **train,
        }
    )
    raw["evaluate"].update(num_samples=16, max_real=n, batch_size=8, extractors=["dlib"])
    raw["tracking"]["enabled"] = False  # tests that track start their own MLflow server
    return parse_params(raw)


@pytest.fixture(scope="session")
def tiny_params_obj() -> Params:
    return tiny_params()


@pytest.fixture(scope="session")
def packed_root(tmp_path_factory, tiny_params_obj) -> Path:
    """A project root whose data/ holds the cartoon chain run up to `pack`."""
    root = tmp_path_factory.mktemp("project")
    for stage in ("generate", "detect", "verify", "align", "matte", "upscale", "quality", "pack"):
        run_stage(stage, "cartoon", tiny_params_obj, root)
    return root


@pytest.fixture(scope="session")
def layout(packed_root) -> Layout:
    return Layout(packed_root, "cartoon")


def sh(cmd: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout + r.stderr


CLONED = ("dvc.yaml", "dvc.lock", "stages", "src", "data", ".dvcignore", ".gitignore")  # what a stage run touches


def make_dvc_project(root: Path, tracking: bool = True) -> tuple[Path, dict]:
    """A git + DVC copy of the project in `root`, as a fresh clone has it (the committed dvc.lock and
    data/*/.gitignore files included), with params shrunk to ~1 minute of work."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *CLONED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if not (ROOT / name).is_file():
            continue  # deleted in the working tree, not yet committed
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    p = shrink(yaml.safe_load((ROOT / "params.yaml").read_text()), 48, 16)
    p["train"].update(
        steps=6,
        batch_size=16,
        checkpoint_every=3,
        sample_every=3,
        g_channels=8,
        d_channels=8,
        fid_every=3,
        fid_samples=16,
    )
    p["evaluate"].update(num_samples=24, max_real=48)
    p["tracking"]["enabled"] = tracking
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    bin_dir = str(Path(sys.executable).parent)  # stage commands run `python` and `dvc` from this venv
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "TORCH_HOME": str(root / "torch"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    sh(["git", "init", "-q"], root, env)
    (root / ".git" / "info").mkdir(parents=True, exist_ok=True)
    (root / ".git" / "info" / "exclude").write_text("/torch/\n")  # the test's TORCH_HOME
    sh(["dvc", "init", "-q"], root, env)
    sh(["dvc", "config", "core.analytics", "false"], root, env)
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "init"], root, env)
    return root, env


@contextlib.contextmanager
def logs_of(caplog, name: str = "facegan", level: int = logging.INFO):
    """caplog.records hold what logger `name` says at `level` inside the block. Prefect's and the CLI's logging
    set-ups replace the root handlers, caplog's among them: its handler then goes on `name` for the block alone
    (pytest's caplog handler is one object for the whole session: left on a logger, it took every later test's
    records twice)."""
    logger = logging.getLogger(name)
    attach = caplog.handler not in logging.getLogger().handlers
    if attach:
        logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(level, logger=name):
            yield
    finally:
        if attach:
            logger.removeHandler(caplog.handler)


@contextlib.contextmanager
def killed_at(monkeypatch, step: int):
    """Training in the block dies (KeyboardInterrupt) when it draws the randomness of step `step`, as if the
    process were killed there; afterwards steps draw as usual again."""
    from facegan.train import stepper

    real = stepper.step_generator

    def generator(seed: int, s: int):
        if s == step:
            raise KeyboardInterrupt("killed")
        return real(seed, s)

    monkeypatch.setattr(stepper, "step_generator", generator)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(stepper, "step_generator", real)


GAN_LABEL_DIMS = [2, 3]  # tiny_gan's attributes (acgan)


def tiny_images(n: int = 16, seed: int = 0) -> torch.Tensor:
    """n seeded 32x32 uint8 images."""
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def tiny_gan(over: dict) -> GANTrainer:
    """A CPU GANTrainer of widths 4 and batch 4 (EMA on) over `tiny_images()`, with `over` on top; acgan gets 16
    seeded labels of `GAN_LABEL_DIMS`."""
    cfg = TrainConfig.model_validate({"batch_size": 4, "g_channels": 4, "d_channels": 4, "ema": 0.9, **over})
    labels = torch.stack(
        [torch.randint(0, k, (16,), generator=torch.Generator().manual_seed(1)) for k in GAN_LABEL_DIMS], 1
    )
    acgan = over["model"] == "acgan"
    dims = GAN_LABEL_DIMS if acgan else []
    return GANTrainer(cfg, tiny_images(), labels if acgan else None, dims, torch.device("cpu"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Poll `url` until it answers 200; on timeout or exit, stop the process group and show its log."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=30)
            raise RuntimeError(f"server at {url} did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.5)


def wait_for_text(log: Path, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Poll the log file until it contains `text` (a server can answer before its process prints that it
    serves). Fails with the log's tail on timeout or when the process ends first."""
    deadline = time.time() + timeout
    while text not in (got := log.read_text()):
        if time.time() > deadline or proc.poll() is not None:
            raise AssertionError(f"{text!r} not in the log after {timeout:.0f} s:\n" + got[-3000:])
        time.sleep(0.25)
