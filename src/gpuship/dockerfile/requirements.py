"""``gpuship.lock`` as a hash-pinned requirements file that ``uv pip install --require-hashes --no-deps`` takes.

One line per package and version: ``name==version --hash=sha256:...``, with the hash of the locked file of every
platform that has that version (so one file serves a multi-platform ``docker buildx`` build: the installer picks
the file whose hash is listed). A package whose version differs between platforms, or that only one platform
has, gets a ``platform_machine`` marker. Index options come first, as requirement files allow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..oci import Platform
from ..sources.python import Lock

REQUIREMENTS_NAME = "requirements.lock.txt"
HEADER = "# Written by `gpuship dockerfile` from gpuship.lock: do not edit (run `gpuship dockerfile` again)."


@dataclass(frozen=True)
class RequirementLine:
    name: str
    version: str
    hashes: tuple[str, ...]
    machines: tuple[str, ...]  # uname -m of the platforms this line is for; () = every platform
    sdist: bool = False

    def render(self) -> str:
        line = f"{self.name}=={self.version}"
        if self.machines:
            marker = " or ".join(f"platform_machine == '{m}'" for m in self.machines)
            line += f" ; {marker}"
        return line + "".join(f" --hash=sha256:{h}" for h in self.hashes)


def requirement_lines(lock: Lock, platforms: Sequence[Platform]) -> list[RequirementLine]:
    """The lines for ``platforms`` (each must be in the lock), sorted by package name."""
    if not platforms:
        raise ConfigError("no platform to export requirements for", "give at least one, e.g. linux/amd64")
    # (key, version) -> {machine: (sha, sdist)}
    seen: dict[tuple[str, str], dict[str, tuple[str, bool]]] = {}
    names: dict[str, str] = {}
    for plat in platforms:
        for p in lock.packages(plat):
            names.setdefault(p.key, p.name)
            seen.setdefault((p.key, p.version), {})[plat.machine] = (p.sha256, p.sdist)
    machines_all = sorted({p.machine for p in platforms})
    out: list[RequirementLine] = []
    for (key, version), per in sorted(seen.items()):
        machines = sorted(per)
        hashes = tuple(sorted({sha for sha, _ in per.values()}))
        out.append(
            RequirementLine(
                names[key],
                version,
                hashes,
                () if machines == machines_all else tuple(machines),
                sdist=any(s for _, s in per.values()),
            )
        )
    return out


def render_requirements(lock: Lock, platforms: Sequence[Platform], index_options: Sequence[str] = ()) -> str:
    """The text of ``requirements.lock.txt``."""
    lines = requirement_lines(lock, platforms)
    plats = ", ".join(str(p) for p in platforms)
    text = [
        HEADER,
        f"# Python {lock.python}, glibc {lock.glibc}; platforms: {plats}; {len(lines)} package{'s' if len(lines) != 1 else ''}.",
    ]
    text += list(index_options)
    text += [ln.render() for ln in lines]
    return "\n".join(text) + "\n"


def has_sdists(lock: Lock, platforms: Sequence[Platform]) -> bool:
    """Whether any locked package is a source distribution (the builder then needs a compiler)."""
    return any(p.sdist for plat in platforms for p in lock.packages(plat))
