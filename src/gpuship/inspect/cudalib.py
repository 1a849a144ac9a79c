"""Which GPU code an ELF file carries: its fatbin sections, read with pyelftools and :mod:`.fatbin`.

A CUDA library is an ELF with a ``.nv_fatbin`` section (shared libraries, executables), a ``__nv_relfatbin``
section (relocatable objects built with ``-rdc``), or only a ``.nvFatBinSegment`` whose wrapper records point at
containers kept in another section (older toolkits).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from elftools.common.exceptions import ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import Section

from .fatbin import (
    BufferSource,
    ByteSource,
    FatbinContainer,
    FatbinEntry,
    FatbinError,
    FileSource,
    read_container,
    read_containers,
    wrapper_pointers,
)

ELF_MAGIC = b"\x7fELF"
FATBIN_SECTIONS = (".nv_fatbin", "__nv_relfatbin")
SEGMENT_SECTION = ".nvFatBinSegment"
SHF_COMPRESSED = SH_FLAGS.SHF_COMPRESSED


@dataclass(frozen=True)
class FatbinSection:
    """The fatbin containers of one ELF section; container and entry offsets count from the section start."""

    name: str
    offset: int  # in the file
    size: int
    containers: tuple[FatbinContainer, ...]


@dataclass(frozen=True)
class CudaLibrary:
    """The GPU code inside one ELF file."""

    sections: tuple[FatbinSection, ...]

    @property
    def entries(self) -> tuple[FatbinEntry, ...]:
        return tuple(e for s in self.sections for c in s.containers for e in c.entries)

    @property
    def containers(self) -> int:
        return sum(len(s.containers) for s in self.sections)

    @property
    def fatbin_bytes(self) -> int:
        """Bytes of all containers (headers and entries)."""
        return sum(c.size for s in self.sections for c in s.containers)

    @property
    def sass(self) -> list[str]:
        """SASS architectures, oldest first (``sm_80``, ``sm_90``, ``sm_90a``, ...)."""
        return [a.sass_name() for a in sorted({e.arch for e in self.entries if e.is_sass})]

    @property
    def ptx(self) -> list[str]:
        """PTX architectures, oldest first (``compute_90``, ...)."""
        return [a.ptx_name() for a in sorted({e.arch for e in self.entries if e.is_ptx})]

    @property
    def ptx_versions(self) -> list[str]:
        """PTX ISA versions of the PTX entries (what a driver must understand to JIT them)."""
        return sorted({e.version_text for e in self.entries if e.is_ptx}, key=lambda v: tuple(map(int, v.split("."))))

    @property
    def compressed_entries(self) -> int:
        return sum(1 for e in self.entries if e.compressed)

    def bytes_by_arch(self) -> dict[str, int]:
        """Stored bytes (entry header + payload) per ``sm_XX`` / ``compute_XX``, in architecture order."""
        out: dict[str, int] = {}
        for e in sorted(self.entries, key=lambda e: (e.arch, not e.is_sass, e.kind)):
            out[e.name] = out.get(e.name, 0) + e.size
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "sass": self.sass,
            "ptx": self.ptx,
            "ptx_versions": self.ptx_versions,
            "containers": self.containers,
            "entries": len(self.entries),
            "compressed_entries": self.compressed_entries,
            "fatbin_bytes": self.fatbin_bytes,
            "bytes_by_arch": self.bytes_by_arch(),
            "sections": [s.name for s in self.sections],
        }


def _open(source: IO[bytes] | bytes | bytearray | memoryview | Path | str) -> tuple[IO[bytes], bool]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, (str, Path)):
        return open(source, "rb"), True
    return source, False


def read_cuda_library(source: IO[bytes] | bytes | bytearray | memoryview | Path | str) -> CudaLibrary | None:
    """The GPU code in an ELF (a seekable file, bytes, or a path); ``None`` when it carries none or is no ELF.

    A fatbin whose headers do not add up raises :class:`~gpuship.inspect.fatbin.FatbinError`.
    """
    fh, owned = _open(source)
    try:
        fh.seek(0)
        if fh.read(4) != ELF_MAGIC:
            return None
        file_size = fh.seek(0, io.SEEK_END)
        fh.seek(0)
        try:
            elf = ELFFile(fh)
            sections = list(elf.iter_sections())
        except (ELFError, ValueError, OSError, EOFError):
            return None
        found: list[FatbinSection] = []
        for sec in sections:
            if sec.name in FATBIN_SECTIONS and sec["sh_type"] != "SHT_NOBITS" and sec["sh_size"] > 0:
                containers = tuple(read_containers(_section_source(fh, sec, file_size)))
                found.append(FatbinSection(sec.name, sec["sh_offset"], sec["sh_size"], containers))
        if not found:
            seg = next((s for s in sections if s.name == SEGMENT_SECTION), None)
            if seg is not None:
                found = _via_wrappers(wrapper_pointers(seg.data()), sections, fh, file_size)
        return CudaLibrary(tuple(found)) if found else None
    finally:
        if owned:
            fh.close()


def _section_source(fh: IO[bytes], sec: Section, file_size: int) -> ByteSource:
    """A section's bytes, read from ``fh`` as a parse asks for them (a section that runs past the end of the file
    is as long as what is there, as pyelftools' ``data()`` reads it); a compressed section is read whole."""
    if sec["sh_flags"] & SHF_COMPRESSED:
        return BufferSource(sec.data())
    offset, size = sec["sh_offset"], sec["sh_size"]
    return FileSource(fh, offset, max(0, min(size, file_size - offset)))


def _via_wrappers(
    pointers: Iterable[int], sections: list[Section], fh: IO[bytes], file_size: int
) -> list[FatbinSection]:
    """Containers reached through ``.nvFatBinSegment`` wrapper pointers (addresses, resolved via sections)."""
    by_section: dict[str, tuple[Section, list[FatbinContainer]]] = {}
    for ptr in pointers:
        if not ptr:
            continue  # relocatable object: the pointer is filled in by a relocation at link time
        for sec in sections:
            addr, size = sec["sh_addr"], sec["sh_size"]
            if addr and addr <= ptr < addr + size and sec["sh_type"] != "SHT_NOBITS":
                try:
                    c = read_container(_section_source(fh, sec, file_size), ptr - addr)
                except FatbinError:
                    break
                by_section.setdefault(sec.name, (sec, []))[1].append(c)
                break
    out = []
    for name, (sec, cs) in by_section.items():
        uniq = {c.offset: c for c in cs}
        out.append(FatbinSection(name, sec["sh_offset"], sec["sh_size"], tuple(uniq[k] for k in sorted(uniq))))
    return out


def is_elf(prefix: bytes) -> bool:
    return prefix[:4] == ELF_MAGIC
