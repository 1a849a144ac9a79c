"""``Layer``: an immutable, content-addressed filesystem change set, and the functions that make one.

A layer never holds its bytes in memory: the compressed blob lives in the :class:`~gpuship.cache.Cache`
and is opened on demand. Building one streams entries through the tar writer, hashes the tar
(``diff_id``), compresses it, hashes that (``digest``) and writes it to the cache, all in one pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NotRequired, TypedDict, TypeVar, cast

import zstandard

from ..cache import BlobWriter, Cache
from ..errors import IntegrityError
from ..streams import CHUNK, Reader, as_file, open_file
from .compress import compressor, compressor_id, recompress_key
from .entry import Entry, clean_path
from .media import BlobCompression, Compression
from .tarball import iter_tar, member_entry, source_date_epoch, write_tar

if TYPE_CHECKING:  # the buffer types of io's stubs
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "Compression",
    "KnownLayer",
    "Layer",
    "build_layer",
    "cached_layer",
    "compressor_id",
    "known_layer",
    "layer_key",
    "recall_layer",
    "recompress",
    "rewrite_layer",
]

#: The layer format: bump it when the bytes a layer's entries become change (the tar writer's rules, the
#: entries a source emits), so layers remembered under an input key are built again. Part of every layer key.
LAYER_FORMAT = 2


def written_as(compression: BlobCompression) -> BlobCompression:
    """How a rewritten layer is stored: as it was (a plain layer stays plain; the outputs compress it)."""
    return compression


class LayerRecord(TypedDict):
    """What the cache records of a layer (``layers``, ``layer-info``): :meth:`Layer.to_record`."""

    digest: str
    diff_id: str
    size: int
    uncompressed_size: int
    compression: BlobCompression
    comment: str
    built: NotRequired[bool]
    #: what the layer's maker found out (:func:`cached_layer_meta`), a JSON value
    meta: NotRequired[object]


@dataclass(frozen=True)
class Layer:
    """A layer blob in the cache. ``digest``/``size`` are of the compressed blob; ``diff_id`` of the tar."""

    digest: str
    diff_id: str
    size: int
    uncompressed_size: int
    compression: BlobCompression
    comment: str = ""
    reused: bool = field(default=False, compare=False)
    cache: Cache = field(default_factory=Cache, compare=False, repr=False)
    #: made by gpuship (:func:`build_layer`): an output may compress it if it is plain. A layer read from elsewhere
    #: (a registry base, an archive) keeps its bytes and digest, compressed or not.
    built: bool = field(default=False, compare=False)
    #: how the blob comes into the cache when it is not here: a layer known from the shared build cache
    #: (:mod:`gpuship.buildcache`) is pulled the first time its bytes are read, not before
    fill: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def blob_path(self) -> Path:
        """Where the blob lies in the cache (brought there first, for a layer known from elsewhere)."""
        if self.fill is not None and not self.cache.has(self.digest):
            self.fill()
        return self.cache.blob_path(self.digest)

    def open(self) -> BinaryIO:
        """The compressed blob."""
        self.blob_path()
        return self.cache.open(self.digest)

    def open_tar(self) -> BinaryIO:
        """The uncompressed tar stream."""
        return decompressing_reader(self.open(), self.compression)

    def entries(self) -> Iterator[tuple[Entry, Reader | None]]:
        """Each entry with a reader of its bytes (valid until the next one). A plain layer's readers can seek:
        they read the cached tar in place, so a reader of ELF headers skips the rest of a 1 GB library."""
        if self.compression == "none":
            yield from _plain_members(self.blob_path(), self.digest)
            return
        with self.open_tar() as fh:
            yield from iter_tar(fh)

    def to_record(self) -> LayerRecord:
        rec: LayerRecord = {
            "digest": self.digest,
            "diff_id": self.diff_id,
            "size": self.size,
            "uncompressed_size": self.uncompressed_size,
            "compression": self.compression,
            "comment": self.comment,
        }
        if self.built:
            rec["built"] = True
        return rec

    @classmethod
    def from_record(
        cls, rec: LayerRecord, cache: Cache, reused: bool = False, fill: Callable[[], None] | None = None
    ) -> Layer:
        return cls(
            str(rec["digest"]),
            str(rec["diff_id"]),
            int(rec["size"]),
            int(rec["uncompressed_size"]),
            rec["compression"],
            str(rec.get("comment", "")),
            reused,
            cache,
            bool(rec.get("built", False)),
            fill,
        )


class _Pipeline(io.RawIOBase):
    """tar bytes in -> diff_id hash -> compressor -> digest hash -> cache blob.

    Uncompressed (``"none"``), the blob is the tar: its digest is the diff_id, hashed once."""

    def __init__(self, sink: BlobWriter, compression: BlobCompression) -> None:
        self._sink = sink
        self._diff = None if compression == "none" else hashlib.sha256()
        self.usize = 0
        self._c = compressor(compression, sink)

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer) -> int:
        data = bytes(b)
        if self._diff is not None:
            self._diff.update(data)
        self.usize += len(data)
        self._c.write(data)
        return len(data)

    def finish(self) -> None:
        self._c.close()

    @property
    def diff_id(self) -> str:
        """The tar's digest (call after :meth:`finish` and the blob writer's end)."""
        return self._sink.digest if self._diff is None else "sha256:" + self._diff.hexdigest()


def build_layer(
    entries: Iterable[Entry],
    cache: Cache | None = None,
    *,
    compression: BlobCompression = "none",
    comment: str = "",
    mtime: int | None = None,
) -> Layer:
    """Make a layer from entries: reproducible tar, stored in the cache (as it is, or compressed)."""
    cache = cache or Cache()
    with cache.blob_writer() as sink:
        pipe = _Pipeline(sink, compression)
        write_tar(entries, pipe, mtime=mtime)
        pipe.finish()
    return Layer(sink.digest, pipe.diff_id, sink.size, pipe.usize, compression, comment, False, cache, True)


#: What a layer's maker found out while making it (a JSON value), remembered with the layer: an install's
#: distributions, a pruning's report. A cached layer comes back with it, without being made again.
Meta = TypeVar("Meta")


def cached_layer(
    cache: Cache,
    key: str,
    make_entries: Callable[[], Iterable[Entry]],
    *,
    compression: BlobCompression = "none",
    comment: str = "",
) -> Layer:
    """A layer built once per ``key`` (a hash of everything that goes into it) and reused after.

    The key is combined with the layer format, the compressor and the epoch (:func:`layer_key`), so a change of
    any rebuilds.
    """
    return _remembered(
        cache,
        layer_key(key, compression),
        lambda: (build_layer(make_entries(), cache, compression=compression, comment=comment), None),
    )[0]


def cached_layer_meta(
    cache: Cache,
    key: str,
    make: Callable[[], tuple[Iterable[Entry], Meta]],
    *,
    compression: BlobCompression = "none",
    comment: str = "",
) -> tuple[Layer, Meta]:
    """:func:`cached_layer` for a maker that also reports something: ``make()`` gives the entries and a JSON
    value, and ``(layer, value)`` comes back, from the cache when the layer is there."""

    def build() -> tuple[Layer, Meta]:
        entries, meta = make()
        return build_layer(entries, cache, compression=compression, comment=comment), meta

    return _remembered(cache, layer_key(key, compression), build, with_meta=True)


def layer_key(key: str, compression: BlobCompression = "none") -> str:
    """The full cache key of a layer whose source calls its inputs ``key``.

    ``key`` names every input the source reads (the locked files by hash, the prune settings, the app files by
    hash, ...); to it are added what turns those inputs into bytes: :data:`LAYER_FORMAT`, the compressor
    (:func:`compressor_id`) and the tar timestamp (``SOURCE_DATE_EPOCH``). Equal keys, equal bytes: this is what
    a rebuild, and a shared build cache, may trust.
    """
    parts = [key, LAYER_FORMAT, compressor_id(compression), source_date_epoch()]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@dataclass(frozen=True)
class KnownLayer:
    """What a layer is, known from the records of this machine's cache alone: its tar's ``diff_id``, and the
    ``digest`` and ``size`` of its blob as ``compression`` stores it."""

    diff_id: str
    digest: str
    size: int
    compression: BlobCompression


def known_layer(cache: Cache, key: str, compression: BlobCompression = "gzip") -> KnownLayer | None:
    """The layer a source's input ``key`` gives (:func:`cached_layer`), as ``compression`` would store it, from
    the records alone: nothing is built, read, unpacked or compressed, and its blobs need not be here. None when
    this cache never made it (or never compressed it so). This is what a warm build, or a registry check before
    building, can decide on; it is a hint about bytes, never the bytes."""
    rec = layer_record(cache.get_ref("layers", layer_key(key)))
    if rec is None:
        return None
    if rec.get("compression") != compression:
        rec = layer_record(cache.get_ref("layers", recompress_key(str(rec["diff_id"]), compression)))
        if rec is None:
            return None
    return KnownLayer(str(rec["diff_id"]), str(rec["digest"]), int(rec["size"]), compression)


def recall_layer(cache: Cache, full_key: str) -> Layer | None:
    """The layer recorded under ``full_key`` (:func:`layer_key`) if its blob is here or the shared build cache can
    bring it; None otherwise (nothing is built)."""
    rec = layer_record(cache.get_ref("layers", full_key))
    return _known(cache, full_key, rec) if rec is not None else None


def layer_record(value: object) -> LayerRecord | None:
    """``value`` (a record read back) as a layer record, or None when it is not one."""
    if not isinstance(value, dict):
        return None
    for key, kind in _RECORD_KEYS:
        if not isinstance(value.get(key), kind):
            return None
    return cast(LayerRecord, value)  # the keys it names were checked above


_RECORD_KEYS = (("digest", str), ("diff_id", str), ("size", int), ("uncompressed_size", int), ("compression", str))


def _known(cache: Cache, full_key: str, rec: LayerRecord) -> Layer | None:
    """The layer of a record when its blob is here, or the shared build cache (:meth:`Cache.overlaid`) can bring
    it: pulled now (a local output needs it), or when its bytes are first read."""
    overlay = cache.overlay
    if cache.has(str(rec["digest"])) and (overlay is None or not overlay.vouches(full_key)):
        return Layer.from_record(rec, cache, reused=True)
    fill = overlay.filler(full_key, rec) if overlay is not None else None
    if fill is None:
        return None
    if cache.has(str(rec["digest"])):  # pulled already: this machine knows it from now on
        cache.put_ref("layers", full_key, rec)
    return Layer.from_record(rec, cache, reused=True, fill=fill)


def _remembered(
    cache: Cache, full_key: str, make: Callable[[], tuple[Layer, Meta]], *, with_meta: bool = False
) -> tuple[Layer, Meta]:
    """The layer (and meta) recorded under ``full_key`` while its blob is in the cache, or the shared build cache
    can bring it; else ``make()``'s, recorded. One process makes it at a time."""

    def encode(made: tuple[Layer, Meta]) -> LayerRecord:
        rec = made[0].to_record()
        if with_meta:
            rec["meta"] = made[1]
        return rec

    def decode(rec: LayerRecord) -> tuple[Layer, Meta] | None:
        if with_meta and "meta" not in rec:
            return None
        layer = _known(cache, full_key, rec)
        # the meta ``encode`` wrote with this layer (None for a layer without one)
        return (layer, cast(Meta, rec.get("meta"))) if layer is not None else None

    return cache.memo("layers", full_key, make, encode=encode, decode=decode, lock=True)


