"""``build_base``: a Debian userland with CPython, assembled from .deb files into layers.

No base image, no daemon, no maintainer scripts (distroless / apko style):

1. the suites come from the host's apt sources or the configured mirror; their signed indexes are read;
2. the profile's packages (and ``extra_packages``) are resolved for the platform's architecture;
3. each ``.deb`` is fetched by the SHA256 of the signed index and unpacked, slimmed, rewritten for a
   merged /usr;
4. the layers are: ``core`` (userland and common libraries, with the merged-/usr links), ``python``
   (the interpreter and standard library), ``extra`` (the requested system packages, when any) and
   ``system`` (passwd/group, CA bundle, python3 link, the dpkg database). Each is cached under a key of
   exactly what goes in, so adding a system package rebuilds only ``extra`` and ``system``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypedDict, cast

from ...cache import Cache
from ...errors import GpushipError
from ...oci.entry import Entry
from ...oci.image import ImageConfig, Platform
from ...oci.layer import Layer, cached_layer, layer_key, recall_layer
from ...oci.media import BlobCompression
from ...oci.spec import RuntimeConfigJSON
from ...progress import NO_PROGRESS, Progress
from ...streams import open_file
from .aptsources import Suite, suites_for
from .deb import DebInfo, Member, deb_info, read_data_files, unpack_data
from .dpkg import database_entries
from .index import Candidate
from .profiles import Profile, PythonInfo, get_profile
from .repository import Repository
from .resolver import Resolution, resolve
from .slim import SLIM_VERSION, Dropped, SlimReport, drop_rule
from .system import APP_GID, APP_HOME, APP_UID, CA_BUNDLE, GROUP, NSSWITCH_DEFAULT, PASSWD, system_entries
from .usrmerge import link_entries, merged_usr_links, rebase_entry

#: Bump when the way layers are assembled changes: every cached base layer then rebuilds.
LAYER_FORMAT = "2"
DOWNLOAD_THREADS = 4
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The config a Debian base gives the image (its ENV starts the image's).
BASE_CONFIG = ImageConfig(
    env=(f"PATH={PATH}", "LANG=C.UTF-8", f"SSL_CERT_FILE=/{CA_BUNDLE}"),
    user=f"{APP_UID}:{APP_GID}",
    working_dir=APP_HOME,
)


@dataclass(frozen=True)
class Installed:
    """A package that is in the base: its index record, its cached ``.deb`` and what it contains."""

    candidate: Candidate
    digest: str
    info: DebInfo
    layer: str  # core | python | extra


@dataclass(frozen=True)
class Placed:
    """Where one member of a package ends up: ``path`` in the image (None: slimmed out, ``rule`` says why)."""

    member: Member
    entry: Entry | None
    rule: str | None


@dataclass(frozen=True)
class DebianBase:
    """The result of :func:`build_base`: layers, config and the facts upper layers need."""

    profile: str
    platform: Platform
    layers: tuple[Layer, ...]
    config: ImageConfig
    python: PythonInfo
    packages: tuple[tuple[str, str, str], ...]  # (name, version, arch), sorted by name
    links: Mapping[str, str]
    dropped: SlimReport
    suites: tuple[Suite, ...] = ()
    why: Mapping[str, str] = field(default_factory=dict)  # package -> why it is in
    skipped: tuple[tuple[str, str], ...] = ()  # (dependency, needed by): script-only, not installed
    overlaps: tuple[str, ...] = ()  # paths two packages of one layer both ship (the later one wins)
    extra_packages: tuple[str, ...] = ()
    #: how many of ``layers`` (core, python) do not depend on ``extra_packages``; the rest (extra, system) do
    floor: int = 0

    def package_names(self) -> list[str]:
        return [n for n, _, _ in self.packages]


def place(info: DebInfo, links: Mapping[str, str]) -> list[Placed]:
    """Every member of a package, moved through the merged-/usr links and judged by the slimming rules."""
    out: list[Placed] = []
    sizes = {m.path: m.size for m in info.members}
    for m in info.members:
        if m.kind == "hardlink":
            e = Entry(m.path, "file", m.mode, m.uid, m.gid, sizes.get(m.target, 0))
        else:
            e = Entry(m.path, m.kind, m.mode, m.uid, m.gid, m.size, m.target)
        moved = rebase_entry(e, dict(links))
        if moved is None:
            out.append(Placed(m, None, "merged-usr"))
            continue
        out.append(Placed(m, moved, drop_rule(moved.path, moved.kind)))
    return out


def kept_paths(info: DebInfo, links: Mapping[str, str]) -> list[str]:
    """The package's own paths (as dpkg records them) that are in the image."""
    return [p.member.path for p in place(info, links) if p.entry is not None and p.rule is None]


