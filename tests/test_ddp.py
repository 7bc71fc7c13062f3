"""DDP on CPU: 2 processes with the gloo backend under torchrun, against one process with the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import free_port, tiny_params
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
images, _, _ = load_training_data(
    Path(sys.argv[2]), memory_budget_gb=cfg.memory_budget_gb, cache=Path(sys.argv[3]) / "cache"
)
dist, device = setup("cpu")
t = Trainer(cfg, images, None, [], torch.device(device), dist)
for _ in range(3):
    t.step()
torch.save({"G": t.g.state_dict(), "D": t.d.state_dict(), "p": t.ada.p if t.ada else None,
            "world": dist.world, "losses": t.history}, Path(sys.argv[3]) / f"rank{dist.rank}.pt")
teardown()
"""

STYLE = {
    "model": "stylegan2",
    "z_dim": 16,
    "batch_size": 8,
    "lr_g": 0.002,
    "lr_d": 0.002,
    "beta1": 0.0,
    "beta2": 0.99,
    "stylegan2": {"preset": "tiny"},
    "r1": {"every": 2},
    "path_length": {"weight": 2.0, "every": 2},
    "device": "cpu",
    "mirror": True,
}


def _close(a: dict, b: dict, rtol: float = 1e-4, atol: float = 1e-5) -> list[str]:
    return [k for k in a if not torch.allclose(a[k].float(), b[k].float(), rtol=rtol, atol=atol)]


@pytest.mark.parametrize("budget", [8.0, pytest.param(1e-9, marks=pytest.mark.slow)], ids=["in-memory", "streamed"])
def test_two_gloo_ranks_stay_identical_and_match_one_process(tmp_path, layout, budget):
    """Also with the set memory-mapped from disk (a budget too small for it): same rows, same order."""
    cfg = tiny_params(**STYLE, memory_budget_gb=budget).train
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    (tmp_path / "worker.py").write_text(WORKER)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            f"--log-dir={tmp_path / 'torchrun'}",  # not a /tmp/torchelastic_* folder left per launch
            str(tmp_path / "worker.py"),
            str(tmp_path / "cfg.json"),
            str(layout.packed),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["losses"] == r1["losses"]  # the global batch's values on every rank (each logged its own shard's)
    for key in ("G", "D"):
        differ = [k for k in r0[key] if not torch.equal(r0[key][k], r1[key][k])]
        assert differ == [], f"ranks differ in {key}"

    images, _, _ = load_training_data(layout.packed)
    single = Trainer(cfg, images, None, [], torch.device("cpu"), Dist())
    start = {k: v.clone() for k, v in single.g.state_dict().items()}
    for _ in range(3):
        single.step()
    assert _close(single.g.state_dict(), r0["G"]) == [] and _close(single.d.state_dict(), r0["D"]) == []
    for one, two in zip(single.history, r0["losses"], strict=True):  # and they are one process's values
        assert one.keys() == two.keys(), (one, two)
        assert all(abs(one[k] - two[k]) <= 1e-4 * (1 + abs(one[k])) for k in one), (one, two)
    moved = [k for k in start if not torch.equal(start[k], single.g.state_dict()[k])]
    assert len(moved) > 10  # the comparison is between trained weights, not two copies of the init


def _two_nodes(
    args: list[str], env: dict | None = None, cwd: list[Path] | None = None
) -> list[subprocess.CompletedProcess]:
    """Two torchrun launches, one process each, joined by c10d rendezvous on 127.0.0.1 as nodes 0 and 1
    (what two machines run, with the endpoint at node 0's address); node 0 hosts the rendezvous store."""
    endpoint = f"127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                *([f"--log-dir={cwd[rank].parent / f'torchrun{rank}'}"] if cwd else []),  # not in /tmp for ever
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                endpoint,
                "--rdzv-id",
                "facegan-test",
                "--rdzv-conf",
                f"is_host={int(rank == 0)}",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd[rank] if cwd else None,
        )
        for rank in (0, 1)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


