"""Apply an image's layers, in order, into a directory: the root filesystem a runner, squashfs export or the
slimmer works on.

The rules are the OCI image-spec's (``layer.md``): ``.wh.<name>`` deletes ``<name>`` from the layers below,
``.wh..wh..opq`` hides everything the layers below put in its directory, and a path that changes type
replaces what was there. Whiteouts never delete what the same layer adds.

Safety, whatever the archive holds:

* every path is cleaned on read (no absolute paths, no ``..``: :func:`gpuship.oci.entry.clean_path`);
* a symlink met on the way to an entry is resolved *inside* ``dest`` (an absolute target or ``..`` stops at
  ``dest``, like a chroot), so nothing is ever written outside it; the entry itself is created with
  ``O_NOFOLLOW``/``O_EXCL`` after the old one is removed, so a symlink at that name is never followed;
* hardlinks may only point at files already inside ``dest``;
* device nodes, fifos and sockets are never created (the tar reader drops them).

Owners: as root the tar's uid/gid are kept; otherwise files belong to the caller. ``owner=(uid, gid)`` forces
one owner for everything (a simple rootless mapping). Every mtime is set to ``SOURCE_DATE_EPOCH`` (or 0), so
the tree is reproducible too.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import GpushipError, IntegrityError
from ..streams import CHUNK, Reader
from .entry import Entry, is_whiteout_meta, whiteout_of
from .image import Image, Index
from .layer import Layer
from .tarball import source_date_epoch

MAX_LINKS = 40


@dataclass(frozen=True)
class UnpackSummary:
    """What :func:`unpack` did."""

    layers: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    whiteouts: int = 0
    bytes: int = 0


class _Applier:
    """Applies layers onto one root, remembering the directory modes to set at the end."""

    def __init__(self, root: Path, owner: tuple[int, int] | None, keep_owners: bool) -> None:
        self.root = str(root)
        self.owner = owner
        self.keep_owners = keep_owners
        self.epoch = source_date_epoch()
        self._resolved: dict[str, str] = {}
        self._dir_modes: dict[str, int] = {}
        self._created: set[str] = set()
        self.counts = {"files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "whiteouts": 0, "bytes": 0}

    # -- paths ---------------------------------------------------------------------------------------------
    def _full(self, real: str) -> str:
        return os.path.join(self.root, real) if real else self.root

    def resolve_dir(self, rel: str, create: bool = True) -> str | None:
        """The real path (relative to root, no symlinks in it) of directory ``rel``.

        Symlinks on the way are followed within the root; missing directories are made (or, with
        ``create=False``, ``None`` is returned). A non-directory on the way is an error.
        """
        cached = self._resolved.get(rel)
        if cached is not None:
            return cached
        todo = [p for p in rel.split("/") if p] if rel else []
        cur: list[str] = []
        links = 0
        while todo:
            name = todo.pop(0)
            if name == ".":
                continue
            if name == "..":
                if cur:
                    cur.pop()
                continue
            real = "/".join([*cur, name])
            full = self._full(real)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(full, 0o755)
                self._dir_modes.setdefault(real, 0o755)
                cur.append(name)
                continue
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise IntegrityError(f"too many symlinks while resolving /{rel}", "the image has a symlink loop")
                target = os.readlink(full)
                if target.startswith("/"):
                    cur = []
                todo = [p for p in target.split("/") if p] + todo
                continue
            if stat.S_ISDIR(st.st_mode):
                cur.append(name)
                continue
            if not create:
                return None
            raise IntegrityError(
                f"/{rel} needs /{real} to be a directory, but a lower layer put a file there",
                "the image's layers conflict; rebuild it",
            )
        result = "/".join(cur)
        self._resolved[rel] = result
        return result

    def _split(self, path: str, create: bool = True) -> tuple[str, str] | None:
        parent, name = posixpath.split(path)
        real_parent = self.resolve_dir(parent, create)
        if real_parent is None:
            return None
        return real_parent, name

    def _remove(self, real: str) -> None:
        full = self._full(real)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            self._resolved.clear()  # a cached path may pass through it
        if stat.S_ISDIR(st.st_mode):
            _make_writable_tree(full)
            shutil.rmtree(full)
            prefix = real + "/"
            for key in [k for k in self._dir_modes if k == real or k.startswith(prefix)]:
                del self._dir_modes[key]
        else:
            os.unlink(full)

    # -- entries -------------------------------------------------------------------------------------------
    def begin_layer(self) -> None:
        self._created.clear()

    def apply(self, entry: Entry, reader: Reader | None) -> None:
        if is_whiteout_meta(entry.path):
            return
        whiteout = whiteout_of(entry.path)
        if whiteout is not None:
            self.counts["whiteouts"] += 1
            hidden, opaque = whiteout
            if opaque:
                real_dir = self.resolve_dir(hidden)
                assert real_dir is not None
                self._clear_lower(real_dir)
                return
            split = self._split(hidden, create=False)
            if split is not None:
                real = posixpath.join(*split) if split[0] else split[1]
                if real not in self._created:
                    self._remove(real)
            return
        split = self._split(entry.path)
        assert split is not None
        real = posixpath.join(*split) if split[0] else split[1]
        full = self._full(real)
        self._created.add(real)
        if entry.kind == "dir":
            self._dir(real, full, entry)
        elif entry.kind == "file":
            self._file(real, full, entry, reader)
        elif entry.kind == "symlink":
            self._remove(real)
            os.symlink(entry.target, full)
            self._owner(full, entry, follow=False)
            os.utime(full, (self.epoch, self.epoch), follow_symlinks=False)
            self.counts["symlinks"] += 1
        elif entry.kind == "hardlink":
            self._hardlink(real, full, entry)

    def _clear_lower(self, real_dir: str) -> None:
        full = self._full(real_dir)
        for name in sorted(os.listdir(full)):
            child = posixpath.join(real_dir, name) if real_dir else name
            if child in self._created:
                if os.path.isdir(self._full(child)) and not os.path.islink(self._full(child)):
                    self._clear_lower(child)
                continue
            self._remove(child)

    def _owner(self, full: str, entry: Entry, follow: bool = True, fd: int | None = None) -> None:
        if self.owner is not None:
            uid, gid = self.owner
        elif self.keep_owners:
            uid, gid = entry.uid, entry.gid
        else:
            return
        if fd is not None:
            os.fchown(fd, uid, gid)
        else:
            os.chown(full, uid, gid, follow_symlinks=follow)

    def _dir(self, real: str, full: str, entry: Entry) -> None:
        try:
            st = os.lstat(full)
            is_dir = stat.S_ISDIR(st.st_mode)
        except FileNotFoundError:
            is_dir = False
        if not is_dir:
            self._remove(real)
            os.mkdir(full, 0o700)
        self._owner(full, entry)
        self._dir_modes[real] = entry.mode & 0o7777
        os.chmod(full, (entry.mode & 0o7777) | 0o700)  # stay writable until the end
        self.counts["dirs"] += 1

    def _file(self, real: str, full: str, entry: Entry, reader: Reader | None) -> None:
        self._remove(real)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            written = 0
            if reader is not None:
                while chunk := reader.read(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
            out.flush()
            self._owner(full, entry, fd=fd)
            os.fchmod(fd, entry.mode & 0o7777)  # after chown, which clears set-id bits
            os.utime(fd, (self.epoch, self.epoch))
        self.counts["files"] += 1
        self.counts["bytes"] += written

    def _hardlink(self, real: str, full: str, entry: Entry) -> None:
        split = self._split(entry.target, create=False)
        source = None if split is None else self._full(posixpath.join(*split) if split[0] else split[1])
        if source is None or not os.path.lexists(source):
            raise IntegrityError(f"/{entry.path} is a hardlink to /{entry.target}, which is not in the image")
        if os.path.isdir(source) and not os.path.islink(source):
            raise IntegrityError(f"/{entry.path} is a hardlink to the directory /{entry.target}")
        if os.path.abspath(source) == os.path.abspath(full):
            return
        self._remove(real)
        os.link(source, full, follow_symlinks=False)
        self.counts["hardlinks"] += 1

    def finish(self) -> None:
        """Set the directories' final modes and mtimes, deepest first."""
        for real in sorted(self._dir_modes, key=lambda p: (-p.count("/"), p)):
            full = self._full(real)
            if os.path.isdir(full) and not os.path.islink(full):
                os.chmod(full, self._dir_modes[real])
                os.utime(full, (self.epoch, self.epoch))