def dropped_of(installed: Iterable[Installed], links: Mapping[str, str]) -> SlimReport:
    items: list[Dropped] = []
    for inst in installed:
        for p in place(inst.info, links):
            if p.entry is not None and p.rule is not None and p.entry.kind != "dir":
                items.append(Dropped(p.entry.path, p.entry.size, p.rule, inst.candidate.name))
    return SlimReport.of(items)


def layer_plan(
    group: Sequence[Installed], links: Mapping[str, str]
) -> tuple[dict[str, tuple[Placed, Installed]], list[str]]:
    """What a layer of ``group`` holds (image path -> member and package) and the paths two packages share.

    Where two packages ship the same file, the later one (by name) wins, as an upper layer would.
    """
    by_path: dict[str, tuple[Placed, Installed]] = {}
    overlaps: list[str] = []
    for inst in group:
        for p in place(inst.info, links):
            if p.entry is None or p.rule is not None:
                continue
            e = p.entry
            prev = by_path.get(e.path)
            if prev is not None:
                pe = prev[0].entry
                assert pe is not None
                if pe.kind == e.kind == "dir" or (pe.kind == e.kind == "symlink" and pe.target == e.target):
                    continue
                if pe.kind == "dir" or e.kind == "dir":
                    raise GpushipError(
                        f"/{e.path} is a {pe.kind} in {prev[1].candidate.name} and a {e.kind} in {inst.candidate.name}",
                        f"leave {inst.candidate.name} out of system-packages",
                    )
                overlaps.append(f"/{e.path}: {prev[1].candidate.name}, {inst.candidate.name}")
            by_path[e.path] = (p, inst)
    return by_path, overlaps


def _group_entries(
    group: Sequence[Installed], links: Mapping[str, str], cache: Cache, workdir: Path, with_links: bool
) -> list[Entry]:
    plan, _ = layer_plan(group, links)
    files: dict[str, dict[str, Path]] = {}
    targets: dict[str, dict[str, str]] = {}
    for inst in group:
        c = inst.candidate
        if any(pi is inst for _, pi in plan.values()):
            files[c.name] = unpack_data(cache.blob_path(inst.digest), workdir / c.sha256, f"package {c}")
            targets[c.name] = {m.path: m.target for m in inst.info.members if m.kind == "hardlink"}
    out = link_entries(dict(links)) if with_links else []
    for path, (p, inst) in plan.items():
        e = p.entry
        assert e is not None
        if path in links:
            continue
        if e.kind == "file":
            name = inst.candidate.name
            src = files[name].get(targets[name].get(p.member.path, p.member.path))
            if src is None:
                raise GpushipError(
                    f"package {inst.candidate}: {p.member.path} is missing from its data", "re-download it"
                )
            e = replace(e, open=partial(open_file, src))
        out.append(e)
    return out


#: bump when DebianBase or the way it is made changes, so remembered results are not reused
BASE_MEMO_VERSION = 5
#: where a base is remembered (JSON: its facts, and its layers by their keys); the shared build cache carries it
MEMO_NS = "debian-base"


