"""What a base image already holds, read from its layers without running it (no daemon, no container).

:func:`base_facts` walks the layers bottom-up, honouring whiteouts (``.wh.<name>`` deletes a path and what
is under it in lower layers; ``.wh..wh..opq`` empties a directory of lower content), and keeps only what
the planner needs: ``/etc/os-release``, the Python interpreter (``/usr/local/bin/python3*`` before
``/usr/bin/python3*``, as on ``PATH``), every installed distribution (``*.dist-info/METADATA`` and
``*.egg-info`` in any ``site-packages`` or ``dist-packages``), and the CUDA facts in the config's
environment (``CUDA_VERSION``, ``NV_*``, ``NVIDIA_*``) or in ``/usr/local/cuda*/version.json``.
"""

from __future__ import annotations

import email.parser
import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from packaging.utils import canonicalize_name

from ..cache import Cache
from ..oci.entry import apply_whiteout, clean_path
from ..oci.image import Image
from ..oci.layer import Layer
from ..streams import Reader

FACTS_NS = "base-facts"
FACTS_VERSION = 1
MAX_READ = 1 << 20

_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_PYTHON = re.compile(r"(?:usr/local/bin|usr/bin)/python3(?:\.\d+)?")
_METADATA = re.compile(
    r"(?P<sp>(?:.+/)?(?:site|dist)-packages)/(?P<dir>[^/]+)\.(?:dist-info/METADATA|egg-info/PKG-INFO|egg-info)"
)
_CUDA_VERSION_JSON = re.compile(r"usr/local/cuda(?:-\d+(?:\.\d+)?)?/version\.json")
_CUDA_ENV = re.compile(r"(?:CUDA_|NV_|NVIDIA_|CUDNN_|NCCL_).*")


@dataclass(frozen=True)
class BaseFacts:
    """Facts about a base image. Paths are absolute (``/usr/local/lib/python3.11/site-packages``)."""

    os_release: Mapping[str, str] = field(default_factory=dict)
    python_version: str | None = None
    python_executable: str | None = None
    site_packages: tuple[str, ...] = ()
    distributions: Mapping[str, str] = field(default_factory=dict)
    cuda_version: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cuda_env: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["site_packages"] = list(self.site_packages)
        d["version"] = FACTS_VERSION
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> BaseFacts:
        """The facts :meth:`to_json` recorded (a field of another shape reads as missing)."""
        return cls(
            os_release=_str_map(d.get("os_release")),
            python_version=_str_or_none(d.get("python_version")),
            python_executable=_str_or_none(d.get("python_executable")),
            site_packages=tuple(x for x in _list(d.get("site_packages")) if isinstance(x, str)),
            distributions=_str_map(d.get("distributions")),
            cuda_version=_str_or_none(d.get("cuda_version")),
            env=_str_map(d.get("env")),
            cuda_env=_str_map(d.get("cuda_env")),
        )

    @property
    def os_id(self) -> str:
        """``debian 12``, ``ubuntu 22.04`` (ID and VERSION_ID of os-release), or ``unknown``."""
        ident = self.os_release.get("ID", "")
        return f"{ident} {self.os_release.get('VERSION_ID', '')}".strip() or "unknown"


def _str_map(value: object) -> dict[str, str]:
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


@dataclass
class _Node:
    kind: str  # file, symlink, hardlink
    target: str = ""
    data: bytes | None = None


def _interesting(path: str) -> bool:
    return (
        path in _OS_RELEASE
        or _PYTHON.fullmatch(path) is not None
        or _METADATA.fullmatch(path) is not None
        or _CUDA_VERSION_JSON.fullmatch(path) is not None
    )


def _read_limited(fh: Reader | None) -> bytes:
    return fh.read(MAX_READ) if fh is not None else b""


def _scan_layer(layer: Layer, files: dict[str, _Node]) -> None:
    added: dict[str, _Node] = {}
    missing_links: dict[str, str] = {}
    for entry, fh in layer.entries():
        if apply_whiteout(entry.path, files):
            continue
        if entry.kind != "dir" and entry.path in files:
            del files[entry.path]
        if not _interesting(entry.path):
            continue
        if entry.kind == "file":
            added[entry.path] = _Node("file", data=_read_limited(fh))
        elif entry.kind == "symlink":
            added[entry.path] = _Node("symlink", target=entry.target)
        elif entry.kind == "hardlink":
            src = added.get(entry.target)
            if src is not None and src.data is not None:
                added[entry.path] = _Node("file", data=src.data)
            else:
                missing_links[entry.path] = entry.target
    if missing_links:  # hard links to files we did not keep: one more pass over this layer for their bytes
        wanted = set(missing_links.values())
        found: dict[str, bytes] = {}
        for entry, fh in layer.entries():
            if entry.path in wanted and entry.kind == "file":
                found[entry.path] = _read_limited(fh)
        for path, target in missing_links.items():
            if target in found:
                added[path] = _Node("file", data=found[target])
    files.update(added)


