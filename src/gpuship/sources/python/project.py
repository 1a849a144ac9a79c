"""The project itself, when it is a package: built into a wheel with ``uv build`` and installed into the venv.

The result is a list of entries (site-packages files, ``.dist-info`` with a RECORD, console-script launchers in
``bin``, ``.pyc`` when bytecode is on) for the app layer, which the build writes; the project's dependencies
are not in it (they are in the locked environment layers).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass

from ...cache import Cache
from ...errors import ConfigError
from ...oci import Entry, Platform
from ...progress import NO_PROGRESS, Progress
from ...project import ProjectInputs
from ...project.entrypoint import VENV
from .build import build_project_wheel
from .env import install_entries
from .interpreter import PythonLike, host_python
from .lock import NoWheelError
from .platforms import python_minor
from .prune import PruneReport, PruneRules
from .wheel import install_wheel


@dataclass(frozen=True)
class ProjectInstall:
    """The installed project: ``entries`` (paths under the venv in the image) for the app layer."""

    name: str
    version: str
    wheel: str
    entries: tuple[Entry, ...]
    scripts: tuple[str, ...]
    report: PruneReport


def install_project(
    project: ProjectInputs,
    python: PythonLike,
    cache: Cache,
    *,
    platform: Platform | None = None,
    venv: str = VENV,
    prune: PruneRules = PruneRules(),
    progress: Progress = NO_PROGRESS,
) -> ProjectInstall:
    """Build the project's wheel (isolated, with a host Python of the base's minor version) and install it.

    A compiled project (a wheel that is not ``*-any``) can only be installed for the build machine's platform.
    """
    if not project.is_package:
        raise ConfigError(
            f"{project.name} is not a package (no [build-system], setup.py or setup.cfg)",
            "add a [build-system] table to pyproject.toml, or ship its files with the app layer only",
        )
    py = python_minor(python.version)
    progress.step(f"build {project.name}")
    built = build_project_wheel(project.root, py, cache, index_args=project.index.uv_args())
    if platform is not None and platform != Platform.host() and not built.pure:
        raise NoWheelError(
            f"{project.name} builds a compiled wheel ({built.filename}) on this {Platform.host()} machine, not one for {platform}",
            f"build the image for {platform} on a {platform} machine",
        )
    compiler = host_python(py) if prune.bytecode != "none" else None
    with zipfile.ZipFile(built.path) as zf, cache.temp_dir("pyc-") as tmp:
        wi = install_wheel(zf, built.filename, venv=venv, python_minor=py, reopen=True)
        entries, info = install_entries(
            [wi], venv=venv, site=f"lib/python{py}/site-packages", prune=prune, compiler=compiler, workdir=tmp
        )
        # .pyc files live in the temp folder: keep their (small) bytes so the entries outlive it
        out = []
        for e in entries:
            if e.path.endswith(".pyc") and e.open is not None:
                out.append(Entry.file(e.path, e.read(), mode=e.mode))
            else:
                out.append(e)
    return ProjectInstall(
        name=wi.name,
        version=wi.version,
        wheel=built.filename,
        entries=tuple(out),
        scripts=tuple(info["scripts"]),
        report=PruneReport.from_json(info["report"]),
    )
