"""find-libdeps: the Debian packages that the shared libraries of upper layers need.

Every ELF file of the upper layers (the Python environment, the app) is read with pyelftools for its
``DT_NEEDED`` sonames and ``RPATH``/``RUNPATH``. A soname is satisfied when the dynamic loader would find
it in the image: in the RPATH/RUNPATH folders (``$ORIGIN`` expanded, so wheels' bundled ``.libs`` folders
count), in ``LD_LIBRARY_PATH``, or in the standard library folders. A soname that a wheel ships anywhere
else in the image also counts (wheels preload each other's libraries), so Debian never duplicates a wheel.
Libraries the NVIDIA driver injects at container start (:data:`DRIVER_PROVIDED`) are never pulled in.

What is left is looked up in the mirror's ``Contents-<arch>`` index (exact file name in a standard folder,
never a substring) and becomes a :class:`LibDep`: the package, the soname and the files that need it.
A soname no package ships is an error naming the file that needs it.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import lzma
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ...cache import Cache
from ...elf import dynamic_links
from ...errors import GpushipError, ResolveError
from ...oci.entry import Entry, clean_path, rebase_through_links
from ...oci.layer import Layer, entries_from_dir
from ...progress import NO_PROGRESS, Progress
from ...streams import Reader
from .repository import Repository

#: Bump when the cached scan or Contents map changes shape.
SCAN_FORMAT = "1"
CONTENTS_FORMAT = "1"

#: Sonames the NVIDIA driver (container toolkit / CDI) mounts into the container at start.
DRIVER_PROVIDED = (
    "libcuda.so*",
    "libcudadebugger.so*",
    "libnvidia-*.so*",
    "libnvcuvid.so*",
    "libnvoptix.so*",
    "libGLX_nvidia.so*",
    "libEGL_nvidia.so*",
    "libGLESv2_nvidia.so*",
    "libGLESv1_CM_nvidia.so*",
    "libvdpau_nvidia.so*",
    "libnvidia-ml.so*",
    "libnvcuextend.so*",
    "libdxcore.so*",
)

TRIPLETS = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
MACHINES = {"amd64": ("EM_X86_64", 64), "arm64": ("EM_AARCH64", 64)}


def _norm(path: str) -> str:
    """A path relative to the image root, normalised; ``..`` above the root stays at the root (as the kernel does)."""
    parts: list[str] = []
    for p in path.replace("\\", "/").split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return "/".join(parts)


def default_dirs(arch: str) -> tuple[str, ...]:
    """The folders glibc's loader searches without an ld.so.cache (Debian's multiarch layout)."""
    t = TRIPLETS.get(arch, f"{arch}-linux-gnu")
    dirs = [f"lib/{t}", f"usr/lib/{t}", "lib", "usr/lib"]
    if arch == "amd64":
        dirs += ["lib64", "usr/lib64"]
    return tuple(dirs)


def driver_provided(soname: str) -> bool:
    return any(fnmatch.fnmatchcase(soname, pat) for pat in DRIVER_PROVIDED)


@dataclass(frozen=True)
class LibDep:
    """``package`` is needed for ``soname``, which ``needed_by`` (image paths) load; ``path`` is where it lands."""

    package: str
    soname: str
    needed_by: tuple[str, ...]
    path: str = ""

    def __str__(self) -> str:
        more = f" and {len(self.needed_by) - 1} more" if len(self.needed_by) > 1 else ""
        return f"{self.package} ({self.soname}, needed by {self.needed_by[0]}{more})"


@dataclass(frozen=True)
class ElfFacts:
    """What the loader reads from one ELF file."""

    path: str
    needed: tuple[str, ...]
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    machine: str = ""
    elfclass: int = 0


@dataclass
class Tree:
    """The image's file names (files and links) and symlinks, enough to answer "would the loader find it"."""

    paths: set[str] = field(default_factory=set)
    symlinks: dict[str, str] = field(default_factory=dict)
    by_name: dict[str, set[str]] = field(default_factory=dict)

    def add(self, path: str, kind: str, target: str = "") -> None:
        if kind == "dir":
            return
        self.paths.add(path)
        self.by_name.setdefault(posixpath.basename(path), set()).add(path)
        if kind == "symlink":
            self.symlinks[path] = target

    def resolve_dir(self, d: str) -> str:
        """``d`` with symlinked folders along it followed (bounded)."""
        parts = [p for p in d.split("/") if p]
        out: list[str] = []
        hops = 0
        while parts:
            out.append(parts.pop(0))
            cur = "/".join(out)
            if cur in self.symlinks and hops < 40:
                hops += 1
                t = self.symlinks[cur]
                new = _norm(t) if t.startswith("/") else _norm("/".join(out[:-1]) + "/" + t)
                out = [p for p in new.split("/") if p]
        return "/".join(out)

    def has(self, d: str, name: str) -> bool:
        return f"{self.resolve_dir(d)}/{name}".lstrip("/") in self.paths


