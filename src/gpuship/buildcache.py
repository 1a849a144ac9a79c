"""The registry as the shared build cache: ``gpuship build --cache registry:REF``.

A fresh CI machine has an empty gpuship cache, but the registry already holds yesterday's layers. gpuship's layers
are reproducible (equal input keys, equal bytes: :func:`gpuship.oci.layer.layer_key`), so what one machine learned
while building — *this input key made that layer* — is true on every machine. A build with a cache reference:

1. **reads** the cache manifest at REF before it starts (:class:`CacheManifest`): an OCI artifact of its own type
   (:data:`ARTIFACT_TYPE`) whose config blob maps each layer's input key to the layer's digest, diff ID, size and
   media type, and carries the small records the sources decide on without the bytes (an install's distributions,
   a pruning's report, the libraries find-libdeps found, a Debian base's facts). Its ``layers`` are the image
   layers it maps — no blob of its own but the mapping — so a registry keeps them while the cache names them;
2. looks every record up there after the local cache (:class:`BuildCacheSession` is the cache's overlay, see
   :meth:`gpuship.cache.Cache.overlaid`): a layer whose key is found and whose blob the cache repository holds is
   neither downloaded nor built nor compressed. For a ``registry:`` output it is used by its descriptor alone (the
   push mounts it from the cache repository, or finds it there); for a local output it is pulled, in parallel, and
   verified against its digest *and* its diff ID before it goes into an image;
3. **writes** a new cache manifest after it finished: the records it used or made, and the layers of its images
   (pushed to the cache repository, mounted from the output's repository where they are already).

Trust: a cache entry is a hint. The keys hold every input that changes the bytes; a pulled layer that does not
match its digest or diff ID is built instead (the build says so); a layer the manifest names but the registry lacks
is built; a record that turns out wrong when its bytes are needed restarts the build without it. The claim that
*key K made layer L* is as trustworthy as whoever can push to the cache reference — as with BuildKit's registry
cache, give that right to the same people who may push the images.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal, Protocol

from .errors import ConfigError, GpushipError
from .oci.compress import recompress_key
from .oci.image import Index
from .oci.layer import LayerRecord, layer_record, unpack_blob
from .oci.media import OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST, BlobCompression
from .oci.spec import Descriptor

if TYPE_CHECKING:
    from .cache import Cache
    from .oci.image import Image
    from .oci.layer import Layer

log = logging.getLogger("gpuship.buildcache")

#: The artifact type of a cache manifest, and the media type of its config blob (the mapping).
ARTIFACT_TYPE = "application/vnd.gpuship.build-cache.v1+json"
#: Bump when the mapping's shape changes: a cache of another format is not read (the build writes a new one).
FORMAT = 1
#: ``GPUSHIP_BUILD_CACHE=registry:REF`` and ``GPUSHIP_BUILD_CACHE_MODE=read|write|readwrite`` (for CI)
ENV_REF = "GPUSHIP_BUILD_CACHE"
ENV_MODE = "GPUSHIP_BUILD_CACHE_MODE"
Mode = Literal["read", "write", "readwrite"]
MODES: tuple[Mode, ...] = ("read", "write", "readwrite")

#: The cache's record namespaces that hold facts true on every machine (keyed by inputs, naming content by
#: digest): they travel in the cache manifest. Everything else (where blobs lie, host Pythons, fetched indexes)
#: stays on the machine.
PORTABLE = frozenset({"layers", "libdeps-results", "debian-libdeps-scan", "debian-base"})
#: What ``--no-cache`` stops a build from reading (it still writes them): every record that would let it skip
#: building a layer, here or from the registry.
FRESH = PORTABLE

#: Records whose value names a small blob of this machine (``{"digest": ...}``) that travels with them: the
#: find-libdeps scan of a layer (its paths and ELF facts), so an app edit on a fresh machine reads no big layer.
FILE_RECORDS = {"debian-libdeps-scan": "application/vnd.gpuship.libdeps-scan.v1+json"}

_MEDIA: dict[BlobCompression, str] = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}
_COMPRESSION_OF: dict[str, BlobCompression] = {v: k for k, v in _MEDIA.items()}
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY = re.compile(r"^[0-9a-f]{64}$")


# -- what the user asked for ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheSpec:
    """Where the shared cache is (``registry:REF``; ``ref`` without the prefix) and what a build does with it."""

    ref: str
    mode: Mode = "readwrite"

    @property
    def reads(self) -> bool:
        return self.mode in ("read", "readwrite")

    @property
    def writes(self) -> bool:
        return self.mode in ("write", "readwrite")

    def __str__(self) -> str:
        return f"registry:{self.ref}"


def parse_cache(text: str, where: str = "--cache") -> str | None:
    """``registry:REF`` -> ``REF``; ``none`` or empty -> None (no shared cache). The reference itself is read where
    the registry is reached (:meth:`gpuship.registry.Reference.parse`), at the build's start."""
    value = text.strip()
    if value in ("", "none"):
        return None
    kind, sep, rest = value.partition(":")
    if not sep or kind != "registry" or not rest or "://" in rest or any(c.isspace() for c in rest):
        raise ConfigError(
            f"{where} must be registry:REF, not {value!r}", "e.g. registry:ghcr.io/org/app:cache, or none"
        )
    if "@" in rest:
        raise ConfigError(
            f"{where} names a digest or a login ({value!r}); a cache is written by tag", "give registry:HOST/NAME:TAG"
        )
    return rest


