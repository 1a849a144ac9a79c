"""The reproducible tar writer (and its safe reader).

Same entries in, same bytes out, whatever the clock, umask or file mtimes:
entries sorted by path, every mtime set to the epoch (``SOURCE_DATE_EPOCH`` or 0), owners numeric with empty
names, modes kept, PAX format, no device files. Identical files (same bytes, mode and owner) are stored once
and hard-linked. Missing parent directories are emitted with mode 0755. Content is streamed in chunks, so
memory stays bounded whatever the layer size.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import posixpath
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from ..errors import ConfigError, IntegrityError
from ..streams import CHUNK, Reader, Writer, as_file, sha256_stream
from .entry import Entry, clean_path

#: 9999-12-31T23:59:59Z: the last time an image config's ``created`` (RFC 3339) can say.
MAX_EPOCH = 253402300799


def source_date_epoch() -> int:
    """The timestamp every entry gets: ``SOURCE_DATE_EPOCH`` if set, else 0."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "0").strip() or "0"
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or int(raw) > MAX_EPOCH:
        raise ConfigError(
            f"SOURCE_DATE_EPOCH={raw[:40]!r} is not a time gpuship can write",
            f"give whole seconds since 1970, 0 to {MAX_EPOCH} (the end of year 9999), or unset it",
        )
    return int(raw)


def created_timestamp(epoch: int | None = None) -> str:
    """``epoch`` (default: :func:`source_date_epoch`) as ISO 8601 UTC (an image's ``created``)."""

    when = source_date_epoch() if epoch is None else epoch
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content_hash(entry: Entry) -> str:
    if entry.open is None:
        return hashlib.sha256().hexdigest()
    with entry.open() as fh:
        return sha256_stream(fh).hex()


