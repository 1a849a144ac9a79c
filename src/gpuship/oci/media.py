"""Media types and the two manifest families (OCI, and Docker v2 schema 2)."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from ..errors import ConfigError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"


#: How gpuship compresses the layers it writes.
Compression = Literal["gzip", "zstd"]
#: How a layer blob is stored: what gpuship writes, or an uncompressed layer it read.
BlobCompression = Literal["gzip", "zstd", "none"]
_COMPRESSIONS: dict[str, Compression] = {"gzip": "gzip", "zstd": "zstd"}


def parse_compression(value: str, what: str = "--compression") -> Compression:
    """``value`` as a :data:`Compression`, or a user error naming ``what`` was wrong."""
    found = _COMPRESSIONS.get(value)
    if found is None:
        raise ConfigError(f"{what} must be gzip or zstd, not {value!r}")
    return found


class Family(Enum):
    """Which media-type family a manifest speaks. One manifest never mixes the two."""

    OCI = "oci"
    DOCKER = "docker"

    @property
    def manifest(self) -> str:
        return OCI_MANIFEST if self is Family.OCI else DOCKER_MANIFEST

    @property
    def index(self) -> str:
        return OCI_INDEX if self is Family.OCI else DOCKER_MANIFEST_LIST

    @property
    def config(self) -> str:
        return OCI_CONFIG if self is Family.OCI else DOCKER_CONFIG

    def layer(self, compression: BlobCompression) -> str:
        if self is Family.DOCKER:
            if compression == "zstd":
                return OCI_LAYER_ZSTD  # Docker's own tooling uses the OCI type for zstd layers
            return DOCKER_LAYER_GZIP if compression == "gzip" else DOCKER_LAYER
        return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}[compression]


def compression_of(media_type: str) -> BlobCompression:
    if media_type.endswith(("+zstd", ".zstd")):
        return "zstd"
    if media_type.endswith("gzip"):
        return "gzip"
    return "none"


def family_of(media_type: str) -> Family:
    return Family.DOCKER if "vnd.docker" in media_type else Family.OCI
