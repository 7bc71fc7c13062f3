"""The project's error types and the one place that turns them into a message for people.

Every problem a user can fix (a bad params value, a missing model file or stage input, a checkpoint of
other params, an unavailable extractor or device, an unreachable tracking server) raises a subclass of
`FaceganError` whose message names the culprit and the fix. `user_errors()` wraps every `facegan` command
and every `python stages/*.py` entry point: such an error becomes one line on stderr and exit code 2, never
a traceback; so does an OSError the system raised for a reason the user fixes (a permission, a full or
read-only disk: `REFUSED`). Anything else is a bug and keeps its traceback.

This module imports nothing from the project, so every module can use it.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_USER_ERROR = 2
# OSError numbers of a write or read the system refuses for a reason the user fixes (not facegan's bug): no
# permission, a read-only file system, a full disk or quota; `user_errors` makes them one line too
REFUSED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


class FaceganError(Exception):
    """A problem the user can fix; the message says which file/key/value and what to do."""


class UnknownName(FaceganError, ValueError):
    """A name that is not in its registry (model, loss, backend, extractor, ...); the message lists the valid ones."""


class ParamsError(FaceganError, ValueError):
    """A params file that cannot be used; the message says which key, which value, what is allowed (`problems`:
    one line each, where a validation found them)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


class StageInputMissing(FaceganError, FileNotFoundError):
    """A stage's input (an earlier stage's output, a folder, a checkpoint) is not there yet."""


class ModelFileMissing(FaceganError, FileNotFoundError):
    """A model file (weights, cascade, predictor) that is not installed: which file, where looked, how to get it."""


class ModelFileInvalid(FaceganError, ValueError):
    """A model file that exists but cannot be loaded (truncated, wrong kind)."""


class CheckpointError(FaceganError, ValueError):
    """A checkpoint that cannot be read, or was written by other code or other params."""


class CheckpointAhead(CheckpointError):
    """A checkpoint of this very run, trained past the steps asked now: not stale, only further on."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class DeviceUnavailable(FaceganError, RuntimeError):
    """The configured device (e.g. cuda) is not available on this machine."""


class StageError(FaceganError, RuntimeError):
    """A stage that could not complete for a reason outside the code (a failed subprocess, a dvc call)."""


class FolderBusy(FaceganError, RuntimeError):
    """A folder that another live process is writing (e.g. a second training of the same dataset)."""


class OutputError(FaceganError, OSError):
    """An output folder that cannot be made or written (a file in its path, no permission, a full disk)."""


class TrackingError(FaceganError, RuntimeError):
    """The MLflow tracking store cannot serve a request that needs it (e.g. a model URI to download)."""


AGAIN = "run the stage that wrote it again"


class DamagedRecord(FaceganError, ValueError):
    """A file a stage wrote for others to read (a manifest, counts, metrics) that no longer reads: a write cut off,
    an edit by hand; the message names it and says to run that stage again."""


class TrainingDiverged(FaceganError, FloatingPointError):
    """A training loss became NaN or infinite: the step and its values, and where the run's state was kept."""


def message(e: BaseException) -> str:
    """The error as one line: the message, or the type when there is none."""
    text = str(e).strip() or type(e).__name__
    return text


def first_line(e: BaseException, limit: int = 200, with_type: bool = False) -> str:
    """The first line of the error's message, cut to `limit` characters, for a one-line report of an error
    raised by someone else's code; its type when the message is empty (`with_type`: 'Type: line' always)."""
    lines = str(e).strip().splitlines()
    if not lines:
        return type(e).__name__
    return f"{type(e).__name__}: {lines[0][:limit]}" if with_type else lines[0][:limit]


def flat(e: BaseException, limit: int | None = None) -> str:
    """The whole message on one line (its lines joined by a space), cut to `limit` characters with '...'."""
    text = " ".join(str(e).split())
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


def said(e: OSError) -> str:
    """An OSError the system raised, in a line: the files it names, then its words ('path: Permission denied')."""
    where = "".join(f"{f}: " for f in (e.filename, e.filename2) if f)
    return f"{where}{e.strerror}" if e.strerror else first_line(e)


@contextmanager
def user_errors() -> Iterator[None]:
    """Project errors -> `error: <message>` on stderr and exit code 2 (no traceback; FACEGAN_DEBUG=1 keeps it)."""
    try:
        yield
    except FaceganError as e:
        if os.environ.get("FACEGAN_DEBUG"):
            raise
        logging.getLogger("facegan").debug("user error", exc_info=True)
        print(f"error: {message(e)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
    except OSError as e:  # what the system refuses for a reason the user fixes: a permission, a full disk
        if e.errno not in REFUSED or os.environ.get("FACEGAN_DEBUG"):
            raise
        logging.getLogger("facegan").debug("refused by the system", exc_info=True)
        print(f"error: {said(e)}; fix that and run it again", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
