"""Architecture pruning: the right entries go, the ELF stays valid (pyelftools, readelf, cuobjdump agree), the
sizes add up, and the compressed size shrinks by about what was saved."""

from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from gpuship.cache import Cache
from gpuship.cuda.gpus import parse_target
from gpuship.errors import ConfigError
from gpuship.inspect import read_cuda_library
from gpuship.inspect.fatbin import FatbinEntry, parse_fatbin
from gpuship.oci import Entry, build_layer
from gpuship.oci.layer import rewrite_layer, spooled_entries
from gpuship.slim import ArchSelection, Target, gpu_json_fragment, prune_fatbins, prune_layer_entries

sys.path.insert(0, str(Path(__file__).parent / "data" / "fatbin"))
from cudatools import HERE, NVJPEG_CU12, NVJPEG_CU13, install_wheel, listed_by_cuobjdump  # noqa: E402

MULTIARCH = HERE / "libmultiarch.so"
VARIANTS = HERE / "libvariants.so"


def sections(data: bytes) -> list[tuple[str, int, int]]:
    elf = ELFFile(io.BytesIO(data))
    return [(s.name, s["sh_offset"], s["sh_size"]) for s in elf.iter_sections()]


def readelf_sections(path: Path) -> str:
    proc = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True, check=True)
    assert "Error" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    return proc.stdout


def test_prune_for_h100_keeps_sm90_only(tmp_path: Path, cuobjdump_exe: Path) -> None:
    before = MULTIARCH.read_bytes()
    res = prune_fatbins(before, ArchSelection.from_targets(["H100"]))
    # compute_100 PTX cannot be JIT-compiled for a 9.0 GPU, so nothing but sm_90 is left
    assert res.kept_archs == ["sm_90"]
    assert res.dropped_archs == ["sm_80", "sm_100", "compute_100"]
    assert res.untouched_containers == 0 and res.unserved == ()
    assert res.saved == sum(e.size for e in res.dropped) > 0
    assert len(res.data) == len(before)
    assert sections(res.data) == sections(before)  # same ELF layout, pyelftools parses it
    out = tmp_path / "libmultiarch.so"
    out.write_bytes(res.data)
    (tmp_path / "orig.so").write_bytes(before)
    assert readelf_sections(out) == readelf_sections(tmp_path / "orig.so").replace("orig.so", "libmultiarch.so")
    assert listed_by_cuobjdump(cuobjdump_exe, out) == Counter({"sm_90": 2})
    # the reader agrees, and the fatbin shrank by exactly what was saved
    after = read_cuda_library(res.data)
    assert after is not None and after.sass == ["sm_90"] and after.ptx == []
    assert read_cuda_library(before).fatbin_bytes - after.fatbin_bytes == res.saved  # type: ignore[union-attr]
    # the compressed file shrinks too (by how much is measured on a real library below)
    assert len(zlib.compress(res.data, 6)) < len(zlib.compress(before, 6))


def test_prune_keeps_newest_ptx_a_target_can_jit() -> None:
    res = prune_fatbins(MULTIARCH.read_bytes(), ArchSelection.from_targets(["B200"]))
    assert res.kept_archs == ["sm_100", "compute_100"]
    both = prune_fatbins(MULTIARCH.read_bytes(), ArchSelection.from_targets(["sm_80", "H100"]))
    assert both.dropped_archs == ["sm_100", "compute_100"]
    assert both.kept_archs == ["sm_80", "sm_90"]
    assert prune_fatbins(MULTIARCH.read_bytes(), ArchSelection.from_targets(["sm_80", "sm_90", "sm_100"])).saved == 0


@pytest.mark.parametrize(
    "target, kept",
    [
        ("A100", ["sm_80", "compute_80"]),
        ("A10G", ["compute_80", "sm_86"]),  # best minor wins: sm_80 is redundant next to sm_86
        ("L4", ["compute_80", "sm_86"]),  # 8.9 runs sm_86 (same major, lower minor)
        ("H100", ["compute_80", "sm_90a"]),  # sm_90a runs on exactly 9.0
        ("B300", ["compute_80", "sm_103f"]),  # family-specific: runs on 10.3
    ],
)
def test_variant_rules(target: str, kept: list[str], tmp_path: Path, cuobjdump_exe: Path) -> None:
    res = prune_fatbins(VARIANTS.read_bytes(), ArchSelection.from_targets([target]))
    assert res.kept_archs == kept
    assert res.untouched_containers == 0
    assert res.saved == sum(e.size for e in res.dropped)
    out = tmp_path / "lib.so"
    out.write_bytes(res.data)
    listed = listed_by_cuobjdump(cuobjdump_exe, out)
    assert {a for a in listed} == {k.removesuffix("f") for k in kept}


