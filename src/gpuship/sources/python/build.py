"""Build wheels on the build machine with ``uv build`` (isolated build environments): a locked source
distribution that has no wheel, and the project itself when it is a package.

A build runs with a host Python of the base's minor version, so the result matches the image's ABI; a compiled
(non ``*-any``) result is only usable for the build machine's architecture.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from ...cache import Cache
from ...errors import GpushipError
from ...oci import Platform
from ...uv import UvFailed, run_uv
from .credentials import IndexCredentials
from .download import fetch
from .interpreter import host_python
from .platforms import is_pure

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


#: What a source build of these needs, and the way out (the build host's libraries are not the image's).
SOURCE_BUILD_HINTS = {
    "pycuda": "pycuda compiles against the CUDA toolkit on the build host (cuda.h, libcuda.so) and calls nvcc at "
    "run time, which the image does not have: use cuda-python (cuda-bindings, with cuda.core for kernels) or cupy "
    "(RawKernel, NVRTC), which ship wheels",
    "psycopg2": "psycopg2 builds against libpq (pg_config): use psycopg2-binary or psycopg[binary], which ship wheels",
    "mysqlclient": "mysqlclient builds against libmysqlclient (mysql_config): use PyMySQL, or install the "
    "development package on the build host",
}

_COMPILER_ERROR = re.compile(r":\d+(:\d+)?: (fatal )?error: |^error: (?!Command '|Failed to build)|^ERROR: ")
_ARGV = re.compile(r"^(error: )?Command '\[(.*?)\]' returned non-zero exit status (\d+)")


class BuildFailed(GpushipError):
    """A source build that failed: its key line, the end of its log (``details``) and where the whole log is."""

    def __init__(self, message: str, hint: str, details: Sequence[str], log: Path) -> None:
        super().__init__(message, hint)
        self.details = tuple(details)
        self.log = log


def summarize_build_log(text: str, tail: int = 12) -> tuple[str, list[str]]:
    """The line that says why a build failed (the compiler's own error, uv's hint, else the last line) and the
    log's last ``tail`` lines, each made readable: a compiler argv becomes its program name."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]

    def readable(line: str) -> str:
        m = _ARGV.match(line.strip())
        if m:
            prog = m.group(2).split(",", 1)[0].strip(" '\"")
            return f"error: {prog} ... returned non-zero exit status {m.group(3)}"
        return line if len(line) <= 200 else line[:197] + "..."

    key = next((ln.strip() for ln in lines if _COMPILER_ERROR.search(ln)), "")
    hint = next((ln.strip() for ln in lines if ln.strip().startswith("hint: ")), "")
    if hint:
        key = f"{key}; uv {hint}" if key else f"uv {hint}"
    if not key and lines:
        key = readable(lines[-1].strip())
    return readable(key), [readable(ln) for ln in lines[-tail:]]


def _build(
    source: Path, python: str, tmp: Path, *, what: str, index_args: Sequence[str], log: Path, name: str = ""
) -> Path:

    hp = host_python(python)
    out = tmp / "out"
    try:
        run_uv(
            ["build", "--wheel", "--out-dir", str(out), "--python", hp.path, *index_args, str(source)],
            what=what,
            timeout=3600,
        )
    except UvFailed as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", exc.output or exc.explanation)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text, encoding="utf-8")
        key, tail = summarize_build_log(text)
        known = SOURCE_BUILD_HINTS.get(canonicalize_name(name)) if name else None
        hint = f"{known}; " if known else ""
        raise BuildFailed(f"{what} failed: {key}", f"{hint}the whole build log: {log}", tail, log) from exc
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
    key = f"{pkg.sha256}-py{python}-{Platform.host().machine}"

    def build() -> BuiltWheel:
        blob = fetch(cache, pkg.url, pkg.sha256, credentials=credentials or IndexCredentials.from_urls(index_args))
        with cache.temp_dir("sdist-") as tmp:
            src = tmp / pkg.filename
            shutil.copyfile(blob, src)
            wheel = _build(
                src,
                python,
                tmp,
                what=f"building {pkg.filename} (no wheel was published)",
                index_args=index_args,
                log=cache.root / "logs" / f"build-{pkg.filename}.log",
                name=pkg.name,
            )
            digest, _ = cache.put_file(wheel)
            return BuiltWheel(cache.blob_path(digest), wheel.name, digest.split(":", 1)[1])

    def cached(rec: dict[str, str]) -> BuiltWheel | None:
        digest = rec["digest"]
        return (
            BuiltWheel(cache.blob_path(digest), rec["filename"], digest.split(":", 1)[1]) if cache.has(digest) else None
        )

    return cache.memo(
        "python-sdist-builds",
        key,
        build,
        encode=lambda w: {"digest": f"sha256:{w.sha256}", "filename": w.filename},
        decode=cached,
    )


def build_project_wheel(root: Path, python: str, cache: Cache, *, index_args: Sequence[str] = ()) -> BuiltWheel:
    """Build the project's own wheel (not cached: the app's sources change often)."""
    with cache.temp_dir("project-") as tmpdir:
        wheel = _build(
            root,
            python,
            tmpdir,
            what=f"building the wheel of {root.name}",
            index_args=index_args,
            log=cache.root / "logs" / f"build-{root.name}-project.log",
        )
        digest, _ = cache.put_file(wheel)
        return BuiltWheel(cache.blob_path(digest), wheel.name, digest.split(":", 1)[1])
