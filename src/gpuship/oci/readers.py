"""Read an image back from this machine: OCI layouts, oci-archives and docker-archives (combined or legacy
``docker save``).

``read_local(ref)`` takes::

    oci:DIR[:TAG]                   an OCI image layout directory
    oci-archive:FILE[:TAG]          an OCI layout in a tar file (FILE may be the .parts.json of a split archive)
    docker-archive:FILE[:NAME:TAG]  a docker save / gpuship docker-archive (with or without index.json)
    PATH                            any of the above, recognised by what it holds
    docker:NAME:TAG, podman:NAME:TAG  an image in the Docker (Podman) Engine, read through ``save``

(``registry:REF`` is read one level up, by :func:`gpuship.transports.read_image`.)

Every blob is checked against its digest (and size) while it is read; layers are copied into the cache, so
the returned :class:`Layer` values open from the cache exactly like built ones. A legacy archive (only
``manifest.json``, uncompressed layer tars) has no layer digests: each layer's tar is checked against the
config's ``diff_ids`` and compressed with the pinned gzip settings. A truncated or tampered archive is an
:class:`IntegrityError` and nothing half-read is cached.

The media-type family of what was read is kept (``Family.OCI`` / ``Family.DOCKER``), and so are the exact
manifest and config bytes while the image is unchanged (:class:`~gpuship.oci.image.Origin`): reading an
image and writing it again gives the same digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from ..cache import Cache
from ..errors import GpushipError, IntegrityError
from ..streams import CHUNK, Reader, Writer, as_file
from . import jsonshape
from .docker_archive import DockerTag
from .engine import save_image
from .entry import clean_path
from .image import Image, Index, Origin, Platform
from .layer import Layer, LayerRecord, _Pipeline, compressor_id, decompressing_reader
from .layout import (
    CONTAINERD_NAME,
    INDEX_FILE,
    REF_NAME,
    ImageOrIndex,
    blob_path,
)
from .media import (
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    BlobCompression,
    Family,
    compression_of,
    family_of,
)
from .parts import is_parts_manifest, manifest_path, open_parts
from .spec import Descriptor

#: Manifests and configs are small; anything bigger is not one.
MAX_JSON = 32 << 20
LAYER_TYPES = {OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER, DOCKER_LAYER_GZIP}
MANIFEST_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
INDEX_TYPES = {OCI_INDEX, DOCKER_MANIFEST_LIST}
_HEX64 = re.compile(r"([0-9a-f]{64})(?:\.json)?")

ReadResult = Image | Index


# -- where blobs come from ---------------------------------------------------------------------------------
class _Store:
    """Files of a layout or archive, by relative path. ``name`` is used in messages."""

    name: str

    def has(self, path: str) -> bool:
        raise NotImplementedError

    def open(self, path: str) -> Reader:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def missing(self, path: str) -> IntegrityError:
        return IntegrityError(
            f"{self.name} is incomplete: it has no {path}", "the archive is truncated or damaged; write it again"
        )

    def read_json(self, path: str) -> object:
        data = self.read_bytes(path)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise IntegrityError(f"{self.name}: {path} is not valid JSON", "the archive is damaged") from exc

    def read_bytes(self, path: str, limit: int = MAX_JSON) -> bytes:
        with self._reading(path) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise IntegrityError(
                f"{self.name}: {path} is larger than {limit >> 20} MiB", "this is not a manifest or config"
            )
        return data

    @contextmanager
    def _reading(self, path: str) -> Iterator[Reader]:
        if not self.has(path):
            raise self.missing(path)
        fh = self.open(path)
        try:
            yield fh
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise IntegrityError(f"{self.name} is truncated or damaged ({exc})", "write the archive again") from exc
        finally:
            fh.close()


class _DirStore(_Store):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"OCI layout {root}"

    def _path(self, path: str) -> Path:
        return self.root / clean_path(path)

    def has(self, path: str) -> bool:
        try:
            st = os.lstat(self._path(path))
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode)  # a symlink in a layout could point anywhere: not followed

    def open(self, path: str) -> Reader:
        return open(os.open(self._path(path), os.O_RDONLY | os.O_NOFOLLOW), "rb")


class _TarStore(_Store):
    """A tar file, or ``fileobj`` (the joined parts of a split archive, ``size`` bytes) named ``path``."""

    def __init__(self, path: Path, fileobj: Reader | None = None, size: int | None = None) -> None:
        self.name = f"archive {path}"
        try:
            self._tar = tarfile.open(path, "r:*", fileobj=as_file(fileobj)) if fileobj else tarfile.open(path, "r:*")
            members = self._tar.getmembers()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            if fileobj:
                fileobj.close()
            raise IntegrityError(f"{path} is truncated or not a tar archive ({exc})", "write or copy it again") from exc
        self._members: dict[str, tarfile.TarInfo] = {}
        for m in members:
            if m.isreg():
                try:
                    self._members[clean_path(m.name)] = m
                except IntegrityError:
                    continue  # a member outside the root is never read
        # A tar cut short between members reads as complete: its end-of-archive marker (1024 zero bytes) is missing.
        known = size if fileobj is not None and size is not None else path.stat().st_size
        if _is_plain_file(self._tar) and known < self._tar.offset + 1024:
            self._tar.close()
            if fileobj:
                fileobj.close()
            raise IntegrityError(
                f"{path} is truncated (it ends without the end-of-archive marker)", "write or copy it again"
            )

    def has(self, path: str) -> bool:
        return path in self._members

    def open(self, path: str) -> Reader:
        fh = self._tar.extractfile(self._members[path])
        assert fh is not None
        return fh

    def close(self) -> None:
        self._tar.close()
        fileobj = self._tar.fileobj
        if fileobj is not None and not getattr(fileobj, "closed", True):  # a fileobj given to tarfile stays open
            fileobj.close()


def _is_plain_file(tar: tarfile.TarFile) -> bool:
    """Whether the tar was opened straight on a file (not through a decompressor)."""

    return isinstance(tar.fileobj, io.BufferedReader)


# -- blobs into values ------------------------------------------------------------------------------------
class _Tee:
    """Reads from ``src``, hashing and copying everything read into ``sink`` (a cache BlobWriter)."""

    def __init__(self, src: Reader, sink: Writer) -> None:
        self._src, self._sink = src, sink

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n if n and n > 0 else CHUNK)
        if data:
            self._sink.write(data)
        return data

    def close(self) -> None:
        pass  # the source is the caller's to close

    def __enter__(self) -> _Tee:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_blob_json(store: _Store, desc: Descriptor) -> tuple[bytes, object]:
    digest = desc["digest"]  # a checked descriptor (jsonshape.descriptor)
    path = blob_path(digest)
    data = store.read_bytes(path)
    got = _sha256(data)
    if got != digest:
        raise IntegrityError(
            f"{store.name}: blob {digest} is corrupt (its content hashes to {got})",
            "the archive was damaged or tampered with",
        )
    if "size" in desc and desc["size"] != len(data):
        raise IntegrityError(f"{store.name}: blob {digest} has {len(data)} bytes, its descriptor says {desc['size']}")
    try:
        return data, json.loads(data)
    except ValueError as exc:
        raise IntegrityError(f"{store.name}: blob {digest} is not valid JSON") from exc


def _sha256(data: bytes) -> str:

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _import_layer(
    store: _Store,
    path: str,
    cache: Cache,
    *,
    digest: str | None,
    size: int | None,
    compression: BlobCompression,
    diff_id: str,
) -> Layer:
    """Copy one layer blob into the cache, checking its digest (when known), size and diff_id in one pass."""
    if not store.has(path):
        raise store.missing(path)

    def copy() -> Layer:

        diff = hashlib.sha256()
        usize = 0
        with store._reading(path) as src, cache.blob_writer() as sink:
            tar_stream = decompressing_reader(_Tee(src, sink), compression)
            unreadable: IntegrityError | None = None
            try:
                while chunk := tar_stream.read(CHUNK):
                    diff.update(chunk)
                    usize += len(chunk)
            except IntegrityError as exc:  # said after the digest: a blob that is not the one named says that first
                unreadable = exc
            tee = _Tee(src, sink)
            while tee.read(CHUNK):  # whatever follows the compressed stream is part of the blob too
                pass
            if digest is not None and sink.digest != digest:
                raise IntegrityError(
                    f"{store.name}: layer {digest} is corrupt (its content hashes to {sink.digest})",
                    "the archive was damaged or tampered with; nothing was imported",
                )
            if size is not None and sink.size != size:
                raise IntegrityError(f"{store.name}: layer {digest} has {sink.size} bytes, its descriptor says {size}")
            if unreadable is not None:
                raise IntegrityError(f"{store.name}: layer {path}: {unreadable.message}", unreadable.hint)
            if "sha256:" + diff.hexdigest() != diff_id:
                raise IntegrityError(
                    f"{store.name}: layer {path} does not match the config's diff_id {diff_id}",
                    "the archive was damaged or tampered with; nothing was imported",
                )
        return Layer(sink.digest, diff_id, sink.size, usize, compression, cache=cache)

    def known(rec: LayerRecord) -> Layer | None:
        if digest is None or rec.get("diff_id") != diff_id or not cache.has(digest):
            return None
        _check_blob(store, path, digest, size)  # the cache's copy is known good; this one may not be
        return Layer(digest, diff_id, int(rec["size"]), int(rec["uncompressed_size"]), compression, cache=cache)

    if digest is None:  # known once copied: remembered for a later import that names it
        layer = copy()
        cache.put_ref("layer-info", layer.digest, layer.to_record())
        return layer
    return cache.memo("layer-info", digest, copy, encode=Layer.to_record, decode=known)


def _check_blob(store: _Store, path: str, digest: str, size: int | None) -> None:
    """Hash a blob of ``store`` as it streams by (nothing is kept): it must be ``digest`` (and ``size``)."""

    h = hashlib.sha256()
    n = 0
    with store._reading(path) as src:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    got = "sha256:" + h.hexdigest()
    if got != digest:
        raise IntegrityError(
            f"{store.name}: layer {digest} is corrupt (its content hashes to {got})",
            "the archive was damaged or tampered with; nothing was imported",
        )
    if size is not None and n != size:
        raise IntegrityError(f"{store.name}: layer {digest} has {n} bytes, its descriptor says {size}")


def _compress_legacy_layer(store: _Store, path: str, cache: Cache, diff_id: str) -> Layer:
    """An uncompressed layer tar (legacy docker save): checked against ``diff_id``, stored gzip-compressed."""

    def compress() -> Layer:
        with store._reading(path) as src, cache.blob_writer() as sink:
            pipe = _Pipeline(sink, "gzip")
            while chunk := src.read(CHUNK):
                pipe.write(chunk)
            pipe.finish()
            if pipe.diff_id != diff_id:
                raise IntegrityError(
                    f"{store.name}: layer {path} does not match the config's diff_id {diff_id}",
                    "the archive was damaged or tampered with; nothing was imported",
                )
        layer = Layer(sink.digest, diff_id, sink.size, pipe.usize, "gzip", cache=cache)
        cache.put_ref("layer-info", layer.digest, layer.to_record())  # for an import that names its digest
        return layer

    return cache.memo(
        "legacy-layers",
        f"{diff_id}-{compressor_id('gzip')}",
        compress,
        encode=Layer.to_record,
        decode=lambda rec: Layer.from_record(rec, cache, reused=True) if cache.has(str(rec["digest"])) else None,
    )


def _config(store: _Store, config: object, n_layers: int) -> jsonshape.ConfigParts:
    """The parts of an image config, checked for shape and against the manifest's layer count."""
    parts = jsonshape.config_parts(config, f"{store.name}: the image config")
    diff_ids = parts.diff_ids
    if len(diff_ids) != n_layers:
        raise IntegrityError(f"{store.name}: the config lists {len(diff_ids)} layers, the manifest {n_layers}")
    return parts


