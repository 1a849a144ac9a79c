"""An archive in numbered parts, with a manifest of their digests: images for hosts they cannot be pulled to.

An air-gapped cluster, or a host that takes files only in small pieces, gets an image as parts::

    torch.oci.tar.000  torch.oci.tar.001  ...   the archive's bytes, cut every SIZE bytes
    torch.oci.tar.parts.json                    what they are: each part's name, size and sha256, the whole
                                                archive's size and sha256, its format and the image's digest

:func:`write_parts` streams an archive writer (``oci-archive`` or ``docker-archive``) straight into the parts;
:func:`open_parts` checks every part against the manifest (present, size, sha256) before anything is read and
returns one seekable stream of the whole archive, which the archive reader takes as if it were the file. Without
gpuship the parts join with ``cat``; the joined file's sha256 is the manifest's ``digest``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import GpushipError, IntegrityError
from ..streams import CHUNK, Writer, sha256_file
from .layout import _cannot_write, _default_file_mode

if TYPE_CHECKING:  # the buffer types of io's stubs
    from _typeshed import WriteableBuffer

PARTS_MEDIA_TYPE = "application/vnd.gpuship.parts.v1+json"
MANIFEST_SUFFIX = ".parts.json"
#: Smaller parts are a mistake (thousands of files), not a need.
MIN_PART_SIZE = 4096


@dataclass(frozen=True)
class Part:
    name: str  # a file name beside the manifest
    size: int
    digest: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "digest": self.digest}


@dataclass(frozen=True)
class Parts:
    """What a parts manifest says."""

    file: str  # the joined archive's name
    format: str  # oci-archive | docker-archive
    size: int
    digest: str  # sha256 of the joined archive
    image: str  # the manifest digest of the image (or index) it holds
    parts: tuple[Part, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "mediaType": PARTS_MEDIA_TYPE,
            "file": self.file,
            "format": self.format,
            "size": self.size,
            "digest": self.digest,
            "image": self.image,
            "parts": [p.to_json() for p in self.parts],
        }


def manifest_path(archive: Path | str) -> Path:
    """Where the manifest of ``archive``'s parts goes: ``ARCHIVE.parts.json``."""
    archive = Path(archive)
    return archive.with_name(archive.name + MANIFEST_SUFFIX)


def _part_names(file: str, count: int) -> list[str]:
    width = max(3, len(str(count - 1)))
    return [f"{file}.{i:0{width}d}" for i in range(count)]


class _Splitter:
    """A write-only file that cuts what it is given into ``size``-byte files in ``folder``, hashing each."""

    def __init__(self, folder: Path, size: int) -> None:
        self._folder, self._size = folder, size
        self._whole = hashlib.sha256()
        self.total = 0
        self.parts: list[tuple[Path, int, str]] = []
        self._fh: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._filled = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        while view:
            if self._fh is None:
                self._fh = open(self._folder / f"{len(self.parts):08d}", "wb")  # noqa: SIM115 - closed in _close_part
            take = view[: self._size - self._filled]
            self._fh.write(take)
            self._hash.update(take)
            self._whole.update(take)
            self._filled += len(take)
            self.total += len(take)
            view = view[len(take) :]
            if self._filled == self._size:
                self._close_part()
        return n

    def flush(self) -> None:
        pass

    def _close_part(self) -> None:
        assert self._fh is not None
        self._fh.close()
        self.parts.append((Path(self._fh.name), self._filled, "sha256:" + self._hash.hexdigest()))
        self._fh, self._hash, self._filled = None, hashlib.sha256(), 0

    def finish(self) -> str:
        if self._fh is not None:
            self._close_part()
        return "sha256:" + self._whole.hexdigest()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def write_parts(
    write_to: Callable[[Writer], None],
    archive: Path | str,
    part_size: int,
    *,
    format: str,
    image: str,
) -> Parts:
    """Stream an archive (``write_to(fh)`` writes it) into parts of at most ``part_size`` bytes named after
    ``archive`` (which is not written), and their manifest ``ARCHIVE.parts.json``.

    The parts are written in a temporary folder beside ``archive`` and moved into place, the manifest last; on any
    error nothing is left. Parts of an earlier split of the same name that this one does not have are removed.
    """
    if part_size < MIN_PART_SIZE:
        raise GpushipError(f"parts of {part_size} bytes are too small", f"split into parts of {MIN_PART_SIZE} or more")
    archive = Path(archive)
    if archive.is_dir():
        raise GpushipError(f"cannot write {archive}: it is a directory", "give a file name for the archive")
    try:
        tmp = Path(tempfile.mkdtemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".parts"))
    except OSError as exc:
        raise _cannot_write(archive, exc) from exc
    try:
        splitter = _Splitter(tmp, part_size)
        try:
            write_to(splitter)
        finally:
            splitter.close()
        whole = splitter.finish()
        names = _part_names(archive.name, len(splitter.parts))
        parts = Parts(
            archive.name,
            format,
            splitter.total,
            whole,
            image,
            tuple(Part(n, size, digest) for n, (_, size, digest) in zip(names, splitter.parts, strict=True)),
        )
        mpath = manifest_path(archive)
        old = _old_part_names(mpath)
        mode = _default_file_mode()
        for name, (path, _, _) in zip(names, splitter.parts, strict=True):
            os.chmod(path, mode)
            os.replace(path, archive.parent / name)
        manifest = tmp / "manifest"
        manifest.write_text(json.dumps(parts.to_json(), indent=2) + "\n")
        os.chmod(manifest, mode)
        os.replace(manifest, mpath)
        for name in old - set(names):
            (archive.parent / name).unlink(missing_ok=True)
        return parts
    except OSError as exc:
        raise _cannot_write(archive, exc) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _old_part_names(mpath: Path) -> set[str]:
    """The parts an existing manifest at ``mpath`` lists (names of its own pattern only), else none."""
    try:
        old = load_parts(mpath)
    except (GpushipError, OSError):
        return set()
    pattern = re.compile(re.escape(old.file) + r"\.\d{3,}")
    return {p.name for p in old.parts if pattern.fullmatch(p.name)}


