"""An existing ``uv.lock`` is honoured: ``uv export`` turns it into exact pins, which the gpuship lock applies as
constraints, so the image gets the versions the project already locked (for the chosen extras, without dev groups)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..uv import UvFailed, run_uv


def export_uv_lock(root: Path, extras: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(pins, notes)`` from ``root/uv.lock``: ``name==version ; marker`` lines."""

    args = [
        "export",
        "--locked",
        "--no-hashes",
        "--no-emit-workspace",
        "--no-dev",
        "--format",
        "requirements-txt",
        "--no-header",
        "--no-annotate",
        "--project",
        str(root),
    ]
    for e in extras:
        args += ["--extra", e]
    try:
        proc = run_uv(args, what="reading uv.lock", cwd=root)
    except UvFailed as exc:
        if "needs to be updated" in exc.explanation:
            raise ConfigError(
                "uv.lock is out of date with pyproject.toml", "run `uv lock` (and commit uv.lock), then build again"
            ) from exc
        raise ConfigError(f"cannot read uv.lock: {exc.explanation}", "check that `uv export --locked` works") from exc
    pins: list[str] = []
    notes: list[str] = []
    for line in proc.stdout.decode().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-e ", "./", "../", "/", "file:")) or " @ file:" in line:
            notes.append(f"uv.lock: local requirement {line.split(';')[0].strip()} is not pinned by gpuship.lock")
            continue
        if line.startswith("-"):
            continue
        pins.append(line)
    return pins, notes