@pytest.mark.slow  # ~40 s idle, 2 min on shared cores; the single-node DDP test above stays in the default run
def test_two_nodes_by_c10d_rendezvous_stay_identical_and_match_one_process(tmp_path, layout):
    """Multi-node: `torchrun --nnodes 2 --node-rank 0|1 --rdzv-backend c10d --rdzv-endpoint HOST:PORT` on each node."""
    cfg = tiny_params(**STYLE).train
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    (tmp_path / "worker.py").write_text(WORKER)
    for node in (0, 1):
        (tmp_path / f"node{node}").mkdir()
    runs = _two_nodes(
        [str(tmp_path / "worker.py"), str(tmp_path / "cfg.json"), str(layout.packed), "."],
        cwd=[tmp_path / "node0", tmp_path / "node1"],
    )
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    r0, r1 = (
        torch.load(tmp_path / "node0" / "rank0.pt", weights_only=True),
        torch.load(tmp_path / "node1" / "rank1.pt", weights_only=True),
    )
    assert r0["world"] == r1["world"] == 2
    assert r0["losses"] == r1["losses"]  # the global batch's values on every rank (each logged its own shard's)
    for key in ("G", "D"):
        assert [k for k in r0[key] if not torch.equal(r0[key][k], r1[key][k])] == [], f"nodes differ in {key}"
    images, _, _ = load_training_data(layout.packed)
    single = Trainer(cfg, images, None, [], torch.device("cpu"), Dist())
    for _ in range(3):
        single.step()
    assert _close(single.g.state_dict(), r0["G"]) == [] and _close(single.d.state_dict(), r0["D"]) == []
    for one, two in zip(single.history, r0["losses"], strict=True):  # and they are one process's values
        assert one.keys() == two.keys(), (one, two)
        assert all(abs(one[k] - two[k]) <= 1e-4 * (1 + abs(one[k])) for k in one), (one, two)


@pytest.mark.slow
def test_train_stage_on_two_nodes_writes_only_on_node_0(tmp_path, layout):
    """The stage itself on two "nodes", each with its own copy of the packed set (as on two machines):
    node 0 (rank 0) writes the checkpoint, samples and loss log; node 1 writes nothing."""
    import shutil

    import yaml

    from facegan.chain import Layout

    p = tiny_params(**{**STYLE, "steps": 3, "checkpoint_every": 3, "fid_every": 0})
    spec = tmp_path / "params.yaml"
    spec.write_text(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False))
    roots = [tmp_path / "node0", tmp_path / "node1"]
    for root in roots:
        shutil.copytree(layout.packed, Layout(root, "cartoon").packed)
    runs = _two_nodes(["-m", "facegan.chain", "train", "cartoon", str(spec), "."], cwd=roots)
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    out0, out1 = (Layout(root, "cartoon").model for root in roots)
    ckpt = load_checkpoint(out0 / "checkpoint.pt")
    assert ckpt["step"] == 3 and (out0 / "samples.png").is_file() and (out0 / "losses.csv").is_file()
    assert not out1.exists() or not any(out1.iterdir()), sorted(out1.iterdir())
    images, _, _ = load_training_data(layout.packed)
    single = Trainer(p.train, images, None, [], torch.device("cpu"), Dist())
    for _ in range(3):
        single.step()
    assert _close(single.g.state_dict(), ckpt["G"]) == [] and _close(single.d.state_dict(), ckpt["D"]) == []


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
    save_checkpoint(
        Layout(root, "cartoon", "ddp-resumed").checkpoints / "checkpoint.pt", {**first.state_dict(), "fid": []}
    )
    run_stage("train", "cartoon", p, root, variant="ddp-resumed")
    resumed = load_checkpoint(resumed_dir / "checkpoint.pt")
    assert resumed["step"] == 4 and [r["step"] for r in resumed["losses"]] == [1, 2, 3, 4]
    assert _close(full["G"], resumed["G"]) == [] and _close(full["D"], resumed["D"]) == []


HOLD = """
import sys, time
from pathlib import Path
from facegan.io import exclusive
with exclusive(Path(sys.argv[1]), "training"):
    print("held", flush=True)
    time.sleep(300)
"""


