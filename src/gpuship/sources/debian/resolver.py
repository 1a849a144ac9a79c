"""Dependency resolution for a set of Debian packages on one architecture.

The rules, apt's where they matter for a container and simpler where they do not:

* ``Pre-Depends`` and ``Depends`` are followed; ``Recommends``/``Suggests`` are not (``--no-install-recommends``).
* Each package has one candidate: the newest version in the merged suites (:class:`PackageIndex`).
* An OR group is satisfied by anything already chosen; else its first alternative that a real package
  satisfies (name and version); else the first one a package ``Provides`` (versioned where asked). Among
  several providers, one already chosen wins, else the lowest by (priority, name): deterministic.
* Essential packages are not added implicitly; they come in only where a dependency names them.
* Dependencies that only maintainer scripts use (:data:`SCRIPT_ONLY`: debconf, dpkg, perl for scripts...)
  are not installed: gpuship runs no maintainer scripts. Each one skipped is reported.
* ``Conflicts``/``Breaks`` between chosen packages are an error.

A dependency that cannot be satisfied is a :class:`ResolveError` naming the chain that needs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from debian import deb822
from debian.debian_support import Version

from ...errors import ResolveError
from .index import Candidate, PackageIndex

#: Dependencies that exist for maintainer scripts (which gpuship never runs), not for the programs.
SCRIPT_ONLY = frozenset(
    {
        "debconf",
        "debconf-2.0",
        "cdebconf",
        "dpkg",
        "install-info",
        "init-system-helpers",
        "adduser",
        "ucf",
        "lsb-base",
        "sysvinit-utils",
        "sensible-utils",
        "usrmerge",
        "usr-is-merged",
        "systemd-sysv",
    }
)
#: Per-package script-only dependencies: base-files needs awk only in its postinst;
#: ca-certificates needs openssl only for update-ca-certificates, whose work gpuship does itself.
SCRIPT_ONLY_FOR = {
    "base-files": frozenset({"awk", "mawk", "gawk", "original-awk"}),
    "ca-certificates": frozenset({"openssl"}),
}

PRIORITY_RANK = {"required": 0, "important": 1, "standard": 2, "optional": 3, "extra": 4}

_OPS = {
    "<<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    "=": lambda c: c == 0,
    ">=": lambda c: c >= 0,
    ">>": lambda c: c > 0,
}


def version_satisfies(have: str | None, constraint: tuple[str, str] | None) -> bool:
    """``have`` (None: an unversioned Provides) meets ``(op, version)``?"""
    if constraint is None:
        return True
    if have is None:
        return False
    op, want = constraint
    a, b = Version(have), Version(want)
    cmp = (a > b) - (a < b)
    return _OPS[op](cmp)


def format_alt(alt: Mapping) -> str:
    v = alt.get("version")
    return f"{alt['name']} ({v[0]} {v[1]})" if v else str(alt["name"])


def format_group(group: Sequence[Mapping]) -> str:
    return " | ".join(format_alt(a) for a in group)


_REQ = re.compile(
    r"^\s*([a-z0-9][a-z0-9+.\-]+)(?::[a-z0-9]+)?\s*(?:(=|>=|<=|>>|<<)\s*([^\s]+)|\(\s*(=|>=|<=|>>|<<)\s*([^)\s]+)\s*\))?\s*$"
)


def parse_request(text: str) -> dict:
    """A requested package: ``name``, ``name=version`` (apt's pin syntax) or ``name (>= version)``."""
    m = _REQ.match(text)
    if not m:
        raise ResolveError(
            f"{text!r} is not a Debian package name", "write a package as name, name=version or 'name (>= version)'"
        )
    name = m.group(1)
    if m.group(2):
        return {"name": name, "version": (m.group(2), m.group(3))}
    if m.group(4):
        return {"name": name, "version": (m.group(4), m.group(5))}
    return {"name": name, "version": None}


@dataclass(frozen=True)
class Resolution:
    """What a resolution chose: the packages (sorted by name), why each one, and what it skipped."""

    packages: tuple[Candidate, ...]
    why: Mapping[str, str] = field(default_factory=dict)  # package -> "parent: dependency" (or "requested")
    skipped: tuple[tuple[str, str], ...] = ()  # (dependency, needed by) left out as script-only

    def names(self) -> list[str]:
        return [c.name for c in self.packages]

    def chain(self, name: str) -> list[str]:
        out, seen = [name], {name}
        while True:
            parent = self.why.get(out[-1], "requested").split(":", 1)[0]
            if parent == "requested" or parent in seen:
                return list(reversed(out))
            out.append(parent)
            seen.add(parent)


class _Resolver:
    def __init__(self, index: PackageIndex, installed: Mapping[str, Candidate], skip: frozenset[str]) -> None:
        self.index = index
        self.installed = dict(installed)
        self.chosen: dict[str, Candidate] = {}
        self.parent: dict[str, tuple[str, str]] = {}
        self.skip = skip
        self.skipped: list[tuple[str, str]] = []

    def all(self) -> dict[str, Candidate]:
        return {**self.installed, **self.chosen}

    def _chain(self, name: str) -> str:
        parts = [name]
        seen = {name}
        while parts[-1] in self.parent:
            p = self.parent[parts[-1]][0]
            if p == "requested" or p in seen:
                break
            parts.append(p)
            seen.add(p)
        return " -> ".join(reversed(parts))

    def satisfied(self, alt: Mapping) -> bool:
        have = self.all()
        name, ver = alt["name"], alt.get("version")
        c = have.get(name)
        if c is not None and version_satisfies(c.version, ver):
            return True
        for p in self.index.providers(name):
            if p.candidate.name in have and have[p.candidate.name].version == p.candidate.version:
                if version_satisfies(p.version, ver):
                    return True
        # an installed package from a lower layer may provide it too
        for c in self.installed.values():
            for group in c.relations("Provides"):
                for a in group:
                    provided = a.get("version")
                    if a["name"] == name and version_satisfies(provided[1] if provided else None, ver):
                        return True
        return False

    def pick(self, alt: Mapping) -> Candidate | None:
        name, ver = alt["name"], alt.get("version")
        c = self.index.get(name)
        if c is not None and version_satisfies(c.version, ver):
            return c
        provs = [p.candidate for p in self.index.providers(name) if version_satisfies(p.version, ver)]
        if not provs:
            return None
        provs.sort(key=lambda c: (PRIORITY_RANK.get(c.field("Priority"), 5), c.name))
        return provs[0]

    def why_not(self, alt: Mapping) -> str:
        name = alt["name"]
        c = self.index.get(name)
        if c is not None:
            return f"{self.index.label} has {name} {c.version}, not {format_alt(alt)}"
        if self.index.providers(name):
            return f"no provider of {name} in {self.index.label} matches {format_alt(alt)}"
        return f"{self.index.label} has no package {name}"

    def add(self, c: Candidate, parent: str, dep: str) -> bool:
        have = self.all().get(c.name)
        if have is not None:
            return False
        self.chosen[c.name] = c
        self.parent[c.name] = (parent, dep)
        return True

    def run(self, requests: Sequence[str]) -> None:
        queue: list[Candidate] = []
        for text in requests:
            req = parse_request(text)
            name = req["name"]
            have = self.all().get(name)
            if have is not None:
                if not version_satisfies(have.version, req["version"]):
                    raise ResolveError(
                        f"{format_alt(req)} was requested but {name} {have.version} is already in the base",
                        "drop the version constraint or use a profile that has it",
                    )
                continue
            c = self.index.get(name)
            if c is None or not version_satisfies(c.version, req["version"]):
                provs = self.index.providers(name)
                if c is None and len(provs) == 1 and req["version"] is None:
                    c = provs[0].candidate
                else:
                    hint = (
                        f"it is a virtual package; name one of: {', '.join(p.candidate.name for p in provs[:8])}"
                        if provs and c is None
                        else "check the name and the suite (apt-cache policy NAME on a Debian host)"
                    )
                    raise ResolveError(f"cannot install {format_alt(req)}: {self.why_not(req)}", hint)
            if self.add(c, "requested", text):
                queue.append(c)
        while queue:
            cur = queue.pop(0)
            for field_name in ("Pre-Depends", "Depends"):
                for group in cur.relations(field_name):
                    group = [a for a in group if not a.get("arch")]  # binary packages carry no arch lists; be safe
                    if not group:
                        continue
                    if any(self.satisfied(a) for a in group):
                        continue
                    skip = self.skip | SCRIPT_ONLY_FOR.get(cur.name, frozenset())
                    if any(a["name"] in skip for a in group):
                        self.skipped.append((format_group(group), cur.name))
                        continue
                    choice = None
                    for a in group:
                        choice = self.pick(a)
                        if choice is not None:
                            break
                    if choice is None:
                        reasons = "; ".join(self.why_not(a) for a in group)
                        raise ResolveError(
                            f"cannot satisfy {format_group(group)} for {self._chain(cur.name)}: {reasons}",
                            "add a package that provides it to system-packages, or use another profile",
                        )
                    if choice.name in self.all():
                        have = self.all()[choice.name]
                        raise ResolveError(
                            f"cannot satisfy {format_group(group)} for {self._chain(cur.name)}: "
                            f"{have.name} {have.version} is already chosen",
                            "the suites mix incompatible versions; refresh the indexes (GPUSHIP_DEBIAN_INDEX_TTL=0)",
                        )
                    self.add(choice, cur.name, format_group(group))
                    queue.append(choice)

    def check_conflicts(self) -> None:
        have = self.all()
        for c in sorted(self.chosen.values(), key=lambda c: c.name):
            for field_name in ("Conflicts", "Breaks"):
                for group in c.relations(field_name):
                    for alt in group:
                        other = have.get(alt["name"])
                        if (
                            other is not None
                            and other.name != c.name
                            and version_satisfies(other.version, alt.get("version"))
                        ):
                            raise ResolveError(
                                f"{c.name} {c.version} {field_name.lower()} {format_alt(alt)}, and both are needed "
                                f"({self._chain(c.name)}; {self._chain(other.name)})",
                                "leave one of them out of system-packages",
                            )


def resolve(
    index: PackageIndex,
    requests: Sequence[str],
    *,
    installed: Iterable[Candidate] = (),
    skip: Iterable[str] = SCRIPT_ONLY,
) -> Resolution:
    """Choose the packages ``requests`` need on top of ``installed`` (which are never chosen again)."""
    r = _Resolver(index, {c.name: c for c in installed}, frozenset(skip))
    r.run(requests)
    r.check_conflicts()
    why = {name: (f"{p}: {d}" if p != "requested" else "requested") for name, (p, d) in r.parent.items()}
    return Resolution(tuple(sorted(r.chosen.values(), key=lambda c: c.name)), why, tuple(r.skipped))


def relation_names(text: str) -> set[str]:
    return {a["name"] for g in deb822.PkgRelation.parse_relations(text) for a in g}
