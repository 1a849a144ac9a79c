"""The image-spec's JSON documents as typed dicts, the way go-containerregistry has ``v1.Descriptor`` and
``v1.Manifest``: the keys gpuship writes and reads, with their types.

They are plain dicts at run time (key order and bytes unchanged); the types only say what a key holds. A
document read from elsewhere becomes one of these only after :mod:`gpuship.oci.jsonshape` checked the keys
gpuship reads; keys it does not model stay in the dict untouched (so a read image written back keeps its
digest) and are not named here.
"""

from __future__ import annotations

from typing import NotRequired, Required, TypedDict


class PlatformJSON(TypedDict, total=False):
    """A descriptor's ``platform`` (image-index.md)."""

    os: Required[str]
    architecture: Required[str]
    variant: str


class Descriptor(TypedDict, total=False):
    """A content descriptor (descriptor.md). Only ``digest`` is always there in one read from elsewhere
    (``size`` and ``mediaType`` are checked when present); the ones gpuship makes have all three."""

    digest: Required[str]
    mediaType: str
    size: int
    platform: PlatformJSON
    annotations: dict[str, str]


class ManifestJSON(TypedDict):
    """An image manifest (manifest.md)."""

    schemaVersion: int
    mediaType: str
    config: Descriptor
    layers: list[Descriptor]
    annotations: NotRequired[dict[str, str]]


class IndexJSON(TypedDict):
    """An image index / manifest list (image-index.md)."""

    schemaVersion: int
    mediaType: str
    manifests: list[Descriptor]
    annotations: NotRequired[dict[str, str]]


class RuntimeConfigJSON(TypedDict, total=False):
    """The ``config`` object of an image config (config.md), the keys gpuship models."""

    Env: list[str]
    Entrypoint: list[str]
    Cmd: list[str]
    WorkingDir: str
    User: str
    Labels: dict[str, str]
    ExposedPorts: dict[str, dict[str, str]]  # {"8000/tcp": {}}: the inner object is always empty
    StopSignal: str


class HistoryJSON(TypedDict):
    created: str
    created_by: str
    comment: NotRequired[str]
    empty_layer: NotRequired[bool]


class RootfsJSON(TypedDict):
    type: str
    diff_ids: list[str]


class ConfigJSON(TypedDict):
    """An image config (config.md) as gpuship makes it. One read from elsewhere is kept as it was
    (``dict[str, object]``): it may hold any key (``Healthcheck``, ``author``, ``container_config``...)."""

    created: str
    architecture: str
    os: str
    variant: NotRequired[str]
    config: RuntimeConfigJSON
    rootfs: RootfsJSON
    history: list[HistoryJSON]