def _read_manifest(store: _Store, desc: Descriptor, cache: Cache) -> Image:
    manifest_bytes, manifest = _read_blob_json(store, desc)
    what = f"{store.name}: manifest {desc['digest'][:19]}"
    manifest = jsonshape.obj(manifest, what)
    media_type = jsonshape.text(manifest.get("mediaType"), f"{what} mediaType") or desc.get("mediaType") or OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise GpushipError(
            f"{store.name}: unsupported manifest type {media_type}", "gpuship reads OCI and Docker v2 images"
        )
    config_bytes, config = _read_blob_json(store, jsonshape.descriptor(manifest.get("config"), f"{what} config"))
    layer_descs = jsonshape.descriptors(manifest.get("layers"), f"{what} layers")
    annotations = jsonshape.string_map(manifest.get("annotations"), f"{what} annotations")
    parts = _config(store, config, len(layer_descs))
    layers = []
    for ld, diff_id in zip(layer_descs, parts.diff_ids, strict=True):
        mt = str(ld.get("mediaType", ""))
        if mt not in LAYER_TYPES:
            raise GpushipError(
                f"{store.name}: unsupported layer type {mt}", "foreign or encrypted layers cannot be read"
            )
        digest = str(ld["digest"])
        layers.append(
            _import_layer(
                store,
                blob_path(digest),
                cache,
                digest=digest,
                size=ld.get("size"),
                compression=compression_of(mt),
                diff_id=diff_id,
            )
        )
    img = parts.image(layers, dict(annotations), family_of(media_type))
    return replace(img, origin=Origin(img.fingerprint(), config_bytes, manifest_bytes))


