"""Functions that kill their worker process on one item (imported by the worker processes of a test)."""

import os
import time


def die_on_2(x: int) -> int:
    if x == 2:
        os._exit(1)  # what the OOM killer or a segfault in a native library looks like from outside
    return x * 10


def die_once_on_2(folder: str, x: int) -> int:
    """die_on_2 the first time only (`folder`/died remembers that it has); `folder`/calls lists every call's item."""
    with open(os.path.join(folder, "calls"), "a") as calls:
        calls.write(f"{x}\n")
    died = os.path.join(folder, "died")
    if x == 2 and not os.path.exists(died):
        open(died, "w").close()
        time.sleep(1.5)  # the map has fetched the chunks done before: they stay done
        os._exit(1)
    return x * 10
