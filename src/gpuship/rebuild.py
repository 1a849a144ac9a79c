"""A no-change rebuild does almost nothing: a build's inputs and outputs are remembered, and the same request
over the same inputs, with its outputs still in place, is answered from that record.

The record is keyed by :func:`fingerprint` — gpuship's own version and source files, the request (project
directory, outputs, tag, platforms, extras, base, compression, ``--locked``), the environment variables a build
reads (``SOURCE_DATE_EPOCH``, ``GPUSHIP_*``, ``UV_*``, ``PIP_*``, ``DOCKER_*``), every file of the project
directory (path, size, mode, mtime), its git revision, and the host Pythons gpuship compiles byte code with — and
it is kept only while the Debian indexes it was built from are fresh (``GPUSHIP_DEBIAN_INDEX_TTL``). An output
counts as still in place when the engine still has the image (``docker tag`` of its ID succeeds) or the file or
layout is the one written (same inode, size and mtime). Anything else — a registry base or output, models, local
files from outside the project in the lock, ``gpuship dev`` — is never remembered: those builds run in full.

This module imports only the standard library, so ``gpuship build`` can answer before loading the rest of
gpuship (:func:`gpuship.cli.app.main`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any  # Any: the rebuild record, JSON this module writes and reads back

from . import __version__

#: Bump when what is remembered, or how it is checked, changes.
MEMO_VERSION = 1
NAMESPACE = "build-memo"
_ENV_PREFIXES = ("GPUSHIP_", "UV_", "PIP_", "DOCKER_")
_ENV_NAMES = ("SOURCE_DATE_EPOCH",)
_SKIP_DIRS = frozenset({".git"})


@dataclass(frozen=True)
class Request:
    """What a build is asked for (the command line, after defaults)."""

    project_dir: Path
    outputs: tuple[str, ...]
    platforms: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    locked: bool = False
    compression: str | None = None
    tag: str | None = None
    base: str | None = None

    def key_parts(self) -> list[Any]:
        return [
            str(self.project_dir.resolve()),
            list(self.outputs),
            list(self.platforms),
            list(self.extras),
            self.locked,
            self.compression,
            self.tag,
            self.base,
        ]


def _cache_root() -> Path:
    env = os.environ.get("GPUSHIP_CACHE")
    if env:
        return Path(env)
    import platformdirs  # the no-change answer comes before anything else loads

    return Path(platformdirs.user_cache_dir("gpuship"))


def _record_path(root: Path, key: str) -> Path:
    return root / "refs" / NAMESPACE / key


def _walk(
    root: Path, skip: frozenset[Path], skip_dirs: frozenset[str] = _SKIP_DIRS
) -> Iterator[tuple[str, int, int, int]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if Path(full) in skip:
                continue
            try:
                st = os.lstat(full)
            except OSError:
                continue
            yield os.path.relpath(full, root), st.st_size, st.st_mode, st.st_mtime_ns


def _own_sources() -> list[Any]:
    """gpuship's version and its source files (a development checkout changes without a version bump)."""

    here = Path(__file__).resolve().parent
    return [__version__, list(_walk(here, frozenset(), frozenset({"__pycache__"})))]


