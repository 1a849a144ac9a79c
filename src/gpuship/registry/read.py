"""Pull images from a registry into the cache: manifests (OCI and Docker), platform selection, verified blobs.

A pulled :class:`~gpuship.oci.Image` keeps the media-type family of the manifest it came from
(:attr:`Family.DOCKER` for Docker's types), so pushing it again never mixes the two families. Its layers
are cache blobs, verified twice while they stream in: the compressed bytes against the manifest's digest,
the uncompressed tar against the config's ``diff_id``. Nothing lands in the cache unless both match.

The pulled image carries the OCI annotations ``org.opencontainers.image.base.name`` and
``org.opencontainers.image.base.digest`` (the manifest it came from), so an image built on it says what
its base was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

import zstandard

from ..cache import Cache
from ..errors import GpushipError, IntegrityError, RegistryError
from ..oci import jsonshape
from ..oci.image import Image, Index, Origin, Platform, sha256_digest
from ..oci.layer import Layer, LayerRecord
from ..oci.media import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    BlobCompression,
    compression_of,
    family_of,
)
from ..oci.spec import Descriptor
from ..progress import NO_PROGRESS, Progress
from ..streams import CHUNK
from .client import RegistryClient, Transient
from .reference import Reference
from .write import remember_location

log = logging.getLogger("gpuship.registry")

MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
ACCEPT = ", ".join(MANIFEST_TYPES)
MAX_MANIFEST = 4 << 20
LAYERS_NS = "registry-layers"
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as the registry sent it."""

    data: bytes
    media_type: str
    digest: str

    def json(self) -> object:
        """The document, parsed (:mod:`gpuship.oci.jsonshape` checks its shape)."""
        doc: object = json.loads(self.data)
        return doc

    @property
    def is_index(self) -> bool:
        return self.media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST)


def fetch_manifest(client: RegistryClient, repository: str, identifier: str) -> Manifest:
    """GET a manifest or index (any of the four types); by digest it is verified."""
    resp = client.send(
        "GET",
        f"/v2/{repository}/manifests/{identifier}",
        headers={"Accept": ACCEPT},
        ok=(200,),
        what=f"fetching manifest {repository}:{identifier[:19]}",
    )
    data = resp.content
    if len(data) > MAX_MANIFEST:
        raise RegistryError(f"the manifest of {repository}:{identifier} is larger than 4 MiB", "this is not an image")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise IntegrityError(f"the manifest of {repository}:{identifier} is not JSON") from exc
    media_type = resp.headers.get("content-type", "").split(";", 1)[0].strip()
    if media_type not in MANIFEST_TYPES:
        media_type = str(doc.get("mediaType") or "")
    if (
        doc.get("schemaVersion") == 1
        or "prettyjws" in media_type
        or media_type.startswith("application/vnd.docker.distribution.manifest.v1")
    ):
        raise RegistryError(
            f"{repository}:{identifier} has a Docker schema 1 manifest, which gpuship does not read",
            "push the image again with a current tool",
        )
    if media_type not in MANIFEST_TYPES:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    digest = sha256_digest(data)
    if identifier.startswith("sha256:") and digest != identifier:
        raise IntegrityError(
            f"the manifest served for {repository}@{identifier[:19]} has digest {digest[:19]}",
            "the registry or a proxy altered it; do not use this image",
        )
    return Manifest(data, media_type, digest)


def _platform_of(desc: Descriptor) -> Platform | None:
    p = desc.get("platform")
    if p is None or not p.get("os") or not p.get("architecture") or p.get("os") == "unknown":
        return None
    return Platform(p["os"], p["architecture"], p.get("variant") or "")


def _index_descriptors(index: object) -> list[Descriptor]:
    return jsonshape.descriptors(jsonshape.obj(index, "the index").get("manifests"), "the index manifests")


def select_platform(index: object, platform: Platform) -> Descriptor:
    """The index entry for ``platform``: os and architecture must match; an exact variant is preferred."""
    best: tuple[int, Descriptor] | None = None
    have: list[str] = []
    for desc in _index_descriptors(index):
        p = _platform_of(desc)
        if p is None:
            continue  # attestation manifests and the like
        have.append(str(p))
        if p.os != platform.os or p.architecture != platform.architecture:
            continue
        if platform.variant and p.variant and p.variant != platform.variant:
            continue
        score = 2 if p.variant == platform.variant else 1
        if best is None or score > best[0]:
            best = (score, desc)
    if best is None:
        raise GpushipError(
            f"the image has no {platform} variant (it has {', '.join(have) or 'no platforms'})",
            "pick a platform the base image offers, or another base",
        )
    return best[1]


# -- blobs ---------------------------------------------------------------------------------------------------------
def fetch_blob_bytes(
    client: RegistryClient, repository: str, digest: str, cache: Cache, limit: int = 64 << 20
) -> bytes:
    """A small blob (a config), verified and kept in the cache."""
    if cache.has(digest):
        return cache.read(digest)
    resp = client.send("GET", f"/v2/{repository}/blobs/{digest}", ok=(200,), what=f"fetching blob {digest[:19]}")
    data = resp.content
    if len(data) > limit:
        raise RegistryError(f"blob {digest[:19]} is larger than expected", "this is not an image config")
    cache.put_bytes(data, expected=digest)
    return data


