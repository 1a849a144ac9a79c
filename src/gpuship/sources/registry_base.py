"""A registry image as the base of a build: its layers as they are, and what it already holds, protected.

``base = "nvcr.io/nvidia/pytorch:24.03-py3"`` (or ``python:3.11-slim``, or any reference) instead of a Debian
profile. :func:`registry_base` pulls the image for one platform into the cache (no daemon), reads its facts
(:func:`gpuship.registry.base_facts`: OS release, Python, CUDA env, every installed distribution) and, in one
more pass over its layers, the merged-/usr links, the dpkg status and where each distribution is installed.

What it gives a build:

* the base's layers, byte for byte (pulled blobs; the media-type family of its manifest is kept);
* ``python``: the interpreter the venv points at (its ``pyvenv.cfg`` sets ``include-system-site-packages``,
  so the base's packages are importable from the venv);
* ``constraints()``: ``name==version`` of every distribution in the base, for the lock (seed 002's constraints
  file, made automatically), so a requirement that would replace one of them fails instead of shadowing it;
* :meth:`RegistryBase.check_requirements`: that failure up front, in one line naming both versions;
* :meth:`RegistryBase.strip_provided`: the lock minus what the base already has (nothing is installed twice).

Everything read from the layers is remembered in the cache by image digest, so a rebuild reads no layer.
"""

from __future__ import annotations

import base64
import difflib
import email.parser
import hashlib
import json
import posixpath
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any  # Any: the base scan record read back from the cache, and lock options passed on as keywords

from debian.deb822 import Deb822
from packaging.markers import InvalidMarker, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..cache import Cache
from ..errors import ConfigError, GpushipError, ResolveError
from ..oci import Image, ImageConfig, Layer, Platform
from ..oci.entry import apply_whiteout
from ..progress import NO_PROGRESS, Progress, Totalled
from ..registry.facts import BaseFacts, base_facts
from ..registry.options import RegistryOptions
from ..registry.read import BASE_NAME
from ..registry.session import Registry
from .base import BaseLock, EnvOf, Started
from .debian.libdeps import LibDep, Tree, _ld_library_path, _merge, _scan_layer, unsatisfied
from .debian.profiles import PROFILES, PythonInfo
from .python.lock import Lock

SCAN_NS = "registry-base-scan"
SCAN_VERSION = 2
MAX_STATUS = 64 << 20
MAX_METADATA = 1 << 20
#: Top-level directories that a merged-/usr base has as links into /usr.
_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_METADATA = re.compile(
    r"(?P<sp>(?:.+/)?(?:site|dist)-packages)/(?P<dir>[^/]+)\.(?:dist-info/METADATA|egg-info/PKG-INFO|egg-info)"
)
_DPKG_STATUS = "var/lib/dpkg/status"
_DPKG_STATUS_D = "var/lib/dpkg/status.d/"
REPLACE_KEY = "replace-base-packages"


def is_registry_reference(base: str) -> bool:
    """True when ``base`` names a registry image rather than a Debian profile (``debian-bookworm``...)."""
    return base not in PROFILES


