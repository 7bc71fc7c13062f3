"""Every key params.yaml may hold, from the pydantic models that validate it (facegan.config): its dotted name,
type, default and description. `facegan keys` prints them; params.yaml itself sets only what the default
pipeline changes, so a key it does not mention (train.max_images, cyclegan.mirror, ...) is found here."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from facegan.config import Params


@dataclass(frozen=True)
class Key:
    name: str  # dotted, a mapping's own keys as <name>: datasets.<name>.detect.backend
    type: str
    default: str  # "required" where the key has none
    description: str


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field may hold (one, one or null, or a union of several: datasets.<name>.source)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _models(a)]
    return []


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type(a) for a in args)
    if annotation is type(None):
        return "null"
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(field, name: str, section: BaseModel | None) -> str:
    """The key's default: its value in the section's own default where that is an instance set otherwise than its
    class (transfer = TransferConfig(enabled=False): transfer.enabled defaults to false, not the class's true)."""
    if section is not None:
        value = getattr(section, name)
    elif field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    else:
        value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(its section's defaults)"
    return "null" if value is None else repr(value)


def keys(
    model: type[BaseModel] = Params, prefix: str = "", kind: str = "", defaults: BaseModel | None = None
) -> Iterator[Key]:
    """The keys of `model` (a params section), nested sections walked: a mapping of sections by name (datasets)
    under `<name>`; a section of several kinds (a source) each kind's keys, said of which (`kind`). `defaults`: the
    section's default instance, where it has one (its values are the keys' defaults)."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if len(sections := _models(annotation)) == 1:
            own = getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True)
            yield from keys(sections[0], f"{prefix}{name}.", kind, own if isinstance(own, BaseModel) else None)
            continue
        if sections and (tag := field.discriminator) and isinstance(tag, str):
            for section in sections:
                value = typing.get_args(section.model_fields[tag].annotation)[0]
                yield from keys(section, f"{prefix}{name}.", f"{kind}with {name}.{tag} {value}: ")
            continue
        if typing.get_origin(annotation) is dict and len(inner := _models(typing.get_args(annotation)[1])) == 1:
            yield from keys(inner[0], f"{prefix}{name}.<name>.", kind)
            continue
        said = " ".join((field.description or "").split())
        yield Key(f"{prefix}{name}", _type(annotation), _default(field, name, defaults), f"{kind}{said}".rstrip(": "))


def listing(start: str = "") -> list[str]:
    """Lines `key (type; default: value): description` of the keys whose name starts with `start` (a section:
    `train`, `datasets.<name>.detect`, a dataset's name standing for <name>); ValueError naming the sections when
    none does."""
    parts = start.split(".")
    if len(parts) > 1 and parts[0] == "datasets":  # datasets.cartoon.detect: the keys of any dataset's detect
        start = ".".join(["datasets", "<name>", *parts[2:]])
    found = [k for k in keys() if k.name == start or k.name.startswith(start.rstrip(".") + ".") or not start]
    if not found:
        sections = sorted({k.name.split(".")[0] for k in keys()})
        raise ValueError(f"no params key starts with {start!r}; sections: {', '.join(sections)}")
    return [
        f"{k.name} ({k.type}; default: {k.default})" + (f": {k.description}" if k.description else "") for k in found
    ]
