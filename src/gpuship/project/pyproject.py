"""``pyproject.toml``: the PEP 621 ``[project]`` table (dependencies, optional groups chosen as extras, metadata,
scripts) and the raw ``[tool]`` tables."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any  # Any: pyproject.toml tables as tomllib gives them, before their shape is checked

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .. import schema
from ..errors import ConfigError

_LIST = "a list of strings"
_TABLE = "a table of strings"
#: The PEP 621 ``[project]`` fields and the shape each must have (checked before any is used).
PROJECT_FIELDS: dict[str, tuple[str, str]] = {
    "name": ("string", 'name = "my-app"'),
    "version": ("string", 'version = "1.0"'),
    "description": ("string", 'description = "..."'),
    "readme": ("string-or-table", 'readme = "README.md"'),
    "requires-python": ("string", 'requires-python = ">=3.11"'),
    "license": ("string-or-table", 'license = "MIT"'),
    "license-files": ("list", 'license-files = ["LICENSE"]'),
    "authors": ("people", 'authors = [{ name = "Ada" }]'),
    "maintainers": ("people", 'maintainers = [{ name = "Ada" }]'),
    "keywords": ("list", 'keywords = ["gpu"]'),
    "classifiers": ("list", 'classifiers = ["Programming Language :: Python"]'),
    "urls": ("string-table", 'urls = { Source = "https://..." }'),
    "scripts": ("string-table", 'scripts = { app = "app.main:run" }'),
    "gui-scripts": ("string-table", 'gui-scripts = { app = "app.main:run" }'),
    "entry-points": ("table-of-string-tables", 'entry-points = { group = { name = "mod:obj" } }'),
    "dependencies": ("list", 'dependencies = ["numpy"]'),
    "optional-dependencies": ("table-of-lists", 'optional-dependencies = { gpu = ["cupy"] }'),
    "dynamic": ("list", 'dynamic = ["version"]'),
}


def check_project_table(project: dict[str, Any], file: str) -> None:
    """Every PEP 621 field of ``project`` has its shape, or a one-line :class:`ConfigError` names it."""
    for key, (shape, example) in PROJECT_FIELDS.items():
        if key not in project:
            continue
        value, where = project[key], f"{file}: [project] {key}"
        if shape == "string":
            schema.string(value, where, example)
        elif shape == "list":
            schema.string_list(value, where, example)
        elif shape == "string-table":
            schema.string_table(value, where, example)
        elif shape == "string-or-table":
            if not isinstance(value, (str, dict)):
                raise schema.wrong(where, "a string or a table", value, example)
            if isinstance(value, dict):
                for k, v in value.items():
                    schema.string(v, f"{where}.{k}", example)
        elif shape == "people":
            if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
                raise schema.wrong(where, "a list of tables", value, example)
            for person in value:
                schema.string_table(person, where, example)
        elif shape == "table-of-string-tables":
            for group, entries in schema.table(value, where, example).items():
                schema.string_table(entries, f"{where}.{group}", example)
        elif shape == "table-of-lists":
            for group, reqs in schema.table(value, where, example).items():
                schema.string_list(reqs, f"{where}.{group}", example)


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
        return schema.table_at(self.data, "tool", "gpuship", where=f"{self.path.name}: ")

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
        dyn = schema.table_at(self.data, "tool", "setuptools", "dynamic", where=f"{self.path.name}: ")
        files: list[Path] = []
        if "dependencies" in self.dynamic:
            spec = dyn.get("dependencies")
            if not (isinstance(spec, dict) and "file" in spec):
                return None
            files += [self.path.parent / f for f in self._dynamic_files(spec["file"], "dependencies")]
        if "optional-dependencies" in self.dynamic and extras:
            groups = schema.table_at(
                dyn, "optional-dependencies", where=f"{self.path.name}: [tool.setuptools.dynamic] "
            )
            for e in extras:
                spec = groups.get(e)
                if isinstance(spec, dict) and "file" in spec:
                    files += [
                        self.path.parent / f for f in self._dynamic_files(spec["file"], f"optional-dependencies.{e}")
                    ]
                elif spec is not None:
                    return None
        return files

    def _dynamic_files(self, value: Any, key: str) -> tuple[str, ...]:
        where = f"{self.path.name}: [tool.setuptools.dynamic] {key}.file"
        return schema.string_list(value, where, 'file = ["requirements.txt"]', one_string=True)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as data; not UTF-8 or not TOML is a one-line :class:`ConfigError`."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path.name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            "TOML files must be UTF-8; save it as UTF-8",
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name} is not valid TOML: {exc}", "fix the file") from None
    except RecursionError:
        raise ConfigError(f"{path.name} nests tables or lists too deeply", "flatten it") from None


def read_pyproject(path: Path) -> Pyproject:
    data = read_toml(path)
    name = path.name
    project = schema.table_at(data, "project", where=f"{name}: ")
    check_project_table(project, name)
    for keys in (("tool",), ("tool", "gpuship"), ("tool", "uv"), ("build-system",)):
        schema.table_at(data, *keys, where=f"{name}: ")
    package = schema.table_at(data, "tool", "uv").get("package")
    if package is not None:
        schema.boolean(package, f"{name}: [tool.uv] package")
    return Pyproject(path=path, data=data, project=project)
