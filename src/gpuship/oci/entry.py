"""A filesystem entry bound for a layer: the unit every source produces and the tar writer consumes.

Paths are relative, POSIX, normalised (``usr/bin/python3``), never absolute and never with ``..``:
:func:`clean_path` is the one gate every path passes, so no archive can write outside the root.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

from ..errors import IntegrityError
from ..streams import Reader

EntryKind = Literal["file", "dir", "symlink", "hardlink"]

#: OCI whiteout prefixes (image-spec layer.md).
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
#: Names under this prefix are reserved for whiteout metadata; only the opaque marker has a meaning.
WHITEOUT_META_PREFIX = ".wh..wh."


#: Linux's PATH_MAX less its NUL: a longer path cannot be opened by the programs in an image anyway.
MAX_PATH = 4095
#: Deeper paths are refused: no real image nests this deep, and walking one would exhaust Python's recursion.
MAX_DEPTH = 512
#: Linux's NAME_MAX: the longest file name (one path component) a file system takes.
MAX_NAME = 255


def clean_path(path: str) -> str:
    """Normalise ``path`` to the layer form, refusing anything that escapes the root (or is longer than
    :data:`MAX_PATH` bytes, or deeper than :data:`MAX_DEPTH` directories)."""
    if "\0" in path:
        raise IntegrityError(f"path {path[:80]!r} holds a NUL byte", "the archive is unsafe; refusing it")
    if len(path) > MAX_PATH // 4 and len(path.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise IntegrityError(
            f"path {path[:60]!r}... is longer than {MAX_PATH} bytes", "the archive is malformed; refusing it"
        )
    p = path.replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    p = p.lstrip("/")
    norm = posixpath.normpath(p) if p else ""
    if norm in ("", "."):
        return ""
    if norm == ".." or norm.startswith("../") or "/../" in f"/{norm}/":
        raise IntegrityError(f"path {path[:200]!r} escapes the image root", "the archive is unsafe; refusing it")
    if any(
        len(part) > MAX_NAME // 4 and len(part.encode("utf-8", "surrogateescape")) > MAX_NAME
        for part in norm.split("/")
    ):
        raise IntegrityError(
            f"path {norm[:60]!r}... has a name longer than {MAX_NAME} bytes", "the archive is malformed; refusing it"
        )
    if norm.count("/") >= MAX_DEPTH:
        raise IntegrityError(
            f"path {norm[:60]!r}... is more than {MAX_DEPTH} directories deep", "the archive is malformed; refusing it"
        )
    return norm


Opener = Callable[[], Reader]


@dataclass(frozen=True)
class Entry:
    """One thing in a layer. ``open`` gives a file's bytes; ``target`` is a link's target."""

    path: str
    kind: EntryKind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    target: str = ""
    open: Opener | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", clean_path(self.path))
        if self.kind == "hardlink":
            object.__setattr__(self, "target", clean_path(self.target))

    # -- constructors ----------------------------------------------------------------------------
    @classmethod
    def file(cls, path: str, content: bytes | Path | str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
        """A regular file from bytes (``bytes``/``str``) or from a file on disk (``Path``)."""
        if isinstance(content, Path):
            src = content
            return cls(path, "file", mode, uid, gid, src.stat().st_size, open=lambda: open(src, "rb"))
        data = content.encode() if isinstance(content, str) else content
        return cls(path, "file", mode, uid, gid, len(data), open=lambda: io.BytesIO(data))

    @classmethod
    def stream(cls, path: str, size: int, opener: Opener, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
        return cls(path, "file", mode, uid, gid, size, open=opener)

    @classmethod
    def dir(cls, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
        return cls(path, "dir", mode, uid, gid)

    @classmethod
    def symlink(cls, path: str, target: str, uid: int = 0, gid: int = 0) -> Entry:
        return cls(path, "symlink", 0o777, uid, gid, target=target)

    @classmethod
    def hardlink(cls, path: str, target: str) -> Entry:
        return cls(path, "hardlink", 0o644, target=target)

    @classmethod
    def whiteout(cls, path: str) -> Entry:
        """Deletes ``path`` from the layers below (an empty ``.wh.<name>`` file)."""
        p = clean_path(path)
        head, tail = posixpath.split(p)
        return cls.file(posixpath.join(head, WHITEOUT_PREFIX + tail), b"", mode=0o644)

    @classmethod
    def opaque(cls, directory: str) -> Entry:
        """Hides everything the layers below have inside ``directory``."""
        return cls.file(posixpath.join(clean_path(directory), OPAQUE_WHITEOUT), b"", mode=0o644)

    # -- helpers ---------------------------------------------------------------------------------
    def moved(self, path: str) -> Entry:
        return replace(self, path=path)

    def with_owner(self, uid: int, gid: int) -> Entry:
        return replace(self, uid=uid, gid=gid)

    def read(self) -> bytes:
        if self.open is None:
            return b""
        with self.open() as fh:
            return fh.read()


def rebase_through_links(path: str, links: Mapping[str, str]) -> str:
    """Rewrite ``path`` so it does not pass through a directory that a lower layer holds as a symlink.

    ``links`` maps symlink paths to their (relative-to-root, normalised) targets, e.g. ``{"lib": "usr/lib"}``
    on a merged-/usr base: ``lib/x86_64-linux-gnu/libc.so.6`` becomes ``usr/lib/x86_64-linux-gnu/libc.so.6``.
    Writing ``lib/`` as a directory in an upper layer would shadow the symlink and break the base.
    """
    for _ in range(40):  # bounded: symlink loops are refused, not followed forever
        parts = path.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in links:
                path = clean_path(posixpath.join(links[prefix], *parts[i:]))
                break
        else:
            return path
    raise IntegrityError(f"symlink loop while resolving {path!r}")


def whiteout_of(path: str) -> tuple[str, bool] | None:
    """What the layer entry at ``path`` (a cleaned path) whites out: ``(hidden, opaque)``, or None if it is not a
    whiteout.

    ``dir/.wh.name`` hides ``dir/name`` (``opaque`` False); ``dir/.wh..wh..opq`` hides the contents of ``dir``
    (``hidden`` is ``dir``, ``opaque`` True). The name after ``.wh.`` must be a plain name in the same directory:
    ``.wh.`` alone, ``.wh..`` and ``.wh...`` would hide the directory itself or its parent, so they are refused
    (an :class:`IntegrityError`), never applied. Other ``.wh..wh.*`` names are whiteout metadata (aufs'
    ``.wh..wh.plnk``): they hide nothing and are skipped, as containerd and Docker do.
    """
    head, name = posixpath.split(path)
    if not name.startswith(WHITEOUT_PREFIX):
        return None
    if name == OPAQUE_WHITEOUT:
        return head, True
    if name.startswith(WHITEOUT_META_PREFIX):
        return None
    hidden = name[len(WHITEOUT_PREFIX) :]
    if hidden in ("", ".", "..") or "/" in hidden:
        raise IntegrityError(
            f"layer entry /{path} is a whiteout of {hidden!r}, which is not a name inside its directory",
            "the layer is malformed or hostile; refusing it",
        )
    return posixpath.join(head, hidden), False


V = TypeVar("V")


def is_whiteout_meta(path: str) -> bool:
    """Whether ``path`` is whiteout metadata that is neither a file nor a whiteout (``.wh..wh.plnk``)."""
    name = posixpath.basename(path)
    return name.startswith(WHITEOUT_META_PREFIX) and name != OPAQUE_WHITEOUT


def apply_whiteout(path: str, below: dict[str, V]) -> bool:
    """If ``path`` is a whiteout (``.wh.<name>`` or the opaque ``.wh..wh..opq``), drop what it hides from
    ``below`` (the paths of the layers underneath, as keys) and return True; else return False."""
    if is_whiteout_meta(path):
        return True
    found = whiteout_of(path)
    if found is None:
        return False
    hidden, keep_self = found
    prefix = hidden + "/"
    for key in [k for k in below if k.startswith(prefix) or (not keep_self and k == hidden)]:
        del below[key]
    return True
