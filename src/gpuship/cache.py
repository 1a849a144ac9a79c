"""Content-addressed blob store and small keyed records, shared by every source and sink.

Layout under the cache root (``GPUSHIP_CACHE`` or the user cache dir)::

    blobs/sha256/<hex>        content, named by its own digest
    refs/<namespace>/<key>    small JSON records (e.g. "this input key built that layer")
    tmp/                      in-flight writes; renamed into place only once complete and verified
    locks/                    file locks, so two builds at once never step on each other

Nothing half-written is ever visible under ``blobs`` or ``refs``: writes go to ``tmp`` and are renamed.

Pruning and running commands: every ``gpuship`` command holds the cache's shared *in-use* lock
(:meth:`Cache.in_use`) while it runs; :meth:`Cache.prune` needs it exclusively, so a prune never deletes what a
running build, run or convert still needs: it says the cache is in use instead. What a killed process left in
``tmp/`` is removed by the next command that finds no other one running, and by ``prune``; a blob being written
holds a lock on its temp file, and a :meth:`Cache.temp_dir` on its directory, so neither is taken for a leftover
(also where the process that made it holds no in-use lock: a library caller).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol, TypeVar, cast

import platformdirs
from filelock import FileLock

from .errors import GpushipError, IntegrityError
from .streams import CHUNK, Reader, sha256_file

T = TypeVar("T")
#: A record's type as its namespace's ``encode`` makes it (see :meth:`Cache.memo`).
R = TypeVar("R")


#: Where each blob's stamp (inode, size, ctime when written or last verified) is kept: see :meth:`Cache.has`.
STAMPS = "blob-stamps"
log = logging.getLogger("gpuship.cache")


def default_root() -> Path:
    env = os.environ.get("GPUSHIP_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("gpuship"))


def parse_digest(digest: str) -> tuple[str, str]:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise IntegrityError(f"not a sha256 digest: {digest!r}")
    return algo, hexpart


#: The in-use locks this process holds (see :meth:`Cache.in_use`): ``root -> [fd, depth]``.
_HELD: dict[Path, list[int]] = {}
IN_USE_LOCK = "in-use.lock"


def _try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class BlobWriter:
    """A file-like sink that hashes what it is given; :meth:`Cache.blob_writer` commits it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._fh.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class Overlay(Protocol):
    """What a build lays over the cache's records for its duration (:meth:`Cache.overlaid`): the shared build cache
    (:class:`gpuship.buildcache.BuildCacheSession`). It sees each read and write of its ``namespaces``."""

    namespaces: frozenset[str]

    def get(self, namespace: str, key: str, local: object) -> object:
        """The record to use: ``local`` (what this machine holds, or None), another, or None."""
        ...

    def put(self, namespace: str, key: str, value: object) -> None:
        """``value`` was recorded here."""
        ...

    def filler(self, key: str, record: Mapping[str, object]) -> Callable[[], None] | None:
        """How the blob of the layer recorded under ``key`` comes into this cache (None: it cannot; build it)."""
        ...

    def fetch(self, digest: str) -> bool:
        """Bring the small blob ``digest`` a record names into this cache; whether it is here now."""
        ...

    def vouches(self, key: str) -> bool:
        """Whether the layer record under ``key`` came from the overlay, not from this machine: then even a blob
        that is here is only used as the overlay's :meth:`filler` allows (the record pairs it with a diff ID)."""
        ...


@dataclass(frozen=True)
class CacheInfo:
    root: Path
    blobs: int
    blob_bytes: int
    refs: int
    dirs: int = 0  # unpacked images (the built-in runner's root filesystems) and installed trees
    dir_bytes: int = 0


