"""Precompile ``.pyc`` at build time, reproducibly.

The venv is owned by root and read-only for the app user, so Python can never write its byte-code cache at run
time: without precompiled files every start compiles every imported module again (numpy: ~3x slower import,
docs/python-env.md has the numbers). ``compileall`` runs with a host Python of the base's minor version (byte
code is the same on every CPU architecture), in ``unchecked-hash`` mode (PEP 552: no timestamps, the source
is trusted, which fits an immutable image), ``PYTHONHASHSEED=0`` (set constants marshal in a fixed order),
in sorted order (big sets in several processes: each file compiles alone), and the recorded file names rewritten to their image paths (``/opt/venv/...``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from ...errors import GpushipError
from ...oci import Entry
from ...parallel import build_jobs
from ...streams import CHUNK
from .interpreter import HostPython

#: Below this many files one compiling process is quicker than starting more.
FILES_PER_PROCESS = 400


def jobs(count: int) -> int:
    """How many processes compile ``count`` files: one per :data:`FILES_PER_PROCESS`, at most one per CPU (each file
    compiles alone, so the byte code is the same whatever the number)."""
    return max(1, min(build_jobs(), count // FILES_PER_PROCESS))


def compile_sources(sources: Iterable[Entry], python: HostPython, workdir: Path) -> list[Entry]:
    """Compile ``.py`` entries (paths relative to the image root); returns the ``__pycache__`` entries.

    The returned entries read from ``workdir``, which must outlive the layer write.
    """
    count = 0
    for e in sources:
        dest = workdir / e.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        assert e.open is not None  # a .py file entry
        with e.open() as src, open(dest, "wb") as fh:
            shutil.copyfileobj(src, fh, CHUNK)
        count += 1
    if count == 0:
        return []
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="")
    env.pop("SOURCE_DATE_EPOCH", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    proc = subprocess.run(
        [
            python.path,
            "-I",
            "-m",
            "compileall",
            "-q",
            "-f",
            "-j",
            str(jobs(count)),
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(workdir),
            "-p",
            "/",
            str(workdir),
        ],
        capture_output=True,
        env=env,
        check=False,
    )
    # 1 = some file did not compile (Python 2 leftovers, templates): those simply get no .pyc, as with pip.
    if proc.returncode not in (0, 1):
        raise GpushipError(
            f"compiling byte code failed: {(proc.stderr or proc.stdout).decode(errors='replace').strip()[-300:]}"
        )
    return [Entry.file(pyc.relative_to(workdir).as_posix(), pyc, mode=0o644) for pyc in sorted(workdir.rglob("*.pyc"))]
