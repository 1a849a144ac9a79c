"""``pyproject.toml``: the PEP 621 ``[project]`` table (dependencies, optional groups chosen as extras, metadata,
scripts) and the raw ``[tool]`` tables."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..errors import ConfigError


@dataclass
class Pyproject:
    path: Path
    data: dict[str, Any]
    project: dict[str, Any] = field(default_factory=dict)

    @property
    def has_project(self) -> bool:
        return bool(self.project)

    @property
    def name(self) -> str:
        return str(self.project.get("name") or "")

    @property
    def version(self) -> str:
        v = self.project.get("version")
        return str(v) if v is not None else ""

    @property
    def description(self) -> str:
        return str(self.project.get("description") or "")

    @property
    def license(self) -> str:
        lic = self.project.get("license")
        if isinstance(lic, str):
            return lic  # PEP 639 SPDX expression
        if (
            isinstance(lic, dict)
            and isinstance(lic.get("text"), str)
            and len(lic["text"]) <= 80
            and "\n" not in lic["text"]
        ):
            return lic["text"]
        for c in self.project.get("classifiers") or ():
            if isinstance(c, str) and c.startswith("License :: OSI Approved :: "):
                return c.rsplit(" :: ", 1)[-1]
        return ""

    @property
    def urls(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.project.get("urls") or {}).items()}

    @property
    def scripts(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.project.get("scripts") or {}).items()}

    @property
    def requires_python(self) -> str:
        return str(self.project.get("requires-python") or "")

    @property
    def dynamic(self) -> set[str]:
        return set(self.project.get("dynamic") or ())

    @property
    def tool(self) -> dict[str, Any]:
        return dict((self.data.get("tool") or {}).get("gpuship") or {})

    @property
    def has_build_system(self) -> bool:
        return "build-system" in self.data

    @property
    def optional_groups(self) -> dict[str, list[str]]:
        return {str(k): list(v) for k, v in (self.project.get("optional-dependencies") or {}).items()}

    def dependencies_for(self, extras: Sequence[str]) -> list[str]:
        """``dependencies`` plus the chosen ``optional-dependencies`` groups (self-references expanded)."""
        groups = {canonicalize_name(k): v for k, v in self.optional_groups.items()}
        own = canonicalize_name(self.name) if self.name else None
        work: list[str] = list(self.project.get("dependencies") or ())
        chosen: set[str] = set()

        def choose(extra: str) -> None:
            e = canonicalize_name(extra)
            if e not in chosen:
                chosen.add(e)
                work.extend(groups.get(e, ()))  # unknown extras are reported by the caller

        for e in extras:
            choose(e)
        out: list[str] = []
        i = 0
        while i < len(work):
            raw = work[i]
            i += 1
            try:
                req = Requirement(raw)
            except InvalidRequirement as exc:
                raise ConfigError(f"{self.path.name}: invalid requirement {raw!r}: {exc}") from exc
            if own is not None and canonicalize_name(req.name) == own:
                for x in req.extras:  # "myproj[gpu]" inside a group: pull in that group too
                    choose(x)
                continue
            if raw not in out:
                out.append(raw)
        return out

    def dynamic_dependency_files(self, extras: Sequence[str]) -> list[Path] | None:
        """Files of ``[tool.setuptools.dynamic] dependencies = {file = [...]}``; None if dependencies are dynamic
        some other way (then uv reads the project itself)."""
        if "dependencies" not in self.dynamic and "optional-dependencies" not in self.dynamic:
            return []
        dyn = ((self.data.get("tool") or {}).get("setuptools") or {}).get("dynamic") or {}
        files: list[Path] = []
        if "dependencies" in self.dynamic:
            spec = dyn.get("dependencies")
            if not (isinstance(spec, dict) and "file" in spec):
                return None
            files += [self.path.parent / f for f in _as_list(spec["file"])]
        if "optional-dependencies" in self.dynamic and extras:
            groups = dyn.get("optional-dependencies") or {}
            for e in extras:
                spec = groups.get(e)
                if isinstance(spec, dict) and "file" in spec:
                    files += [self.path.parent / f for f in _as_list(spec["file"])]
                elif spec is not None:
                    return None
        return files


def _as_list(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else [str(x) for x in v]


def read_pyproject(path: Path) -> Pyproject:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name} is not valid TOML: {exc}", "fix the file") from exc
    project = data.get("project") or {}
    if not isinstance(project, dict):
        raise ConfigError(f"{path.name}: [project] must be a table")
    return Pyproject(path=path, data=data, project=project)