class Cache:
    """The content-addressed store. Cheap to construct; all state is on disk."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        #: the build cache laid over the records while a build runs (:meth:`overlaid`)
        self.overlay: Overlay | None = None
        try:
            for sub in ("blobs/sha256", "refs", "tmp", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GpushipError(
                f"cannot use cache directory {self.root}: {exc.strerror}",
                "set GPUSHIP_CACHE to a writable directory",
            ) from exc

    # -- blobs -----------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        _, hexpart = parse_digest(digest)
        return self.root / "blobs" / "sha256" / hexpart

    def has(self, digest: str) -> bool:
        """Whether the blob is here *and intact*. A blob whose file changed since it was written (its inode, size
        or ctime differ from the stamp taken then) is hashed again; one that no longer matches its digest is
        dropped, with a warning, so the caller builds or fetches it again."""
        path = self.blob_path(digest)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        if self.get_ref(STAMPS, digest[7:]) == _stamp(st):
            return True
        got = sha256_file(path)
        if got == digest:
            self.put_ref(STAMPS, digest[7:], _stamp(st))
            return True
        self.drop(digest, f"it hashes to {got}")
        return False

    def drop(self, digest: str, why: str) -> None:
        """Remove a damaged blob (it is built or fetched again where it is needed), saying so once."""
        path = self.blob_path(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        (self.root / "refs" / STAMPS / digest[7:]).unlink(missing_ok=True)
        log.warning("warning: the cached blob %s was damaged (%s); removed it, it is made again", digest[:19], why)

    def open(self, digest: str) -> BinaryIO:
        path = self.blob_path(digest)
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise GpushipError(f"blob {digest} is not in the cache", "rebuild, or run gpuship cache prune") from exc

    def obtain(self, digest: str) -> bool:
        """Whether the blob is here, fetched first from the shared build cache when a record there names it."""
        return self.has(digest) or (self.overlay is not None and self.overlay.fetch(digest))

    def read(self, digest: str) -> bytes:
        with self.open(digest) as fh:
            return fh.read()

    @contextmanager
    def blob_writer(self, expected: str | None = None) -> Iterator[BlobWriter]:
        """Write a blob; it lands under its digest only if the block finishes (and matches ``expected``)."""
        fd, tmpname = tempfile.mkstemp(dir=self.root / "tmp", prefix="blob-")
        fcntl.flock(fd, fcntl.LOCK_EX)  # "being written": clean_tmp never takes it for a leftover
        tmp = Path(tmpname)
        try:
            with os.fdopen(fd, "wb") as fh:
                writer = BlobWriter(fh)
                yield writer
            if expected is not None and writer.digest != expected:
                raise IntegrityError(
                    f"content digest {writer.digest} does not match the expected {expected}",
                    "the download or file is corrupt or was tampered with; nothing was cached",
                )
            os.chmod(tmp, 0o644)
            final = self.blob_path(writer.digest)
            os.replace(tmp, final)
            self.put_ref(STAMPS, writer.digest[7:], _stamp(os.stat(final)))
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        with self.blob_writer(expected) as w:
            w.write(data)
        return w.digest

    def put_stream(self, stream: Reader, expected: str | None = None) -> tuple[str, int]:
        with self.blob_writer(expected) as w:
            while chunk := stream.read(CHUNK):
                w.write(chunk)
        return w.digest, w.size

    def put_file(self, path: Path | str, expected: str | None = None) -> tuple[str, int]:
        with open(path, "rb") as fh:
            return self.put_stream(fh, expected)

    # -- refs: small JSON records keyed by a namespace and a key ----------------------------------
    def _ref_path(self, namespace: str, key: str) -> Path:
        safe = hashlib.sha256(key.encode()).hexdigest() if (len(key) > 120 or "/" in key) else key
        return self.root / "refs" / namespace / safe

    def get_ref(self, namespace: str, key: str) -> object:
        """The JSON value recorded (None: none); its reader checks its shape."""
        path = self._ref_path(namespace, key)
        try:
            value = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            value = None
        overlay = self.overlay
        if overlay is not None and namespace in overlay.namespaces:
            return overlay.get(namespace, key, value)
        return value

    def put_ref(self, namespace: str, key: str, value: object) -> None:
        overlay = self.overlay
        if overlay is not None and namespace in overlay.namespaces:
            overlay.put(namespace, key, value)
        path = self._ref_path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmpname = tempfile.mkstemp(dir=self.root / "tmp", prefix="ref-")
        with os.fdopen(fd, "w") as fh:
            json.dump(value, fh, sort_keys=True)
        os.replace(tmpname, path)

    # -- memos: "this key computed that", remembered ---------------------------------------------
    def memo(
        self,
        namespace: str,
        key: str,
        compute: Callable[[], T],
        *,
        encode: Callable[[T], R],
        decode: Callable[[R], T | None],
        lock: bool = False,
    ) -> T:
        """The value remembered under ``namespace``/``key``, else ``compute()``'s, remembered.

        ``encode`` makes the JSON record; ``decode`` reads one back, or answers ``None`` when the record no
        longer holds (a blob it names was pruned), and the value is computed again. With ``lock``, one process
        computes it at a time and the others reuse its answer.
        """
        with self.lock(f"memo-{namespace}-{self._ref_path(namespace, key).name}") if lock else nullcontext():
            rec = self.get_ref(namespace, key)
            if rec is not None:
                # the record ``encode`` wrote under this namespace and key (the key names the format): ``decode``
                # reads back what it wrote, and answers None when it no longer holds
                value = decode(cast(R, rec))
                if value is not None:
                    return value
            value = compute()
            self.put_ref(namespace, key, encode(value))
            return value

    def memo_blob(
        self,
        namespace: str,
        key: str,
        compute: Callable[[], T],
        *,
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T | None],
        lock: bool = False,
    ) -> T:
        """:meth:`memo` for a value too big for a record: kept as a blob, which the record names."""

        def load(rec: dict[str, str]) -> T | None:
            digest = rec.get("digest") if isinstance(rec, dict) else None
            return decode(self.read(digest)) if isinstance(digest, str) and self.obtain(digest) else None

        return self.memo(
            namespace, key, compute, encode=lambda v: {"digest": self.put_bytes(encode(v))}, decode=load, lock=lock
        )

    @contextmanager
    def overlaid(self, overlay: Overlay | None) -> Iterator[Cache]:
        """The cache with ``overlay`` over its records for the block (a build's shared build cache)."""
        before, self.overlay = self.overlay, overlay
        try:
            yield self
        finally:
            self.overlay = before

    # -- directories (unpacked images, installed trees) --------------------------------------------
    @contextmanager
    def directory(self, namespace: str, key: str) -> Iterator[tuple[Path, bool]]:
        """A cached directory: yields ``(path, ready)``; if not ready, fill ``path`` and it is committed.

        The directory is built in ``tmp`` and renamed into place, so a crash leaves nothing behind.
        """
        final = self._ref_path(f"dirs-{namespace}", key)
        with self.lock(f"dir-{namespace}-{final.name}"):
            if final.is_dir():
                os.utime(final)  # its mtime says when it was last used: prune --older-than goes by it
                yield final, True
                return
            with self.temp_dir("dir-") as work:
                yield work, False
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(work, final)

    @contextmanager
    def temp_dir(self, prefix: str) -> Iterator[Path]:
        """A fresh directory in ``tmp/`` for the block, removed after it (whatever it holds).

        It is locked while the block runs, so :meth:`clean_tmp` in another process (one taking :meth:`in_use`, or
        ``prune``) never takes it for a leftover, even when its caller holds no :meth:`in_use` lock (a library
        caller) and the work in it takes long. Every temporary directory under the cache comes from here."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix=prefix))
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # "in use": clean_tmp's try for the lock fails while it is held
            yield path
        finally:
            try:
                shutil.rmtree(path)
            except FileNotFoundError:
                pass  # renamed into place (directory) or removed by the block
            except OSError:
                _make_writable(path)  # an unpacked tree can hold read-only directories
                shutil.rmtree(path, ignore_errors=True)
            os.close(fd)

    # -- locks, info, prune ------------------------------------------------------------------------
    def lock(self, name: str, timeout: float = -1) -> FileLock:
        return FileLock(str(self.root / "locks" / f"{name}.lock"), timeout=timeout)

    def info(self) -> CacheInfo:
        blobs = list((self.root / "blobs" / "sha256").iterdir())
        refs = sum(1 for ns in self._namespaces(dirs=False) for p in ns.rglob("*") if p.is_file())
        dirs = [d for ns in self._namespaces(dirs=True) for d in ns.iterdir()]
        return CacheInfo(
            self.root,
            len(blobs),
            sum(p.stat().st_size for p in blobs),
            refs,
            len(dirs),
            sum(_tree_bytes(d) for d in dirs),
        )

    def _namespaces(self, *, dirs: bool) -> list[Path]:
        return [p for p in (self.root / "refs").iterdir() if p.is_dir() and p.name.startswith("dirs-") == dirs]

    @contextmanager
    def in_use(self) -> Iterator[Cache]:
        """Hold the cache's shared in-use lock for the block (every ``gpuship`` command holds it while it runs; a
        library caller of :func:`gpuship.build.build` and the like takes it itself, if it wants it), so a
        ``prune`` elsewhere refuses instead of deleting what the block needs. Taking it, a process that finds no
        other one running first removes what killed ones left in ``tmp/`` (not a locked :meth:`temp_dir`).
        Nested and repeated uses in one process share one lock."""
        key = self.root.resolve()
        held = _HELD.get(key)
        if held is None:
            fd = os.open(self.root / "locks" / IN_USE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            if _try_flock(fd, fcntl.LOCK_EX):
                self.clean_tmp()
            fcntl.flock(fd, fcntl.LOCK_SH)  # from exclusive: a downgrade; else it waits only for a prune
            held = _HELD[key] = [fd, 0]
        held[1] += 1
        try:
            yield self
        finally:
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                os.close(held[0])

    def clean_tmp(self, min_age: float = 2.0) -> tuple[int, int]:
        """Remove what killed processes left in ``tmp/`` (not a blob still being written nor a :meth:`temp_dir` in
        use, both locked, nor anything younger than ``min_age`` seconds); returns ``(entries removed, bytes
        freed)``."""
        removed = freed = 0
        now = time.time()
        for p in (self.root / "tmp").iterdir():
            try:
                st = p.lstat()
                if now - st.st_mtime < min_age:
                    continue
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not _try_flock(fd, fcntl.LOCK_EX):
                    continue  # a writer holds it
                if stat.S_ISDIR(st.st_mode):
                    freed += _tree_bytes(p)
                    _make_writable(p)
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    freed += st.st_size
                    p.unlink(missing_ok=True)
                removed += 1
            finally:
                os.close(fd)
        return removed, freed

    def prune(self, older_than_days: float | None = None) -> tuple[int, int]:
        """Delete blobs, cached directories (unpacked images) and stale temp files; ``older_than_days`` keeps
        those used more recently.

        Returns ``(entries removed, bytes freed)``. Without ``older_than_days`` every record goes too. Refused
        while another process uses the cache (a build, a run: see :meth:`in_use`), so nothing it needs goes.
        """
        if older_than_days is not None and not (math.isfinite(older_than_days) and older_than_days >= 0):
            raise GpushipError(
                f"--older-than must be a number of days, 0 or more, not {older_than_days}",
                "e.g. --older-than 30; without it, prune removes everything",
            )
        held = _HELD.get(self.root.resolve())
        fd = held[0] if held is not None else os.open(self.root / "locks" / IN_USE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_flock(fd, fcntl.LOCK_EX):
                raise GpushipError(
                    f"the cache {self.root} is in use by another gpuship command (a build, run or convert)",
                    "prune it when that has finished; nothing was removed",
                )
            return self._prune(older_than_days)
        finally:
            if held is not None:
                fcntl.flock(fd, fcntl.LOCK_SH)
            else:
                os.close(fd)

    def _prune(self, older_than_days: float | None) -> tuple[int, int]:
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        removed, freed = self.clean_tmp(min_age=0 if older_than_days is None else older_than_days * 86400)
        with self.lock("prune"):
            places = [self.root / "blobs" / "sha256", *self._namespaces(dirs=True)]
            for place in places:
                for p in place.iterdir():
                    st = p.lstat()
                    if cutoff is not None and max(st.st_atime if p.is_file() else 0, st.st_mtime) > cutoff:
                        continue
                    if p.is_dir():
                        freed += _tree_bytes(p)
                        shutil.rmtree(p)
                    else:
                        freed += st.st_size
                        p.unlink()
                    removed += 1
            if cutoff is None:
                shutil.rmtree(self.root / "refs", ignore_errors=True)
                (self.root / "refs").mkdir()
        return removed, freed


def _stamp(st: os.stat_result) -> list[int]:
    """What changes whenever a file's bytes do (ctime cannot be set back by a user)."""
    return [st.st_ino, st.st_size, st.st_ctime_ns]


def _make_writable(path: Path) -> None:
    """So that rmtree works on a tree an image made read-only (an unpack cut short)."""
    for dirpath, _dirs, _files in os.walk(path):
        try:
            os.chmod(dirpath, stat.S_IMODE(os.lstat(dirpath).st_mode) | 0o700)
        except OSError:
            pass


def _tree_bytes(path: Path) -> int:
    """The bytes of the regular files under ``path`` (hard links counted once, symlinks not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