def _git_revision(project_dir: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(project_dir), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _host_pythons(root: Path) -> list[Any]:
    out = []
    folder = root / "refs" / "host-python"
    for p in sorted(folder.glob("*")) if folder.is_dir() else ():
        try:
            rec = json.loads(p.read_text())
            st = os.stat(rec["path"])
            out.append([p.name, rec["path"], st.st_ino, st.st_size, st.st_mtime_ns])
        except (OSError, ValueError, KeyError, TypeError):
            out.append([p.name, None])
    return out


def output_paths(outputs: Sequence[str]) -> list[Path]:
    """The files and folders the outputs write (``oci:DIR``, ``oci-archive:FILE``, ``docker-archive:FILE``)."""
    paths = []
    for target in outputs:
        scheme, _, rest = target.partition(":")
        if scheme in ("oci", "oci-archive", "docker-archive") and rest:
            paths.append(Path(rest.split(":", 1)[0]).resolve())
    return paths


def fingerprint(request: Request, *, skip: Sequence[Path] = (), environ: Mapping[str, str] | None = None) -> str:
    """The key of ``request`` over the current inputs (see the module doc); ``skip``: files left out of the
    project walk (the build's own outputs and report, when they lie inside the project)."""
    env = os.environ if environ is None else environ
    project = request.project_dir.resolve()
    left_out = frozenset(Path(p).resolve() for p in (*skip, *output_paths(request.outputs)))
    parts = [
        MEMO_VERSION,
        _own_sources(),
        request.key_parts(),
        sorted((k, v) for k, v in env.items() if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)),
        list(_walk(project, left_out)),
        _git_revision(project),
        _host_pythons(_cache_root()),
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _identity(path: Path) -> list[int] | None:
    target = path / "index.json" if path.is_dir() else path
    try:
        st = os.stat(target)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _index_expiry(root: Path) -> float | None:
    """When the first of the cached Debian InRelease files is due to be fetched again."""
    raw = os.environ.get("GPUSHIP_DEBIAN_INDEX_TTL", "")
    try:
        ttl = float(raw) if raw else 6 * 3600.0
    except ValueError:
        return 0.0
    folder = root / "refs" / "debian-inrelease"
    times = []
    for p in folder.glob("*") if folder.is_dir() else ():
        try:
            times.append(float(json.loads(p.read_text())["fetched"]))
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0
    return min(times) + ttl if times else None


def remember(
    key: str, outputs: Sequence[str], docker_ids: Mapping[str, tuple[str, str]], result: Mapping[str, Any]
) -> None:
    """Record a finished build under ``key``: for each ``docker:`` output the image ID and name the engine holds,
    each written file's identity, and ``result`` (the report and SBOM texts, the warnings, the layer table)."""
    root = _cache_root()
    files = {str(p): _identity(p) for p in output_paths(outputs)}
    rec = {
        "outputs": list(outputs),
        "docker": dict(docker_ids),
        "files": files,
        "expires": _index_expiry(root),
        "result": dict(result),
        "made": time.time(),
    }
    path = _record_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root / "tmp" if (root / "tmp").is_dir() else path.parent, prefix="memo-")
    with os.fdopen(fd, "w") as fh:
        json.dump(rec, fh)
    os.replace(tmp, path)


def forget(key: str) -> None:
    _record_path(_cache_root(), key).unlink(missing_ok=True)


def _engine_tag(image_id: str, name: str) -> bool:
    """``docker tag ID NAME``: succeeds only while the engine has the image."""
    try:
        proc = subprocess.run(["docker", "tag", image_id, name], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def recall(request: Request, *, skip: Sequence[Path] = ()) -> dict[str, Any] | None:
    """The remembered result of ``request`` when its inputs are unchanged and its outputs still in place (the
    engine's images are tagged again on the way); else None."""
    root = _cache_root()
    key = fingerprint(request, skip=skip)
    try:
        rec = json.loads(_record_path(root, key).read_text())
    except (OSError, ValueError):
        return None
    if rec.get("outputs") != list(request.outputs) or not _fresh(rec):
        return None
    for path, ident in (rec.get("files") or {}).items():
        if ident is None or _identity(Path(path)) != ident:
            return None
    written = []
    for target in request.outputs:
        if target in (rec.get("docker") or {}):
            image_id, name = rec["docker"][target]
            if not _engine_tag(image_id, name):
                return None
            written.append(f"loaded into Docker as {name} (the engine had the image: tagged)")
        else:
            written.append(f"{target} (unchanged)")
    return dict(rec["result"]) | {"key": key, "written": written}


def _fresh(rec: Mapping[str, Any]) -> bool:
    expires = rec.get("expires")
    return expires is None or time.time() < float(expires)
