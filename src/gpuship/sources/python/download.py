"""Fetch locked files (wheels, sdists) into the cache, verified against the lock's sha256.

A file's blob digest *is* its locked sha256, so a wheel is downloaded once per machine and shared by every
project and platform that locks it. Downloads stream to a temp file and land only if the hash matches.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from ... import tls
from ...cache import Cache
from ...errors import GpushipError, IntegrityError
from ...progress import NO_PROGRESS, Progress
from ...streams import CHUNK
from .credentials import IndexCredentials

if TYPE_CHECKING:  # httpx is imported on first use: a rebuild with every file cached never pays for it
    import httpx  # httpx loads slowly: only when an index is asked


def http_client(credentials: IndexCredentials | None = None) -> httpx.Client:
    """The download client; ``credentials`` log in to private indexes (else only netrc and the environment's)."""
    import httpx  # on first use: a rebuild that finds every file cached never imports it

    return httpx.Client(
        verify=tls.context(),
        follow_redirects=True,
        trust_env=True,
        timeout=httpx.Timeout(120.0, connect=30.0),
        auth=(credentials or IndexCredentials.from_urls(())).auth(),
    )


def filename_of(url: str) -> str:
    return unquote(urlparse(url).path.rsplit("/", 1)[-1])


def fetch(
    cache: Cache,
    url: str,
    sha256: str,
    *,
    client: httpx.Client | None = None,
    progress: Progress = NO_PROGRESS,
    credentials: IndexCredentials | None = None,
) -> Path:
    """The cached blob of ``url``; downloaded (or copied, for ``file://``) and verified if missing."""
    digest = f"sha256:{sha256.lower()}"
    if cache.has(digest):
        return cache.blob_path(digest)
    name = filename_of(url)
    with cache.lock(f"fetch-{sha256[:32]}"):
        if cache.has(digest):
            return cache.blob_path(digest)
        parsed = urlparse(url)
        if parsed.scheme in ("", "file"):
            path = Path(unquote(parsed.path))
            if not path.is_file():
                raise GpushipError(
                    f"locked file {path} does not exist any more", "restore it, or delete gpuship.lock to lock again"
                )
            cache.put_file(path, expected=digest)
            return cache.blob_path(digest)
        import httpx  # httpx loads slowly: only when an index is asked

        own = client is None
        client = client or http_client(credentials)
        try:
            for attempt in range(4):
                try:
                    with client.stream("GET", url) as resp:
                        if resp.status_code in (401, 403):
                            raise GpushipError(
                                f"downloading {name} failed: HTTP {resp.status_code} from {urlparse(url).netloc}",
                                "give the index's login as uv does: in the index URL, in ~/.netrc, or in the keyring",
                            )
                        if resp.status_code != 200:
                            raise GpushipError(
                                f"downloading {name} failed: HTTP {resp.status_code}",
                                "check the index settings and network; the URL is in gpuship.lock",
                            )
                        total = int(resp.headers.get("content-length") or 0)
                        done = 0
                        with cache.blob_writer(expected=digest) as w:
                            for chunk in resp.iter_bytes(CHUNK):
                                w.write(chunk)
                                done += len(chunk)
                                progress.transfer(f"download {name}", done, total or None)
                    return cache.blob_path(digest)
                except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                    if attempt == 3:
                        raise GpushipError(f"downloading {name} failed: {exc}", "check the network and retry") from exc
                    time.sleep(1.5 * (attempt + 1))
                except IntegrityError as exc:
                    raise IntegrityError(
                        f"{name} does not match the sha256 in gpuship.lock",
                        "the index served different bytes than were locked; nothing was cached",
                    ) from exc
        finally:
            if own:
                client.close()
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_all(
    cache: Cache,
    items: Iterable[tuple[str, str]],
    *,
    progress: Progress = NO_PROGRESS,
    workers: int = 4,
    credentials: IndexCredentials | None = None,
) -> dict[str, Path]:
    """Fetch ``(url, sha256)`` pairs in parallel; returns sha256 -> blob path."""
    todo = {sha: url for url, sha in items}
    missing = {sha: url for sha, url in todo.items() if not cache.has(f"sha256:{sha}")}
    out = {sha: cache.blob_path(f"sha256:{sha}") for sha in todo if sha not in missing}
    if missing:
        with http_client(credentials) as client, ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                sha: pool.submit(fetch, cache, url, sha, client=client, progress=progress)
                for sha, url in missing.items()
            }
            for sha, fut in futures.items():
                out[sha] = fut.result()
    return out
