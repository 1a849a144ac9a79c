"""Shared fixtures. Tests are real: a real Docker Engine, real .debs and wheels, a real registry.

The README's test command (scripts/test.sh) installs and starts what these need; a test that needs the
engine fails (it does not skip) when none answers, so a broken set-up can never pass silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuship.cache import Cache

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    """A fresh, private cache for one test."""
    return Cache(tmp_path / "cache")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """One cache for the whole session (downloads of .debs and wheels are shared between tests)."""
    root = os.environ.get("GPUSHIP_TEST_CACHE")
    return Cache(Path(root) if root else tmp_path_factory.mktemp("shared-cache"))


class Docker:
    """The real Docker Engine, through its CLI."""

    def __init__(self) -> None:
        self.exe = shutil.which("docker")

    def run(
        self, *args: str, check: bool = True, timeout: float = 600, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.exe or "docker", *args], capture_output=True, text=input is None, input=input, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def load(self, archive: Path) -> str:
        """docker load an archive; returns the image ref or ID it printed."""
        out = self.run("load", "-i", str(archive)).stdout
        line = [text for text in out.splitlines() if text.startswith("Loaded image")][-1]
        return line.split(": ", 1)[1].strip()

    def tag(self) -> str:
        return f"gpuship-test/{uuid.uuid4().hex[:12]}:latest"

    @contextlib.contextmanager
    def loaded(self, archive: Path) -> Iterator[str]:
        """The image of a docker-archive loaded for the block (its ref), removed from the engine after it."""
        ref = self.load(archive)
        try:
            yield ref
        finally:
            self.run("rmi", "-f", ref, check=False)

    def python(self, ref: str, code: str) -> str:
        """What ``python -c CODE`` prints in a throw-away container of ``ref`` (the image's entrypoint replaced)."""
        return self.run("run", "--rm", "--entrypoint", "python", ref, "-c", code).stdout


@pytest.fixture(scope="session")
def docker() -> Docker:
    d = Docker()
    if d.exe is None or subprocess.run([d.exe, "info"], capture_output=True).returncode != 0:
        pytest.fail("no Docker Engine answers: run the README's test command (scripts/test.sh), which starts dockerd")
    return d


@pytest.fixture
def tags(docker: Docker) -> Iterator[Callable[[], str]]:
    """``tags()`` gives a new image name for the engine; every name given is removed after the test."""
    made: list[str] = []

    def new() -> str:
        made.append(docker.tag())
        return made[-1]

    yield new
    for t in made:
        docker.run("rmi", "-f", t, check=False)


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One gpuship cache for every test that runs `gpuship build`: wheels and .debs are downloaded once."""
    root = os.environ.get("GPUSHIP_TEST_CACHE")
    return Path(root) if root else tmp_path_factory.mktemp("build-cache")


@pytest.fixture(scope="session")
def tools_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the CUDA tool wheels (cuobjdump, nvJPEG) are installed once per test session."""
    return tmp_path_factory.mktemp("cuda-tools")


@pytest.fixture(scope="session")
def cuobjdump_exe(tools_dir: Path) -> Path:
    """NVIDIA's cuobjdump from its PyPI wheel: the reference the fatbin reader and the pruner are checked against."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "data" / "fatbin"))
    from cudatools import cuobjdump

    return cuobjdump(tools_dir)