def _read_index(store: _Store, desc: Descriptor, cache: Cache, platform: Platform | None) -> ReadResult:
    index_bytes, index = _read_blob_json(store, desc)
    what = f"{store.name}: index {desc['digest'][:19]}"
    index = jsonshape.obj(index, what)
    jsonshape.text(index.get("mediaType"), f"{what} mediaType")
    annotations = jsonshape.string_map(index.get("annotations"), f"{what} annotations")
    images: list[Image] = []
    skipped = False
    for d in jsonshape.descriptors(index.get("manifests"), f"{what} manifests"):
        p: Mapping[str, object] = d.get("platform") or {}
        if d.get("mediaType") not in MANIFEST_TYPES or p.get("os") in (None, "unknown"):
            skipped = True  # attestations, nested indexes: not images gpuship runs
            continue
        if platform is not None and (p.get("os"), p.get("architecture")) != (platform.os, platform.architecture):
            continue
        images.append(_read_manifest(store, d, cache))
    if platform is not None:
        if not images:
            raise GpushipError(f"{store.name} has no image for {platform}", "pick a platform it has (gpuship image ls)")
        return images[0]
    if not images:
        raise GpushipError(f"{store.name}: the index holds no runnable image")
    family = family_of(str(index.get("mediaType") or desc.get("mediaType") or OCI_INDEX))
    result = Index(tuple(images), dict(annotations), family)
    if not skipped:
        result = replace(result, origin=Origin(result.fingerprint(), b"", index_bytes))
    return result