def recompress(layer: Layer, compression: BlobCompression, cache: Cache | None = None) -> Layer:
    """The same tar stored with ``compression`` (its diff_id is unchanged, its digest is not).

    Done once per (diff_id, compressor): the result is remembered in the cache.
    """
    if layer.compression == compression:
        return layer
    cache = cache or layer.cache
    key = recompress_key(layer.diff_id, compression)

    def make() -> Layer:
        with layer.open_tar() as src, cache.blob_writer() as sink:
            pipe = _Pipeline(sink, compression)
            while chunk := src.read(CHUNK):
                pipe.write(chunk)
            pipe.finish()
            if pipe.diff_id != layer.diff_id:
                raise IntegrityError(
                    f"layer {layer.digest} does not decompress to its diff_id {layer.diff_id}",
                    "the cached blob is damaged; run gpuship cache prune and rebuild",
                )
        return Layer(sink.digest, layer.diff_id, sink.size, pipe.usize, compression, layer.comment, False, cache)

    return _remembered(cache, key, lambda: (make(), None))[0]


def spooled_entries(layer: Layer, cache: Cache | None = None) -> Iterator[Entry]:
    """The entries of ``layer`` as re-openable :class:`Entry` values, for functions that rewrite a layer.

    Each file's bytes are copied once into the cache (content-addressed, so identical files share a blob) and
    the entry opens them from there; memory stays bounded whatever the layer size.
    """
    cache = cache or layer.cache
    if layer.compression == "none":
        yield from _entries_in_place(layer)
        return
    for entry, reader in layer.entries():
        if entry.kind == "file" and reader is not None:
            digest, size = cache.put_stream(reader)
            yield Entry.stream(entry.path, size, partial(cache.open, digest), entry.mode, entry.uid, entry.gid)
        else:
            yield entry


