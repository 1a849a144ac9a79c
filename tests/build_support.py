"""Helpers for the build tests: run the real CLI in a subprocess against a shared cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def gpuship(
    *args: str, cache: Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 1500
) -> subprocess.CompletedProcess[str]:
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
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) >= 1 and lines[-1].startswith("error: "), proc.stderr
    return lines[-1]


def torch_status_for_this_machine(dest: Path) -> Path:
    """examples/torch-status copied to ``dest``; built against a local CPU torch wheel when this machine offers one.

    CI has no GPU and no PyTorch CPU index. Where a CPU torch wheel lies in a PIP_FIND_LINKS directory (as on this
    workplace's machines), the copy takes the documented CPU route — ``[tool.gpuship.gpu] cuda = "cpu"`` with that
    directory as ``find-links`` — the user's move on a CPU-only host. Elsewhere the example stays as written (the
    CUDA torch from PyPI: slower, same behaviour on the CPU).
    """
    import glob
    import os

    project = copy_example("torch-status", dest)
    wheel = None
    for d in os.environ.get("PIP_FIND_LINKS", "").split():
        hits = sorted(glob.glob(os.path.join(d, "torch-*+cpu-cp311-*x86_64.whl")))
        if hits:
            wheel = hits[-1]
    if wheel:
        text = (project / "pyproject.toml").read_text()
        text = text.replace("[tool.gpuship]\n", f'[tool.gpuship]\nfind-links = ["{Path(wheel).parent}"]\n')
        text = text.replace('cuda = "auto"\n', 'cuda = "cpu"\n')
        (project / "pyproject.toml").write_text(text)
    return project
