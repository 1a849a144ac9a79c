"""What the dynamic loader reads from an ELF file: one reader for find-libdeps and traced slimming."""

from __future__ import annotations

from dataclasses import dataclass

from elftools.elf.elffile import ELFFile


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
        if seg["p_type"] == "PT_INTERP":
            interp = seg.get_interp_name()
        elif seg["p_type"] == "PT_DYNAMIC":
            for tag in seg.iter_tags():
                t = tag.entry.d_tag
                if t == "DT_NEEDED":
                    needed.append(tag.needed)
                elif t == "DT_RPATH":
                    rpath += [p for p in tag.rpath.split(":") if p]
                elif t == "DT_RUNPATH":
                    runpath += [p for p in tag.runpath.split(":") if p]
    return DynamicLinks(interp, tuple(needed), tuple(rpath), tuple(runpath))
