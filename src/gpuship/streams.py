"""Byte streams: the one reader and writer shape every blob, layer, tar member and archive goes through.

A file opened ``"rb"``, a tar member, a decompressing reader and a digest-checking reader all fit
:class:`Reader` (``io.Reader`` / ``io.ReadCloser`` in Go terms); an open file, a hashing blob writer and a
compressor fit :class:`Writer`. ``CHUNK`` is the one read size: streams pass through in bounded memory.
"""

from __future__ import annotations

import hashlib
import os
from types import TracebackType
from typing import IO, BinaryIO, Protocol, Self, cast

#: How much is read at a time wherever bytes stream through.
CHUNK = 1 << 20


class Reader(Protocol):
    """A closable byte stream read front to back."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, typ: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None, /
    ) -> None: ...


class Writer(Protocol):
    """Something bytes are written to."""

    def write(self, data: bytes, /) -> int: ...


def open_file(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for reading: an entry's opener is ``partial(open_file, path)``."""
    return open(path, "rb")


def sha256_stream(fh: Reader) -> bytes:
    """The SHA-256 of what is left of ``fh``, read ``CHUNK`` at a time (a file may be a GB library)."""
    h = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        h.update(chunk)
    return h.digest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The ``sha256:…`` digest of a file's bytes, read ``CHUNK`` at a time."""
    with open(path, "rb") as fh:
        return "sha256:" + sha256_stream(fh).hex()


def as_file(stream: Reader | Writer) -> IO[bytes]:
    """``stream`` where a library's type stubs ask for a whole file object although the call only reads (or only
    writes) it front to back: tarfile's stream modes (``r|*``, ``w|``), lzma, gzip, zstandard, pyelftools on a
    seekable file. The one place a stream is re-typed."""
    return cast(IO[bytes], stream)
