"""A no-change rebuild does almost nothing: a build's inputs and outputs are remembered, and the same request
over the same inputs, with its outputs still in place, is answered from that record.

The record is keyed by :func:`fingerprint` — gpuship's own version and source files, the request (project
directory, outputs, tag, platforms, extras, base, compression, ``--locked``; not the names ``docker:`` outputs
load as, nor the tag when every output is an engine), the environment variables a build
reads (``SOURCE_DATE_EPOCH``, ``GPUSHIP_*``, ``UV_*``, ``PIP_*``, ``DOCKER_*``), every file of the project
directory (path, size, mode, mtime, ctime: a rewrite that keeps the size and the mtime, as ``rsync -t`` does,
changes the ctime), its git revision, and the host Pythons gpuship compiles byte code with — and
it is kept only while the Debian indexes it was built from are fresh (``GPUSHIP_DEBIAN_INDEX_TTL``). An output
counts as still in place when the engine still has the image (``docker tag`` of its ID succeeds) or the file or
layout is the one written (same inode, size and mtime). A build to another ``docker:`` name (or ``--tag``) of
the same inputs is the same image: it is answered by ``docker tag IMAGE-ID NEW-NAME``, with the report and the
SBOM naming the new image. Anything else — a registry base or output, a model not pinned by hash
(:func:`gpuship.sources.models.pinned`), local files from outside the project in the lock, ``gpuship dev`` — is
never remembered: those builds run in full.

Each record is also the last build over its inputs but the project's files (:func:`edited`): when all that
changed since is the contents of Python sources of its app layer, an edit rebuild starts from its image
(:mod:`gpuship.editbuild`).

This module imports only the standard library, so ``gpuship build`` can answer before loading the rest of
gpuship (:func:`gpuship.cli.app.main`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any  # Any: the rebuild record, JSON this module writes and reads back

from . import __version__

#: Bump when what is remembered, or how it is checked, changes.
MEMO_VERSION = 2
NAMESPACE = "build-memo"
#: the key of the last build over the same inputs but the project's files (by :attr:`Snapshot.rest_key`): where
#: an edit rebuild starts
LAST_NAMESPACE = "build-memo-last"
_ENV_PREFIXES = ("GPUSHIP_", "UV_", "PIP_", "DOCKER_")
_ENV_NAMES = ("SOURCE_DATE_EPOCH",)
_SKIP_DIRS = frozenset({".git"})


@dataclass(frozen=True)
class Request:
    """What a build is asked for (the command line, after defaults)."""

    project_dir: Path
    outputs: tuple[str, ...]
    platforms: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    locked: bool = False
    compression: str | None = None
    tag: str | None = None
    base: str | None = None

    @property
    def engine_only(self) -> bool:
        """Every output is an engine (``docker:``): the tag names the image and nothing else."""
        return bool(self.outputs) and all(t.startswith("docker:") for t in self.outputs)

    def key_parts(self) -> list[Any]:
        """The request as its record is keyed: the names the ``docker:`` outputs load as are left out (the image
        is the same, only tagged otherwise), and so is the tag when every output is an engine."""
        return [
            str(self.project_dir.resolve()),
            _unnamed(self.outputs),
            list(self.platforms),
            list(self.extras),
            self.locked,
            self.compression,
            None if self.engine_only else self.tag,
            self.base,
        ]

    def image_name(self, default: str) -> str:
        """The image's name (the build report's ``image``, the SBOM's): the tag, else the project's
        ``name:version`` (``default``)."""
        return self.tag or default

    def engine_names(self, default: str) -> list[str] | None:
        """The name each ``docker:`` output loads as (``docker:NAME[:TAG]``, else the image's name), as the
        engine writes it (``:latest`` added); None for a name this module does not answer for (the full build
        checks it and says what is wrong)."""
        names = []
        for target in self.outputs:
            if not target.startswith("docker:"):
                continue
            text = (target.partition(":")[2] or self.image_name(default)).strip()
            if not text or "@" in text or any(c.isspace() for c in text):
                return None
            names.append(text if ":" in text.rsplit("/", 1)[-1] else f"{text}:latest")
        return names


def _unnamed(outputs: Sequence[str]) -> list[str]:
    """``outputs`` with the names of the ``docker:`` ones left out."""
    return ["docker:" if t.startswith("docker:") else t for t in outputs]


def _cache_root() -> Path:
    env = os.environ.get("GPUSHIP_CACHE")
    if env:
        return Path(env)
    import platformdirs  # the no-change answer comes before anything else loads

    return Path(platformdirs.user_cache_dir("gpuship"))


def _record_path(root: Path, key: str) -> Path:
    return root / "refs" / NAMESPACE / key


def _walk(
    root: Path, skip: frozenset[Path], skip_dirs: frozenset[str] = _SKIP_DIRS
) -> Iterator[tuple[str, int, int, int, int]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if Path(full) in skip:
                continue
            try:
                st = os.lstat(full)
            except OSError:
                continue
            yield os.path.relpath(full, root), st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns


def _own_sources() -> list[Any]:
    """gpuship's version and its source files (a development checkout changes without a version bump)."""

    here = Path(__file__).resolve().parent
    return [__version__, list(_walk(here, frozenset(), frozenset({"__pycache__"})))]


def _git_revision(project_dir: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(project_dir), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _host_pythons(root: Path) -> list[Any]:
    out = []
    folder = root / "refs" / "host-python"
    for p in sorted(folder.glob("*")) if folder.is_dir() else ():
        try:
            rec = json.loads(p.read_text())
            st = os.stat(rec["path"])
            out.append([p.name, rec["path"], st.st_ino, st.st_size, st.st_mtime_ns])
        except (OSError, ValueError, KeyError, TypeError):
            out.append([p.name, None])
    return out


def output_paths(outputs: Sequence[str]) -> list[Path]:
    """The files and folders the outputs write (``oci:DIR``, ``oci-archive:FILE``, ``docker-archive:FILE``)."""
    paths = []
    for target in outputs:
        scheme, _, rest = target.partition(":")
        if scheme in ("oci", "oci-archive", "docker-archive") and rest:
            paths.append(Path(rest.split(":", 1)[0]).resolve())
    return paths


@dataclass(frozen=True)
class Snapshot:
    """A request's inputs as they are now: the project's files (``walk``: path, size, mode, mtime, ctime) and
    everything else (``rest``, see the module doc). ``key`` is its record's key."""

    rest: list[Any]
    walk: list[list[Any]]

    @property
    def key(self) -> str:
        return _sha256([self.rest, self.walk])

    def same_during_build(self, after: Snapshot) -> bool:
        """Whether ``after`` (taken when a build ended) shows the inputs this snapshot (taken when it began)
        showed: the project's files and everything else, but the host Pythons, which a build from an empty cache
        finds and records on its way (their record is then part of ``after``'s key, the one remembered)."""
        return self.walk == after.walk and self.rest[:-1] == after.rest[:-1]

    @property
    def rest_key(self) -> str:
        return _sha256(self.rest)


def _sha256(value: object) -> str:
    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()


def snapshot(request: Request, *, skip: Sequence[Path] = (), environ: Mapping[str, str] | None = None) -> Snapshot:
    """The inputs of ``request`` now (see the module doc); ``skip``: files left out of the project walk (the
    build's own outputs and report, when they lie inside the project)."""
    env = os.environ if environ is None else environ
    project = request.project_dir.resolve()
    left_out = frozenset(Path(p).resolve() for p in (*skip, *output_paths(request.outputs)))
    rest = [
        MEMO_VERSION,
        _own_sources(),
        request.key_parts(),
        sorted((k, v) for k, v in env.items() if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)),
        _git_revision(project),
        _host_pythons(_cache_root()),  # last: see Snapshot.same_during_build
    ]
    return Snapshot(rest, [list(w) for w in _walk(project, left_out)])


def rewalked(now: Snapshot, request: Request, *, skip: Sequence[Path] = ()) -> Snapshot:
    """``now`` with the project walked again (the rest, gpuship and the environment, does not change while a
    build runs)."""
    left_out = frozenset(Path(p).resolve() for p in (*skip, *output_paths(request.outputs)))
    return Snapshot(now.rest, [list(w) for w in _walk(request.project_dir.resolve(), left_out)])


def fingerprint(request: Request, *, skip: Sequence[Path] = (), environ: Mapping[str, str] | None = None) -> str:
    """The record key of ``request`` over the current inputs (:func:`snapshot`)."""
    return snapshot(request, skip=skip, environ=environ).key


def _identity(path: Path) -> list[int] | None:
    target = path / "index.json" if path.is_dir() else path
    try:
        st = os.stat(target)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _index_expiry(root: Path) -> float | None:
    """When the first of the cached Debian InRelease files is due to be fetched again."""
    raw = os.environ.get("GPUSHIP_DEBIAN_INDEX_TTL", "")
    try:
        ttl = float(raw) if raw else 6 * 3600.0
    except ValueError:
        return 0.0
    folder = root / "refs" / "debian-inrelease"
    times = []
    for p in folder.glob("*") if folder.is_dir() else ():
        try:
            times.append(float(json.loads(p.read_text())["fetched"]))
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0
    return min(times) + ttl if times else None


def remember(
    now: Snapshot,
    request: Request,
    image_ids: Sequence[str],
    default_name: str,
    result: Mapping[str, Any],
    edit: Mapping[str, Any] | None = None,
) -> None:
    """Record a finished build of ``request`` over the inputs ``now``: the image ID each ``docker:`` output
    loaded (in order), the image's default name (``name:version``, for a build without ``--tag``), each written
    file's identity, ``result`` (the report and SBOM texts, the warnings, the layer table) and, for a build an
    edit of its app files may start from (:func:`edited`), ``edit``. The record is also the request's last."""
    root = _cache_root()
    files = {str(p): _identity(p) for p in output_paths(request.outputs)}
    rec = {
        "outputs": list(request.outputs),
        "docker": list(image_ids),
        "default_name": default_name,
        "files": files,
        "expires": _index_expiry(root),
        "result": dict(result),
        "edit": dict(edit) if edit is not None else None,
        "made": time.time(),
    }
    _write_record(root, _record_path(root, now.key), rec)
    _write_record(root, _last_path(root, now), {"key": now.key, "walk": now.walk})


def _last_path(root: Path, now: Snapshot) -> Path:
    return root / "refs" / LAST_NAMESPACE / now.rest_key


def _write_record(root: Path, path: Path, rec: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root / "tmp" if (root / "tmp").is_dir() else path.parent, prefix="memo-")
    with os.fdopen(fd, "w") as fh:
        json.dump(rec, fh)
    os.replace(tmp, path)


def forget(key: str) -> None:
    _record_path(_cache_root(), key).unlink(missing_ok=True)


def _engine_tag(image_id: str, name: str) -> bool:
    """``docker tag ID NAME``: succeeds only while the engine has the image. Asked of the engine's socket
    directly where the ``docker`` command would talk to it (a no-change answer then takes no CLI start-up,
    ~35 ms here); else through the command."""
    answer = _socket_tag(image_id, name)
    if answer is not None:
        return answer
    try:
        proc = subprocess.run(["docker", "tag", image_id, name], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def engine_socket() -> str | None:
    """The Docker Engine's local socket, when the ``docker`` command would use it: ``DOCKER_HOST=unix://PATH`` or
    no ``DOCKER_HOST``, no ``DOCKER_CONTEXT``, and no other context chosen in the CLI's ``config.json``."""
    host = os.environ.get("DOCKER_HOST", "")
    if os.environ.get("DOCKER_CONTEXT") or (host and not host.startswith("unix://")):
        return None
    config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        context = json.loads(config.read_text()).get("currentContext")
    except (OSError, ValueError, AttributeError):
        context = None
    if context not in (None, "", "default"):
        return None
    path = host[len("unix://") :] if host else "/var/run/docker.sock"
    return path if os.path.exists(path) else None


def _socket_tag(image_id: str, name: str) -> bool | None:
    """``POST /images/ID/tag`` on the engine's socket: whether it tagged (201) or has no such image (404); None
    when it cannot be asked this way (the caller uses the command)."""
    import socket  # standard library; only for an answer that tags
    from urllib.parse import quote  # (the same)

    path = engine_socket()
    last = name.rsplit("/", 1)[-1]
    repo, tag = name.rsplit(":", 1) if ":" in last else (name, "latest")
    if path is None or not repo:
        return None
    query = f"repo={quote(repo, safe='')}&tag={quote(tag, safe='')}"
    request = f"POST /images/{quote(image_id, safe=':')}/tag?{query} HTTP/1.0\r\nHost: docker\r\n\r\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(path)
            sock.sendall(request.encode())
            status = sock.recv(64).split(b" ", 2)
    except OSError:
        return None
    code = status[1] if len(status) > 1 else b""
    return True if code == b"201" else False if code == b"404" else None


def recall(request: Request, *, skip: Sequence[Path] = (), now: Snapshot | None = None) -> dict[str, Any] | None:
    """The remembered result of ``request`` when its inputs are unchanged and its outputs still in place (the
    engine's images are tagged with the names asked for on the way; the report and the SBOM name the image as
    asked); else None."""
    root = _cache_root()
    key = (now or snapshot(request, skip=skip)).key
    try:
        rec = json.loads(_record_path(root, key).read_text())
    except (OSError, ValueError):
        return None
    if not _fresh(rec) or _unnamed(rec.get("outputs") or ()) != _unnamed(request.outputs):
        return None
    for path, ident in (rec.get("files") or {}).items():
        if ident is None or _identity(Path(path)) != ident:
            return None
    default = str(rec.get("default_name") or "")
    names = request.engine_names(default)
    ids = rec.get("docker") or []
    if names is None or len(names) != len(ids) or "@" in request.image_name(default):
        return None
    for image_id, name in zip(ids, names, strict=True):
        if not _engine_tag(image_id, name):
            return None
    said = iter(names)
    written = [
        f"loaded into Docker as {next(said)} (the engine had the image: tagged)"
        if target.startswith("docker:")
        else f"{target} (unchanged)"
        for target in request.outputs
    ]
    return renamed(rec["result"], request, default) | {"key": key, "written": written}


def renamed(result: Mapping[str, Any], request: Request, default: str) -> dict[str, Any]:
    """A remembered ``result`` (report, SBOM) as the answer to ``request``: the image named as it asks (its tag,
    its ``docker:`` outputs), every layer reused; the rest as remembered."""
    out = dict(result)
    report = dict(out["report"])
    name = request.image_name(default)
    was = report.get("image")
    report["outputs"] = [
        t if t.startswith("docker:") else old
        for t, old in zip(request.outputs, report.get("outputs") or (), strict=True)
    ]
    report["image"] = name
    report["platforms"] = [
        dict(p, layers=[dict(layer, reused=True) for layer in p.get("layers") or ()])
        for p in report.get("platforms") or ()
    ]  # nothing was built this time
    out["report"] = report
    out["rows"] = [[*r[:5], "cached", *r[6:]] for r in out.get("rows") or ()]
    if "sbom" in out and was != name:
        out["sbom"] = edited_sbom(out["sbom"], name, report["digest"], name=name)
    return out


def edited_sbom(text: str, image_name: str, digest: str, /, namespace: str | None = None, **image: str) -> str:
    """The SPDX document ``text`` (:func:`gpuship.sbom.write_spdx`'s) for the image ``image_name@digest``: its
    name, ``namespace`` when given, and ``image``'s fields set on the image's package."""
    doc = json.loads(text)
    doc["name"] = f"{image_name}@{digest}"
    if namespace is not None:
        doc["documentNamespace"] = namespace
    for package in doc.get("packages") or ():
        if package.get("SPDXID") == "SPDXRef-image":
            package.update(image)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _fresh(rec: Mapping[str, Any]) -> bool:
    expires = rec.get("expires")
    return expires is None or time.time() < float(expires)


@dataclass(frozen=True)
class Edited:
    """Since the last build of a request, only some of its app files changed (:func:`edited`)."""

    #: the last build's record
    record: dict[str, Any]
    #: the project files changed since (paths in the project)
    changed: tuple[str, ...]
    #: the inputs now
    now: Snapshot


def edited(request: Request, *, skip: Sequence[Path] = (), now: Snapshot | None = None) -> Edited | None:
    """The last build of ``request`` over the same inputs but the project's files, when all that changed in those
    since is the contents of files it named editable (its ``edit``: Python sources of the app layer, their modes
    unchanged) and the Debian indexes it was built from are still fresh; else None."""
    root = _cache_root()
    now = now or snapshot(request, skip=skip)
    try:
        last = json.loads(_last_path(root, now).read_text())
        rec = json.loads(_record_path(root, str(last["key"])).read_text())
        edit = rec.get("edit") or {}
        editable = frozenset(edit.get("editable") or ())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not editable or not _fresh(rec) or _unnamed(rec.get("outputs") or ()) != _unnamed(request.outputs):
        return None
    before = {str(w[0]): w[1:] for w in last.get("walk") or ()}
    after = {str(w[0]): w[1:] for w in now.walk}
    if before.keys() != after.keys():
        return None
    changed = tuple(p for p, stat in after.items() if stat != before[p])
    if not changed or any(p not in editable or after[p][1] != before[p][1] for p in changed):  # [1]: the mode
        return None
    return Edited(rec, changed, now)


def human_size(n: int) -> str:
    """``7.4 MB``, ``1.23 GB``, ``812 kB``: at most 8 characters, decimal units as registries and engines show."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale * 0.95:
            value = n / scale
            return f"{value:.2f} {unit}" if unit == "GB" and value < 10 else f"{value:.1f} {unit}"
    return f"{n} B"
