"""The venv layers: locked wheels installed into /opt/venv for linux/amd64 and linux/arm64, split into the
documented groups, pruned (tests, static archives, Cython sources gone; numpy still imports), byte-compiled,
root-owned and read-only for the app user, with consistent RECORDs — and the same bytes from two builds."""

from __future__ import annotations

import csv
import io
import posixpath
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.errors import ConfigError
from gpuship.oci import Platform
from gpuship.oci.layer import Layer
from gpuship.project import load_project
from gpuship.sources.python import (
    PruneRules,
    PythonInfo,
    group_of,
    install_project,
    lock_project,
    python_layers,
)

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")
BASE_PY = PythonInfo("3.11.2", "/usr/bin/python3.11")  # Debian bookworm's interpreter
SITE = "opt/venv/lib/python3.11/site-packages"
ELF_MACHINE = {AMD64: 0x3E, ARM64: 0xB7}


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, shared_cache: Cache):
    root = tmp_path_factory.mktemp("envproj")
    # numpy (compiled, with tests), pyflakes (a console script), nvidia-ml-py (a small package of the cuda group)
    (root / "requirements.txt").write_text("numpy==2.4.6\npyflakes==3.4.0\nnvidia-ml-py==13.580.82\n")
    return lock_project(load_project(root), [AMD64, ARM64], "3.11", shared_cache)


def layer_files(layer: Layer) -> dict[str, tuple[object, bytes | None]]:
    """path -> (Entry, bytes for files) of a layer."""
    out: dict[str, tuple[object, bytes | None]] = {}
    for e, fh in layer.entries():
        out[e.path] = (e, fh.read() if fh is not None else None)
    for path, (e, _) in list(out.items()):  # identical files are stored once and hard-linked
        if e.kind == "hardlink":
            out[path] = (e, out[e.target][1])
    return out


def test_group_rule() -> None:
    assert [group_of(n) for n in ("nvidia-cublas-cu12", "cuda-bindings", "nvidia_cudnn_cu12")] == ["cuda"] * 3
    assert [group_of(n) for n in ("torch", "Triton", "jaxlib", "cupy-cuda12x", "numba", "llvmlite", "tensorflow")] == [
        "frameworks"
    ] * 7
    assert [group_of(n) for n in ("numpy", "pyflakes", "nvidia", "requests")] == ["deps"] * 4


@pytest.mark.parametrize("platform", [AMD64, ARM64], ids=["amd64", "arm64"])
def test_venv_layers(locked, shared_cache: Cache, platform: Platform) -> None:
    env = python_layers(locked, platform, BASE_PY, shared_cache)
    assert [g for g, _ in env.layers] == ["venv", "cuda", "deps"]
    groups = {d.name: d.group for d in env.distributions}
    assert groups == {"nvidia-ml-py": "cuda", "numpy": "deps", "pyflakes": "deps"}
    assert env.site_packages == "/opt/venv/lib/python3.11/site-packages"
    assert env.env_vars()["PATH"].startswith("/opt/venv/bin:")
    assert "pyflakes" in env.scripts

    venv = layer_files(dict(env.layers)["venv"])
    assert (
        venv["opt/venv/bin/python"][0].kind == "symlink"
        and venv["opt/venv/bin/python"][0].target == "/usr/bin/python3.11"
    )
    assert venv["opt/venv/bin/python3"][0].target == "python"
    cfg = venv["opt/venv/pyvenv.cfg"][1].decode()
    assert "home = /usr/bin\n" in cfg and "version = 3.11.2\n" in cfg and "include-system-site-packages = false" in cfg
    assert venv[SITE][0].kind == "dir"

    files = layer_files(dict(env.layers)["deps"])
    for path, (e, _) in files.items():  # root-owned, nothing writable by the app user
        assert (e.uid, e.gid) == (0, 0), path
        assert e.kind == "symlink" or e.mode & 0o022 == 0, (path, oct(e.mode))

    # the console script: executable, shebang on the venv's python, a launcher for pyflakes' entry point
    script, body = files["opt/venv/bin/pyflakes"]
    assert script.mode == 0o755
    assert body.startswith(b"#!/opt/venv/bin/python\n") and b"from pyflakes.api import main" in body

    # the compiled extension is the target's architecture
    ext = next(p for p in files if p.startswith(f"{SITE}/numpy/_core/_multiarray_umath.cpython-311-"))
    elf = files[ext][1]
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == ELF_MACHINE[platform]

    # pruning: test suites, static archives and Cython sources of numpy are gone; its headers and testing helpers stay
    assert not any(p.startswith(f"{SITE}/numpy/_core/tests/") for p in files)
    assert not any("/tests/" in p for p in files if p.startswith(f"{SITE}/numpy/"))
    assert not any(p.endswith((".a", ".pyx", ".pxd")) for p in files)
    assert f"{SITE}/numpy/_core/include/numpy/ndarraytypes.h" in files
    assert f"{SITE}/numpy/testing/__init__.py" in files
    assert env.report.pruned["tests"][0] > 100 and env.report.pruned["static-libraries"][0] >= 1
    assert env.report.by_distribution["numpy"][1] > 1_000_000

    # byte code, precompiled in unchecked-hash mode (flags = 0b01), recording the image path
    pyc = files[f"{SITE}/numpy/__pycache__/__init__.cpython-311.pyc"][1]
    assert int.from_bytes(pyc[4:8], "little") == 0b01
    assert b"/opt/venv/lib/python3.11/site-packages/numpy/__init__.py" in pyc
    assert env.report.compiled[0] > 100

    # RECORD: what is there, and nothing that was pruned
    record_path = next(p for p in files if p.startswith(f"{SITE}/numpy-") and p.endswith(".dist-info/RECORD"))
    rows = list(csv.reader(io.StringIO(files[record_path][1].decode())))
    listed = {posixpath.normpath(posixpath.join(SITE, r[0])) for r in rows}
    assert listed <= set(files), sorted(listed - set(files))[:5]
    numpy_files = {p for p in files if p.startswith((f"{SITE}/numpy/", f"{SITE}/numpy.libs/", f"{SITE}/numpy-"))}
    assert numpy_files - {p for p in numpy_files if files[p][0].kind == "dir"} <= listed
    assert any(r[0].endswith(".pyc") and r[1] == "" for r in rows)
    pyflakes_record = next(p for p in files if p.startswith(f"{SITE}/pyflakes-") and p.endswith("/RECORD"))
    assert "../../../bin/pyflakes,sha256=" in files[pyflakes_record][1].decode()
    assert files[pyflakes_record.replace("RECORD", "INSTALLER")][1] == b"gpuship\n"


