"""The venv layers on the real Debian base, run by the Docker Engine: /opt/venv/bin/python imports numpy and the
console script runs, as the non-root app user, with nothing written at run time (precompiled byte code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.oci import Platform, append_layers, empty_image
from gpuship.oci.engine import load_into_engine
from gpuship.project import load_project
from gpuship.sources.debian import build_base, libdeps_for_layers
from gpuship.sources.python import lock_project, python_layers

PROBE = (
    "import sys, os, numpy, importlib.metadata as md; "
    "print(sys.executable, sys.prefix, numpy.__version__, numpy.linalg.det(numpy.eye(2)), os.getuid(), "
    "sorted(d.metadata['Name'] for d in md.distributions()), "
    "os.access(os.path.dirname(numpy.__file__), os.W_OK))"
)


def _run(docker, shared_cache: Cache, tmp_path: Path, platform: Platform, machine: str) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "app"
    root.mkdir()
    (root / "requirements.txt").write_text("numpy==2.4.6\npyflakes==3.4.0\n")
    base = build_base("debian-bookworm", platform, cache=shared_cache)
    lock = lock_project(load_project(root), [platform], base.python.version, shared_cache)
    env = python_layers(lock, platform, base.python, shared_cache)
    layers = [layer for _, layer in env.layers]
    # the wheels' shared-library needs (numpy: libstdc++) come from Debian, as the build does it
    needed = sorted({d.package for d in libdeps_for_layers(layers, base, shared_cache)})
    assert needed == ["libstdc++6"]
    base = build_base("debian-bookworm", platform, extra_packages=needed, cache=shared_cache)
    image = append_layers(empty_image(platform, base.config.with_env(**env.env_vars())), [*base.layers, *layers])
    tag = docker.tag()
    load_into_engine(image, tag)
    try:
        out = docker.run(
            "run", "--rm", "--platform", str(platform), tag, "/opt/venv/bin/python", "-c", PROBE, timeout=300
        )
        assert out.stdout.strip() == ("/opt/venv/bin/python /opt/venv 2.4.6 1.0 65532 ['numpy', 'pyflakes'] False"), (
            out.stderr
        )
        # `python` on PATH is the venv's; the console script runs through its shebang
        assert (
            docker.run("run", "--rm", tag, "python", "-c", "import sys; print(sys.prefix)").stdout.strip()
            == "/opt/venv"
        )
        assert docker.run("run", "--rm", tag, "pyflakes", "--version", timeout=300).stdout.startswith("3.4.0")
        # every numpy module imports from its precompiled .pyc (none is compiled at run time)
        verbose = docker.run("run", "--rm", tag, "python", "-v", "-c", "import numpy", timeout=300).stderr
        assert "matches /opt/venv/lib/python3.11/site-packages/numpy/__init__.py" in verbose
        assert "code object from '/opt/venv/lib/python3.11/site-packages/numpy/__init__.py'" not in verbose
        arch = docker.run(
            "run", "--rm", tag, "python", "-c", "import platform; print(platform.machine())"
        ).stdout.strip()
        assert arch == machine
    finally:
        docker.run("rmi", "-f", tag, check=False)


@pytest.mark.docker
def test_numpy_in_the_venv_on_debian_amd64(docker, shared_cache: Cache, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _run(docker, shared_cache, tmp_path, Platform.parse("linux/amd64"), "x86_64")


@pytest.mark.docker
@pytest.mark.slow
def test_numpy_in_the_venv_on_debian_arm64(docker, shared_cache: Cache, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Runs under qemu-user emulation (binfmt_misc) on an x86 host."""
    _run(docker, shared_cache, tmp_path, Platform.parse("linux/arm64"), "aarch64")
