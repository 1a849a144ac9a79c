"""GPU architecture pruning: drop the fatbin code no target GPU can run, keep every library a loadable ELF.

What is kept, per fatbin container, for a set of target GPUs (each a compute capability ``X.Y``):

* **SASS** (``sm_XY`` cubins): for each target, the compatible cubins of the best (highest) compatible minor.
  Plain ``sm_XY`` runs on the same major with minor >= Y; ``sm_XYf`` (family-specific) likewise; ``sm_XYa``
  (architecture-specific) only on exactly X.Y.
* **PTX** (``compute_XY``): the newest plain PTX that every target can JIT from forward (arch <= the newest
  target), for GPUs newer than the targets; and, for a target that has no compatible SASS in the container,
  the newest PTX it can JIT. PTX for an architecture newer than every target is dropped: no target can JIT it.
* Entries of unknown kinds are always kept. A container with nothing for any target is left whole (the
  library could not run its kernels there before pruning either; leaving it keeps its behaviour unchanged).

How it is rewritten: every container stays where it is (the ``.nvFatBinSegment`` wrappers the CUDA runtime
registers point at container starts), its kept entries are moved together right after its header, the header's
fat size is set to their total, and the freed tail is zeroed. Section sizes, offsets and the ELF layout do not
change, so the file is exactly as large as before — but zeros compress to almost nothing, so the *layer* shrinks
by about the bytes saved. Only ``.nv_fatbin`` sections are rewritten (never ``__nv_relfatbin`` in objects that
are still to be linked).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import IO, TypedDict

from ..cache import Cache
from ..cuda.gpus import Target
from ..errors import ConfigError, IntegrityError
from ..inspect.cudalib import CudaLibrary, is_elf, read_cuda_library
from ..inspect.fatbin import Arch, FatbinContainer, FatbinEntry, FatbinError
from ..oci.entry import Entry
from ..streams import CHUNK, Reader, Writer, as_file

PRUNED_SECTIONS = (".nv_fatbin",)


def sass_runs_on(arch: Arch, target: Target) -> bool:
    """Whether a cubin for ``arch`` runs on ``target`` (same major; minor <= target's; 'a' only exact)."""
    if arch.major != target.major:
        return False
    if arch.variant == "a":
        return arch.minor == target.minor
    return arch.minor <= target.minor


def ptx_jits_on(arch: Arch, target: Target) -> bool:
    """Whether PTX for ``arch`` can be JIT-compiled for ``target`` (plain: any arch <= target's)."""
    if arch.variant == "a":
        return arch.capability == target.capability
    if arch.variant == "f":
        return arch.major == target.major and arch.minor <= target.minor
    return arch.capability <= target.capability


@dataclass(frozen=True)
class Selection:
    """What :meth:`ArchSelection.select` decided for one container."""

    kept: tuple[FatbinEntry, ...]
    dropped: tuple[FatbinEntry, ...]
    unserved: tuple[Target, ...] = ()
    untouched: bool = False


@dataclass(frozen=True)
class ArchSelection:
    """The GPUs an image must serve, and the rule that decides which fatbin entries they need."""

    targets: tuple[Target, ...]

    def __post_init__(self) -> None:
        if not self.targets:
            raise ConfigError("no GPU targets to prune for", 'give at least one target, e.g. targets = ["H100"]')

    @classmethod
    def from_targets(cls, names: Iterable[str]) -> ArchSelection:
        """``["H100", "sm_80", "8.6"]`` -> a selection (duplicates merged, oldest first)."""
        parsed: dict[tuple[int, int], Target] = {}
        for n in names:
            t = Target.parse(str(n))
            parsed.setdefault(t.capability, t)
        return cls(tuple(parsed[k] for k in sorted(parsed)))

    @classmethod
    def from_gpu_config(cls, gpu: Mapping[str, object]) -> ArchSelection | None:
        """From a ``[tool.gpuship.gpu]`` table: pruning is on when ``targets`` are given, unless ``prune-archs = false``."""
        raw = gpu.get("targets") or []  # checked for shape by GpuSettings.from_table
        targets = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else []
        prune = gpu.get("prune-archs", bool(targets))
        if not isinstance(prune, bool):
            raise ConfigError("[tool.gpuship.gpu] prune-archs must be true or false")
        if not prune:
            return None
        if not targets:
            raise ConfigError(
                "[tool.gpuship.gpu] prune-archs = true needs targets", 'add targets = ["H100"] (GPU names or sm_XX)'
            )
        return cls.from_targets(targets)

    @property
    def newest(self) -> Target:
        return max(self.targets)

    def names(self) -> list[str]:
        return [str(t) for t in self.targets]

    def select(self, container: FatbinContainer) -> Selection:
        entries = container.entries
        sass = [e for e in entries if e.is_sass]
        ptx = [e for e in entries if e.is_ptx]
        keep: set[int] = {e.offset for e in entries if not (e.is_sass or e.is_ptx)}
        unserved: list[Target] = []
        for t in self.targets:
            fits = [e for e in sass if sass_runs_on(e.arch, t)]
            if fits:
                best = max(e.arch.minor for e in fits)
                keep.update(e.offset for e in fits if e.arch.minor == best)
                continue
            jit = [e for e in ptx if ptx_jits_on(e.arch, t)]
            if jit:
                best_cc = max(e.arch.capability for e in jit)
                keep.update(e.offset for e in jit if e.arch.capability == best_cc)
            else:
                unserved.append(t)
        forward = [e for e in ptx if e.arch.variant == "" and e.arch.capability <= self.newest.capability]
        if forward:
            best_cc = max(e.arch.capability for e in forward)
            keep.update(e.offset for e in forward if e.arch.capability == best_cc)
        if not any(e.offset in keep for e in sass + ptx):
            return Selection(entries, (), tuple(unserved), untouched=True)
        kept = tuple(e for e in entries if e.offset in keep)
        dropped = tuple(e for e in entries if e.offset not in keep)
        return Selection(kept, dropped, tuple(unserved))


def prune_savings(libraries: Iterable[CudaLibrary], targets: Sequence[str]) -> int:
    """The bytes of GPU code ``prune-archs`` would drop from ``libraries`` for ``targets`` (what ``gpuship inspect``
    tells a GPU image built without targets)."""
    sel = ArchSelection.from_targets(targets)
    return sum(
        e.size
        for lib in libraries
        for section in lib.sections
        if section.name in PRUNED_SECTIONS
        for c in section.containers
        for e in sel.select(c).dropped
    )


@dataclass(frozen=True)
class Rewrite:
    """One container to rewrite: where it starts in the file, and the entries it keeps."""

    start: int
    container: FatbinContainer
    kept: tuple[FatbinEntry, ...]

    @property
    def body_size(self) -> int:
        return sum(e.size for e in self.kept)


class _KeptAndDropped:
    """The architecture names of what pruning keeps and drops (a plan's or a result's)."""

    kept: tuple[FatbinEntry, ...]
    dropped: tuple[FatbinEntry, ...]

    @property
    def kept_archs(self) -> list[str]:
        return _names(self.kept)

    @property
    def dropped_archs(self) -> list[str]:
        return _names(self.dropped)


@dataclass(frozen=True)
class PrunePlan(_KeptAndDropped):
    """What pruning decided for one ELF, before a byte is written: the entries kept and dropped, and the containers
    to rewrite (``library`` is ``None`` for a file without GPU code)."""

    library: CudaLibrary | None
    kept: tuple[FatbinEntry, ...] = ()
    dropped: tuple[FatbinEntry, ...] = ()
    rewrites: tuple[Rewrite, ...] = ()
    untouched_containers: int = 0
    unserved: tuple[str, ...] = ()

    @property
    def saved(self) -> int:
        return sum(e.size for e in self.dropped)

    @property
    def rewrites_fatbin(self) -> bool:
        """Whether the file has a section pruning rewrites (``.nv_fatbin``)."""
        return self.library is not None and any(s.name in PRUNED_SECTIONS for s in self.library.sections)

    def write(self, src: IO[bytes], size: int, out: Writer) -> None:
        """Write the pruned file to ``out``: ``src`` (``size`` bytes, seekable) copied in chunks, each rewritten
        container's bytes replaced by its header (new fat size), its kept entries packed after it, and zeros."""
        pos = 0
        for rw in self.rewrites:
            if rw.start < pos:
                raise FatbinError(f"fatbin containers overlap at {rw.start}")
            _copy(src, pos, rw.start - pos, out)
            c = rw.container
            src.seek(rw.start)
            header = bytearray(_read_exactly(src, c.header_size))
            body = rw.body_size
            header[8:16] = body.to_bytes(8, "little")
            out.write(bytes(header))
            base = rw.start - c.offset
            for e in rw.kept:
                _copy(src, base + e.offset, e.size, out)
            _zeros(c.size - c.header_size - body, out)
            pos = rw.start + c.size
        _copy(src, pos, size - pos, out)

    def verify(self, written: IO[bytes] | bytes) -> None:
        """Re-read the result: every section parses, the entry count and the bytes add up. Never ship a broken ELF."""
        assert self.library is not None
        try:
            after = read_cuda_library(written)
        except FatbinError as exc:
            raise IntegrityError(
                f"pruning produced an unreadable fatbin ({exc})", "report this; use prune-archs = false"
            ) from exc
        if (
            after is None
            or len(after.entries) != len(self.kept)
            or self.library.fatbin_bytes - after.fatbin_bytes != self.saved
        ):
            raise IntegrityError(
                "pruning produced a fatbin whose sizes do not add up", "report this; use prune-archs = false"
            )


def _read_exactly(src: IO[bytes], n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise FatbinError(f"the file ends {n - len(data)} bytes early")
    return data


def _copy(src: IO[bytes], start: int, n: int, out: Writer) -> None:
    """``n`` bytes of ``src`` from ``start`` to ``out``, a chunk at a time."""
    src.seek(start)
    while n > 0:
        k = min(CHUNK, n)
        out.write(_read_exactly(src, k))  # no name holds a chunk while the next one is read
        n -= k


_ZERO_CHUNK = bytes(CHUNK)


def _zeros(n: int, out: Writer) -> None:
    while n > 0:
        out.write(_ZERO_CHUNK if n >= CHUNK else bytes(n))
        n -= CHUNK


def plan_prune(source: IO[bytes] | bytes, keep: ArchSelection) -> PrunePlan:
    """Decide which fatbin entries of ``source`` (an ELF: a seekable file or bytes) no target of ``keep`` needs.

    Only headers are read (see :func:`gpuship.inspect.read_cuda_library`), never the code itself.
    """
    lib = read_cuda_library(source)
    if lib is None:
        return PrunePlan(None)
    kept: list[FatbinEntry] = []
    dropped: list[FatbinEntry] = []
    rewrites: list[Rewrite] = []
    untouched = 0
    unserved: set[str] = set()
    for section in lib.sections:
        for c in section.containers:
            if section.name not in PRUNED_SECTIONS:
                kept.extend(c.entries)
                continue
            sel = keep.select(c)
            kept.extend(sel.kept)
            untouched += sel.untouched
            unserved.update(str(t) for t in sel.unserved)
            if sel.dropped:
                dropped.extend(sel.dropped)
                rewrites.append(Rewrite(section.offset + c.offset, c, sel.kept))
    rewrites.sort(key=lambda rw: rw.start)
    return PrunePlan(lib, tuple(kept), tuple(dropped), tuple(rewrites), untouched, tuple(sorted(unserved)))


@dataclass(frozen=True)
class PruneResult(_KeptAndDropped):
    """A pruned ELF: its bytes (same length as before), and what was kept and dropped."""

    data: bytes
    saved: int
    kept: tuple[FatbinEntry, ...]
    dropped: tuple[FatbinEntry, ...]
    untouched_containers: int = 0
    unserved: tuple[str, ...] = ()


def _names(entries: Iterable[FatbinEntry]) -> list[str]:
    seen = {(e.arch, not e.is_sass, e.kind): e.name for e in entries}
    return [seen[k] for k in sorted(seen)]


def prune_fatbins(data: bytes, keep: ArchSelection) -> PruneResult:
    """Drop the fatbin entries of ``data`` (an ELF) that no target of ``keep`` needs.

    Returns the new bytes (same length: the freed bytes are zeros), the bytes saved (the sum of the dropped
    entries' sizes) and the entries kept and dropped. An ELF without GPU code comes back unchanged. (Files are
    pruned by :func:`prune_layer_entries` without being held in memory; this is the same rewrite, on bytes.)
    """
    plan = plan_prune(data, keep)
    if not plan.dropped:
        return PruneResult(data, 0, plan.kept, (), plan.untouched_containers, plan.unserved)
    out = io.BytesIO()
    plan.write(io.BytesIO(data), len(data), out)
    new = out.getvalue()
    plan.verify(new)
    return PruneResult(new, plan.saved, plan.kept, plan.dropped, plan.untouched_containers, plan.unserved)


# -- whole layers --------------------------------------------------------------------------------------------
class LibraryPruneJSON(TypedDict):
    path: str
    size: int
    saved: int
    kept: list[str]
    dropped: list[str]
    unserved: list[str]


class TargetJSON(TypedDict):
    name: str
    capability: str
    sm: str


class PruneReportJSON(TypedDict):
    """:meth:`ArchPruneReport.to_json` (remembered with a pruned layer, read back from the cache)."""

    targets: list[TargetJSON]
    kept_archs: list[str]
    saved: int
    libraries: list[LibraryPruneJSON]


@dataclass(frozen=True)
class LibraryPrune:
    """What pruning did to one file of a layer."""

    path: str
    size: int
    saved: int
    kept: tuple[str, ...]
    dropped: tuple[str, ...]
    unserved: tuple[str, ...] = ()

    def to_json(self) -> LibraryPruneJSON:
        return {
            "path": "/" + self.path,
            "size": self.size,
            "saved": self.saved,
            "kept": list(self.kept),
            "dropped": list(self.dropped),
            "unserved": list(self.unserved),
        }


@dataclass(frozen=True)
class ArchPruneReport:
    """The outcome of pruning a layer: per library, and the architectures kept overall (for gpu.json)."""

    targets: tuple[Target, ...]
    libraries: tuple[LibraryPrune, ...]

    @property
    def saved(self) -> int:
        return sum(lib.saved for lib in self.libraries)

    @property
    def kept_archs(self) -> list[str]:
        """Every SASS/PTX architecture still in the image's CUDA libraries (``sm_90``, ``compute_90`` ...)."""
        names = {n for lib in self.libraries for n in lib.kept}
        return sorted(names, key=arch_sort_key)

    def to_json(self) -> PruneReportJSON:
        return {
            "targets": [
                {"name": t.given or t.name, "capability": f"{t.major}.{t.minor}", "sm": t.sm} for t in self.targets
            ],
            "kept_archs": self.kept_archs,
            "saved": self.saved,
            "libraries": [lib.to_json() for lib in self.libraries],
        }


def arch_sort_key(name: str) -> tuple[Arch, bool, str]:
    """``sm_80`` < ``compute_80`` < ``sm_86``: by architecture, SASS before PTX."""
    try:
        return (Arch.parse(name.split(":")[-1]), not name.startswith("sm_"), name)
    except ValueError:
        return (Arch(0), True, name)


def prune_layer_entries(
    entries: Iterable[Entry], targets: ArchSelection | Iterable[str], *, cache: Cache | None = None
) -> tuple[list[Entry], ArchPruneReport]:
    """Prune every ELF with GPU code among ``entries``; returns the new entries and what was done.

    Nothing is held whole in memory: a library's headers are read where they lie (an entry that cannot be sought
    is first copied into the cache), the pruned file is written into the cache a chunk at a time and read back to
    check it, and the new entries stream from there. Paths, modes and owners are unchanged; other entries pass
    through as they are.
    """
    sel = targets if isinstance(targets, ArchSelection) else ArchSelection.from_targets(targets)
    cache = cache or Cache()
    out: list[Entry] = []
    libs: list[LibraryPrune] = []
    for e in entries:
        new = _prune_entry(e, sel, cache, libs) if e.kind == "file" and e.size >= 64 and e.open is not None else None
        out.append(e if new is None else new)
    return out, ArchPruneReport(sel.targets, tuple(sorted(libs, key=lambda lib: lib.path)))


def _prune_entry(e: Entry, sel: ArchSelection, cache: Cache, libs: list[LibraryPrune]) -> Entry | None:
    """The pruned entry for ``e`` (``None``: keep ``e``); a library with a fatbin section we rewrite is reported
    in ``libs``."""
    assert e.open is not None
    with e.open() as fh:
        if not is_elf(fh.read(4)):
            return None
        with _seekable(fh, e, cache) as src:
            try:
                plan = plan_prune(src, sel)
            except FatbinError as exc:
                raise IntegrityError(
                    f"/{e.path}: {exc}", "the library's GPU code is damaged; set prune-archs = false"
                ) from exc
            if not plan.rewrites_fatbin or not (plan.kept or plan.dropped):
                return None
            libs.append(
                LibraryPrune(
                    e.path, e.size, plan.saved, tuple(plan.kept_archs), tuple(plan.dropped_archs), plan.unserved
                )
            )
            if plan.saved == 0:
                return None
            with cache.blob_writer() as w:
                plan.write(src, e.size, w)
    with cache.open(w.digest) as written:
        try:
            plan.verify(written)
        except IntegrityError as exc:
            cache.drop(w.digest, "a pruned library that did not check out")
            raise IntegrityError(f"/{e.path}: {exc.message}", exc.hint) from exc
    return Entry.stream(e.path, w.size, partial(cache.open, w.digest), e.mode, e.uid, e.gid)


@contextlib.contextmanager
def _seekable(fh: Reader, e: Entry, cache: Cache) -> Iterator[IO[bytes]]:
    """``fh`` itself when it can be sought (a file on disk, a member of a plain tar); else its bytes copied into
    the cache first (a member of a compressed stream), opened from there."""
    if isinstance(fh, io.IOBase) and fh.seekable():
        yield as_file(fh)
        return
    assert e.open is not None
    with e.open() as again:
        digest, _ = cache.put_stream(again)
    with cache.open(digest) as spooled:
        yield spooled


def gpu_json_fragment(report: ArchPruneReport) -> dict[str, object]:
    """What the lead bakes into ``/etc/gpuship/gpu.json``: the targets and the architectures kept."""
    return {"pruned": True, "targets": [t.sm for t in report.targets], "archs": report.kept_archs}
