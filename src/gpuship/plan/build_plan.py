"""``BuildPlan``: every decision of a build, made up front and explainable."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any  # Any: [tool.gpuship] tables as read from TOML, merged before config.py checks them

from ..cache import Cache
from ..config import GpushipConfig
from ..cuda import GpuPlan, GpuSettings, plan_gpu
from ..errors import ConfigError, GpushipError
from ..oci import Compression, Platform
from ..oci.tarball import created_timestamp, source_date_epoch
from ..progress import NO_PROGRESS, Progress
from ..project import ProjectInputs, load_project
from ..project.pyproject import read_toml
from ..redact import strip_userinfo
from ..registry.options import RegistryOptions
from ..sources.base import Base
from ..sources.debian.profiles import PROFILES, way_to_python
from ..sources.profile_base import ProfileBase


@dataclass(frozen=True)
class BuildOptions:
    """What the user asked for on the command line (overrides ``[tool.gpuship]``)."""

    project_dir: Path
    platforms: tuple[str, ...] = ()
    output: str | None = None
    extras: tuple[str, ...] = ()
    locked: bool = False
    report: Path | None = None
    compression: Compression | None = None
    tag: str | None = None
    base: str | None = None
    #: ``gpuship dev``: no project-wheel and app layers; an editable-install layer instead (the project is mounted)
    dev: bool = False
    #: how to reach a registry base and ``registry:`` outputs (``--insecure``, ``--ca-file``)
    registry: RegistryOptions = RegistryOptions()
    #: ``--cache registry:REF`` (None: ``GPUSHIP_BUILD_CACHE``, else ``[tool.gpuship] cache``), ``--cache-mode``
    cache: str | None = None
    cache_mode: str | None = None
    #: ``--no-cache``: build every layer again (nothing is reused, here or from the build cache)
    no_cache: bool = False


@dataclass(frozen=True)
class BuildPlan:
    """Every decision of a build. ``gpu`` is None for a CPU image (``cpu_why`` says why); ``bases`` holds the
    base of each platform (a Debian profile, or a registry image already pulled)."""

    options: BuildOptions
    project: ProjectInputs
    config: GpushipConfig
    base: str
    python_version: str
    platforms: tuple[Platform, ...]
    requirements: tuple[str, ...]
    gpu: GpuPlan | None
    bases: Mapping[Platform, Base]
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str = "app"
    version: str = "0.0.0"
    #: why this is a CPU image (the planner's lines), when ``gpu`` is None
    cpu_why: tuple[str, ...] = ()
    #: package indexes the CUDA planner adds (the PyTorch index for a torch variant, CPU builds included)
    index_urls: tuple[str, ...] = ()
    #: the image's creation time (ISO 8601 UTC) and where it comes from (:func:`image_created`)
    created: str = "1970-01-01T00:00:00Z"
    created_from: str = ""

    @property
    def tag(self) -> str:
        return self.options.tag or f"{self.name}:{self.version}"

    @property
    def compression(self) -> Compression:
        return self.options.compression or self.config.compression

    def explain(self) -> list[str]:
        lines = [
            f"base {self.base} (Python {self.python_version}) for {', '.join(map(str, self.platforms))}",
            f"{len(self.requirements)} top-level requirements",
        ]
        if self.config.shell:
            lines.append(
                "shell: the registry base brings its own"
                if self.first_base().remote
                else "shell: dash (/bin/sh) and coreutils (/usr/bin/env, ...) added to the base"
            )
        lines += list(self.project.notes)
        if self.created_from:
            lines.append(f"created {self.created} ({self.created_from})")
        lines += next(iter(self.bases.values())).explain()
        # the CUDA plan, or why this is a CPU image and where its frameworks come from
        lines += self.gpu.explain() if self.gpu is not None else list(self.cpu_why)
        return lines

    def first_base(self) -> Base:
        """The base of the first platform (what a Dockerfile and the lock see: every platform's is the same)."""
        return self.bases[self.platforms[0]]


def read_gpuship_toml(project_dir: Path) -> dict[str, Any]:
    """The settings in ``gpuship.toml`` (a requirements.txt / environment.yml project's ``[tool.gpuship]``).

    Its keys sit at the top level (``entrypoint = [...]``, ``[gpu]``); a file written as ``[tool.gpuship]`` (and
    ``[tool.gpuship.gpu]``), copied from a pyproject.toml, means the same."""
    side = project_dir / "gpuship.toml"
    if not side.is_file():
        return {}
    data = read_toml(side)
    tool = data.pop("tool", None)
    if tool is None:
        return data
    other = sorted(set(tool) - {"gpuship"}) if isinstance(tool, dict) else []
    if not isinstance(tool, dict) or not isinstance(tool.get("gpuship", {}), dict) or other:
        raise ConfigError(
            f"{side}: only gpuship's settings belong here, not [tool.{other[0] if other else 'gpuship'}]",
            "write gpuship's keys at the top level (entrypoint = [...]) or under [tool.gpuship]",
        )
    table = dict(tool.get("gpuship") or {})
    for k, v in data.items():  # top-level keys beside a [tool.gpuship] table: both count
        table.setdefault(k, v)
    return table


def load_config(
    project_dir: Path, tool_table: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None
) -> GpushipConfig:
    """``[tool.gpuship]`` from pyproject.toml, over a ``gpuship.toml`` beside the project files, over the
    ``defaults`` another tool's file gives (``ProjectInputs.settings``: cog.yaml's)."""
    return GpushipConfig.from_table(config_table(project_dir, tool_table, defaults))


def config_table(
    project_dir: Path, tool_table: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The merged ``[tool.gpuship]`` table of :func:`load_config`; tables (``gpu``) merge key by key."""
    table = dict(tool_table or {})
    for layer in (read_gpuship_toml(project_dir), dict(defaults or {})):
        for k, v in layer.items():
            if k not in table:
                table[k] = v
            elif isinstance(table[k], dict) and isinstance(v, dict):
                table[k] = {**v, **table[k]}
    return table


def config_home(project_dir: Path, tool_table: Mapping[str, Any] | None) -> str:
    """Where the user writes gpuship's settings for this project, for hints: pyproject.toml's ``[tool.gpuship]``,
    or ``gpuship.toml`` for a project without a pyproject.toml (requirements.txt, environment.yml)."""
    if tool_table or (project_dir / "pyproject.toml").is_file():
        return "[tool.gpuship] in pyproject.toml"
    return "gpuship.toml"


def git_revision(project_dir: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(project_dir), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def image_created(project_dir: Path) -> tuple[int, str]:
    """When the image counts as created, and why: ``SOURCE_DATE_EPOCH`` when set; else the time of the last commit
    that touched the project folder (reproducible, and honest in ``docker images``: not "56 years ago"); else 0
    (no git). Layer file times stay ``SOURCE_DATE_EPOCH`` or 0 either way, so layers are shared across projects."""

    if "SOURCE_DATE_EPOCH" in os.environ:
        return source_date_epoch(), "SOURCE_DATE_EPOCH"
    try:
        out = subprocess.run(
            ["git", "-C", str(project_dir), "log", "-1", "--format=%ct %h", "--", "."],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return 0, "no git: epoch 0"
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 2 or not parts[0].isdigit():
        return 0, "no git history: epoch 0; SOURCE_DATE_EPOCH sets another"
    return int(parts[0]), f"the project's last commit, {parts[1]}"


def oci_labels(project: ProjectInputs, project_dir: Path, config: GpushipConfig, created: str = "") -> dict[str, str]:
    """``org.opencontainers.image.*`` labels from the project metadata and git."""
    labels: dict[str, str] = {}
    pairs = {
        "title": project.name,
        "version": project.version,
        "description": project.description,
        "licenses": project.license,
        "revision": git_revision(project_dir),
        "created": created or created_timestamp(),
    }
    urls = project.urls
    for key in ("Source", "source", "Repository", "repository", "Homepage", "homepage"):
        if key in urls:
            pairs["source"] = urls[key]
            break
    for k, v in pairs.items():
        if v:
            labels[f"org.opencontainers.image.{k}"] = strip_userinfo(str(v)) if k == "source" else str(v)
    labels.update(config.labels)
    return labels


def make_plan(options: BuildOptions, cache: Cache | None = None, progress: Progress = NO_PROGRESS) -> BuildPlan:
    """``cache`` / ``progress``: where a registry base is pulled to, and how that is reported."""
    project_dir = options.project_dir.resolve()
    if not project_dir.is_dir():
        raise GpushipError(f"{options.project_dir} is not a directory", "give the path of a Python project")
    project = load_project(project_dir, extras=options.extras)
    config = load_config(project_dir, project.tool, project.settings)
    base = options.base or config.base
    plats = options.platforms or config.platforms or ("linux/amd64",)
    platforms = tuple(sorted({Platform.parse(p) for p in plats}))
    for p in platforms:
        if p.architecture not in ("amd64", "arm64"):
            raise ConfigError(f"platform {p} is not supported", "use linux/amd64 and/or linux/arm64")
    bases: dict[Platform, Base]
    if base not in PROFILES:  # a registry image (the registry client is imported only then: httpx loads slowly)
        from ..sources.registry_base import plan_registry_bases  # the registry client loads httpx: only then

        python_version, pulled = plan_registry_bases(
            base,
            platforms,
            cache or Cache(),
            progress,
            options.registry,
            system_packages=config.system_packages,
            python=config.python,
        )
        bases = dict(pulled)
    else:
        python_version = base_python_version(base, config)
        mirror, security = config.debian_mirror(), config.debian.get("security-mirror")
        bases = {p: ProfileBase(base, p, mirror, security) for p in platforms}
    requirements = project.requirements
    settings = GpuSettings.from_table(config.gpu)
    wheels = local_wheels(project_dir, (*project.index.find_links, *config.find_links))
    plans = [plan_gpu(requirements, settings, p, local_wheels=wheels) for p in platforms]
    gpu = plans[0]
    for p, other in zip(platforms[1:], plans[1:], strict=True):
        if tuple(other.requirements) != tuple(gpu.requirements) or other.cuda != gpu.cuda:
            what = f"CUDA {other.cuda or 'none'} vs {gpu.cuda or 'none'}"
            raise ConfigError(
                f"the CUDA plan for {p} differs from the one for {platforms[0]} ({what}; requirements "
                f"{', '.join(other.requirements)} vs {', '.join(gpu.requirements)})",
                "build each platform separately with --platform, or pin [tool.gpuship.gpu] cuda",
            )
    requirements = tuple(gpu.requirements)
    epoch, created_from = image_created(project_dir)
    created = created_timestamp(epoch)
    return BuildPlan(
        options=options,
        project=project,
        config=config,
        base=base,
        python_version=python_version,
        platforms=platforms,
        requirements=requirements,
        gpu=gpu if gpu.is_gpu else None,
        bases=bases,
        cpu_why=() if gpu.is_gpu else tuple(gpu.explain()),
        index_urls=tuple(gpu.index_urls),
        labels=oci_labels(project, project_dir, config, created),
        name=_image_name(project.name or project_dir.name),
        version=project.version or "latest",
        created=created,
        created_from=created_from,
    )


def local_wheels(root: Path, find_links: Sequence[str]) -> tuple[str, ...]:
    """The wheel file names in the local find-links folders (relative ones from the project root, as uv reads
    them): where a CPU image finds torch's ``+cpu`` build. URLs are not listed (uv reads those pages itself)."""
    names: set[str] = set()
    for entry in find_links:
        if "://" in entry and not entry.startswith("file://"):
            continue
        folder = Path(entry.removeprefix("file://"))
        folder = folder if folder.is_absolute() else root / folder
        if folder.is_dir():
            names.update(p.name for p in folder.iterdir() if p.name.endswith(".whl"))
    return tuple(sorted(names))


def _image_name(name: str) -> str:

    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "app"


def base_python_version(base: str, config: GpushipConfig) -> str:

    if base in PROFILES:
        version = PROFILES[base].python_version
    else:
        raise ConfigError(
            f"unknown base {base!r}", f"use one of {', '.join(sorted(PROFILES))}, or a registry image reference"
        )
    if config.python and config.python != version:
        raise ConfigError(
            f"[tool.gpuship] python = {config.python!r} but base {base} has Python {version}",
            f"remove the python key, or use {way_to_python(config.python)}",
        )
    return version
