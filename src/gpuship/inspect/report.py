"""``inspect_image``: where an image's bytes go — per layer, per Python distribution and Debian package, the
largest files, files stored more than once, and the GPU architectures inside every CUDA library.

Every layer is streamed once (bounded memory: file contents are hashed and measured in chunks; only ELF files
are spooled, one at a time, so their fatbin sections can be read). Sizes come in two kinds:

* ``size``: uncompressed bytes of file contents;
* ``compressed``: each file's share of its layer's compressed blob. The blob is one compressed stream, so a
  file has no compressed size of its own: each file is compressed alone (zstd level 1, fast) and the layer's
  real compressed size is split in proportion. Shares of one layer add up to that layer's size exactly.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, BinaryIO

import zstandard

from ..oci.entry import clean_path, is_whiteout_meta, whiteout_of
from ..oci.image import Image
from ..oci.layer import Layer
from ..progress import NO_PROGRESS, Progress
from ..streams import CHUNK, Reader
from .cudalib import CudaLibrary, is_elf, read_cuda_library
from .fatbin import MAGIC_BYTES, FatbinError
from .owners import MAX_DATABASE, Package, debian_packages, is_owner_database, python_distributions

#: ELF files up to this size are spooled in memory, larger ones to a temporary file.
SPOOL_IN_MEMORY = 64 << 20
ESTIMATE_LEVEL = 1

if TYPE_CHECKING:  # the buffer types of io's stubs
    from _typeshed import WriteableBuffer


@dataclass(frozen=True)
class FileRecord:
    """A regular file as stored in one layer."""

    layer: int
    path: str
    size: int
    sha256: str
    compressed: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "layer": self.layer,
            "path": "/" + self.path,
            "size": self.size,
            "compressed": self.compressed,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class LayerReport:
    index: int
    digest: str
    comment: str
    size: int  # compressed blob
    uncompressed_size: int  # the tar stream
    files: int
    file_bytes: int
    whiteouts: int

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "digest": self.digest,
            "comment": self.comment,
            "size": self.size,
            "uncompressed_size": self.uncompressed_size,
            "files": self.files,
            "file_bytes": self.file_bytes,
            "whiteouts": self.whiteouts,
        }


@dataclass(frozen=True)
class PackageReport:
    """A Python distribution or Debian package: the files of it the final image holds."""

    kind: str
    name: str
    version: str
    files: int
    size: int
    compressed: int
    layers: tuple[int, ...]
    declared_size: int = 0

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "files": self.files,
            "size": self.size,
            "compressed": self.compressed,
            "layers": list(self.layers),
        }
        if self.kind == "debian":
            d["installed_size"] = self.declared_size
        return d


@dataclass(frozen=True)
class Duplicate:
    """Identical content stored more than once (hard links inside one layer are not counted: they store once)."""

    sha256: str
    size: int
    copies: tuple[tuple[int, str], ...]  # (layer, path)

    @property
    def wasted(self) -> int:
        return self.size * (len(self.copies) - 1)

    def to_json(self) -> dict[str, object]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "wasted": self.wasted,
            "copies": [{"layer": layer, "path": "/" + p} for layer, p in self.copies],
        }


@dataclass(frozen=True)
class CudaLibraryReport:
    layer: int
    path: str
    size: int
    library: CudaLibrary | None
    error: str = ""

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {"layer": self.layer, "path": "/" + self.path, "size": self.size}
        if self.library is not None:
            d.update(self.library.to_json())
        if self.error:
            d["error"] = self.error
        return d


@dataclass(frozen=True)
class ImageReport:
    platform: str
    digest: str
    size: int
    uncompressed_size: int
    layers: tuple[LayerReport, ...]
    largest: tuple[FileRecord, ...]
    duplicates: tuple[Duplicate, ...]
    python: tuple[PackageReport, ...]
    debian: tuple[PackageReport, ...]
    cuda: tuple[CudaLibraryReport, ...]
    final_files: int
    final_bytes: int
    shadowed_bytes: int  # stored in a layer but hidden by a later one (overwritten or deleted)
    unowned_bytes: int  # in the final view, owned by no Python distribution nor Debian package, and no model
    unowned_compressed: int
    #: The final view in blocks for a treemap: (layer, kind, label, bytes, compressed); kind is python, debian,
    #: model, dir (unowned files, by directory) or other (the small rest of a layer).
    blocks: tuple[tuple[int, str, str, int, int], ...] = field(default=())
    #: Model files (weights by name, hub caches, gpuship's model layers), per model: see :func:`model_of`.
    models: tuple[PackageReport, ...] = field(default=())

    @property
    def duplicate_bytes(self) -> int:
        return sum(d.wasted for d in self.duplicates)

    def to_json(self) -> dict[str, object]:
        return {
            "platform": self.platform,
            "digest": self.digest,
            "size": self.size,
            "uncompressed_size": self.uncompressed_size,
            "final_files": self.final_files,
            "final_bytes": self.final_bytes,
            "shadowed_bytes": self.shadowed_bytes,
            "duplicate_bytes": self.duplicate_bytes,
            "unowned_bytes": self.unowned_bytes,
            "unowned_compressed": self.unowned_compressed,
            "model_bytes": sum(m.size for m in self.models),
            "model_compressed": sum(m.compressed for m in self.models),
            "models": [m.to_json() for m in self.models],
            "layers": [layer.to_json() for layer in self.layers],
            "python": [p.to_json() for p in self.python],
            "debian": [p.to_json() for p in self.debian],
            "largest": [f.to_json() for f in self.largest],
            "duplicates": [d.to_json() for d in self.duplicates],
            "cuda": [c.to_json() for c in self.cuda],
            "blocks": [
                {"layer": layer, "kind": k, "label": n, "size": s, "compressed": c} for layer, k, n, s, c in self.blocks
            ],
        }


# -- reading one layer ----------------------------------------------------------------------------------------
@dataclass
class _LayerScan:
    files: list[FileRecord] = field(default_factory=list)
    estimates: list[int] = field(default_factory=list)
    hardlinks: list[tuple[str, str]] = field(default_factory=list)
    symlinks: dict[str, str] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    databases: dict[str, _Spooled] = field(default_factory=dict)
    cuda: list[CudaLibraryReport] = field(default_factory=list)


class _Spooled:
    """A package database kept from a layer: in memory while small, on disk beyond (never the whole of a big one:
    files over :data:`~gpuship.inspect.owners.MAX_DATABASE` are not kept)."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=1 << 20)

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def reader(self) -> BinaryIO:
        """The bytes from the start, in a reader whose ``close`` leaves the spool open for the next reader."""
        self._file.seek(0)
        return io.BufferedReader(_Unclosed(self._file))

    def close(self) -> None:
        self._file.close()