def test_container_with_nothing_for_the_targets_is_left_whole() -> None:
    # libvariants has two containers: nvlink's device-link module (SASS only) and the kernels (SASS + PTX).
    # On a 10.0 GPU no SASS runs (sm_103f needs >= 10.3): the kernels' container keeps its PTX to JIT, and the
    # device-link module, with nothing for 10.0, stays as it was (as the GPU saw it before pruning).
    res = prune_fatbins(VARIANTS.read_bytes(), ArchSelection.from_targets(["B200"]))
    assert res.untouched_containers == 1
    assert res.unserved == ("B200 (10.0)",)
    assert "compute_80" in res.kept_archs
    assert sorted(e.name for e in res.dropped) == ["sm_103f", "sm_80", "sm_86", "sm_90a"]


def test_real_library_pruned_for_h100(tools_dir: Path, tmp_path: Path, cuobjdump_exe: Path) -> None:
    spec, member = NVJPEG_CU13
    lib_path = install_wheel(spec, tools_dir / "nvjpeg13") / member
    before = lib_path.read_bytes()
    res = prune_fatbins(before, ArchSelection.from_targets(["H100"]))
    out = tmp_path / "libnvjpeg.so.13"
    out.write_bytes(res.data)
    listed = listed_by_cuobjdump(cuobjdump_exe, out)
    assert set(listed) == {"sm_90"} and sum(listed.values()) == read_cuda_library(before).containers  # type: ignore[union-attr]
    readelf_sections(out)
    assert sections(res.data) == sections(before)
    gz_before, gz_after = len(zlib.compress(before, 6)), len(zlib.compress(res.data, 6))
    # the numbers docs/inspect.md quotes: ~2.4 MB of 6.1 MB saved; the gzip'd file shrinks by as much
    assert res.saved > 0.35 * len(before)
    assert gz_before - gz_after > 0.9 * res.saved


def test_prune_layer_entries(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    entries = [
        Entry.file("opt/venv/lib/libmultiarch.so", MULTIARCH, mode=0o755),
        Entry.file("opt/venv/lib/libvariants.so", VARIANTS, mode=0o755),
        Entry.file("usr/bin/python3", Path(sys.executable).resolve(), mode=0o755),  # ELF, no GPU code
        Entry.file("etc/motd", b"hello\n"),
        Entry.symlink("opt/venv/lib/libk.so", "libmultiarch.so"),
    ]
    new, report = prune_layer_entries(entries, ["H100"], cache=cache)
    assert [e.path for e in new] == [e.path for e in entries]
    assert new[2] is entries[2] and new[3] is entries[3] and new[4] is entries[4]
    assert new[0].mode == 0o755 and new[0].size == MULTIARCH.stat().st_size
    assert read_cuda_library(new[0].read()).sass == ["sm_90"]  # type: ignore[union-attr]
    assert [lib.path for lib in report.libraries] == ["opt/venv/lib/libmultiarch.so", "opt/venv/lib/libvariants.so"]
    assert report.kept_archs == ["compute_80", "sm_90", "sm_90a"]
    assert report.saved == sum(lib.saved for lib in report.libraries) > 0
    assert gpu_json_fragment(report) == {
        "pruned": True,
        "targets": ["sm_90"],
        "archs": ["compute_80", "sm_90", "sm_90a"],
    }
    # a layer built from the pruned entries is smaller than one from the originals, compressed
    small = build_layer(new, cache, compression="gzip")
    big = build_layer(entries, cache, compression="gzip")
    assert small.size < big.size


def test_a_layer_with_nothing_to_prune_is_not_rewritten(tmp_path: Path) -> None:
    """rewrite_layer: a transform that changes nothing (None) keeps the layer itself; one that prunes makes a new one,
    and both answers are remembered (the second call runs no transform)."""
    cache = Cache(tmp_path / "cache")
    plain = build_layer([Entry.file("usr/bin/python3", Path(sys.executable).resolve(), mode=0o755)], cache)
    gpu = build_layer([Entry.file("app/kernels/libmultiarch.so", MULTIARCH, mode=0o755)], cache)
    calls: list[str] = []

    def prune(entries):  # type: ignore[no-untyped-def]
        new, report = prune_layer_entries(entries, ["H100"], cache=cache)
        calls.append(str(report.saved))
        return new if report.saved else None

    same = rewrite_layer(plain, prune, "prune-archs:sm_90", cache)
    assert same.digest == plain.digest and calls == ["0"]
    pruned = rewrite_layer(gpu, prune, "prune-archs:sm_90", cache, comment="pruned")
    assert pruned.digest != gpu.digest and pruned.comment == "pruned" and int(calls[1]) > 0
    assert rewrite_layer(plain, prune, "prune-archs:sm_90", cache).digest == plain.digest
    assert rewrite_layer(gpu, prune, "prune-archs:sm_90", cache).digest == pruned.digest
    assert len(calls) == 2


def test_targets() -> None:
    sel = ArchSelection.from_targets(["H100", "sm_80", "8.6", "H200", "NVIDIA A10G"])
    assert [t.capability for t in sel.targets] == [(8, 0), (8, 6), (9, 0)]
    assert Target.parse("RTX 4090").capability == (8, 9)
    assert Target.parse("sm_90a").capability == (9, 0)
    with pytest.raises(ConfigError, match="unknown GPU target 'hopper-ish'"):
        ArchSelection.from_targets(["hopper-ish"])
    assert ArchSelection.from_gpu_config({}) is None
    assert ArchSelection.from_gpu_config({"targets": ["H100"], "prune-archs": False}) is None
    assert ArchSelection.from_gpu_config({"targets": ["H100"]}).targets == (parse_target("H100"),)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="needs targets"):
        ArchSelection.from_gpu_config({"prune-archs": True})


