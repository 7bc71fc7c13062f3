"""Launching training as several processes with torchrun (DDP); no torch import, so every stage can ask cheaply."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

log = logging.getLogger(__name__)


def in_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run `python argv...` under `torchrun --standalone --nproc-per-node nproc`; returns its exit code. Stopped
    by anything (a Prefect cancellation's SIGTERM, an error), it stops torchrun, which stops its workers: they
    run in sessions of their own and would otherwise go on training unwatched."""
    torchrun = shutil.which("torchrun") or shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--standalone", f"--nproc-per-node={nproc}", *argv]
    log.info("launching %d training processes: %s", nproc, " ".join(cmd))
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C: no more waiting
            proc.kill()
            proc.wait()
        raise