def _elf_facts(path: str, fh: IO[bytes]) -> ElfFacts | None:
    try:
        elf = ELFFile(fh)
        if elf["e_type"] not in ("ET_DYN", "ET_EXEC"):
            return None
        links = dynamic_links(elf)
        return ElfFacts(path, links.needed, links.rpath, links.runpath, str(elf["e_machine"]), int(elf.elfclass))
    except (ELFError, OSError):
        return None  # not an ELF the loader would read; nothing to resolve
    except Exception:  # noqa: BLE001 - pyelftools raises many kinds on malformed input; such a file is skipped
        return None


def scan_items(items: Iterable[tuple[Entry, Reader | None]], tree: Tree, links: Mapping[str, str]) -> list[ElfFacts]:
    """Add every entry to ``tree``; return the facts of each dynamic ELF file among them."""
    facts: list[ElfFacts] = []
    for e, reader in items:
        if posixpath.basename(e.path).startswith(".wh."):
            continue
        path = rebase_through_links(e.path, dict(links)) if links else e.path
        tree.add(path, e.kind, e.target)
        if e.kind != "file" or reader is None or e.size < 64:
            continue
        head = reader.read(4)
        if head != b"\x7fELF":
            continue
        seekable = getattr(reader, "seekable", None)
        if seekable is not None and seekable():  # a plain layer's member: the ELF reader seeks in place
            # a Reader only promises read(); this one said seekable() above, so it is a seekable file
            reader.seek(0)  # type: ignore[attr-defined]
            f = _elf_facts(path, reader)  # type: ignore[arg-type]
            if f is not None and f.needed:
                facts.append(f)
            continue
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as tmp:
            tmp.write(head)
            shutil.copyfileobj(reader, tmp, 1 << 20)
            tmp.seek(0)
            f = _elf_facts(path, tmp)
        if f is not None and f.needed:
            facts.append(f)
    return facts


def _scan_layer(layer: Layer, cache: Cache, links: Mapping[str, str]) -> tuple[Tree, list[ElfFacts]]:
    """Scan one layer, cached by its digest (a multi-GB layer is read once)."""
    tree, facts, _ = _scan_layer_digest(layer, cache, links)
    return tree, facts


def scan_layer(layer: Layer, cache: Cache, links: Mapping[str, str]) -> None:
    """Scan one layer now and remember the scan by its digest (:func:`libdeps_for_layers` then reads it back):
    a build scans each layer as it is made."""
    _scan_layer_digest(layer, cache, links)


def _scan_key(layer: Layer, links: Mapping[str, str]) -> str:
    return f"{SCAN_FORMAT}:{layer.digest}:{json.dumps(dict(links), sort_keys=True)}"


def _known_scan(layer: Layer, cache: Cache, links: Mapping[str, str]) -> str | None:
    """The digest of ``layer``'s scan from the records alone (this machine's, or the shared build cache's): what
    a remembered answer is keyed by, known without reading the layer."""
    rec = cache.get_ref("debian-libdeps-scan", _scan_key(layer, links))
    digest = rec.get("digest") if isinstance(rec, dict) else None
    return digest if isinstance(digest, str) else None


def _scan_layer_digest(layer: Layer, cache: Cache, links: Mapping[str, str]) -> tuple[Tree, list[ElfFacts], str]:
    """:func:`_scan_layer`, plus the digest of the scan (paths, links and ELF facts; not file contents)."""
    key = _scan_key(layer, links)

    def scan() -> str:
        entries: list[list[str]] = []

        def recorded() -> Iterator[tuple[Entry, Reader | None]]:
            for e, r in layer.entries():
                entries.append([rebase_through_links(e.path, dict(links)) if links else e.path, e.kind, e.target])
                yield e, r

        facts = scan_items(recorded(), Tree(), links)
        elves = [[f.path, list(f.needed), list(f.rpath), list(f.runpath), f.machine, f.elfclass] for f in facts]
        return cache.put_bytes(json.dumps({"entries": entries, "elves": elves}).encode())

    digest = cache.memo(
        "debian-libdeps-scan",
        key,
        scan,
        encode=lambda d: {"digest": d},
        decode=lambda rec: rec["digest"] if cache.obtain(rec["digest"]) else None,  # here, or in the build cache
    )
    try:
        return (*_read_scan(cache, digest), digest)
    except (ValueError, KeyError, TypeError, IndexError):  # not a scan of this format: the layer is scanned again
        digest = scan()
        cache.put_ref("debian-libdeps-scan", key, {"digest": digest})
        return (*_read_scan(cache, digest), digest)


