"""Functions that kill their worker process on one item (imported by the worker processes of a test)."""

import os
import time
from pathlib import Path


def die_on_2(x: int) -> int:
    if x == 2:
        os._exit(1)  # what the OOM killer or a segfault in a native library looks like from outside
    return x * 10


def die_once_on_2(folder: str, x: int) -> int:
    """die_on_2 the first time only (`folder`/died remembers that it has), once the map has fetched items 0 and 1
    (`folder`/fetched); `folder`/calls lists every call's item."""
    with open(os.path.join(folder, "calls"), "a") as calls:
        calls.write(f"{x}\n")
    died, fetched = os.path.join(folder, "died"), os.path.join(folder, "fetched")
    if x == 2 and not os.path.exists(died):
        open(died, "w").close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (os.path.exists(fetched) and Path(fetched).read_text() == "2"):
            time.sleep(0.05)  # until the map has fetched the 2 chunks done before (the test's bar counts them)
        time.sleep(0.5)  # and the scheduler has heard that they are released
        os._exit(1)
    return x * 10
