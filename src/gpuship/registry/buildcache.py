"""The build cache's registry side (:mod:`gpuship.buildcache`): read and write a cache manifest, find which blobs
the cache repository holds, pull a layer blob.

The cache manifest is an OCI image manifest with ``artifactType`` :data:`~gpuship.buildcache.ARTIFACT_TYPE`, its
config blob the mapping (the same media type), its ``layers`` the image layers the mapping names — the shape of
BuildKit's registry cache with ``image-manifest=true``, with an artifact type of its own. Writing it pushes those
layers into the cache repository first (HEAD, then a cross-repository mount from the image's repository, else an
upload), so the registry holds every blob it names; an unchanged mapping is not written again.

A pull streams the blob into the cache through ``Cache.blob_writer(expected=digest)`` while a decompressor hashes
the tar: nothing lands unless both the digest and the diff ID match. A download that breaks off continues where
it stopped (``Range: bytes=N-``); a registry that answers a range with the whole blob has the part already here
skipped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from functools import partial
from typing import BinaryIO

from ..buildcache import ARTIFACT_TYPE, CachedBlob, CacheManifest
from ..cache import BlobWriter, Cache
from ..errors import GpushipError, IntegrityError
from ..oci.image import sha256_digest
from ..oci.layer import Layer, unpack_blob
from ..oci.media import OCI_INDEX, OCI_MANIFEST, BlobCompression
from ..progress import NO_PROGRESS, Progress
from .client import RegistryClient, Transient
from .read import _DiffHasher
from .reference import Reference
from .session import Registry
from .write import BlobUploader, _Blob, _bytes_blob, _run_parallel, put_manifest, remember_location

log = logging.getLogger("gpuship.registry")

#: A mapping bigger than this is not read (a torch image's is a few hundred kB).
MAX_MAPPING = 256 << 20


class _PlainCopy(_DiffHasher):
    """Hashes the tar as the blob arrives and, given a sink, keeps it too (the layer's plain form)."""

    def __init__(self, compression: BlobCompression, sink: BlobWriter | None) -> None:
        super().__init__(compression)
        self.sink = sink

    def _emit(self, data: bytes) -> None:
        super()._emit(data)
        if self.sink is not None and data:
            self.sink.write(data)


class RegistryCacheStore:
    """A cache reference (``HOST/NAME:TAG``) on a registry, through ``client``."""

    def __init__(
        self,
        client: RegistryClient,
        ref: Reference,
        *,
        jobs: int = 4,
        chunk_size: int = 32 << 20,
        progress: Progress = NO_PROGRESS,
    ) -> None:
        if not ref.tag:
            raise GpushipError(f"the build cache {ref} has no tag", "give registry:HOST/NAME:TAG")
        self.client = client
        self.reference = ref
        self.ref = str(ref)
        self.jobs = max(1, jobs)
        self.chunk_size = chunk_size
        self.progress = progress
        client.add_scope(ref.repository, "pull")

    @property
    def repository(self) -> str:
        return self.reference.repository

    # -- reading ---------------------------------------------------------------------------------------------------
    def read(self) -> CacheManifest | None:
        """The mapping at the reference; None when there is none yet."""
        repo, tag = self.repository, self.reference.tag
        resp = self.client.send(
            "GET",
            f"/v2/{repo}/manifests/{tag}",
            headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
            ok=(200, 404),
            what=f"reading the build cache {self.ref}",
        )
        data = resp.read()
        resp.close()
        if resp.status_code == 404:
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        config = doc.get("config") if isinstance(doc, dict) else None
        if not isinstance(config, dict) or ARTIFACT_TYPE not in (doc.get("artifactType"), config.get("mediaType")):
            raise GpushipError(
                f"{self.ref} is not a gpuship build cache (it holds an image or another artifact)",
                "give --cache a reference of its own, e.g. the image's repository with the tag cache",
            )
        digest, size = config.get("digest"), config.get("size")
        if not isinstance(digest, str) or not isinstance(size, int) or size > MAX_MAPPING:
            raise IntegrityError(f"the build cache {self.ref} names no readable mapping", "it is written again")
        blob = self.client.send(
            "GET", f"/v2/{repo}/blobs/{digest}", ok=(200,), what=f"reading the build cache {self.ref}"
        )
        mapping = blob.read()
        blob.close()
        if sha256_digest(mapping) != digest:
            raise IntegrityError(f"the mapping of the build cache {self.ref} does not match its digest")
        return CacheManifest.from_config(mapping, self.ref)

    def present(self, blobs: Sequence[CachedBlob]) -> set[str]:
        """HEAD each blob, ``jobs`` at a time: those there with the size the mapping gives."""

        def there(blob: CachedBlob) -> bool:
            resp = self.client.send(
                "HEAD",
                f"/v2/{self.repository}/blobs/{blob.digest}",
                ok=(200, 404),
                what=f"checking blob {blob.digest[:19]} of the build cache",
            )
            resp.close()
            length = resp.headers.get("content-length")
            return resp.status_code == 200 and (length is None or length == str(blob.size))

        with ThreadPoolExecutor(min(self.jobs, max(1, len(blobs))), thread_name_prefix="gpuship-cache-head") as pool:
            return {b.digest for b, ok in zip(blobs, pool.map(there, blobs), strict=True) if ok}

    def remember(self, digest: str, cache: Cache) -> None:
        remember_location(cache, self.client.registry, self.repository, digest)

    # -- pulling ---------------------------------------------------------------------------------------------------
    def pull(self, blob: CachedBlob, diff_id: str, cache: Cache, *, plain: bool) -> None:
        """``blob`` into ``cache``, checked against its digest and ``diff_id``; with ``plain`` its tar too."""
        if cache.has(blob.digest):
            _check_local(cache, blob, diff_id, plain)
            return
        with (
            cache.blob_writer(expected=blob.digest) as out,
            cache.blob_writer(expected=diff_id) if plain else nullcontext() as tar,
        ):
            tee = _PlainCopy(blob.compression, tar)
            self._download(blob, out, tee)
            if out.size != blob.size:
                raise IntegrityError(f"layer {blob.digest[:19]} has {out.size} bytes, the build cache says {blob.size}")
            if tee.diff_id != diff_id:
                raise IntegrityError(
                    f"layer {blob.digest[:19]} unpacks to {tee.diff_id[:19]}, the build cache says {diff_id[:19]}"
                )
        self.remember(blob.digest, cache)

    def _download(self, blob: CachedBlob, out: BlobWriter, tee: _PlainCopy) -> None:
        """Stream the blob to ``out`` and ``tee``; a broken download goes on from where it stopped."""
        path = f"/v2/{self.repository}/blobs/{blob.digest}"
        failures = 0
        while True:
            headers = {"Range": f"bytes={out.size}-"} if out.size else {}
            try:
                resp = self.client.send(
                    "GET",
                    path,
                    headers=headers,
                    ok=(200, 206),
                    stream=True,
                    what=f"pulling layer {blob.digest[:19]} from the build cache",
                )
                skip = out.size if resp.status_code == 200 else 0  # the whole blob again: what is here is skipped
                for chunk in self.client.stream_body(resp, 64 << 10):  # small: a break loses little
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                        if not chunk:
                            continue
                    if out.size + len(chunk) > blob.size:
                        raise IntegrityError(
                            f"layer {blob.digest[:19]} is longer than the {blob.size} bytes it should be"
                        )
                    out.write(chunk)
                    tee.feed(chunk)
                    self.progress.transfer(blob.digest, out.size, blob.size)
                self.progress.transfer(blob.digest, out.size, blob.size, "pulled")
                return
            except Transient as exc:
                failures += 1
                self.client.retry.give_up_after(
                    failures,
                    exc,
                    f"pulling layer {blob.digest[:19]} from {self.client.host} kept failing: {exc.message}",
                    "try again later",
                )
                log.info("pull of %s broke off at %d bytes, going on: %s", blob.digest[:19], out.size, exc.message)
                time.sleep(self.client.retry.delay(failures))

    def fetch(self, blob: CachedBlob, cache: Cache) -> None:
        """A small blob a record names (a find-libdeps scan) into ``cache``, checked against its digest."""
        resp = self.client.send(
            "GET",
            f"/v2/{self.repository}/blobs/{blob.digest}",
            ok=(200,),
            what=f"reading {blob.digest[:19]} of the build cache",
        )
        data = resp.read()
        resp.close()
        if len(data) != blob.size:
            raise IntegrityError(f"{blob.digest[:19]} has {len(data)} bytes, the build cache says {blob.size}")
        cache.put_bytes(data, expected=blob.digest)

    # -- writing ---------------------------------------------------------------------------------------------------
    def write(
        self, manifest: CacheManifest, layers: Mapping[str, Layer], cache: Cache, mount_from: Sequence[str] = ()
    ) -> str:
        """Push the blobs ``manifest`` names (from ``layers``), its mapping and the artifact manifest; one line
        says what was sent."""
        config = manifest.config_bytes()
        data = manifest.manifest_bytes(sha256_digest(config), len(config))
        digest = sha256_digest(data)
        if self._current() == digest:
            return f"the build cache {self.ref} is up to date ({len(manifest.layers)} layers)"
        self.client.add_scope(self.repository, "pull,push")
        uploader = BlobUploader(
            self.client, self.repository, chunk_size=self.chunk_size, cache=cache, mount_from=mount_from
        )
        blobs = [_bytes_blob(config, "build cache mapping")]
        blobs += [_Blob(b.digest, b.size, "layer", _opener(layers, b.digest)) for b in manifest.blobs]
        blobs += [_Blob(b.digest, b.size, "file", partial(cache.open, b.digest)) for b in manifest.files]
        _run_parallel(uploader, sorted(blobs, key=lambda b: (-b.size, b.digest)), self.jobs)
        put_manifest(self.client, self.repository, self.reference.tag or "", data, OCI_MANIFEST)
        c = uploader.counters
        return (
            f"wrote the build cache {self.ref}: {len(manifest.layers)} layers; {c.uploaded} blobs uploaded "
            f"({c.bytes_uploaded / 1e6:.1f} MB), {c.skipped} already there, {c.mounted} mounted"
        )

    def _current(self) -> str | None:
        """The digest the tag points at now (None: no such tag)."""
        resp = self.client.send(
            "HEAD",
            f"/v2/{self.repository}/manifests/{self.reference.tag}",
            headers={"Accept": OCI_MANIFEST},
            ok=(200, 404),
            what=f"checking the build cache {self.ref}",
        )
        resp.close()
        return resp.headers.get("docker-content-digest") if resp.status_code == 200 else None


def _opener(layers: Mapping[str, Layer], digest: str) -> Callable[[], BinaryIO]:
    """How to read a blob the cache names: its layer's, or (a blob the repository or a mount source must already
    have) a clear error should the registry ask for its bytes."""
    layer = layers.get(digest)
    if layer is not None:
        return layer.open

    def absent() -> BinaryIO:
        raise GpushipError(f"layer {digest[:19]} of the build cache is neither here nor in the cache repository")

    return absent


def _check_local(cache: Cache, blob: CachedBlob, diff_id: str, plain: bool) -> None:
    """A blob already here (a build or pull of this machine): only its diff ID is checked, its tar kept if asked."""
    got = unpack_blob(cache, blob.digest, blob.compression, diff_id if plain else None)
    if got != diff_id:
        raise IntegrityError(f"layer {blob.digest[:19]} unpacks to {got[:19]}, the build cache says {diff_id[:19]}")


def open_store(ref: str, registry: Registry, progress: Progress = NO_PROGRESS) -> RegistryCacheStore:
    """The store for ``ref`` through the registry session ``registry`` (its TLS, credentials, jobs)."""
    target = Reference.parse(ref)
    return RegistryCacheStore(
        registry.client(target.registry),
        target,
        jobs=registry.options.jobs,
        chunk_size=registry.options.chunk_size,
        progress=progress,
    )


def describe(manifest: CacheManifest | None) -> dict[str, int]:
    """A summary for logs and reports."""
    if manifest is None:
        return {"layers": 0, "blobs": 0}
    return {"layers": len(manifest.layers), "blobs": len(manifest.blobs), "bytes": sum(b.size for b in manifest.blobs)}
