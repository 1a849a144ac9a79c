"""The one HTTP client of the Debian source: httpx with the system CA bundle, retries, clear errors.

Proxies come from the environment (httpx's ``trust_env``); TLS trusts ``SSL_CERT_FILE`` or the system
bundle, so a TLS-inspecting proxy whose CA the host trusts works too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ... import tls
from ...cache import Cache
from ...errors import GpushipError, IntegrityError

if TYPE_CHECKING:  # httpx is imported on first use: a rebuild that finds everything cached never pays for it
    import httpx  # httpx loads slowly: only when the mirror is asked

T = TypeVar("T")

RETRIES = 3
HINT = "check the Debian mirror (the host's apt sources, [tool.gpuship.debian] mirror or GPUSHIP_DEBIAN_MIRROR) and the network"


class NotFound(GpushipError):
    """The mirror answered 404 for a file."""


class Http:
    """A small, thread-safe HTTP client (httpx.Client is thread-safe) that turns failures into one line."""

    def __init__(self, timeout: float = 60.0) -> None:
        self._timeout = timeout
        self._made: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def _client(self) -> httpx.Client:
        """Made on first use: a rebuild that finds everything in the cache never loads the TLS context."""
        import httpx  # httpx loads slowly: only when the mirror is asked

        with self._lock:
            if self._made is None:
                self._made = httpx.Client(
                    verify=tls.context(),
                    timeout=httpx.Timeout(self._timeout, connect=15.0),
                    follow_redirects=True,
                    headers={"User-Agent": "gpuship"},
                )
            return self._made

    def close(self) -> None:
        if self._made is not None:
            self._made.close()

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, url: str, exc: Exception) -> GpushipError:
        import httpx  # httpx loads slowly: only when the mirror is asked

        if isinstance(exc, httpx.HTTPStatusError):
            code = exc.response.status_code
            cls = NotFound if code == 404 else GpushipError
            return cls(f"the Debian mirror answered {code} for {url}", HINT)
        reason = str(exc) or type(exc).__name__
        return GpushipError(f"cannot reach the Debian mirror at {url}: {reason}", HINT)

    def get(self, url: str) -> bytes:
        """The whole body of ``url`` (small files: InRelease)."""

        def once() -> bytes:
            r = self._client.get(url)
            r.raise_for_status()
            return r.content

        return self._retrying(url, once)

    def download(self, url: str, cache: Cache, sha256: str, *, what: str, size: int | None = None) -> str:
        """Stream ``url`` into the cache; it lands only if its SHA256 is ``sha256``. Returns the digest."""
        expected = "sha256:" + sha256
        if cache.has(expected):
            return expected

        def once() -> str:
            with self._client.stream("GET", url) as r:
                r.raise_for_status()
                try:
                    with cache.blob_writer(expected) as w:
                        for chunk in r.iter_bytes(1 << 20):
                            w.write(chunk)
                except IntegrityError as exc:
                    got = f" ({w.size} bytes, expected {size})" if size is not None and w.size != size else ""
                    raise IntegrityError(
                        f"{what} from {url} does not match the SHA256 the signed index gives{got}",
                        "the mirror or something between is serving altered files; nothing was cached",
                    ) from exc
            return expected

        return self._retrying(url, once)

    def _retrying(self, url: str, once: Callable[[], T]) -> T:
        """``once()``, again after a 5xx or a dropped connection (not after a refused one), up to RETRIES times."""
        import httpx  # httpx loads slowly: only when the mirror is asked

        for attempt in range(RETRIES):
            try:
                return once()
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code < 500 or attempt == RETRIES - 1:
                    raise self._fail(url, exc) from exc
            except httpx.HTTPError as exc:
                if attempt == RETRIES - 1 or isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
                    raise self._fail(url, exc) from exc
            time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover
