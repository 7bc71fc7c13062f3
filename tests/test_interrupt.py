"""Interrupted work leaves nothing half-written, and long training is not lost: `dvc repro` killed with SIGKILL in
a preprocessing stage, in `pack`, in the middle of `train` and in `evaluate`, rerun the way users do each time,
ends with outputs byte-identical to an uninterrupted run, and the rerun of `train` resumes from its last
checkpoint instead of starting over."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from conftest import make_dvc_project, sh

TARGET = "evaluate@cartoon"
COMPARED = [
    "data/raw/cartoon",
    "data/interim/cartoon",
    "data/processed/cartoon",
    "data/classifiers/cartoon",
    "data/stats/cartoon",
    "data/models/cartoon",
    "data/eval/cartoon",
]


def _project(root: Path) -> tuple[Path, dict]:
    root.mkdir()
    root, env = make_dvc_project(root, tracking=False)
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["train"].update(steps=12, checkpoint_every=3, sample_every=3, fid_every=0)
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return root, env


def _kill_when(root: Path, env: dict, ready: Callable[[str], bool], timeout: float = 600) -> str:
    """Start `dvc repro TARGET`, SIGKILL its whole process group as soon as `ready(output so far)`; returns its
    output."""
    log = root / f"repro-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["dvc", "repro", TARGET], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not ready(log.read_text(errors="replace")):
            assert proc.poll() is None, "the run ended before it could be killed:\n" + log.read_text()[-3000:]
            assert time.monotonic() < deadline, "timed out waiting to kill:\n" + log.read_text()[-3000:]
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return log.read_text()


def _temporaries(folder: Path) -> list[Path]:
    """The temporary folders of a run writing `folder` (its lock file beside it is not one)."""
    return [p for p in folder.parent.glob(f".{folder.name}.*") if p.is_dir()]


def _checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["step"])
    except (OSError, RuntimeError, EOFError, KeyError):
        return 0


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(root)): f.read_bytes() for d in COMPARED for f in sorted((root / d).rglob("*")) if f.is_file()
    }


@pytest.mark.slow
def test_sigkill_then_dvc_repro_gives_the_uninterrupted_bytes_and_resumes_training(tmp_path):
    a, env_a = _project(tmp_path / "a")
    sh(["dvc", "repro", TARGET], a, env_a)

    b, env_b = _project(tmp_path / "b")
    detect = b / "data" / "interim" / "cartoon" / "detect"
    _kill_when(b, env_b, lambda _: _temporaries(detect))  # inside detect, before its output exists
    assert not detect.exists(), "a killed stage left its output under the final name"

    packed = b / "data" / "processed" / "cartoon"
    _kill_when(b, env_b, lambda _: _temporaries(packed))  # inside pack, while its ZIP is written
    assert not packed.exists(), "a killed pack left its output under the final name"
    assert _temporaries(detect) == []  # the rerun of detect cleared the killed run's temporaries

    work = b / "data" / "checkpoints" / "cartoon" / "main"
    _kill_when(b, env_b, lambda _: _checkpoint_step(work / "checkpoint.pt") >= 3)  # in the middle of train
    killed_at = _checkpoint_step(work / "checkpoint.pt")
    assert 3 <= killed_at < 12 and not (b / "data" / "models" / "cartoon").exists()

    # the rerun resumes train, then is killed inside evaluate: while it embeds the generated images (its output is
    # written in the last milliseconds, too short a window to hit reliably on a loaded machine)
    evaluation = b / "data" / "eval" / "cartoon"
    in_evaluate = "> python stages/evaluate.py"
    out = " ".join(_kill_when(b, env_b, lambda log: in_evaluate in log and "generated features" in log).split())
    assert f"trained {12 - killed_at} steps" in out, "train started over instead of resuming:\n" + out[-3000:]
    assert not evaluation.exists(), "a killed evaluate left its output under the final name"
    sh(["dvc", "repro", TARGET], b, env_b)

    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    different = [k for k in fa if fa[k] != fb[k]]
    assert different == [], f"differ from the uninterrupted run: {different}"
    sh(["dvc", "status"], b, env_b)  # and DVC agrees it is all up to date
    assert "changed" not in sh(["dvc", "status", TARGET], b, env_b)
