"""Build wheels on the build machine with ``uv build`` (isolated build environments): a locked source
distribution that has no wheel, and the project itself when it is a package.

A build runs with a host Python of the base's minor version, so the result matches the image's ABI; a compiled
(non ``*-any``) result is only usable for the build machine's architecture.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...cache import Cache
from ...errors import GpushipError
from .credentials import IndexCredentials
from .download import fetch
from .interpreter import host_python
from .platforms import host_platform, is_pure

if TYPE_CHECKING:
    from .lock import LockedPackage


@dataclass(frozen=True)
class BuiltWheel:
    path: Path  # the wheel's blob in the cache
    filename: str
    sha256: str

    @property
    def pure(self) -> bool:
        return is_pure(self.filename)


def _build(source: Path, python: str, tmp: Path, *, what: str, index_args: Sequence[str]) -> Path:
    from .uv import UvFailed, run_uv

    hp = host_python(python)
    out = tmp / "out"
    try:
        run_uv(
            ["build", "--wheel", "--out-dir", str(out), "--python", hp.path, *index_args, str(source)],
            what=what,
            timeout=3600,
        )
    except UvFailed as exc:
        raise GpushipError(
            f"{what} failed: {exc.explanation}", "fix the build (run `uv build --wheel` to see its log)"
        ) from exc
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise GpushipError(f"{what} made {len(wheels)} wheels, expected one")
    return wheels[0]


def built_wheel(
    pkg: LockedPackage,
    python: str,
    cache: Cache,
    *,
    index_args: Sequence[str] = (),
    credentials: IndexCredentials | None = None,
) -> BuiltWheel:
    """The wheel built from a locked sdist on this machine (cached by the sdist's hash, Python and machine)."""
    key = f"{pkg.sha256}-py{python}-{host_platform().machine}"
    rec = cache.get_ref("python-sdist-builds", key)
    if rec is not None and cache.has(rec["digest"]):
        return BuiltWheel(cache.blob_path(rec["digest"]), rec["filename"], rec["digest"].split(":", 1)[1])
    blob = fetch(cache, pkg.url, pkg.sha256, credentials=credentials or IndexCredentials.from_urls(index_args))
    with tempfile.TemporaryDirectory(dir=cache.root / "tmp", prefix="sdist-") as tmpdir:
        tmp = Path(tmpdir)
        src = tmp / pkg.filename
        shutil.copyfile(blob, src)
        wheel = _build(
            src, python, tmp, what=f"building {pkg.filename} (no wheel was published)", index_args=index_args
        )
        digest, _ = cache.put_file(wheel)
        cache.put_ref("python-sdist-builds", key, {"digest": digest, "filename": wheel.name})
        return BuiltWheel(cache.blob_path(digest), wheel.name, digest.split(":", 1)[1])


def build_project_wheel(root: Path, python: str, cache: Cache, *, index_args: Sequence[str] = ()) -> BuiltWheel:
    """Build the project's own wheel (not cached: the app's sources change often)."""
    with tempfile.TemporaryDirectory(dir=cache.root / "tmp", prefix="project-") as tmpdir:
        wheel = _build(root, python, Path(tmpdir), what=f"building the wheel of {root.name}", index_args=index_args)
        digest, _ = cache.put_file(wheel)
        return BuiltWheel(cache.blob_path(digest), wheel.name, digest.split(":", 1)[1])
