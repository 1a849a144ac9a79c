"""Target platforms as Python packaging sees them: uv's ``--python-platform`` names and wheel tags.

A platform is an OCI platform (``linux/amd64``) plus the base's glibc (Debian bookworm: 2.36) and Python
(3.11). Wheel choice follows the tag priority of pip/uv: the most specific tag the target supports wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from ...errors import ConfigError
from ...oci import Platform

#: Debian bookworm's glibc; the default when the base does not say.
DEFAULT_GLIBC = "2.36"
#: The newest manylinux level uv names in ``--python-platform``; a newer glibc still runs these wheels.
UV_MAX_GLIBC = (2, 40)
#: manylinux aliases (PEP 600): legacy name -> glibc level
_LEGACY = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
_MIN_GLIBC = {"x86_64": 5, "aarch64": 17}


def machine(platform: Platform) -> str:
    m = platform.machine
    if m not in _MIN_GLIBC:
        raise ConfigError(f"no Python wheels target {platform}", "use linux/amd64 or linux/arm64")
    return m


def parse_glibc(glibc: str) -> tuple[int, int]:
    m = re.match(r"^(\d+)\.(\d+)", glibc)
    if not m:
        raise ConfigError(f"glibc version {glibc!r} is not MAJOR.MINOR")
    return int(m.group(1)), int(m.group(2))


def python_minor(version: str) -> str:
    """``3.11.2`` -> ``3.11``."""
    m = re.match(r"^(\d+)\.(\d+)", version.strip())
    if not m:
        raise ConfigError(f"Python version {version!r} is not MAJOR.MINOR", "e.g. 3.11")
    return f"{m.group(1)}.{m.group(2)}"


def uv_platform(platform: Platform, glibc: str = DEFAULT_GLIBC) -> str:
    """uv's ``--python-platform`` for a target: ``x86_64-manylinux_2_36``."""
    major, minor = min(parse_glibc(glibc), UV_MAX_GLIBC)
    return f"{machine(platform)}-manylinux_{major}_{minor}"


def platform_tags(platform: Platform, glibc: str = DEFAULT_GLIBC) -> list[str]:
    """``manylinux_2_36_x86_64``, ..., ``manylinux2014_x86_64``, ..., newest first."""
    arch = machine(platform)
    major, minor = parse_glibc(glibc)
    out: list[str] = []
    for m in range(minor, _MIN_GLIBC[arch] - 1, -1):
        out.append(f"manylinux_{major}_{m}_{arch}")
        legacy = _LEGACY.get((major, m))
        if legacy is not None:
            out.append(f"{legacy}_{arch}")
    return out


@lru_cache(maxsize=32)
def supported_tags(platform: Platform, python_version: str, glibc: str = DEFAULT_GLIBC) -> dict[Tag, int]:
    """Tag -> priority (0 is best) for CPython ``python_version`` on ``platform``."""
    major, minor = (int(x) for x in python_minor(python_version).split("."))
    plats = platform_tags(platform, glibc)
    tags = list(cpython_tags((major, minor), abis=[f"cp{major}{minor}"], platforms=plats))
    tags += list(compatible_tags((major, minor), f"cp{major}{minor}", plats))
    order: dict[Tag, int] = {}
    for i, t in enumerate(tags):
        order.setdefault(t, i)
    return order


def wheel_priority(filename: str, tags: dict[Tag, int]) -> int | None:
    """The best priority of a wheel's tags on the target, or None if it does not install there."""
    try:
        _, _, _, wtags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    found = [tags[t] for t in wtags if t in tags]
    return min(found) if found else None


def best_wheel(filenames: Sequence[str], tags: dict[Tag, int]) -> int | None:
    """Index of the best wheel for the target among ``filenames``, or None."""
    best: tuple[int, int] | None = None
    for i, name in enumerate(filenames):
        prio = wheel_priority(name, tags)
        if prio is not None and (best is None or prio < best[0]):
            best = (prio, i)
    return best[1] if best else None


def is_pure(filename: str) -> bool:
    """A wheel that runs on any platform (``py3-none-any``, ``cp311-abi3-any`` ...)."""
    try:
        _, _, _, wtags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    return all(t.platform == "any" for t in wtags)


def platforms_text(platforms: Iterable[Platform]) -> str:
    return ", ".join(str(p) for p in platforms)
