"""What the dynamic loader reads from an ELF file: one reader for find-libdeps and traced slimming."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection, DynamicSegment, DynamicTag
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment


@dataclass(frozen=True)
class DynamicLinks:
    """An ELF file's interpreter, needed libraries and library search paths."""

    interp: str = ""
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()


def dynamic_links(elf: ELFFile) -> DynamicLinks:
    """``PT_INTERP`` and the ``DT_NEEDED`` / ``DT_RPATH`` / ``DT_RUNPATH`` entries of ``elf``."""
    interp = ""
    needed: list[str] = []
    rpath: list[str] = []
    runpath: list[str] = []
    for seg in elf.iter_segments():
        if isinstance(seg, InterpSegment):
            interp = seg.get_interp_name()
        elif isinstance(seg, DynamicSegment):
            for tag in seg.iter_tags():
                t = tag.entry.d_tag
                if t == "DT_NEEDED":
                    needed.append(tag_string(tag))
                elif t == "DT_RPATH":
                    rpath += [p for p in tag_string(tag).split(":") if p]
                elif t == "DT_RUNPATH":
                    runpath += [p for p in tag_string(tag).split(":") if p]
    return DynamicLinks(interp, tuple(needed), tuple(rpath), tuple(runpath))


def tag_string(tag: DynamicTag) -> str:
    """The string value of a DT_NEEDED / DT_RPATH / DT_RUNPATH / DT_SONAME tag (pyelftools sets it as an
    attribute named after the tag: ``needed``, ``rpath``, ``runpath``, ``soname``)."""
    return str(getattr(tag, tag.entry.d_tag[3:].lower()))


def elf_soname(path: Path | str) -> str | None:
    """The DT_SONAME of a shared library, or None (not an ELF file, or none set)."""
    try:
        with open(path, "rb") as fh:
            for section in ELFFile(fh).iter_sections():
                if isinstance(section, DynamicSection):
                    for tag in section.iter_tags():
                        if tag.entry.d_tag == "DT_SONAME":
                            return tag_string(tag)
    except (ELFError, OSError, ValueError, AttributeError):
        return None
    return None
