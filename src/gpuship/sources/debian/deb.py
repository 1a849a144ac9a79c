"""Reading ``.deb`` files: the ar container, ``control.tar.*`` and ``data.tar.*`` (gz, xz, zst or plain).

A small ar reader (the format is 60-byte headers and even padding) plus :mod:`tarfile`; zstd through
:mod:`zstandard`. Paths pass :func:`gpuship.oci.clean_path`, and unpacked file bytes are stored under
numbered names, never under the archive's own paths, so a hostile archive cannot write outside its folder.

:func:`deb_info` reads a package once (control fields, md5sums, conffile sums, the member list) and keeps
that small record in the cache, so the dpkg database and the slimming report need no unpacking later.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from ...cache import Cache
from ...errors import IntegrityError
from ...oci.entry import EntryKind, clean_path
from ...streams import CHUNK, Reader, as_file

AR_MAGIC = b"!<arch>\n"
#: Bump when :class:`DebInfo` changes shape.
INFO_FORMAT = "1"


class _ArSlice(io.RawIOBase):
    """``size`` bytes of ``fh`` from ``offset`` as a readable stream."""

    def __init__(self, fh: IO[bytes], offset: int, size: int) -> None:
        self._fh, self._pos, self._end = fh, offset, offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self._end - self._pos)
        if n <= 0:
            return 0
        self._fh.seek(self._pos)
        data = self._fh.read(n)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


def ar_members(fh: IO[bytes], what: str) -> dict[str, tuple[int, int]]:
    """The members of an ar archive: ``name -> (offset, size)``."""
    fh.seek(0)
    if fh.read(8) != AR_MAGIC:
        raise IntegrityError(f"{what} is not a Debian package (no ar header)", "re-download it; the file is damaged")
    out: dict[str, tuple[int, int]] = {}
    pos = 8
    while True:
        fh.seek(pos)
        hdr = fh.read(60)
        if not hdr:
            break
        if len(hdr) < 60 or hdr[58:60] != b"`\n":
            raise IntegrityError(f"{what} has a damaged ar header at byte {pos}", "re-download it; the file is damaged")
        name = hdr[0:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(hdr[48:58].decode().strip())
        except ValueError as exc:
            raise IntegrityError(f"{what} has a damaged ar header at byte {pos}", "re-download it") from exc
        out[name] = (pos + 60, size)
        pos += 60 + size + (size & 1)
    return out


def _decompressor(name: str, raw: IO[bytes]) -> Reader:
    if name.endswith(".xz"):
        return lzma.open(raw)
    if name.endswith(".gz"):
        return gzip.open(raw)
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(raw)
    if name.endswith(".tar"):
        return raw
    raise IntegrityError(f"unsupported compression of {name}", "gpuship reads .deb members in gz, xz, zst or plain tar")


@contextmanager
def open_tar_member(fh: IO[bytes], prefix: str, what: str) -> Iterator[tarfile.TarFile]:
    """Open ``control.tar.*`` or ``data.tar.*`` of an open ``.deb`` as a streaming tar."""
    members = ar_members(fh, what)
    name = next((n for n in members if n == prefix or n.startswith(prefix + ".")), None)
    if name is None:
        raise IntegrityError(f"{what} has no {prefix} member", "re-download it; the file is damaged")
    off, size = members[name]
    stream = _decompressor(name, io.BufferedReader(_ArSlice(fh, off, size), CHUNK))
    try:
        with tarfile.open(fileobj=as_file(stream), mode="r|") as tar:
            yield tar
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, zstandard.ZstdError, OSError) as exc:
        raise IntegrityError(f"{what}: damaged {name}: {exc}", "re-download it; the file is damaged") from exc


@dataclass(frozen=True)
class Member:
    """One entry of a package's data.tar, with its path as the package has it (``bin/ls``, not merged)."""

    path: str
    kind: EntryKind
    mode: int
    uid: int
    gid: int
    size: int
    target: str = ""


@dataclass(frozen=True)
class DebInfo:
    """What the dpkg database and the slimming report need from a package, without its bytes."""

    control: str
    md5sums: str
    conffiles: tuple[tuple[str, str], ...]  # (path, md5) of each conffile
    members: tuple[Member, ...]

    def to_json(self) -> dict:
        return {
            "control": self.control,
            "md5sums": self.md5sums,
            "conffiles": [list(c) for c in self.conffiles],
            "members": [[m.path, m.kind, m.mode, m.uid, m.gid, m.size, m.target] for m in self.members],
        }

    @classmethod
    def from_json(cls, d: dict) -> DebInfo:
        return cls(
            d["control"],
            d["md5sums"],
            tuple((a, b) for a, b in d["conffiles"]),
            tuple(Member(p, k, mo, u, g, s, t) for p, k, mo, u, g, s, t in d["members"]),
        )


