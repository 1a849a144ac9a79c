"""find-libdeps on real ELF files: small libraries compiled here (fast), and opencv-python's wheel (slow).

The Contents index of the host's configured mirror maps sonames to packages; it downloads once per session.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuship.cache import Cache
from gpuship.errors import ResolveError
from gpuship.oci import append_layers, empty_image, layer_from_dir
from gpuship.oci.sinks import load_into_engine
from gpuship.sources.debian import DebianBase, LibDep, build_base, libdeps_for_layers, libdeps_for_tree
from gpuship.sources.debian.libdeps import DRIVER_PROVIDED, ElfFacts, Tree, driver_provided, unsatisfied


def _cc(out: Path, *args: str, soname: str | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    src.write_text("int gpuship_probe(void) { return 1; }\n")
    cmd = ["gcc", "-shared", "-fPIC", "-o", str(out), str(src), "-Wl,--no-as-needed"]
    if soname:
        cmd.append(f"-Wl,-soname,{soname}")
    subprocess.run(cmd + list(args), check=True, capture_output=True)
    src.unlink()


def _stub(stubs: Path, soname: str) -> str:
    """A library with ``soname`` to link against (it stays outside the scanned tree)."""
    _cc(stubs / soname, soname=soname)
    return str(stubs / soname)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """site-packages-like tree: an extension that needs a bundled lib (via $ORIGIN RPATH), the driver's
    libcuda, glib's libgthread and libc; another one that needs the bundled lib with no RPATH."""
    base = tmp_path_factory.mktemp("libdeps")
    stubs, root = base / "stubs", base / "tree"
    bundled = root / "pkg.libs" / "libbundled-1a2b3c.so.1"
    _cc(bundled, soname="libbundled-1a2b3c.so.1")
    _cc(
        root / "pkg" / "_ext.so",
        str(bundled),
        _stub(stubs, "libcuda.so.1"),
        _stub(stubs, "libgthread-2.0.so.0"),
        _stub(stubs, "libnvidia-ml.so.1"),
        "-Wl,-rpath,$ORIGIN/../pkg.libs",
    )
    _cc(root / "other" / "_x.so", str(bundled))
    (root / "pkg" / "data.so.txt").write_bytes(b"\x7fELF not really")
    return root


@pytest.fixture(scope="module")
def bookworm(shared_cache: Cache) -> DebianBase:
    return build_base("debian-bookworm", "linux/amd64", cache=shared_cache)


def test_driver_libraries_are_never_pulled_in() -> None:
    for so in (
        "libcuda.so.1",
        "libcuda.so",
        "libnvidia-ml.so.1",
        "libnvidia-ptxjitcompiler.so.1",
        "libcudadebugger.so.1",
        "libnvidia-nvvm.so.4",
        "libnvcuvid.so.1",
    ):
        assert driver_provided(so), so
    assert not driver_provided("libcudart.so.12") and not driver_provided("libGL.so.1")
    assert "libnvidia-*.so*" in DRIVER_PROVIDED


def test_loader_search_rules() -> None:
    """RPATH, RUNPATH with $ORIGIN through a symlinked folder, LD_LIBRARY_PATH, the standard folders, absolute
    names through the merged-/usr links, libraries shipped elsewhere in the image, other architectures."""
    t = Tree()
    for p in (
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "opt/v/lib/python3.11/site-packages/a.libs/liba.so.1",
        "opt/extra/libe.so.1",
        "opt/rp/librp.so.1",
        "srv/elsewhere/libw.so.2",
    ):
        t.add(p, "file")
    t.add("opt/v/lib64", "symlink", "lib")
    sp = "opt/v/lib64/python3.11/site-packages"
    x86 = ("EM_X86_64", 64)
    facts = [
        ElfFacts(
            f"{sp}/a/_m.so",
            ("libc.so.6", "liba.so.1", "libe.so.1", "libw.so.2", "libcuda.so.1"),
            runpath=("$ORIGIN/../a.libs",),
            machine=x86[0],
            elfclass=x86[1],
        ),
        ElfFacts("opt/rp/bin/tool", ("librp.so.1",), rpath=("${ORIGIN}/..",), machine=x86[0], elfclass=x86[1]),
        # RPATH is ignored when RUNPATH is set, but the library is elsewhere in the image: satisfied
        ElfFacts(
            "opt/rp/bin/tool2",
            ("librp.so.1",),
            rpath=("$ORIGIN/..",),
            runpath=("/nowhere",),
            machine=x86[0],
            elfclass=x86[1],
        ),
        ElfFacts("opt/arm/_m.so", ("libnothere.so.1",), machine="EM_AARCH64", elfclass=64),
        ElfFacts(
            "opt/x/_m.so", ("libnothere.so.1", "/lib/x86_64-linux-gnu/libc.so.6"), machine=x86[0], elfclass=x86[1]
        ),
    ]
    t.add("lib", "symlink", "usr/lib")
    got = unsatisfied(facts, t, "amd64", ld_library_path=["/opt/extra"])
    assert got == {"libnothere.so.1": ["opt/x/_m.so"]}
    t2 = Tree()
    t2.add("usr/lib/x86_64-linux-gnu/libc.so.6", "file")
    assert unsatisfied(facts[:1], t2, "amd64") == {
        so: [facts[0].path] for so in ("liba.so.1", "libe.so.1", "libw.so.2")
    }


