"""Translate a conda ``environment.yml`` into PyPI requirements.

Names go through the maintained map in ``conda_map.toml`` (``pytorch`` -> ``torch``, ``cudatoolkit=11.4`` -> the
``nvidia-*-cu11`` wheels, ``libprotobuf`` skipped because the ``protobuf`` wheel bundles it, ...). Conda version
specs become PEP 440 specifiers (``numpy=1.26`` -> ``numpy==1.26.*``; build strings are dropped). The ``pip:``
section passes through unchanged (``-r``/``-c``/index options included). ``python=3.x`` becomes a Python
constraint that the lock checks against the base's Python. Conda-only software is one error that lists all of it.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any  # Any: environment.yml and the conda map as parsed

import yaml

from ..errors import ConfigError


@cache
def conda_map() -> dict[str, Any]:
    """The name map (``conda_map.toml`` shipped with gpuship)."""
    return tomllib.loads(resources.files(__package__).joinpath("conda_map.toml").read_text())


@dataclass(frozen=True)
class CondaSpec:
    """One ``dependencies:`` entry: ``conda-forge::numpy=1.26=py311h...`` -> name, PEP 440 specifier."""

    raw: str
    name: str
    specifier: str  # PEP 440, "" for any version
    version: str  # the conda version text, for CUDA meta packages ("11.4")


@dataclass
class CondaTranslation:
    name: str = ""
    requirements: list[str] = field(default_factory=list)
    pip_lines: list[str] = field(default_factory=list)
    python: str = ""  # PEP 440 specifier from python=3.x
    cuda_version: str = ""
    notes: list[str] = field(default_factory=list)


_SPEC_RE = re.compile(r"^(?:(?P<channel>[^:\s]+)::)?(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<rest>.*)$")


def conda_version_to_pep440(version: str, *, where: str) -> str:
    """``=1.26`` -> ``==1.26.*``; ``==1.26.4`` / ``>=1.2,<2`` kept; ``1.26.*`` -> ``==1.26.*``; ``""`` -> ``""``."""
    v = version.strip()
    if not v or v == "*":
        return ""
    if "|" in v:
        raise ConfigError(
            f"{where}: the conda version '{v}' uses '|' (or), which has no PyPI form",
            "pin a single range (e.g. >=1.2,<2)",
        )
    parts = []
    for piece in v.split(","):
        p = piece.strip()
        if not p:
            continue
        if p.startswith(("==", ">=", "<=", "!=", "~=", ">", "<")):
            parts.append(p)
        elif p.startswith("="):
            body = p[1:].strip()
            parts.append(f"=={body}" if body.endswith("*") else f"=={body}.*")
        else:  # a bare version: exact, or fuzzy with a trailing *
            parts.append(f"=={p}" if not p.endswith("*") or p.endswith(".*") else f"=={p[:-1].rstrip('.')}.*")
    return ",".join(parts)


def parse_conda_spec(raw: str, *, where: str) -> CondaSpec:
    text = raw.strip()
    m = _SPEC_RE.match(text)
    if m is None:
        raise ConfigError(f"{where}: cannot read the conda package spec {raw!r}", "use name, name=1.2 or name>=1.2")
    name = m.group("name").lower()
    rest = m.group("rest").strip()
    if rest.startswith("["):  # name[version='>=1.2',build=...]
        vm = re.search(r"version\s*=\s*['\"]?([^'\",\]]+(?:,[^'\"\]]+)*)['\"]?", rest)
        rest = vm.group(1) if vm else ""
    rest = re.sub(r"\s*,\s*", ",", rest)
    if rest.startswith("=="):
        version = "==" + (rest[2:].split("=", 1)[0].split() or [""])[0]
    elif rest.startswith("="):
        # name=1.2=build: the build string after the second '=' is conda-only
        version = "=" + (rest[1:].split("=", 1)[0].split() or [""])[0]
    else:  # ">=1.2,<2", or the space form "name 1.2 build"
        version = rest.split()[0] if rest else ""
    version = version.strip()
    spec = conda_version_to_pep440(version, where=f"{where} ({raw.strip()})")
    plain = version.lstrip("=<>!~").split(",")[0].rstrip(".*")
    return CondaSpec(raw=text, name=name, specifier=spec, version=plain)


def _matches(name: str, names: list[str], globs: list[str]) -> bool:
    return name in names or any(fnmatch.fnmatchcase(name, g) for g in globs)


def _major_of(version: str) -> int | None:
    m = re.match(r"^(\d+)", version)
    return int(m.group(1)) if m else None


def translate_environment(path: Path, overrides: Mapping[str, str] | None = None) -> CondaTranslation:
    """Read ``environment.yml`` and translate it (``overrides`` maps extra conda names to PyPI requirements)."""
    where = path.name
    out, specs = _read_environment(path)
    cmap = conda_map()
    rename: dict[str, str] = cmap["rename"]
    cuda = cmap["cuda"]
    provided = cmap["provided"]
    conda_only = cmap["conda-only"]
    overrides = {k.lower(): v for k, v in (overrides or {}).items()}
    major, out.cuda_version = _cuda_major(specs, cuda, where)

    missing: list[str] = []
    skipped: list[str] = []
    reqs: list[str] = []
    for s in specs:
        if s.name in overrides:  # the user's own map: a PyPI name (the conda version carries over) or a requirement
            target = overrides[s.name]
            if target:
                reqs.append(target if _has_spec(target) else target + s.specifier)
        elif s.name == "python":
            out.python = _python(s, where, out.notes)
        elif s.name == "pip":  # only there to carry the pip: section
            pass
        elif s.name in cuda["meta"] or s.name in cuda["components"]:
            reqs += _cuda_wheels(s, major, cuda, where, out.notes)
        elif _matches(s.name, conda_only["names"], conda_only["globs"]):
            missing.append(s.name)
        elif _matches(s.name, provided["names"], provided["globs"]):
            skipped.append(s.name)
        else:
            reqs.append(rename.get(s.name, s.name) + s.specifier)
    if missing:
        raise ConfigError(
            f"{where}: conda-only packages with no PyPI equivalent: {', '.join(missing)}",
            "install them as Debian packages ([tool.gpuship] system-packages) or remove them from the file",
        )
    if skipped:
        out.notes.append(
            f"{where}: skipped {', '.join(skipped)} (libraries the PyPI wheels bundle, or the base image provides)"
        )
    out.requirements = _dedupe(reqs)
    return out


def _read_environment(path: Path) -> tuple[CondaTranslation, list[CondaSpec]]:
    """The file's name and ``pip:`` lines (in a translation to fill in), and its conda specs."""
    where = path.name
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}".splitlines()[0], "fix the file") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{where} must be a mapping with a 'dependencies' list")
    deps = doc.get("dependencies") or []
    if not isinstance(deps, list):
        raise ConfigError(f"{where}: 'dependencies' must be a list")
    out = CondaTranslation(name=str(doc.get("name") or ""))
    specs: list[CondaSpec] = []
    for item in deps:
        if isinstance(item, dict):
            if set(item) != {"pip"} or not isinstance(item["pip"], list):
                raise ConfigError(f"{where}: only a 'pip:' list may appear as a mapping under dependencies")
            out.pip_lines += [str(x).strip() for x in item["pip"] if str(x).strip()]
            continue
        if isinstance(item, (int, float)):
            item = str(item)
        if not isinstance(item, str):
            raise ConfigError(f"{where}: unexpected dependency entry {item!r}")
        specs.append(parse_conda_spec(item, where=where))
    return out, specs