@pytest.mark.slow
def test_a_ddp_training_into_a_busy_work_folder_stops_on_every_rank_before_touching_it(tmp_path, layout):
    """Rank 0 alone takes the lock; the other ranks must learn it is busy before they resume, since a 'stale'
    checkpoint (other params) makes every rank remove the work folder. Launched by train.nproc, the launching
    process checks the lock first and refuses at once; launched by torchrun directly, the ranks agree."""
    import yaml

    from facegan.chain import Layout
    from facegan.errors import FolderBusy

    root = layout.root
    at = Layout(root, "cartoon", "busy")
    first = tiny_params(**{**STYLE, "steps": 2, "checkpoint_every": 2, "fid_every": 0})
    run_stage("train", "cartoon", first, root, variant="busy")
    before = {p: p.read_bytes() for p in at.checkpoints.rglob("*") if p.is_file()}
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(at.checkpoints)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        second = tiny_params(**{**STYLE, "steps": 4, "checkpoint_every": 2, "fid_every": 0, "nproc": 2, "lr_g": 1e-3})
        with pytest.raises(FolderBusy, match="another training is writing here"):
            run_stage("train", "cartoon", second, root, variant="busy")
        spec = tmp_path / "second.yaml"
        spec.write_text(yaml.safe_dump(second.model_dump(mode="json")))
        ranks = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
            + [f"--log-dir={tmp_path / 'torchrun'}", "-m"]
            + ["facegan.chain", "train", "cartoon", str(spec), str(root), "busy"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        said = ranks.stdout + ranks.stderr
        assert ranks.returncode != 0 and "rank 0 found it held" in said, said[-3000:]
        assert "another training is writing here (it holds" in said and "starting fresh" not in said, said[-3000:]
        assert {p: p.read_bytes() for p in at.checkpoints.rglob("*") if p.is_file()} == before
    finally:
        other.kill()
        other.wait()


@pytest.mark.slow
@pytest.mark.parametrize("own_handler", [True, False], ids=["caller's SIGTERM handler", "no handler"])
def test_a_launcher_stopped_by_a_sigterm_stops_torchrun_and_its_workers(tmp_path, own_handler):
    """torchrun's workers run in sessions of their own: a launcher that is sent SIGTERM, whether its caller turns it
    into an exception (as Prefect does when a flow run is cancelled) or not (a plain `kill` of `facegan train`, whose
    default action ended the launcher at once), must stop torchrun, which stops them, or they train on."""
    import contextlib
    import os
    import signal
    import time

    worker = tmp_path / "worker.py"
    worker.write_text(f"import os, time\nopen(os.path.join({str(tmp_path)!r}, f'pid-{{os.getpid()}}'), 'w')\n")
    worker.write_text(worker.read_text() + "time.sleep(120)\n")
    handler = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n" if own_handler else ""
    launcher = handler + f"from facegan.launch import relaunch\nrelaunch(2, [{str(worker)!r}])\n"
    parent = subprocess.Popen([sys.executable, "-c", launcher])
    pids: list[int] = []
    try:
        for _ in range(240):
            pids = [int(p.name[4:]) for p in tmp_path.glob("pid-*")]
            if len(pids) == 2:
                break
            time.sleep(0.25)
        assert len(pids) == 2
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=90) == 143
        assert [pid for pid in pids if _state(pid) not in ("Z", "gone")] == []
    finally:  # nothing left running when an assertion fails
        parent.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_launch_leaves_no_torchelastic_folder_behind(tmp_path, monkeypatch):
    """torchrun made a /tmp/torchelastic_* folder (its workers' error-file folders) on every launch and never removed
    it: hundreds after a few days of runs. Its folders now go into one that the launcher removes."""
    import tempfile

    from facegan.launch import relaunch

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # torchrun's temporary folder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # this process's
    worker = tmp_path / "worker.py"
    worker.write_text(f"import os\nopen(os.path.join({str(tmp_path)!r}, 'rank-' + os.environ['RANK']), 'w')\n")
    assert relaunch(2, [str(worker)]) == 0
    assert sorted(p.name for p in tmp_path.glob("rank-*")) == ["rank-0", "rank-1"]
    assert list(tmp.iterdir()) == []


def _state(pid: int) -> str:
    """A process's state letter from /proc (Z: a zombie, done), or 'gone'."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


FAILING_RANK0 = """
import sys, torch
from pathlib import Path
from facegan.config import TrainConfig
from facegan.train.dist import setup
from facegan.train.gan import GANTrainer as Trainer
from facegan.train.images import load_training_data
from facegan.train.loop import Loop
cfg = TrainConfig.model_validate_json(Path(sys.argv[1]).read_text())
images, _, _ = load_training_data(Path(sys.argv[2]))
dist, device = setup("cpu")
t = Trainer(cfg, images, None, [], torch.device(device), dist)

def boom(step):
    if step == 2:
        raise OSError("disk full (simulated) on rank 0")

