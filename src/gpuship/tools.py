"""One small wrapper for every external program gpuship calls (uv, gpgv, runc, docker, skopeo, mksquashfs).

A missing program becomes a :class:`ToolMissing` with the install hint; a failing one becomes a
:class:`GpushipError` whose line carries the last line of its stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import GpushipError, ToolMissing

#: How to get each program on Debian (the only platform the README promises).
INSTALL_HINTS: dict[str, str] = {
    "uv": "pip install uv",
    "gpgv": "apt-get install gpgv debian-archive-keyring",
    "runc": "apt-get install runc",
    "docker": "apt-get install docker.io and start dockerd",
    "podman": "apt-get install podman",
    "skopeo": "apt-get install skopeo",
    "umoci": "apt-get install umoci",
    "mksquashfs": "apt-get install squashfs-tools",
    "unshare": "apt-get install util-linux",
    "shellcheck": "apt-get install shellcheck",
}


def which(program: str) -> str | None:
    """Path of ``program`` on PATH (uv also from the Python environment gpuship runs in)."""
    found = shutil.which(program)
    if found is None and program == "uv":
        try:
            from uv import find_uv_bin  # the uv wheel pinned in gpuship's own dependencies

            found = find_uv_bin()
        except (ImportError, FileNotFoundError):
            found = None
    return found


def require(program: str) -> str:
    """Path of ``program``, or a :class:`ToolMissing` that says how to install it."""
    path = which(program)
    if path is None:
        hint = INSTALL_HINTS.get(program, f"install {program}")
        raise ToolMissing(f"{program} is not installed", hint)
    return path


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    what: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a program, capture its output, and turn a failure into one clear error line."""
    args = [str(a) for a in argv]
    args[0] = require(args[0]) if os.sep not in args[0] else args[0]
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    proc = subprocess.run(args, input=input, capture_output=True, env=full_env, cwd=cwd, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise GpushipError(f"{what or Path(args[0]).name} failed: {last_line(proc.stderr or proc.stdout)}")
    return proc


def last_line(output: bytes | str) -> str:
    """The last non-empty line of a program's output (where tools put their error)."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