def _make_writable_tree(path: str) -> None:
    """So that rmtree works on directories an image made read-only (when not running as root)."""
    if os.geteuid() == 0:
        return
    for dirpath, dirnames, _ in os.walk(path):
        os.chmod(dirpath, stat.S_IMODE(os.lstat(dirpath).st_mode) | 0o700)
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) | 0o700)


def apply_layers(layers: Iterable[Layer], root: Path | str, *, owner: tuple[int, int] | None = None) -> UnpackSummary:
    """Apply ``layers`` in order onto the existing directory ``root`` (in place)."""
    root = Path(root)
    applier = _Applier(root, owner, keep_owners=os.geteuid() == 0)
    n = 0
    for layer in layers:
        applier.begin_layer()
        for entry, reader in layer.entries():
            applier.apply(entry, reader)
        n += 1
    applier.finish()
    return UnpackSummary(layers=n, **applier.counts)


def unpack(image: Image | Sequence[Layer], dest: Path | str, *, owner: tuple[int, int] | None = None) -> UnpackSummary:
    """Unpack ``image`` (or a list of layers, bottom first) into ``dest``, which must be new or empty.

    The tree is assembled under a temp name beside ``dest`` and renamed into place when complete, so a
    failure leaves nothing behind.
    """
    if isinstance(image, Index):
        raise GpushipError("cannot unpack a multi-platform index", "pick one platform first (Index.for_platform)")
    layers = image.layers if isinstance(image, Image) else tuple(image)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise GpushipError(f"cannot unpack into {dest}: it exists and is not an empty directory", "give a new path")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    except OSError as exc:
        raise GpushipError(f"cannot unpack into {dest}: {exc.strerror}", "check the directory's permissions") from exc
    try:
        os.chmod(work, 0o755)
        summary = apply_layers(layers, work, owner=owner)
        os.replace(work, dest)
        return summary
    except OSError as exc:  # the image asks for what this file system cannot hold (or the disk is full)
        where = exc.filename if isinstance(exc.filename, str) else str(dest)
        shown = "/" + os.path.relpath(where, work) if where.startswith(str(work)) else where
        raise GpushipError(
            f"cannot unpack into {dest}: {exc.strerror or exc} ({shown[:120]})",
            "check the free space and permissions there; nothing was left behind",
        ) from exc
    finally:
        if work.exists():
            _make_writable_tree(str(work))
            shutil.rmtree(work, ignore_errors=True)
