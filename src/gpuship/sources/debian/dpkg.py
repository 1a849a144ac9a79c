"""The dpkg database of the image: ``/var/lib/dpkg/status`` and ``/var/lib/dpkg/info/<pkg>.list|.md5sums``.

Written the way dpkg writes them, so ``dpkg-query``, Trivy and Syft see exactly what is installed: one
status paragraph per package (its control fields, ``Status: install ok installed``, ``Conffiles`` with
their sums), and per package the list of the paths it put in the image (as the package names them).
Files that slimming dropped are not listed, as with dpkg's ``path-exclude``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from debian import deb822

from ...oci.entry import Entry
from .deb import DebInfo
from .index import Candidate

ADMINDIR = "var/lib/dpkg"


def status_paragraph(info: DebInfo) -> str:
    ctrl = deb822.Deb822(info.control.splitlines(keepends=True))
    out = deb822.Deb822()
    out["Package"] = ctrl["Package"]
    out["Status"] = "install ok installed"
    for k, v in ctrl.items():
        if k not in ("Package", "Status"):
            out[k] = v
    if info.conffiles:
        out["Conffiles"] = "\n" + "\n".join(f" {path} {md5}" for path, md5 in info.conffiles)
    return out.dump().rstrip("\n") + "\n"


def status_file(installed: Iterable[tuple[Candidate, DebInfo]]) -> bytes:
    paras = [status_paragraph(info) for _, info in sorted(installed, key=lambda ci: (ci[0].name, ci[0].arch))]
    return "\n".join(paras).encode()


def info_name(cand: Candidate) -> str:
    """dpkg's file name for a package's info files (``libc6:amd64`` for Multi-Arch: same)."""
    return f"{cand.name}:{cand.arch}" if cand.multi_arch_same else cand.name


def info_entries(cand: Candidate, info: DebInfo, kept: Sequence[str]) -> list[Entry]:
    """``info/<pkg>.list`` (and ``.md5sums``) for the paths of this package that are in the image."""
    name = info_name(cand)
    lines = ["/."] + [f"/{p}" for p in kept]
    out = [Entry.file(f"{ADMINDIR}/info/{name}.list", "\n".join(lines) + "\n")]
    keep = set(kept)
    sums = [
        ln
        for ln in info.md5sums.splitlines()
        if ln.strip() and ln.split(None, 1)[-1].strip().removeprefix("./").lstrip("/") in keep
    ]
    if sums:
        out.append(Entry.file(f"{ADMINDIR}/info/{name}.md5sums", "\n".join(sums) + "\n"))
    return out


def database_entries(installed: Sequence[tuple[Candidate, DebInfo, Sequence[str]]]) -> list[Entry]:
    """The whole dpkg database for the installed packages (with their kept paths)."""
    out = [
        Entry.file(f"{ADMINDIR}/status", status_file((c, i) for c, i, _ in installed)),
        Entry.dir(f"{ADMINDIR}/info"),
        # the multiarch database layout (info/<pkg>:<arch>.list for Multi-Arch: same packages)
        Entry.file(f"{ADMINDIR}/info/format", "1\n"),
        Entry.dir(f"{ADMINDIR}/updates"),
        Entry.file(f"{ADMINDIR}/available", b""),
    ]
    for cand, info, kept in installed:
        out += info_entries(cand, info, kept)
    return out
