"""``Image`` and ``Index``: immutable values made from a config and layers, and their manifests.

Changing an image means calling a function that returns a new one (:func:`append_layers`,
:func:`with_config`); nothing is mutated. Serialisation is canonical JSON (sorted keys, no spaces), so the
same image always has the same manifest digest.
"""

from __future__ import annotations

import hashlib
import json
import platform as host_machine
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..errors import GpushipError
from .layer import Compression, Layer, recompress
from .media import Family
from .spec import ConfigJSON, Descriptor, HistoryJSON, IndexJSON, ManifestJSON, PlatformJSON, RuntimeConfigJSON

EPOCH_CREATED = "1970-01-01T00:00:00Z"


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, order=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    @classmethod
    def host(cls) -> Platform:
        """The machine gpuship runs on (where sdists are built, and what an engine runs without emulation)."""
        return cls.parse(host_machine.machine() or "amd64")

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/amd64``, ``linux/arm64``, ``linux/arm64/v8``, or just ``arm64``."""
        parts = text.strip().split("/")
        if len(parts) == 1:
            parts = ["linux", parts[0]]
        aliases = {"x86_64": "amd64", "aarch64": "arm64"}
        arch = aliases.get(parts[1], parts[1])
        variant = parts[2] if len(parts) > 2 else ("v8" if arch == "arm64" else "")
        return cls(parts[0], arch, variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> PlatformJSON:
        d: PlatformJSON = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            d["variant"] = self.variant
        return d

    @property
    def machine(self) -> str:
        """The kernel's name for the CPU (``uname -m``)."""
        return {"amd64": "x86_64", "arm64": "aarch64"}.get(self.architecture, self.architecture)

    @property
    def debian_arch(self) -> str:
        return self.architecture