class _Unclosed(io.RawIOBase):
    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def readable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer) -> int:
        view = memoryview(b).cast("B")
        data = self._fh.read(len(view))
        view[: len(data)] = data
        return len(data)


def _link_target(path: str, target: str) -> str | None:
    base = "" if target.startswith("/") else posixpath.dirname(path)
    try:
        return clean_path(posixpath.join(base, target))
    except Exception:
        return None


def _scan_file(
    index: int, path: str, size: int, fh: Reader, scan: _LayerScan, compressor: zstandard.ZstdCompressor
) -> None:
    sha = hashlib.sha256()
    z = compressor.compressobj()
    estimate = 0
    spool: tempfile.SpooledTemporaryFile[bytes] | None = None
    db = _Spooled() if is_owner_database(path) and size <= MAX_DATABASE else None
    has_magic = False
    tail = b""
    first = True
    try:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            estimate += len(z.compress(chunk))
            if first:
                first = False
                if is_elf(chunk):
                    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
            if spool is not None:
                spool.write(chunk)
                has_magic = has_magic or MAGIC_BYTES in tail + chunk[:3] or MAGIC_BYTES in chunk
                tail = chunk[-3:]
            if db is not None:
                db.write(chunk)
        estimate += len(z.flush())
        scan.files.append(FileRecord(index, path, size, sha.hexdigest()))
        scan.estimates.append(max(estimate, 1) if size else 0)
        if db is not None:
            scan.databases[path] = db
            db = None
        if spool is not None and has_magic:
            try:
                lib = read_cuda_library(spool)
                if lib is not None:
                    scan.cuda.append(CudaLibraryReport(index, path, size, lib))
            except FatbinError as exc:
                scan.cuda.append(CudaLibraryReport(index, path, size, None, str(exc)))
    finally:
        if spool is not None:
            spool.close()
        if db is not None:
            db.close()


