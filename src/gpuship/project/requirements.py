"""``requirements*.txt`` files (and a conda ``pip:`` section, which has the same syntax).

Every requirement line becomes one PEP 508 string in :attr:`ProjectInputs.requirements`, so the CUDA planner
can see and rewrite it like any other. Everything else is handed to uv as written: ``-c`` files as constraint
files, and pip's global options (``--index-url``, ``--extra-index-url``, ``--find-links``, ``--no-index``,
``--pre``, ``--only-binary``, ...) as option lines uv reads itself. ``-r`` files are followed, each once, and
every file read is an input of the lock. ``--hash`` values are kept per package: the lock refuses a wheel whose
hash is not among them (pip's hash-checking mode).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..errors import ConfigError

#: pip options that take a value, by every spelling, and what they mean.
_OPTION_WITH_VALUE = {
    "-r": "requirement",
    "--requirement": "requirement",
    "-c": "constraint",
    "--constraint": "constraint",
    "-i": "index-url",
    "--index-url": "index-url",
    "--extra-index-url": "extra-index-url",
    "-f": "find-links",
    "--find-links": "find-links",
    "-e": "editable",
    "--editable": "editable",
}

_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass
class RequirementScan:
    """What requirement lines hold. Paths are absolute."""

    requirements: list[str] = field(default_factory=list)
    requirement_files: list[Path] = field(default_factory=list)
    constraint_files: list[Path] = field(default_factory=list)
    option_lines: list[str] = field(default_factory=list)
    index_url: str = ""
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    hashes: dict[str, list[str]] = field(default_factory=dict)
    self_references: list[str] = field(default_factory=list)  # "-e ." / "." : the project itself


def logical_lines(text: str) -> list[str]:
    """Join ``\\`` continuations and strip comments (pip's rule: ``#`` at the start or after whitespace)."""
    out: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            out.append(buf.strip())
        buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def split_option(line: str) -> tuple[str, str] | None:
    """``("requirement", "base.txt")`` for ``-r base.txt``, ``-rbase.txt``, ``--requirement=base.txt``."""
    for opt, kind in _OPTION_WITH_VALUE.items():
        if line == opt:
            return kind, ""
        if line.startswith((opt + " ", opt + "=", opt + "\t")):
            return kind, line[len(opt) + 1 :].strip()
        if len(opt) == 2 and line.startswith(opt) and not line.startswith(opt + "-"):
            return kind, line[2:].strip()
    return None


def _first_token(value: str) -> str:
    try:
        toks = shlex.split(value)
    except ValueError:
        toks = value.split()
    return toks[0] if toks else ""


def _local(value: str, base: Path) -> Path | None:
    """A local path (relative to ``base``), or None for a URL."""
    if _URL_RE.match(value) and not value.startswith("file:"):
        return None
    value = re.sub(r"^file://", "", value).removeprefix("file:")
    return (base / value).resolve()


class RequirementReader:
    """Reads requirement lines from files and lists into one :class:`RequirementScan`."""

    def __init__(self, project_root: Path) -> None:
        self.root = project_root.resolve()
        self.scan = RequirementScan()
        self._seen: set[Path] = set()

    def read_file(self, path: Path, *, constraint: bool = False) -> None:
        path = path.resolve()
        if path in self._seen:
            return
        self._seen.add(path)
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise ConfigError(
                f"requirements file {self._show(path)} does not exist", "fix the -r/-c line that names it"
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"requirements file {self._show(path)} is not UTF-8 text") from exc
        if constraint:
            self.scan.constraint_files.append(path)
            return  # handed to uv as a constraint file; it reads it (options included)
        self.scan.requirement_files.append(path)
        self.read_lines(logical_lines(text), base=path.parent, where=self._show(path))

    def read_lines(self, lines: Iterable[str], *, base: Path, where: str) -> None:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            opt = split_option(line)
            if opt is not None:
                self._option(opt[0], _first_token(opt[1]), base=base, where=where)
            elif line.startswith("-"):
                self._global_option(line, base=base)
            else:
                self._requirement(line, base=base, where=where)

    # -- internals -----------------------------------------------------------------------------------
    def _show(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def _option(self, kind: str, value: str, *, base: Path, where: str) -> None:
        if not value:
            raise ConfigError(f"{where}: option {kind} needs a value")
        if kind in ("requirement", "constraint"):
            ref = _local(value, base)
            if ref is None:
                raise ConfigError(
                    f"{where}: -r/-c with a URL ({value}) is not supported", "download the file into the project"
                )
            self.read_file(ref, constraint=kind == "constraint")
        elif kind == "index-url":
            self.scan.index_url = value
            self.scan.option_lines.append(f"--index-url {value}")
        elif kind == "extra-index-url":
            if value not in self.scan.extra_index_urls:
                self.scan.extra_index_urls.append(value)
                self.scan.option_lines.append(f"--extra-index-url {value}")
        elif kind == "find-links":
            local = _local(value, base)
            target = str(local) if local is not None else value
            if target not in self.scan.find_links:
                self.scan.find_links.append(target)
                self.scan.option_lines.append(f"--find-links {target}")
        elif kind == "editable":
            self._requirement(value, base=base, where=where, editable=True)

    def _global_option(self, line: str, *, base: Path) -> None:
        if line.startswith("--no-index"):
            self.scan.no_index = True
        if line not in self.scan.option_lines:
            self.scan.option_lines.append(line)

    def _requirement(self, line: str, *, base: Path, where: str, editable: bool = False) -> None:
        # "name==1.0 --hash=sha256:... --hash sha256:..." : per-requirement options follow the requirement
        body, _, opts = line.partition(" --")
        body = body.strip()
        opts = "--" + opts if opts else ""
        hashes = re.findall(r"--hash[=\s]+sha256:([0-9a-fA-F]{64})", opts)
        if body.startswith((".", "/", "file:")) or (editable and not _URL_RE.match(body)):
            path = _local(body.split(";")[0].strip(), base)
            if path is not None and path == self.root:
                self.scan.self_references.append(body)
                return
            raise ConfigError(
                f"{where}: local path requirement {body!r} is not supported",
                "build a wheel of it (uv build) and name its folder with --find-links",
            )
        try:
            req = Requirement(body)
        except InvalidRequirement as exc:
            raise ConfigError(f"{where}: invalid requirement {body!r}: {exc}") from exc
        if req.url and req.url.startswith("file:"):
            path = _local(req.url, base)
            if path == self.root:
                self.scan.self_references.append(body)
                return
            raise ConfigError(
                f"{where}: local path requirement {body!r} is not supported", "build a wheel and use --find-links"
            )
        if hashes:
            self.scan.hashes.setdefault(canonicalize_name(req.name), []).extend(h.lower() for h in hashes)
        if body not in self.scan.requirements:
            self.scan.requirements.append(body)