def test_same_inputs_same_layer_digests(locked, shared_cache: Cache, tmp_path: Path) -> None:
    first = {p: python_layers(locked, p, BASE_PY, shared_cache) for p in (AMD64, ARM64)}
    for plat, env in first.items():
        fresh = Cache(tmp_path / f"fresh-{plat.architecture}")  # nothing cached but the downloaded wheels
        for pkg in locked.packages(plat):
            fresh.put_file(shared_cache.blob_path(f"sha256:{pkg.sha256}"), expected=f"sha256:{pkg.sha256}")
        again = python_layers(locked, plat, BASE_PY, fresh)
        assert not any(layer.reused for _, layer in again.layers)  # really built a second time
        assert [(g, lay.digest, lay.diff_id) for g, lay in again.layers] == [
            (g, lay.digest, lay.diff_id) for g, lay in env.layers
        ]
        assert again.distributions == env.distributions
    # another project on the same packages gets the same layers: nothing new is built
    other = tmp_path / "other"
    other.mkdir()
    (other / "requirements.txt").write_text("nvidia-ml-py==13.580.82\nnumpy==2.4.6\npyflakes==3.4.0\n")
    other_env = python_layers(
        lock_project(load_project(other), [AMD64], "3.11", shared_cache), AMD64, BASE_PY, shared_cache
    )
    assert all(layer.reused for _, layer in other_env.layers)
    assert [lay.digest for _, lay in other_env.layers] == [lay.digest for _, lay in first[AMD64].layers]
    # a pure-Python group is the same layer on both architectures; numpy's is not
    assert dict(first[AMD64].layers)["cuda"].digest == dict(first[ARM64].layers)["cuda"].digest
    assert dict(first[AMD64].layers)["deps"].digest != dict(first[ARM64].layers)["deps"].digest


def test_prune_rules_change_the_layer(locked, shared_cache: Cache) -> None:
    default = dict(python_layers(locked, AMD64, BASE_PY, shared_cache).layers)["deps"]
    keep = python_layers(
        locked, AMD64, BASE_PY, shared_cache, prune=PruneRules(keep=("numpy/_core/tests/",), bytecode="none")
    )
    files = {e.path for e, _ in dict(keep.layers)["deps"].entries()}
    assert f"{SITE}/numpy/_core/tests/test_multiarray.py" in files
    assert not any(p.endswith(".pyc") for p in files)
    assert keep.report.compiled == (0, 0)
    assert dict(keep.layers)["deps"].digest != default.digest
    with pytest.raises(ConfigError, match="made for Python 3.11, but the base image has Python 3.13"):
        python_layers(locked, AMD64, PythonInfo("3.13", "/usr/bin/python3.13"), shared_cache)


