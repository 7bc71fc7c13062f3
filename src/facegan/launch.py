"""Launching training as several processes with torchrun (DDP); no torch import, so every stage can ask cheaply."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

log = logging.getLogger(__name__)


HELD_FOR_RANKS = "FACEGAN_WORK_HELD"  # the work folder a launching process holds for the torchrun ranks it starts


def in_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def relaunch(nproc: int, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run `python argv...` under `torchrun --standalone --nproc-per-node nproc` (`env`: added to this process's
    environment); returns its exit code."""
    torchrun = shutil.which("torchrun") or shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--standalone", f"--nproc-per-node={nproc}", *argv]
    log.info("launching %d training processes: %s", nproc, " ".join(cmd))
    return subprocess.call(cmd, env={**os.environ, **(env or {})})
