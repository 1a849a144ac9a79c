"""The editable-install layer of ``gpuship dev``: the project installed in editable mode over a mount point.

What it holds depends only on the project's name, version, scripts and layout (see :mod:`gpuship.dev`): a
``.pth`` file naming the mounted source directory, a ``dist-info`` saying the install is editable, one launcher
per ``[project.scripts]`` entry, and the app directory itself. A source like :mod:`gpuship.sources.app`: the
build takes it in place of the project-wheel and app layers when the plan says ``dev``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any  # Any: the plan and the Python stand-in (sources may not import plan: docs/architecture.md)

from ..cache import Cache
from ..errors import ConfigError
from ..oci import Entry, Layer, cached_layer
from ..project.entrypoint import VENV
from ..project.inputs import ProjectInputs
from .python.platforms import python_minor

EDITABLE_FORMAT = 1


def source_dir(project_dir: Path, workdir: str) -> str:
    """Where the project's importable code is once mounted: ``<workdir>/src`` for a src layout, else ``<workdir>``."""
    return posixpath.join(workdir, "src") if (project_dir / "src").is_dir() else workdir


def _script_launcher(python: str, spec: str) -> bytes:
    """A console script that imports ``module:attr`` (from the mounted code) and exits with its result."""
    target = spec.split("[", 1)[0].strip()
    module, _, attr = target.partition(":")
    if not module:
        raise ConfigError(f"[project.scripts] entry {spec!r} is not 'module:function'")
    return (
        f"#!{python}\n"
        "# gpuship dev: an editable install's launcher; the code comes from the mounted project\n"
        "import importlib\nimport sys\n\n"
        f"obj = importlib.import_module({module!r})\n"
        f"for name in {attr!r}.split('.') if {attr!r} else ():\n"
        "    obj = getattr(obj, name)\n"
        "if __name__ == '__main__':\n"
        "    sys.exit(obj())\n"
    ).encode()


def editable_entries(
    *,
    name: str,
    version: str,
    scripts: Mapping[str, str],
    is_package: bool,
    venv: str,
    python_minor: str,
    workdir: str,
    src: str,
) -> list[Entry]:
    """The editable layer's files (see the module docstring)."""
    entries = [Entry.dir(workdir.lstrip("/"))]
    if not is_package:
        return entries
    site = f"{venv}/lib/python{python_minor}/site-packages".lstrip("/")
    dist = f"{_dist_name(name)}-{version}"
    info = f"{site}/{dist}.dist-info"
    files: dict[str, bytes] = {
        f"{site}/__editable__.{dist}.pth": f"{src}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/INSTALLER": b"gpuship\n",
        f"{info}/direct_url.json": json.dumps(
            {"url": f"file://{workdir}", "dir_info": {"editable": True}}, sort_keys=True
        ).encode()
        + b"\n",
    }
    if scripts:
        files[f"{info}/entry_points.txt"] = (
            "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(scripts.items()))
        ).encode()
    record = [f"{p.removeprefix(site + '/')},," for p in sorted(files)] + [f"{dist}.dist-info/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    entries += [Entry.file(p, data) for p, data in sorted(files.items())]
    python = f"{venv}/bin/python"
    entries += [
        Entry.file(f"{venv}/bin/{script}".lstrip("/"), _script_launcher(python, spec), mode=0o755)
        for script, spec in sorted(scripts.items())
    ]
    return entries


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower() or "app"


def editable_layer(plan: Any, python: Any, cache: Cache) -> Layer:
    """The dev image's top layer for ``plan`` (a :class:`gpuship.plan.BuildPlan`), cached by what it holds."""
    project: ProjectInputs = plan.project
    workdir = plan.config.workdir
    args = dict(
        name=project.name or str(plan.name),
        version=project.version or "0.0.0",
        scripts=dict(project.scripts),
        is_package=project.is_package,
        venv=VENV,
        python_minor=python_minor(python.version),
        workdir=workdir,
        src=source_dir(plan.options.project_dir, workdir),
    )
    key = "editable:" + hashlib.sha256(json.dumps([EDITABLE_FORMAT, args], sort_keys=True).encode()).hexdigest()
    what = f"editable install of {args['name']} from {args['src']}" if args["is_package"] else f"mount point {workdir}"
    return cached_layer(
        cache,
        key,
        lambda: editable_entries(**args),
        comment=f"gpuship dev: {what}",
    )
