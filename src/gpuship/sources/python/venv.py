"""The venv's skeleton at its image path: what ``python -m venv /opt/venv`` makes, minus activation scripts.

``bin/python`` -> the base's interpreter (absolute, as venv does), ``python3``/``python3.X`` -> ``python``,
``pyvenv.cfg`` (which makes ``sys.prefix`` the venv), ``lib/python3.X/site-packages``, ``lib64`` -> ``lib``.
"""

from __future__ import annotations

import posixpath

from ...oci import Entry, clean_path
from .platforms import python_minor


def venv_entries(venv: str, executable: str, version: str, *, system_site_packages: bool = False) -> list[Entry]:
    """``system_site_packages``: the venv also sees the base's site-packages (a registry base's packages)."""
    prefix = clean_path(venv)
    minor = python_minor(version)
    home = posixpath.dirname(executable)
    cfg = (
        f"home = {home}\n"
        f"include-system-site-packages = {'true' if system_site_packages else 'false'}\n"
        f"version = {version}\n"
        f"executable = {executable}\n"
        f"command = {executable} -m venv {venv}\n"
    )
    return [
        Entry.dir(prefix),
        Entry.dir(f"{prefix}/bin"),
        Entry.dir(f"{prefix}/include"),
        Entry.dir(f"{prefix}/lib"),
        Entry.dir(f"{prefix}/lib/python{minor}"),
        Entry.dir(f"{prefix}/lib/python{minor}/site-packages"),
        Entry.symlink(f"{prefix}/lib64", "lib"),
        Entry.symlink(f"{prefix}/bin/python", executable),
        Entry.symlink(f"{prefix}/bin/python3", "python"),
        Entry.symlink(f"{prefix}/bin/python{minor}", "python"),
        Entry.file(f"{prefix}/pyvenv.cfg", cfg),
    ]