def _scan_layer(index: int, layer: Layer) -> _LayerScan:
    scan = _LayerScan()
    compressor = zstandard.ZstdCompressor(level=ESTIMATE_LEVEL)
    for entry, fh in layer.entries():
        whiteout = whiteout_of(entry.path) if entry.kind == "file" else None
        if entry.kind == "file" and is_whiteout_meta(entry.path):
            continue
        if whiteout is not None:
            (scan.opaque if whiteout[1] else scan.whiteouts).append(whiteout[0])
        elif entry.kind == "file" and fh is not None:
            _scan_file(index, entry.path, entry.size, fh, scan, compressor)
        elif entry.kind == "hardlink":
            scan.hardlinks.append((entry.path, entry.target))
        elif entry.kind == "symlink":
            target = _link_target(entry.path, entry.target)
            if target is not None:
                scan.symlinks[entry.path] = target
    # Split the layer's real compressed size over its files, in proportion to their own compressed sizes.
    total = sum(scan.estimates)
    if total:
        scan.files = [
            FileRecord(f.layer, f.path, f.size, f.sha256, layer.size * est // total)
            for f, est in zip(scan.files, scan.estimates, strict=True)
        ]
    return scan


# -- the whole image ------------------------------------------------------------------------------------------
def _remove_tree(view: dict[str, FileRecord], path: str, keep_self: bool = False) -> None:
    prefix = path + "/" if path else ""
    for p in [p for p in view if p.startswith(prefix) or (not keep_self and p == path)]:
        del view[p]


@dataclass
class _Merged:
    """The image's filesystem as its layers build it up, and what the report keeps along the way."""

    view: dict[str, FileRecord] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    databases: dict[str, _Spooled] = field(default_factory=dict)
    by_hash: defaultdict[str, list[FileRecord]] = field(default_factory=lambda: defaultdict(list))
    cuda: dict[str, CudaLibraryReport] = field(default_factory=dict)
    all_files: list[FileRecord] = field(default_factory=list)

    def remove(self, scan: _LayerScan) -> None:
        """Apply the layer's opaque directories and whiteouts to what the layers below left."""
        for opaque_dir in scan.opaque:
            _remove_tree(self.view, opaque_dir, keep_self=True)
            self.links = {k: v for k, v in self.links.items() if not k.startswith(opaque_dir + "/")}
        for gone in scan.whiteouts:
            _remove_tree(self.view, gone)
            self.links.pop(gone, None)
            for k in [k for k in self.databases if k == gone or k.startswith(gone + "/")]:
                self.databases.pop(k).close()
            for k in [k for k in self.cuda if k == gone or k.startswith(gone + "/")]:
                del self.cuda[k]

    def add(self, index: int, scan: _LayerScan) -> None:
        """Lay the layer's files, links, package databases and CUDA libraries over what is there."""
        for f in scan.files:
            self.view[f.path] = f
            self.links.pop(f.path, None)
            self.by_hash[f.sha256].append(f)
            self.all_files.append(f)
        for path, target in scan.hardlinks:
            if target in self.view:  # a second name for stored content: it takes no space of its own
                self.view[path] = FileRecord(index, path, 0, self.view[target].sha256, 0)
        for path, target in scan.symlinks.items():
            self.links[path] = target
            self.view.pop(path, None)
        for path, db in scan.databases.items():
            if path in self.databases:
                self.databases[path].close()
            self.databases[path] = db
        for c in scan.cuda:
            self.cuda[c.path] = c

    def packages(self) -> list[Package]:
        """The Python distributions and Debian packages the final filesystem's databases list (closes them)."""
        databases, links = self.databases, self.links
        try:
            found = python_distributions({p: d.reader for p, d in databases.items() if p.endswith("/RECORD")}, links)
            found += debian_packages({p: d.reader for p, d in databases.items() if not p.endswith("/RECORD")}, links)
        finally:
            for db in databases.values():
                db.close()
        return found


def _merge_layers(image: Image, progress: Progress) -> tuple[_Merged, list[LayerReport]]:
    """Read each layer once, bottom to top, into the merged filesystem; one report per layer."""
    merged = _Merged()
    layers: list[LayerReport] = []
    read = 0
    for i, layer in enumerate(image.layers):
        progress.transfer("reading layers", read, image.size)
        read += layer.size
        scan = _scan_layer(i, layer)
        merged.remove(scan)
        merged.add(i, scan)
        layers.append(
            LayerReport(
                i,
                layer.digest,
                layer.comment,
                layer.size,
                layer.uncompressed_size,
                len(scan.files),
                sum(f.size for f in scan.files),
                len(scan.whiteouts) + len(scan.opaque),
            )
        )
    comments = _layer_comments(image)
    return merged, [replace(layer, comment=comments[layer.index]) for layer in layers]


def _package_reports(
    packages: list[Package], view: Mapping[str, FileRecord], owner: dict[str, tuple[str, str]]
) -> dict[str, list[PackageReport]]:
    """Each package's share of the final filesystem, by kind; ``owner`` learns who owns each path."""
    reports: dict[str, list[PackageReport]] = {"python": [], "debian": []}
    for pkg in packages:
        recs = {p: view[p] for p in pkg.paths if p in view}
        owner.update((p, (pkg.kind, pkg.name)) for p in recs)
        reports[pkg.kind].append(
            PackageReport(
                pkg.kind,
                pkg.name,
                pkg.version,
                len(recs),
                sum(r.size for r in recs.values()),
                sum(r.compressed for r in recs.values()),
                tuple(sorted({r.layer for r in recs.values()})),
                pkg.declared_size,
            )
        )
    return reports


def _model_reports(
    view: Mapping[str, FileRecord], layers: list[LayerReport], owner: dict[str, tuple[str, str]]
) -> list[PackageReport]:
    """The model weights no package owns, one report per model; ``owner`` learns their paths."""
    model_layers = {layer.index for layer in layers if layer.comment.startswith("model ")}
    by_model: dict[str, list[FileRecord]] = defaultdict(list)
    for p, r in view.items():
        label = None if p in owner else model_of(p, r.layer in model_layers)
        if label is not None:
            owner[p] = ("model", label)
            by_model[label].append(r)
    return [
        PackageReport(
            "model",
            label,
            "",
            len(recs),
            sum(r.size for r in recs),
            sum(r.compressed for r in recs),
            tuple(sorted({r.layer for r in recs})),
        )
        for label, recs in by_model.items()
    ]


def _duplicates(by_hash: Mapping[str, list[FileRecord]]) -> list[Duplicate]:
    """Content stored more than once (any layer, any path), the most wasteful first."""
    dups = [
        Duplicate(h, recs[0].size, tuple((r.layer, r.path) for r in recs))
        for h, recs in by_hash.items()
        if len(recs) > 1 and recs[0].size > 0
    ]
    dups.sort(key=lambda d: (-d.wasted, d.copies))
    return dups


def inspect_image(image: Image, *, top: int = 25, progress: Progress = NO_PROGRESS) -> ImageReport:
    """Analyse ``image`` (each layer read once from its blob). ``top`` bounds the largest-files list;
    ``progress`` hears the compressed bytes read, layer by layer, as one transfer."""
    merged, layers = _merge_layers(image, progress)
    view = merged.view
    cuda = {p: c for p, c in merged.cuda.items() if p in view}
    owner: dict[str, tuple[str, str]] = {}
    reports = _package_reports(merged.packages(), view, owner)
    models = _model_reports(view, layers, owner)
    unowned = [r for p, r in view.items() if p not in owner]
    final_ids = {id(r) for r in view.values()}
    shadowed = sum(f.size for f in merged.all_files if id(f) not in final_ids)
    largest = sorted(view.values(), key=lambda r: (-r.size, r.path))[:top]
    return ImageReport(
        platform=str(image.platform),
        digest=image.digest,
        size=image.size,
        uncompressed_size=sum(layer.uncompressed_size for layer in image.layers),
        layers=tuple(layers),
        largest=tuple(largest),
        duplicates=tuple(_duplicates(merged.by_hash)),
        python=tuple(sorted(reports["python"], key=lambda p: (-p.size, p.name))),
        debian=tuple(sorted(reports["debian"], key=lambda p: (-p.size, p.name))),
        cuda=tuple(sorted(cuda.values(), key=lambda c: (-c.size, c.path))),
        final_files=len(view),
        final_bytes=sum(r.size for r in view.values()),
        shadowed_bytes=shadowed,
        unowned_bytes=sum(r.size for r in unowned),
        unowned_compressed=sum(r.compressed for r in unowned),
        blocks=_blocks(view, owner),
        models=tuple(sorted(models, key=lambda p: (-p.size, p.name))),
    )


#: File names that are model weights wherever they are (as ``[tool.gpuship] models`` finds them).
MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx")


def model_of(path: str, in_model_layer: bool = False) -> str | None:
    """The model a file of no package belongs to, or None: a Hugging Face hub cache repository
    (``.../models--ORG--NAME/...`` -> ``ORG/NAME``); else, for a weights file or any file of a gpuship model
    layer, its directory."""
    parts = path.split("/")
    for part in parts[:-1]:
        if part.startswith("models--") and part.count("--") >= 1:
            return part.removeprefix("models--").replace("--", "/")
    if in_model_layer or path.endswith(MODEL_SUFFIXES):
        return "/" + "/".join(parts[:-1])
    return None


def _layer_comments(image: Image) -> list[str]:
    """Each layer's comment: its own, else its history line's (what a read image keeps)."""
    hist = [h for h in image.history if not h.empty_layer]
    out = []
    for i, layer in enumerate(image.layers):
        h = hist[i] if i < len(hist) and len(hist) == len(image.layers) else None
        out.append(layer.comment or (h.comment if h else "") or "")
    return out


def _blocks(
    view: dict[str, FileRecord], owner: dict[str, tuple[str, str]], depth: int = 3, per_layer: int = 60
) -> tuple[tuple[int, str, str, int, int], ...]:
    """The final view grouped by layer and owner (package, or directory ``depth`` levels deep), largest first."""
    acc: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for path, r in view.items():
        if r.size == 0:
            continue
        kind, label = owner.get(path) or ("dir", "/" + "/".join(path.split("/")[:-1][:depth]))
        cell = acc[(r.layer, kind, label)]
        cell[0] += r.size
        cell[1] += r.compressed
    by_layer: dict[int, list[tuple[int, str, str, int, int]]] = defaultdict(list)
    for (layer, kind, label), (size, comp) in acc.items():
        by_layer[layer].append((layer, kind, label, size, comp))
    out: list[tuple[int, str, str, int, int]] = []
    for layer in sorted(by_layer):
        rows = sorted(by_layer[layer], key=lambda x: (-x[3], x[2]))
        out += rows[:per_layer]
        rest = rows[per_layer:]
        if rest:
            out.append((layer, "other", f"{len(rest)} more", sum(r[3] for r in rest), sum(r[4] for r in rest)))
    return tuple(out)