def _plain_members(path: Path, digest: str) -> Iterator[tuple[Entry, Reader | None]]:
    try:
        with tarfile.open(path, mode="r:") as tar:
            for m in tar:
                entry = member_entry(tar, m)
                if entry is not None:
                    yield entry, (tar.extractfile(m) if entry.kind == "file" else None)
    except (tarfile.TarError, EOFError) as exc:
        raise IntegrityError(f"layer {digest} is not a readable tar: {exc}", "rebuild it") from exc


def _entries_in_place(layer: Layer) -> Iterator[Entry]:
    """A plain layer's entries, each file opened where it lies in the cached tar (nothing is copied)."""
    path = layer.blob_path()
    try:
        with tarfile.open(path, mode="r:") as tar:
            for m in tar:
                entry = member_entry(tar, m)
                if entry is None:
                    continue
                if entry.kind == "file":
                    opener = partial(_Slice, path, m.offset_data, m.size)
                    entry = Entry.stream(entry.path, m.size, opener, entry.mode, entry.uid, entry.gid)
                yield entry
    except (tarfile.TarError, EOFError) as exc:
        raise IntegrityError(f"layer {layer.digest} is not a readable tar: {exc}", "rebuild it") from exc


class _Slice(io.RawIOBase):
    """``size`` bytes of a file from ``offset``: one member of a plain tar, read in place (and seekable, so a pruner
    or an ELF reader can jump to the headers it needs)."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        super().__init__()
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._fh.seek(offset)
        self._start = offset
        self._size = size
        self._pos = 0

    def read(self, n: int | None = -1, /) -> bytes:
        left = self._size - self._pos
        want = left if n is None or n < 0 else min(n, left)
        data = self._fh.read(want) if want > 0 else b""
        self._pos += len(data)
        return data

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + pos < 0:
            raise ValueError(f"negative seek position {base + pos}")
        self._pos = base + pos
        self._fh.seek(self._start + min(self._pos, self._size))
        return self._pos

    def close(self) -> None:
        self._fh.close()
        super().close()


def rewrite_layer(
    layer: Layer,
    transform: Callable[[Iterator[Entry]], Iterable[Entry] | None],
    key: str,
    cache: Cache | None = None,
    *,
    comment: str | None = None,
) -> Layer:
    """A new layer made by ``transform`` over ``layer``'s entries, cached under ``key`` + the input digest.

    ``transform`` returns ``None`` when it changed nothing: ``layer`` itself is returned (and that answer is
    remembered), so an unchanged layer is never compressed again.
    """
    return rewrite_layer_meta(layer, lambda entries: (transform(entries), None), key, cache, comment=comment)[0]


def rewrite_layer_meta(
    layer: Layer,
    transform: Callable[[Iterator[Entry]], tuple[Iterable[Entry] | None, Meta]],
    key: str,
    cache: Cache | None = None,
    *,
    comment: str | None = None,
) -> tuple[Layer, Meta]:
    """:func:`rewrite_layer` for a transform that also reports something (a JSON value, remembered with the
    layer as in :func:`cached_layer_meta`): ``(layer, value)`` comes back, from the cache when it is there."""
    cache = cache or layer.cache

    def make() -> tuple[Layer, Meta]:
        entries, meta = transform(spooled_entries(layer, cache))
        if entries is None:
            return layer, meta
        new = build_layer(
            entries,
            cache,
            compression=written_as(layer.compression),
            comment=layer.comment if comment is None else comment,
        )
        return new, meta

    full_key = layer_key(f"rewrite:{key}:{layer.digest}", layer.compression)
    return _remembered(cache, full_key, make, with_meta=True)


def entries_from_dir(
    root: Path | str, prefix: str = "", *, uid: int = 0, gid: int = 0, include: Callable[[str], bool] | None = None
) -> Iterator[Entry]:
    """Walk a directory (without following symlinks) into entries placed under ``prefix``.

    ``include`` receives the path relative to ``root`` and may drop it. Device files, sockets and fifos
    are refused: an image never carries them.
    """
    root = Path(root)
    seen_inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in sorted(dirnames) + sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if include is not None and not include(rel):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            dest = f"{prefix.rstrip('/')}/{rel}" if prefix else rel
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                yield Entry.dir(dest, mode, uid, gid)
            elif stat.S_ISLNK(st.st_mode):
                yield Entry.symlink(dest, os.readlink(full), uid, gid)
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1 and (st.st_dev, st.st_ino) in seen_inodes:
                    yield Entry(dest, "hardlink", mode, uid, gid, target=seen_inodes[(st.st_dev, st.st_ino)])
                    continue
                if st.st_nlink > 1:
                    seen_inodes[(st.st_dev, st.st_ino)] = clean_path(dest)
                p = Path(full)
                yield Entry(dest, "file", mode, uid, gid, st.st_size, open=partial(open_file, p))
            else:
                raise IntegrityError(f"{full} is a device, socket or fifo", "remove it or exclude it from the image")


def layer_from_dir(
    root: Path | str,
    cache: Cache | None = None,
    *,
    prefix: str = "",
    compression: BlobCompression = "none",
    comment: str = "",
    mtime: int | None = None,
) -> Layer:
    """A layer holding the tree at ``root`` (placed under ``prefix`` in the image); the rest as :func:`build_layer`."""
    return build_layer(entries_from_dir(root, prefix), cache, compression=compression, comment=comment, mtime=mtime)


class _Decompressing(io.RawIOBase):
    """Decompresses a layer blob with bounded memory, whatever the compression ratio.

    gzip: several concatenated members are read as one stream (as ``gzip -d`` does), trailing zero padding is
    ignored, and a stream that ends inside a member is an :class:`IntegrityError`. zstd: frames are read
    across; zstd does not mark a truncated stream, so callers rely on the blob's digest for that.
    """

    def __init__(self, raw: Reader, compression: BlobCompression) -> None:
        self._raw = raw
        self._compression = compression
        self._pending = b""
        self._in_member = False
        self._z = zlib.decompressobj(31)
        self._zr = None
        if compression == "zstd":
            self._zr = zstandard.ZstdDecompressor().stream_reader(as_file(raw), read_across_frames=True, closefd=False)

    def readable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer) -> int:
        view = memoryview(b).cast("B")
        want = len(view)
        if self._zr is not None:
            try:
                data = self._zr.read(want)
            except zstandard.ZstdError as exc:
                raise IntegrityError(
                    f"corrupt compressed layer: {exc}", "the blob is damaged; rebuild or re-pull"
                ) from exc
        elif self._compression == "gzip":
            data = self._gzip_read(want)
        else:
            data = self._raw.read(want)
        n = len(data)
        view[:n] = data
        return n

    def _gzip_read(self, want: int) -> bytes:
        while True:
            if self._z.eof:
                self._pending = self._z.unused_data + self._pending
                self._z = zlib.decompressobj(31)
                self._in_member = False
            if not self._pending:
                chunk = self._raw.read(CHUNK)
                if not chunk:
                    if self._in_member:
                        raise IntegrityError("truncated compressed layer", "the blob is damaged; rebuild or re-pull")
                    return b""
                self._pending = chunk
            if not self._in_member:
                if not self._pending.strip(b"\0"):  # zero padding after the last member
                    self._pending = b""
                    continue
                self._in_member = True
            try:
                out = self._z.decompress(self._pending, want)
            except zlib.error as exc:
                raise IntegrityError(
                    f"corrupt compressed layer: {exc}", "the blob is damaged; rebuild or re-pull"
                ) from exc
            self._pending = self._z.unconsumed_tail
            if out:
                return out

    def close(self) -> None:
        if self._zr is not None:
            self._zr.close()  # type: ignore[no-untyped-call]  # zstandard's stub leaves close() unannotated
        self._raw.close()
        super().close()


def decompressing_reader(raw: Reader, compression: BlobCompression) -> BinaryIO:
    return io.BufferedReader(_Decompressing(raw, compression), CHUNK)


def unpack_blob(cache: Cache, digest: str, compression: BlobCompression, keep: str | None = None) -> str:
    """The diff ID of the layer blob ``digest`` (decompressed and hashed here). With ``keep`` — the diff ID it should
    have — its tar is kept in the cache too, under that digest, and only if it matches."""
    h = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(decompressing_reader(cache.open(digest), compression))
        out = (
            stack.enter_context(cache.blob_writer(expected=keep)) if keep is not None and not cache.has(keep) else None
        )
        while chunk := src.read(CHUNK):
            h.update(chunk)
            if out is not None:
                out.write(chunk)
        got = "sha256:" + h.hexdigest()
        if out is not None and got != keep:
            raise IntegrityError(f"layer {digest[:19]} unpacks to {got[:19]}, not {keep[:19] if keep else ''}")
    return got