def normalize(entries: Iterable[Entry]) -> list[Entry]:
    """Sort, merge and check entries: one per path, parents present, no conflicting duplicates."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        if e.path == "":
            continue
        prev = by_path.get(e.path)
        if prev is None:
            by_path[e.path] = e
        elif prev.kind == "dir" and e.kind == "dir":
            continue  # the same directory from two sources: the first one's metadata wins
        elif prev.kind == e.kind == "symlink" and prev.target == e.target:
            continue
        else:
            raise IntegrityError(
                f"two different entries for /{e.path} in one layer ({prev.kind} and {e.kind})",
                "two sources put the same path in one layer; drop one of them",
            )
    for path in list(by_path):
        parent = posixpath.dirname(path)
        while parent and parent not in by_path:
            by_path[parent] = Entry.dir(parent)
            parent = posixpath.dirname(parent)
        if parent and by_path[parent].kind != "dir":
            raise IntegrityError(f"/{path} is inside /{parent}, which this layer has as a {by_path[parent].kind}")
    return [by_path[p] for p in sorted(by_path, key=lambda p: p.split("/"))]


def _tarinfo(e: Entry, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(e.path + ("/" if e.kind == "dir" else ""))
    ti.mtime = mtime
    ti.mode = e.mode & 0o7777
    ti.uid, ti.gid = e.uid, e.gid
    ti.uname = ti.gname = ""
    if e.kind == "file":
        ti.type, ti.size = tarfile.REGTYPE, e.size
    elif e.kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif e.kind == "symlink":
        ti.type, ti.linkname = tarfile.SYMTYPE, e.target
    elif e.kind == "hardlink":
        ti.type, ti.linkname = tarfile.LNKTYPE, e.target
    else:  # pragma: no cover - EntryKind is closed
        raise IntegrityError(f"unsupported entry kind {e.kind}")
    return ti


def send_tar(entries: Iterable[Entry], fd: int, files: Mapping[str, Callable[[], Path]]) -> None:
    """Write ``entries`` as a tar stream to the file descriptor ``fd`` (a pipe into ``docker load``): the bytes of
    :func:`write_tar` with ``mtime=0, link_identical=False``. An entry whose path ``files`` maps to a file on disk
    (a layer's blob in the cache, found when it is sent) goes from there with ``sendfile``, inside the kernel: 5 GB
    of layers cost no copy through Python. Its bytes are not checked here: the engine checks each layer against
    the config's diff IDs."""
    offset = 0
    for e in normalize(entries):
        header = tar_header(e, 0)
        _write_all(fd, header)
        offset += len(header)
        if e.kind != "file":
            continue
        where = files.get(e.path)
        if where is not None:
            path = where()
            with open(path, "rb") as src:
                if os.fstat(src.fileno()).st_size != e.size:
                    raise IntegrityError(f"{path} is not the size the image says", "rebuild without the cache")
                done = 0
                while done < e.size:
                    sent = os.sendfile(fd, src.fileno(), done, min(e.size - done, 1 << 30))
                    if sent == 0:
                        raise IntegrityError(f"{path} shrank while it was being sent", "retry the build")
                    done += sent
        else:
            if e.open is None:
                raise IntegrityError(f"/{e.path} has no content")
            with e.open() as fh:
                reader = _SizeChecked(fh, e.size, e.path)
                while chunk := reader.read(CHUNK):
                    _write_all(fd, chunk)
        offset += e.size + (-e.size) % tarfile.BLOCKSIZE
        _write_all(fd, bytes((-e.size) % tarfile.BLOCKSIZE))
    offset += 2 * tarfile.BLOCKSIZE
    _write_all(fd, bytes(2 * tarfile.BLOCKSIZE + (-offset) % tarfile.RECORDSIZE))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _SizeChecked:
    """Reads exactly ``size`` bytes from a source and fails loudly if the file changed under us."""

    def __init__(self, fh: Reader, size: int, path: str) -> None:
        self._fh, self._left, self._path = fh, size, path

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n < 0 else min(n, self._left)
        parts: list[bytes] = []
        got = 0
        while got < want:  # a source may return short reads; only an empty one is its end
            data = self._fh.read(want - got)
            if not data:
                raise IntegrityError(f"/{self._path} shrank while it was being archived", "retry the build")
            parts.append(data)
            got += len(data)
        self._left -= got
        if self._left == 0 and self._fh.read(1):
            raise IntegrityError(f"/{self._path} grew while it was being archived", "retry the build")
        return parts[0] if len(parts) == 1 else b"".join(parts)


def write_tar(entries: Iterable[Entry], out: Writer, *, mtime: int | None = None, link_identical: bool = True) -> int:
    """Write ``entries`` as a reproducible tar stream to ``out``; returns the number of entries written.

    The bytes are those of ``tarfile`` in ``w|`` mode with the PAX format (headers from ``TarInfo.tobuf``, each
    file padded to a block, two zero blocks and zeros to a whole record at the end), written without its stream
    buffer: file contents go to ``out`` a chunk at a time as they are read, not copied through a growing buffer."""
    epoch = source_date_epoch() if mtime is None else mtime
    items = normalize(entries)
    first_by_content: dict[tuple[str, int, int, int], str] = {}
    # only a file whose size, mode and owner another file shares can be identical to it: the rest are not hashed
    alike = Counter((e.size, e.mode & 0o7777, e.uid, e.gid) for e in items if e.kind == "file" and e.size > 0)
    offset = 0
    for e in items:
        if e.kind == "file" and link_identical and alike[(e.size, e.mode & 0o7777, e.uid, e.gid)] > 1:
            key = (_content_hash(e), e.mode & 0o7777, e.uid, e.gid)
            first = first_by_content.get(key)
            if first is not None:
                e = Entry("" + e.path, "hardlink", e.mode, e.uid, e.gid, target=first)
            else:
                first_by_content[key] = e.path
        header = tar_header(e, epoch)
        out.write(header)
        offset += len(header)
        if e.kind == "file":
            if e.open is None:
                raise IntegrityError(f"/{e.path} has no content")
            with e.open() as fh:
                reader = _SizeChecked(fh, e.size, e.path)
                while chunk := reader.read(CHUNK):
                    out.write(chunk)
            offset += e.size
            if e.size % tarfile.BLOCKSIZE:
                out.write(bytes(tarfile.BLOCKSIZE - e.size % tarfile.BLOCKSIZE))
                offset += tarfile.BLOCKSIZE - e.size % tarfile.BLOCKSIZE
    offset += 2 * tarfile.BLOCKSIZE
    out.write(bytes(2 * tarfile.BLOCKSIZE + (-offset) % tarfile.RECORDSIZE))
    return len(items)


def tar_header(e: Entry, mtime: int) -> bytes:
    """The PAX tar header block(s) of ``e`` (with ``mtime``)."""
    return _tarinfo(e, mtime).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def member_entry(tar: tarfile.TarFile, m: tarfile.TarInfo) -> Entry | None:
    """The entry a tar member stands for (paths cleaned); None for what images never carry (devices, fifos)."""
    path = clean_path(m.name)
    if not path:
        return None
    if m.isdir():
        return Entry(path, "dir", m.mode, m.uid, m.gid)
    if m.issym():
        return Entry(path, "symlink", 0o777, m.uid, m.gid, target=m.linkname)
    if m.islnk():
        return Entry(path, "hardlink", m.mode, m.uid, m.gid, target=m.linkname)
    if m.isreg():
        return Entry(path, "file", m.mode, m.uid, m.gid, m.size)
    return None  # device nodes, fifos: never carried into gpuship images


class _MemberReader:
    """A member's bytes; a truncated or corrupt archive surfaces as :class:`IntegrityError` here too."""

    def __init__(self, fh: Reader) -> None:
        self._fh = fh

    def read(self, n: int = -1) -> bytes:
        try:
            return self._fh.read(n)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise IntegrityError(
                f"corrupt or truncated tar stream: {exc}", "the archive is damaged; rebuild or re-download it"
            ) from exc

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> _MemberReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_tar(stream: Reader) -> Iterator[tuple[Entry, Reader | None]]:
    """Read a tar stream: yields each entry with a reader for its bytes (valid until the next item).

    Paths are cleaned (no absolute paths, no ``..``); a truncated or corrupt stream is an
    :class:`IntegrityError`, never a partial success.
    """
    try:
        with tarfile.open(fileobj=as_file(stream), mode="r|*") as tar:
            for m in tar:
                e = member_entry(tar, m)
                if e is None:
                    continue
                fh = tar.extractfile(m) if m.isreg() else None
                yield e, (_MemberReader(fh) if fh is not None else None)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise IntegrityError(
            f"corrupt or truncated tar stream: {exc}", "the archive is damaged; rebuild or re-download it"
        ) from exc