@dataclass(frozen=True)
class BaseScan:
    """What one pass over the base's layers finds besides :class:`BaseFacts`."""

    links: Mapping[str, str] = field(default_factory=dict)
    packages: tuple[tuple[str, str, str], ...] = ()  # dpkg: (name, version, arch), sorted by name
    locations: Mapping[str, str] = field(default_factory=dict)  # canonical distribution name -> its directory
    #: canonical distribution name -> the dependency fields of its metadata (Requires-Dist, Requires-Python, ...)
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SCAN_VERSION,
            "links": dict(self.links),
            "packages": [list(p) for p in self.packages],
            "locations": dict(self.locations),
            "requires": {k: list(v) for k, v in self.requires.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BaseScan:
        return cls(
            dict(d.get("links") or {}),
            tuple(tuple(p) for p in d.get("packages") or ()),
            dict(d.get("locations") or {}),
            {k: tuple(v) for k, v in (d.get("requires") or {}).items()},
        )


@dataclass(frozen=True)
class RegistryBase:
    """A pulled base image, with the attributes a build uses on a :class:`gpuship.sources.debian.DebianBase`
    (``layers``, ``config``, ``python``, ``packages``, ``links``, ``dropped``) plus its ``facts``."""

    reference: str  # as the user wrote it
    pinned: str  # registry/name@sha256:... of what was pulled (the index digest when the tag is an index)
    platform: Platform
    image: Image  # the pulled image, unchanged (serialises to the registry's bytes)
    facts: BaseFacts
    python: PythonInfo
    scan: BaseScan
    dropped: None = None

    @property
    def layers(self) -> tuple[Layer, ...]:
        n = len(self.image.layers)
        return tuple(
            replace(layer, comment=layer.comment or f"base {self.reference} ({i + 1}/{n})")
            for i, layer in enumerate(self.image.layers)
        )

    @property
    def config(self) -> ImageConfig:
        return self.image.config

    @property
    def packages(self) -> tuple[tuple[str, str, str], ...]:
        return self.scan.packages

    @property
    def links(self) -> Mapping[str, str]:
        return self.scan.links

    @property
    def digest(self) -> str:
        return self.image.digest

    @property
    def glibc(self) -> str | None:
        """The base's glibc (``2.35``) from its dpkg status, when it has one."""
        for name, version, _ in self.packages:
            if name in ("libc6", "libc6.1"):
                m = re.match(r"(\d+\.\d+)", version)
                return m.group(1) if m else None
        return None

    def location(self, name: str) -> str:
        """Where distribution ``name`` is installed in the base (a site-packages directory)."""
        return self.scan.locations.get(canonicalize_name(name), "")

    def distributions(self, replace: Iterable[str] = ()) -> dict[str, str]:
        """The base's distributions that the build keeps, ``{canonical name: version}`` (``replace`` left out)."""
        skip = {canonicalize_name(n) for n in replace}
        return {n: v for n, v in self.facts.distributions.items() if n not in skip}

    def constraints(self, replace: Iterable[str] = ()) -> list[str]:
        """``name==version`` for every distribution in the base (those named in ``replace`` excepted).

        Versions that are not PEP 440 (which no index can serve) are left out.
        """
        out = []
        for name, version in sorted(self.distributions(replace).items()):
            try:
                Version(version)
            except InvalidVersion:
                continue
            out.append(f"{name}=={version}")
        return out

    # -- the lock ------------------------------------------------------------------------------------
    def check_requirements(self, requirements: Iterable[str], replace: Iterable[str] = ()) -> None:
        """Refuse, in one line, a top-level requirement that the base's version of that package does not meet."""
        have = self.distributions(replace)
        env = {k: str(v) for k, v in default_environment().items()}
        env.update(
            python_version=_minor(self.python.version),
            python_full_version=_full(self.python.version),
            platform_machine=self.platform.machine,
            sys_platform="linux",
            platform_system="Linux",
            implementation_name="cpython",
            platform_python_implementation="CPython",
        )
        for text in requirements:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            name = canonicalize_name(req.name)
            if name not in have or not req.specifier:
                continue
            try:
                if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                    continue
            except InvalidMarker:
                pass
            version = have[name]
            try:
                ok = req.specifier.contains(Version(version), prereleases=True)
            except InvalidVersion:
                ok = req.specifier.contains(version, prereleases=True)
            if not ok:
                raise ResolveError(
                    f"{text} is required but the base image {self.reference} has {name} {version}"
                    f"{self._in(name)}; it would be replaced",
                    self._ways_out(name, str(req.specifier)),
                )

    def resolve_error(self, exc: GpushipError, replace: Iterable[str] = ()) -> GpushipError | None:
        """uv's explanation of a failed lock, said in terms of the base when one of its packages is the cause
        (None when none is)."""
        if not isinstance(exc, ResolveError):
            return None
        text = re.sub(r"^cannot resolve the Python requirements for \S+: ", "", exc.message)
        have = self.distributions(replace)
        named = [
            n for n in have if re.search(rf"(?<![\w.-]){re.escape(n).replace('-', '[-_.]')}\s*[<>=!~]", text, re.I)
        ]
        if not named:
            return None
        first = named[0]
        pins = ", ".join(f"{n} {have[n]}{self._in(n)}" for n in named[:4])
        return ResolveError(
            f"the requirements conflict with packages of the base image {self.reference} ({pins}), which are kept "
            f"as they are: {text}",
            self._ways_out(first, ""),
        )

    def _in(self, name: str) -> str:
        where = self.location(name)
        return f" (in {where})" if where else ""

    def _ways_out(self, name: str, spec: str) -> str:
        return (
            f"relax the requirement, or choose a base with {name}{' ' + spec if spec else ' in a version that fits'}, "
            f'or set [tool.gpuship] {REPLACE_KEY} = ["{name}"] to install the required version over the base\'s'
        )

    def missing_libraries(
        self, layers: Sequence[Layer], cache: Cache, env: Mapping[str, str] | None = None
    ) -> dict[str, list[str]]:
        """Sonames that ELF files of ``layers`` (ours, over this base) need and the image would not have:
        ``{soname: [paths]}``. find-libdeps' loader rules; a library anywhere in the image counts as there."""

        links = dict(self.links)
        tree = Tree()
        for layer in self.image.layers:
            _merge(tree, _scan_layer(layer, cache, links)[0])
        facts = []
        for layer in layers:
            t, f = _scan_layer(layer, cache, links)
            _merge(tree, t)
            facts += f
        return unsatisfied(facts, tree, self.platform.architecture, ld_library_path=_ld_library_path(env))

    def check_libraries(self, layers: Sequence[Layer], cache: Cache, env: Mapping[str, str] | None = None) -> None:
        """find-libdeps on a registry base: no Debian packages can be added to it, so a missing library is an error."""
        missing = self.missing_libraries(layers, cache, env)
        if not missing:
            return
        so, files = sorted(missing.items())[0]
        more = f" (and {len(missing) - 1} more: {', '.join(sorted(missing)[1:4])})" if len(missing) > 1 else ""
        raise ResolveError(
            f"/{files[0]} needs {so}, which the base image {self.reference} does not have{more}",
            "choose a base that has it, or add it to the base image; find-libdeps adds Debian packages only to "
            "Debian profile bases (set [tool.gpuship] find-libdeps = false to build anyway)",
        )

    def lock_options(self, cache: Cache, replace: Iterable[str] = ()) -> dict[str, Any]:
        """Keyword arguments for :func:`gpuship.sources.python.lock_project` on this base: its glibc, and a
        directory of stand-in wheels for its distributions (:func:`stand_in_wheels`)."""
        out: dict[str, Any] = {"installed_wheels": stand_in_wheels(self, cache, replace)}
        if self.glibc:
            out["glibc"] = self.glibc
        return out

    def strip_provided(self, lock: Lock, replace: Iterable[str] = ()) -> Lock:
        """``lock`` without the packages the base already has in the same version (they are not installed again)."""
        have = self.distributions(replace)

        def provided(p: Any) -> bool:
            v = have.get(canonicalize_name(p.name))
            if v is None:
                return False
            try:
                return Version(v) == Version(p.version)
            except InvalidVersion:
                return v == p.version

        targets = tuple(replace_(t, packages=tuple(p for p in t.packages if not provided(p))) for t in lock.targets)
        return replace_(lock, targets=targets)

    # -- as a Base (gpuship.sources.base) ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.reference

    @property
    def remote(self) -> bool:
        return True

    @property
    def keeps_packages(self) -> bool:
        return True

    def lock_inputs(self, requirements: Sequence[str], replace: Sequence[str], cache: Cache) -> BaseLock:
        self.check_requirements(requirements, replace)
        return BaseLock(tuple(self.constraints(replace)), self.lock_options(cache, replace))

    def installed(self, lock: Lock, replace: Sequence[str]) -> Lock:
        return self.strip_provided(lock, replace)

    def system_libraries(
        self, layers: Sequence[Layer], packages: Sequence[str], cache: Cache, env_of: EnvOf, progress: Progress
    ) -> tuple[LibDep, ...]:
        """No Debian packages go onto a registry base: a missing library is an error (:meth:`check_libraries`)."""
        progress.step(f"[{self.platform}] find-libdeps: checking shared libraries against the base image")
        self.check_libraries(layers, cache, env_of(self.config))
        return ()

    def scan_ahead(self, layer: Layer, cache: Cache) -> None:
        pass  # the check reads the layers when they are all made (a missing library is an error, not a package)

    def floor(self, cache: Cache, progress: Progress) -> tuple[Layer, ...]:
        return self.layers

    def start(self, packages: Sequence[str], cache: Cache, progress: Progress) -> Started:
        """The pulled image as it is: its layers, history and media-type family."""
        return Started(self.image, self.layers, self.config, self.packages)

    def explain(self) -> list[str]:
        f = self.facts
        line = f"base image {self.pinned}: {f.os_id}, Python {self.python.version} at {self.python.executable}"
        if f.cuda_version:
            line += f", CUDA {f.cuda_version}"
        lines = [
            line,
            f"{len(f.distributions)} Python distributions of the base are kept as they are (lock constraints)",
        ]
        return lines


replace_ = replace  # ``replace`` is also a parameter name above


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _full(version: str) -> str:
    parts = version.split(".")
    return version if len(parts) >= 3 else version + ".0"


# -- stand-in wheels: what the base has, told to the resolver ------------------------------------------------------
STUB_FORMAT = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def stub_wheel(directory: Path, name: str, version: str, fields: Sequence[str] = ()) -> Path:
    """A metadata-only wheel for ``name`` ``version`` with the base's dependency ``fields``, byte-reproducible.

    The resolver sees the base's own distribution, even one no index serves (NGC's ``torch 2.3.0a0+40ec155e58``),
    with its real ``Requires-Dist``. It is never installed: the build drops what the base provides.
    """

    dist = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    files = {
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"{f}\n" for f in fields)
        ).encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: gpuship (base image stand-in)\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
        for p, d in files.items()
    ] + [f"{dist}.dist-info/RECORD,,"]
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p, d in files.items():
            info = zipfile.ZipInfo(p, _ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, d, zipfile.ZIP_DEFLATED)
    return path


