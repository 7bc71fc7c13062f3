"""DDP on CPU: 2 processes with the gloo backend under torchrun, against one process with the same global batch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import tiny_params
from facegan.chain import run_stage
from facegan.train.checkpoint import load_checkpoint
from facegan.train.dist import Dist
from facegan.train.gan import GANTrainer as Trainer
from facegan.train.images import load_training_data

WORKER = """
import sys, torch
from pathlib import Path
from facegan.config import TrainConfig
from facegan.train.dist import setup, teardown
from facegan.train.gan import GANTrainer as Trainer
from facegan.train.images import load_training_data
cfg = TrainConfig.model_validate_json(Path(sys.argv[1]).read_text())
images, _, _ = load_training_data(Path(sys.argv[2]), memory_budget_gb=cfg.memory_budget_gb, cache=Path(sys.argv[3]) / "cache")
dist, device = setup("cpu")
t = Trainer(cfg, images, None, [], torch.device(device), dist)
for _ in range(3):
    t.step()
torch.save({"G": t.g.state_dict(), "D": t.d.state_dict(), "p": t.ada.p if t.ada else None,
            "world": dist.world}, Path(sys.argv[3]) / f"rank{dist.rank}.pt")
teardown()
"""

STYLE = {"model": "stylegan2", "z_dim": 16, "batch_size": 8, "lr_g": 0.002, "lr_d": 0.002, "beta1": 0.0,
         "beta2": 0.99, "stylegan2": {"preset": "tiny"}, "r1": {"every": 2}, "path_length": {"weight": 2.0, "every": 2},
         "device": "cpu", "mirror": True}


def _close(a: dict, b: dict, rtol: float = 1e-4, atol: float = 1e-5) -> list[str]:
    return [k for k in a if not torch.allclose(a[k].float(), b[k].float(), rtol=rtol, atol=atol)]


@pytest.mark.parametrize("budget", [8.0, pytest.param(1e-9, marks=pytest.mark.slow)], ids=["in-memory", "streamed"])
def test_two_gloo_ranks_stay_identical_and_match_one_process(tmp_path, layout, budget):
    """Also with the set memory-mapped from disk (a budget too small for it): same rows, same order."""
    cfg = tiny_params(**STYLE, memory_budget_gb=budget).train
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    (tmp_path / "worker.py").write_text(WORKER)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(tmp_path / "worker.py"), str(tmp_path / "cfg.json"), str(layout.packed), str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2
    for key in ("G", "D"):
        differ = [k for k in r0[key] if not torch.equal(r0[key][k], r1[key][k])]
        assert differ == [], f"ranks differ in {key}"

    images, _, _ = load_training_data(layout.packed)
    single = Trainer(cfg, images, None, [], torch.device("cpu"), Dist())
    start = {k: v.clone() for k, v in single.g.state_dict().items()}
    for _ in range(3):
        single.step()
    assert _close(single.g.state_dict(), r0["G"]) == [] and _close(single.d.state_dict(), r0["D"]) == []
    moved = [k for k in start if not torch.equal(start[k], single.g.state_dict()[k])]
    assert len(moved) > 10  # the comparison is between trained weights, not two copies of the init


@pytest.mark.slow
def test_train_stage_with_nproc_2_runs_under_torchrun_only_rank0_writes_and_resumes(tmp_path, layout):
    """The DVC/Prefect path: train.nproc > 1 relaunches the stage under torchrun. Resume: a checkpoint at
    step 2 is picked up by both ranks, and the run ends where an uninterrupted one does."""
    from facegan.chain import Layout
    from facegan.train.checkpoint import save_checkpoint

    p = tiny_params(**{**STYLE, "nproc": 2, "steps": 4, "checkpoint_every": 2, "fid_every": 0})
    root = layout.root
    run_stage("train", "cartoon", p, root, variant="ddp")
    out = Layout(root, "cartoon", "ddp").model
    full = load_checkpoint(out / "checkpoint.pt")
    assert full["step"] == 4 and (out / "samples.png").is_file() and (out / "losses.csv").is_file()
    assert len((out / "losses.csv").read_text().splitlines()) == 5  # rank 0's log only

    images, _, _ = load_training_data(layout.packed)
    first = Trainer(p.train, images, None, [], torch.device("cpu"), Dist())
    for _ in range(2):
        first.step()
    resumed_dir = Layout(root, "cartoon", "ddp-resumed").model
    save_checkpoint(Layout(root, "cartoon", "ddp-resumed").checkpoints / "checkpoint.pt", {**first.state_dict(), "fid": []})
    run_stage("train", "cartoon", p, root, variant="ddp-resumed")
    resumed = load_checkpoint(resumed_dir / "checkpoint.pt")
    assert resumed["step"] == 4 and [r["step"] for r in resumed["losses"]] == [1, 2, 3, 4]
    assert _close(full["G"], resumed["G"]) == [] and _close(full["D"], resumed["D"]) == []