@dataclass(frozen=True)
class ImageConfig:
    """The runtime settings of an image (the ``config`` object of the OCI image config)."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    stop_signal: str = ""

    def env_dict(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.env)

    def with_env(self, **values: str) -> ImageConfig:
        merged = self.env_dict()
        merged.update(values)
        return replace(self, env=tuple(f"{k}={v}" for k, v in merged.items()))

    def to_json(self) -> RuntimeConfigJSON:
        out: RuntimeConfigJSON = {}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.user:
            out["User"] = self.user
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.exposed_ports:
            out["ExposedPorts"] = {p if "/" in p else f"{p}/tcp": {} for p in self.exposed_ports}
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, object] | None) -> ImageConfig:
        """The ``config`` object of an image config, checked for shape (:func:`gpuship.oci.jsonshape.image_config`)."""
        from .jsonshape import image_config  # jsonshape builds the values of this module: it imports it

        return image_config(d, "image config")


@dataclass(frozen=True)
class History:
    created_by: str
    comment: str = ""
    empty_layer: bool = False

    def to_json(self, created: str = EPOCH_CREATED) -> HistoryJSON:
        d: HistoryJSON = {"created": created, "created_by": self.created_by}
        if self.comment:
            d["comment"] = self.comment
        if self.empty_layer:
            d["empty_layer"] = True
        return d


@dataclass(frozen=True)
class Origin:
    """The exact bytes an image (or index) was read with.

    While the value is unchanged (same ``fingerprint``) these bytes are what it serialises to, so an image
    read from an archive or registry keeps its digests when written again. Once it is changed
    (:func:`append_layers`, :func:`with_config`, ...), fresh JSON is made, keeping the config keys gpuship does
    not model (``Healthcheck``, ``Volumes``, ``author``, ...).
    """

    fingerprint: tuple[object, ...]
    config: bytes = b""
    manifest: bytes | None = None


#: Config keys that describe how the *last* build step ran; stale once an image is changed.
_STALE_CONFIG_KEYS = ("container", "container_config", "docker_version", "created", "moby.buildkit.buildinfo.v1")


#: Docker refuses more than 125 layers (its overlay mount limit); stay well below.
MAX_LAYERS = 100


class _Manifested:
    """``manifest_bytes`` and ``digest`` for an Image or Index: the bytes it was read with while unchanged
    (so a read image written back keeps its digest), else canonical JSON."""

    origin: Origin | None

    def _unchanged(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def manifest_json(self) -> Mapping[str, object]:  # pragma: no cover - overridden
        raise NotImplementedError

    def manifest_bytes(self) -> bytes:
        if self.origin is not None and self._unchanged() and self.origin.manifest:
            return self.origin.manifest
        return canonical_json(self.manifest_json())

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes())


@dataclass(frozen=True)
class Image(_Manifested):
    """A single-platform image: platform + config + ordered layers (+ history and annotations)."""

    platform: Platform
    config: ImageConfig
    layers: tuple[Layer, ...] = ()
    history: tuple[History, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    family: Family = Family.OCI
    #: the image's creation time (config ``created`` and every history entry), ISO 8601 UTC
    created: str = EPOCH_CREATED
    #: Set by readers (see :class:`Origin`); never compared.
    origin: Origin | None = field(default=None, compare=False, repr=False)

    def fingerprint(self) -> tuple[object, ...]:
        """Everything the serialised form depends on (what :class:`Origin` checks)."""
        return (
            self.created,
            self.platform,
            self.config,
            tuple((layer.digest, layer.diff_id, layer.size, layer.compression) for layer in self.layers),
            self.history,
            tuple(sorted(self.annotations.items())),
            self.family,
        )

    def _unchanged(self) -> bool:
        return self.origin is not None and self.origin.fingerprint == self.fingerprint()

    # -- the config blob and the manifest --------------------------------------------------------
    def config_json(self) -> Mapping[str, object]:
        if self.origin is not None and self._unchanged() and self.origin.config:
            kept: dict[str, object] = json.loads(self.origin.config)  # the bytes read (a checked JSON object)
            return kept
        hist = list(self.history)
        non_empty = sum(1 for h in hist if not h.empty_layer)
        hist += [History(created_by="gpuship", comment=layer.comment) for layer in self.layers[non_empty:]]
        d: ConfigJSON = {
            "created": self.created,
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": self.config.to_json(),
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
            "history": [h.to_json(self.created) for h in hist],
        }
        if self.platform.variant:
            d["variant"] = self.platform.variant
        if self.origin is not None and self.origin.config:
            return _merge_config(json.loads(self.origin.config), d)
        return d

    def config_bytes(self) -> bytes:
        if self.origin is not None and self._unchanged() and self.origin.config:
            return self.origin.config
        return canonical_json(self.config_json())

    def config_descriptor(self) -> Descriptor:
        data = self.config_bytes()
        return {"mediaType": self.family.config, "digest": sha256_digest(data), "size": len(data)}

    def layer_descriptors(self) -> list[Descriptor]:
        return [
            {"mediaType": self.family.layer(layer.compression), "digest": layer.digest, "size": layer.size}
            for layer in self.layers
        ]

    def manifest_json(self) -> ManifestJSON:
        if self.origin is not None and self._unchanged() and self.origin.manifest:
            kept: ManifestJSON = json.loads(self.origin.manifest)  # the bytes read (checked by jsonshape)
            return kept
        d: ManifestJSON = {
            "schemaVersion": 2,
            "mediaType": self.family.manifest,
            "config": self.config_descriptor(),
            "layers": self.layer_descriptors(),
        }
        if self.annotations and self.family is Family.OCI:
            d["annotations"] = dict(self.annotations)
        return d

    def descriptor(self) -> Descriptor:
        data = self.manifest_bytes()
        return {
            "mediaType": self.family.manifest,
            "digest": sha256_digest(data),
            "size": len(data),
            "platform": self.platform.to_json(),
        }

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


def _merge_config(base: Mapping[str, object], ours: ConfigJSON) -> dict[str, object]:
    """``ours`` over the original config ``base``: modelled keys from ``ours``, the rest kept from ``base``."""
    out = {k: v for k, v in base.items() if k not in _STALE_CONFIG_KEYS and k != "variant"}
    kept = base.get("config")  # an object or null (jsonshape.image_config checked it when it was read)
    runtime: dict[str, object] = dict(kept) if isinstance(kept, dict) else {}
    for key in ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "Labels", "ExposedPorts", "StopSignal"):
        runtime.pop(key, None)
    runtime.update(ours["config"])
    out.update(ours)
    out["config"] = runtime
    return out


def empty_image(platform: Platform | str = Platform(), config: ImageConfig | None = None) -> Image:
    p = Platform.parse(platform) if isinstance(platform, str) else platform
    return Image(p, config or ImageConfig())


def append_layers(image: Image, layers: Iterable[Layer], created_by: str = "gpuship") -> Image:
    """A new image with ``layers`` on top (each with a history line)."""
    new = tuple(layers)
    total = len(image.layers) + len(new)
    if total > MAX_LAYERS:
        raise GpushipError(
            f"the image would have {total} layers; engines refuse more than 125 and gpuship stops at {MAX_LAYERS}",
            "merge layer groups or use a base with fewer layers",
        )
    hist = list(image.history)
    # keep history aligned with layers before adding ours
    non_empty = sum(1 for h in hist if not h.empty_layer)
    hist += [History("gpuship", layer.comment) for layer in image.layers[non_empty:]]
    hist += [History(created_by, layer.comment) for layer in new]
    return replace(image, layers=image.layers + new, history=tuple(hist))


def with_config(image: Image, config: ImageConfig) -> Image:
    return replace(image, config=config)


def with_created(image: Image, created: str) -> Image:
    """``image`` created at ``created`` (ISO 8601 UTC, e.g. from :func:`gpuship.oci.tarball.created_timestamp`)."""
    return replace(image, created=created)


def with_family(image: Image, family: Family) -> Image:
    return replace(image, family=family)


def with_compression(obj: Image | Index, compression: Compression) -> Image | Index:
    """``obj`` with every layer stored as ``compression`` (diff_ids, and so the config, unchanged)."""
    if isinstance(obj, Index):
        return replace(obj, images=tuple(_recompressed(i, compression) for i in obj.images))
    return _recompressed(obj, compression)


def _recompressed(image: Image, compression: Compression) -> Image:
    return replace(image, layers=tuple(recompress(layer, compression) for layer in image.layers))


def with_annotations(image: Image, **annotations: str) -> Image:
    merged = dict(image.annotations)
    merged.update(annotations)
    return replace(image, annotations=merged)


@dataclass(frozen=True)
class Index(_Manifested):
    """A multi-platform image: one :class:`Image` per platform."""

    images: tuple[Image, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    family: Family = Family.OCI
    #: Set by readers (see :class:`Origin`); never compared.
    origin: Origin | None = field(default=None, compare=False, repr=False)

    def fingerprint(self) -> tuple[object, ...]:
        return (tuple(i.digest for i in self.images), tuple(sorted(self.annotations.items())), self.family)

    def _unchanged(self) -> bool:
        return self.origin is not None and self.origin.fingerprint == self.fingerprint()

    def manifest_json(self) -> IndexJSON:
        if self.origin is not None and self._unchanged() and self.origin.manifest:
            kept: IndexJSON = json.loads(self.origin.manifest)  # the bytes read (checked by jsonshape)
            return kept
        d: IndexJSON = {
            "schemaVersion": 2,
            "mediaType": self.family.index,
            "manifests": [img.descriptor() for img in sorted(self.images, key=lambda i: i.platform)],
        }
        if self.annotations and self.family is Family.OCI:
            d["annotations"] = dict(self.annotations)
        return d

    def for_platform(self, platform: Platform | str) -> Image:
        p = Platform.parse(platform) if isinstance(platform, str) else platform
        for img in self.images:
            if img.platform.os == p.os and img.platform.architecture == p.architecture:
                return img
        have = ", ".join(str(i.platform) for i in self.images)
        raise GpushipError(f"no image for {p} in this index (it has {have})", "build with --platform " + str(p))


def make_index(images: Sequence[Image]) -> Index:
    fams = {i.family for i in images}
    return Index(tuple(images), family=fams.pop() if len(fams) == 1 else Family.OCI)
