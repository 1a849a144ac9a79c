"""``load_project``: detect a project's inputs and merge them into one :class:`ProjectInputs`.

Detected in this order, and mixed where a project has several:

1. ``pyproject.toml`` — PEP 621 ``dependencies`` plus the ``optional-dependencies`` groups chosen as extras;
   metadata (name, version, description, license, urls), ``[project.scripts]``, the raw ``[tool.gpuship]``.
   Dependencies declared ``dynamic`` through ``[tool.setuptools.dynamic]`` files are read from those files;
   any other dynamic form (or a ``setup.py``-only project) is handed to uv, which asks the build backend.
2. ``requirements.txt`` (``requirements.in`` when there is no ``.txt``), and ``requirements-<extra>.txt`` /
   ``requirements_<extra>.txt`` / ``requirements/<extra>.txt`` for each chosen extra that is not a pyproject group.
3. ``environment.yml`` / ``environment.yaml`` — a conda environment, translated to PyPI (see :mod:`.conda`).
4. ``cog.yaml`` — a Cog predictor: its Python packages, requirements file and Python pin, and gpuship settings
   for Cog's HTTP server (see :mod:`.cog`).
5. ``uv.lock`` — exported with ``uv export --locked``; its exact versions are applied as constraints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any  # Any: [tool.*] tables and project metadata as read from TOML

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from ..errors import ConfigError
from .cog import find_cog, read_cog
from .conda import translate_environment
from .pyproject import Pyproject, read_pyproject
from .requirements import RequirementReader
from .uvlock import export_uv_lock

ENVIRONMENT_FILES = ("environment.yml", "environment.yaml")


@dataclass(frozen=True)
class IndexOptions:
    """Where packages come from, as read from the inputs (reported; uv reads the same options itself)."""

    index_url: str = ""
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False

    def option_lines(self) -> list[str]:
        """The same options as requirements-file lines."""
        args = self.uv_args()
        out: list[str] = []
        i = 0
        while i < len(args):
            if args[i] == "--no-index":
                out.append(args[i])
                i += 1
            else:
                out.append(f"{args[i]} {args[i + 1]}")
                i += 2
        return out

    def uv_args(self) -> list[str]:
        args: list[str] = []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for u in self.extra_index_urls:
            args += ["--extra-index-url", u]
        for f in self.find_links:
            args += ["--find-links", f]
        if self.no_index:
            args.append("--no-index")
        return args


@dataclass(frozen=True)
class ProjectInputs:
    """Everything a project declares about its Python environment. Immutable; paths are absolute.

    ``requirements`` holds every top-level requirement (pyproject, requirements files, conda translation,
    the conda ``pip:`` section) as PEP 508 strings: the one list the CUDA planner may rewrite
    (``dataclasses.replace(project, requirements=...)``) before the lock resolves it.
    """

    root: Path
    name: str
    version: str = ""
    description: str = ""
    license: str = ""
    urls: Mapping[str, str] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()
    requirement_files: tuple[Path, ...] = ()
    constraint_files: tuple[Path, ...] = ()
    #: pip option lines from the requirement files (``--index-url X``, ``--pre``, ...), passed to uv as written
    uv_options: tuple[str, ...] = ()
    index: IndexOptions = IndexOptions()
    #: ``--hash`` values per canonical package name: the locked file must be one of them
    hashes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: exact pins from an existing uv.lock, applied as constraints
    pins: tuple[str, ...] = ()
    #: project files whose dependencies only uv can read (dynamic metadata, setup.py); ``extras`` apply to them
    uv_project_files: tuple[Path, ...] = ()
    #: Python version constraints and where they come from: ``(("pyproject.toml", ">=3.11"), ...)``
    python_constraints: tuple[tuple[str, str], ...] = ()
    #: the CUDA version a conda environment asked for (``cudatoolkit=11.4`` -> ``"11.4"``), else ""
    cuda_version: str = ""
    is_package: bool = False
    extras: tuple[str, ...] = ()
    scripts: Mapping[str, str] = field(default_factory=dict)
    tool: Mapping[str, Any] = field(default_factory=dict)
    #: every file that was read (pyproject.toml, requirement and constraint files, environment.yml, uv.lock)
    input_files: tuple[Path, ...] = ()
    #: which kinds of input were found, in detection order
    sources: tuple[str, ...] = ()
    #: things worth telling the user (conda packages skipped, CUDA mapping, what cog.yaml gave, ...)
    notes: tuple[str, ...] = ()
    #: gpuship settings another tool's file gives (cog.yaml's predict server, system packages, GPU): defaults
    #: under ``[tool.gpuship]`` and ``gpuship.toml``, key by key
    settings: Mapping[str, Any] = field(default_factory=dict)

    def check_python(self, version: str, way: Callable[[str], str] | None = None) -> None:
        """Refuse a Python version that a project input excludes (``python=3.10`` in environment.yml, ...).
        ``way(spec)`` names the base that gives a Python ``spec`` admits (for the hint)."""
        for where, spec in self.python_constraints:
            try:
                ok = SpecifierSet(spec).contains(version, prereleases=True)
            except InvalidSpecifier as exc:
                raise ConfigError(f"{where}: invalid Python constraint {spec!r}") from exc
            if not ok:
                raise ConfigError(
                    f"{where} asks for Python {spec} but the base image has Python {version}",
                    f"change the Python pin, or use {way(spec)}"
                    if way is not None
                    else "change the Python pin, or choose a base with a matching Python",
                )

    def lock_key(self) -> dict[str, Any]:
        """What decides the resolution, as plain data: the lock's input hash is made from this.

        Metadata that cannot change the resolution (description, scripts, ``[tool.gpuship]``) stays out, so
        editing the entrypoint never invalidates ``gpuship.lock``.
        """
        files = sorted(set(self.requirement_files) | set(self.constraint_files) | set(self.uv_project_files))
        return {
            "requirements": list(self.requirements),
            "files": {self._rel(p): _file_sha256(p) for p in files},
            "constraint_files": [self._rel(p) for p in self.constraint_files],
            "uv_project_files": [self._rel(p) for p in self.uv_project_files],
            "uv_options": list(self.uv_options),
            "index": self.index.uv_args(),
            "pins": list(self.pins),
            "hashes": {k: sorted(v) for k, v in sorted(self.hashes.items())},
            "extras": list(self.extras) if self.uv_project_files else [],
        }

    def _rel(self, p: Path) -> str:
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return p.as_posix()


def _file_sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _requirements_for_extra(root: Path, extra: str) -> Path | None:
    for cand in (f"requirements-{extra}.txt", f"requirements_{extra}.txt", f"requirements/{extra}.txt"):
        if (root / cand).is_file():
            return root / cand
    return None


def load_project(
    path: Path | str,
    extras: Sequence[str] = (),
    *,
    requirement_files: Sequence[Path | str] | None = None,
    conda_map: Mapping[str, str] | None = None,
    use_uv_lock: bool = True,
) -> ProjectInputs:
    """Read a project's inputs. ``path`` is the project folder (or one input file in it).

    ``requirement_files`` replaces the detection of requirements files (paths relative to the project);
    ``conda_map`` adds conda-name -> PyPI-name rows for environment.yml; ``use_uv_lock=False`` ignores uv.lock.
    """
    given = Path(path).resolve()
    if given.is_file():
        root = given.parent
        if given.name.startswith("requirements") or given.suffix in (".txt", ".in"):
            requirement_files = [given] if requirement_files is None else requirement_files
    elif given.is_dir():
        root = given
    else:
        raise ConfigError(f"{path} does not exist", "give the path of a Python project folder")

    extras = tuple(dict.fromkeys(extras))
    g = _Gathered(root, RequirementReader(root), remaining_extras=list(extras))
    g.is_package = (root / "setup.py").is_file() or (root / "setup.cfg").is_file()
    pyproject = _from_pyproject(g, extras)  # 1. pyproject.toml (and setup.py)
    _from_requirement_files(g, requirement_files)  # 2. requirements files
    _from_environment(g, conda_map)  # 3. environment.yml
    _from_cog(g)  # 3b. cog.yaml
    if g.remaining_extras:
        known = sorted(pyproject.optional_groups) if pyproject is not None else []
        raise ConfigError(
            f"unknown extra{'s' if len(g.remaining_extras) > 1 else ''}: {', '.join(g.remaining_extras)}",
            f"known extras: {', '.join(known)}"
            if known
            else "the project has no optional-dependencies and no requirements-<extra>.txt",
        )
    uv_lock = root / "uv.lock"  # 4. uv.lock
    if use_uv_lock and uv_lock.is_file() and pyproject is not None and pyproject.has_project:
        g.pins, lock_notes = export_uv_lock(root, list(extras))
        g.notes += lock_notes
        g.sources.append("uv.lock")
        g.input_files.append(uv_lock)
    if not g.sources:
        raise ConfigError(
            f"{root} has no pyproject.toml [project], requirements.txt, environment.yml, cog.yaml or setup.py",
            "add one of them listing the project's dependencies",
        )
    return _inputs(g, extras)


@dataclass
class _Gathered:
    """What :func:`load_project` has read so far, file by file."""

    root: Path
    reader: RequirementReader
    remaining_extras: list[str]
    requirements: list[str] = field(default_factory=list)
    python_constraints: list[tuple[str, str]] = field(default_factory=list)
    uv_project_files: list[Path] = field(default_factory=list)
    input_files: list[Path] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pins: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(
        default_factory=lambda: {"name": "", "version": "", "description": "", "license": "", "urls": {}, "scripts": {}}
    )
    tool: Mapping[str, Any] = field(default_factory=dict)
    cuda_version: str = ""
    is_package: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    def take_read_requirements(self) -> None:
        """Add what the requirement reader has read since (in order, once each)."""
        for r in self.reader.scan.requirements:
            if r not in self.requirements:
                self.requirements.append(r)


def _from_pyproject(g: _Gathered, extras: tuple[str, ...]) -> Pyproject | None:
    """``pyproject.toml``'s metadata and dependencies (uv reads dynamic ones itself), or a ``setup.py``'s name."""
    root = g.root
    pp_path = root / "pyproject.toml"
    pyproject = read_pyproject(pp_path) if pp_path.is_file() else None
    if pyproject is not None:
        g.input_files.append(pp_path)
        g.tool = pyproject.tool
        g.is_package = g.is_package or pyproject.has_build_system
        uv_tool = (pyproject.data.get("tool") or {}).get("uv") or {}
        if isinstance(uv_tool.get("package"), bool):
            g.is_package = uv_tool["package"]
        if pyproject.has_project:
            _take_project_table(g, pyproject, extras)
    if (root / "setup.py").is_file() and (pyproject is None or not pyproject.has_project):
        g.uv_project_files.append(root / "setup.py")
        g.sources.append("setup.py")
        g.remaining_extras = []
    return pyproject


def _take_project_table(g: _Gathered, pyproject: Pyproject, extras: tuple[str, ...]) -> None:
    """``[project]``: its metadata, Python range, and dependencies (those of ``extras`` too)."""
    pp_path = g.root / "pyproject.toml"
    g.sources.append("pyproject.toml")
    g.meta.update(
        name=pyproject.name,
        version=pyproject.version,
        description=pyproject.description,
        license=pyproject.license,
        urls=pyproject.urls,
        scripts=pyproject.scripts,
    )
    groups = {canonicalize_name(group) for group in pyproject.optional_groups}
    g.remaining_extras = [e for e in extras if canonicalize_name(e) not in groups]
    if pyproject.requires_python:
        g.python_constraints.append(("pyproject.toml requires-python", pyproject.requires_python))
    dyn_files = pyproject.dynamic_dependency_files(extras)
    if dyn_files is None:
        g.uv_project_files.append(pp_path)
        g.notes.append("pyproject.toml: dependencies are dynamic; uv reads them from the build backend")
        g.remaining_extras = []  # uv checks the extras of a project it reads itself
    else:
        for f in dyn_files:
            g.reader.read_file(f)
    if "dependencies" not in pyproject.dynamic:
        g.requirements += pyproject.dependencies_for(extras)


def _from_requirement_files(g: _Gathered, requirement_files: Sequence[Path | str] | None) -> None:
    """The requirements files given, or ``requirements.txt``/``.in`` and a ``requirements-<extra>.txt`` per extra."""
    root = g.root
    if requirement_files is not None:
        chosen = [root / p if not Path(p).is_absolute() else Path(p) for p in requirement_files]
    else:
        chosen = []
        for cand in ("requirements.txt", "requirements.in"):
            if (root / cand).is_file():
                chosen.append(root / cand)
                break
        for e in list(g.remaining_extras):
            extra_file = _requirements_for_extra(root, e)
            if extra_file is not None:
                chosen.append(extra_file)
                g.remaining_extras.remove(e)
    for f in chosen:
        g.reader.read_file(f)
    if g.reader.scan.requirement_files:
        g.sources.append("requirements")
    g.take_read_requirements()


def _from_environment(g: _Gathered, conda_map: Mapping[str, str] | None) -> None:
    """``environment.yml`` translated to PyPI requirements, its Python and CUDA versions."""
    root = g.root
    env_file = next((root / n for n in ENVIRONMENT_FILES if (root / n).is_file()), None)
    if env_file is None:
        return
    conda = translate_environment(env_file, conda_map)
    g.sources.append(env_file.name)
    g.input_files.append(env_file)
    g.requirements += [r for r in conda.requirements if r not in g.requirements]
    g.reader.read_lines(conda.pip_lines, base=root, where=f"{env_file.name} pip:")
    g.take_read_requirements()
    if conda.python:
        g.python_constraints.append((f"{env_file.name} python", conda.python))
    g.cuda_version = conda.cuda_version
    g.notes += conda.notes
    g.meta["name"] = g.meta["name"] or conda.name


def _from_cog(g: _Gathered) -> None:
    """``cog.yaml``'s packages, Python version and the settings it gives (server, system packages, GPU)."""
    cog_file = find_cog(g.root)
    if cog_file is None:
        return
    cog = read_cog(cog_file)
    g.sources.append(cog_file.name)
    g.input_files.append(cog_file)
    if cog.requirements_file is not None:
        g.reader.read_file(cog.requirements_file)
    g.reader.read_lines(cog.requirements, base=g.root, where=f"{cog_file.name} python_packages")
    g.take_read_requirements()
    if cog.python:
        g.python_constraints.append((f"{cog_file.name} python_version", f"=={cog.python}.*"))
    g.notes += cog.notes
    g.settings = dict(cog.settings)