def stand_in_wheels(base: RegistryBase, cache: Cache, replace: Iterable[str] = ()) -> Path:
    """A directory (in the cache) of :func:`stub_wheel` files for the base's distributions (``replace`` left out)."""

    items = []
    for name, version in sorted(base.distributions(replace).items()):
        try:
            items.append((name, str(Version(version)), list(base.scan.requires.get(name, ()))))
        except InvalidVersion:
            continue
    key = hashlib.sha256(json.dumps([STUB_FORMAT, items], sort_keys=True).encode()).hexdigest()
    with cache.directory("base-wheels", key) as (path, ready):
        if not ready:
            for name, version, fields in items:
                stub_wheel(path, name, version, fields)
    with cache.directory("base-wheels", key) as (path, _):
        return path


# -- reading the layers ----------------------------------------------------------------------------------------
def scan_layers(layers: Sequence[Layer]) -> BaseScan:
    """Merged-/usr links, dpkg status and distribution locations, from the layers bottom-up (whiteouts honoured)."""
    nodes: dict[str, tuple[str, Any]] = {}
    for layer in layers:
        for entry, fh in layer.entries():
            if apply_whiteout(entry.path, nodes):
                continue
            path = entry.path
            if entry.kind != "dir":
                nodes.pop(path, None)
            if "/" not in path and path in _USR_LINKS:
                if entry.kind == "symlink":
                    nodes[path] = ("link", entry.target)
                else:
                    nodes.pop(path, None)
            elif path == _DPKG_STATUS or (path.startswith(_DPKG_STATUS_D) and "/" not in path[len(_DPKG_STATUS_D) :]):
                if entry.kind == "file" and fh is not None:
                    nodes[path] = ("status", fh.read(MAX_STATUS).decode("utf-8", errors="replace"))
            else:
                m = _METADATA.fullmatch(path)
                if m is not None and entry.kind in ("file", "symlink", "hardlink"):
                    fields = (
                        _dependency_fields(fh.read(MAX_METADATA)) if entry.kind == "file" and fh is not None else ()
                    )
                    name = canonicalize_name(m.group("dir").split("-", 1)[0])
                    nodes[path] = ("dist", ("/" + m.group("sp"), name, fields))
    links = {
        p: posixpath.normpath(posixpath.join("", v.lstrip("/"))) for p, (k, v) in sorted(nodes.items()) if k == "link"
    }
    status = [v for _, (k, v) in sorted(nodes.items()) if k == "status"]
    found = [v for _, (k, v) in sorted(nodes.items()) if k == "dist"]
    dirs = sorted({sp for sp, _, _ in found}, key=lambda sp: (not sp.startswith("/usr/local/"), sp))
    rank = {sp: i for i, sp in enumerate(dirs)}
    locations: dict[str, str] = {}
    requires: dict[str, tuple[str, ...]] = {}
    for sp, name, fields in sorted(found, key=lambda t: -rank[t[0]]):
        locations[name] = sp  # the first on sys.path wins, so it is written last
        requires[name] = fields
    return BaseScan(links, _dpkg_packages(status), dict(sorted(locations.items())), dict(sorted(requires.items())))