class _BaseRecord(TypedDict):
    """What the cache remembers of a built base (:func:`_to_record`); tuples are JSON arrays there."""

    profile: str
    platform: str
    layers: list[str]
    config: RuntimeConfigJSON
    python: tuple[str, str, str]
    packages: list[tuple[str, str, str]]
    links: dict[str, str]
    dropped: list[tuple[str, int, str, str]]
    suites: list[tuple[str, str, list[str]]]
    why: dict[str, str]
    skipped: list[tuple[str, str]]
    overlaps: list[str]
    extra_packages: list[str]
    floor: int


def _to_record(base: DebianBase, layer_keys: Sequence[str]) -> _BaseRecord:
    return {
        "profile": base.profile,
        "platform": str(base.platform),
        "layers": list(layer_keys),
        "config": base.config.to_json(),
        "python": (base.python.version, base.python.executable, base.python.stdlib),
        "packages": list(base.packages),
        "links": dict(base.links),
        "dropped": base.dropped.to_record(),
        "suites": [(s.uri, s.name, list(s.components)) for s in base.suites],
        "why": dict(base.why),
        "skipped": list(base.skipped),
        "overlaps": list(base.overlaps),
        "extra_packages": list(base.extra_packages),
        "floor": base.floor,
    }


def _from_record(rec: _BaseRecord, cache: Cache) -> DebianBase | None:
    """A remembered base, its layers found by their keys (here, or in the shared build cache); None when one of
    them cannot be had, or the record is not one (a field of the wrong shape fails below)."""
    try:
        layers = [recall_layer(cache, str(k)) for k in rec["layers"]]
        if any(layer is None for layer in layers):
            return None
        py: list[str] = [str(x) for x in rec["python"]]
        return DebianBase(
            profile=str(rec["profile"]),
            platform=Platform.parse(str(rec["platform"])),
            layers=tuple(layer for layer in layers if layer is not None),
            config=ImageConfig.from_json(rec["config"]),
            python=PythonInfo(py[0], py[1], py[2]),
            packages=tuple((str(n), str(v), str(a)) for n, v, a in rec["packages"]),
            links={str(k): str(v) for k, v in rec["links"].items()},
            dropped=SlimReport.from_record(rec["dropped"]),
            suites=tuple(Suite(str(u), str(n), tuple(c)) for u, n, c in rec["suites"]),
            why={str(k): str(v) for k, v in rec["why"].items()},
            skipped=tuple((str(a), str(b)) for a, b in rec["skipped"]),
            overlaps=tuple(str(x) for x in rec["overlaps"]),
            extra_packages=tuple(str(x) for x in rec["extra_packages"]),
            floor=int(rec["floor"]),
        )
    except (KeyError, TypeError, ValueError, GpushipError):
        return None  # not a record of this version: the base is made again


def _key(*parts: object) -> str:
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def _pkg_key(group: Sequence[Installed]) -> list[list[str]]:
    return [[i.candidate.name, i.candidate.version, i.candidate.arch, i.candidate.sha256] for i in group]


