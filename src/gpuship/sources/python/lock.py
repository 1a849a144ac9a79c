"""``gpuship.lock``: the exact Python packages of the image, per target platform, resolved by uv.

One ``uv pip compile --python-platform <arch>-manylinux_<glibc> --python-version <base Python>`` per platform
(later platforms prefer the versions the first one chose, so they agree wherever the wheels allow). For each
package the lock records the exact version and the one file installed on that platform: the best wheel by tag
priority, with its URL, sha256 and size; a package with no wheel at all records its source distribution, which
is built on the build machine (fine for pure-Python results; a compiled result only for the build machine's
architecture).

The lock is reused while its input hash (the project's resolution inputs, the Python and glibc) is unchanged and
it covers the requested platforms; ``locked=True`` (CI) refuses to change it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any  # Any: lock tables (pylock.toml, uv.lock) as parsed, before their shape is checked

from packaging.utils import canonicalize_name

from ...cache import Cache
from ...errors import ConfigError, IntegrityError, ResolveError
from ...oci import Platform
from ...progress import NO_PROGRESS, Progress
from ...project import IndexOptions, ProjectInputs
from ...redact import strip_userinfo
from ...uv import UvFailed, run_uv
from ..debian.profiles import way_to_python
from .build import built_wheel
from .download import filename_of
from .platforms import (
    DEFAULT_GLIBC,
    best_wheel,
    python_minor,
    supported_tags,
    uv_platform,
)

LOCK_NAME = "gpuship.lock"
LOCK_FORMAT = 1


class NoWheelError(ResolveError):
    """A locked package has no file that installs on a target platform."""


@dataclass(frozen=True)
class LockedPackage:
    """One distribution on one platform: the exact file that gets installed."""

    name: str
    version: str
    filename: str
    url: str
    sha256: str
    size: int | None = None
    sdist: bool = False

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)


@dataclass(frozen=True)
class LockedTarget:
    platform: Platform
    python_platform: str
    packages: tuple[LockedPackage, ...]


@dataclass(frozen=True)
class Lock:
    """The parsed ``gpuship.lock``. ``reused`` says the file was up to date and left as it was."""

    path: Path
    python: str
    glibc: str
    input_hash: str
    targets: tuple[LockedTarget, ...]
    reused: bool = field(default=False, compare=False)

    @property
    def platforms(self) -> tuple[Platform, ...]:
        return tuple(t.platform for t in self.targets)

    def target(self, platform: Platform) -> LockedTarget:
        for t in self.targets:
            if t.platform == platform:
                return t
        raise ConfigError(
            f"{self.path.name} has no packages for {platform}",
            f"lock for it: build with --platform {platform} (without --locked)",
        )

    def packages(self, platform: Platform) -> tuple[LockedPackage, ...]:
        return self.target(platform).packages

    # -- the file ------------------------------------------------------------------------------------
    def dumps(self) -> str:
        """Human-readable TOML with a stable order: platforms sorted, packages sorted by name."""
        q = _toml_str
        lines = [
            "# gpuship.lock: the exact Python packages of this project's image, per platform.",
            "# Written by gpuship from the project's requirements; commit it. It is reused while the inputs are",
            "# unchanged; `gpuship build --locked` refuses to change it. Delete it to resolve again from scratch.",
            f"version = {LOCK_FORMAT}",
            f"python = {q(self.python)}",
            f"glibc = {q(self.glibc)}",
            f"inputs = {q(self.input_hash)}",
        ]
        for t in sorted(self.targets, key=lambda t: t.platform):
            lines += ["", "[[target]]", f"platform = {q(str(t.platform))}", f"python-platform = {q(t.python_platform)}"]
            for p in sorted(t.packages, key=lambda p: p.key):
                lines += [
                    "",
                    "[[target.package]]",
                    f"name = {q(p.name)}",
                    f"version = {q(p.version)}",
                    f"{'sdist' if p.sdist else 'wheel'} = {q(p.filename)}",
                    f"url = {q(p.url)}",
                    f"sha256 = {q(p.sha256)}",
                ]
                if p.size is not None:
                    lines.append(f"size = {p.size}")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Atomically (temp file + rename), so a failed build never leaves half a lock."""
        text = self.dumps()
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".gpuship.lock.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def read_lock(path: Path) -> Lock:
    try:
        data = tomllib.loads(path.read_text())
        if data.get("version") != LOCK_FORMAT:
            raise ConfigError(
                f"{path.name} has format {data.get('version')!r}, this gpuship writes {LOCK_FORMAT}",
                f"delete {path.name} to lock again",
            )
        targets = []
        for t in data.get("target", []):
            pkgs = []
            for p in t.get("package", []):
                is_sdist = "sdist" in p
                pkgs.append(
                    LockedPackage(
                        name=p["name"],
                        version=p["version"],
                        filename=p["sdist" if is_sdist else "wheel"],
                        url=p["url"],
                        sha256=p["sha256"],
                        size=p.get("size"),
                        sdist=is_sdist,
                    )
                )
            targets.append(LockedTarget(Platform.parse(t["platform"]), t["python-platform"], tuple(pkgs)))
        return Lock(path, str(data["python"]), str(data["glibc"]), str(data["inputs"]), tuple(targets))
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path.name} is damaged ({exc})", "restore it from version control, or delete it to lock again"
        ) from exc