def _inputs(g: _Gathered, extras: tuple[str, ...]) -> ProjectInputs:
    """The project's inputs from all that was read."""
    scan = g.reader.scan
    g.take_read_requirements()
    root, meta = g.root, g.meta
    input_files = g.input_files + [f for f in scan.requirement_files + scan.constraint_files if f not in g.input_files]
    return ProjectInputs(
        root=root,
        name=str(meta["name"] or root.name),
        version=str(meta["version"]),
        description=str(meta["description"]),
        license=str(meta["license"]),
        urls=dict(meta["urls"]),
        requirements=tuple(g.requirements),
        requirement_files=tuple(scan.requirement_files),
        constraint_files=tuple(scan.constraint_files),
        uv_options=tuple(scan.option_lines),
        index=IndexOptions(scan.index_url, tuple(scan.extra_index_urls), tuple(scan.find_links), scan.no_index),
        hashes={k: tuple(dict.fromkeys(v)) for k, v in scan.hashes.items()},
        pins=tuple(g.pins),
        uv_project_files=tuple(g.uv_project_files),
        python_constraints=tuple(g.python_constraints),
        cuda_version=g.cuda_version,
        is_package=g.is_package or bool(scan.self_references),
        extras=extras,
        scripts=dict(meta["scripts"]),
        tool=g.tool,
        input_files=tuple(input_files),
        sources=tuple(g.sources),
        notes=tuple(g.notes),
        settings=g.settings,
    )


def describe(project: ProjectInputs) -> str:
    """A short JSON summary (for ``-v`` output and debugging)."""
    return json.dumps(
        {"name": project.name, "sources": project.sources, "requirements": project.requirements}, indent=2
    )