def _pick_descriptor(store: _Store, manifests: list[Descriptor], name: str | None) -> Descriptor:
    def names(d: Descriptor) -> list[str]:
        a = d.get("annotations") or {}
        return [str(a[k]) for k in (REF_NAME, CONTAINERD_NAME) if k in a]

    if not manifests:
        raise IntegrityError(f"{store.name}: index.json lists no image")
    if name is None:
        if len({d.get("digest") for d in manifests}) == 1:
            return manifests[0]
        have = sorted({n for d in manifests for n in names(d)})
        raise GpushipError(
            f"{store.name} holds {len(manifests)} images", "name one: " + ", ".join(have or ["(untagged)"])
        )
    wanted = {name}
    try:
        t = DockerTag.parse(name)
        wanted |= {str(t), t.full_name}
    except GpushipError:
        pass
    for d in manifests:
        if wanted & set(names(d)):
            return d
    have = sorted({n for d in manifests for n in names(d)})
    raise GpushipError(
        f"{store.name} has no image named {name!r}", "it has: " + (", ".join(have) or "(untagged images only)")
    )


def _read_layout(store: _Store, name: str | None, platform: Platform | None, cache: Cache) -> ReadResult:
    index = jsonshape.obj(store.read_json(INDEX_FILE), f"{store.name}: {INDEX_FILE}")
    desc = _pick_descriptor(
        store, jsonshape.descriptors(index.get("manifests"), f"{store.name}: {INDEX_FILE} manifests"), name
    )
    media_type = desc.get("mediaType")
    if media_type in INDEX_TYPES:
        return _read_index(store, desc, cache, platform)
    if media_type in MANIFEST_TYPES or media_type is None:
        img = _read_manifest(store, desc, cache)
        if platform is not None and (img.platform.os, img.platform.architecture) != (
            platform.os,
            platform.architecture,
        ):
            raise GpushipError(f"{store.name} holds a {img.platform} image, not {platform}")
        return img
    raise GpushipError(f"{store.name}: unsupported descriptor type {media_type}")