def test_unpacked_venv_runs_on_this_machine(locked, shared_cache: Cache, tmp_path: Path) -> None:
    """The amd64 layers unpacked here: /usr/bin/python3.11 (this Debian 12 host's) runs the venv as the image would."""
    env = python_layers(locked, AMD64, BASE_PY, shared_cache)
    root = tmp_path / "root"
    for _, layer in env.layers:
        with layer.open_tar() as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            tar.extractall(root, filter="tar")
    python = root / "opt/venv/bin/python"
    code = textwrap.dedent("""\
        import sys, numpy, importlib.metadata as md
        assert sys.prefix.endswith("/opt/venv"), sys.prefix
        assert numpy.linalg.det(numpy.eye(3)) == 1.0
        print(sorted(d.metadata["Name"] for d in md.distributions()))
        print(numpy.__file__)
        """)
    out = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    assert "['numpy', 'nvidia-ml-py', 'pyflakes']" in out
    assert out.strip().endswith(f"{root}/{SITE}/numpy/__init__.py")
    ver = subprocess.run(
        [str(python), str(root / "opt/venv/bin/pyflakes"), "--version"], capture_output=True, text=True, check=True
    )
    assert ver.stdout.startswith("3.4.0")


def test_install_project_builds_the_package(tmp_path: Path, cache: Cache) -> None:
    root = tmp_path / "myapp"
    (root / "src" / "myapp").mkdir(parents=True)
    (root / "src" / "myapp" / "__init__.py").write_text("def main():\n    print('hello from myapp')\n")
    (root / "src" / "myapp" / "tests").mkdir()
    (root / "src" / "myapp" / "tests" / "test_it.py").write_text("def test(): pass\n")
    (root / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [project]
        name = "myapp"
        version = "0.3.0"
        dependencies = ["six"]
        [project.scripts]
        myapp = "myapp:main"
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
        """)
    )
    inst = install_project(load_project(root), BASE_PY, cache, platform=ARM64)
    assert (inst.name, inst.version, inst.scripts) == ("myapp", "0.3.0", ("myapp",))
    assert inst.wheel.endswith("-none-any.whl")
    files = {e.path: e for e in inst.entries}
    assert f"{SITE}/myapp/__init__.py" in files and f"{SITE}/myapp/__pycache__/__init__.cpython-311.pyc" in files
    assert f"{SITE}/myapp-0.3.0.dist-info/RECORD" in files and f"{SITE}/myapp-0.3.0.dist-info/METADATA" in files
    assert files["opt/venv/bin/myapp"].read().startswith(b"#!/opt/venv/bin/python\n")
    assert f"{SITE}/myapp/tests/test_it.py" not in files  # the same prune rules
    assert all(e.uid == 0 and e.mode & 0o022 == 0 for e in inst.entries)

    (root / "pyproject.toml").write_text('[project]\nname = "plain"\nversion = "0"\ndependencies = []\n')
    with pytest.raises(ConfigError, match="is not a package"):
        install_project(load_project(root), BASE_PY, cache)


def test_big_gpu_distributions_get_their_own_layers_cuda_lowest_biggest_first() -> None:
    """torch and the big CUDA wheels lie alone at the bottom (their layer depends on their wheel only, so two
    projects that lock them share it); small ones stay in their group; numpy is never split out."""
    from dataclasses import dataclass

    from gpuship.sources.python.groups import OWN_LAYER_BUDGET, OWN_LAYER_BYTES, layer_units

    @dataclass(frozen=True)
    class Pkg:
        name: str
        size: int | None

        @property
        def key(self) -> str:
            return self.name

    mb = 1 << 20
    pkgs = [
        Pkg("numpy", 90 * mb),
        Pkg("torch", 900 * mb),
        Pkg("nvidia-cublas-cu12", 600 * mb),
        Pkg("nvidia-nvtx-cu12", 1 * mb),
        Pkg("triton", 200 * mb),
        Pkg("typing-extensions", None),
        Pkg("llvmlite", OWN_LAYER_BYTES),
    ]
    units = layer_units(pkgs)
    # the big ones alone at the bottom (CUDA's first, biggest first within a group), then each group's rest
    assert [(g, [p.name for p in ps]) for g, ps in units] == [
        ("cuda", ["nvidia-cublas-cu12"]),
        ("frameworks", ["torch"]),
        ("frameworks", ["triton"]),
        ("frameworks", ["llvmlite"]),
        ("cuda", ["nvidia-nvtx-cu12"]),
        ("deps", ["numpy", "typing-extensions"]),
    ]
    many = [Pkg(f"nvidia-lib{i:02d}", (100 + i) * mb) for i in range(OWN_LAYER_BUDGET + 3)]
    units = layer_units(many)
    alone = [ps[0].name for g, ps in units if len(ps) == 1]
    assert len(units) == OWN_LAYER_BUDGET + 1 and alone[0] == f"nvidia-lib{OWN_LAYER_BUDGET + 2:02d}"
    assert sorted(p.name for p in units[-1][1]) == ["nvidia-lib00", "nvidia-lib01", "nvidia-lib02"]
