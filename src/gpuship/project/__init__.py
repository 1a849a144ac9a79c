"""Project inputs: what a project declares it needs, read from ``pyproject.toml``, ``requirements*.txt``,
a conda ``environment.yml`` and an existing ``uv.lock``, mixed where a project has several.

:func:`load_project` is the one entry point; it returns an immutable :class:`ProjectInputs`.
"""

from .inputs import IndexOptions, ProjectInputs, load_project

__all__ = ["IndexOptions", "ProjectInputs", "load_project"]
