"""The "before" of the field reports: a naive single-stage Dockerfile, as a project would write it first.

Full Debian with pip and the build tools left in, the whole folder copied (no .dockerignore), then ``pip install``
of the project (or of its requirements, unpinned, for a project that is not a package). It runs the same command
as gpuship's image, so the benchmark can check that all three images work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

CA_NAME = "build-ca.crt"


def naive_dockerfile(
    *,
    requirements: Sequence[str],
    is_package: bool,
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    runtime_dir: str = "",
    extra_requirements: Sequence[str] = (),
    ports: Sequence[str] = (),
) -> str:
    """The text of ``Dockerfile.naive``. ``runtime_dir``: a context folder COPYed to / (gpuship's runtime file)."""
    pip = "PIP_CERT=/app/build-ca.crt pip install --break-system-packages --no-cache-dir"
    if is_package:
        install = f"{pip} . {' '.join(_q(r) for r in extra_requirements)}".rstrip()
    else:
        install = f"{pip} -r requirements.txt"
    lines = [
        "ARG BASE=debian:bookworm-slim",
        "FROM ${BASE}",
        "RUN apt-get update && apt-get install -y python3 python3-pip python3-venv python3-dev python-is-python3 \\",
        "    build-essential git ca-certificates",
        "WORKDIR /app",
        "COPY . .",
    ]
    if runtime_dir:
        lines.append(f"COPY {runtime_dir}/ /")
    lines.append(f"RUN {install}")
    for p in ports:
        lines.append(f"EXPOSE {p}")
    lines.append("ENTRYPOINT " + json.dumps(list(entrypoint)))
    if cmd:
        lines.append("CMD " + json.dumps(list(cmd)))
    return "\n".join(lines) + "\n"


def write_naive(dest: Path, spec, requirements: Sequence[str], ca: Path | None) -> Path:  # type: ignore[no-untyped-def]
    """Write ``Dockerfile.naive`` (and requirements.txt for a non-package project) into ``dest``."""
    runtime = next((layer for layer in spec.extra_layers if layer.group == "runtime"), None)
    extra = []
    if runtime is not None:
        from gpuship.serve import runtime_requirements

        extra = list(runtime_requirements())
    if not spec.is_package:
        (dest / "requirements.txt").write_text("\n".join([*requirements, *extra]) + "\n")
    if ca is not None:
        (dest / CA_NAME).write_bytes(ca.read_bytes())
    text = naive_dockerfile(
        requirements=requirements,
        is_package=spec.is_package,
        entrypoint=spec.entrypoint,
        cmd=spec.cmd,
        runtime_dir=runtime.context_dir if runtime is not None else "",
        extra_requirements=extra,
        ports=spec.ports,
    )
    path = dest / "Dockerfile.naive"
    path.write_text(text)
    return path


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)
