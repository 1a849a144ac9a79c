"""The CUDA fat binary container, read in pure Python (no NVIDIA tool needed).

A fatbin is what ``nvcc`` embeds in an ELF's ``.nv_fatbin`` section (``__nv_relfatbin`` in relocatable objects):
one or more *containers* laid end to end, each a 16-byte header followed by *entries*, each an entry header
followed by its payload (a cubin = SASS for one ``sm_XX``, or PTX for one ``compute_XX``).

Layout (little-endian; reverse-engineered in public, checked here against ``cuobjdump``; field names ours)::

    container header (16 bytes)
      u32 magic        0xBA55ED50
      u16 version      1
      u16 header_size  16
      u64 fat_size     bytes of entries that follow the header

    entry header (64 bytes, longer for newer architectures: 80, 96, 112, 120 seen)
      0  u16 kind              1 = PTX, 2 = ELF (cubin)
      2  u16 (unknown)         0x0101
      4  u32 header_size       the entry header's own size; the payload starts right after it
      8  u64 payload_size      bytes of payload (padded to 8); the next entry follows it
      16 u32 compressed_size   size of the compressed payload, 0 when not compressed
      20 u32 (unknown)
      24 u16 minor, 26 u16 major   cubin: ELF ABI version (1.8); PTX: PTX ISA version (9.0)
      28 u32 arch              the SM number: 90 = sm_90 / compute_90, 100 = sm_100, 121 = sm_121
      32 u32 name offset, 36 u32 name size   (of an optional object name inside the entry)
      40 u64 flags             see FLAG_* below
      48 u64 (zero)
      56 u64 uncompressed_size   size of the payload once decompressed, 0 when not compressed

Compressed payloads (``--compress-mode``: LZ4 in older toolkits and ``speed``, zstd in CUDA 13) are never
decompressed here: every size is read from the headers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Protocol

from ..errors import IntegrityError

FATBIN_MAGIC = 0xBA55ED50
#: ``__fatBinC_Wrapper_t`` in ``.nvFatBinSegment``: magic, version, pointer to a container, pointer (or 0).
WRAPPER_MAGIC = 0x466243B1
CONTAINER_HEADER = struct.Struct("<IHHQ")
ENTRY_HEADER = struct.Struct("<HHIQIIHHIIIQQQ")
WRAPPER = struct.Struct("<IIQQ")
MAGIC_BYTES = struct.pack("<I", FATBIN_MAGIC)

KIND_PTX = 1
KIND_ELF = 2

FLAG_64BIT = 0x1
FLAG_DEBUG = 0x2
FLAG_LINUX = 0x10
FLAG_COMPRESSED_OLD = 0x1000
FLAG_COMPRESSED_LZ4 = 0x2000
FLAG_COMPRESSED_ZSTD = 0x8000
FLAG_COMPRESSED = FLAG_COMPRESSED_OLD | FLAG_COMPRESSED_LZ4 | FLAG_COMPRESSED_ZSTD
#: Architecture-specific code (``sm_90a``): runs only on exactly that compute capability.
FLAG_ARCH_SPECIFIC = 0x100000
#: Family-specific code (``sm_103f``): runs on that major with an equal or higher minor.
FLAG_FAMILY_SPECIFIC = 0x200000


class FatbinError(IntegrityError):
    """A fatbin whose headers do not add up."""


@dataclass(frozen=True, order=True)
class Arch:
    """A GPU architecture as a fatbin names it: ``number`` 90 is compute capability 9.0; ``variant`` '', 'a' or 'f'."""

    number: int
    variant: str = ""

    @property
    def major(self) -> int:
        return self.number // 10

    @property
    def minor(self) -> int:
        return self.number % 10

    @property
    def capability(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def sass_name(self) -> str:
        return f"sm_{self.number}{self.variant}"

    def ptx_name(self) -> str:
        return f"compute_{self.number}{self.variant}"

    def __str__(self) -> str:
        return self.sass_name()

    @classmethod
    def parse(cls, text: str) -> Arch:
        """``sm_90a``, ``compute_100``, ``sm90``, ``90``, ``9.0`` or ``12.0f`` -> :class:`Arch`."""
        t = text.strip().lower()
        for prefix in ("sm_", "compute_", "sm", "compute"):
            if t.startswith(prefix):
                t = t[len(prefix) :]
                break
        variant = ""
        if t and t[-1] in "af":
            variant, t = t[-1], t[:-1]
        try:
            if "." in t:
                major, minor = t.split(".", 1)
                if len(minor) != 1:
                    raise ValueError(t)
                number = int(major) * 10 + int(minor)
            else:
                number = int(t)
        except ValueError:
            raise ValueError(f"not a GPU architecture: {text!r}") from None
        if not 10 <= number <= 999:
            raise ValueError(f"not a GPU architecture: {text!r}")
        return cls(number, variant)


@dataclass(frozen=True)
class FatbinEntry:
    """One code object in a container: SASS (a cubin) for one ``sm_XX``, or PTX for one ``compute_XX``."""

    offset: int  # of the entry header, from the start of the scanned buffer
    kind: int
    header_size: int
    payload_size: int
    compressed_size: int
    uncompressed_size: int
    version: tuple[int, int]  # cubin: ELF ABI version; PTX: PTX ISA version
    arch: Arch
    flags: int

    @property
    def is_ptx(self) -> bool:
        return self.kind == KIND_PTX

    @property
    def is_sass(self) -> bool:
        return self.kind == KIND_ELF

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED) or self.compressed_size > 0

    @property
    def compression(self) -> str:
        if self.flags & FLAG_COMPRESSED_ZSTD:
            return "zstd"
        if self.flags & FLAG_COMPRESSED_LZ4:
            return "lz4"
        return "yes" if self.compressed else ""

    @property
    def size(self) -> int:
        """Bytes this entry takes in the file: header and (padded) payload."""
        return self.header_size + self.payload_size

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def name(self) -> str:
        """``sm_90a`` for SASS, ``compute_100`` for PTX, ``kind7:sm_90`` for kinds we do not know."""
        if self.is_ptx:
            return self.arch.ptx_name()
        if self.is_sass:
            return self.arch.sass_name()
        return f"kind{self.kind}:{self.arch.sass_name()}"

    @property
    def version_text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


@dataclass(frozen=True)
class FatbinContainer:
    """One fatbin container: its header and entries; ``offset`` is where its header starts."""

    offset: int
    version: int
    header_size: int
    fat_size: int
    entries: tuple[FatbinEntry, ...]

    @property
    def size(self) -> int:
        return self.header_size + self.fat_size

    @property
    def end(self) -> int:
        return self.offset + self.size


def _arch_of(number: int, flags: int) -> Arch:
    if flags & FLAG_ARCH_SPECIFIC:
        return Arch(number, "a")
    if flags & FLAG_FAMILY_SPECIFIC:
        return Arch(number, "f")
    return Arch(number)


class ByteSource(Protocol):
    """Random access to a fatbin section: ``size`` bytes, read ``n`` at a time from any position."""

    size: int

    def read_at(self, pos: int, n: int) -> bytes | memoryview: ...


class BufferSource:
    """A section held in memory."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self.size = len(self._data)

    def read_at(self, pos: int, n: int) -> memoryview:
        return self._data[pos : pos + n]


