"""gpuship-check in the image: the script (standard library only) and the facts it reads.

:func:`check_entries` gives the layer entries for a GPU image: ``/usr/local/bin/gpuship-check`` (the single file
:mod:`gpuship.check.gpuship_check` with a shebang naming the image's interpreter) and ``/etc/gpuship/gpu.json``
(:func:`gpu_manifest`: the CUDA line, driver floor, targets, and each framework's architectures).
"""

from __future__ import annotations

import json
from importlib import resources

from ..cuda import GpuPlan
from ..oci.entry import Entry

#: The image's interpreter (the venv gpuship installs into). The check needs only its standard library, and
#: runs the framework probes with it, so it must be the interpreter that sees the frameworks.
DEFAULT_PYTHON = "/opt/venv/bin/python"
CHECK_PATH = "usr/local/bin/gpuship-check"
MANIFEST_PATH = "etc/gpuship/gpu.json"
MANIFEST_SCHEMA = 1


def check_source() -> str:
    """The text of gpuship_check.py, the file copied into images."""
    return resources.files(__package__).joinpath("gpuship_check.py").read_text(encoding="utf-8")


def check_script(python: str = DEFAULT_PYTHON) -> bytes:
    """gpuship_check.py with a shebang for ``python`` (``-I``: no PYTHONPATH, no user site: standard library only)."""
    return f"#!{python} -I\n".encode() + check_source().encode()


def manifest_data(
    plan: GpuPlan, python: str | None = DEFAULT_PYTHON, ptx_version: str | None = None
) -> dict[str, object]:
    """The facts gpuship-check reads, as plain data (see docs/gpu.md for each key)."""
    data: dict[str, object] = {
        "schema": MANIFEST_SCHEMA,
        "cuda": plan.cuda,
        "require_cuda": plan.require_cuda,
        "min_driver": plan.min_driver,
        "minor_version_compat": plan.minor_version_compat,
        "ptx_isa": plan.ptx_isa,
        "targets": [t.sm for t in plan.targets],
        "target_names": [t.name for t in plan.targets],
        "frameworks": list(plan.frameworks),
        "archs": {name: {"sass": list(a.sass), "ptx": a.ptx, "jit": a.jit} for name, a in sorted(plan.archs.items())},
        "platform": plan.platform,
    }
    if python:
        data["python"] = python
    if ptx_version:
        data["check"] = {"ptx_version": ptx_version}
    return data


def gpu_manifest(plan: GpuPlan, python: str | None = DEFAULT_PYTHON, ptx_version: str | None = None) -> bytes:
    """``/etc/gpuship/gpu.json`` for ``plan`` (a :class:`gpuship.cuda.GpuPlan`): deterministic bytes."""
    return (json.dumps(manifest_data(plan, python, ptx_version), indent=2, sort_keys=True) + "\n").encode()


def check_entries(plan: GpuPlan, python: str = DEFAULT_PYTHON, ptx_version: str | None = None) -> list[Entry]:
    """The layer entries that put gpuship-check into a GPU image; none for a plan that is not a GPU plan."""
    if not plan.is_gpu:
        return []
    return [
        Entry.dir("etc/gpuship", 0o755),
        Entry.file(MANIFEST_PATH, gpu_manifest(plan, python, ptx_version), 0o644),
        Entry.dir("usr/local/bin", 0o755),
        Entry.file(CHECK_PATH, check_script(python), 0o755),
    ]


__all__ = [
    "CHECK_PATH",
    "DEFAULT_PYTHON",
    "MANIFEST_PATH",
    "check_entries",
    "check_script",
    "check_source",
    "gpu_manifest",
    "manifest_data",
]
