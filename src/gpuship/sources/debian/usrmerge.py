"""Merged /usr: ``/bin``, ``/sbin``, ``/lib`` (and ``/lib64`` on amd64) are symlinks into ``/usr``.

Bookworm packages still ship files under ``/bin`` or ``/lib``; in a merged image each of those paths is
rewritten through the links (:func:`gpuship.oci.rebase_through_links`), a directory entry for a linked
folder becomes the ``/usr`` folder, and a relative symlink that moved is re-pointed so it still reaches the
same file. Upper layers use the same ``links`` so they never shadow a link with a real folder.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import replace

from ...errors import IntegrityError
from ...oci.entry import Entry, clean_path, rebase_through_links

_COMMON = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib"}
_PER_ARCH = {"amd64": {"lib64": "usr/lib64"}}


def merged_usr_links(arch: str) -> dict[str, str]:
    """The top-level symlinks of a merged-/usr Debian on ``arch`` (path -> relative target)."""
    return {**_COMMON, **_PER_ARCH.get(arch, {})}


def link_entries(links: Mapping[str, str]) -> list[Entry]:
    out = [Entry.symlink(path, target) for path, target in sorted(links.items())]
    out += [Entry.dir(target) for _, target in sorted(links.items())]
    return out


def rebase_path(path: str, links: Mapping[str, str]) -> str:
    """Where ``path`` lives in the merged image (a linked folder itself maps to its target)."""
    if path in links:
        return links[path]
    return rebase_through_links(path, links)


def rebase_entry(e: Entry, links: Mapping[str, str]) -> Entry | None:
    """``e`` moved through ``links``; None for an entry that *is* one of the links (the base owns those)."""
    if e.path in links:
        if e.kind == "dir":
            return e.moved(links[e.path])
        if e.kind == "symlink":
            return None  # a package (trixie's base-files) shipping the link itself: ours is the same
        raise IntegrityError(f"a package ships /{e.path} as a {e.kind}, but it must be a link to /{links[e.path]}")
    new = rebase_through_links(e.path, links)
    if e.kind == "hardlink":
        return replace(e, path=new, target=rebase_path(e.target, links))
    if new == e.path:
        return e
    if e.kind == "symlink" and not e.target.startswith("/"):
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(e.path), e.target))
        if not resolved.startswith(".."):
            resolved = rebase_path(clean_path(resolved), links) if resolved not in ("", ".") else ""
            target = posixpath.relpath(resolved or ".", posixpath.dirname(new) or ".")
            return replace(e, path=new, target=target)
    return e.moved(new)
