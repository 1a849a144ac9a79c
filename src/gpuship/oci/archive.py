"""``oci-archive``: the OCI image layout as one reproducible tar file (what ``skopeo copy oci-archive:`` reads)."""

from __future__ import annotations

from pathlib import Path

from ..streams import Writer
from .layout import (
    REF_NAME,
    ImageOrIndex,
    _check_layout_tag,
    atomic_file,
    layout_entries,
    top_descriptor,
)
from .tarball import write_tar


def write_oci_archive_to(obj: ImageOrIndex, out: Writer, tag: str | None = None) -> None:
    """Stream the archive to an open binary file (sorted entries, mtime 0, owner 0:0)."""
    if tag is not None:
        _check_layout_tag(tag)
    desc = top_descriptor(obj, {REF_NAME: tag} if tag else None)
    write_tar(layout_entries(obj, [desc]), out, mtime=0, link_identical=False)


def write_oci_archive(obj: ImageOrIndex, path: Path | str, tag: str | None = None) -> Path:
    """Write ``obj`` (an Image or a multi-platform Index) as an oci-archive file.

    The file is written under a temp name beside ``path`` and renamed into place when complete.
    ``tag`` names the manifest in ``index.json`` (``org.opencontainers.image.ref.name``).
    """
    path = Path(path)
    with atomic_file(path) as fh:
        write_oci_archive_to(obj, fh, tag)
    return path
