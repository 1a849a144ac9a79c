"""``cog.yaml``: a Cog predictor as a project input, so a Cog user's project builds as it is.

Taken (``cog.yaml`` key -> what gpuship does with it):

* ``build.python_packages`` -> requirements; ``build.python_requirements`` -> a requirements file, read like any
  other (``-r``, options, hashes);
* ``build.python_version`` -> a Python constraint (checked against the base), and ``debian-trixie`` as the base
  for 3.13;
* ``build.system_packages`` -> ``system-packages`` (Debian names: most of Ubuntu's are the same);
* ``build.gpu`` -> ``[tool.gpuship.gpu] enabled``; ``build.cuda`` -> ``[tool.gpuship.gpu] cuda``;
* ``build.sdk_version`` -> the ``cog`` pin;
* ``predict`` / ``train`` -> Cog's HTTP server as the entrypoint (``python -m cog.server.http``, port 5000),
  with ``COG_PREDICT_TYPE_STUB`` / ``COG_TRAIN_TYPE_STUB`` set as ``cog build`` sets them, and the ``cog``
  package (its Python SDK and server) as an implicit requirement;
* ``environment`` (``KEY=VALUE`` lines) -> ``env``; ``concurrency.max`` -> ``COG_MAX_CONCURRENCY``.

Not taken, and said so: ``build.run`` (gpuship runs no commands at build time), ``build.pre_install``, ``image``
(gpuship's ``--tag`` / ``--output`` say where the image goes), ``weights`` and any other key. What ``cog.yaml``
gives is a default: ``[tool.gpuship]`` (or ``gpuship.toml``) wins key by key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..errors import ConfigError

COG_FILES = ("cog.yaml", "cog.yml")
COG_PORT = "5000"
COG_SERVER = ("python", "-m", "cog.server.http")

_BUILD_TAKEN = (
    "python_packages",
    "python_requirements",
    "python_version",
    "system_packages",
    "gpu",
    "cuda",
    "sdk_version",
)
_TOP_TAKEN = ("build", "predict", "train", "environment", "concurrency")


@dataclass(frozen=True)
class CogInputs:
    """What a ``cog.yaml`` gives: requirements, a requirements file, a Python pin and gpuship settings."""

    path: Path
    requirements: tuple[str, ...] = ()
    requirements_file: Path | None = None
    python: str = ""  # "3.11"
    settings: Mapping[str, object] = field(default_factory=dict)  # [tool.gpuship] keys, defaults only
    notes: tuple[str, ...] = ()


def find_cog(root: Path) -> Path | None:
    return next((root / n for n in COG_FILES if (root / n).is_file()), None)


def read_cog(path: Path) -> CogInputs:
    """Read ``cog.yaml`` at ``path``; a shape gpuship cannot read is one :class:`ConfigError` line."""
    data, build = _load(path)
    taken: list[str] = []
    settings: dict[str, object] = {}
    requirements = _strings(path, build.get("python_packages"), "build.python_packages")
    if requirements:
        taken.append(f"{len(requirements)} python_packages")
    req_file = None
    if build.get("python_requirements"):
        req_file = (path.parent / str(build["python_requirements"])).resolve()
        taken.append(f"python_requirements {build['python_requirements']}")
    python = str(build.get("python_version") or "").strip()
    if python:
        python = ".".join(python.split(".")[:2])
        taken.append(f"python_version {python}")
        if python == "3.13":
            settings["base"] = "debian-trixie"
    system = _strings(path, build.get("system_packages"), "build.system_packages")
    if system:
        settings["system-packages"] = system
        taken.append("system_packages (as Debian packages)")
    gpu = _gpu(path, build, taken)
    if gpu:
        settings["gpu"] = gpu
    cog = f"cog=={build['sdk_version']}" if build.get("sdk_version") else "cog"
    if build.get("sdk_version"):
        taken.append(f"sdk_version {build['sdk_version']}")
    env = _server_env(path, data, taken)
    if env:
        settings["entrypoint"] = list(COG_SERVER)
        settings["ports"] = [COG_PORT]
        if not any(_named(r, "cog") for r in requirements):
            requirements.append(cog)
    env.update(_user_env(path, data, taken))
    if env:
        settings["env"] = env
    return CogInputs(path, tuple(requirements), req_file, python, settings, tuple(_notes(path, data, build, taken)))


def _load(path: Path) -> tuple[dict[str, object], dict[str, object]]:
    """The file as a mapping, and its ``build:`` mapping."""
    import yaml  # only for a cog.yaml project

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name} is not valid YAML: {str(exc).splitlines()[0]}", "fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name} must be a mapping (build:, predict:)", "see Cog's cog.yaml reference")
    build = data.get("build") or {}
    if not isinstance(build, dict):
        raise ConfigError(f"{path.name}: build must be a mapping", 'e.g. build: {python_version: "3.11"}')
    return data, build


def _strings(path: Path, value: object, key: str) -> list[str]:
    """A list of strings (numbers taken as written) at ``key``, or none."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise ConfigError(f"{path.name}: {key} must be a list of strings", f'e.g. {key.split(".")[-1]}: ["..."]')


