"""The app layer: the project's own files, minus what must never ship.

Left out: ``.git``, matches of ``.dockerignore`` and ``.gitignore`` (root files, gitignore syntax), caches and
virtual environments, and ``[tool.gpuship] exclude`` globs. What was left out is reported by reason; git-ignored
Python files (generated protobuf stubs, …) get a warning with the ``include`` line that ships them.
Secrets are left out with a warning unless named in ``include``: credential files by name (``.env``, ``*.pem``,
``id_rsa*``, ``.netrc``, ``.kube/config``, cloud and package-index credentials, …) and any file holding a private
key (see :mod:`gpuship.sources.secrets`).
Everything is owned by root and not writable by the app user: the app can read its code, not change it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pathspec

from ..cache import Cache
from ..errors import ConfigError
from ..oci import BlobCompression, Entry, Layer, cached_layer
from ..oci.entry import MAX_DEPTH
from .secrets import NOT_SECRETS, SECRET_PATTERNS, holds_private_key, looks_like_secret

__all__ = [
    "NOT_SECRETS",
    "SECRET_PATTERNS",
    "AppFiles",
    "app_layer",
    "left_out_warning",
    "looks_like_secret",
    "select_app_files",
]

#: Always left out: VCS data, caches, local environments, gpuship's own outputs.
ALWAYS_EXCLUDED = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".venv/",
    "venv/",
    ".tox/",
    ".nox/",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".ipynb_checkpoints/",
    "*.egg-info/",
    ".DS_Store",
    ".idea/",
    ".vscode/",
    "dist/",
    "build/",
    "*.oci",
    "*.tar",
    "gpuship.lock",
    "gpuship.toml",
    ".gpuship/",  # gpuship's own working files (gpuship dockerfile's build inputs, a build CA): never the app's
)

#: The defaults above that can hold what an app needs at run time (a built front-end, generated code): what they
#: leave out is reported, unlike VCS data and caches.
NOTEWORTHY_DEFAULTS = ("dist/", "build/", "*.oci", "*.tar")

#: Why a project file was left out, in the order the reasons are attributed (the last that matches wins).
REASONS = ("gpuship's defaults", ".gitignore", ".dockerignore", "exclude")


@dataclass(frozen=True)
class AppFiles:
    """The project files chosen for the image, and what was left out and why."""

    root: Path
    files: tuple[str, ...]
    secrets_skipped: tuple[str, ...]
    ignored: int
    #: those of ``secrets_skipped`` found by their contents (a private key), not their names
    secrets_by_content: tuple[str, ...] = ()

    def secret_warnings(self) -> list[str]:
        """One line per file left out as a secret, saying why."""
        return [
            f"left out {s}: "
            + ("it holds a private key" if s in self.secrets_by_content else "it looks like a secret")
            + " (name it in [tool.gpuship] include to ship it)"
            for s in self.secrets_skipped
        ]

    #: ``(path, reason)`` for each left-out file or directory (``build/``) worth telling the user about: those a
    #: default, ``.gitignore``, ``.dockerignore`` or ``exclude`` matched (VCS data and caches are not listed)
    left_out: tuple[tuple[str, str], ...] = ()

    def key(self) -> str:
        """A hash of the chosen files' paths, modes and contents: the app layer's cache key."""
        h = hashlib.sha256()
        for rel in self.files:
            p = self.root / rel
            st = p.lstat()
            h.update(rel.encode() + b"\0" + oct(st.st_mode).encode() + b"\0")
            if p.is_symlink():
                h.update(os.readlink(p).encode())
            else:
                with open(p, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
            h.update(b"\0")
        return h.hexdigest()

    def left_out_summary(self) -> str:
        """``3 by .gitignore (proto/api_pb2.py, …), 1 by gpuship's defaults (build/)``, or ``""``: Python files
        named first."""
        parts = []
        for reason in REASONS:
            names = sorted((p for p, r in self.left_out if r == reason), key=lambda p: (not p.endswith(".py"), p))
            if names:
                shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
                parts.append(f"{len(names)} by {reason} ({shown})")
        return "; ".join(parts)

    def may_need(self) -> tuple[str, ...]:
        """Left-out paths the app may well import at run time: Python files, and folders holding Python files,
        that ``.gitignore`` or a default dropped (generated protobuf stubs, generated packages). What
        ``.dockerignore`` or ``exclude`` names was left out on purpose; ``build/`` and ``dist/`` hold packaging
        output."""
        out = []
        for path, reason in self.left_out:
            if reason not in ("gpuship's defaults", ".gitignore"):
                continue
            if path.endswith(".py"):
                out.append(path)
            elif path.endswith("/") and path.rstrip("/").rsplit("/", 1)[-1] not in ("build", "dist"):
                if _holds_python(self.root / path):
                    out.append(path)
        return tuple(out)


def _holds_python(folder: Path, limit: int = 2000) -> bool:
    """Whether ``folder`` has a ``.py`` file among its first ``limit`` entries."""
    seen = 0
    for _, dirnames, filenames in os.walk(folder):
        if any(f.endswith(".py") for f in filenames):
            return True
        seen += len(dirnames) + len(filenames)
        if seen > limit:
            return False
    return False


def _ignore_lines(root: Path, name: str) -> list[str]:
    f = root / name
    if not f.is_file():
        return []
    return [ln for ln in f.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("#")]


def _spec(lines: Sequence[str]) -> pathspec.PathSpec:
    return pathspec.PathSpec.from_lines("gitwildmatch", lines)


def walk_project(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(root)``, refusing a folder more than :data:`~gpuship.oci.entry.MAX_DEPTH` levels down: no image
    could hold it, and walking it would exhaust Python's recursion (``os.walk`` recurses)."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel != "." and rel.count(os.sep) + 1 >= MAX_DEPTH:
            raise ConfigError(
                f"{root}/{rel[:60]}... is more than {MAX_DEPTH} folders deep",
                "no image can hold it: leave it out ([tool.gpuship] exclude) or flatten it",
            )
        yield dirpath, dirnames, filenames


def _ignore_spec(root: Path, extra: Sequence[str]) -> pathspec.PathSpec:
    return _spec(
        list(ALWAYS_EXCLUDED) + _ignore_lines(root, ".gitignore") + _ignore_lines(root, ".dockerignore") + list(extra)
    )


def select_app_files(root: Path, *, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> AppFiles:
    """Walk the project and choose the files for the app layer; record what was left out and why."""
    root = root.resolve()
    ignore = _ignore_spec(root, exclude)  # the decision: one spec, so a later "!name" line re-includes
    why = [  # the attribution: which source's rules match (the last that does names the reason)
        (REASONS[0], _spec(NOTEWORTHY_DEFAULTS)),
        (REASONS[1], _spec(_ignore_lines(root, ".gitignore"))),
        (REASONS[2], _spec(_ignore_lines(root, ".dockerignore"))),
        (REASONS[3], _spec(exclude)),
    ]
    forced = _spec(include) if include else None
    chosen: list[str] = []
    secrets: list[str] = []
    by_content: list[str] = []
    ignored = 0
    left_out: list[tuple[str, str]] = []

    silent = _spec([p for p in ALWAYS_EXCLUDED if p not in NOTEWORTHY_DEFAULTS])  # VCS data, caches, venvs

    def leave_out(rel: str) -> None:
        nonlocal ignored
        ignored += 1
        reason = "" if silent.match_file(rel) else next((r for r, sp in reversed(why) if sp.match_file(rel)), "")
        if reason:
            left_out.append((rel, reason))

    for dirpath, dirnames, filenames in walk_project(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        keep_dirs = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if ignore.match_file(rel + "/") and not (forced and forced.match_file(rel + "/")):
                leave_out(rel + "/")
                continue
            keep_dirs.append(d)
        dirnames[:] = keep_dirs
        for f in sorted(filenames):
            rel = f"{rel_dir}/{f}" if rel_dir else f
            is_forced = bool(forced and forced.match_file(rel))
            if ignore.match_file(rel) and not is_forced:
                leave_out(rel)
                continue
            if looks_like_secret(rel) and not is_forced:
                secrets.append(rel)
                continue
            full = Path(dirpath, f)
            if not (full.is_file() or full.is_symlink()):
                ignored += 1
                continue
            if not is_forced and not full.is_symlink() and holds_private_key(full):
                secrets.append(rel)
                by_content.append(rel)
                continue
            chosen.append(rel)
    return AppFiles(
        root, tuple(sorted(chosen)), tuple(sorted(secrets)), ignored, tuple(sorted(by_content)), tuple(sorted(left_out))
    )


def left_out_warning(app: AppFiles, where: str = "[tool.gpuship]") -> str | None:
    """One warning line for :meth:`AppFiles.may_need`, with the ``include`` line that ships them, else None."""
    need = app.may_need()
    if not need:
        return None
    reasons = sorted({r for p, r in app.left_out if p in need})
    shown = ", ".join(need[:4]) + (f" and {len(need) - 4} more" if len(need) > 4 else "")
    include = ", ".join(f'"{p}"' for p in need[:4])
    return (
        f"left out {len(need)} {'path' if len(need) == 1 else 'paths'} the app may need at run time "
        f"({' and '.join(reasons)}): {shown}; ship them with include = [{include}] in {where} "
        "(or list them in exclude to silence this)"
    )


def app_entries(app: AppFiles, dest: str) -> Iterator[Entry]:
    """Entries for the chosen files under ``dest`` (e.g. ``/app``), owned by root, read-only for others."""
    for rel in app.files:
        p = app.root / rel
        target = f"{dest.rstrip('/')}/{rel}"
        if p.is_symlink():
            yield Entry.symlink(target, os.readlink(p))
            continue
        mode = 0o755 if os.access(p, os.X_OK) else 0o644
        clean = _without_logins(rel, p)
        yield Entry.file(target, p if clean is None else clean, mode=mode)


#: Project input files that may name a package index with its login (``index-url = "https://u:t@host/simple"``,
#: ``--index-url`` lines): their copies in the image have the logins taken out of every URL.
INDEX_BEARING = (
    "pyproject.toml",
    "gpuship.toml",
    "uv.toml",
    "setup.cfg",
    "requirements*.txt",
    "requirements*.in",
    "requirements/*.txt",
    "requirements/*.in",
    "constraints*.txt",
    "environment.yml",
    "environment.yaml",
)
_URL_LOGIN = re.compile(rb"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"<>]+@")


def _without_logins(rel: str, path: Path) -> bytes | None:
    """The file's bytes with URL logins taken out, if it is an index-bearing input that holds one; else None."""
    if not any(fnmatch.fnmatch(rel, p) for p in INDEX_BEARING) or path.stat().st_size > 1 << 20:
        return None
    data = path.read_bytes()
    cleaned = _URL_LOGIN.sub(rb"\1", data)
    return cleaned if cleaned != data else None


def app_layer(app: AppFiles, dest: str, cache: Cache, *, compression: BlobCompression = "none") -> Layer:
    return cached_layer(
        cache,
        f"app:{dest}:{app.key()}:no-index-logins",
        lambda: app_entries(app, dest),
        compression=compression,
        comment=f"app: {len(app.files)} files",
    )