def _resolve(files: Mapping[str, _Node], path: str) -> tuple[str, _Node] | None:
    for _ in range(16):
        node = files.get(path)
        if node is None:
            return None
        if node.kind != "symlink":
            return path, node
        target = node.target
        path = clean_path(target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target))
    return None


def parse_os_release(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value.replace('\\"', '"').replace("\\\\", "\\")
    return out


def _python(files: Mapping[str, _Node], env: Mapping[str, str]) -> tuple[str | None, str | None]:
    candidates = ["usr/local/bin/python3", "usr/bin/python3"]
    versioned = sorted(
        (p for p in files if _PYTHON.fullmatch(p) and p.rsplit("/", 1)[1] != "python3"),
        key=lambda p: (not p.startswith("usr/local/"), [-int(x) for x in p.rsplit("python", 1)[1].split(".")]),
    )
    for path in candidates + versioned:
        hit = _resolve(files, path)
        if hit is None:
            continue
        real, _ = hit
        m = re.search(r"python(3\.\d+)$", real) or re.search(r"python(3\.\d+)$", path)
        version = m.group(1) if m else None
        full = env.get("PYTHON_VERSION", "")
        if version and full.startswith(version + "."):
            version = full
        return "/" + path, version
    return None, None


def _distributions(files: Mapping[str, _Node]) -> tuple[tuple[str, ...], dict[str, str]]:
    found: list[tuple[str, str, str]] = []  # (site-packages, name, version)
    parser = email.parser.HeaderParser()
    for path in files:
        m = _METADATA.fullmatch(path)
        if m is None:
            continue
        hit = _resolve(files, path)
        if hit is None or hit[1].data is None:
            continue
        headers = parser.parsestr(hit[1].data.decode("utf-8", errors="replace"))
        name, version = headers.get("Name"), headers.get("Version")
        if not name or not version:
            continue
        found.append(("/" + m.group("sp"), str(name).strip(), str(version).strip()))
    dirs = sorted({sp for sp, _, _ in found}, key=lambda sp: (not sp.startswith("/usr/local/"), sp))
    rank = {sp: i for i, sp in enumerate(dirs)}
    dists: dict[str, str] = {}
    for _sp, name, version in sorted(found, key=lambda t: -rank[t[0]]):
        dists[canonicalize_name(name)] = version  # earlier on sys.path wins, so it is written last
    return tuple(dirs), dict(sorted(dists.items()))


def _cuda_from_files(files: Mapping[str, _Node]) -> str | None:
    for path in sorted(files):
        if _CUDA_VERSION_JSON.fullmatch(path):
            hit = _resolve(files, path)
            if hit is None or hit[1].data is None:
                continue
            try:
                return str(json.loads(hit[1].data)["cuda"]["version"])
            except (ValueError, KeyError, TypeError):
                continue
    return None


def facts_from_layers(layers: Iterable[Layer], env: Mapping[str, str]) -> BaseFacts:
    files: dict[str, _Node] = {}
    for layer in layers:
        _scan_layer(layer, files)
    os_release: dict[str, str] = {}
    for p in _OS_RELEASE:
        hit = _resolve(files, p)
        if hit is not None and hit[1].data is not None:
            os_release = parse_os_release(hit[1].data.decode("utf-8", errors="replace"))
            break
    exe, version = _python(files, env)
    site_packages, dists = _distributions(files)
    cuda_env = {k: v for k, v in env.items() if _CUDA_ENV.fullmatch(k)}
    cuda = env.get("CUDA_VERSION") or _cuda_from_files(files)
    return BaseFacts(os_release, version, exe, site_packages, dists, cuda, dict(env), cuda_env)


def base_facts(image: Image, cache: Cache | None = None) -> BaseFacts:
    """Read a base image's facts from its layers (remembered in the cache by image digest)."""
    store = cache or (image.layers[0].cache if image.layers else None)

    def read() -> BaseFacts:
        return facts_from_layers(image.layers, image.config.env_dict())

    if store is None:
        return read()
    return store.memo(
        FACTS_NS,
        image.digest,
        read,
        encode=BaseFacts.to_json,
        decode=lambda rec: BaseFacts.from_json(rec) if rec.get("version") == FACTS_VERSION else None,
    )