def build_base(
    profile: str,
    platform: Platform | str,
    extra_packages: Sequence[str] = (),
    cache: Cache | None = None,
    mirror: str | None = None,
    progress: Progress = NO_PROGRESS,
    *,
    security_mirror: str | None = None,
    compression: BlobCompression = "none",
) -> DebianBase:
    """Assemble the Debian base ``profile`` (``debian-bookworm``, ``debian-trixie``) for ``platform``.

    ``extra_packages`` are installed on top (with their dependencies), like ``apt-get install`` without apt.
    ``mirror`` overrides the host's apt sources (see :mod:`.aptsources`).
    """
    prof = get_profile(profile)
    plat = Platform.parse(platform) if isinstance(platform, str) else platform
    arch = plat.architecture
    if plat.os != "linux" or arch not in prof.architectures:
        raise GpushipError(
            f"profile {prof.name} has no {plat} build",
            f"use one of: {', '.join('linux/' + a for a in prof.architectures)}",
        )
    cache = cache or Cache()
    suites = suites_for(prof.codename, mirror=mirror, security_mirror=security_mirror)
    repo = Repository(suites, cache, progress=progress)
    try:
        # The same profile, packages and signed indexes always give the same base: remember the result, so a
        # rebuild skips resolution (the layers are cached anyway). The key holds every index's hash.
        key = _key(
            "base",
            BASE_MEMO_VERSION,
            prof.name,
            str(plat),
            sorted(set(extra_packages)),
            compression,
            [[s.uri, s.name, repo.release(s).digest] for s in suites],  # the signed InRelease names every index
        )
        memo_key = hashlib.sha256(key.encode()).hexdigest()
        memo = cache.get_ref(MEMO_NS, memo_key)
        if isinstance(memo, dict):
            # the record _to_record wrote (MEMO_NS's key names its version); one of another shape is made again
            base = _from_record(cast(_BaseRecord, memo), cache)
            if base is not None:
                return base
        base, layer_keys = _build(prof, plat, tuple(extra_packages), cache, repo, progress, compression)
        cache.put_ref(MEMO_NS, memo_key, _to_record(base, layer_keys))
        return base
    finally:
        repo.close()


def resolve_profile(prof: Profile, index, extra_packages: Sequence[str]) -> dict[str, Resolution]:
    """The three resolutions of a base: core, python on core, extra on both."""
    core = resolve(index, prof.core_packages)
    py = resolve(index, prof.python_packages, installed=core.packages)
    out = {"core": core, "python": py}
    if extra_packages:
        out["extra"] = resolve(index, extra_packages, installed=core.packages + py.packages)
    return out


def _build(
    prof: Profile,
    plat: Platform,
    extra: tuple[str, ...],
    cache: Cache,
    repo: Repository,
    progress: Progress,
    compression: BlobCompression,
) -> tuple[DebianBase, list[str]]:
    """The base, and the keys its layers are remembered under (:func:`layer_key`)."""
    arch = plat.architecture
    resolutions, installed = _resolve_and_fetch(prof, arch, extra, cache, repo, progress)
    all_installed = [i for g in installed.values() for i in g]
    py = prof.python_info()
    links = merged_usr_links(arch)
    layers, overlaps, keys = _package_layers(prof, arch, installed, links, cache, progress, compression)
    floor = sum(1 for name, group in installed.items() if name in ("core", "python") and (group or name == "core"))
    system, system_key = _system_layer(prof, arch, all_installed, links, cache, compression)
    layers.append(system)
    keys.append(system_key)
    placed_python = any(
        p.entry is not None and p.entry.path == py.executable.lstrip("/")
        for i in all_installed
        if i.layer == "python"
        for p in place(i.info, links)
    )
    if not placed_python:
        raise GpushipError(f"{prof.name}: {py.executable} is not in the packages {prof.python_packages}", "report this")

    why: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    for r in resolutions.values():
        why.update(r.why)
        skipped += r.skipped
    base = DebianBase(
        profile=prof.name,
        platform=plat,
        layers=tuple(layers),
        config=BASE_CONFIG,
        python=py,
        packages=tuple(sorted((i.candidate.name, i.candidate.version, i.candidate.arch) for i in all_installed)),
        links=dict(links),
        dropped=dropped_of(all_installed, links),
        suites=repo.suites,
        why=why,
        skipped=tuple(skipped),
        overlaps=tuple(overlaps),
        extra_packages=extra,
        floor=floor,
    )
    return base, keys