def input_hash(
    project: ProjectInputs,
    python: str,
    glibc: str,
    extra_requirements: Sequence[str],
    constraints: Sequence[str],
    index: IndexOptions | None = None,
) -> str:
    data: dict[str, Any] = {
        "index": index.option_lines() if index is not None else [],
        "format": LOCK_FORMAT,
        "project": project.lock_key(),
        "python": python,
        "glibc": glibc,
        "extra_requirements": list(extra_requirements),
        "constraints": list(constraints),
    }
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _existing_lock(path: Path, py: str, *, locked: bool, progress: Progress) -> Lock | None:
    """The lock at ``path``, if there is one for Python ``py`` (a new base's Python is resolved afresh)."""
    existing = read_lock(path) if path.is_file() else None
    if existing is None or existing.python == py:
        return existing
    if locked:
        raise ConfigError(
            f"--locked, but {path.name} was made for Python {existing.python} and the base has Python {py}",
            f"build without --locked to lock again for Python {py}, then commit {path.name}; or use "
            f"{way_to_python(existing.python)}",
        )
    progress.step(f"{path.name} was made for Python {existing.python}; the base has Python {py}: locking again")
    return None


def _staleness(existing: Lock, want: Sequence[Platform], key: str) -> str:
    """Why ``existing`` cannot be reused as it is ("" when it can)."""
    missing = [p for p in want if p not in existing.platforms]
    if existing.input_hash != key:
        return "the project's requirements changed since it was written"
    if missing:
        return f"it has no packages for {', '.join(map(str, missing))}"
    return ""


def lock_project(
    project: ProjectInputs,
    platforms: Sequence[Platform],
    python_version: str,
    cache: Cache,
    *,
    locked: bool = False,
    extra_requirements: Sequence[str] = (),
    constraints: Sequence[str] = (),
    progress: Progress = NO_PROGRESS,
    glibc: str = DEFAULT_GLIBC,
    lock_path: Path | None = None,
    index: IndexOptions | None = None,
    installed_wheels: Path | None = None,
) -> Lock:
    """The project's lock for ``platforms`` and the base's Python: reused, or resolved with uv and written.

    ``extra_requirements`` / ``constraints`` come from the planner (e.g. CUDA wheels it adds or pins);
    ``index`` adds index options (``[tool.gpuship] index-url`` ...) to those the project's files set.
    ``installed_wheels``: a directory of stand-in wheels for what a registry base already has (uv may pick them;
    the build never installs them); not part of the input hash — the ``constraints`` pin the same versions.
    ``progress`` hears each platform's lock as a step.
    Raises :class:`ConfigError` for a Python mismatch or a stale lock under ``locked``, :class:`ResolveError`
    with uv's explanation for an unsatisfiable set, :class:`NoWheelError` for a platform without a wheel.
    """
    if not platforms:
        raise ConfigError("no target platform to lock for", "give at least one, e.g. linux/amd64")
    py = python_minor(python_version)
    project.check_python(python_version, way_to_python)
    path = lock_path or project.root / LOCK_NAME
    want = sorted(set(platforms))
    key = input_hash(project, py, glibc, extra_requirements, constraints, index)

    existing = _existing_lock(path, py, locked=locked, progress=progress)
    if existing is not None:
        stale = _staleness(existing, want, key)
        if not stale:
            return replace(existing, reused=True)
        if locked:
            raise ConfigError(
                f"{path.name} is out of date: {stale}",
                f"run the build without --locked to update it, then commit {path.name}",
            )
    elif locked:
        raise ConfigError(
            f"--locked, but the project has no {path.name}", f"build once without --locked and commit {path.name}"
        )

    # Keep platforms the lock already covers (it stays one file for every target of the project).
    targets_wanted = sorted(set(want) | set(existing.platforms if existing is not None else ()))
    previous = {t.platform: t for t in existing.targets} if existing is not None else {}
    targets: list[LockedTarget] = []
    preferred: tuple[LockedPackage, ...] = ()
    for plat in targets_wanted:
        progress.step(f"lock {plat}")
        prefs = previous[plat].packages if plat in previous else preferred
        target = resolve_platform(
            project,
            plat,
            py,
            cache,
            glibc=glibc,
            extra_requirements=extra_requirements,
            constraints=constraints,
            preferences=prefs,
            index=index,
            installed_wheels=installed_wheels,
        )
        targets.append(target)
        preferred = preferred or target.packages
    lock = Lock(path, py, glibc, key, tuple(targets))
    lock.write()
    return lock