class _Decompressor(Protocol):
    """zlib's and zstandard's decompressing objects, as the hasher uses them."""

    def decompress(self, data: bytes, /) -> bytes: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def eof(self) -> bool: ...


class _DiffHasher:
    """Decompresses as bytes arrive, hashing the tar: the layer's ``diff_id`` and uncompressed size."""

    def __init__(self, compression: BlobCompression) -> None:
        self.compression = compression
        self.hash = hashlib.sha256()
        self.size = 0
        self._z: _Decompressor | None = None
        if compression == "gzip":
            self._z = zlib.decompressobj(31)
        elif compression == "zstd":
            self._z = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)

    def _emit(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)

    def feed(self, data: bytes) -> None:
        try:
            if self._z is None:
                self._emit(data)
            elif self.compression == "gzip":
                while data:
                    self._emit(self._z.decompress(data))
                    data = self._z.unused_data if self._z.eof else b""
                    if data:  # a multi-member gzip stream
                        self._z = zlib.decompressobj(31)
            else:
                self._emit(self._z.decompress(data))
        except (zlib.error, zstandard.ZstdError) as exc:
            raise IntegrityError(f"corrupt compressed layer: {exc}", "the registry serves a damaged blob") from exc

    @property
    def diff_id(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def fetch_layer(
    client: RegistryClient,
    repository: str,
    desc: Descriptor,
    diff_id: str,
    cache: Cache,
    progress: Progress,
) -> Layer:
    """One layer into the cache, checked against its digest and the config's ``diff_id``."""
    digest, size, media_type = str(desc["digest"]), int(desc.get("size") or 0), str(desc.get("mediaType") or "")
    if "foreign" in media_type or "nondistributable" in media_type:
        raise GpushipError(
            f"layer {digest[:19]} is a non-distributable layer ({media_type})", "gpuship cannot use such a base image"
        )
    compression = compression_of(media_type)

    def known(rec: LayerRecord) -> Layer | None:
        if not cache.has(digest) or rec.get("diff_id") != diff_id:
            return None
        progress.transfer(digest, size, size, "cached")
        return Layer.from_record(rec, cache, reused=True)

    def fetch() -> Layer:
        if cache.has(digest):  # the blob is here already (built or read locally): check it, do not download it
            layer = _checked_local(cache, digest, diff_id, compression)
            if layer is not None:
                progress.transfer(digest, size, size, "cached")
                return layer
        return _download_layer(client, repository, digest, size, diff_id, compression, cache, progress)

    return cache.memo(LAYERS_NS, digest, fetch, encode=Layer.to_record, decode=known)


def _checked_local(cache: Cache, digest: str, diff_id: str, compression: BlobCompression) -> Layer | None:
    """The cache's blob ``digest`` as a layer, when it unpacks to ``diff_id``."""
    hasher = _DiffHasher(compression)
    with cache.open(digest) as fh:
        while chunk := fh.read(CHUNK):
            hasher.feed(chunk)
    if hasher.diff_id != diff_id:
        return None
    return Layer(digest, diff_id, cache.blob_path(digest).stat().st_size, hasher.size, compression, "", True, cache)


def _download_layer(
    client: RegistryClient,
    repository: str,
    digest: str,
    size: int,
    diff_id: str,
    compression: BlobCompression,
    cache: Cache,
    progress: Progress,
) -> Layer:
    """Download one layer blob (again from the start when the connection breaks), checked as it arrives."""
    attempt = 0
    while True:
        attempt += 1
        progress.transfer(digest, 0, size)
        hasher = _DiffHasher(compression)
        try:
            resp = client.send(
                "GET", f"/v2/{repository}/blobs/{digest}", ok=(200,), stream=True, what=f"fetching layer {digest[:19]}"
            )
            with cache.blob_writer(expected=digest) as w:
                for chunk in client.stream_body(resp):
                    w.write(chunk)
                    hasher.feed(chunk)
                    progress.transfer(digest, w.size, size)
                if size and w.size != size:
                    raise IntegrityError(f"layer {digest[:19]} has {w.size} bytes, the manifest says {size}")
                if hasher.diff_id != diff_id:
                    raise IntegrityError(
                        f"layer {digest[:19]} unpacks to {hasher.diff_id[:19]}, the config says {diff_id[:19]}",
                        "the image is inconsistent; do not use it",
                    )
            break
        except Transient as exc:
            client.retry.give_up_after(
                attempt, exc, f"download of layer {digest[:19]} kept failing: {exc.message}", "try again later"
            )
            log.info("download of %s broke off, starting it again: %s", digest[:19], exc.message)
    progress.transfer(digest, w.size, w.size, "pulled")
    return Layer(digest, diff_id, w.size, hasher.size, compression, "", False, cache)


# -- images --------------------------------------------------------------------------------------------------------
def image_from_manifest(
    client: RegistryClient,
    repository: str,
    manifest: Manifest,
    cache: Cache,
    *,
    progress: Progress = NO_PROGRESS,
    jobs: int = 4,
    base_name: str = "",
) -> Image:
    what = f"the manifest {manifest.digest[:19]}"
    doc = jsonshape.obj(manifest.json(), what)
    family = family_of(manifest.media_type)
    config = doc.get("config")
    if not isinstance(config, dict) or not config.get("digest"):
        raise IntegrityError(f"{what} has no config")
    cfg_desc = jsonshape.descriptor(config, f"{what} config")
    cfg_bytes = fetch_blob_bytes(client, repository, str(cfg_desc["digest"]), cache)
    try:
        cfg = json.loads(cfg_bytes)
    except ValueError:
        raise IntegrityError(f"the config of {what} is not JSON", jsonshape.HINT) from None
    parts = jsonshape.config_parts(cfg, f"the config of {what}")
    diff_ids = list(parts.diff_ids)
    descs = jsonshape.descriptors(doc.get("layers"), f"{what} layers")
    annotations = jsonshape.string_map(doc.get("annotations"), f"{what} annotations")
    if len(diff_ids) != len(descs):
        raise IntegrityError(
            f"the image {manifest.digest[:19]} lists {len(descs)} layers but its config {len(diff_ids)} diff_ids",
            "the image is inconsistent; do not use it",
        )
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(descs) or 1)), thread_name_prefix="gpuship-pull") as pool:
        layers = list(
            pool.map(
                lambda pair: fetch_layer(client, repository, pair[0], pair[1], cache, progress),
                zip(descs, diff_ids, strict=True),
            )
        )
    for layer in layers:
        remember_location(cache, client.registry, repository, layer.digest)
    history = parts.history
    if sum(1 for h in history if not h.empty_layer) != len(layers):
        history = ()  # history that does not line up with the layers is dropped rather than made wrong
    annotations = dict(annotations)
    annotations[BASE_DIGEST] = manifest.digest
    if base_name:
        annotations[BASE_NAME] = base_name
    img = replace(parts.image(layers, annotations, family), history=history)
    # unchanged, it serialises to the registry's exact bytes (same digest); changed, to fresh JSON that keeps
    # the config keys gpuship does not model and carries the base annotations
    return replace(img, origin=Origin(img.fingerprint(), cfg_bytes, manifest.data))


