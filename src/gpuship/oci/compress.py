"""Layer compression: where bytes travel, and only there.

Layers are built and kept as plain tars (their digest is their diff_id); a container engine gets them as they
are. An output whose bytes travel (an OCI layout, an archive, a registry) gets them compressed by
:func:`for_transport`, once per ``(diff_id, codec)`` on a machine: the result is remembered in the cache.

The codecs are pinned and deterministic — same tar in, same bytes out, whatever the number of threads:

* ``gzip``: zlib-ng at :data:`GZIP_LEVEL`, as pigz does it: the tar is cut into :data:`BLOCK`-byte blocks, each
  compressed on its own (primed with the previous block's last 32 KiB, so the ratio barely suffers) and ended
  with a sync flush; the blocks are joined into one gzip member (empty final block, CRC-32, size). The block
  boundaries depend only on the input, so threads change the speed and never the bytes. The gzip header has no
  name and mtime 0.
* ``zstd``: zstandard at :data:`ZSTD_LEVEL` in its multi-threaded mode, whose output is the same for any number
  of workers (one or more).

Level 5 was chosen by measurement (docs/benchmarks.md, "Compression"): on real layers it is 3-4% larger than
zlib's level 6 (what gpuship used before) at about three times its speed per core; level 4 was 5% larger.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import zstandard
from zlib_ng import zlib_ng

from ..streams import Writer
from .media import BlobCompression, Compression

if TYPE_CHECKING:  # the values import this module
    from .image import Image
    from .layer import Layer
    from .layout import ImageOrIndex

#: The pinned settings. Each is part of :func:`compressor_id`, and so of the cache key of every compressed blob.
GZIP_LEVEL = 5
ZSTD_LEVEL = 3
#: Input block of the parallel gzip: the unit of work of one thread (and fixed, so the bytes never depend on
#: how many threads there are).
BLOCK = 1 << 20
_WINDOW = 32 << 10
#: Layers smaller than this are compressed on the calling thread.
_PARALLEL_FROM = 4 * BLOCK
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, unknown OS
_EMPTY_FINAL_BLOCK = b"\x03\x00"


def compressor_id(compression: BlobCompression) -> str:
    """What produced the bytes: recorded in cache keys, so a change of codec, level or library recompresses."""
    if compression == "gzip":
        return f"zlib-ng-{zlib_ng.ZLIBNG_VERSION}-level{GZIP_LEVEL}-block{BLOCK}"
    if compression == "zstd":
        return f"zstd-{zstandard.ZSTD_VERSION}-level{ZSTD_LEVEL}-mt"
    return "none"


def compress_threads() -> int:
    """Threads for one layer: ``GPUSHIP_COMPRESS_THREADS``, else the CPUs this process may use (at most 8)."""
    env = os.environ.get("GPUSHIP_COMPRESS_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not Linux
        return max(1, min(8, os.cpu_count() or 1))


class Compressor(Protocol):
    """Takes the tar in order through :meth:`write`; :meth:`close` flushes the rest into the sink."""

    def write(self, data: bytes) -> int: ...

    def close(self) -> None: ...


def _deflate_block(block: bytes, dictionary: bytes) -> bytes:
    if dictionary:
        c = zlib_ng.compressobj(GZIP_LEVEL, zlib_ng.DEFLATED, -15, 9, zlib_ng.Z_DEFAULT_STRATEGY, dictionary)
    else:
        c = zlib_ng.compressobj(GZIP_LEVEL, zlib_ng.DEFLATED, -15, 9, zlib_ng.Z_DEFAULT_STRATEGY)
    return c.compress(block) + c.flush(zlib_ng.Z_SYNC_FLUSH)


class BlockGzip:
    """Deterministic block-parallel gzip into ``sink`` (see the module doc). ``threads`` only sets the speed."""

    def __init__(self, sink: Writer, threads: int = 1) -> None:
        self._sink = sink
        self._threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[bytes]] = deque()
        self._buf = bytearray()
        self._prev_tail = b""
        self._crc = 0
        self._size = 0
        sink.write(_GZIP_HEADER)

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) >= BLOCK:
            block = bytes(self._buf[:BLOCK])
            del self._buf[:BLOCK]
            self._submit(block)
        return len(data)

    def _submit(self, block: bytes) -> None:
        self._crc = zlib_ng.crc32(block, self._crc)
        self._size += len(block)
        dictionary, self._prev_tail = self._prev_tail, block[-_WINDOW:]
        if self._threads == 1 or (self._pool is None and self._size < _PARALLEL_FROM):
            self._drain(0)
            self._sink.write(_deflate_block(block, dictionary))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="gpuship-gzip")
        self._pending.append(self._pool.submit(_deflate_block, block, dictionary))
        self._drain(2 * self._threads)  # bounded memory: at most this many blocks in flight

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            self._sink.write(self._pending.popleft().result())

    def close(self) -> None:
        try:
            if self._buf:
                self._submit(bytes(self._buf))
                self._buf.clear()
            self._drain(0)
            self._sink.write(_EMPTY_FINAL_BLOCK + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            if self._pool is not None:
                for f in self._pending:
                    f.cancel()
                self._pool.shutdown()


class _Zstd:
    def __init__(self, sink: Writer, threads: int) -> None:
        self._sink = sink
        # threads >= 1: zstd's multi-threaded mode, whose bytes are the same for any worker count
        self._z = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, write_content_size=False, threads=max(1, threads)
        ).compressobj()

    def write(self, data: bytes) -> int:
        out = self._z.compress(data)
        if out:
            self._sink.write(out)
        return len(data)

    def close(self) -> None:
        self._sink.write(self._z.flush())


class _Plain:
    def __init__(self, sink: Writer) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        return len(data)

    def close(self) -> None:
        pass


def compressor(compression: BlobCompression, sink: Writer, threads: int | None = None) -> Compressor:
    """A compressor writing ``compression``'s bytes into ``sink``."""
    n = compress_threads() if threads is None else threads
    if compression == "gzip":
        return BlockGzip(sink, n)
    if compression == "zstd":
        return _Zstd(sink, n)
    return _Plain(sink)


def recompress_key(diff_id: str, compression: BlobCompression) -> str:
    """The cache key of ``diff_id``'s tar stored with ``compression``."""
    return hashlib.sha256(json.dumps(["recompress", diff_id, compressor_id(compression)]).encode()).hexdigest()


def for_transport(obj: ImageOrIndex, compression: Compression) -> ImageOrIndex:
    """``obj`` with every plain layer gpuship made compressed with ``compression`` (each once per machine:
    remembered in the cache by diff_id and codec). Layers already compressed, and layers read from elsewhere (a
    registry base's, an archive's), keep their bytes and digests."""
    from .image import Index  # oci.image imports this module (compression of images)
    from .layer import recompress  # oci.layer imports this module too

    def image(img: Image) -> Image:
        if not any(_compressible(layer) for layer in img.layers):
            return img
        layers = tuple(recompress(layer, compression) if _compressible(layer) else layer for layer in img.layers)
        return replace(img, layers=layers)

    if isinstance(obj, Index):
        return replace(obj, images=tuple(image(i) for i in obj.images))
    return image(obj)


def _compressible(layer: Layer) -> bool:
    """A plain layer gpuship made; one read from elsewhere keeps its bytes (and so the digests that name it)."""
    return layer.compression == "none" and layer.built
