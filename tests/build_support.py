"""Helpers for the build tests: run the real CLI in a subprocess against a shared cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def gpuship(*args: str, cache: Path, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env["GPUSHIP_CACHE"] = str(cache)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gpuship", *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout
    )


def copy_example(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("gpuship.lock", "__pycache__"))
    return target


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the CLI failed the gpuship way (exit 2, one line, no traceback) and return that line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) >= 1 and lines[-1].startswith("error: "), proc.stderr
    return lines[-1]
