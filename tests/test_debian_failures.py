"""Failures of the Debian source: a tampered .deb, a bad InRelease signature, an unreachable mirror.

A local http.server on 127.0.0.1 stands between gpuship and the host's configured mirror and alters what it
serves. Each failure must be one clear error and leave nothing new under blobs/ or refs/ in the cache.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from gpuship.cache import Cache
from gpuship.errors import GpushipError, IntegrityError
from gpuship.sources.debian import build_base
from gpuship.sources.debian.aptsources import Suite, suites_for
from gpuship.sources.debian.repository import Repository
from gpuship.tls import context as ssl_context


def _snapshot(cache: Cache) -> set[str]:
    return {
        str(p.relative_to(cache.root))
        for sub in ("blobs", "refs")
        for p in (cache.root / sub).rglob("*")
        if p.is_file()
    }


class _Tamper(http.server.BaseHTTPRequestHandler):
    """Forwards /main/... and /security/... to the host's mirror URIs; alters InRelease or .deb bodies."""

    upstream: dict[str, str] = {}
    mode = ""
    served_debs: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        head, _, rest = self.path.lstrip("/").partition("/")
        if head not in self.upstream:
            self.send_error(404)
            return
        with httpx.Client(verify=ssl_context(), follow_redirects=True, timeout=60) as client:
            r = client.get(f"{self.upstream[head]}/{rest}")
        body = r.content
        if r.status_code == 200 and self.mode == "inrelease" and rest.endswith("/InRelease"):
            # change one hash in the signed text: the signature no longer matches
            i = body.index(b"SHA256:") + 10
            body = body[:i] + (b"0" if body[i : i + 1] != b"0" else b"1") + body[i + 1 :]
        if r.status_code == 200 and self.mode == "deb" and rest.endswith(".deb"):
            type(self).served_debs.append(rest)
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :]
        self.send_response(r.status_code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def tamper() -> Iterator[tuple[str, type[_Tamper]]]:
    book = suites_for("bookworm")
    main = book[0].uri
    sec = next((s.uri for s in book if s.name.endswith("-security")), main)
    handler = type("Tamper", (_Tamper,), {"upstream": {"main": main, "security": sec}, "mode": "", "served_debs": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _seed(shared: Cache, private: Cache) -> None:
    """The session's parsed indexes (not its .debs), hard-linked into a private cache: no second download."""
    import json

    src = shared.root / "refs" / "debian-packages"
    shutil.copytree(src, private.root / "refs" / "debian-packages")
    for ref in src.iterdir():
        digest = json.loads(ref.read_text())["digest"]
        if not private.has(digest):
            os.link(shared.blob_path(digest), private.blob_path(digest))


def test_bad_inrelease_signature_is_refused_and_nothing_is_cached(tamper, cache: Cache) -> None:  # type: ignore[no-untyped-def]
    url, handler = tamper
    handler.mode = "inrelease"
    with pytest.raises(IntegrityError) as exc:
        build_base("debian-bookworm", "linux/amd64", cache=cache, mirror=f"{url}/main", security_mirror="none")
    line = exc.value.line()
    assert "signature of" in line and "/main/dists/bookworm/InRelease does not verify" in line, line
    assert "nothing was cached" in line
    assert _snapshot(cache) == set()
    assert not any((cache.root / "tmp").iterdir())


def test_tampered_deb_is_refused_and_nothing_is_cached(tamper, cache: Cache, shared_cache: Cache) -> None:  # type: ignore[no-untyped-def]
    url, handler = tamper
    handler.mode = "deb"
    # the real indexes through the proxy (their hashes check out), then packages whose bytes were altered
    repo = Repository(suites_for("bookworm"), shared_cache)
    repo.index("amd64")  # downloads once per session (a no-op when another test did it)
    repo.close()
    _seed(shared_cache, cache)
    suites = (
        Suite(f"{url}/main", "bookworm"),
        Suite(f"{url}/main", "bookworm-updates"),
        Suite(f"{url}/security", "bookworm-security"),
    )
    repo = Repository(suites, cache)
    try:
        zlib = repo.index("amd64").get("zlib1g")
        assert zlib is not None
        before = _snapshot(cache)
        with pytest.raises(IntegrityError) as exc:
            repo.fetch_deb(zlib)
    finally:
        repo.close()
    line = exc.value.line()
    assert f"package zlib1g {zlib.version}" in line and "does not match the SHA256 the signed index gives" in line, line
    assert _snapshot(cache) == before and not cache.has("sha256:" + zlib.sha256)
    assert not any((cache.root / "tmp").iterdir())
    # the whole build stops at the first altered package, and caches none of them
    handler.served_debs.clear()
    with pytest.raises(IntegrityError, match="does not match the SHA256"):
        build_base(
            "debian-bookworm", "linux/amd64", cache=cache, mirror=f"{url}/main", security_mirror=f"{url}/security"
        )
    assert handler.served_debs
    new = _snapshot(cache) - before
    assert not any(p.startswith("blobs/") for p in new), new  # no .deb landed
    assert not any(p.startswith("refs/layers") for p in new)


def test_unreachable_mirror_is_one_clear_error(cache: Cache) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GpushipError) as exc:
        build_base(
            "debian-bookworm",
            "linux/amd64",
            cache=cache,
            mirror=f"http://127.0.0.1:{port}/debian",
            security_mirror="none",
        )
    line = exc.value.line()
    assert line.startswith(
        f"cannot reach the Debian mirror at http://127.0.0.1:{port}/debian/dists/bookworm/InRelease"
    ), line
    assert "GPUSHIP_DEBIAN_MIRROR" in line
    assert _snapshot(cache) == set()
