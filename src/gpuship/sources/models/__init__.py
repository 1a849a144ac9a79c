"""Model files as their own layers, below the app layer: the project's weights (by pattern), models fetched by
reference (``hf://``, ``https://...#sha256=``) and mount points for weights kept outside the image.

Every model layer is keyed by its content (file hashes, not times), so an edit to the code rebuilds the app layer
only: a model layer keeps its digest and is not compressed, loaded into an engine or pushed again.

    models = build_models(project_dir, app_files, config.models, workdir, cache, compression="gzip")
    models.app       # the app files without the model files
    models.layers    # ModelLayer(layer, source, paths), in image order
    models.records   # what the build report and the SBOM say about each model
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ...cache import Cache
from ...config import HubModel, ModelsConfig, MountedModel, redact_url
from ...oci import Entry, Layer, cached_layer
from ...oci.media import BlobCompression
from ...progress import NO_PROGRESS, Progress
from ..app import AppFiles
from .local import LARGE_FILE, LocalModel, group_models, local_entries, local_key, project_model_files, without_models
from .remote import HubFile, fetch_hub, fetch_url, hub_entries, hub_refs_entry, hub_repo_dir


@dataclass(frozen=True)
class ModelLayer:
    layer: Layer
    source: str  # what the layer table says holds it
    paths: tuple[str, ...]  # the files it holds, as image paths


@dataclass(frozen=True)
class ModelRecord:
    """One model as the build report and the SBOM name it (never with a token: URLs are redacted)."""

    kind: str  # project, hf, url, mount
    name: str
    version: str  # revision (hf), sha256 (url, single project file), "" otherwise
    path: str  # where it is in the image
    files: int
    size: int
    layers: tuple[str, ...]  # layer digests

    def to_json(self) -> dict[str, object]:
        return {**self.__dict__, "layers": list(self.layers)}


@dataclass(frozen=True)
class ModelSet:
    app: AppFiles
    layers: tuple[ModelLayer, ...] = ()
    records: tuple[ModelRecord, ...] = ()
    mounts: tuple[MountedModel, ...] = ()


#: The image label listing the mounted models (JSON), read by ``gpuship deploy`` and ``gpuship run``.
MOUNTS_LABEL = "dev.gpuship.model-mounts"


def build_models(
    root: Path,
    app: AppFiles,
    models: ModelsConfig,
    workdir: str,
    cache: Cache,
    *,
    compression: BlobCompression = "gzip",
    project_files: bool = True,
    progress: Progress = NO_PROGRESS,
) -> ModelSet:
    """Split the model files off ``app`` and make every model layer. ``project_files=False`` (``gpuship dev``,
    where the project is mounted) leaves the project's own model files where they are."""
    layers: list[ModelLayer] = []
    records: list[ModelRecord] = []

    def add(key: str, make: Callable[[], Iterable[Entry]], source: str, paths: Sequence[str]) -> str:
        layer = cached_layer(cache, key, make, compression=compression, comment=f"model {source}")
        layers.append(ModelLayer(layer, source, tuple(paths)))
        return layer.digest

    if project_files:
        rels = project_model_files(root, app, models)
        app = without_models(app, rels)
        for group in group_models(root, rels, cache):
            digest = add(
                local_key(group, workdir),
                partial(local_entries, root, group, workdir),
                _local_source(group),
                [f"{workdir}/{f.rel}" for f in group.files],
            )
            records.append(_local_record(group, workdir, digest))
    for hub in models.hub:
        records.append(_hub_layers(hub, fetch_hub(hub, cache, progress), cache, add))
    for url in models.urls:
        digest, size = fetch_url(url, cache, progress)
        key = "model-url:" + hashlib.sha256(json.dumps([url.path, digest]).encode()).hexdigest()
        shown = redact_url(url.url)
        entry = Entry.stream(url.path, size, partial(cache.open, digest))
        layer = add(key, partial(list, [entry]), shown, [url.path])
        records.append(ModelRecord("url", shown, url.sha256, url.path, 1, size, (layer,)))
    if models.mounts:
        dirs = [Entry.dir(m.path) for m in models.mounts]
        key = "model-mounts:" + ",".join(m.path for m in models.mounts)
        add(key, lambda: dirs, "mount points " + ", ".join(m.path for m in models.mounts), [])
        records += [ModelRecord("mount", m.name, "", m.path, 0, 0, ()) for m in models.mounts]
    return ModelSet(app, tuple(layers), tuple(records), models.mounts)


