"""Models by reference, fetched at build time into the cache, once:

* ``hf://ORG/NAME@REVISION``: a Hugging Face model repository at a pinned commit, through ``huggingface_hub``
  (``HF_ENDPOINT`` and ``HF_TOKEN`` / the stored login honoured). Its files land in the content-addressed
  cache, recorded by (repository, revision, file patterns); a later build finds them there and asks nothing.
  In the image they are laid out as the hub cache (``blobs/``, ``snapshots/REVISION/``, ``refs/main``), so
  ``from_pretrained("ORG/NAME")`` finds them with ``HF_HUB_OFFLINE=1``.
* ``https://HOST/PATH#sha256=HEX``: one file, stored under its hash: a file the cache holds is not fetched,
  and one whose bytes do not hash to ``HEX`` is refused and not kept.

Tokens are read from the environment by the libraries that send them; they are never part of a key, a record,
a layer or a message (URLs are shown without user, password and query: :func:`~gpuship.config.redact_url`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any  # Any: the cache record of a hub model's files

from ...cache import Cache
from ...config import HF_HUB_DIR, HubModel, UrlModel, redact_url
from ...errors import GpushipError, IntegrityError
from ...oci import Entry
from ...progress import NO_PROGRESS, Progress


@dataclass(frozen=True)
class HubFile:
    path: str  # in the repository
    etag: str  # the hub's name for the blob (sha256 of an LFS file, git blob id of a small one)
    digest: str  # sha256:... of the content, its name in the gpuship cache
    size: int


# -- https://...#sha256= ---------------------------------------------------------------------------------------
def fetch_url(model: UrlModel, cache: Cache, progress: Progress = NO_PROGRESS) -> tuple[str, int]:
    """The file's ``(digest, size)`` in the cache, fetched unless the cache holds it already."""
    digest = "sha256:" + model.sha256
    if cache.has(digest):
        return digest, cache.blob_path(digest).stat().st_size
    import httpx  # on first use: a build without URL models never imports it

    shown = redact_url(model.url)
    progress.step(f"fetching {shown}")
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60, read=300), trust_env=True) as client,
            client.stream("GET", model.url) as resp,
        ):
            if resp.status_code != 200:
                raise GpushipError(
                    f"{shown} answered HTTP {resp.status_code}",
                    "check the URL; credentials go in ~/.netrc, never in [tool.gpuship]",
                )
            total = int(resp.headers.get("content-length") or 0)
            with cache.blob_writer() as sink:
                for chunk in resp.iter_bytes(1 << 20):
                    sink.write(chunk)
                    progress.transfer(f"fetching {shown}", sink.size, total or None)
                if sink.digest != digest:  # raised inside the writer: nothing is kept
                    raise IntegrityError(
                        f"{shown} has sha256 {sink.digest[7:]}, not the {model.sha256} its #sha256= names",
                        "check the URL, or update the hash if the file changed on purpose",
                    )
    except httpx.HTTPError as exc:
        raise GpushipError(f"cannot fetch {shown}: {type(exc).__name__}", "check the URL and the network") from exc
    return digest, sink.size


# -- hf://ORG/NAME@REVISION -----------------------------------------------------------------------------------
def _record_key(model: HubModel) -> str:
    return json.dumps(["hf", model.repo, model.revision, sorted(model.files)])


def fetch_hub(model: HubModel, cache: Cache, progress: Progress = NO_PROGRESS) -> tuple[HubFile, ...]:
    """The repository's files at the pinned revision, in the cache: from a record of an earlier fetch when all its
    blobs are still there, else fetched now (into a temporary hub cache, then moved into the gpuship cache)."""

    def fetch() -> tuple[HubFile, ...]:
        progress.step(f"fetching {model.ref}")
        with cache.temp_dir("hf-") as work:
            snapshot = _snapshot_download(model, work)
            files = tuple(_ingest(snapshot, cache))
        if not files:
            raise GpushipError(
                f"{model.ref} has no files" + (f" matching {', '.join(model.files)}" if model.files else ""),
                "check the files patterns of this model in [tool.gpuship] models",
            )
        return files

    def known(rec: dict[str, Any]) -> tuple[HubFile, ...] | None:
        if not all(cache.has(f["digest"]) for f in rec["files"]):
            return None
        return tuple(HubFile(**f) for f in rec["files"])

    return cache.memo(
        "hf-models",
        _record_key(model),
        fetch,
        encode=lambda files: {"files": [f.__dict__ for f in files]},
        decode=known,
        lock=True,
    )


