"""``docker-archive``: what ``docker save`` writes and ``docker load`` reads, in Docker 25+'s combined form.

The archive is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) plus Docker's legacy
files, so engines old and new load it:

* ``manifest.json`` — ``[{"Config": "blobs/sha256/<config>", "RepoTags": [...], "Layers": ["blobs/sha256/<layer>", ...]}]``;
  Docker before 25 (Debian's 20.10 included) and ``skopeo docker-archive:`` read only this;
* ``repositories`` — ``{"<name>": {"<tag>": "<top layer hex>"}}``, for the very oldest readers.

``Layers`` point at the same (compressed) blobs the OCI manifest lists: ``docker load`` decompresses gzip
layers itself and checks each against the config's ``diff_ids``. Layers stored with zstd would not load in an
engine older than 23, so for those ``manifest.json`` points at an uncompressed copy of the tar, stored as
``blobs/sha256/<diff_id>`` (a valid blob of its own: its digest is the diff_id), just as Docker 25 does for
every layer.

For an :class:`Index`, the OCI part holds every platform; ``manifest.json`` (one image per entry, no platform
field) lists only one of them: the host's platform when the index has it, else the first by platform order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..errors import GpushipError
from ..streams import Writer
from .entry import Entry
from .image import Image, Platform, canonical_json
from .layer import Layer
from .layout import (
    CONTAINERD_NAME,
    REF_NAME,
    ImageOrIndex,
    _VerifiedReader,
    atomic_file,
    blob_path,
    images_of,
    layout_entries,
    top_descriptor,
)
from .tarball import write_tar

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?"
_NAME_RE = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class DockerTag:
    """A ``name:tag`` an engine can hold (no digest)."""

    name: str
    tag: str = "latest"

    @classmethod
    def parse(cls, ref: str) -> DockerTag:
        text = ref.strip()
        name, tag = text, "latest"
        last = text.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = text.rsplit(":", 1)
        if "@" in text or not _NAME_RE.fullmatch(name) or not _TAG_RE.fullmatch(tag) or len(name) > 255:
            raise GpushipError(
                f"{ref!r} is not a valid image name for an engine",
                "use lowercase name[:tag], e.g. myapp:1.0 or registry.example:5000/team/myapp:latest",
            )
        return cls(name, tag)

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def full_name(self) -> str:
        """The fully qualified form containerd records (``docker.io/library/myapp:latest``)."""
        first, _, rest = self.name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            return str(self)
        return f"docker.io/{self.name if rest else 'library/' + self.name}:{self.tag}"


def pick_image(obj: ImageOrIndex, platform: Platform | str | None = None) -> Image:
    """The one image ``manifest.json`` lists: ``platform`` (default: the host's) if present, else the first."""
    if isinstance(obj, Image):
        return obj
    if not obj.images:
        raise GpushipError("the index holds no images", "build at least one platform")
    want = (
        Platform.host() if platform is None else (Platform.parse(platform) if isinstance(platform, str) else platform)
    )
    for img in obj.images:
        if img.platform.os == want.os and img.platform.architecture == want.architecture:
            return img
    if platform is not None:
        return obj.for_platform(want)  # raises with the list of platforms
    return sorted(obj.images, key=lambda i: i.platform)[0]


class _TarOfLayer:
    """The uncompressed tar of a layer, checked against its diff_id as it is read."""

    def __init__(self, layer: Layer) -> None:
        self._reader = _VerifiedReader(layer.open_tar(), layer.diff_id, layer.uncompressed_size, "layer tar")

    def read(self, n: int = -1) -> bytes:
        return self._reader.read(n)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> _TarOfLayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _needs_plain_copy(layer: Layer) -> bool:
    return layer.compression == "zstd"


def docker_archive_entries(
    obj: ImageOrIndex,
    tags: Sequence[str] = (),
    platform: Platform | str | None = None,
    *,
    omit: frozenset[str] = frozenset(),
    legacy: bool = True,
) -> list[Entry]:
    """The archive's entries: the OCI layout, ``manifest.json`` and ``repositories``.

    For a load that sends only what an engine lacks (:mod:`.engine`): ``omit`` names layers (by diff_id) whose
    files are left out, and ``legacy=False`` leaves out ``manifest.json`` and ``repositories`` (containerd reads
    the OCI layout alone, and a ``manifest.json`` would make it want every layer file).
    """
    parsed = list(dict.fromkeys(DockerTag.parse(t) for t in tags))
    if parsed:
        descs = [top_descriptor(obj, {CONTAINERD_NAME: t.full_name, REF_NAME: t.tag}) for t in parsed]
    else:
        descs = [top_descriptor(obj)]
    entries = layout_entries(obj, descs)
    if omit:
        gone = {blob_path(x.digest) for i in images_of(obj) for x in i.layers if x.diff_id in omit}
        entries = [e for e in entries if e.path not in gone]
    if not legacy:
        return entries
    have = {e.path for e in entries}

    img = pick_image(obj, platform)
    layer_paths: list[str] = []
    for layer in img.layers:
        if _needs_plain_copy(layer):
            path = blob_path(layer.diff_id)
            if path not in have and layer.diff_id not in omit:
                entries.append(Entry.stream(path, layer.uncompressed_size, partial(_TarOfLayer, layer)))
                have.add(path)
        else:
            path = blob_path(layer.digest)
        layer_paths.append(path)
    manifest = [
        {
            "Config": blob_path(img.config_descriptor()["digest"]),
            "RepoTags": [str(t) for t in parsed] or None,
            "Layers": layer_paths,
        }
    ]
    repos: dict[str, dict[str, str]] = {}
    if img.layers:
        top = layer_paths[-1].rsplit("/", 1)[-1]
        for t in parsed:
            repos.setdefault(t.name, {})[t.tag] = top
    entries.append(Entry.file("manifest.json", canonical_json(manifest)))
    entries.append(Entry.file("repositories", canonical_json(repos)))
    return entries


def write_docker_archive_to(
    obj: ImageOrIndex,
    out: Writer,
    tags: Sequence[str] = (),
    platform: Platform | str | None = None,
    *,
    omit: frozenset[str] = frozenset(),
    legacy: bool = True,
) -> None:
    """Stream the archive to an open binary file or pipe (sorted entries, mtime 0, owner 0:0); ``omit`` and
    ``legacy`` as in :func:`docker_archive_entries`."""
    entries = docker_archive_entries(obj, tags, platform, omit=omit, legacy=legacy)
    write_tar(entries, out, mtime=0, link_identical=False)


def write_docker_archive(
    obj: ImageOrIndex, path: Path | str, tags: Sequence[str] = (), platform: Platform | str | None = None
) -> Path:
    """Write ``obj`` as a docker-archive file that ``docker load`` (any version) and skopeo read.

    ``tags`` become the image's names on load (``name`` alone means ``name:latest``). For an Index, all
    platforms go in the OCI part and ``platform`` (default: the host's, else the first) in ``manifest.json``.
    The file is written under a temp name and renamed into place when complete.
    """
    path = Path(path)
    with atomic_file(path) as fh:
        write_docker_archive_to(obj, fh, tags, platform)
    return path
