"""Push an :class:`~gpuship.oci.Image` or :class:`~gpuship.oci.Index` to a registry.

Blobs first (layers and configs, in parallel), manifests last, so a failed push never leaves a tag that
points at missing content. For each blob:

1. ``HEAD`` it: a blob the repository already has is skipped;
2. if the cache remembers the blob in another repository of the same registry (from an earlier push or
   pull), try a cross-repository mount (``POST ?mount=&from=``, which needs ``pull`` on the source);
3. else upload it: one ``PUT`` for a blob up to ``chunk_size``, otherwise ``PATCH`` chunks with
   ``Content-Range``. A dropped connection or a 5xx mid-upload waits, asks the registry how far it got
   (``GET`` on the upload URL, ``Range`` header) and continues from there; an upload the registry has
   forgotten is started again from zero.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlencode, urlsplit, urlunsplit

from ..cache import Cache
from ..errors import GpushipError, IntegrityError, RegistryError
from ..oci.image import Image, Index, sha256_digest
from ..progress import NO_PROGRESS, Progress
from ..streams import CHUNK
from .client import Body, RegistryClient, Transient
from .limits import limits_for, oversized_layers
from .options import DEFAULT_CHUNK_SIZE, DEFAULT_JOBS
from .reference import Reference

log = logging.getLogger("gpuship.registry")

#: Cache records of where blobs were last seen, for cross-repository mounts.
LOCATIONS_NS = "registry-blob-locations"


@dataclass(frozen=True)
class PushResult:
    """What a push did. ``bytes_uploaded`` counts the blobs that were uploaded (their sizes);
    ``bytes_sent`` counts every byte put on the wire, re-sent ones after a resume included."""

    reference: str
    digest: str
    blobs: int
    uploaded: int
    skipped: int
    mounted: int
    bytes_uploaded: int
    bytes_sent: int
    manifests: int
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        return (
            f"pushed {self.reference}@{self.digest}: {self.uploaded} blobs uploaded "
            f"({self.bytes_uploaded / 1e6:.1f} MB), {self.skipped} already there, {self.mounted} mounted"
        )


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int
    what: str
    open: Callable[[], BinaryIO]


class _Restart(Exception):
    """The registry lost the upload session: start this blob again."""


class _Aborted(Exception):
    """Another blob failed; stop sending."""


def _bytes_blob(data: bytes, what: str) -> _Blob:
    return _Blob(sha256_digest(data), len(data), what, lambda: io.BytesIO(data))


def blobs_to_push(obj: Image | Index) -> list[_Blob]:
    """Every config and layer blob of ``obj``, each once, largest first (they take longest)."""
    found: dict[str, _Blob] = {}
    for img in obj.images if isinstance(obj, Index) else (obj,):
        cfg = img.config_bytes()
        found.setdefault(sha256_digest(cfg), _bytes_blob(cfg, "config"))
        for layer in img.layers:
            found.setdefault(layer.digest, _Blob(layer.digest, layer.size, "layer", layer.open))
    return sorted(found.values(), key=lambda b: (-b.size, b.digest))


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _range_end(header: str | None) -> int:
    """The next offset from a ``Range: 0-N`` header (``0-0`` is read as nothing stored yet)."""
    if not header:
        return 0
    value = header.split("=", 1)[-1].strip()
    start, _, end = value.partition("-")
    try:
        last = int(end)
    except ValueError:
        return 0
    return 0 if last <= 0 else last + 1


def remember_location(cache: Cache, registry: str, repository: str, digest: str) -> None:
    """Note that ``registry/repository`` holds ``digest`` (a later push to that registry may mount it)."""
    key = f"{registry}|{digest}"
    rec = [r for r in _locations(cache, key) if r != repository]
    cache.put_ref(LOCATIONS_NS, key, [repository, *rec][:5])


def _locations(cache: Cache, key: str) -> list[str]:
    """The repositories recorded as holding a blob (a list of names)."""
    rec = cache.get_ref(LOCATIONS_NS, key)
    return [r for r in rec if isinstance(r, str)] if isinstance(rec, list) else []


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uploaded = self.skipped = self.mounted = 0
        self.bytes_uploaded = self.bytes_sent = 0


class BlobUploader:
    """Puts blobs into one repository through a :class:`RegistryClient`."""

    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: Progress = NO_PROGRESS,
        cache: Cache | None = None,
        mount_from: Sequence[str] = (),
    ) -> None:
        if chunk_size < 1:
            raise GpushipError("the chunk size must be positive", "give --chunk-size in MiB, e.g. 16")
        row = limits_for(client.host)
        if row is not None and row.min_chunk and chunk_size < row.min_chunk:
            chunk_size = row.min_chunk
        self.client = client
        self.repository = repository
        self.chunk_size = chunk_size
        self.progress = progress
        self.cache = cache
        self.mount_from = tuple(m for m in mount_from if m and m != repository)
        self.counters = _Counters()
        self.abort = threading.Event()
        client.add_scope(repository, "pull,push")

    # -- one blob ------------------------------------------------------------------------------------------------
    def push_blob(self, blob: _Blob) -> str:
        """Make sure the repository has ``blob``; returns "skipped", "mounted" or "uploaded"."""
        if self.exists(blob.digest):
            with self.counters.lock:
                self.counters.skipped += 1
            self.progress.transfer(blob.digest, blob.size, blob.size, "exists")
            self._remember(blob.digest)
            return "skipped"
        location = None
        for source in self._mount_sources(blob.digest):
            mounted, location = self._mount(blob, source)
            if mounted:
                with self.counters.lock:
                    self.counters.mounted += 1
                self.progress.transfer(blob.digest, blob.size, blob.size, f"mounted from {source}")
                self._remember(blob.digest)
                return "mounted"
            if location:
                break
        self._upload(blob, location)
        with self.counters.lock:
            self.counters.uploaded += 1
            self.counters.bytes_uploaded += blob.size
        self.progress.transfer(blob.digest, blob.size, blob.size, "pushed")
        self._remember(blob.digest)
        return "uploaded"

    def exists(self, digest: str) -> bool:
        resp = self.client.send(
            "HEAD", f"/v2/{self.repository}/blobs/{digest}", ok=(200, 404), what=f"checking blob {digest[:19]}"
        )
        resp.close()
        return resp.status_code == 200

    def _mount_sources(self, digest: str) -> list[str]:
        sources = list(self.mount_from)
        if self.cache is not None:
            rec = _locations(self.cache, f"{self.client.registry}|{digest}")
            sources += [r for r in rec if r != self.repository and r not in sources]
        return sources[:3]

    def _remember(self, digest: str) -> None:
        if self.cache is not None:
            remember_location(self.cache, self.client.registry, self.repository, digest)

    def _mount(self, blob: _Blob, source: str) -> tuple[bool, str | None]:
        self.client.add_scope(source, "pull")  # a mount needs pull on the source repository
        try:
            resp = self.client.send(
                "POST",
                f"/v2/{self.repository}/blobs/uploads/?" + urlencode({"mount": blob.digest, "from": source}),
                ok=(201, 202),
                what=f"mounting {blob.digest[:19]} from {source}",
            )
        except RegistryError as exc:
            log.info("mount of %s from %s refused: %s", blob.digest[:19], source, exc.message)
            return False, None
        resp.close()
        if resp.status_code == 201:
            return True, None
        loc = resp.headers.get("location")
        return False, (self.client.resolve(f"/v2/{self.repository}/blobs/uploads/", loc) if loc else None)

    # -- uploads -------------------------------------------------------------------------------------------------
    def _start(self) -> str:
        path = f"/v2/{self.repository}/blobs/uploads/"
        resp = self.client.send("POST", path, ok=(202,), what="starting an upload")
        resp.close()
        loc = resp.headers.get("location")
        if not loc:
            raise RegistryError(f"{self.client.host} started an upload without a Location header")
        minimum = resp.headers.get("oci-chunk-min-length")
        if minimum and minimum.isdigit() and int(minimum) > self.chunk_size:
            self.chunk_size = int(minimum)
        return self.client.resolve(path, loc)

    def _upload(self, blob: _Blob, location: str | None) -> None:
        restarts = 0
        self.progress.transfer(blob.digest, 0, blob.size)
        while True:
            if self.abort.is_set():
                raise _Aborted()
            try:
                if location is None:
                    location = self._start()
                if blob.size <= self.chunk_size:
                    self._put_whole(blob, location)
                else:
                    self._put_chunks(blob, location)
                return
            except _Restart as exc:
                restarts += 1
                self.client.retry.give_up_after(
                    restarts,
                    exc,
                    f"upload of {blob.what} {blob.digest[:19]} to {self.client.host} kept failing ({exc})",
                    "the registry is unstable; try again later",
                )
                log.info("restarting upload of %s: %s", blob.digest[:19], exc)
                time.sleep(self.client.retry.delay(restarts))
                location = None

    def _body(self, blob: _Blob, start: int, end: int, pos: list[int]) -> Callable[[], Iterator[bytes]]:
        """A fresh iterator over ``blob[start:end]`` per call; ``pos[0]`` tracks what was handed out."""

        def gen() -> Iterator[bytes]:
            pos[0] = start
            self.progress.transfer(blob.digest, start, blob.size)
            with blob.open() as fh:
                if start:
                    fh.seek(start)
                left = end - start
                while left > 0:
                    if self.abort.is_set():
                        raise _Aborted()
                    data = fh.read(min(CHUNK, left))
                    if not data:
                        raise IntegrityError(
                            f"{blob.what} {blob.digest[:19]} is shorter than its {blob.size} bytes",
                            "the cached blob is damaged; run gpuship cache prune and rebuild",
                        )
                    left -= len(data)
                    yield data
                    with self.counters.lock:
                        self.counters.bytes_sent += len(data)
                    pos[0] += len(data)
                    self.progress.transfer(blob.digest, pos[0], blob.size)

        return gen

    def _put_whole(self, blob: _Blob, location: str) -> None:
        pos = [0]
        self._close_upload(
            blob,
            location,
            f"uploading {blob.what} {blob.digest[:19]}",
            str(blob.size),
            self._body(blob, 0, blob.size, pos),
        )

    def _close_upload(self, blob: _Blob, location: str, what: str, length: str, content: Body) -> None:
        """The upload's closing PUT (``?digest=``), with ``content`` as its body: a broken connection after which
        the registry has the blob counts as done, any other transient failure restarts the upload."""
        try:
            resp = self.client.send(
                "PUT",
                _with_query(location, digest=blob.digest),
                headers={"Content-Type": "application/octet-stream", "Content-Length": length},
                content=content,
                ok=(201,),
                retries=False,
                what=what,
            )
        except Transient as exc:
            self._pause(exc, 1)
            if self.exists(blob.digest):  # the PUT may have landed before the connection broke
                return
            raise _Restart(exc.message) from exc
        except RegistryError as exc:
            self._check_upload_error(exc, blob)
            raise
        resp.close()
        self._check_digest(resp.headers.get("docker-content-digest"), blob)

    def _put_chunks(self, blob: _Blob, location: str) -> None:
        offset, failures, mismatches = 0, 0, 0
        pos = [0]
        while offset < blob.size:
            end = min(offset + self.chunk_size, blob.size)
            try:
                resp = self.client.send(
                    "PATCH",
                    location,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end - 1}",
                        "Content-Length": str(end - offset),
                    },
                    content=self._body(blob, offset, end, pos),
                    ok=(202,),
                    retries=False,
                    what=f"uploading {blob.what} {blob.digest[:19]}",
                )
            except Transient as exc:
                failures += 1
                self.client.retry.give_up_after(
                    failures,
                    exc,
                    f"upload of {blob.what} {blob.digest[:19]} to {self.client.host} failed {failures} times: {exc.message}",
                    "the registry is down or unstable; try again later",
                )
                self._pause(exc, failures)
                offset, location = self._status(location)
                continue
            except RegistryError as exc:
                if exc.status == 416 and mismatches < 2:  # our offset and the registry's disagree: ask it
                    mismatches += 1
                    offset, location = self._status(location)
                    continue
                self._check_upload_error(exc, blob)
                raise
            resp.close()
            failures = 0
            loc = resp.headers.get("location")
            if loc:
                location = self.client.resolve(location, loc)
            got = resp.headers.get("range")
            offset = _range_end(got) if got else end
        self._close_upload(blob, location, f"finishing the upload of {blob.digest[:19]}", "0", b"")

    def _pause(self, exc: Transient, failures: int) -> None:
        delay = self.client.retry.delay(failures)
        if exc.wait is not None:
            delay = min(max(delay, exc.wait), self.client.retry.max_retry_after)
        log.info("upload interrupted (%s); resuming in %.1fs", exc.message, delay)
        time.sleep(delay)

    def _status(self, location: str) -> tuple[int, str]:
        """Ask the registry how much of the upload it holds: ``(next offset, upload URL)``."""
        try:
            resp = self.client.send("GET", location, ok=(204, 200), what="checking the upload's progress")
        except RegistryError as exc:
            if exc.status in (400, 404, 416):
                raise _Restart(f"the registry lost the upload ({exc.message})") from exc
            raise
        resp.close()
        loc = resp.headers.get("location")
        return _range_end(resp.headers.get("range")), (self.client.resolve(location, loc) if loc else location)

    def _check_upload_error(self, exc: RegistryError, blob: _Blob) -> None:
        if exc.status == 404 or (exc.status == 400 and "BLOB_UPLOAD_INVALID" in exc.codes):
            raise _Restart(f"the registry lost the upload ({exc.detail})") from exc
        if exc.status == 400 and "DIGEST_INVALID" in exc.codes:
            raise IntegrityError(
                f"{self.client.host} says {blob.what} {blob.digest[:19]} does not match its digest",
                "the cached blob is damaged; run gpuship cache prune and rebuild",
            ) from exc
        if exc.status == 413:
            raise RegistryError(
                f"{self.client.host} refused {blob.what} {blob.digest[:19]} as too large ({blob.size / 1e9:.2f} GB)",
                "use a smaller --chunk-size, or split the layer into smaller layer groups",
            ) from exc

    def _check_digest(self, header: str | None, blob: _Blob) -> None:
        if header and header != blob.digest:
            raise IntegrityError(
                f"{self.client.host} stored {blob.what} {blob.digest[:19]} under another digest ({header[:19]})",
                "the registry mangled the upload; report it to its operators",
            )


# -- manifests ---------------------------------------------------------------------------------------------------
def manifest_exists(client: RegistryClient, repository: str, digest: str, media_type: str) -> bool:
    resp = client.send(
        "HEAD",
        f"/v2/{repository}/manifests/{digest}",
        headers={"Accept": media_type},
        ok=(200, 404),
        what=f"checking manifest {digest[:19]}",
    )
    resp.close()
    return resp.status_code == 200


def put_manifest(client: RegistryClient, repository: str, identifier: str, data: bytes, media_type: str) -> str:
    """``PUT`` a manifest or index under a tag or its digest; returns its digest."""
    digest = sha256_digest(data)
    resp = client.send(
        "PUT",
        f"/v2/{repository}/manifests/{identifier}",
        headers={"Content-Type": media_type},
        content=data,
        ok=(201, 200),
        what=f"putting manifest {identifier[:19]}",
    )
    resp.close()
    got = resp.headers.get("docker-content-digest")
    if got and got != digest:
        raise IntegrityError(
            f"{client.host} stored the manifest under {got}, not {digest}", "the registry rewrote it; report this"
        )
    return digest


# -- the push ------------------------------------------------------------------------------------------------------
def push_to(
    client: RegistryClient,
    obj: Image | Index,
    target: Reference,
    *,
    cache: Cache | None = None,
    jobs: int = DEFAULT_JOBS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress = NO_PROGRESS,
    mount_from: Sequence[str] = (),
    on_warning: Callable[[str], None] | None = None,
) -> PushResult:
    """Push an image or a multi-platform index to ``target`` (a tag, a digest, or both) through ``client``.

    ``cache`` remembers where blobs were seen (for cross-repository mounts); ``mount_from`` names more
    repositories of the same registry to mount from. ``jobs`` blobs go up at once. Layers larger than a
    known limit of the registry are reported through ``on_warning`` (default: the log) before any upload.
    """
    if target.digest is not None and target.digest != obj.digest:
        raise GpushipError(
            f"{target} names digest {target.digest[:19]}, but the image's manifest is {obj.digest[:19]}",
            "push by tag, or give the image's own digest",
        )
    warn = on_warning or (lambda msg: log.warning("%s", msg))
    warnings = oversized_layers(obj, target.endpoint)
    for line in warnings:
        warn(line)
    uploader = BlobUploader(
        client, target.repository, chunk_size=chunk_size, progress=progress, cache=cache, mount_from=mount_from
    )
    blobs = blobs_to_push(obj)
    _run_parallel(uploader, blobs, max(1, jobs))
    manifests = 0
    images = obj.images if isinstance(obj, Index) else ()
    for img in images:
        data = img.manifest_bytes()
        if not manifest_exists(client, target.repository, img.digest, img.family.manifest):
            put_manifest(client, target.repository, img.digest, data, img.family.manifest)
            manifests += 1
    media_type = obj.family.index if isinstance(obj, Index) else obj.family.manifest
    data = obj.manifest_bytes()
    digest = sha256_digest(data)
    for identifier in dict.fromkeys(i for i in (target.tag, target.digest) if i):
        put_manifest(client, target.repository, identifier, data, media_type)
        manifests += 1
    c = uploader.counters
    return PushResult(
        reference=str(target.with_tag(target.tag) if target.tag else target.name),
        digest=digest,
        blobs=len(blobs),
        uploaded=c.uploaded,
        skipped=c.skipped,
        mounted=c.mounted,
        bytes_uploaded=c.bytes_uploaded,
        bytes_sent=c.bytes_sent,
        manifests=manifests,
        warnings=tuple(warnings),
    )


def _run_parallel(uploader: BlobUploader, blobs: list[_Blob], jobs: int) -> None:
    if not blobs:
        return
    with ThreadPoolExecutor(max_workers=min(jobs, len(blobs)), thread_name_prefix="gpuship-push") as pool:
        futures = [pool.submit(uploader.push_blob, b) for b in blobs]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and f.exception() is not None), None)
        if failed is not None:
            uploader.abort.set()
            for f in pending:
                f.cancel()
            wait(futures)
            exc = failed.exception()
            # report the first real failure, not another thread's reaction to the abort
            real = next(
                (
                    f.exception()
                    for f in futures
                    if f.done()
                    and not f.cancelled()
                    and f.exception() is not None
                    and not isinstance(f.exception(), _Aborted)
                ),
                exc,
            )
            assert real is not None
            raise real
