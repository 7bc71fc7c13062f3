"""Launching training as several processes with torchrun (DDP); no torch import, so every stage can ask cheaply."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger(__name__)


def in_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run `python argv...` under `torchrun --standalone --nproc-per-node nproc`; returns its exit code. Stopped
    by anything (a Prefect cancellation's SIGTERM, an error), it stops torchrun, which stops its workers: they
    run in sessions of their own and would otherwise go on training unwatched. A SIGTERM or SIGHUP (`kill`, a
    closed terminal) stops it too: while it waits they raise (after any handler of the caller's has run)."""
    torchrun = shutil.which("torchrun") or shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    # torchrun's per-worker folders (error files; logs when redirected) go into a folder removed afterwards: by
    # default they are a /tmp/torchelastic_* folder per launch, never removed
    with tempfile.TemporaryDirectory(prefix="facegan-torchrun-") as logs:
        cmd += ["--standalone", f"--nproc-per-node={nproc}", f"--log-dir={logs}", *argv]
        log.info("launching %d training processes: %s", nproc, " ".join(cmd))
        proc = subprocess.Popen(cmd)
        try:
            with _signals_raise():
                return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C: no more waiting
                proc.kill()
                proc.wait()
            raise


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise SystemExit(128 + signal) while inside (after a handler already set has run, when it
    returns): their default action ends the process at once, with no chance to stop torchrun. Only the main thread
    can set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a handler not set from Python (None) could not be put back: that signal is left alone, as is an ignored one
    before = {
        sig: prev
        for sig in (signal.SIGTERM, signal.SIGHUP)
        if (prev := signal.getsignal(sig)) is signal.SIG_DFL or callable(prev)
    }

    def stop(signum: int, frame: FrameType | None) -> None:
        prev = before[signal.Signals(signum)]
        if callable(prev):
            prev(signum, frame)
        raise SystemExit(128 + signum)

    for sig in before:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, prev in before.items():
            signal.signal(sig, prev)
