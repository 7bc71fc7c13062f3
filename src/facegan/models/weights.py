"""Whether saved weights fit a module, in one line a user can act on (torch's strict load lists every key)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def mismatch(own: Mapping[str, Any], weights: Any, fillable: Iterable[str] = ()) -> str:
    """'' when `weights` fit a module whose state dict is `own` key for key and shape for shape (keys in `fillable`
    may be absent, and a BatchNorm's `num_batches_tracked`, which torch's strict load fills in too); otherwise what
    differs: the count of each kind of difference and its first three keys."""
    if not isinstance(weights, Mapping):
        return f"the weights are a {type(weights).__name__}, not a state dict"
    optional = set(fillable)
    missing = [
        k for k in own if k not in weights and k not in optional and k.rpartition(".")[2] != "num_batches_tracked"
    ]
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


def _shape(value: Any) -> tuple[int, ...] | str:
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else type(value).__name__
