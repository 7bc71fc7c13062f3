"""Variants by registry: one lookup that names the valid choices when a name is unknown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from facegan.errors import UnknownName

T = TypeVar("T")


def pick(registry: Mapping[str, T], name: str, what: str) -> T:
    """registry[name], or UnknownName (a ValueError) listing the valid names of `what`."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownName(f"unknown {what} {name!r}; choose one of: {', '.join(sorted(registry))}") from None