class FileSource:
    """A section of a seekable file (``size`` bytes from ``base``), read by seeking: only the headers a parse needs
    (and the zero runs between containers) are read, never the whole section; one read window is kept."""

    def __init__(self, fh: IO[bytes], base: int, size: int) -> None:
        self._fh = fh
        self._base = base
        self.size = size
        self._win_pos = 0
        self._win = b""

    def read_at(self, pos: int, n: int) -> bytes | memoryview:
        n = max(0, min(n, self.size - pos))
        if self._win_pos <= pos and pos + n <= self._win_pos + len(self._win):
            off = pos - self._win_pos
            return self._win if off == 0 and n == len(self._win) else memoryview(self._win)[off : off + n]
        self._fh.seek(self._base + pos)
        # headers are read with some room after them, so the entry headers of small entries come from one read
        want = n if n >= _HEADER_WINDOW else min(_HEADER_WINDOW, self.size - pos)
        self._win = self._fh.read(want)
        self._win_pos = pos
        if len(self._win) < n:
            raise FatbinError(f"fatbin section ends at {pos + len(self._win)}, past the end of the file")
        return self._win if n == len(self._win) else memoryview(self._win)[:n]


#: What :class:`FileSource` reads at once for a header (a container or entry header plus room for the next ones).
_HEADER_WINDOW = 4096
#: How many bytes of zeros between containers are looked at at once.
_ZERO_WINDOW = 1 << 18


