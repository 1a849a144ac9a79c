"""Where an image's bytes go, and which GPU architectures its CUDA libraries carry.

* :func:`inspect_image` — per layer, per Python distribution and Debian package, largest files, duplicates,
  CUDA libraries (:mod:`.report`);
* :func:`read_cuda_library` — the fatbin sections of one ELF, parsed in pure Python (:mod:`.cudalib`,
  :mod:`.fatbin`);
* :func:`render_html` / :func:`write_html` — the self-contained HTML report (:mod:`.html`).
"""

from .cudalib import CudaLibrary, FatbinSection, read_cuda_library
from .fatbin import Arch, FatbinContainer, FatbinEntry, FatbinError, parse_fatbin
from .html import render_html, write_html
from .report import (
    CudaLibraryReport,
    Duplicate,
    FileRecord,
    ImageReport,
    LayerReport,
    PackageReport,
    inspect_image,
)

__all__ = [
    "Arch",
    "CudaLibrary",
    "CudaLibraryReport",
    "Duplicate",
    "FatbinContainer",
    "FatbinEntry",
    "FatbinError",
    "FatbinSection",
    "FileRecord",
    "ImageReport",
    "LayerReport",
    "PackageReport",
    "inspect_image",
    "parse_fatbin",
    "read_cuda_library",
    "render_html",
    "write_html",
]
