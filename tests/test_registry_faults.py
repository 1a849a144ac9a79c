"""Faults: the registry dies in the middle of a chunked upload. It comes back (same port, same storage) and the
push completes; or it stays down and the push fails with one clear error, leaving no manifest and no temp file."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpuship.cache import Cache
from gpuship.errors import RegistryError
from gpuship.oci import Image
from gpuship.registry import RetryPolicy, pull_image, push
from gpuship.registry.write import PushResult
from test_registry_support import LocalRegistry, have_tools, make_image

pytestmark = pytest.mark.registry

MiB = 1 << 20


class KillAfter:
    """Progress hook: kills the registry once ``threshold`` bytes went out (mid-request), then maybe restarts it."""

    def __init__(
        self, reg: LocalRegistry, threshold: int, restart_after: float | None, at_boundary: bool = False
    ) -> None:
        self.reg, self.threshold, self.restart_after = reg, threshold, restart_after
        self.at_boundary = at_boundary  # kill as a new chunk's body starts (the registry holds whole chunks only)
        self.sent = 0
        self.killed = threading.Event()
        self.restarted = threading.Event()
        self.position: dict[str, int] = {}
        self.resumed_at: list[int] = []  # where the upload went on from after the crash

    def step(self, message: str) -> None:
        pass

    def clear(self) -> None:
        pass

    def transfer(self, key: str, done: int, total: int | None = None, status: str | None = None) -> None:
        if status is not None:
            return
        n = done - self.position.get(key, 0)
        self.position[key] = done
        if n <= 0 and self.killed.is_set() and not self.resumed_at:
            self.resumed_at.append(self.position[key])  # the first upload body after the crash starts here
        self.sent += max(n, 0)
        if self.at_boundary and n != 0:
            return  # an upload body reports 0 as it starts
        if not self.killed.is_set() and self.sent >= self.threshold:
            self.reg.kill()
            self.killed.set()
            if self.restart_after is not None:
                timer = threading.Timer(self.restart_after, self._restart)
                timer.daemon = True
                timer.start()

    def _restart(self) -> None:
        self.reg.start()
        self.restarted.set()


@pytest.fixture
def plain_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    have_tools()
    reg = LocalRegistry(tmp_path / "reg").start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def big_image_cache(tmp_path_factory: pytest.TempPathFactory):
    cache = Cache(tmp_path_factory.mktemp("fault-cache"))
    img = make_image(cache, [{"opt/model.bin": os.urandom(20 * MiB)}, {"opt/small": b"small"}])
    return cache, img


def _push_in_chunks(img: Image, ref: str, cache: Cache, hook: KillAfter, retry: RetryPolicy) -> PushResult:
    """A push of 2 MiB chunks, one blob at a time, that ``hook`` watches (and breaks)."""
    return push(img, ref, cache=cache, insecure=True, chunk_size=2 * MiB, jobs=1, progress=hook, retry=retry)


def _tmp_files(cache: Cache) -> list[str]:
    return sorted(p.name for p in (cache.root / "tmp").iterdir())


@pytest.mark.parametrize("at_boundary", [True, False], ids=["between-chunks", "mid-chunk"])
def test_push_survives_a_registry_crash_mid_upload(plain_registry, big_image_cache, tmp_path, at_boundary):
    cache, img = big_image_cache
    reg = plain_registry
    # mid-chunk: killed once the first half of the 4-6 MiB chunk went out (the rest is never sent)
    hook = KillAfter(
        reg, threshold=5 * MiB + (300_000 if at_boundary else 0), restart_after=1.0, at_boundary=at_boundary
    )
    ref = f"{reg.host}/faults/resume:1"
    result = _push_in_chunks(img, ref, cache, hook, RetryPolicy(attempts=8, base_delay=0.3, max_delay=2.0))
    assert hook.killed.is_set() and hook.restarted.is_set()
    if at_boundary:
        # it resumed from the registry's offset (the three whole chunks it holds), it did not start again
        assert hook.resumed_at == [6 * MiB]
    else:
        # resumed where the registry says it got to (what it flushed of the cut chunk), or restarted from 0
        assert hook.resumed_at and 0 <= hook.resumed_at[0] <= 5 * MiB
    assert result.uploaded == 3
    assert result.bytes_uploaded == sum(layer.size for layer in img.layers) + len(img.config_bytes())
    if at_boundary:
        assert result.bytes_sent == result.bytes_uploaded  # a clean resume sends nothing twice
    else:
        assert result.bytes_sent > result.bytes_uploaded  # the interrupted part went out again
    # what landed is whole: pulled back and verified against digests and diff_ids
    got = pull_image(ref, "linux/amd64", Cache(tmp_path / "check"), insecure=True)
    assert got.digest == img.digest
    assert reg.tags("faults/resume") == ["1"]
    assert _tmp_files(cache) == []


def test_push_fails_clearly_when_the_registry_stays_down(plain_registry, big_image_cache):
    cache, img = big_image_cache
    reg = plain_registry
    hook = KillAfter(reg, threshold=5 * MiB, restart_after=None)
    ref = f"{reg.host}/faults/down:1"
    with pytest.raises(RegistryError) as info:
        _push_in_chunks(img, ref, cache, hook, RetryPolicy(attempts=3, base_delay=0.1, max_delay=0.3))
    line = info.value.line()
    assert "\n" not in line and reg.host in line and "try again later" in line
    reg.start()  # back up: it holds no manifest and no tag for the failed push
    assert reg.tags("faults/down") == []
    resp = httpx.get(f"{reg.url}/v2/faults/down/manifests/1")
    assert resp.status_code == 404
    assert _tmp_files(cache) == []


# -- a proxy that makes the registry misbehave on cue --------------------------------------------------------------
import http.server  # noqa: E402
import time  # noqa: E402

from test_registry_support import free_port  # noqa: E402


class FaultProxy:
    """Forwards to a registry; ``faults`` is a list of (method, path-substring, action) consumed in order:
    action is ``429`` (with ``Retry-After: 1``), ``503``, or ``"reset"`` (the connection is dropped)."""

    def __init__(self, upstream: LocalRegistry) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.faults: list[tuple[str, str, object]] = []
        self.served: list[tuple[str, str, object]] = []
        self._client = httpx.Client(timeout=60)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._client.close()

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        for i, (method, part, action) in enumerate(self.faults):
            if method == h.command and part in h.path:
                del self.faults[i]
                self.served.append((method, part, action))
                if action == "reset":
                    h.close_connection = True
                    h.connection.shutdown(2)
                    return
                h.send_response(int(action))  # type: ignore[call-overload]
                if action == 429:
                    h.send_header("Retry-After", "1")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        headers["Host"] = self.host  # so the registry's Location URLs point back through the proxy
        resp = self._client.request(h.command, f"{self.upstream.url}{h.path}", headers=headers, content=body)
        h.send_response(resp.status_code)
        for k, v in resp.headers.items():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                h.send_header(k, v)
        data = b"" if h.command == "HEAD" else resp.content
        h.send_header(
            "Content-Length", str(len(data) if h.command != "HEAD" else resp.headers.get("content-length", "0"))
        )
        h.end_headers()
        if data:
            h.wfile.write(data)


@pytest.fixture
def flaky(plain_registry) -> Iterator[FaultProxy]:
    proxy = FaultProxy(plain_registry)
    try:
        yield proxy
    finally:
        proxy.close()


def test_retry_after_5xx_and_resets_are_absorbed(flaky, cache):
    img = make_image(cache, [{"opt/data.bin": os.urandom(600_000)}, {"opt/x": b"x"}])
    flaky.faults = [
        ("POST", "/blobs/uploads/", 503),  # starting an upload: retried
        ("PATCH", "/blobs/uploads/", 503),  # a chunk: the upload asks where it stands and goes on
        ("PATCH", "/blobs/uploads/", "reset"),  # a chunk whose connection drops
        ("PUT", "/manifests/", 429),  # the manifest: waits Retry-After (1 s), then retried
    ]
    started = time.monotonic()
    result = push(
        img,
        f"{flaky.host}/faults/flaky:1",
        cache=cache,
        insecure=True,
        chunk_size=128 << 10,
        jobs=1,
        retry=RetryPolicy(attempts=5, base_delay=0.05, max_delay=0.2),
    )
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert [a for _, _, a in flaky.served] == [503, 503, "reset", 429] and flaky.faults == []
    assert result.uploaded == 3 and result.digest == img.digest
    got = pull_image(f"{flaky.host}/faults/flaky:1", "linux/amd64", Cache(cache.root.parent / "check"), insecure=True)
    assert got.digest == img.digest