def _dependency_fields(data: bytes) -> tuple[str, ...]:
    """The metadata fields a resolver reads (``Requires-Dist``, ``Requires-Python``, ``Provides-Extra``), as lines."""

    headers = email.parser.HeaderParser().parsestr(data.decode("utf-8", errors="replace"))
    out = []
    for key in ("Requires-Python", "Provides-Extra", "Requires-Dist"):
        out += [f"{key}: {' '.join(str(v).split())}" for v in headers.get_all(key) or ()]
    return tuple(out)


def _dpkg_packages(texts: Iterable[str]) -> tuple[tuple[str, str, str], ...]:
    out: dict[str, tuple[str, str, str]] = {}
    for text in texts:
        for para in Deb822.iter_paragraphs(text.splitlines()):
            name, version = para.get("Package"), para.get("Version")
            status = para.get("Status", "install ok installed")
            if not name or not version or not status.endswith(" installed"):
                continue
            arch = para.get("Architecture", "")
            out[f"{name}:{arch}"] = (name, version, arch)
    return tuple(sorted(out.values()))


def base_scan(image: Image, cache: Cache) -> BaseScan:
    """:func:`scan_layers`, remembered in the cache by image digest."""
    return cache.memo(
        SCAN_NS,
        image.digest,
        lambda: scan_layers(image.layers),
        encode=BaseScan.to_json,
        decode=lambda rec: BaseScan.from_json(rec) if rec.get("version") == SCAN_VERSION else None,
    )


