"""Shape checks for image JSON read from elsewhere (index.json, manifests, configs, docker's manifest.json).

A reader never trusts a field's type: ``config: "str"``, ``history: ["x"]``, ``size: "abc"`` or an ``index.json``
that is a list are :class:`~gpuship.errors.IntegrityError` lines naming the document and the field, not a
``TypeError`` or ``AttributeError`` from deep inside. The checks are the image-spec's (descriptor.md,
manifest.md, config.md), kept to the fields gpuship reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

from ..cache import parse_digest
from ..errors import IntegrityError
from .image import EPOCH_CREATED, History, Image, ImageConfig, Platform
from .layer import Layer
from .media import Family
from .spec import Descriptor

HINT = "the image is malformed or was tampered with; refusing it"
#: 2^53: the largest size JSON parsers agree on (image-spec descriptor.md: "size ... int64").
MAX_SIZE = 1 << 53


def kind(value: object) -> str:
    """``value``'s JSON type, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def bad(what: str, expected: str, value: object) -> IntegrityError:
    return IntegrityError(f"{what} must be {expected}, not {kind(value)}", HINT)


def obj(value: object, what: str, *, optional: bool = False) -> dict[str, object]:
    """A JSON object (``optional``: null or missing gives ``{}``)."""
    if optional and value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(what, "an object", value)
    return value


def array(value: object, what: str, *, optional: bool = True) -> list[object]:
    if optional and value is None:
        return []
    if not isinstance(value, list):
        raise bad(what, "a list", value)
    return value


def text(value: object, what: str, *, optional: bool = True) -> str:
    if optional and value is None:
        return ""
    if not isinstance(value, str):
        raise bad(what, "a string", value)
    return value


def texts(value: object, what: str) -> tuple[str, ...]:
    out: list[str] = []
    for item in array(value, what):
        if not isinstance(item, str):
            raise IntegrityError(f"{what} must be a list of strings, but one item is {kind(item)}", HINT)
        out.append(item)
    return tuple(out)


def string_map(value: object, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in obj(value, what, optional=True).items():
        if not isinstance(v, str):
            raise IntegrityError(f"{what}.{k} must be a string, not {kind(v)}", HINT)
        out[k] = v
    return out


def size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
        raise IntegrityError(f"{what} must be a byte count, not {value!r:.40}", HINT)
    return value


def digest(value: object, what: str) -> str:
    d = text(value, what, optional=False)
    try:
        parse_digest(d)
    except IntegrityError:
        raise IntegrityError(f"{what} is not a sha256 digest: {d!r:.90}", HINT) from None
    return d


def descriptor(value: object, what: str) -> Descriptor:
    """A content descriptor: ``digest`` a sha256 digest; ``size`` (when given) a byte count; ``mediaType`` and
    ``annotations`` strings; ``platform`` an object."""
    d = obj(value, what)
    digest(d.get("digest"), f"{what} digest")
    if "size" in d:
        size(d["size"], f"{what} size")
    text(d.get("mediaType"), f"{what} mediaType")
    string_map(d.get("annotations"), f"{what} annotations")
    p = obj(d.get("platform"), f"{what} platform", optional=True)
    for key in ("os", "architecture", "variant"):
        text(p.get(key), f"{what} platform.{key}")
    return cast(Descriptor, d)  # the keys a Descriptor names were checked above; the rest are kept as they are


def descriptors(value: object, what: str) -> list[Descriptor]:
    return [descriptor(d, f"{what}[{i}]") for i, d in enumerate(array(value, what))]


def image_config(value: object, what: str) -> ImageConfig:
    """The ``config`` object of an image config (null or missing: an empty one)."""
    d = obj(value, what, optional=True)
    env = texts(d.get("Env"), f"{what} Env")
    for e in env:
        if "=" not in e:
            raise IntegrityError(f"{what} Env has {e!r:.60}, which is not NAME=VALUE", HINT)
    return ImageConfig(
        env=env,
        entrypoint=_argv(d.get("Entrypoint"), f"{what} Entrypoint"),
        cmd=_argv(d.get("Cmd"), f"{what} Cmd"),
        working_dir=text(d.get("WorkingDir"), f"{what} WorkingDir"),
        user=text(d.get("User"), f"{what} User"),
        labels=string_map(d.get("Labels"), f"{what} Labels"),
        exposed_ports=tuple(sorted(obj(d.get("ExposedPorts"), f"{what} ExposedPorts", optional=True))),
        stop_signal=text(d.get("StopSignal"), f"{what} StopSignal"),
    )


def _argv(value: object, what: str) -> tuple[str, ...]:
    """A command: a list of strings, or one string (Docker's StrSlice reads that as a list of one)."""
    return (value,) if isinstance(value, str) else texts(value, what)


class ConfigParts(NamedTuple):
    """What gpuship reads of an image config document."""

    platform: Platform
    config: ImageConfig
    history: tuple[History, ...]
    diff_ids: tuple[str, ...]
    created: str

    def image(self, layers: Sequence[Layer], annotations: dict[str, str], family: Family) -> Image:
        return Image(self.platform, self.config, tuple(layers), self.history, annotations, family, self.created)


def config_parts(value: object, what: str) -> ConfigParts:
    """An image config document: its platform, runtime config, history, ``rootfs.diff_ids`` and ``created``."""
    d = obj(value, what)
    platform = Platform(
        text(d.get("os"), f"{what} os") or "linux",
        text(d.get("architecture"), f"{what} architecture") or "amd64",
        text(d.get("variant"), f"{what} variant"),
    )
    history = []
    for i, h in enumerate(array(d.get("history"), f"{what} history")):
        h = obj(h, f"{what} history[{i}]")
        empty = h.get("empty_layer", False)
        if not isinstance(empty, bool):
            raise bad(f"{what} history[{i}] empty_layer", "true or false", empty)
        where = f"{what} history[{i}]"
        history.append(History(text(h.get("created_by"), where), text(h.get("comment"), where), empty))
    rootfs = obj(d.get("rootfs"), f"{what} rootfs", optional=True)
    diff_ids = tuple(
        digest(x, f"{what} rootfs.diff_ids[{i}]")
        for i, x in enumerate(array(rootfs.get("diff_ids"), f"{what} rootfs.diff_ids"))
    )
    created = text(d.get("created"), f"{what} created") or EPOCH_CREATED
    return ConfigParts(platform, image_config(d.get("config"), f"{what} config"), tuple(history), diff_ids, created)
