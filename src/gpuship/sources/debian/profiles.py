"""Base profiles: which Debian release, which Python, which packages make the base.

The package set is the smallest that gives a complete CPython: ``python3.X-minimal`` alone lacks ssl,
sqlite3, ctypes, lzma, bz2, uuid, decimal...; ``libpython3.X-stdlib`` brings those modules and their
libraries. There is no shell: programs run ``python3`` directly (add ``dash`` or ``bash`` through
``system-packages`` where an entrypoint needs one; ``/bin/sh`` then points at it).
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from ...errors import ConfigError


@dataclass(frozen=True)
class PythonInfo:
    """The interpreter a base carries: its version (``3.11`` or ``3.11.2``), its path inside the image, and its
    standard library's directory (when known)."""

    version: str
    executable: str
    stdlib: str = ""

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def tag(self) -> str:
        """The wheel tag of this interpreter (``cp311``)."""
        return "cp" + self.minor.replace(".", "")


@dataclass(frozen=True)
class Profile:
    """One base: a Debian codename, its Python, and the packages of each base layer."""

    name: str
    codename: str
    debian_version: str
    python_version: str
    architectures: tuple[str, ...]
    #: core userland and libraries (first layer; carries the merged-/usr links)
    core_packages: tuple[str, ...]
    #: the interpreter and its standard library (second layer)
    python_packages: tuple[str, ...]

    def python_info(self) -> PythonInfo:
        v = self.python_version
        return PythonInfo(v, f"/usr/bin/python{v}", f"/usr/lib/python{v}")


PROFILES: dict[str, Profile] = {
    "debian-bookworm": Profile(
        name="debian-bookworm",
        codename="bookworm",
        debian_version="12",
        python_version="3.11",
        architectures=("amd64", "arm64"),
        core_packages=("base-files", "netbase", "ca-certificates", "libc6", "zlib1g", "libssl3"),
        python_packages=("python3.11-minimal", "libpython3.11-stdlib"),
    ),
    "debian-trixie": Profile(
        name="debian-trixie",
        codename="trixie",
        debian_version="13",
        python_version="3.13",
        architectures=("amd64", "arm64"),
        core_packages=("base-files", "netbase", "ca-certificates", "libc6", "zlib1g", "libssl3t64"),
        python_packages=("python3.13-minimal", "libpython3.13-stdlib"),
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown Debian base profile {name!r}", f"use one of: {', '.join(sorted(PROFILES))}"
        ) from None


def pythons() -> str:
    """Which Python each profile gives: ``debian-bookworm: 3.11, debian-trixie: 3.13``."""
    return ", ".join(f"{p.name}: {p.python_version}" for p in PROFILES.values())


def way_to_python(spec: str) -> str:
    """The base that gives a Python ``spec`` admits (``==3.12.*``, ``>=3.12``): a profile when one has it, else a
    registry base (``python:3.12-slim``); with every profile's Python, for hints."""
    try:
        wanted = SpecifierSet(spec if spec[:1] in "<>=!~" else f"=={spec}.*")
    except InvalidSpecifier:
        return f"the bases' Pythons: {pythons()}; another Python: a registry base such as python:3.12-slim"
    for p in PROFILES.values():
        if wanted.contains(p.python_version, prereleases=True):
            return f'base = "{p.name}" (Python {p.python_version}; {pythons()})'
    for minor in ("3.12", "3.10", "3.14", "3.9"):
        if wanted.contains(minor, prereleases=True):
            return f'a registry base with that Python: base = "python:{minor}-slim" ({pythons()})'
    return f"the bases' Pythons: {pythons()}; another Python: a registry base such as python:3.12-slim"
