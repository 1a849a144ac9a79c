"""Model files of the project: picked out of the app files, grouped by directory, one layer per group (and one
per large file), keyed by content so an unchanged model is never built, compressed, loaded or pushed again.

A file is a model file when the last of :data:`~gpuship.config.MODEL_PATTERNS` and ``[tool.gpuship] models``
patterns that matches it is not a ``!`` pattern (gitignore rules). Patterns the user wrote also bring in files
that ``.gitignore``/``.dockerignore`` leave out of the app (weights are often git-ignored); files that look like
secrets never come in that way.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import pathspec

from ...cache import Cache
from ...config import MODEL_PATTERNS, ModelsConfig
from ...oci import Entry
from ...streams import sha256_file
from ..app import AppFiles, looks_like_secret, walk_project
from ..secrets import holds_private_key

#: A model file this big gets a layer of its own (the others of its directory share one).
LARGE_FILE = 256 << 20


@dataclass(frozen=True)
class ModelFile:
    rel: str  # path in the project (and under the workdir in the image)
    size: int
    digest: str  # sha256:...
    mode: int
    link: str = ""  # a symlink's target


@dataclass(frozen=True)
class LocalModel:
    """One layer's worth of project model files: a directory's model files, or one large file."""

    name: str  # the directory (or the large file), relative to the project
    files: tuple[ModelFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def model_spec(models: ModelsConfig) -> pathspec.PathSpec:
    return pathspec.PathSpec.from_lines("gitignore", [*MODEL_PATTERNS, *models.patterns])


def project_model_files(root: Path, app: AppFiles, models: ModelsConfig) -> tuple[str, ...]:
    """The project's model files: app files the patterns name, and ignored files the user's own patterns name."""
    spec = model_spec(models)
    chosen = {rel for rel in app.files if spec.match_file(rel)}
    user = [p for p in models.patterns if not p.startswith("!")]
    if user:  # the user's patterns reach files the ignore rules left out of the app (not secrets, not VCS data)
        own = pathspec.PathSpec.from_lines("gitignore", user)
        for rel in _walk(root):
            if rel in chosen or not (own.match_file(rel) and spec.match_file(rel)):
                continue
            if not looks_like_secret(rel) and not holds_private_key(root / rel):
                chosen.add(rel)
    return tuple(sorted(chosen))


_NEVER = {".git", ".hg", ".svn", "__pycache__", ".venv", ".gpuship"}


def _walk(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in walk_project(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _NEVER)
        rel_dir = os.path.relpath(dirpath, root)
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            if os.path.isfile(full) or os.path.islink(full):
                yield f if rel_dir == "." else f"{rel_dir}/{f}"


def file_digest(cache: Cache, path: Path) -> str:
    """sha256 of a file, remembered by its stat (path, inode, size, mtime, ctime): a multi-GB model is read
    once, not on every build. Any write changes ctime, so a changed file is always read again."""
    st = path.stat()
    key = f"{path.resolve()}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"

    def known(rec: object) -> str | None:
        return rec if isinstance(rec, str) else None

    return cache.memo("file-digests", key, partial(sha256_file, path), encode=str, decode=known)


def group_models(root: Path, rels: Iterable[str], cache: Cache) -> tuple[LocalModel, ...]:
    """Model files by directory; a file of :data:`LARGE_FILE` or more alone."""
    by_dir: dict[str, list[ModelFile]] = {}
    alone: list[LocalModel] = []
    for rel in rels:
        p = root / rel
        if p.is_symlink():
            f = ModelFile(rel, 0, "", 0o777, os.readlink(p))
        else:
            st = p.stat()
            mode = 0o755 if os.access(p, os.X_OK) else 0o644
            f = ModelFile(rel, st.st_size, file_digest(cache, p), mode)
        if f.size >= LARGE_FILE:
            alone.append(LocalModel(rel, (f,)))
        else:
            by_dir.setdefault(posixpath.dirname(rel) or ".", []).append(f)
    groups = alone + [LocalModel(d, tuple(fs)) for d, fs in by_dir.items()]
    return tuple(sorted(groups, key=lambda g: g.name))


def without_models(app: AppFiles, rels: Iterable[str]) -> AppFiles:
    gone = set(rels)
    return replace(app, files=tuple(f for f in app.files if f not in gone))


def local_key(model: LocalModel, dest: str) -> str:
    h = hashlib.sha256(dest.encode())
    for f in model.files:
        h.update(f"\0{f.rel}\0{f.mode}\0{f.digest}\0{f.link}".encode())
    return "model-local:" + h.hexdigest()


def local_entries(root: Path, model: LocalModel, dest: str) -> Iterator[Entry]:
    """The files under ``dest`` (the workdir), where the app finds them, owned by root, read-only for others."""
    for f in model.files:
        target = f"{dest.rstrip('/')}/{f.rel}"
        if f.link:
            yield Entry.symlink(target, f.link)
        else:
            yield Entry.file(target, root / f.rel, mode=f.mode)
