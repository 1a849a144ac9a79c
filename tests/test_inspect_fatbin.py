"""The pure-Python fatbin reader agrees with NVIDIA's cuobjdump on real libraries and nvcc-built fixtures."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from gpuship.inspect import Arch, read_cuda_library
from gpuship.inspect.fatbin import FatbinError, parse_fatbin

sys.path.insert(0, str(Path(__file__).parent / "data" / "fatbin"))
from cudatools import HERE, NVJPEG_CU12, NVJPEG_CU13, install_wheel, listed_by_cuobjdump  # noqa: E402

MULTIARCH = HERE / "libmultiarch.so"
VARIANTS = HERE / "libvariants.so"


def ours(lib_path: Path) -> Counter[str]:
    """Our entries in cuobjdump's terms (it prints family-specific sm_103f as sm_103)."""
    lib = read_cuda_library(lib_path)
    assert lib is not None
    return Counter((e.arch.sass_name() if e.is_sass else e.arch.ptx_name()).removesuffix("f") for e in lib.entries)


def test_synthetic_fixture_lists_exactly_what_nvcc_built(cuobjdump_exe: Path) -> None:
    lib = read_cuda_library(MULTIARCH)
    assert lib is not None
    assert lib.sass == ["sm_80", "sm_90", "sm_100"]
    assert lib.ptx == ["compute_100"]
    assert lib.ptx_versions == ["9.0"]  # PTX ISA 9.0: CUDA 13.0's nvcc
    assert [s.name for s in lib.sections] == [".nv_fatbin"]
    by_arch = lib.bytes_by_arch()
    assert set(by_arch) == {"sm_80", "sm_90", "sm_100", "compute_100"}
    assert sum(by_arch.values()) + 16 * lib.containers == lib.fatbin_bytes
    assert ours(MULTIARCH) == listed_by_cuobjdump(cuobjdump_exe, MULTIARCH)


def test_arch_variants_and_lz4_compression(cuobjdump_exe: Path) -> None:
    lib = read_cuda_library(VARIANTS)
    assert lib is not None
    assert lib.sass == ["sm_80", "sm_86", "sm_90a", "sm_103f"]
    assert lib.ptx == ["compute_80"]
    assert lib.compressed_entries == len(lib.entries)  # --compress-mode=speed compresses every entry (LZ4)
    assert {e.compression for e in lib.entries} == {"lz4"}
    for e in lib.entries:  # sizes are read from headers, never by decompressing
        assert 0 < e.compressed_size <= e.payload_size < e.uncompressed_size
    assert ours(VARIANTS) == listed_by_cuobjdump(cuobjdump_exe, VARIANTS)


@pytest.mark.parametrize("wheel", [NVJPEG_CU13, NVJPEG_CU12], ids=["nvjpeg-cu13", "nvjpeg-cu12"])
def test_real_wheel_library_agrees_with_cuobjdump(wheel: tuple[str, str], tools_dir: Path, cuobjdump_exe: Path) -> None:
    spec, member = wheel
    lib_path = install_wheel(spec, tools_dir / spec.replace("==", "-")) / member
    lib = read_cuda_library(lib_path)
    assert lib is not None
    listed = listed_by_cuobjdump(cuobjdump_exe, lib_path)
    assert len(listed) >= 8, listed  # a library with many architectures
    assert ours(lib_path) == listed
    assert set(lib.sass) == {a for a in listed if a.startswith("sm_")}
    assert lib.ptx == sorted({a for a in listed if a.startswith("compute_")}, key=lambda a: Arch.parse(a))
    if spec.startswith("nvidia-nvjpeg=="):
        assert lib.compressed_entries == len(lib.entries)  # CUDA 13 libraries ship zstd-compressed entries
        assert {e.compression for e in lib.entries} == {"zstd"}
    # bytes per architecture cover every entry
    assert sum(lib.bytes_by_arch().values()) == sum(e.size for e in lib.entries)


def test_not_cuda_and_damaged() -> None:
    assert read_cuda_library(Path(sys.executable).resolve()) is None  # an ELF without GPU code
    assert read_cuda_library(b"not an elf at all") is None
    data = bytearray(MULTIARCH.read_bytes())
    lib = read_cuda_library(bytes(data))
    assert lib is not None
    sec = lib.sections[0]
    # a container header that claims more bytes than its section has
    start = sec.offset + sec.containers[0].offset
    data[start + 8 : start + 16] = (10**9).to_bytes(8, "little")
    with pytest.raises(FatbinError, match="past the end"):
        read_cuda_library(bytes(data))
    with pytest.raises(FatbinError, match="no container header"):
        parse_fatbin(b"\0" * 16 + b"junk" + b"\0" * 12)


def test_arch_parse() -> None:
    assert Arch.parse("sm_90a") == Arch(90, "a")
    assert Arch.parse("compute_100") == Arch(100)
    assert Arch.parse("8.6") == Arch(86)
    assert Arch.parse("12.0f") == Arch(120, "f")
    assert Arch(103, "f").capability == (10, 3)
    with pytest.raises(ValueError):
        Arch.parse("hopper")
