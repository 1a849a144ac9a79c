"""Slimming: the paths a container never needs, dropped while packages are unpacked, and the report of them.

Dropped (the rule names appear in the report):

* ``docs``: ``/usr/share/doc`` except each package's ``copyright`` file (licences must stay);
* ``man``, ``info``, ``lintian``: manual pages, info pages, lintian overrides;
* ``locales``: message catalogs (``/usr/share/locale``) and compiled locales except C.UTF-8;
* ``python-stdlib``: the CPython test suite and the parts a server never runs: ``test``, ``idlelib``,
  ``tkinter``, ``turtledemo``, ``ensurepip``, ``lib2to3``, ``pydoc_data``, and ``test``/``tests`` folders
  inside the standard library, where a package ships them.

The rules look at a path as it ends up in the image (after the merged-/usr rewrite). They are part of every
layer's cache key through :data:`SLIM_VERSION`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Bump whenever a rule changes: cached layers then rebuild.
SLIM_VERSION = "1"

PYTHON_DROPPED_TOP = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data")

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("man", re.compile(r"^usr/share/man(/|$)")),
    ("info", re.compile(r"^usr/share/info(/|$)")),
    ("lintian", re.compile(r"^usr/share/(lintian|linda)(/|$)")),
    ("locales", re.compile(r"^usr/share/locale(/|$)")),
    ("locales", re.compile(r"^usr/lib/locale/(?!C\.utf8(/|$)|C\.UTF-8(/|$)).+")),
    ("python-stdlib", re.compile(r"^usr/lib/python3\.\d+/(" + "|".join(PYTHON_DROPPED_TOP) + r")(/|$)")),
    ("python-stdlib", re.compile(r"^usr/lib/python3\.\d+/(?!site-packages/|dist-packages/)(.+/)?(test|tests)(/|$)")),
)
_DOC = re.compile(r"^usr/share/doc/(.+)$")


def drop_rule(path: str, kind: str = "file") -> str | None:
    """The rule that drops ``path`` (an image path, no leading slash), or None to keep it."""
    m = _DOC.match(path)
    if m:
        rest = m.group(1)
        if "/" not in rest:
            return None  # the package's doc folder itself (or a symlink to another package's)
        if rest.split("/", 1)[1] == "copyright":
            return None
        return "docs"
    for name, rx in _RULES:
        if rx.match(path):
            return name
    return None


@dataclass(frozen=True)
class Dropped:
    path: str
    size: int
    rule: str
    package: str


@dataclass(frozen=True)
class SlimReport:
    """What slimming took out of the base: every dropped file, and totals by rule."""

    dropped: tuple[Dropped, ...] = ()
    by_rule: dict[str, tuple[int, int]] = field(default_factory=dict)  # rule -> (files, bytes)

    @classmethod
    def of(cls, items: Iterable[Dropped]) -> SlimReport:
        lst = tuple(sorted(items, key=lambda d: d.path))
        totals: dict[str, tuple[int, int]] = {}
        for d in lst:
            n, b = totals.get(d.rule, (0, 0))
            totals[d.rule] = (n + 1, b + d.size)
        return cls(lst, dict(sorted(totals.items())))

    @property
    def files(self) -> int:
        return len(self.dropped)

    def to_record(self) -> list[tuple[str, int, str, str]]:
        """Every dropped file (path, size, rule, package), for the cache (:meth:`from_record` reads it back)."""
        return [(d.path, d.size, d.rule, d.package) for d in self.dropped]

    @classmethod
    def from_record(cls, rec: Iterable[tuple[str, int, str, str]]) -> SlimReport:
        return cls.of(Dropped(str(p), int(n), str(r), str(pkg)) for p, n, r, pkg in rec)

    @property
    def bytes(self) -> int:
        return sum(d.size for d in self.dropped)

    def to_json(self) -> dict:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "by_rule": {k: {"files": n, "bytes": b} for k, (n, b) in self.by_rule.items()},
            "dropped": [
                {"path": "/" + d.path, "bytes": d.size, "rule": d.rule, "package": d.package} for d in self.dropped
            ],
        }

    def summary(self) -> str:
        parts = [f"{k} {n} files {b / 1e6:.1f} MB" for k, (n, b) in self.by_rule.items()]
        return (
            f"dropped {self.files} files ({self.bytes / 1e6:.1f} MB): " + ", ".join(parts)
            if parts
            else "dropped nothing"
        )