# -- pulling ---------------------------------------------------------------------------------------------------------
def registry_base(
    ref: str,
    platform: Platform | str,
    cache: Cache,
    *,
    options: RegistryOptions = RegistryOptions(),
    progress: Progress = NO_PROGRESS,
) -> RegistryBase:
    """Pull ``ref`` for ``platform`` into ``cache`` and read what it holds (:func:`read_registry_base` in a
    registry session of its own, with ``options``; ``GPUSHIP_INSECURE_REGISTRIES`` works too)."""
    with Registry(options, cache) as session:
        return read_registry_base(session, ref, Platform.parse(platform) if isinstance(platform, str) else platform)


def read_registry_base(session: Registry, ref: str, plat: Platform, progress: Progress = NO_PROGRESS) -> RegistryBase:
    """Pull ``ref`` for ``plat`` through ``session`` and read what it holds. Raises :class:`ConfigError` when
    the base has no Python 3 or is musl-based (the lock's wheels are manylinux: glibc)."""
    cache = session.cache
    progress.step(f"pulling base image {ref} for {plat}")
    image = session.pull_image(ref, plat, progress=Totalled(progress, f"pulling base image {ref}"))
    progress.step(f"reading base image {ref}")
    facts = base_facts(image, cache)
    scan = base_scan(image, cache)
    if facts.os_release.get("ID") == "alpine" or any(canonicalize_name(n) == "musl" for n, _, _ in scan.packages):
        raise ConfigError(
            f"base image {ref} is musl-based ({facts.os_id}); gpuship installs manylinux wheels, which need glibc",
            "choose a glibc base (Debian, Ubuntu, UBI, python:3.X-slim), or a Debian profile base",
        )
    if not facts.python_executable or not facts.python_version:
        raise ConfigError(
            f"base image {ref} has no Python 3 (looked for /usr/local/bin/python3* and /usr/bin/python3*)",
            "choose a base with Python 3 (e.g. python:3.11-slim), or a Debian profile base (debian-bookworm)",
        )
    exe = facts.python_executable
    prefix = posixpath.dirname(posixpath.dirname(exe))
    python = PythonInfo(facts.python_version, exe, f"{prefix}/lib/python{_minor(facts.python_version)}")
    pinned = str(image.annotations.get(BASE_NAME, "")) or f"{ref}@{image.digest}"
    return RegistryBase(ref, pinned, plat, image, facts, python, scan)


