"""Traced slimming's keep rules on a real ELF tree (compiled here), and the layer rewrite on real layers.

No container runs here: the trace is given, so every rule is checked on its own — the ELF closure (RUNPATH with
$ORIGIN, the default folders, symlinked sonames, the program interpreter through /lib64), script interpreters,
.pyc/.py pairs, the GPU rule (untouched CUDA wheel libraries stay; GPU frameworks whole, with what they require),
the lib-folder rule, the safety list and the app folder.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.oci import Entry, append_layers, build_layer, empty_image
from gpuship.oci.unpack import unpack
from gpuship.slim import Context, KeepSet, RootView, Trace, elf_links, keep_set, read_trace, rewrite_layers
from gpuship.slim.rules import glob_regex

SP = "opt/venv/lib/python3.11/site-packages"
LIBDIR = "usr/lib/x86_64-linux-gnu"


def _cc(out: Path, *args: str, soname: str | None = None, shared: bool = True) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / (out.name + ".c")
    src.write_text("int gpuship_probe(void) { return 1; }\n" + ("" if shared else "int main(void) { return 0; }\n"))
    cmd = ["gcc", *(["-shared", "-fPIC"] if shared else []), "-o", str(out), str(src), "-Wl,--no-as-needed"]
    if soname:
        cmd.append(f"-Wl,-soname,{soname}")
    subprocess.run(cmd + list(args), check=True, capture_output=True)
    src.unlink()


def _write(root: Path, rel: str, data: str | bytes = "x", mode: int = 0o644) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(p, mode)


def _link(root: Path, rel: str, target: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, p)


def _dist(root: Path, name: str, version: str, files: list[str], requires: tuple[str, ...] = ()) -> None:
    stem = f"{name.replace('-', '_')}-{version}"  # dist-info folders use the escaped name
    info = f"{SP}/{stem}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    _write(root, f"{info}/METADATA", meta + "\nlong description\nRequires-Dist: not-a-header\n")
    rows = [f"{f},," for f in files] + [f"{stem}.dist-info/METADATA,,", f"{stem}.dist-info/RECORD,,"]
    _write(root, f"{info}/RECORD", "\n".join(rows) + "\n")
    for f in files:
        if not (root / SP / f).exists():
            _write(root, f"{SP}/{f}", f"# {f}\n")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("slim-rules")
    root = base / "root"
    stubs = base / "stubs"
    # the C library and the loader, merged-/usr style
    _cc(stubs / "libc.so.6", soname="libc.so.6")
    (root / LIBDIR).mkdir(parents=True)
    _cc(root / LIBDIR / "libc.so.6", soname="libc.so.6")
    _write(root, f"{LIBDIR}/ld-linux-x86-64.so.2", b"\x7fELF loader stand-in", 0o755)
    _link(root, "lib", "usr/lib")
    _link(root, "lib64", "usr/lib64")
    _link(root, "usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    # system libraries: libdep needs libinner through its soname link; libunused nobody needs
    _cc(root / LIBDIR / "libinner.so.3.0.1", soname="libinner.so.3")
    _link(root, f"{LIBDIR}/libinner.so.3", "libinner.so.3.0.1")
    _cc(root / LIBDIR / "libdep.so.2", str(root / LIBDIR / "libinner.so.3.0.1"), soname="libdep.so.2")
    _cc(root / LIBDIR / "libunused.so.1", soname="libunused.so.1")
    # a program (PT_INTERP /lib64/ld-linux-x86-64.so.2) and a script run through env
    _cc(root / "usr/bin/prog", str(root / LIBDIR / "libdep.so.2"), shared=False)
    _write(root, "usr/bin/env", b"\x7fELF env stand-in", 0o755)
    _write(root, "usr/bin/python3.11", b"\x7fELF python stand-in", 0o755)
    _link(root, "usr/bin/python3", "python3.11")
    _write(root, "usr/local/bin/tool", "#!/usr/bin/env python3\nprint('tool')\n", 0o755)
    _write(root, "usr/local/bin/unused-tool", "#!/bin/sh\n", 0o755)
    # a Python package: extension -> bundled lib via RUNPATH $ORIGIN; a second bundled lib nobody links
    _cc(root / SP / "pkg.libs" / "libbundled-1a2b.so.1", soname="libbundled-1a2b.so.1")
    _cc(root / SP / "pkg.libs" / "libextra-9f9f.so.1", soname="libextra-9f9f.so.1")
    _cc(
        root / SP / "pkg" / "_ext.cpython-311-x86_64-linux-gnu.so",
        str(root / SP / "pkg.libs" / "libbundled-1a2b.so.1"),
        str(root / LIBDIR / "libdep.so.2"),
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../pkg.libs",
    )
    _write(root, f"{SP}/pkg/__init__.py", "from ._ext import *\n")
    _write(root, f"{SP}/pkg/__pycache__/__init__.cpython-311.pyc", b"\x00pyc")
    _write(root, f"{SP}/pkg/unused.py", "# never imported\n")
    _dist(
        root,
        "pkg",
        "1.0",
        [
            "pkg/__init__.py",
            "pkg/__pycache__/__init__.cpython-311.pyc",
            "pkg/unused.py",
            "pkg/_ext.cpython-311-x86_64-linux-gnu.so",
            "pkg.libs/libbundled-1a2b.so.1",
            "pkg.libs/libextra-9f9f.so.1",
        ],
    )
    # CUDA wheels nobody touched (a CPU run never loads them)
    _write(root, f"{SP}/nvidia/cublas/lib/libcublasLt.so.12", b"\x7fELF cublasLt stand-in")
    _write(root, f"{SP}/nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9", b"\x7fELF cudnn stand-in")
    _dist(root, "nvidia-cublas-cu12", "12.6.4.1", ["nvidia/cublas/lib/libcublasLt.so.12"])
    # a GPU framework (touched: kept whole), what it requires (triton: GPU, whole; sympy: not, file by file)
    _dist(
        root,
        "torch",
        "2.6.0",
        ["torch/__init__.py", "torch/_inductor/codegen.py", "torch/lib/libtorch_cuda.so"],
        requires=("triton==3.2.0; platform_system == 'Linux'", "sympy>=1.13", "nvidia-cublas-cu12==12.6.4.1"),
    )
    _dist(root, "triton", "3.2.0", ["triton/__init__.py", "triton/backends/nvidia/bin/ptxas"])
    _dist(root, "sympy", "1.13.1", ["sympy/__init__.py", "sympy/big.py"])
    # system files
    _write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n")
    _write(root, "etc/ssl/certs/ca-certificates.crt", "-----BEGIN CERTIFICATE-----\n")
    _write(root, "usr/share/doc/foo/copyright", "license")
    _write(root, "usr/share/doc/foo/changelog.gz", b"\x1f\x8b" + b"0" * 4096)
    (root / "tmp").mkdir()
    (root / "proc").mkdir()
    (root / "home/nonroot").mkdir(parents=True)
    _write(root, "app/main.py", "import pkg\n")
    _write(root, "app/templates/page.html", "<p>untouched, but the app's own</p>")
    return root


def _trace() -> Trace:
    return Trace(
        {
            "open": frozenset(
                {
                    f"/{SP}/pkg/__pycache__/__init__.cpython-311.pyc",
                    f"/{SP}/torch/__init__.py",
                    f"/{SP}/sympy/__init__.py",
                    "/app/main.py",
                    "/app/missing/cache.db",
                }
            ),
            "module": frozenset({f"/{SP}/pkg/_ext.cpython-311-x86_64-linux-gnu.so"}),
            "exec": frozenset({"prog", "/usr/local/bin/tool"}),
        }
    )


@pytest.fixture(scope="module")
def kept(image_root: Path) -> KeepSet:
    view = RootView.scan(image_root)
    ctx = Context(
        arch="amd64",
        env={"PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"},
        command=("python", "main.py"),
        working_dir="/app",
        user="65532:65532",
    )
    result, keeper = keep_set(view, _trace(), ctx)
    assert keeper.touched_distributions == ["pkg", "sympy", "torch"]
    assert keeper.whole_distributions == ["nvidia-cublas-cu12", "torch", "triton"]
    return result


def test_elf_closure(kept: KeepSet, image_root: Path) -> None:
    links = elf_links(image_root / SP / "pkg" / "_ext.cpython-311-x86_64-linux-gnu.so")
    assert links is not None and links.runpath == ("$ORIGIN/../pkg.libs",)
    assert set(links.needed) >= {"libbundled-1a2b.so.1", "libdep.so.2", "libc.so.6"}
    prog = elf_links(image_root / "usr/bin/prog")
    assert prog is not None and prog.interp == "/lib64/ld-linux-x86-64.so.2"
    for p in (
        f"{SP}/pkg/_ext.cpython-311-x86_64-linux-gnu.so",
        f"{SP}/pkg.libs/libbundled-1a2b.so.1",  # RUNPATH $ORIGIN/../pkg.libs
        f"{LIBDIR}/libdep.so.2",  # a default folder
        f"{LIBDIR}/libinner.so.3",
        f"{LIBDIR}/libinner.so.3.0.1",  # needed by libdep, through its soname link
        f"{LIBDIR}/libc.so.6",
        "usr/bin/prog",  # a program started by name, found on PATH
        "lib64",
        "usr/lib64/ld-linux-x86-64.so.2",
        f"{LIBDIR}/ld-linux-x86-64.so.2",  # its interpreter, via links
        "usr/local/bin/tool",
        "usr/bin/env",
        "usr/bin/python3",
        "usr/bin/python3.11",  # #!/usr/bin/env python3
    ):
        assert p in kept.files, p
    assert kept.files[f"{LIBDIR}/libdep.so.2"] == "elf"
    assert f"{LIBDIR}/libunused.so.1" not in kept.files
    assert "usr/local/bin/unused-tool" not in kept.files


def test_gpu_rule_keeps_untouched_cuda_libraries(kept: KeepSet) -> None:
    assert kept.files[f"{SP}/nvidia/cublas/lib/libcublasLt.so.12"] == "gpu"
    assert kept.files[f"{SP}/nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9"] == "gpu"
    # torch was imported: all of it stays (its GPU code paths import what a CPU run never does) ...
    assert kept.files[f"{SP}/torch/_inductor/codegen.py"] == "gpu"
    assert f"{SP}/torch/lib/libtorch_cuda.so" in kept.files
    # ... with the GPU distributions it requires, whole; a CPU dependency is slimmed file by file
    assert kept.files[f"{SP}/triton/backends/nvidia/bin/ptxas"] == "gpu"
    assert f"{SP}/sympy/__init__.py" in kept.files and f"{SP}/sympy/big.py" not in kept.files


def test_python_rules(kept: KeepSet) -> None:
    assert kept.files[f"{SP}/pkg/__init__.py"] == "python"  # the source beside a traced .pyc
    assert kept.files[f"{SP}/pkg.libs/libextra-9f9f.so.1"] == "python-libs"  # lib*.so* of a used package's .libs
    assert f"{SP}/pkg/unused.py" not in kept.files
    assert f"{SP}/sympy-1.13.1.dist-info/RECORD" in kept.files  # metadata of every distribution stays


def test_safety_list_app_and_directories(kept: KeepSet) -> None:
    for p in (
        "etc/passwd",
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/doc/foo/copyright",
        "app/templates/page.html",
        "app/main.py",
    ):
        assert p in kept.files, p
    assert "usr/share/doc/foo/changelog.gz" not in kept.files
    assert {"tmp", "proc", "home/nonroot", "app"} <= set(kept.dirs)  # empty folders and mount points, the home, the app
    assert "usr/share/doc/foo" in kept.dirs  # a parent of a kept file


def test_glob_patterns() -> None:
    rx = glob_regex(["**/site-packages/nvidia/**", "etc/ld.so.conf.d/**", "usr/share/doc/*/copyright"])
    assert rx is not None
    assert rx.match(f"{SP}/nvidia/cublas/lib/libcublas.so.12")
    assert rx.match("etc/ld.so.conf.d/x.conf") and not rx.match("etc/ld.so.conf")
    assert rx.match("usr/share/doc/a/copyright") and not rx.match("usr/share/doc/a/b/copyright")
    assert glob_regex(["**/pyvenv.cfg"]).match("pyvenv.cfg")  # type: ignore[union-attr]


def test_read_trace_merges_hook_and_loader_logs(tmp_path: Path) -> None:
    (tmp_path / "py.12").write_text(
        "open\t/etc/passwd\nmodule\t/app/main.py\nopen\t/proc/self/maps\ndlopen\tlibz.so.1\n"
    )
    (tmp_path / "ld.13").write_text(
        "     13:\tfile=libz.so.1 [0];  needed by /usr/bin/gzip [0]\n"
        "     13:\t  trying file=/usr/lib/x86_64-linux-gnu/libz.so.1\n"
        "     13:\tcalling init: /usr/lib/x86_64-linux-gnu/libz.so.1\n"
        "     13:\tfile=/opt/x/_ext.so [0];  dynamically loaded by python3 [0]\n"
        "     13:\tinitialize program: sh\n"
    )
    t = read_trace(tmp_path)
    assert t.python_processes == 1 and t.loader_logs == 1
    assert t.paths["open"] == {"/etc/passwd"}  # /proc is never an image path
    assert t.paths["dlopen"] == {"libz.so.1"}
    assert t.paths["ld"] >= {"/usr/bin/gzip", "/usr/lib/x86_64-linux-gnu/libz.so.1", "/opt/x/_ext.so"}
    assert t.paths["ld-try"] == {"/usr/lib/x86_64-linux-gnu/libz.so.1"}
    assert {"python3", "sh"} <= t.paths["exec"]


def test_rewrite_layers_keeps_only_visible_kept_entries(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    low = build_layer(
        [
            Entry.dir("etc"),
            Entry.file("etc/keep.txt", "keep"),
            Entry.file("etc/drop.txt", "drop" * 100),
            Entry.file("etc/over.txt", "old" * 100),
            Entry.dir("gone"),
            Entry.file("gone/x.txt", "gone"),
            Entry.dir("data"),
            Entry.file("data/old.txt", "hidden by the opaque directory above"),
            Entry.symlink("etc/link", "keep.txt"),
            Entry.dir("empty"),
        ],
        cache,
        compression="gzip",  # sizes compare compressed (a small plain tar is one 10 KiB record)
        comment="low",
    )
    high = build_layer(
        [
            Entry.file("etc/over.txt", "new"),
            Entry.whiteout("gone"),
            Entry.opaque("data"),
            Entry.file("data/new.txt", "new data"),
            Entry.file("etc/unused.txt", "not kept"),
        ],
        cache,
        compression="gzip",
        comment="high",
    )
    top = build_layer(
        [Entry.file("etc/top.txt", "all kept"), Entry.whiteout("etc/unused.txt")],
        cache,
        compression="gzip",
        comment="top",
    )
    image = append_layers(empty_image("linux/amd64"), [low, high, top])
    root = tmp_path / "root"
    unpack(image, root)
    view = RootView.scan(root)
    kept = KeepSet(
        files={p: "test" for p in ("etc/keep.txt", "etc/over.txt", "data/new.txt", "etc/link", "etc/top.txt")},
        dirs={"etc": "parent", "data": "parent", "empty": "empty-dir"},
    )
    layers, stats, removed = rewrite_layers(image, view, kept, cache)
    assert len(layers) == 3
    paths = [[e.path for e, _ in layer.entries()] for layer in layers]
    assert sorted(paths[0]) == ["empty", "etc", "etc/keep.txt", "etc/link"]  # over.txt is the upper layer's now
    assert sorted(paths[1]) == ["data", "data/new.txt", "etc", "etc/over.txt"]  # no whiteouts needed
    assert layers[2] is top  # nothing to drop: the very same blob
    assert {r.path for r in removed} == {"etc/drop.txt"}  # unused.txt was never visible: shadowed, not removed
    assert stats[0].shadowed_bytes == len("old" * 100) + len("gone") + len("hidden by the opaque directory above")
    assert stats[0].bytes_after < stats[0].bytes_before and layers[0].size < low.size
    out = tmp_path / "slim"
    unpack(layers, out)
    assert (out / "etc/over.txt").read_text() == "new" and (out / "etc/keep.txt").read_text() == "keep"
    assert os.readlink(out / "etc/link") == "keep.txt"
    assert not (out / "gone").exists() and not (out / "etc/drop.txt").exists() and (out / "empty").is_dir()
    assert not (out / "etc/unused.txt").exists() and (out / "etc/top.txt").read_text() == "all kept"
    # the same inputs give the same layers (cached by content)
    again, _, _ = rewrite_layers(image, view, kept, cache)
    assert [layer.digest for layer in again] == [layer.digest for layer in layers]