def _local_source(group: LocalModel) -> str:
    if len(group.files) == 1:
        return group.files[0].rel
    return f"{group.name}/ ({len(group.files)} files)"


def _local_record(group: LocalModel, workdir: str, digest: str) -> ModelRecord:
    """A single file is named with its sha256; a directory's files together by the directory."""
    single = group.files[0] if len(group.files) == 1 else None
    name = single.rel if single else group.name
    return ModelRecord(
        "project",
        name,
        single.digest.removeprefix("sha256:") if single else "",
        workdir if name == "." else f"{workdir}/{name}",
        len(group.files),
        group.size,
        (digest,),
    )


def _hub_layers(hub: HubModel, files: tuple[HubFile, ...], cache: Cache, add: Callable[..., str]) -> ModelRecord:
    """One layer per large file, one for the rest (with ``refs/main``)."""
    big = [f for f in files if f.size >= LARGE_FILE]
    rest = tuple(f for f in files if f.size < LARGE_FILE)
    digests = []
    base = hub.path or hub_repo_dir(hub)
    for f in big:
        one = (f,)
        digests.append(
            add(
                "model-hf:" + _h(hub, one),
                lambda one=one: hub_entries(hub, one, cache),
                f"{hub.ref} {f.path}",
                [f"{base}/{f.path}"],
            )
        )
    refs = [] if hub.path else [hub_refs_entry(hub)]
    digests.append(
        add(
            "model-hf:" + _h(hub, rest),
            lambda: [*hub_entries(hub, rest, cache), *refs],
            f"{hub.ref}" + (f" ({len(rest)} files)" if big else ""),
            [f"{base}/{f.path}" for f in rest],
        )
    )
    return ModelRecord(
        "hf", hub.repo, hub.revision, hub.path or base, len(files), sum(f.size for f in files), tuple(digests)
    )


def _h(hub: HubModel, files: Sequence[HubFile]) -> str:
    parts = [hub.repo, hub.revision, hub.path, [(f.path, f.etag, f.digest) for f in files]]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def pinned(models: ModelsConfig) -> bool:
    """Whether every model the project names by reference is immutable: a hub repository at a commit (40 hex
    digits), a URL by its sha256. Those, the project's own model files and the mount points are then inputs a
    no-change rebuild may be recognised by (:mod:`gpuship.rebuild`); anything else is fetched in full each time."""
    return all(_COMMIT.fullmatch(h.revision) for h in models.hub) and all(
        _SHA256.fullmatch(u.sha256) for u in models.urls
    )


def mounts_label(mounts: Sequence[MountedModel]) -> dict[str, str]:
    if not mounts:
        return {}
    return {MOUNTS_LABEL: json.dumps([m.to_json() for m in mounts], sort_keys=True, separators=(",", ":"))}


def mounts_from_labels(labels: Mapping[str, str]) -> tuple[MountedModel, ...]:
    """The mounted models an image declares (its :data:`MOUNTS_LABEL`)."""
    text = labels.get(MOUNTS_LABEL)
    if not text:
        return ()
    return tuple(MountedModel.from_json(d) for d in json.loads(text))


__all__ = [
    "MOUNTS_LABEL",
    "ModelLayer",
    "ModelRecord",
    "ModelSet",
    "build_models",
    "fetch_hub",
    "fetch_url",
    "mounts_from_labels",
    "mounts_label",
    "pinned",
]
