"""The OCI image layout (image-spec ``image-layout.md``): the blob set of an image, and the layout writer.

Every archive format gpuship writes is this layout, tarred up (``oci-archive``) or with Docker's legacy files
added (``docker-archive``), so the pieces here are shared:

* :func:`blobs_of` — every blob an :class:`Image` / :class:`Index` needs (manifests, configs, layers), unique
  and sorted by digest;
* :func:`layout_entries` — the whole layout as :class:`~gpuship.oci.entry.Entry` values, ready for the
  reproducible tar writer;
* :func:`write_oci_layout` — the layout as a directory;
* :func:`atomic_file` — write a file under a temp name, rename it into place only once complete.

Layer blobs are streamed from the cache and checked against their digest while they are copied, so a cache
file that rotted on disk is refused instead of shipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from ..cache import parse_digest
from ..errors import GpushipError, IntegrityError
from ..streams import CHUNK, Reader
from .entry import Entry
from .image import Image, Index, canonical_json
from .layer import Layer
from .media import OCI_INDEX
from .spec import Descriptor

ImageOrIndex = Image | Index

OCI_LAYOUT_FILE = "oci-layout"
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
INDEX_FILE = "index.json"
#: The annotation that names a manifest inside a layout (``umoci --image DIR:TAG``, ``skopeo oci:DIR:TAG``).
REF_NAME = "org.opencontainers.image.ref.name"
#: The annotation containerd (and Docker 25+ with the containerd store) reads on import.
CONTAINERD_NAME = "io.containerd.image.name"


# -- blobs ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blob:
    """One content-addressed blob of an image and how to read it."""

    digest: str
    size: int
    media_type: str
    open: Callable[[], Reader]

    @property
    def path(self) -> str:
        """Its place in a layout: ``blobs/sha256/<hex>``."""
        algo, hexpart = parse_digest(self.digest)
        return f"blobs/{algo}/{hexpart}"


def blob_path(digest: str) -> str:
    algo, hexpart = parse_digest(digest)
    return f"blobs/{algo}/{hexpart}"


class _VerifiedReader:
    """Reads a blob and fails at its end (or on a short read) if its bytes are not the expected ones."""

    def __init__(
        self, fh: Reader, digest: str, size: int, what: str, on_damage: Callable[[str], None] | None = None
    ) -> None:
        self._fh, self._digest, self._size, self._what = fh, digest, size, what
        self._on_damage = on_damage
        self._hash = hashlib.sha256()
        self._seen = 0
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._hash.update(data)
        self._seen += len(data)
        if (not data and n != 0) or self._seen >= self._size:
            self._check(eof=not data)
        return data

    def _check(self, eof: bool) -> None:
        if self._checked:
            return
        if self._seen < self._size or (self._seen > self._size):
            self._damaged(f"{self._what} {self._digest} has {self._seen} bytes, expected {self._size}")
        if eof or self._seen == self._size:
            got = "sha256:" + self._hash.hexdigest()
            if got != self._digest:
                self._damaged(f"{self._what} {self._digest} does not match its content ({got})")
            self._checked = True

    def _damaged(self, what: str) -> None:
        if self._on_damage is not None:
            self._on_damage(what)
            raise IntegrityError(what, "the damaged cached blob was removed; run the command again to make it anew")
        raise IntegrityError(what, "the cached blob is damaged; run gpuship cache prune and rebuild")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> _VerifiedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bytes_blob(data: bytes, media_type: str) -> Blob:

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return Blob(digest, len(data), media_type, lambda: io.BytesIO(data))


def images_of(obj: ImageOrIndex) -> tuple[Image, ...]:
    return obj.images if isinstance(obj, Index) else (obj,)


def blobs_of(obj: ImageOrIndex) -> list[Blob]:
    """Every blob ``obj`` needs (index, manifests, configs, layers), each once, sorted by digest."""
    found: dict[str, Blob] = {}

    def add(b: Blob) -> None:
        found.setdefault(b.digest, b)

    if isinstance(obj, Index):
        add(_bytes_blob(obj.manifest_bytes(), obj.family.index))
    for img in images_of(obj):
        add(_bytes_blob(img.manifest_bytes(), img.family.manifest))
        add(_bytes_blob(img.config_bytes(), img.family.config))
        for layer in img.layers:
            add(
                Blob(
                    layer.digest,
                    layer.size,
                    img.family.layer(layer.compression),
                    partial(_open_layer, layer),
                )
            )
    return [found[d] for d in sorted(found)]


def _open_layer(layer: Layer) -> _VerifiedReader:
    """``layer``'s blob, checked as it is read; a damaged one is dropped from the cache."""
    cache = layer.cache
    return _VerifiedReader(layer.open(), layer.digest, layer.size, "layer", lambda why: cache.drop(layer.digest, why))


def top_descriptor(obj: ImageOrIndex, annotations: Mapping[str, str] | None = None) -> Descriptor:
    """The descriptor ``index.json`` lists for ``obj`` (with ``annotations``, e.g. its ref name)."""
    if isinstance(obj, Index):
        data = obj.manifest_bytes()
        d: Descriptor = {"mediaType": obj.family.index, "digest": obj.digest, "size": len(data)}
    else:
        d = obj.descriptor()
    if annotations:
        d["annotations"] = dict(annotations)
    return d