def test_tree_needs_glib_only(tree: Path, bookworm: DebianBase, shared_cache: Cache) -> None:
    deps = libdeps_for_tree(tree, bookworm, shared_cache, prefix="/opt/app")
    assert deps == [
        LibDep(
            "libglib2.0-0",
            "libgthread-2.0.so.0",
            ("/opt/app/pkg/_ext.so",),
            "/usr/lib/x86_64-linux-gnu/libgthread-2.0.so.0",
        )
    ]
    # the same from a layer, as the build engine calls it
    layer = layer_from_dir(tree, shared_cache, prefix="opt/app")
    assert libdeps_for_layers([layer], bookworm, cache=shared_cache) == deps
    # with the package installed, nothing is left to add
    more = build_base("debian-bookworm", "linux/amd64", extra_packages=[d.package for d in deps], cache=shared_cache)
    assert libdeps_for_layers([layer], more, cache=shared_cache) == []


def test_cli_prints_the_packages(tree: Path, shared_cache: Cache, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuship.cli.main import app

    monkeypatch.setenv("GPUSHIP_CACHE", str(shared_cache.root))
    res = CliRunner().invoke(app, ["-q", "libdeps", str(tree), "--prefix", "/opt/app", "--platform", "linux/amd64"])
    assert res.exit_code == 0, res.output
    assert res.stdout.split() == ["libglib2.0-0"]
    res = CliRunner().invoke(
        app,
        ["-q", "libdeps", str(tree), "--prefix", "/opt/app", "--platform", "linux/amd64", "--ignore", "libgthread-*"],
    )
    assert res.exit_code == 0 and res.stdout.strip() == ""


def test_unmappable_soname_names_the_file(tmp_path: Path, bookworm: DebianBase, shared_cache: Cache) -> None:
    root = tmp_path / "tree"
    _cc(root / "mod" / "_bad.so", _stub(tmp_path / "stubs", "libgpuship-nowhere.so.7"))
    with pytest.raises(ResolveError) as exc:
        libdeps_for_tree(root, bookworm, shared_cache, prefix="/srv")
    line = exc.value.line()
    assert line.startswith("libgpuship-nowhere.so.7, needed by /srv/mod/_bad.so, is not in the image"), line
    assert "no bookworm amd64 package ships it" in line


@pytest.mark.slow
def test_opencv_python_gets_libgl_and_imports(tmp_path: Path, shared_cache: Cache, docker) -> None:  # type: ignore[no-untyped-def]
    """opencv-python (not -headless) needs libGL.so.1 and friends: find-libdeps adds them; cv2 imports."""
    site = tmp_path / "site-packages"
    subprocess.run(
        [
            "uv",
            "pip",
            "install",
            "--target",
            str(site),
            "--python-platform",
            "x86_64-manylinux_2_28",
            "--python-version",
            "3.11",
            "--only-binary",
            ":all:",
            "opencv-python",
            "numpy",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    prefix = "opt/venv/lib/python3.11/site-packages"
    env_layer = layer_from_dir(site, shared_cache, prefix=prefix)
    base = build_base("debian-bookworm", "linux/amd64", cache=shared_cache)
    deps = libdeps_for_layers([env_layer], base, cache=shared_cache)
    by_so = {d.soname: d for d in deps}
    assert by_so["libGL.so.1"].package == "libgl1"
    assert any(p.startswith(f"/{prefix}/cv2/") for p in by_so["libGL.so.1"].needed_by)
    assert {"libglib2.0-0", "libstdc++6"} <= {d.package for d in deps}
    full = build_base(
        "debian-bookworm", "linux/amd64", extra_packages=sorted({d.package for d in deps}), cache=shared_cache
    )
    assert {"libgl1", "libglx0"} <= set(full.package_names())
    image = append_layers(
        empty_image(full.platform, full.config.with_env(PYTHONPATH=f"/{prefix}")), [*full.layers, env_layer]
    )
    tag = docker.tag()
    load_into_engine(image, tag)
    try:
        out = docker.run(
            "run",
            "--rm",
            tag,
            "python3",
            "-c",
            "import cv2, numpy; ok, png = cv2.imencode('.png', numpy.zeros((8, 8, 3), 'uint8')); "
            "print(ok, png[:4].tobytes())",
            timeout=300,
        )
        assert out.stdout.strip() == "True b'\\x89PNG'", out.stderr
    finally:
        docker.run("rmi", "-f", tag, check=False)