class _LegacyEntry(NamedTuple):
    """One image of a legacy ``docker save`` manifest.json (checked for shape)."""

    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]
    config: str


def _read_legacy(store: _Store, name: str | None, cache: Cache) -> Image:
    listed = jsonshape.array(store.read_json("manifest.json"), f"{store.name}: manifest.json", optional=False)
    if not listed:
        raise IntegrityError(f"{store.name}: manifest.json lists no image")
    entries: list[_LegacyEntry] = []
    for i, e in enumerate(listed):
        where = f"{store.name}: manifest.json[{i}]"
        d = jsonshape.obj(e, where)
        entries.append(
            _LegacyEntry(
                jsonshape.texts(d.get("RepoTags"), f"{where} RepoTags"),
                jsonshape.texts(d.get("Layers"), f"{where} Layers"),
                jsonshape.text(d.get("Config"), f"{where} Config", optional=False),
            )
        )
    if name is None:
        if len(entries) > 1:
            tags = sorted(t for e in entries for t in e.repo_tags)
            raise GpushipError(f"{store.name} holds {len(entries)} images", "name one: " + ", ".join(tags))
        entry = entries[0]
    else:
        want = str(DockerTag.parse(name))
        found = [e for e in entries if want in {str(DockerTag.parse(t)) for t in e.repo_tags}]
        if not found:
            raise GpushipError(f"{store.name} has no image named {want!r}")
        entry = found[0]
    config_path = clean_path(entry.config)
    config_bytes = store.read_bytes(config_path)
    m = _HEX64.fullmatch(config_path.rsplit("/", 1)[-1])
    if m and _sha256(config_bytes) != "sha256:" + m.group(1):
        raise IntegrityError(f"{store.name}: config {config_path} is corrupt (its digest does not match its name)")
    try:
        config = json.loads(config_bytes)
    except ValueError as exc:
        raise IntegrityError(f"{store.name}: {config_path} is not valid JSON") from exc
    paths = [clean_path(p) for p in entry.layers]
    parts = _config(store, config, len(paths))
    layers = []
    for path, diff_id in zip(paths, parts.diff_ids, strict=True):
        compression = _sniff(store, path)
        if compression == "none":
            layers.append(_compress_legacy_layer(store, path, cache, diff_id))
        else:
            layers.append(
                _import_layer(store, path, cache, digest=None, size=None, compression=compression, diff_id=diff_id)
            )
    img = parts.image(layers, {}, Family.DOCKER)
    return replace(img, origin=Origin(img.fingerprint(), config_bytes, None))