def _gpu(path: Path, build: Mapping[str, object], taken: list[str]) -> dict[str, object]:
    """``[tool.gpuship.gpu]`` from ``build.gpu`` and ``build.cuda``."""
    gpu: dict[str, object] = {}
    if "gpu" in build:
        if not isinstance(build["gpu"], bool):
            raise ConfigError(f"{path.name}: build.gpu must be true or false, not {build['gpu']!r}")
        gpu["enabled"] = build["gpu"]
        taken.append(f"gpu {str(build['gpu']).lower()}")
    if build.get("cuda"):
        gpu["cuda"] = str(build["cuda"])
        taken.append(f"cuda {build['cuda']}")
    return gpu


def _server_env(path: Path, data: Mapping[str, object], taken: list[str]) -> dict[str, str]:
    """The Cog server's variables naming the ``predict:`` and ``train:`` classes (none: no server)."""
    env: dict[str, str] = {}
    for key, var in (("predict", "COG_PREDICT_TYPE_STUB"), ("train", "COG_TRAIN_TYPE_STUB")):
        ref = data.get(key)
        if ref is None:
            continue
        if not isinstance(ref, str) or ":" not in ref:
            raise ConfigError(
                f"{path.name}: {key} must be 'file.py:Name', not {ref!r}", f'e.g. {key}: "predict.py:Predictor"'
            )
        env[var] = ref
        taken.append(f"{key} {ref}")
    return env


def _user_env(path: Path, data: Mapping[str, object], taken: list[str]) -> dict[str, str]:
    """``environment:`` (``KEY=VALUE`` lines) and ``concurrency.max`` as the image's variables."""
    env: dict[str, str] = {}
    for line in _strings(path, data.get("environment"), "environment"):
        name, eq, value = line.partition("=")
        if not eq or not name:
            raise ConfigError(f"{path.name}: environment entry {line!r} is not KEY=VALUE")
        env[name] = value
    if env.keys() - {"COG_PREDICT_TYPE_STUB", "COG_TRAIN_TYPE_STUB"}:
        taken.append("environment")
    concurrency = data.get("concurrency") or {}
    if isinstance(concurrency, dict) and concurrency.get("max"):
        env["COG_MAX_CONCURRENCY"] = str(concurrency["max"])
        taken.append(f"concurrency.max {concurrency['max']}")
    return env


def _notes(path: Path, data: Mapping[str, object], build: Mapping[str, object], taken: list[str]) -> list[str]:
    """What was taken, and what was not (with why, where gpuship has another way)."""
    left = [f"build.{k}" for k in build if k not in _BUILD_TAKEN] + [k for k in data if k not in _TOP_TAKEN]
    notes = [f"{path.name}: taken: {', '.join(taken) or 'nothing'}"]
    if left:
        why = {
            "build.run": "gpuship runs no commands at build time: use system-packages, python packages or files",
            "image": "--tag and --output say where the image goes",
        }
        reasons = "; ".join(f"{k} ({why[k]})" if k in why else k for k in left)
        notes.append(f"{path.name}: not taken: {reasons}")
    return notes


def _named(requirement: str, name: str) -> bool:
    try:
        return canonicalize_name(Requirement(requirement).name) == name
    except InvalidRequirement:
        return False