Loop(t, Path(sys.argv[3]) / f"out{dist.rank}", steps=50, checkpoint_every=100, sample_every=100).run(after_step=boom)
"""


@pytest.mark.slow
def test_an_error_on_rank_0_alone_ends_every_rank_with_the_error_said(tmp_path, layout):
    """Rank 0 does work the others do not (samples, FID, checkpoints): an error there sent it to the teardown's
    barrier while rank 1 waited in its next step's all-reduce, and the job hung, its error unprinted, until the
    process group's timeout (30 min on gloo). Rank 0 now leaves the group at once: torchrun ends, the error said."""
    import os
    import signal

    cfg = tiny_params(model="dcgan", batch_size=8, device="cpu", ema=0.0).train
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    (tmp_path / "worker.py").write_text(FAILING_RANK0)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += [f"--log-dir={tmp_path / 'torchrun'}"]  # not a /tmp/torchelastic_* folder left per launch
    cmd += [str(tmp_path / "worker.py"), str(tmp_path / "cfg.json"), str(layout.packed), str(tmp_path)]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        said, _ = job.communicate(timeout=300)  # a hang (the old code) is a TimeoutExpired: the test fails
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode != 0 and "OSError: disk full (simulated) on rank 0" in said, said[-3000:]


def test_nets_with_batchnorm_under_ddp_say_they_are_not_the_single_process_gradient(caplog):
    """DDP computes one process's gradient over the global batch only for nets without BatchNorm: each rank
    normalises its own slice with its own statistics. The DCGAN's nets say so; StyleGAN2's (no BatchNorm) do not."""
    import logging

    from facegan.models import build_models
    from facegan.train.stepper import warn_batchnorm

    g, d = build_models(tiny_params(model="dcgan").train, 32)
    sg, sd = build_models(tiny_params(**STYLE).train, 32)
    with caplog.at_level(logging.WARNING, logger="facegan.train.stepper"):
        for net in (g, sg, sd):
            warn_batchnorm(net, 2)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"{type(g).__name__} has BatchNorm: each of the 2 processes normalises its own 1/2 of the batch, so training "
        "is close to, not the same as, one process's over the global batch"
    ]


ADA_RESUME = """
import sys, torch
import torch.distributed as td
from pathlib import Path
from facegan.config import TrainConfig
from facegan.train.dist import setup, teardown
from facegan.train.gan import GANTrainer as Trainer
from facegan.train.images import load_training_data
cfg = TrainConfig.model_validate_json(Path(sys.argv[1]).read_text())
images, _, _ = load_training_data(Path(sys.argv[2]))
out = Path(sys.argv[3])
dist, device = setup("cpu")
fresh = lambda: Trainer(cfg, images, None, [], torch.device(device), dist)
whole = fresh()
for _ in range(4):
    whole.step()
first = fresh()
for _ in range(2):
    first.step()
if dist.main:  # as Loop.checkpoint: rank 0 alone saves, between two adjustments of p
    torch.save(first.state_dict(), out / "mid.pt")
td.barrier()
resumed = fresh()
resumed.load_state_dict(torch.load(out / "mid.pt", weights_only=False))
for _ in range(2):
    resumed.step()
torch.save({"whole": whole.ada.state_dict(), "resumed": resumed.ada.state_dict(), "mid": first.ada.state_dict(),
            "G": [whole.g.state_dict(), resumed.g.state_dict()]}, out / f"ada{dist.rank}.pt")
teardown()
"""


@pytest.mark.slow
def test_a_ddp_run_with_ada_resumed_between_two_adjustments_moves_p_as_the_whole_run(tmp_path, layout):
    """ADA's pending signs of D on reals are the global batch's on every rank: a checkpoint rank 0 makes between two
    adjustments holds all of them, and the resumed run's r_t and p are the uninterrupted run's (it saved rank 0's
    alone, which every rank then loaded: r_t counted rank 0's signs twice and lost rank 1's)."""
    cfg = tiny_params(**STYLE, ada={"enabled": True, "interval": 4, "initial_p": 0.2, "target": 0.1}).train
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    (tmp_path / "worker.py").write_text(ADA_RESUME)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += [f"--log-dir={tmp_path / 'torchrun'}"]  # not a /tmp/torchelastic_* folder left per launch
    cmd += [str(tmp_path / "worker.py"), str(tmp_path / "cfg.json"), str(layout.packed), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):
        got = torch.load(tmp_path / f"ada{rank}.pt", weights_only=False)
        assert got["mid"]["count"] == 2 * cfg.batch_size  # two D updates of the global batch were pending
        assert got["resumed"] == got["whole"] and got["whole"]["count"] == 0  # r_t taken at the 4th D update
        assert got["whole"]["p"] != 0.2  # p moved
        assert _close(*got["G"], rtol=0, atol=0) == []