def _resolve_and_fetch(
    prof: Profile, arch: str, extra: tuple[str, ...], cache: Cache, repo: Repository, progress: Progress
) -> tuple[dict[str, Resolution], dict[str, list[Installed]]]:
    """The profile's packages for ``arch``, by layer, downloaded (those not cached, in parallel) and read."""
    progress.step(f"resolving {prof.name} packages for {arch}")
    index = repo.index(arch)
    resolutions = resolve_profile(prof, index, extra)
    groups: dict[str, list[Candidate]] = {k: list(r.packages) for k, r in resolutions.items()}
    missing = [c for g in groups.values() for c in g if not cache.has("sha256:" + c.sha256)]
    if missing:
        total = sum(c.size for c in missing)
        progress.step(f"downloading {len(missing)} packages ({total / 1e6:.1f} MB)")
        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            list(pool.map(repo.fetch_deb, missing))  # the first failure is raised; verified ones stay cached
    installed = {
        name: [
            Installed(c, "sha256:" + c.sha256, deb_info(cache, "sha256:" + c.sha256, f"package {c}"), name)
            for c in cands
        ]
        for name, cands in groups.items()
    }
    return resolutions, installed


def _package_layers(
    prof: Profile,
    arch: str,
    installed: Mapping[str, list[Installed]],
    links: Mapping[str, str],
    cache: Cache,
    progress: Progress,
    compression: BlobCompression,
) -> tuple[list[Layer], list[str], list[str]]:
    """One layer per package group (unpacked only when not cached), the paths two packages both ship, and the
    keys the layers are remembered under."""
    layers: list[Layer] = []
    keys: list[str] = []
    overlaps: list[str] = []
    with ExitStack() as stack:
        work: list[Path] = []

        def workdir() -> Path:
            if not work:
                work.append(stack.enter_context(cache.temp_dir("debian-")))
            return work[0]

        for name, group in installed.items():
            if not group and name != "core":
                continue
            overlaps += layer_plan(group, links)[1]
            key = _key("debian-layer", LAYER_FORMAT, SLIM_VERSION, prof.codename, arch, name, links, _pkg_key(group))

            def make(group: list[Installed] = group, name: str = name) -> list[Entry]:
                progress.step(f"unpacking {len(group)} packages into the {name} layer")
                return _group_entries(group, links, cache, workdir(), name == "core")

            layer = cached_layer(
                cache,
                key,
                make,
                compression=compression,
                comment=f"debian {prof.codename} {name}: " + " ".join(i.candidate.name for i in group),
            )
            layers.append(layer)
            keys.append(layer_key(key, compression))
    return layers, overlaps, keys


def _system_layer(
    prof: Profile,
    arch: str,
    all_installed: list[Installed],
    links: Mapping[str, str],
    cache: Cache,
    compression: BlobCompression,
) -> tuple[Layer, str]:
    """The files no package ships: users, the CA bundle, nsswitch.conf, and the dpkg database of them all; and the
    key it is remembered under."""
    py = prof.python_info()
    by_name = {i.candidate.name: i for i in all_installed}
    sys_key = _key(
        "debian-system",
        LAYER_FORMAT,
        SLIM_VERSION,
        prof.codename,
        arch,
        py.version,
        links,
        sorted(_pkg_key(all_installed)),
        hashlib.sha256((PASSWD + GROUP + NSSWITCH_DEFAULT).encode()).hexdigest(),
    )

    def make_system() -> list[Entry]:
        certs: dict[str, bytes] = {}
        if "ca-certificates" in by_name:
            ca = by_name["ca-certificates"]
            certs = read_data_files(
                cache.blob_path(ca.digest), "package ca-certificates", prefix="usr/share/ca-certificates/"
            )
        nss = None
        if "base-files" in by_name:
            nss = read_data_files(
                cache.blob_path(by_name["base-files"].digest),
                "package base-files",
                want={"usr/share/base-files/nsswitch.conf"},
            ).get("usr/share/base-files/nsswitch.conf")
        entries = system_entries(python_version=py.version, ca_certs=certs, nsswitch=nss, has_dash="dash" in by_name)
        entries += database_entries([(i.candidate, i.info, kept_paths(i.info, links)) for i in all_installed])
        return [rebase_entry(e, links) or e for e in entries]

    layer = cached_layer(
        cache,
        sys_key,
        make_system,
        compression=compression,
        comment="debian system files: users, CA bundle, dpkg database",
    )
    return layer, layer_key(sys_key, compression)
