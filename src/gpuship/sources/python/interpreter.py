"""The base's Python (what the venv points at) and a host Python of the same minor version (what compiles
bytecode and builds source distributions on the build machine)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol  # Any: the cache record of a found interpreter

from ...cache import Cache
from ...errors import ToolMissing
from ...uv import UvFailed, run_uv


class PythonLike(Protocol):
    """What the environment needs to know about the base's interpreter."""

    @property
    def version(self) -> str: ...  # "3.11" or "3.11.2"

    @property
    def executable(self) -> str: ...  # "/usr/bin/python3.11", inside the image


@dataclass(frozen=True)
class HostPython:
    """A Python on the build machine: ``path`` and its full ``version`` (part of bytecode cache keys)."""

    path: str
    version: str


def _identity(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


@lru_cache(maxsize=8)
def host_python(minor: str) -> HostPython:
    """A host interpreter of ``minor`` (``3.11``): found by uv, or installed by uv when there is none.

    The answer is remembered in the cache while that interpreter's file is unchanged (uv and the interpreter
    are not run again on a rebuild)."""

    def known(rec: dict[str, Any]) -> HostPython | None:
        if rec.get("identity") is None or _identity(rec["path"]) != rec["identity"]:
            return None
        return HostPython(rec["path"], rec["version"])

    return Cache().memo(
        "host-python",
        minor,
        lambda: _find_host_python(minor),
        encode=lambda found: {"path": found.path, "version": found.version, "identity": _identity(found.path)},
        decode=known,
    )


def _find_host_python(minor: str) -> HostPython:
    try:
        out = run_uv(["python", "find", minor], what=f"finding Python {minor}")
    except UvFailed:
        try:
            run_uv(["python", "install", minor], what=f"installing Python {minor} for the build", timeout=900)
            out = run_uv(["python", "find", minor], what=f"finding Python {minor}")
        except UvFailed as exc:
            other = (
                "" if minor == "3.11" else ', or a base whose Python this machine has (base = "debian-bookworm": 3.11)'
            )
            raise ToolMissing(
                f"the base's Python is {minor}: byte code is compiled (and source packages built) with a Python "
                f"{minor} on this machine, and there is none; uv could not install one (offline? {exc.explanation})",
                f"install it where uv can download (uv python install {minor}; UV_PYTHON_INSTALL_DIR moves it), "
                f"or set bytecode = 'none' (the image then compiles what it imports at start){other}",
            ) from exc
    path = out.stdout.decode().strip().splitlines()[-1]
    proc = subprocess.run(
        [path, "-c", "import json, sys; print(json.dumps([sys.version.split()[0], sys.implementation.cache_tag]))"],
        capture_output=True,
        text=True,
        check=True,
    )
    version, _tag = json.loads(proc.stdout)
    return HostPython(str(Path(path)), version)