def parse_container(data: bytes | memoryview, offset: int) -> FatbinContainer:
    """Read the container whose header starts at ``offset`` of ``data``."""
    return read_container(BufferSource(data), offset)


def read_container(src: ByteSource, offset: int) -> FatbinContainer:
    """Read the container whose header starts at ``offset`` of ``src`` (its headers only, never its payloads)."""
    if offset + CONTAINER_HEADER.size > src.size:
        raise FatbinError(f"fatbin header at {offset} runs past the end of its section")
    magic, version, header_size, fat_size = CONTAINER_HEADER.unpack_from(src.read_at(offset, CONTAINER_HEADER.size))
    if magic != FATBIN_MAGIC:
        raise FatbinError(f"no fatbin magic at {offset} (found {magic:#010x})")
    if header_size < CONTAINER_HEADER.size:
        raise FatbinError(f"fatbin header at {offset} claims {header_size} bytes")
    end = offset + header_size + fat_size
    if end > src.size:
        raise FatbinError(f"fatbin at {offset} claims {fat_size} bytes, past the end of its section")
    entries: list[FatbinEntry] = []
    pos = offset + header_size
    while pos < end:
        if pos + ENTRY_HEADER.size > end:
            raise FatbinError(f"fatbin entry at {pos} runs past its container (ends at {end})")
        (kind, _unk, ehs, payload, csize, _unk2, minor, major, arch, _noff, _nlen, flags, _zero, usize) = (
            ENTRY_HEADER.unpack_from(src.read_at(pos, ENTRY_HEADER.size))
        )
        if ehs < ENTRY_HEADER.size or pos + ehs + payload > end:
            raise FatbinError(f"fatbin entry at {pos} has sizes that do not fit its container")
        entries.append(FatbinEntry(pos, kind, ehs, payload, csize, usize, (major, minor), _arch_of(arch, flags), flags))
        pos += ehs + payload
    return FatbinContainer(offset, version, header_size, fat_size, tuple(entries))


def iter_containers(data: bytes | memoryview) -> Iterator[FatbinContainer]:
    """Every container in a fatbin section, in order (see :func:`read_containers`)."""
    return read_containers(BufferSource(data))


def read_containers(src: ByteSource) -> Iterator[FatbinContainer]:
    """Every container in a fatbin section, in order.

    Containers normally follow each other directly; zero bytes between them (alignment, or space freed by
    :func:`gpuship.slim.archs.prune_fatbins`) are skipped. Anything else is a :class:`FatbinError`.
    """
    pos = 0
    n = src.size
    window = _HEADER_WINDOW  # zeros are looked at in growing windows: most gaps are a few bytes of alignment
    while pos < n:
        if bytes(src.read_at(pos, 4)) == MAGIC_BYTES:
            c = read_container(src, pos)
            yield c
            pos = c.end
            window = _HEADER_WINDOW
            continue
        window_end = min(n, pos + window)
        zeros = src.read_at(pos, window_end - pos)
        rest = (zeros if isinstance(zeros, bytes) else bytes(zeros)).lstrip(b"\0")
        if not rest:
            pos = window_end
            window = min(2 * window, _ZERO_WINDOW)
            continue
        nonzero = window_end - len(rest)
        if bytes(src.read_at(nonzero, 4)) != MAGIC_BYTES:
            raise FatbinError(f"unexpected bytes at {nonzero} of a fatbin section (no container header there)")
        pos = nonzero


def parse_fatbin(data: bytes | memoryview) -> list[FatbinContainer]:
    """All containers of a fatbin section (see :func:`read_containers`)."""
    return list(iter_containers(data))


def wrapper_pointers(segment: bytes) -> list[int]:
    """The container addresses in ``.nvFatBinSegment`` (``__fatBinC_Wrapper_t`` records, 24 bytes each)."""
    out = []
    for pos in range(0, len(segment) - WRAPPER.size + 1, WRAPPER.size):
        magic, _version, data, _extra = WRAPPER.unpack_from(segment, pos)
        if magic == WRAPPER_MAGIC:
            out.append(data)
    return out