# -- reading -----------------------------------------------------------------------------------------------
def is_parts_manifest(path: Path) -> bool:
    """Whether ``path`` is a file that looks like a parts manifest (its name, or a JSON object as its start)."""
    if path.name.endswith(MANIFEST_SUFFIX):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and PARTS_MEDIA_TYPE.encode() in head


def load_parts(path: Path | str) -> Parts:
    """The manifest at ``path``, checked for shape (not yet against the parts: see :func:`open_parts`)."""
    path = Path(path)
    bad = IntegrityError(f"{path} is not a gpuship parts manifest", "give the .parts.json written by --split")
    try:
        raw = json.loads(path.read_bytes()[: 16 << 20])
    except ValueError as exc:
        raise bad from exc
    if not isinstance(raw, dict) or raw.get("mediaType") != PARTS_MEDIA_TYPE:
        raise bad
    try:
        parts = tuple(Part(_plain_name(str(p["name"]), path), int(p["size"]), str(p["digest"])) for p in raw["parts"])
        result = Parts(
            str(raw["file"]), str(raw["format"]), int(raw["size"]), str(raw["digest"]), str(raw["image"]), parts
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise bad from exc
    if not parts or sum(p.size for p in parts) != result.size:
        raise IntegrityError(f"{path}: its parts do not add up to the archive's {result.size} bytes", bad.hint)
    return result


def _plain_name(name: str, manifest: Path) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise IntegrityError(f"{manifest}: part name {name!r} is not a plain file name", "the manifest is damaged")
    return name


def verify_parts(path: Path | str) -> tuple[Parts, list[Path]]:
    """Load the manifest and check every part beside it: present, of its size, of its sha256.

    The first part that fails is one :class:`IntegrityError` naming it (by number and name) and what is wrong.
    """
    path = Path(path)
    parts = load_parts(path)
    files = []
    n = len(parts.parts)
    for i, part in enumerate(parts.parts, 1):
        f = path.parent / part.name
        where = f"part {i} of {n} ({f})"
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            raise IntegrityError(f"{where} is missing", "copy every part beside the manifest") from None
        except OSError as exc:
            raise IntegrityError(f"cannot read {where}: {exc.strerror}") from exc
        if size != part.size:
            raise IntegrityError(
                f"{where} has {size} bytes, the manifest says {part.size}", "copy that part again (it is cut short)"
            )
        got = sha256_file(f)
        if got != part.digest:
            raise IntegrityError(
                f"{where} is corrupt: its content hashes to {got}, the manifest says {part.digest}",
                "copy that part again",
            )
        files.append(f)
    return parts, files


class _Joined(io.RawIOBase):
    """The parts read as one seekable file."""

    def __init__(self, files: Sequence[Path], sizes: Sequence[int]) -> None:
        self._files = list(files)
        self._starts = [0]
        for s in sizes:
            self._starts.append(self._starts[-1] + s)
        self._pos = 0
        self._open: tuple[int, io.BufferedReader] | None = None

    @property
    def size(self) -> int:
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _part(self, i: int) -> io.BufferedReader:
        if self._open is None or self._open[0] != i:
            if self._open is not None:
                self._open[1].close()
            self._open = (i, open(self._files[i], "rb"))  # noqa: SIM115 - closed on switch or close()
        return self._open[1]

    def readinto(self, buf: WriteableBuffer) -> int:
        if self._pos >= self.size:
            return 0
        i = next(k for k in range(len(self._files)) if self._starts[k + 1] > self._pos)
        fh = self._part(i)
        fh.seek(self._pos - self._starts[i])
        view = memoryview(buf)
        want = min(len(view), self._starts[i + 1] - self._pos)
        n = fh.readinto(view[:want])
        if not n:
            raise IntegrityError(f"{self._files[i]} changed while it was read", "copy that part again")
        self._pos += n
        return n

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None
        super().close()


def open_parts(path: Path | str) -> tuple[Parts, BinaryIO]:
    """Verify the parts of the manifest at ``path`` (:func:`verify_parts`) and open them as one archive stream."""
    parts, files = verify_parts(path)
    return parts, io.BufferedReader(_Joined(files, [p.size for p in parts.parts]), CHUNK)


__all__ = [
    "MANIFEST_SUFFIX",
    "PARTS_MEDIA_TYPE",
    "Part",
    "Parts",
    "is_parts_manifest",
    "load_parts",
    "manifest_path",
    "open_parts",
    "verify_parts",
    "write_parts",
]