# -- the streamed rewrite against the whole-file one ---------------------------------------------------------
def reference_prune_fatbins(data: bytes, keep: ArchSelection) -> tuple[bytes, list[str], list[str], int]:
    """The rewrite as gpuship did it before pruning streamed (the whole file in memory, the fatbin sections as
    pyelftools reads them): the bytes, the kept and dropped architectures and the bytes saved."""
    elf = ELFFile(io.BytesIO(data))
    buf = bytearray(data)
    kept: list[FatbinEntry] = []
    dropped: list[FatbinEntry] = []
    for sec in elf.iter_sections():
        if sec.name not in (".nv_fatbin", "__nv_relfatbin") or sec["sh_type"] == "SHT_NOBITS" or not sec["sh_size"]:
            continue
        for c in parse_fatbin(sec.data()):
            if sec.name != ".nv_fatbin":
                kept.extend(c.entries)
                continue
            sel = keep.select(c)
            kept.extend(sel.kept)
            if sel.dropped:
                dropped.extend(sel.dropped)
                start = sec["sh_offset"] + c.offset
                header = bytearray(data[start : start + c.header_size])
                body = b"".join(data[sec["sh_offset"] + e.offset : sec["sh_offset"] + e.end] for e in sel.kept)
                header[8:16] = len(body).to_bytes(8, "little")
                new = bytes(header) + body
                buf[start : start + c.size] = new + bytes(c.size - len(new))

    def names(entries: list[FatbinEntry]) -> list[str]:
        seen = {(e.arch, not e.is_sass, e.kind): e.name for e in entries}
        return [seen[k] for k in sorted(seen)]

    return bytes(buf), names(kept), names(dropped), sum(e.size for e in dropped)


class _Unseekable:
    """A reader that can only be read front to back (as a member of a compressed layer is)."""

    def __init__(self, data: bytes) -> None:
        self._fh = io.BytesIO(data)
        self.read = self._fh.read

    def close(self) -> None:
        pass

    def __enter__(self) -> _Unseekable:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize("wheel", [NVJPEG_CU13, NVJPEG_CU12], ids=["nvjpeg-cu13", "nvjpeg-cu12"])
def test_streamed_pruning_of_a_real_library_matches_the_whole_file_rewrite(
    wheel: tuple[str, str], tools_dir: Path, tmp_path: Path
) -> None:
    spec, member = wheel
    lib = install_wheel(spec, tools_dir / spec.split("==")[0]) / member
    data = lib.read_bytes()
    sel = ArchSelection.from_targets(["T4", "A100", "H100"])
    want, kept, dropped, saved = reference_prune_fatbins(data, sel)
    assert saved > 0 and want != data
    cache = Cache(tmp_path / "cache")
    entry = Entry.file("usr/lib/" + lib.name, lib, mode=0o755)
    tracemalloc.start()
    try:
        new, report = prune_layer_entries([entry], sel, cache=cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert new[0].size == len(data) and new[0].read() == want
    assert [(lib.saved, list(lib.kept), list(lib.dropped)) for lib in report.libraries] == [(saved, kept, dropped)]
    # the library is never held whole: a copy chunk (1 MiB) and the headers, not its 6-12 MB
    assert peak < len(data) / 4, (peak, len(data))
    assert prune_fatbins(data, sel).data == want  # the in-memory form does the same rewrite
    # a member that cannot be sought (spooled into the cache first) and one of a plain layer (sought in place)
    unseekable = Entry.stream(entry.path, len(data), lambda: _Unseekable(data), 0o755)
    layer = build_layer([entry], cache)
    for e in (unseekable, next(e for e in spooled_entries(layer, cache) if e.kind == "file")):
        assert prune_layer_entries([e], sel, cache=cache)[0][0].read() == want
