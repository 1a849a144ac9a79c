"""Test helpers: NVIDIA's own cuobjdump and small real CUDA libraries, installed from PyPI wheels with uv.

Pinned versions, so what the tests compare against does not move. uv uses its default index and cache.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from gpuship.tools import require

HERE = Path(__file__).resolve().parent
CUOBJDUMP_WHEEL = "nvidia-cuda-cuobjdump==13.5.37"
#: nvJPEG for CUDA 13 (zstd-compressed entries, PTX) and CUDA 12 (plain entries, sm_50 .. sm_121).
NVJPEG_CU13 = ("nvidia-nvjpeg==13.3.2.43", "nvidia/cu13/lib/libnvjpeg.so.13")
NVJPEG_CU12 = ("nvidia-nvjpeg-cu12==12.4.0.76", "nvidia/nvjpeg/lib/libnvjpeg.so.12")


def install_wheel(spec: str, target: Path) -> Path:
    """``uv pip install --no-deps --target`` one pinned wheel; returns the target directory."""
    if not target.exists():
        tmp = target.with_name(target.name + ".tmp")
        subprocess.run(
            [
                require("uv"),
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--python",
                sys.executable,
                "--target",
                str(tmp),
                spec,
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        tmp.rename(target)
    return target


def cuobjdump(root: Path) -> Path:
    exe = install_wheel(CUOBJDUMP_WHEEL, root / "cuobjdump") / "nvidia/cu13/bin/cuobjdump"
    exe.chmod(0o755)
    return exe


_LISTED = re.compile(r"^(ELF|PTX) file\s+\d+: .*\.(sm_\w+)\.(cubin|ptx)$")


def listed_by_cuobjdump(exe: Path, lib: Path) -> Counter[str]:
    """What ``cuobjdump --list-elf`` and ``--list-ptx`` list: ``sm_90`` per cubin, ``compute_90`` per PTX."""
    found: Counter[str] = Counter()
    for flag in ("--list-elf", "--list-ptx"):
        proc = subprocess.run([str(exe), flag, str(lib)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        for line in proc.stdout.splitlines():
            m = _LISTED.match(line.strip())
            if m:
                kind, arch = m.group(1), m.group(2)
                found[arch if kind == "ELF" else arch.replace("sm_", "compute_")] += 1
    return found