def _snapshot_download(model: HubModel, work: Path) -> Path:
    import httpx  # on first use, as above

    try:
        from huggingface_hub import snapshot_download  # optional: only for hub models

        # optional, as above
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
        from huggingface_hub.utils import disable_progress_bars  # optional: only for hub models
    except ImportError as exc:  # pragma: no cover - a dependency of gpuship
        raise GpushipError("hf:// models need huggingface_hub", "reinstall gpuship") from exc
    disable_progress_bars()
    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        return Path(
            snapshot_download(
                model.repo,
                revision=model.revision,
                cache_dir=work,
                allow_patterns=list(model.files) or None,
                endpoint=endpoint,
                token=os.environ.get("HF_TOKEN") or None,  # None: huggingface_hub's stored login, if any
            )
        )
    except GatedRepoError as exc:
        raise GpushipError(
            f"{model.ref} is gated or private and the hub refused the token (or none was given)",
            "accept its terms on the model page and set HF_TOKEN (or run hf auth login)",
        ) from exc
    except RevisionNotFoundError as exc:
        raise GpushipError(f"{model.ref}: the hub has no revision {model.revision}", "pin an existing commit") from exc
    except RepositoryNotFoundError as exc:
        raise GpushipError(
            f"{model.ref}: no such repository (or it is private)", "check the name, or set HF_TOKEN"
        ) from exc
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, httpx.HTTPError) as exc:
        where = endpoint or "the Hugging Face hub"
        raise GpushipError(
            f"cannot fetch {model.ref} from {redact_url(where) if endpoint else where}: {type(exc).__name__}",
            "check the network, HF_ENDPOINT and HF_TOKEN",
        ) from exc


def _ingest(snapshot: Path, cache: Cache) -> Iterator[HubFile]:
    """Each file of the snapshot into the cache; its etag is the name of the blob the hub cache links to."""
    for dirpath, dirnames, filenames in os.walk(snapshot):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(snapshot).as_posix()
            etag = os.path.basename(os.readlink(p)) if p.is_symlink() else hashlib.sha256(rel.encode()).hexdigest()
            digest, size = cache.put_file(p)
            yield HubFile(rel, etag, digest, size)


def hub_repo_dir(model: HubModel) -> str:
    return f"{HF_HUB_DIR}/models--{model.repo.replace('/', '--')}"


def hub_entries(model: HubModel, files: tuple[HubFile, ...], cache: Cache) -> Iterator[Entry]:
    """The files as the hub cache lays them out (or, with ``path``, as a plain directory there)."""
    if model.path:
        for f in files:
            yield Entry.stream(f"{model.path}/{f.path}", f.size, partial(cache.open, f.digest))
        return
    root = hub_repo_dir(model)
    blobs: set[str] = set()
    for f in files:
        if f.etag not in blobs:
            blobs.add(f.etag)
            yield Entry.stream(f"{root}/blobs/{f.etag}", f.size, partial(cache.open, f.digest))
        depth = f.path.count("/")
        yield Entry.symlink(f"{root}/snapshots/{model.revision}/{f.path}", "../" * (2 + depth) + f"blobs/{f.etag}")


def hub_refs_entry(model: HubModel) -> Entry:
    """``refs/main`` naming the pinned revision: ``from_pretrained("ORG/NAME")`` without a revision finds it."""
    return Entry.file(f"{hub_repo_dir(model)}/refs/main", model.revision)
