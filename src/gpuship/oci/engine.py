"""Load an image into a local container engine by streaming a docker-archive into ``docker load``.

Nothing is written to disk on the way: the archive goes straight into the engine's stdin. The engine is
asked for its version first, so "no engine answers" is one clear line before any work is done.
"""

from __future__ import annotations

import subprocess
import tempfile
from typing import IO

from .. import tools
from ..errors import GpushipError
from .docker_archive import DockerTag, write_docker_archive_to
from .image import Platform
from .layout import ImageOrIndex


def engine_version(engine: str = "docker") -> str:
    """The engine's server version (``20.10.24+dfsg1``), or a clear error when none answers."""
    exe = tools.require(engine)
    fmt = "{{.Server.Version}}" if engine == "docker" else "{{.Version}}"
    try:
        proc = subprocess.run([exe, "version", "--format", fmt], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise GpushipError(f"{engine} did not answer within 60 s", "check that its daemon is running") from exc
    version = proc.stdout.strip()
    if proc.returncode != 0 or not version or version.startswith("<no value>"):
        raise GpushipError(
            f"no {engine} engine answers: {tools.last_line(proc.stderr or proc.stdout)}",
            "start dockerd (or set DOCKER_HOST), or write a file with --output docker-archive:FILE",
        )
    return version


def _tail(fh: IO[bytes]) -> str:
    fh.seek(0)
    return tools.last_line(fh.read()[-4000:])


def load_into_engine(
    obj: ImageOrIndex, ref: str, *, engine: str = "docker", platform: Platform | str | None = None
) -> str:
    """Load ``obj`` into the engine under ``ref`` (``name[:tag]``); returns the name it was loaded as.

    For an Index the engine gets one platform: ``platform``, else the host's, else the first.
    """
    tag = DockerTag.parse(ref)
    engine_version(engine)
    exe = tools.require(engine)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([exe, "load"], stdin=subprocess.PIPE, stdout=out, stderr=err)
        assert proc.stdin is not None
        try:
            write_docker_archive_to(obj, proc.stdin, [str(tag)], platform)
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the engine gave up reading: its own message says why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        rc = proc.wait()
        if rc != 0:
            raise GpushipError(
                f"{engine} load refused the image: {_tail(err) if err.tell() else _tail(out)}",
                "run with -v for details; write it with --output docker-archive:FILE to inspect",
            )
        out.seek(0)
        text = out.read().decode(errors="replace")
    loaded = [ln.split(": ", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Loaded image")]
    return loaded[-1] if loaded else str(tag)