def index_json(descriptors: Sequence[Mapping[str, object]]) -> bytes:
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(descriptors)})


def layout_entries(obj: ImageOrIndex, descriptors: Sequence[Mapping[str, object]] | None = None) -> list[Entry]:
    """The OCI layout of ``obj`` as entries: ``oci-layout``, ``index.json`` (listing ``descriptors``, by default
    the one untagged top descriptor) and ``blobs/sha256/*``. Modes are fixed (0644 files, 0755 dirs)."""
    descs = list(descriptors) if descriptors is not None else [top_descriptor(obj)]
    out = [Entry.file(OCI_LAYOUT_FILE, OCI_LAYOUT_BYTES), Entry.file(INDEX_FILE, index_json(descs))]
    out += [Entry.dir("blobs"), Entry.dir("blobs/sha256")]
    out += [Entry.stream(b.path, b.size, b.open) for b in blobs_of(obj)]
    return out


# -- atomic output ----------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_file_mode() -> int:
    return 0o666 & ~_umask()


def _cannot_write(path: Path, exc: OSError) -> GpushipError:
    return GpushipError(
        f"cannot write {path}: {exc.strerror or exc}", "check that its directory exists and is writable"
    )


@contextmanager
def atomic_file(path: Path | str) -> Iterator[IO[bytes]]:
    """Yield a file to fill; it appears at ``path`` only if the block finishes, else nothing is left."""
    path = Path(path)
    if path.is_dir():
        raise GpushipError(f"cannot write {path}: it is a directory", "give a file name for the archive")
    try:
        fd, tmpname = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    tmp = Path(tmpname)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path | str, data: object) -> None:
    """``data`` as indented, key-sorted JSON at ``path`` (its folder made), complete or not there at all."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    with atomic_file(path) as fh:
        fh.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _copy_blob(blob: Blob, dest: Path) -> None:
    """Put ``blob`` at ``dest`` (temp + rename), unless a file of the right size is already there."""
    if dest.is_file() and dest.stat().st_size == blob.size:
        return
    with atomic_file(dest) as out, blob.open() as src:
        left = blob.size
        while left > 0:
            chunk = src.read(min(CHUNK, left))
            if not chunk:
                raise IntegrityError(f"blob {blob.digest} ended early", "the cached blob is damaged; rebuild")
            out.write(chunk)
            left -= len(chunk)
        if isinstance(src, _VerifiedReader):
            src.read(1)  # reach EOF: checks the digest and that nothing follows


# -- the layout directory ----------------------------------------------------------------------------------------
def _is_layout(path: Path) -> bool:
    return (path / OCI_LAYOUT_FILE).is_file() and (path / INDEX_FILE).is_file()


def _fill_layout(obj: ImageOrIndex, root: Path, descriptors: Sequence[Mapping[str, object]]) -> None:
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    for blob in blobs_of(obj):
        _copy_blob(blob, root / blob.path)
    with atomic_file(root / OCI_LAYOUT_FILE) as fh:
        fh.write(OCI_LAYOUT_BYTES)
    with atomic_file(root / INDEX_FILE) as fh:
        fh.write(index_json(descriptors))


def write_oci_layout(obj: ImageOrIndex, directory: Path | str, tag: str | None = None) -> Path:
    """Write ``obj`` as an OCI image layout directory; ``tag`` names it (``org.opencontainers.image.ref.name``).

    A new directory is assembled under a temp name next to it and renamed into place, so it is complete or
    absent. An existing layout is added to, like ``skopeo copy ... oci:DIR:TAG`` does: blobs are added,
    and ``index.json`` (replaced atomically) gets the new descriptor, replacing one with the same tag.
    """
    root = Path(directory)
    if tag is not None:
        _check_layout_tag(tag)
    annotations = {REF_NAME: tag} if tag else None
    ours = top_descriptor(obj, annotations)
    if root.exists() and not root.is_dir():
        raise GpushipError(f"cannot write an OCI layout to {root}: it is a file", "give a directory path")
    if root.is_dir() and any(root.iterdir()):
        if not _is_layout(root):
            raise GpushipError(
                f"{root} is not empty and not an OCI layout", "give a new or empty directory, or an existing layout"
            )
        try:
            existing = json.loads((root / INDEX_FILE).read_bytes())
            manifests = list(existing.get("manifests") or [])
        except (ValueError, AttributeError) as exc:
            raise IntegrityError(f"{root / INDEX_FILE} is not valid JSON", "repair or remove the layout") from exc
        keep = [
            d
            for d in manifests
            if not (
                (tag and (d.get("annotations") or {}).get(REF_NAME) == tag)
                or (not tag and d.get("digest") == ours["digest"] and not d.get("annotations"))
            )
        ]
        _fill_layout(obj, root, keep + [ours])
        return root
    parent = root.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=parent, prefix=f".{root.name}.", suffix=".tmp"))
    except OSError as exc:
        raise _cannot_write(root, exc) from exc
    try:
        os.chmod(work, 0o777 & ~_umask())
        _fill_layout(obj, work, [ours])
        os.replace(work, root)  # replaces an empty directory too
    except OSError as exc:
        raise _cannot_write(root, exc) from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return root


def _check_layout_tag(tag: str) -> None:

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._:@/+-]{0,254}", tag):
        raise GpushipError(f"{tag!r} is not a usable OCI layout tag", "use letters, digits, '.', '_' or '-'")