def _member(m: tarfile.TarInfo) -> Member | None:
    path = clean_path(m.name)
    if not path:
        return None
    if m.isdir():
        return Member(path, "dir", m.mode, m.uid, m.gid, 0)
    if m.issym():
        return Member(path, "symlink", 0o777, m.uid, m.gid, 0, m.linkname)
    if m.islnk():
        return Member(path, "hardlink", m.mode, m.uid, m.gid, 0, clean_path(m.linkname))
    if m.isreg():
        return Member(path, "file", m.mode, m.uid, m.gid, m.size)
    return None  # device nodes and fifos never go into an image


def read_deb_info(path: Path | str, what: str) -> DebInfo:
    """Read control, md5sums, conffiles (with their sums) and the member list from a ``.deb``."""
    control = md5sums = conffiles = ""
    with open(path, "rb") as fh:
        with open_tar_member(fh, "control.tar", what) as tar:
            for m in tar:
                name = clean_path(m.name)
                if m.isreg() and name in ("control", "md5sums", "conffiles"):
                    data = _member_bytes(tar, m).decode("utf-8", "replace")
                    if name == "control":
                        control = data
                    elif name == "md5sums":
                        md5sums = data
                    else:
                        conffiles = data
        if not control.strip():
            raise IntegrityError(f"{what} has no control file", "re-download it; the file is damaged")
        wanted = {
            clean_path(line.strip())
            for line in conffiles.splitlines()
            if line.strip() and not line.startswith("remove-on-upgrade")
        }
        sums: dict[str, str] = {}
        members: list[Member] = []
        with open_tar_member(fh, "data.tar", what) as tar:
            for m in tar:
                mem = _member(m)
                if mem is None:
                    continue
                members.append(mem)
                if mem.kind == "file" and mem.path in wanted:
                    sums[mem.path] = hashlib.md5(_member_bytes(tar, m)).hexdigest()  # noqa: S324 - dpkg's own format
    return DebInfo(control, md5sums, tuple(sorted((f"/{p}", s) for p, s in sums.items())), tuple(members))


def deb_info(cache: Cache, digest: str, what: str) -> DebInfo:
    """:func:`read_deb_info` of a cached ``.deb``, itself cached (a few KB) under the package's digest."""
    return cache.memo(
        "debian-debinfo",
        f"{INFO_FORMAT}:{digest}",
        lambda: read_deb_info(cache.blob_path(digest), what),
        encode=DebInfo.to_json,
        decode=DebInfo.from_json,
    )


def unpack_data(deb: Path | str, dest: Path, what: str) -> dict[str, Path]:
    """Write the regular files of a ``.deb``'s data.tar under ``dest`` as ``0``, ``1``...; map path -> file."""
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with open(deb, "rb") as fh, open_tar_member(fh, "data.tar", what) as tar:
        for i, m in enumerate(tar):
            if not m.isreg():
                continue
            path = clean_path(m.name)
            if not path:
                continue
            target = dest / str(i)
            src = tar.extractfile(m)
            assert src is not None
            with open(target, "wb") as w:
                shutil.copyfileobj(src, w, 1 << 20)
            if os.path.getsize(target) != m.size:
                raise IntegrityError(f"{what}: {path} is truncated", "re-download it; the file is damaged")
            out[path] = target
    return out


def read_data_files(deb: Path | str, what: str, want: set[str] | None = None, prefix: str = "") -> dict[str, bytes]:
    """The bytes of some regular files of a ``.deb``'s data.tar (those in ``want`` or under ``prefix``)."""
    out: dict[str, bytes] = {}
    with open(deb, "rb") as fh, open_tar_member(fh, "data.tar", what) as tar:
        for m in tar:
            path = clean_path(m.name)
            if m.isreg() and ((want is not None and path in want) or (prefix and path.startswith(prefix))):
                out[path] = _member_bytes(tar, m)
    return out


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A regular file member's bytes (tarfile opens every regular member; others have no bytes)."""
    fh = tar.extractfile(member)
    return fh.read() if fh is not None else b""