def _read_scan(cache: Cache, digest: str) -> tuple[Tree, list[ElfFacts]]:
    data = json.loads(cache.read(digest))
    tree = Tree()
    for p, kind, target in data["entries"]:
        if not posixpath.basename(p).startswith(".wh."):  # as scan_items: whiteouts are not files
            tree.add(p, kind, target)
    facts = [ElfFacts(f[0], tuple(f[1]), tuple(f[2]), tuple(f[3]), f[4], f[5]) for f in data["elves"]]
    return tree, facts


def _expand(d: str, origin: str, arch: str) -> str:
    t = TRIPLETS.get(arch, "")
    d = d.replace("${ORIGIN}", "$ORIGIN").replace("$ORIGIN", "/" + origin)
    d = d.replace("${LIB}", "$LIB").replace("$LIB", f"lib/{t}").replace("${PLATFORM}", "$PLATFORM")
    d = d.replace("$PLATFORM", {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch))
    return _norm(d)


def unsatisfied(
    facts: Sequence[ElfFacts], tree: Tree, arch: str, *, ld_library_path: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Sonames the loader would not find in ``tree`` (driver libraries aside): soname -> files needing it."""
    machine, elfclass = MACHINES.get(arch, ("", 0))
    sys_dirs = default_dirs(arch)
    out: dict[str, list[str]] = {}
    for f in facts:
        if machine and (f.machine != machine or f.elfclass != elfclass):
            continue  # another architecture's file: the loader would never load it here
        origin = posixpath.dirname(f.path)
        for so in f.needed:
            if driver_provided(so):
                continue
            if "/" in so:
                if tree.has(posixpath.dirname(_norm(so)), posixpath.basename(so)):
                    continue
                out.setdefault(so, []).append(f.path)
                continue
            dirs = [] if f.runpath else [_expand(d, origin, arch) for d in f.rpath]
            dirs += [_norm(d) for d in ld_library_path] + [_expand(d, origin, arch) for d in f.runpath]
            dirs += list(sys_dirs)
            if any(tree.has(d, so) for d in dirs):
                continue
            if tree.by_name.get(so):
                continue  # shipped elsewhere in the image (a wheel's library that another preloads)
            out.setdefault(so, []).append(f.path)
    return out


# -- Contents: soname -> packages -------------------------------------------------------------------
_LIBNAME = re.compile(r"\.so(\.|$)")


#: Parsed Contents maps of this process, by map digest (a map is ~10 MB of JSON; read it once).
_MAPS: dict[str, dict[str, list[list[str]]]] = {}


def _so_lines(fh: Reader) -> Iterator[bytes]:
    """The lines (without their newline) that name a ``.so``: the stream is read in big blocks and searched
    there (a Contents file has millions of lines; reading them one by one through gzip took seconds)."""
    rest = b""
    while chunk := fh.read(8 << 20):
        buf = rest + chunk
        cut = buf.rfind(b"\n") + 1
        rest = buf[cut:]
        yield from _lines_with(buf, b".so", cut)
    if rest:
        yield from _lines_with(rest + b"\n", b".so", len(rest) + 1)


def _lines_with(buf: bytes, needle: bytes, end: int) -> Iterator[bytes]:
    """The whole lines of ``buf[:end]`` (which ends with a newline) that contain ``needle``, in order."""
    pos = 0
    while (i := buf.find(needle, pos, end)) >= 0:
        start = buf.rfind(b"\n", 0, i) + 1
        stop = buf.find(b"\n", i, end)
        yield buf[start:stop]
        pos = stop + 1


def _contents_part(cache: Cache, index_digest: str) -> dict[str, list[list[str]]]:
    """The shared-library part of one Contents index (``name -> [[folder, package]]``), kept in the cache as
    a blob and in this process by that blob's digest."""

    def parse() -> str:
        part = _parse_contents(cache, index_digest)
        map_digest = cache.put_bytes(json.dumps(part, sort_keys=True, separators=(",", ":")).encode())
        _MAPS[map_digest] = part
        return map_digest

    map_digest = cache.memo(
        "debian-contents",
        f"{CONTENTS_FORMAT}:{index_digest}",
        parse,
        encode=lambda d: {"digest": d},
        decode=lambda rec: rec["digest"] if rec["digest"] in _MAPS or cache.has(rec["digest"]) else None,
    )
    if map_digest not in _MAPS:
        _MAPS[map_digest] = json.loads(cache.read(map_digest))
    return _MAPS[map_digest]


def _parse_contents(cache: Cache, index_digest: str) -> dict[str, list[list[str]]]:
    part: dict[str, list[list[str]]] = {}
    with cache.open(index_digest) as raw:
        head = raw.read(6)
        raw.seek(0)
        opener = gzip.open if head[:2] == b"\x1f\x8b" else lzma.open if head[:6] == b"\xfd7zXZ\x00" else None
        fh = opener(raw) if opener else raw
        for raw_line in _so_lines(fh):
            line = raw_line.decode("utf-8", "replace")
            try:
                path, locs = line.rsplit(None, 1)
            except ValueError:
                continue
            path = path.strip()
            name = posixpath.basename(path)
            if not _LIBNAME.search(name):
                continue
            d = posixpath.dirname(path)
            for loc in locs.split(","):
                part.setdefault(name, []).append([d, loc.rsplit("/", 1)[-1]])
    return part


def _contents_map(repo: Repository, arch: str, cache: Cache) -> dict[str, list[tuple[str, str]]]:
    """``soname -> [(folder, package)]`` for every shared-library file name in the suites' Contents."""
    out: dict[str, list[tuple[str, str]]] = {}
    for _suite, digest in repo.contents(arch):
        part = _contents_part(cache, digest)
        for name, places in part.items():
            lst = out.setdefault(name, [])
            for d, pkg in places:
                if (d, pkg) not in lst:
                    lst.append((d, pkg))
    return out


def _canon_dir(d: str, links: Mapping[str, str]) -> str:
    return rebase_through_links(d, dict(links)) if d not in links else links[d]


def map_sonames(
    missing: Mapping[str, Sequence[str]],
    repo: Repository,
    arch: str,
    cache: Cache,
    *,
    installed: Iterable[str],
    links: Mapping[str, str],
    label: str,
) -> list[LibDep]:
    """The package for each missing soname: one that ships it in a standard folder (exact name)."""
    if not missing:
        return []
    contents = _contents_map(repo, arch, cache)
    index = repo.index(arch)
    installed = set(installed)
    std = {_canon_dir(d, links) for d in default_dirs(arch)}
    out: list[LibDep] = []
    for so in sorted(missing):
        files = tuple(sorted("/" + p for p in set(missing[so])))
        locs = [(d, p) for d, p in contents.get(so, []) if p in index]
        in_std = [(d, p) for d, p in locs if _canon_dir(d, links) in std]
        if not in_std:
            where = ", ".join(sorted({f"/{d} ({p})" for d, p in locs})[:4])
            detail = (
                (
                    f"{label} ships it only outside the loader's folders: {where} (Debian links those with "
                    "update-alternatives, a maintainer script gpuship does not run)"
                )
                if locs
                else f"no {label} package ships it"
            )
            raise ResolveError(
                f"{so}, needed by {files[0]}, is not in the image and {detail}",
                "bundle the library with the wheel, install a package that provides it through system-packages, "
                "or use a build of that wheel that does not need it",
            )

        def rank(dp: tuple[str, str]) -> tuple[int, int, str, str]:
            d, p = dp
            dev = int(p.endswith(("-dev", "-dbg", "-dbgsym")))
            return (int(p not in installed), dev, p, d)

        d, pkg = sorted(in_std, key=rank)[0]
        if pkg in installed:
            continue  # the base has it already (under a path the tree did not show, e.g. a merged-/usr alias)
        out.append(LibDep(pkg, so, files, f"/{_canon_dir(d, links)}/{so}"))
    return out


def _ld_library_path(env: Mapping[str, str] | None) -> list[str]:
    raw = (env or {}).get("LD_LIBRARY_PATH", "")
    return [p for p in raw.split(":") if p]


def libdeps_for_layers(
    layers: Sequence[Layer],
    base,  # DebianBase (not imported: no cycle)
    cache: Cache | None = None,
    *,
    env: Mapping[str, str] | None = None,
    ignore: Iterable[str] = (),
    progress: Progress = NO_PROGRESS,
) -> list[LibDep]:
    """The Debian packages ``layers`` (upper layers over ``base``) need for their shared libraries.

    ``env`` is the image environment (its ``LD_LIBRARY_PATH`` counts); ``ignore`` holds soname patterns
    known to be provided at run time besides the NVIDIA driver's.
    """
    cache = cache or Cache()
    links = dict(base.links)
    ignore = tuple(ignore)
    known = [_known_scan(layer, cache, links) for layer in (*base.layers, *layers)]
    if all(known):  # every scan is known by its digest: a remembered answer needs no layer read
        rec = cache.get_ref("libdeps-results", _results_key([str(d) for d in known], base, env, ignore))
        if isinstance(rec, list):
            return [LibDep(d["package"], d["soname"], tuple(d["needed_by"]), d["path"]) for d in rec]
    tree = Tree()
    scans: list[str] = []
    for layer in base.layers:
        t, _, d = _scan_layer_digest(layer, cache, links)
        _merge(tree, t)
        scans.append(d)
    facts: list[ElfFacts] = []
    for layer in layers:
        progress.step(f"scanning {layer.digest[:19]} for shared libraries")
        t, f, d = _scan_layer_digest(layer, cache, links)
        _merge(tree, t)
        facts += f
        scans.append(d)
    key = _results_key(scans, base, env, ignore)
    return cache.memo(
        "libdeps-results",
        key,
        lambda: _finish(facts, tree, base, cache, env, ignore, progress),
        encode=lambda deps: [
            {"package": d.package, "soname": d.soname, "needed_by": list(d.needed_by), "path": d.path} for d in deps
        ],
        decode=lambda rec: [LibDep(d["package"], d["soname"], tuple(d["needed_by"]), d["path"]) for d in rec],
    )


def _results_key(scans: Sequence[str], base, env: Mapping[str, str] | None, ignore: Sequence[str]) -> str:
    """What find-libdeps' answer depends on: the scans (paths and ELF facts, not file contents), the base and the
    settings; an edit to an app file that adds no library reuses it."""
    key = json.dumps([SCAN_FORMAT, list(scans), list(base.packages), dict(env or {}), sorted(ignore)], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def libdeps_for_tree(
    root: Path | str,
    base,
    cache: Cache | None = None,
    *,
    prefix: str | None = None,
    env: Mapping[str, str] | None = None,
    ignore: Iterable[str] = (),
    progress: Progress = NO_PROGRESS,
) -> list[LibDep]:
    """:func:`libdeps_for_layers` for a folder on disk, placed at ``prefix`` in the image (default: its own path)."""
    cache = cache or Cache()
    root = Path(root)
    if not root.is_dir():
        raise GpushipError(f"{root} is not a folder", "give the folder of a virtual environment or an installed tree")
    where = clean_path(prefix if prefix is not None else str(root.resolve()))
    links = dict(base.links)
    tree = Tree()
    for layer in base.layers:
        _merge(tree, _scan_layer(layer, cache, links)[0])

    def items() -> Iterator[tuple[Entry, Reader | None]]:
        for e in entries_from_dir(root, where):
            if e.kind == "file" and e.open is not None:
                with e.open() as fh:
                    yield e, fh
            else:
                yield e, None

    facts = scan_items(items(), tree, links)
    return _finish(facts, tree, base, cache, env, ignore, progress)


def _merge(into: Tree, t: Tree) -> None:
    into.paths |= t.paths
    into.symlinks.update(t.symlinks)
    for k, v in t.by_name.items():
        into.by_name.setdefault(k, set()).update(v)


def _finish(facts, tree, base, cache, env, ignore, progress) -> list[LibDep]:
    arch = base.platform.architecture
    pats = tuple(ignore)
    missing = {
        so: files
        for so, files in unsatisfied(facts, tree, arch, ld_library_path=_ld_library_path(env)).items()
        if not any(fnmatch.fnmatchcase(so, p) for p in pats)
    }
    if not missing:
        return []
    progress.step(f"looking up {len(missing)} sonames in the Debian Contents index")
    repo = Repository(base.suites, cache, progress=progress)
    try:
        label = f"{base.suites[0].name} {arch}" if base.suites else arch
        return map_sonames(missing, repo, arch, cache, installed=base.package_names(), links=base.links, label=label)
    finally:
        repo.close()


__all__ = ["DRIVER_PROVIDED", "LibDep", "libdeps_for_layers", "libdeps_for_tree"]