def pull_image_from(
    client: RegistryClient,
    target: Reference,
    platform: Platform,
    cache: Cache,
    *,
    progress: Progress = NO_PROGRESS,
    jobs: int = 4,
) -> Image:
    """Pull the ``platform`` image of ``target`` (a manifest, or an index to choose from) into ``cache``."""
    client.add_scope(target.repository, "pull")
    top = fetch_manifest(client, target.repository, target.identifier)
    manifest = top
    if top.is_index:
        desc = select_platform(top.json(), platform)
        manifest = fetch_manifest(client, target.repository, str(desc["digest"]))
        if manifest.is_index:
            raise GpushipError(f"{target} nests an index inside an index", "gpuship reads one level of index")
    image = image_from_manifest(
        client,
        target.repository,
        manifest,
        cache,
        progress=progress,
        jobs=jobs,
        base_name=str(target.with_digest(top.digest)),
    )
    if image.platform.os != platform.os or image.platform.architecture != platform.architecture:
        raise GpushipError(
            f"{target} is a {image.platform} image, not {platform}",
            "pick a base that offers the platform you build for",
        )
    return image


def pull_from(
    client: RegistryClient,
    target: Reference,
    cache: Cache,
    *,
    platforms: Sequence[Platform] | None = None,
    progress: Progress = NO_PROGRESS,
    jobs: int = 4,
) -> Image | Index:
    """Pull ``target`` as it is: an :class:`Image`, or an :class:`Index` of every (or the given) platform."""
    client.add_scope(target.repository, "pull")
    top = fetch_manifest(client, target.repository, target.identifier)
    name = str(target.with_digest(top.digest))
    if not top.is_index:
        return image_from_manifest(client, target.repository, top, cache, progress=progress, jobs=jobs, base_name=name)
    doc = jsonshape.obj(top.json(), "the index")
    wanted = list(platforms) if platforms else None
    images: list[Image] = []
    skipped = False
    for desc in _index_descriptors(doc):
        p = _platform_of(desc)
        if p is None or (
            wanted is not None and not any(p.os == w.os and p.architecture == w.architecture for w in wanted)
        ):
            skipped = True
            continue
        m = fetch_manifest(client, target.repository, str(desc["digest"]))
        if m.is_index:
            skipped = True
            continue
        images.append(
            image_from_manifest(client, target.repository, m, cache, progress=progress, jobs=jobs, base_name=name)
        )
    if not images:
        raise GpushipError(f"{target} has no image for the requested platforms", "check the platforms it offers")
    annotations = jsonshape.string_map(doc.get("annotations"), "the index annotations")
    index = Index(tuple(images), annotations, family_of(top.media_type))
    if not skipped:
        index = replace(index, origin=Origin(index.fingerprint(), b"", top.data))
    return index