def plan_registry_bases(
    ref: str,
    platforms: Sequence[Platform],
    cache: Cache,
    progress: Progress = NO_PROGRESS,
    options: RegistryOptions = RegistryOptions(),
    *,
    system_packages: Sequence[str] = (),
    python: str = "",
) -> tuple[str, dict[Platform, RegistryBase]]:
    """The planner's part: every platform's base pulled and read; their one Python version.

    Refuses what a registry base cannot do here: ``system-packages`` (no Debian repository behind it), Pythons
    that differ between platforms, a ``[tool.gpuship] python`` that is not the base's.
    """
    if system_packages:
        raise ConfigError(
            f"[tool.gpuship] system-packages needs a Debian profile base, but base {ref} is a registry image",
            'install the packages in the base image itself, or use base = "debian-bookworm"',
        )
    if "/" not in ref and ":" not in ref and "@" not in ref:
        close = difflib.get_close_matches(ref, list(PROFILES), n=1, cutoff=0.8)
        if close:
            raise ConfigError(
                f"unknown base {ref!r}", f"did you mean {close[0]}? (a registry image needs a tag: {ref}:TAG)"
            )
    with Registry(options, cache) as session:
        bases = {p: read_registry_base(session, ref, p, progress) for p in platforms}
    versions = {_minor(b.python.version): p for p, b in bases.items()}
    if len(versions) > 1:
        have = ", ".join(f"{p}: Python {_minor(b.python.version)}" for p, b in bases.items())
        raise ConfigError(
            f"base image {ref} has different Pythons per platform ({have})", "build each platform separately"
        )
    first = next(iter(bases.values()))
    version = first.python.version
    if python and _minor(python) != _minor(version):
        raise ConfigError(
            f"[tool.gpuship] python = {python!r} but base image {ref} has Python {version}",
            "remove the python key or choose a base with that Python",
        )
    return version, bases