def _pylock_preferences(packages: Sequence[LockedPackage]) -> str:
    lines = ['lock-version = "1.0"', 'created-by = "gpuship"']
    for p in packages:
        lines += ["", "[[packages]]", f"name = {_toml_str(p.name)}", f"version = {_toml_str(p.version)}"]
    return "\n".join(lines) + "\n"


def resolve_platform(
    project: ProjectInputs,
    platform: Platform,
    python: str,
    cache: Cache,
    *,
    glibc: str = DEFAULT_GLIBC,
    extra_requirements: Sequence[str] = (),
    constraints: Sequence[str] = (),
    preferences: Sequence[LockedPackage] = (),
    index: IndexOptions | None = None,
    installed_wheels: Path | None = None,
) -> LockedTarget:
    """Resolve the project for one platform with uv and pick each package's file."""
    target = uv_platform(platform, glibc)
    with cache.temp_dir("lock-") as tmp:
        req_in = tmp / "requirements.in"
        body = ["# gpuship: the project's requirements, as read from its inputs", *project.uv_options]
        body += index.option_lines() if index is not None else []
        body += [*project.requirements, *extra_requirements]
        req_in.write_text("\n".join(body) + "\n")
        args: list[str] = [
            "pip",
            "compile",
            str(req_in),
            *map(str, project.uv_project_files),
            "--python-platform",
            target,
            "--python-version",
            python,
            "--output-file",
            str(tmp / "pylock.toml"),
            "--quiet",
            "--no-header",
        ]
        for e in project.extras if project.uv_project_files else ():
            args += ["--extra", e]
        for c in project.constraint_files:
            args += ["--constraint", str(c)]
        if installed_wheels is not None:
            args += ["--find-links", str(installed_wheels)]
        pins = [*project.pins, *constraints]
        if pins:
            (tmp / "constraints.txt").write_text("\n".join(pins) + "\n")
            args += ["--constraint", str(tmp / "constraints.txt")]
        if preferences:
            (tmp / "pylock.toml").write_text(_pylock_preferences(preferences))
        if not project.requirements and not extra_requirements and not project.uv_project_files:
            return LockedTarget(platform, target, ())
        try:
            run_uv(args, what=f"resolving for {platform}", cwd=project.root)
        except UvFailed as exc:
            raise _resolve_error(exc.explanation, platform, python) from exc
        pylock = tomllib.loads((tmp / "pylock.toml").read_text())
    packages = _choose_files(pylock, project, platform, python, glibc, cache)
    return LockedTarget(platform, target, tuple(sorted(packages, key=lambda p: p.key)))


_NO_WHEEL_RE = re.compile(
    r"Because (?:only )?([A-Za-z0-9_.\-]+)(?:[<>=!~][^ ]*)? (?:\S+ )?has no wheels with a matching platform tag"
)