def parse_mode(text: str, where: str = "--cache-mode") -> Mode:
    for mode in MODES:
        if text == mode:
            return mode
    raise ConfigError(f"{where} must be read, write or readwrite, not {text!r}")


def cache_spec(
    option: str | None, mode: str | None, config: str = "", env: Mapping[str, str] | None = None
) -> CacheSpec | None:
    """The shared cache of a build: ``--cache`` first, then ``GPUSHIP_BUILD_CACHE``, then ``[tool.gpuship] cache``
    (``none`` anywhere switches it off); the mode from ``--cache-mode``, else ``GPUSHIP_BUILD_CACHE_MODE``."""
    env = os.environ if env is None else env
    if option is not None:
        ref = parse_cache(option)
    elif env.get(ENV_REF) is not None:
        ref = parse_cache(env[ENV_REF], ENV_REF)
    else:
        ref = parse_cache(config, "[tool.gpuship] cache")
    chosen = (
        parse_mode(mode)
        if mode is not None
        else (parse_mode(env[ENV_MODE], ENV_MODE) if env.get(ENV_MODE) else "readwrite")
    )
    return CacheSpec(ref, chosen) if ref is not None else None


# -- the cache manifest ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CachedBlob:
    """A layer blob the cache repository holds, and the platforms whose images use it."""

    digest: str
    size: int
    media_type: str
    platforms: tuple[str, ...] = ()

    @property
    def compression(self) -> BlobCompression:
        return _COMPRESSION_OF[self.media_type]

    def descriptor(self) -> Descriptor:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class CacheManifest:
    """The mapping a cache reference holds: ``layers`` (input key -> layer), other ``records`` by namespace, the
    ``blobs`` of the images' layers that the cache repository holds, and the small ``files`` records name."""

    layers: Mapping[str, LayerRecord] = field(default_factory=dict)
    records: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    blobs: tuple[CachedBlob, ...] = ()
    #: the small blobs records name (:data:`FILE_RECORDS`)
    files: tuple[CachedBlob, ...] = ()

    def config_bytes(self) -> bytes:
        """The mapping as canonical JSON (the artifact's config blob): the same build writes the same bytes."""
        doc = {
            "format": FORMAT,
            "layers": {k: _layer_out(v) for k, v in sorted(self.layers.items())},
            "records": {ns: dict(sorted(v.items())) for ns, v in sorted(self.records.items()) if v},
            "blobs": [
                {**b.descriptor(), "platforms": list(b.platforms)} for b in sorted(self.blobs, key=lambda b: b.digest)
            ],
            "files": [b.descriptor() for b in sorted(self.files, key=lambda b: b.digest)],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def manifest_bytes(self, config_digest: str, config_size: int) -> bytes:
        """The artifact manifest: its config is the mapping, its layers the blobs the mapping names."""
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": ARTIFACT_TYPE, "digest": config_digest, "size": config_size},
            "layers": [b.descriptor() for b in sorted((*self.blobs, *self.files), key=lambda b: b.digest)],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_config(cls, data: bytes, where: str) -> CacheManifest:
        """Read a mapping; entries of the wrong shape are left out (a hint that cannot be read is no hint)."""
        try:
            doc = json.loads(data)
        except ValueError:
            raise GpushipError(
                f"the build cache {where} is not JSON", "write it again: build with --cache-mode write"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else None
            raise GpushipError(
                f"the build cache {where} has format {got!r}, this gpuship reads format {FORMAT}",
                "the next build with --cache writes it again",
            )
        layers = {k: rec for k, v in _items(doc.get("layers")) if _KEY.match(k) and (rec := _layer_in(v)) is not None}
        records = {
            ns: {k: v for k, v in _items(entries) if isinstance(k, str)}
            for ns, entries in _items(doc.get("records"))
            if ns in PORTABLE and ns != "layers"
        }
        blobs = tuple(b for item in _list(doc.get("blobs")) if (b := _blob_in(item)) is not None)
        files = tuple(b for item in _list(doc.get("files")) if (b := _blob_in(item, FILES_MEDIA)) is not None)
        return cls(layers, records, blobs, files)


def _items(value: object) -> Iterable[tuple[str, object]]:
    """A JSON object's items (its keys are strings); none for anything else."""
    return value.items() if isinstance(value, dict) else ()


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _layer_out(rec: LayerRecord) -> dict[str, object]:
    """A layer record as the mapping writes it: the OCI words (``diffID``, ``mediaType``) for gpuship's."""
    out: dict[str, object] = {
        "digest": rec["digest"],
        "diffID": rec["diff_id"],
        "size": rec["size"],
        "uncompressedSize": rec["uncompressed_size"],
        "mediaType": _MEDIA[rec["compression"]],
    }
    if rec.get("comment"):
        out["comment"] = rec["comment"]
    if rec.get("built"):
        out["built"] = rec["built"]
    if "meta" in rec:  # what the maker found out (an install's distributions, a pruning's report)
        out["meta"] = rec["meta"]
    return out


def _layer_in(value: object) -> LayerRecord | None:
    """A mapping entry back as gpuship's layer record, or None when it is not one."""
    if not isinstance(value, dict):
        return None
    digest, diff_id, media = value.get("digest"), value.get("diffID"), value.get("mediaType")
    size, usize = _count(value.get("size")), _count(value.get("uncompressedSize"))
    if not (isinstance(digest, str) and _DIGEST.match(digest) and isinstance(diff_id, str) and _DIGEST.match(diff_id)):
        return None
    if size is None or usize is None or not isinstance(media, str) or media not in _COMPRESSION_OF:
        return None
    compression = _COMPRESSION_OF[media]
    if compression == "none" and (digest != diff_id or size != usize):
        return None
    rec: LayerRecord = {
        "digest": digest,
        "diff_id": diff_id,
        "size": size,
        "uncompressed_size": usize,
        "compression": compression,
        "comment": str(value.get("comment") or ""),
    }
    if value.get("built") is True:
        rec["built"] = True
    if "meta" in value:
        rec["meta"] = value["meta"]
    return rec


FILES_MEDIA = frozenset(FILE_RECORDS.values())


def _blob_in(value: object, media_types: Collection[str] = frozenset(_COMPRESSION_OF)) -> CachedBlob | None:
    if not isinstance(value, dict):
        return None
    digest, size, media = value.get("digest"), _count(value.get("size")), value.get("mediaType")
    platforms = value.get("platforms") or []
    if not (isinstance(digest, str) and _DIGEST.match(digest) and size is not None and media in media_types):
        return None
    if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
        return None
    return CachedBlob(digest, size, str(media), tuple(platforms))


def _count(value: object) -> int | None:
    """``value`` when it is a byte count (an integer, not a boolean, 0 or more), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# -- the registry side, as the session needs it -----------------------------------------------------------------------
class CacheStore(Protocol):
    """The cache repository (:mod:`gpuship.registry.buildcache` over a registry client)."""

    ref: str

    def present(self, blobs: Sequence[CachedBlob]) -> set[str]:
        """The digests of ``blobs`` the repository holds, with the size the mapping gives."""
        ...

    def pull(self, blob: CachedBlob, diff_id: str, cache: Cache, *, plain: bool) -> None:
        """Bring ``blob`` into ``cache``, checked against its digest and ``diff_id`` (and, with ``plain``, its tar
        too, under ``diff_id``); raises a :class:`GpushipError` when it cannot."""
        ...

    def remember(self, digest: str, cache: Cache) -> None:
        """Note in ``cache`` that the cache repository holds ``digest`` (a push to the registry mounts it)."""
        ...

    def fetch(self, blob: CachedBlob, cache: Cache) -> None:
        """Bring a small blob (a file a record names) into ``cache``, checked against its digest."""
        ...

    def write(
        self, manifest: CacheManifest, layers: Mapping[str, Layer], cache: Cache, mount_from: Sequence[str]
    ) -> str:
        """Push the layers ``manifest`` names (from ``layers``), then the mapping and the artifact manifest."""
        ...


class NotInCache(Exception):
    """A layer the cache's records named was needed as bytes and the shared cache could not give them (a layer
    only ever used to make another, or a pull that failed its check): the build starts again without that record,
    and builds the layer."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(why)
        self.key = key
        self.why = why


def _noop() -> None:
    return None


# -- one build's view --------------------------------------------------------------------------------------------------
class BuildCacheSession:
    """One build's use of the shared cache, and the :class:`~gpuship.cache.Cache` overlay that gives it effect.

    ``spec`` is the cache reference and mode (None: ``--no-cache`` alone), ``remote`` what the reference held
    (None: nothing, or not read), ``store`` the cache repository,
    ``fresh`` is ``--no-cache`` (no layer record is read, here or there; all are still written), ``eager``
    pulls the images' layers as soon as the build starts (local outputs need their bytes; a ``registry:`` output
    only their descriptors), ``plain`` also keeps each pulled layer's tar (an engine output loads plain tars).
    Every record the build reads or writes in :data:`PORTABLE` is noted: that is what the next cache manifest holds.
    """

    def __init__(
        self,
        cache: Cache,
        remote: CacheManifest | None = None,
        store: CacheStore | None = None,
        *,
        spec: CacheSpec | None = None,
        fresh: bool = False,
        eager: bool = False,
        plain: bool = False,
        platforms: Sequence[str] = (),
        jobs: int = 4,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.cache = cache
        self.spec = spec
        self.remote = remote or CacheManifest()
        self.store = store
        self.fresh = fresh
        self.eager = eager
        self.plain = plain
        self.say = say or (lambda msg: log.info("%s", msg))
        self.excluded: set[str] = set()
        self.warnings: list[str] = []
        self._notes: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()
        self._blobs = {b.digest: b for b in self.remote.blobs}
        self._files = {b.digest: b for b in self.remote.files}
        self._present: set[str] = set()
        self._suspect: set[str] = set()
        self._vouched: set[str] = set()
        self._pulls: dict[tuple[str, str], Future[None]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._jobs = max(1, jobs)
        self._platforms = tuple(platforms)
        self.hits = 0

    # -- the overlay (gpuship.cache.Overlay) ------------------------------------------------------------------
    namespaces = FRESH

    def get(self, namespace: str, key: str, local: object) -> object:
        if self.fresh:
            return None
        value = local
        if value is None and namespace in PORTABLE:
            value = self._remote_record(namespace, key)
            if value is not None and namespace == "layers":
                with self._lock:
                    self._vouched.add(key)
        if value is not None and namespace in PORTABLE:
            with self._lock:
                self._notes.setdefault(namespace, {})[key] = value
        return value

    def put(self, namespace: str, key: str, value: object) -> None:
        if namespace in PORTABLE:
            with self._lock:
                self._notes.setdefault(namespace, {})[key] = value
                if namespace == "layers":
                    self._vouched.discard(key)  # made here: this machine's own

    def vouches(self, key: str) -> bool:
        with self._lock:
            return key in self._vouched

    def filler(self, key: str, record: Mapping[str, object]) -> Callable[[], None] | None:
        """How the layer of ``record`` (recorded under ``key``), whose blob this machine lacks, comes here: None
        when the shared cache cannot give it, and the caller builds it now."""
        if self.fresh or key in self.excluded or key not in self.remote.layers:
            return None
        found = self._blob_for(record)
        if found is None:  # a layer only used to make another (the unpruned one): built if it is ever read
            what = record.get("comment") or str(record["digest"])[:19]
            return lambda: self._missing(key, f"the build cache has no blob of the layer {what}")
        blob, diff_id, plain = found
        if blob.digest in self._suspect:
            return None
        if blob.digest not in self._present:  # named, but the registry lacks it (or it has another size)
            self._warn(f"the build cache names layer {blob.digest[:19]}, which {self.store_ref} lacks; building it")
            return None
        self.hits += 1
        fill = partial(self._fill, key, blob, diff_id, plain)
        if not self.eager:
            return fill
        try:  # a local output needs the bytes: pulled and checked now, so a bad one is built now
            self._pull(blob, diff_id, plain and self.plain)
        except GpushipError as exc:
            self._warn(f"layer {blob.digest[:19]} from the build cache failed its check ({exc.message}); building it")
            self.excluded.add(key)
            self.hits -= 1
            return None
        return fill if plain else _noop  # a plain layer's tar is made from the pulled blob if it is ever read

    def fetch(self, digest: str) -> bool:
        """Bring the small blob ``digest`` a record names (a find-libdeps scan) into the cache: whether it is
        here now."""
        blob = self._files.get(digest)
        if self.fresh or blob is None or self.store is None:
            return False
        try:
            self.store.fetch(blob, self.cache)
        except GpushipError as exc:
            self._warn(f"{blob.digest[:19]} of the build cache cannot be read ({exc.message}); made again")
            return False
        return self.cache.has(digest)

    @property
    def store_ref(self) -> str:
        return self.store.ref if self.store is not None else "the cache repository"

    # -- reading -----------------------------------------------------------------------------------------------------
    def _remote_record(self, namespace: str, key: str) -> object:
        if key in self.excluded:
            return None
        if namespace == "layers":
            rec = self.remote.layers.get(key)
            return dict(rec) if rec is not None else None
        return self.remote.records.get(namespace, {}).get(key)

    def _blob_for(self, record: Mapping[str, object]) -> tuple[CachedBlob, str, bool] | None:
        """The blob in the cache repository that holds ``record``'s layer, its diff ID, and whether the layer is
        its plain tar (then the blob is a compressed form of it)."""
        diff_id = str(record["diff_id"])
        if record.get("compression") != "none":
            blob = self._blobs.get(str(record["digest"]))
            return (blob, diff_id, False) if blob is not None else None
        codecs: tuple[BlobCompression, ...] = ("gzip", "zstd")
        for codec in codecs:
            packed = self.remote.layers.get(recompress_key(diff_id, codec))
            blob = self._blobs.get(str(packed["digest"])) if packed is not None else None
            if blob is not None and packed is not None and packed.get("diff_id") == diff_id:
                return blob, diff_id, True
        return None

    def check_blobs(self) -> None:
        """Ask the cache repository which of the mapping's blobs it holds (once, at the start)."""
        if self.store is None or not self._blobs:
            return
        self._present = self.store.present(list(self._blobs.values()))
        claims: dict[str, set[str]] = {}
        for rec in self.remote.layers.values():
            if rec.get("compression") != "none":
                claims.setdefault(str(rec["digest"]), set()).add(str(rec["diff_id"]))
        for digest in sorted(d for d, diff_ids in claims.items() if len(diff_ids) > 1 and d in self._present):
            self._warn(f"the build cache gives blob {digest[:19]} {len(claims[digest])} diff IDs; not using it")
            self._present.discard(digest)
            self._suspect.add(digest)  # a blob unpacks to one tar: the mapping is wrong about it somewhere
        for digest in self._present:
            self.store.remember(digest, self.cache)  # a registry: output mounts it from there

    def forget(self) -> None:
        """Use nothing the cache reference held (it could not be read whole)."""
        self.remote = CacheManifest()
        self._blobs = {}
        self._files = {}
        self._present = set()

    def prefetch(self) -> None:
        """Start pulling the layers the last build's images held (this build's platforms), largest first."""
        if not self.eager or self.store is None:
            return
        wanted = [
            b
            for b in self._blobs.values()
            if b.digest in self._present
            and (not self._platforms or not b.platforms or set(b.platforms) & set(self._platforms))
        ]
        diff_ids = self._diff_ids()
        total = sum(b.size for b in wanted)
        if wanted:
            self.say(f"pulling {len(wanted)} layers ({total / 1e6:.1f} MB) from the build cache {self.store.ref}")
        for blob in sorted(wanted, key=lambda b: (-b.size, b.digest)):
            diff_id = diff_ids.get(blob.digest)
            if diff_id is not None:
                self._start(blob, diff_id, self.plain)

    def _diff_ids(self) -> dict[str, str]:
        """CachedBlob digest -> the diff ID the mapping gives it (a blob without one is never pulled)."""
        out: dict[str, str] = {}
        for rec in self.remote.layers.values():
            if rec.get("digest") in self._blobs:
                out[str(rec["digest"])] = str(rec["diff_id"])
        return out

    def _start(self, blob: CachedBlob, diff_id: str, plain: bool) -> Future[None]:
        with self._lock:  # one pull per blob and the diff ID it should have (a lie may pair it with another)
            fut = self._pulls.get((blob.digest, diff_id))
            if fut is None:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._jobs, thread_name_prefix="gpuship-cache-pull")
                store = self.store
                assert store is not None
                fut = self._pool.submit(store.pull, blob, diff_id, self.cache, plain=plain)
                self._pulls[(blob.digest, diff_id)] = fut
            return fut

    def _pull(self, blob: CachedBlob, diff_id: str, plain: bool) -> None:
        """``blob`` here (pulled once, whoever asks first), and with ``plain`` its tar too."""
        self._start(blob, diff_id, plain).result()
        if plain and not self.cache.has(diff_id):
            unpack_blob(self.cache, blob.digest, blob.compression, diff_id)

    def _fill(self, key: str, blob: CachedBlob, diff_id: str, plain: bool) -> None:
        try:
            self._pull(blob, diff_id, plain)
        except GpushipError as exc:
            self._missing(key, f"layer {blob.digest[:19]} from the build cache failed its check ({exc.message})")

    def _missing(self, key: str, why: str) -> None:
        raise NotInCache(key, why)

    def _warn(self, message: str) -> None:
        with self._lock:
            if message in self.warnings:
                return
            self.warnings.append(message)
        self.say(f"warning: {message}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- writing -----------------------------------------------------------------------------------------------------
    def manifest_for(self, result: Image | Index) -> CacheManifest:
        """The mapping the next build reads: every record this one used or made, and the layers of ``result``
        (the images as they travel) that the records name."""
        with self._lock:
            notes = {ns: dict(v) for ns, v in self._notes.items()}
        layers = {
            k: rec
            for k, v in notes.pop("layers", {}).items()
            if (rec := layer_record(v)) is not None and _layer_in(_layer_out(rec)) is not None
        }
        named = {str(rec["digest"]) for rec in layers.values()}
        platforms: dict[str, set[str]] = {}
        kinds: dict[str, CachedBlob] = {}
        for img in result.images if isinstance(result, Index) else (result,):
            for layer in img.layers:
                if layer.digest in named and layer.compression != "none":
                    kinds[layer.digest] = CachedBlob(layer.digest, layer.size, _MEDIA[layer.compression])
                    platforms.setdefault(layer.digest, set()).add(str(img.platform))
        blobs = tuple(
            CachedBlob(b.digest, b.size, b.media_type, tuple(sorted(platforms[b.digest]))) for b in kinds.values()
        )
        files: dict[str, CachedBlob] = {}
        for ns, media in FILE_RECORDS.items():
            for key, value in list(notes.get(ns, {}).items()):
                digest = value.get("digest") if isinstance(value, dict) else None
                if isinstance(digest, str) and digest in self._files:  # in the cache repository already
                    files[digest] = self._files[digest]
                elif isinstance(digest, str) and self.cache.has(digest):
                    files[digest] = CachedBlob(digest, self.cache.blob_path(digest).stat().st_size, media)
                else:  # a record whose file is nowhere: not passed on
                    del notes[ns][key]
        return CacheManifest(layers, notes, blobs, tuple(files.values()))