def _cuda_major(specs: list[CondaSpec], cuda: Mapping[str, Any], where: str) -> tuple[int, str]:
    """The CUDA major (from any versioned CUDA meta package, wherever it sits in the list) and the version asked."""
    majors = {
        m
        for s in specs
        if s.name in cuda["meta"] and (m := _major_of(s.version) or cuda["meta"][s.name].get("default"))
    }
    if len(majors) > 1:
        raise ConfigError(f"{where} asks for several CUDA majors ({', '.join(map(str, sorted(majors)))})", "keep one")
    major = majors.pop() if majors else int(cuda["default-major"])
    versions = [s.version for s in specs if s.name in cuda["meta"] and s.version]
    asked = versions[0] if versions else (str(major) if any(s.name in cuda["meta"] for s in specs) else "")
    return major, asked


def _python(s: CondaSpec, where: str, notes: list[str]) -> str:
    """The Python specifier: an exported env pins the patch level; the base's Python is Debian's: the minor only."""
    m = re.match(r"^==(\d+)\.(\d+)\.\d+", s.specifier)
    if not m:
        return s.specifier
    notes.append(
        f"{where}: {s.raw} is checked as Python {m.group(1)}.{m.group(2)} (the base's patch level is Debian's)"
    )
    return f"=={m.group(1)}.{m.group(2)}.*"


def _cuda_wheels(s: CondaSpec, major: int, cuda: Mapping[str, Any], where: str, notes: list[str]) -> list[str]:
    """The PyPI nvidia wheels of a CUDA meta package (a whole set) or of one CUDA component, for ``major``."""
    if s.name in cuda["meta"]:
        target_set = cuda["meta"][s.name]["set"]
        if not target_set:
            return []
        names: list[str] | None = cuda["sets"].get(str(major), {}).get(target_set)
        if names is None:
            raise ConfigError(
                f"{where}: no PyPI CUDA wheels are known for CUDA {major} ({s.raw})", "use CUDA 11, 12 or 13"
            )
        notes.append(
            f"{s.raw} -> {len(names)} nvidia CUDA {major} wheels (the newest of the major: CUDA minor-version "
            f"compatibility keeps the driver floor of CUDA {major}.0)"
        )
        return list(names)
    per_major = cuda["components"][s.name]
    pypi = per_major.get(str(major))
    if pypi is None:
        raise ConfigError(
            f"{where}: {s.name} has no PyPI wheel for CUDA {major}", f"known for CUDA {', '.join(sorted(per_major))}"
        )
    return [pypi]


def _has_spec(req: str) -> bool:
    return bool(re.search(r"[=<>!~@;\[]", req))


def _dedupe(reqs: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for r in reqs:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out