def _resolve_error(explanation: str, platform: Platform, python: str) -> ResolveError:
    m = _NO_WHEEL_RE.search(explanation) or re.search(
        r"([A-Za-z0-9_.\-]+)(?:==\S+)? has no wheels with a matching", explanation
    )
    if m:
        return NoWheelError(
            f"{m.group(1)} has no wheel for {platform} (Python {python}): {explanation}",
            f"choose a version of {m.group(1)} that ships one, or drop {platform} from the platforms",
        )
    if "401 Unauthorized" in explanation or "403 Forbidden" in explanation:
        return ResolveError(
            f"cannot resolve the Python requirements for {platform}: {explanation}",
            "the index refused the login: check it (in the index URL, ~/.netrc or the keyring, as uv reads them)",
        )
    if (
        "not found in the package registry" in explanation
        or "was not found in the provided package locations" in explanation
    ):
        return ResolveError(
            f"cannot resolve the Python requirements for {platform}: {explanation}",
            "check the package name (a conda-only name in environment.yml needs a PyPI equivalent)",
        )
    return ResolveError(
        f"cannot resolve the Python requirements for {platform}: {explanation}",
        "loosen or fix the conflicting requirements",
    )


def _file_of(entry: dict[str, Any]) -> tuple[str, str, int | None]:
    """(url, sha256, size) of a pylock wheel/sdist/archive entry."""
    url = strip_userinfo(entry.get("url") or "")  # a lock never holds a login (uv's pylock has none either)
    if not url and entry.get("path"):
        url = Path(entry["path"]).resolve().as_uri()
    sha = (entry.get("hashes") or {}).get("sha256", "")
    return url, sha.lower(), entry.get("size")


def _choose_files(
    pylock: dict[str, Any], project: ProjectInputs, platform: Platform, python: str, glibc: str, cache: Cache
) -> list[LockedPackage]:
    tags = supported_tags(platform, python, glibc)
    out: list[LockedPackage] = []
    for pkg in pylock.get("packages", []):
        name, version = pkg["name"], str(pkg.get("version", ""))
        if "directory" in pkg or "vcs" in pkg:
            src = pkg.get("directory") or pkg.get("vcs") or {}
            where = src.get("path") or src.get("url") or "?"
            if "directory" in pkg and Path(project.root, where).resolve() == project.root:
                continue  # the project itself: installed from its own wheel into the app layer
            raise ResolveError(
                f"{name} comes from {where}, which gpuship cannot lock by hash",
                "build a wheel of it (uv build) and name its folder with --find-links",
            )
        files: list[tuple[str, str, int | None, str]] = []  # (url, sha, size, filename)
        for w in pkg.get("wheels", []):
            url, sha, size = _file_of(w)
            files.append((url, sha, size, w.get("name") or filename_of(url)))
        if "archive" in pkg:
            url, sha, size = _file_of(pkg["archive"])
            files.append((url, sha, size, filename_of(url)))
        wheels = [f for f in files if f[3].endswith(".whl")]
        best = best_wheel([f[3] for f in wheels], tags)
        chosen: LockedPackage
        if best is not None:
            url, sha, size, fname = wheels[best]
            chosen = LockedPackage(name, version, fname, url, sha, size)
        else:
            sdist = pkg.get("sdist") or next(
                ({"url": f[0], "hashes": {"sha256": f[1]}, "size": f[2]} for f in files if not f[3].endswith(".whl")),
                None,
            )
            if sdist is None:
                raise NoWheelError(
                    f"{name} {version} has no wheel for {platform} (Python {python}) and no source distribution",
                    f"choose a version of {name} that ships one, or drop {platform} from the platforms",
                )
            url, sha, size = _file_of(sdist)
            chosen = LockedPackage(name, version, filename_of(url), url, sha, size, sdist=True)
            if platform != Platform.host():
                built = built_wheel(chosen, python, cache, index_args=project.index.uv_args())
                if not built.pure:
                    raise NoWheelError(
                        f"{name} {version} has no wheel for {platform}: it only ships source, which builds a "
                        f"{built.filename.rsplit('-', 1)[-1][:-4]} wheel on this {Platform.host()} machine",
                        f"build on a {platform} machine, or choose a version of {name} that ships a {platform} wheel",
                    )
        if not chosen.sha256:
            raise IntegrityError(f"uv gave no sha256 for {chosen.filename}", "the index must publish hashes")
        allowed = project.hashes.get(canonicalize_name(name))
        if allowed and chosen.sha256 not in allowed:
            raise IntegrityError(
                f"{chosen.filename} (locked for {platform}) is not among the --hash values given for {name}",
                f"add --hash=sha256:{chosen.sha256} to its requirement line, or pin a version whose file you hashed",
            )
        out.append(chosen)
    return out
