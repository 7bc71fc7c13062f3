"""Functions that kill their worker process on one item (imported by the worker processes of a test)."""

import os


def die_on_2(x: int) -> int:
    if x == 2:
        os._exit(1)  # what the OOM killer or a segfault in a native library looks like from outside
    return x * 10


def die_once_on_2(marker: str, x: int) -> int:
    """die_on_2 the first time only: `marker` (a file) remembers that it has."""
    if x == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return x * 10
