"""``python_layers``: the locked wheels of one platform, installed into the venv, pruned, compiled, as layers.

One layer for the venv skeleton, then one per group (:mod:`.groups`: ``cuda``, ``frameworks``, ``deps``). Each
group layer is cached under a key made of the group's locked file hashes, the prune rules, the bytecode mode and
compiling Python, the venv path and the Python minor version — nothing else — so the same torch gives the same
layer digest in every project that locks it. (The base's interpreter path only goes into the skeleton layer.)
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any  # Any: an install's info, JSON remembered with its layer in the cache

from ...cache import Cache
from ...errors import ConfigError
from ...oci import Entry, Layer, Platform, cached_layer, clean_path
from ...oci.layer import cached_layer_meta
from ...oci.media import BlobCompression
from ...parallel import parallel_map
from ...progress import NO_PROGRESS, Progress
from ...project.entrypoint import VENV
from .build import built_wheel
from .bytecode import compile_sources
from .credentials import IndexCredentials
from .download import fetch_all
from .groups import layer_units
from .interpreter import HostPython, PythonLike, host_python
from .lock import Lock, LockedPackage, NoWheelError
from .platforms import python_minor
from .prune import PruneReport, PruneRules
from .venv import venv_entries
from .wheel import InstalledFile, WheelInstall, install_wheel, open_wheel, record_hash_of, render_record

LAYOUT_VERSION = 1


@dataclass(frozen=True)
class Distribution:
    """An installed distribution: its group (layer), installed files and bytes (after pruning, with .pyc)."""

    name: str
    version: str
    group: str
    size: int
    files: int = 0


@dataclass(frozen=True)
class PythonEnv:
    """The venv of one platform, as layers in install order (``venv``, then the groups that are not empty)."""

    platform: Platform
    venv: str
    python: str
    layers: tuple[tuple[str, Layer], ...]
    distributions: tuple[Distribution, ...]
    report: PruneReport
    scripts: tuple[str, ...] = field(default=())

    @property
    def site_packages(self) -> str:
        return f"{self.venv}/lib/python{self.python}/site-packages"

    @property
    def bin_dir(self) -> str:
        return f"{self.venv}/bin"

    def env_vars(self) -> dict[str, str]:
        """What the image config should set so ``python`` and the console scripts are the venv's."""
        return {
            "VIRTUAL_ENV": self.venv,
            "PATH": f"{self.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }


def _venv_layer(
    cache: Cache, venv: str, python: PythonLike, compression: BlobCompression, system_site_packages: bool = False
) -> Layer:
    parts: list[object] = ["python-venv", LAYOUT_VERSION, venv, python.executable, python.version]
    if system_site_packages:
        parts.append("system-site-packages")
    key = json.dumps(parts)
    return cached_layer(
        cache,
        key,
        lambda: venv_entries(venv, python.executable, python.version, system_site_packages=system_site_packages),
        compression=compression,
        comment=f"python venv {venv}" + (" (sees the base's site-packages)" if system_site_packages else ""),
    )


def _wheel_files(
    packages: Sequence[LockedPackage],
    platform: Platform,
    python: str,
    cache: Cache,
    progress: Progress,
    credentials: IndexCredentials | None = None,
) -> dict[str, tuple[Path, str]]:
    """sha256 of each locked file -> (wheel path in the cache, wheel file name); sdists are built here."""
    wheels = [p for p in packages if not p.sdist]
    paths = fetch_all(cache, [(p.url, p.sha256) for p in wheels], progress=progress, credentials=credentials)
    out = {p.sha256: (paths[p.sha256], p.filename) for p in wheels}
    for p in packages:
        if not p.sdist:
            continue
        progress.step(f"build {p.filename}")
        built = built_wheel(p, python, cache, credentials=credentials)
        if platform != Platform.host() and not built.pure:
            raise NoWheelError(
                f"{p.name} {p.version} has no wheel for {platform}: its source builds a compiled wheel on this "
                f"{Platform.host()} machine",
                f"build on a {platform} machine, or choose a version of {p.name} that ships a {platform} wheel",
            )
        out[p.sha256] = (built.path, built.filename)
    return out


def _hash_of(f: InstalledFile) -> tuple[str, int]:
    if f.record:
        return f.record, f.entry.size
    return record_hash_of(f.entry), f.entry.size


_Kept = dict[str, tuple[InstalledFile, WheelInstall]]


def _prune(
    installs: Sequence[WheelInstall], prune: PruneRules, site: str
) -> tuple[_Kept, dict[str, list[int]], dict[str, list[int]], list[str]]:
    """The files kept (by path: a later wheel's file replaces an earlier one's), ``[count, bytes]`` pruned per
    category and per distribution, and the paths two wheels both ship."""
    matcher = prune.matcher(site)
    pruned: dict[str, list[int]] = {}
    pruned_by_dist: dict[str, list[int]] = {}
    kept: _Kept = {}
    overlaps: list[str] = []
    for wi in installs:  # sorted by name by the caller
        for f in wi.files:
            category = matcher.category(f.rel)
            if category is not None and not f.rel.startswith(wi.dist_info + "/"):
                c = pruned.setdefault(category, [0, 0])
                c[0] += 1
                c[1] += f.entry.size
                d = pruned_by_dist.setdefault(wi.name, [0, 0])
                d[0] += 1
                d[1] += f.entry.size
                continue
            if f.rel in kept and kept[f.rel][1] is not wi:
                overlaps.append(f.rel)
            kept[f.rel] = (f, wi)
    return kept, pruned, pruned_by_dist, overlaps


def _pycs_by_owner(pycs: list[Entry], kept: _Kept, prefix: str) -> dict[int, list[tuple[str, Entry]]]:
    """Each compiled file under the wheel (by ``id``) whose source it is, for that wheel's RECORD."""
    owner_of_source = {f.rel: wi for f, wi in kept.values()}
    pyc_by_dist: dict[int, list[tuple[str, Entry]]] = {}
    for e in pycs:
        rel = e.path[len(prefix) :]
        cache_dir, name = posixpath.split(rel)
        src = posixpath.join(posixpath.dirname(cache_dir), name.rsplit(".", 2)[0] + ".py")  # x.cpython-311.pyc
        owner = owner_of_source.get(src)
        if owner is not None:
            pyc_by_dist.setdefault(id(owner), []).append((rel, e))
    return pyc_by_dist


def install_entries(
    installs: Sequence[WheelInstall],
    *,
    venv: str,
    site: str,
    prune: PruneRules,
    compiler: HostPython | None,
    workdir: Path,
) -> tuple[list[Entry], dict[str, Any]]:
    """Prune, compile and write RECORDs for wheels installed into one tree: ``(entries, info)``.

    ``site`` is site-packages relative to the venv root; entries are placed under ``venv`` in the image.
    """
    prefix = clean_path(venv) + "/"
    kept, pruned, pruned_by_dist, overlaps = _prune(installs, prune, site)
    pycs: list[Entry] = []
    if compiler is not None:
        sources = [
            f.entry
            for f, _ in kept.values()
            if f.entry.kind == "file" and f.rel.endswith(".py") and f.rel.startswith(site + "/")
        ]
        pycs = compile_sources(sorted(sources, key=lambda e: e.path), compiler, workdir)
    pyc_by_dist = _pycs_by_owner(pycs, kept, prefix)

    entries: list[Entry] = []
    distributions = []
    scripts: list[str] = []
    for wi in installs:
        mine = [(f.rel, f) for f, owner in kept.values() if owner is wi]
        rows: list[tuple[str, str, int | None]] = []
        size = 0
        for rel, f in mine:
            h, n = _hash_of(f)
            rows.append((rel, h, n))
            size += n
            entries.append(f.entry)
        for rel, e in pyc_by_dist.get(id(wi), []):
            rows.append((rel, "", None))
            size += e.size
            entries.append(e)
        record = render_record(wi.dist_info, rows)
        entries.append(Entry.file(f"{prefix}{wi.dist_info}/RECORD", record, mode=0o644))
        size += len(record)
        distributions.append([wi.name, wi.version, len(rows) + 1, size])
        scripts += [s for s in wi.scripts if f"bin/{s}" in kept and kept[f"bin/{s}"][1] is wi]
    report = PruneReport(
        {k: (v[0], v[1]) for k, v in sorted(pruned.items())},
        {k: (v[0], v[1]) for k, v in sorted(pruned_by_dist.items())},
        (len(pycs), sum(e.size for e in pycs)),
    )
    info = {
        "distributions": distributions,
        "report": report.to_json(),
        "scripts": sorted(scripts),
        "overlaps": sorted(set(overlaps)),
    }
    return entries, info


@dataclass(frozen=True)
class _GroupInstaller:
    """Makes the layer of one group of locked packages (cached by the wheels, the rules and the compiler)."""

    platform: Platform
    py: str
    venv: str
    prune: PruneRules
    compiler: HostPython | None
    cache: Cache
    progress: Progress
    compression: BlobCompression
    credentials: IndexCredentials | None

    def layer(self, group: str, pkgs: list[LockedPackage]) -> tuple[Layer, dict[str, Any]]:
        """The group's layer and what the install found (distributions, the prune report, scripts, overlaps)."""
        key_data = {
            "kind": "python-group",
            "layout": LAYOUT_VERSION,
            "group": group,
            "venv": self.venv,
            "python": self.py,
            "files": [[p.key, p.version, p.sha256] for p in pkgs],
            "prune": self.prune.key(),
            "compiler": self.compiler.version if self.compiler is not None else None,
        }
        with ExitStack() as stack:
            return cached_layer_meta(
                self.cache,
                json.dumps(key_data, sort_keys=True),
                lambda: self._install(group, pkgs, stack),
                compression=self.compression,
                comment=f"python {group}: "
                + ", ".join(f"{p.name}=={p.version}" for p in pkgs[:8])
                + (" ..." if len(pkgs) > 8 else ""),
            )

    def _install(self, group: str, pkgs: list[LockedPackage], stack: ExitStack) -> tuple[list[Entry], dict[str, Any]]:
        """Download the group's wheels, install them into one tree, then prune and compile it."""
        platform, py, cache = self.platform, self.py, self.cache
        self.progress.step(f"install {group} ({len(pkgs)} packages) for {platform}")
        files = _wheel_files(pkgs, platform, py, cache, self.progress, self.credentials)
        installs = []
        for p in pkgs:
            path, filename = files[p.sha256]
            zf = stack.enter_context(open_wheel(path, filename))
            installs.append(install_wheel(zf, filename, venv=self.venv, python_minor=py))
        workdir = stack.enter_context(cache.temp_dir("pyc-"))
        site = f"lib/python{py}/site-packages"
        entries, info = install_entries(
            installs, venv=self.venv, site=site, prune=self.prune, compiler=self.compiler, workdir=workdir
        )
        self.progress.step(f"layer {group} for {platform}")
        return entries, info


def python_layers(
    lock: Lock,
    platform: Platform,
    python: PythonLike,
    cache: Cache,
    *,
    prune: PruneRules = PruneRules(),
    progress: Progress = NO_PROGRESS,
    venv: str = VENV,
    compression: BlobCompression = "none",
    system_site_packages: bool = False,
    credentials: IndexCredentials | None = None,
    finish: Callable[[str, Layer], Layer] | None = None,
    ready: Callable[[Layer], None] | None = None,
) -> PythonEnv:
    """Install ``lock``'s packages for ``platform`` into ``venv`` (using the base's ``python``) as layers.

    ``credentials``: the private indexes' logins the locked files are downloaded with.

    ``finish(group, layer)`` makes each group's layer final (the build prunes GPU code there), on the thread that
    made it; ``ready(layer)`` hears each final layer in image order as soon as it and those below it are done (the
    build loads them into an engine while the rest are made).

    ``system_site_packages``: the venv sees the base's site-packages (``include-system-site-packages = true``),
    for a registry base whose Python packages are kept.
    """
    if not venv.startswith("/"):
        raise ConfigError(f"the venv path {venv!r} must be absolute")
    py = python_minor(python.version)
    if py != lock.python:
        raise ConfigError(
            f"{lock.path.name} was made for Python {lock.python}, but the base image has Python {py}",
            f"delete {lock.path.name} to lock again for Python {py}, or use a base with Python {lock.python}",
        )
    packages = lock.packages(platform)
    compiler = host_python(py) if prune.bytecode != "none" and packages else None
    layers: list[tuple[str, Layer]] = [("venv", _venv_layer(cache, venv, python, compression, system_site_packages))]
    if ready is not None:
        ready(layers[0][1])
    distributions: list[Distribution] = []
    report = PruneReport()
    scripts: list[str] = []
    groups = layer_units(packages)
    installer = _GroupInstaller(platform, py, venv, prune, compiler, cache, progress, compression, credentials)

    def make(group_packages: tuple[str, list[LockedPackage]]) -> tuple[Layer, dict[str, Any]]:
        layer, info = installer.layer(*group_packages)
        return (finish(group_packages[0], layer) if finish is not None else layer), info

    def heard(_: int, made: tuple[Layer, dict[str, Any]]) -> None:
        if ready is not None:
            ready(made[0])

    # the groups' layers are independent: built side by side (unzipping, hashing and writing release the GIL), the
    # biggest first (they take longest), handed on bottom first
    biggest = sorted(range(len(groups)), key=lambda i: -sum(p.size or 0 for p in groups[i][1]))
    made = parallel_map(make, groups, each=heard, start=biggest)
    for (group, _), (layer, info) in zip(groups, made, strict=True):
        layers.append((group, layer))
        distributions += [Distribution(n, v, group, size, files) for n, v, files, size in info["distributions"]]
        report = report.merged(PruneReport.from_json(info["report"]))
        scripts += info.get("scripts", [])
    return PythonEnv(
        platform=platform,
        venv=venv,
        python=py,
        layers=tuple(layers),
        distributions=tuple(distributions),
        report=report,
        scripts=tuple(sorted(set(scripts))),
    )
