"""A function that kills its worker process on one item (imported by the worker processes of a test)."""

import os


def die_on_2(x: int) -> int:
    if x == 2:
        os._exit(1)  # what the OOM killer or a segfault in a native library looks like from outside
    return x * 10