def _sniff(store: _Store, path: str) -> BlobCompression:
    with store._reading(path) as fh:
        head = fh.read(4)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


# -- the entry point ------------------------------------------------------------------------------------------
def parse_source(ref: str) -> tuple[str, Path, str | None]:
    """``(kind, path, name)`` for an ``oci:``/``oci-archive:``/``docker-archive:`` ref or a bare path."""
    scheme, sep, rest = ref.partition(":")
    if sep and scheme in ("oci", "oci-archive", "docker-archive"):
        path, sep2, name = rest.partition(":")
        if not path:
            raise GpushipError(f"{ref!r} names no path", f"use {scheme}:PATH")
        return scheme, Path(path), (name if sep2 and name else None)
    return "path", Path(ref), None


def _open_store(kind: str, path: Path) -> _Store:
    if not path.exists():
        if manifest_path(path).is_file():
            raise GpushipError(f"{path} was split into parts", f"read it as {manifest_path(path)}")
        raise GpushipError(f"no such file or directory: {path}", "check the path")
    if path.is_dir():
        if kind in ("oci-archive", "docker-archive"):
            raise GpushipError(f"{path} is a directory, not an archive", f"use oci:{path}")
        return _DirStore(path)
    if kind == "oci":
        raise GpushipError(f"{path} is a file, not an OCI layout directory", f"use oci-archive:{path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise GpushipError(f"cannot read {path}: {exc.strerror}", "check its permissions") from exc
    if is_parts_manifest(path):  # an archive split by `gpuship image convert --split`: every part checked first
        parts, joined = open_parts(path)
        return _TarStore(path, joined, parts.size)
    return _TarStore(path)


def _from_engine(rest: str, engine: str, platform: Platform | None, cache: Cache) -> ReadResult:
    """``docker:NAME:TAG`` / ``podman:NAME:TAG``: the engine's image, saved to a temporary archive and read as a
    docker-archive (layers land in the cache; the archive is removed)."""
    with cache.temp_dir(f"{engine}-save-") as tmp:
        archive = tmp / "image.tar"
        save_image(rest, archive, engine)
        return read_local(f"docker-archive:{archive}", platform, cache)


#: The engines an image can be read from, by scheme (``docker:NAME:TAG``).
ENGINE_SCHEMES = ("docker", "podman")


def read_local(ref: str, platform: Platform | None, cache: Cache) -> ReadResult:
    """Read the image or index at ``ref`` (see the module doc); ``platform`` picks one image of an index."""
    scheme, sep, rest = ref.partition(":")
    if sep and scheme in ENGINE_SCHEMES:
        return _from_engine(rest, scheme, platform, cache)
    p = platform
    kind, path, name = parse_source(ref)
    store = _open_store(kind, path)
    try:
        if store.has(INDEX_FILE):  # OCI layout (also the OCI part of a combined docker-archive): exact digests
            return _read_layout(store, name, p, cache)
        if store.has("manifest.json"):
            img = _read_legacy(store, name, cache)
            if p is not None and (img.platform.os, img.platform.architecture) != (p.os, p.architecture):
                raise GpushipError(f"{store.name} holds a {img.platform} image, not {p}")
            return img
        raise GpushipError(
            f"{path} is not an image: it has neither index.json nor manifest.json",
            "give an OCI layout, an oci-archive or a docker-archive",
        )
    finally:
        store.close()


def read_platforms(obj: ImageOrIndex) -> list[Platform]:
    return [i.platform for i in (obj.images if isinstance(obj, Index) else (obj,))]


__all__ = ["parse_source", "read_local", "read_platforms"]
