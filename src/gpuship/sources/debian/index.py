"""Binary package indexes: the ``Packages`` records a resolution needs, merged across suites.

The full ``Packages`` file of Debian main is ~50 MB of text; gpuship keeps only the fields it uses
(:data:`KEPT_FIELDS`) in a compact JSON blob cached by the index's own SHA256, so it is parsed once.
Suites merge by version: ``bookworm-updates`` and ``bookworm-security`` override ``bookworm`` where they
carry a newer version of a package (apt's candidate rule with equal pins).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import IO

from debian import deb822
from debian.debian_support import Version

#: The fields of a Packages record a resolution and a fetch need.
KEPT_FIELDS = (
    "Package",
    "Version",
    "Architecture",
    "Multi-Arch",
    "Essential",
    "Priority",
    "Section",
    "Source",
    "Pre-Depends",
    "Depends",
    "Provides",
    "Conflicts",
    "Breaks",
    "Filename",
    "Size",
    "SHA256",
    "Installed-Size",
)


#: A kept field's name -> the one string object every record uses for it. With these, and the few-valued fields'
#: values shared, bookworm main's 63,000 records take 71 MB instead of 124 MB (a string per field per record).
_KEPT = {name: name for name in KEPT_FIELDS}
#: Fields with a few distinct values across the index: each value is stored once.
_FEW_VALUES = frozenset({"Architecture", "Multi-Arch", "Essential", "Priority", "Section"})


def reduce_packages(stream: IO[bytes]) -> list[dict[str, str]]:
    """Parse a ``Packages`` stream into records holding only :data:`KEPT_FIELDS`.

    The deb822 rules, read line by line (python-debian's parser took ten times as long on bookworm's 63,000
    packages, and a cold build reads them): paragraphs end at a blank line, ``Field: value`` starts a field (the
    value stripped), a line starting with a space or tab continues the last field (kept on its own line)."""
    out: list[dict[str, str]] = []
    rec: dict[str, str] = {}
    field: str | None = None
    values: dict[str, str] = {}  # one string object per value of the _FEW_VALUES fields
    for line in io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n"):
        line = line.rstrip("\n")
        if not line.strip():
            if "Package" in rec and "Version" in rec and "Filename" in rec:
                out.append(rec)
            rec, field = {}, None
        elif line[0] in " \t":
            if field is not None:
                rec[field] += "\n" + line
        else:
            name, sep, value = line.partition(":")
            field = _KEPT.get(name) if sep else None
            if field is not None:
                value = value.strip()
                rec[field] = values.setdefault(value, value) if field in _FEW_VALUES else value
    if "Package" in rec and "Version" in rec and "Filename" in rec:
        out.append(rec)
    return out


def dump_records(records: list[dict[str, str]]) -> bytes:
    return json.dumps(records, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Candidate:
    """One binary package the mirror offers, and where it came from."""

    name: str
    version: str
    arch: str
    filename: str
    sha256: str
    size: int
    uri: str  # the archive root the Filename is relative to
    suite: str
    fields: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_record(cls, rec: dict[str, str], uri: str, suite: str) -> Candidate:
        return cls(
            rec["Package"],
            rec["Version"],
            rec.get("Architecture", "all"),
            rec["Filename"],
            rec.get("SHA256", ""),
            int(rec.get("Size", "0") or 0),
            uri,
            suite,
            tuple(sorted(rec.items())),
        )

    def field(self, name: str, default: str = "") -> str:
        for k, v in self.fields:
            if k == name:
                return v
        return default

    @cached_property
    def parsed_version(self) -> Version:
        return Version(self.version)

    @property
    def url(self) -> str:
        return f"{self.uri}/{self.filename}"

    @property
    def essential(self) -> bool:
        return self.field("Essential").lower() == "yes"

    @property
    def multi_arch_same(self) -> bool:
        return self.field("Multi-Arch") == "same"

    def relations(self, name: str) -> list[list[deb822.PkgRelation.ParsedRelation]]:
        text = self.field(name)
        return deb822.PkgRelation.parse_relations(text) if text else []

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class Provided:
    """``candidate`` provides the virtual name, at ``version`` (None: unversioned Provides)."""

    candidate: Candidate
    version: str | None


class PackageIndex:
    """The merged view of several suites for one architecture: the newest version of each package wins.

    Built from raw records (``(uri, suite, records)`` per suite, in override order); :class:`Candidate`
    values are made on demand, so a 60 000-package index costs little until it is used.
    """

    def __init__(self, arch: str, suites: Iterable[tuple[str, str, list[dict[str, str]]]], label: str = "") -> None:
        self.arch = arch
        self.label = label or arch
        best: dict[str, tuple[dict[str, str], str, str]] = {}
        for uri, suite, records in suites:
            for rec in records:
                if rec.get("Architecture", "all") not in (arch, "all"):
                    continue
                name = rec["Package"]
                prev = best.get(name)
                # later suites win on equal version (security over updates over main, as listed)
                if prev is None or Version(rec["Version"]) >= Version(prev[0]["Version"]):
                    best[name] = (rec, uri, suite)
        self._raw = best
        self._made: dict[str, Candidate] = {}
        self._provides: dict[str, list[Provided]] | None = None

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, name: str) -> bool:
        return name in self._raw

    def names(self) -> list[str]:
        return sorted(self._raw)

    def get(self, name: str) -> Candidate | None:
        c = self._made.get(name)
        if c is None:
            raw = self._raw.get(name)
            if raw is None:
                return None
            c = self._made[name] = Candidate.from_record(*raw)
        return c

    def providers(self, name: str) -> list[Provided]:
        """Packages whose ``Provides`` names ``name``, sorted by package name (deterministic)."""
        if self._provides is None:
            prov: dict[str, list[Provided]] = {}
            for pkg, (rec, _, _) in self._raw.items():
                text = rec.get("Provides")
                if not text:
                    continue
                for group in deb822.PkgRelation.parse_relations(text):
                    for alt in group:
                        v = alt.get("version")
                        prov.setdefault(alt["name"], []).append(Provided(self.get(pkg), v[1] if v else None))  # type: ignore[arg-type]  # get() is None only for names not in _raw
            for lst in prov.values():
                lst.sort(key=lambda p: p.candidate.name)
            self._provides = prov
        return self._provides.get(name, [])
