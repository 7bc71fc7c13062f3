"""Whether saved weights fit a module, in one line a user can act on (torch's strict load lists every key)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def mismatch(own: Mapping[str, Any], weights: Any, fillable: Iterable[str] = ()) -> str:
    """'' when `weights` fit a module whose state dict is `own` key for key and shape for shape (keys in `fillable`
    may be absent, and so may what torch's strict load fills in itself); otherwise what differs: the count of each
    kind of difference and its first three keys."""
    if not isinstance(weights, Mapping):
        return f"the weights are a {type(weights).__name__}, not a state dict"
    optional = set(fillable)
    missing = [k for k in own if k not in weights and k not in optional and not _filled_by_torch(k, weights)]
    unexpected = [k for k in weights if k not in own]
    wrong = [
        f"{k}: file {_shape(weights[k])} vs model {_shape(v)}"
        for k, v in own.items()
        if k in weights and _shape(weights[k]) != _shape(v)
    ]
    parts = [
        f"{len(wrong)} shape mismatch(es), e.g. {'; '.join(wrong[:3])}" if wrong else "",
        f"missing {len(missing)}, e.g. {', '.join(missing[:3])}" if missing else "",
        f"unexpected {len(unexpected)}, e.g. {', '.join(map(str, unexpected[:3]))}" if unexpected else "",
    ]
    return "; ".join(p for p in parts if p)


def _filled_by_torch(key: str, weights: Mapping[str, Any]) -> bool:
    """A BatchNorm's `num_batches_tracked` saved by a torch before it had one (no version 2 in the metadata torch
    keeps on a state dict): torch's load sets it to 0."""
    module, _, name = key.rpartition(".")
    version = (getattr(weights, "_metadata", None) or {}).get(module, {}).get("version")
    return name == "num_batches_tracked" and (version is None or version < 2)


def _shape(value: Any) -> tuple[int, ...] | str:
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else type(value).__name__
