"""Who owns a file: Python distributions (``*.dist-info/RECORD``) and Debian packages (dpkg's database).

Both read only the small database files of an image and return, per package, the image paths it lists. The
caller matches those paths against the files it saw. Each database is read as a stream, one at a time, from an
opener the caller gives; one larger than :data:`MAX_DATABASE` is not read at all (its files count as unowned),
so a hostile image with a 2 GiB ``var/lib/dpkg/status`` costs no memory.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from debian.deb822 import Deb822

from ..oci.entry import clean_path, rebase_through_links

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_INFO = "var/lib/dpkg/info/"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
_DIST_INFO = re.compile(r"(?:^|/)([^/]+)\.dist-info/RECORD$")
#: Folders in which packages keep their vendored dependencies (with their dist-info): not installed distributions.
_VENDORED = re.compile(r"^_?vendor(ed)?(_packages)?$")
#: The largest package database read (dpkg's status of a large image is a few MB, a RECORD far less).
MAX_DATABASE = 64 << 20
#: Opens one database file for reading (from a layer's spool, or a file in an unpacked tree).
Opener = Callable[[], BinaryIO]


@dataclass(frozen=True)
class Package:
    """A Python distribution or a Debian package, and the image paths it owns."""

    kind: str  # "python" | "debian"
    name: str
    version: str
    paths: tuple[str, ...]
    declared_size: int = 0  # dpkg's Installed-Size in bytes (Debian only)


def is_owner_database(path: str) -> bool:
    """Whether ``path`` is a file :func:`python_distributions` or :func:`debian_packages` needs to read."""
    return (
        bool(_DIST_INFO.search(path))
        or path == DPKG_STATUS
        or (path.startswith(DPKG_INFO) and path.endswith(".list"))
        or path.startswith(DPKG_STATUS_D)
    )


def _safe(path: str) -> str | None:
    try:
        return clean_path(path)
    except Exception:
        return None


def _lines(opener: Opener) -> Iterator[str]:
    with opener() as fh:
        yield from io.TextIOWrapper(fh, "utf-8", "replace", newline="")


def python_distributions(records: Mapping[str, Opener], links: dict[str, str]) -> list[Package]:
    """Distributions from their ``RECORD`` files (``{image path of RECORD: its opener}``).

    RECORD paths are relative to the directory that holds the ``.dist-info`` (``../../../bin/tool`` reaches
    scripts), and are resolved through the image's directory symlinks. A RECORD that is not CSV is skipped.
    """
    out = []
    for record_path, opener in sorted(records.items()):
        m = _DIST_INFO.search(record_path)
        if not m:
            continue
        dist_dir = posixpath.dirname(record_path)
        site = posixpath.dirname(dist_dir)
        if any(_VENDORED.match(part) for part in site.split("/")):
            continue  # a copy a package vendors (setuptools/_vendor/packaging-*.dist-info): not installed
        name, _, version = m.group(1).partition("-")
        paths = []
        try:
            for row in csv.reader(_lines(opener)):
                if not row or not row[0]:
                    continue
                p = _safe(posixpath.normpath(posixpath.join(site, row[0])))
                if p:
                    paths.append(rebase_through_links(p, links))
        except csv.Error:
            continue  # not a RECORD (a field over csv's limit, a NUL byte): it owns nothing
        out.append(Package("python", name, version, tuple(paths)))
    return out


def _paragraphs(opener: Opener) -> Iterator[Deb822]:
    with opener() as fh:
        yield from Deb822.iter_paragraphs(fh)


def debian_packages(files: Mapping[str, Opener], links: dict[str, str]) -> list[Package]:
    """Installed packages from dpkg's ``status`` + ``info/*.list``, or distroless-style ``status.d/``."""
    pkgs: dict[str, tuple[str, int]] = {}
    lists: dict[str, list[str]] = {}
    status = files.get(DPKG_STATUS)
    if status is not None:
        for para in _paragraphs(status):
            if "installed" not in para.get("Status", "install ok installed").split():
                continue
            pkgs[para.get("Package", "?")] = (para.get("Version", ""), _kib(para.get("Installed-Size")))
    for path, opener in files.items():
        if path.startswith(DPKG_INFO) and path.endswith(".list"):
            pkg = posixpath.basename(path)[: -len(".list")].split(":")[0]
            lists[pkg] = [line.rstrip("\n") for line in _lines(opener)]
        elif path.startswith(DPKG_STATUS_D):
            base = posixpath.basename(path)
            if base.endswith(".md5sums"):
                parts = (ln.split(None, 1) for ln in _lines(opener))
                lists[base[: -len(".md5sums")]] = [p[1].rstrip("\n") for p in parts if len(p) == 2]
            else:
                for para in _paragraphs(opener):
                    if para.get("Package"):
                        pkgs[para["Package"]] = (para.get("Version", ""), _kib(para.get("Installed-Size")))
    out = []
    for name in sorted(pkgs):
        version, declared = pkgs[name]
        paths = []
        for p in lists.get(name, []):
            c = _safe(p)
            if c:
                paths.append(rebase_through_links(c, links))
        out.append(Package("debian", name, version, tuple(paths), declared))
    return out


def _kib(value: str | None) -> int:
    try:
        return int(value or 0) * 1024
    except ValueError:
        return 0
