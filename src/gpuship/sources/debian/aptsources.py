"""Where the Debian archive is: the host's apt sources, or a mirror the user configured.

No mirror host is written into gpuship. The archive URIs come from, in order:

1. an explicit ``mirror`` (``[tool.gpuship.debian] mirror`` or ``GPUSHIP_DEBIAN_MIRROR``), and for the
   security archive ``security-mirror`` / ``GPUSHIP_DEBIAN_SECURITY_MIRROR`` (``""`` or ``none``: no security
   suite), else the host's security source;
2. the host's apt sources: deb822 ``*.sources`` and one-line ``*.list`` files under ``/etc/apt``.

A profile asks for a codename (``bookworm``, ``trixie``); the suites are derived from the same URIs by
replacing the host's codename: ``bookworm-updates`` on the host gives ``trixie-updates`` for trixie.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from debian import deb822

from ...errors import ConfigError

#: Debian codenames gpuship recognises in apt sources (to tell Debian's archive from third-party ones).
KNOWN_CODENAMES = ("buster", "bullseye", "bookworm", "trixie", "forky", "duke")
#: The suite kinds a base is built from, in the order they override each other (later wins on equal version).
SUITE_KINDS = ("", "-updates", "-security")
DEFAULT_COMPONENTS = ("main",)


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` source as apt has it: a URI, its suites and components, and the file it came from."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    origin: str = ""


@dataclass(frozen=True, order=True)
class Suite:
    """One suite of one archive: ``Suite("http://mirror/debian", "bookworm-updates", ("main",))``."""

    uri: str
    name: str
    components: tuple[str, ...] = DEFAULT_COMPONENTS

    @property
    def dists_url(self) -> str:
        return f"{self.uri}/dists/{self.name}"

    def __str__(self) -> str:
        return f"{self.uri} {self.name}"


def _clean_uri(uri: str) -> str:
    return uri.strip().rstrip("/")


def parse_one_line(text: str, origin: str = "") -> list[AptSource]:
    """``deb [opts] URI SUITE COMPONENT...`` lines (``deb-src`` and comments are skipped)."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # options such as [arch=amd64 signed-by=...]
        parts = line.split()
        if len(parts) < 3 or parts[0] != "deb":
            continue
        out.append(AptSource(_clean_uri(parts[1]), (parts[2],), tuple(parts[3:]) or DEFAULT_COMPONENTS, origin))
    return out


def parse_deb822(text: str, origin: str = "") -> list[AptSource]:
    """deb822 ``.sources`` stanzas (``Types: deb``; ``Enabled: no`` skipped)."""
    out: list[AptSource] = []
    for para in deb822.Deb822.iter_paragraphs(text.splitlines(keepends=True)):
        if "deb" not in para.get("Types", "").split():
            continue
        if para.get("Enabled", "yes").strip().lower() == "no":
            continue
        comps = tuple(para.get("Components", "").split()) or DEFAULT_COMPONENTS
        for uri in para.get("URIs", "").split():
            out.append(AptSource(_clean_uri(uri), tuple(para.get("Suites", "").split()), comps, origin))
    return out


def read_host_sources(root: Path | str = "/etc/apt") -> list[AptSource]:
    """Every ``deb`` source the host's apt knows (``sources.list``, ``sources.list.d/*.list|*.sources``)."""
    root = Path(root)
    files: list[Path] = []
    if (root / "sources.list").is_file():
        files.append(root / "sources.list")
    d = root / "sources.list.d"
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources") and p.is_file())
    out: list[AptSource] = []
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        out += parse_deb822(text, str(f)) if f.suffix == ".sources" else parse_one_line(text, str(f))
    return out


def split_suite(suite: str) -> tuple[str, str] | None:
    """``bookworm-security`` -> ``("bookworm", "-security")``; None for a suite that is not a Debian codename's."""
    for kind in sorted(SUITE_KINDS, key=len, reverse=True):
        if kind and suite.endswith(kind):
            base = suite[: -len(kind)]
            return (base, kind) if base in KNOWN_CODENAMES else None
        if not kind and suite in KNOWN_CODENAMES:
            return suite, ""
    if suite.endswith("/updates") and suite[: -len("/updates")] in KNOWN_CODENAMES:  # pre-bullseye security
        return suite[: -len("/updates")], "-security"
    return None


def _none(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("", "none")


def suites_for(
    codename: str,
    *,
    mirror: str | None = None,
    security_mirror: str | None = None,
    sources: Sequence[AptSource] | None = None,
) -> tuple[Suite, ...]:
    """The suites a base for ``codename`` is built from (main, -updates, -security), in override order.

    ``mirror``/``security_mirror`` (else ``GPUSHIP_DEBIAN_MIRROR``/``GPUSHIP_DEBIAN_SECURITY_MIRROR``) win over
    the host's sources; ``sources`` defaults to the host's.
    """
    mirror = mirror if mirror is not None else os.environ.get("GPUSHIP_DEBIAN_MIRROR") or None
    if security_mirror is None:
        security_mirror = os.environ.get("GPUSHIP_DEBIAN_SECURITY_MIRROR")
    host = list(sources) if sources is not None else read_host_sources()
    by_kind: dict[str, list[tuple[str, tuple[str, ...]]]] = {k: [] for k in SUITE_KINDS}
    for src in host:
        for suite_name in src.suites:
            split = split_suite(suite_name)
            if split is None:
                continue
            entry = (src.uri, src.components)
            if entry not in by_kind[split[1]]:
                by_kind[split[1]].append(entry)
    if mirror:
        m = _clean_uri(mirror)
        by_kind[""] = [(m, DEFAULT_COMPONENTS)]
        by_kind["-updates"] = [(m, DEFAULT_COMPONENTS)]
    if security_mirror is not None:
        by_kind["-security"] = [] if _none(security_mirror) else [(_clean_uri(security_mirror), DEFAULT_COMPONENTS)]
    if not by_kind[""]:
        raise ConfigError(
            "no Debian mirror is configured: the host's apt sources (/etc/apt/sources.list.d) list no Debian suite",
            "set [tool.gpuship.debian] mirror or GPUSHIP_DEBIAN_MIRROR to your Debian mirror's URI",
        )
    suites: list[Suite] = []
    for kind in SUITE_KINDS:
        for uri, comps in by_kind[kind]:
            comps = (
                tuple(c for c in comps if c in ("main", "contrib", "non-free", "non-free-firmware"))
                or DEFAULT_COMPONENTS
            )
            if "main" not in comps:
                comps = ("main", *comps)
            s = Suite(uri, codename + kind, comps)
            if s not in suites:
                suites.append(s)
    return tuple(suites)


def describe(suites: Iterable[Suite]) -> str:
    return ", ".join(str(s) for s in suites)
