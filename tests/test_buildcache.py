"""The registry as the shared build cache (gpuship.buildcache, gpuship.registry.buildcache), against a real
registry with TLS and htpasswd users: the cache manifest as an OCI artifact, layers known by their input keys
and never built, pulled (checked against digest and diff ID, resumably) only where bytes are needed, and every
way a cache entry can be wrong costing time, never correctness."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from gpuship.buildcache import (
    ARTIFACT_TYPE,
    BuildCacheSession,
    CacheManifest,
    CacheSpec,
    NotInCache,
    cache_spec,
)
from gpuship.cache import Cache
from gpuship.errors import ConfigError, GpushipError, IntegrityError
from gpuship.oci import Entry, ImageConfig, append_layers, empty_image
from gpuship.oci.compress import recompress_key
from gpuship.oci.layer import cached_layer, layer_key, recompress
from gpuship.registry import Registry, RegistryOptions
from gpuship.registry.buildcache import RegistryCacheStore, open_store
from test_registry_support import (
    LocalRegistry,
    docker_login,
    free_port,
    have_tools,
    secret,
    tls_registry_with_users,
)

pytestmark = pytest.mark.registry

USER = "cacheuser"
PASSWORD = secret("cache-pw")


# -- what the user asks for ------------------------------------------------------------------------------------------
def test_the_cache_option_wins_over_the_environment_and_the_environment_over_the_project() -> None:
    env = {"GPUSHIP_BUILD_CACHE": "registry:r.example/env:c", "GPUSHIP_BUILD_CACHE_MODE": "read"}
    assert cache_spec("registry:r.example/cli:c", None, "registry:r.example/cfg:c", env) == CacheSpec(
        "r.example/cli:c", "read"
    )
    assert cache_spec(None, "write", "registry:r.example/cfg:c", env) == CacheSpec("r.example/env:c", "write")
    assert cache_spec(None, None, "registry:r.example/cfg:c", {}) == CacheSpec("r.example/cfg:c", "readwrite")
    assert cache_spec("none", None, "registry:r.example/cfg:c", env) is None  # switched off for one build
    assert cache_spec(None, None, "", {}) is None
    for bad, mode in (("r.example/x:c", None), ("oci:/tmp/x", None), ("registry:h/x@sha256:" + "0" * 64, None)):
        with pytest.raises(ConfigError, match="registry:REF|by tag"):
            cache_spec(bad, mode, "", {})
    with pytest.raises(ConfigError, match="read, write or readwrite"):
        cache_spec("registry:r.example/x:c", "max", "", {})


def test_the_mapping_reads_back_and_entries_of_the_wrong_shape_are_left_out() -> None:
    plain = {"digest": "sha256:" + "a" * 64, "diff_id": "sha256:" + "a" * 64, "size": 10, "uncompressed_size": 10}
    good = {**plain, "compression": "none", "comment": "app", "built": True, "meta": {"n": 1}}
    m = CacheManifest({"1" * 64: good}, {"libdeps-results": {"k": []}})
    data = m.config_bytes()
    doc = json.loads(data)
    assert doc["layers"]["1" * 64]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert doc["layers"]["1" * 64]["diffID"] == plain["diff_id"]
    back = CacheManifest.from_config(data, "test")
    assert back.layers == {"1" * 64: good} and back.records == {"libdeps-results": {"k": []}}
    assert CacheManifest.from_config(back.config_bytes(), "test").config_bytes() == data  # same bytes again

    doc["layers"]["2" * 64] = {**doc["layers"]["1" * 64], "digest": "sha256:zz"}  # not a digest
    doc["layers"]["3" * 64] = {**doc["layers"]["1" * 64], "size": -1}
    doc["layers"]["not-a-key"] = doc["layers"]["1" * 64]
    doc["records"]["host-python"] = {"3.11": "/usr/bin/python3.11"}  # not a portable namespace
    doc["blobs"] = [{"digest": "sha256:" + "b" * 64, "size": "12", "mediaType": "x"}]
    back = CacheManifest.from_config(json.dumps(doc).encode(), "test")
    assert list(back.layers) == ["1" * 64] and "host-python" not in back.records and back.blobs == ()
    with pytest.raises(GpushipError, match="format"):
        CacheManifest.from_config(json.dumps({**doc, "format": 99}).encode(), "test")


def test_no_cache_builds_every_layer_again_and_the_cache_still_learns_them(tmp_path) -> None:
    cache = Cache(tmp_path / "c")
    first = cached_layer(cache, "k", lambda: _entries("k"))  # known on this machine
    made: list[int] = []
    session = BuildCacheSession(cache, fresh=True)
    with cache.overlaid(session):
        again = cached_layer(cache, "k", lambda: made.append(1) or _entries("k"))
    assert made == [1] and not again.reused and again.digest == first.digest
    learnt = session.manifest_for(append_layers(empty_image("linux/amd64", ImageConfig()), [again]))
    assert layer_key("k") in learnt.layers  # what --no-cache built is written to the cache all the same
    assert cached_layer(cache, "k", _never).reused  # and without it, the machine reuses it again


# -- against a registry ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, Path]]:
    with tls_registry_with_users(tmp_path_factory.mktemp("cache-registry"), {USER: PASSWORD}) as (r, tls):
        yield r, tls.ca_cert


@pytest.fixture
def logged_in(reg, tmp_path, monkeypatch) -> tuple[LocalRegistry, RegistryOptions]:
    """Credentials in a Docker config.json, as CI systems write them (DOCKER_CONFIG)."""
    r, ca = reg
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_login(tmp_path / "docker", r.host, USER, PASSWORD)))
    return r, RegistryOptions(ca_file=ca)


def _entries(tag: str) -> list[Entry]:
    """640 kB that do not compress, the same for the same tag."""
    data = b"".join(hashlib.sha256(f"{tag}{i}".encode()).digest() for i in range(20_000))
    return [Entry.dir("opt"), Entry.file("opt/data.bin", data)]


def _never() -> list[Entry]:
    raise AssertionError("a layer the build cache holds was built")


def _write_cache(cache: Cache, store: RegistryCacheStore, keys: tuple[str, ...] = ("one", "two")) -> list[str]:
    """A build on machine A: layers made under ``keys``, compressed, written to the cache; their gzip digests."""
    session = BuildCacheSession(cache, None, store, spec=CacheSpec(store.ref))
    with cache.overlaid(session):
        shipped = [recompress(cached_layer(cache, k, lambda k=k: _entries(k)), "gzip") for k in keys]
        img = append_layers(empty_image("linux/amd64", ImageConfig()), shipped)
        line = store.write(session.manifest_for(img), {x.digest: x for x in shipped}, cache)
    assert line.startswith((f"wrote the build cache {store.ref}: {2 * len(keys)} layers", "the build cache")), line
    store.last_line = line  # type: ignore[attr-defined]
    return [x.digest for x in shipped]


@contextmanager
def _written(
    logged_in: tuple[LocalRegistry, RegistryOptions], tmp_path: Path, repo: str, keys: tuple[str, ...] = ("one", "two")
) -> Iterator[tuple[RegistryCacheStore, list[str], CacheManifest]]:
    """A cache ``bc/REPO:cache`` that machine A wrote (:func:`_write_cache`): its store, its blobs, its mapping."""
    r, options = logged_in
    with Registry(options) as registry:
        store = open_store(f"{r.host}/bc/{repo}:cache", registry)
        blobs = _write_cache(Cache(tmp_path / "a"), store, keys=keys)
        mapping = store.read()
        assert mapping is not None
        yield store, blobs, mapping


def _reader(cache: Cache, store: RegistryCacheStore, *, eager: bool, remote: CacheManifest | None = None):
    session = BuildCacheSession(cache, remote or store.read(), store, spec=CacheSpec(store.ref), eager=eager)
    session.check_blobs()
    return session


def test_the_cache_is_an_artifact_of_its_own_type_and_not_written_again_unchanged(logged_in, tmp_path):
    r, options = logged_in
    with Registry(options) as registry:
        store = open_store(f"{r.host}/bc/artifact:cache", registry)
        assert store.read() is None  # no cache yet: a first build writes it
        blobs = _write_cache(Cache(tmp_path / "a"), store)
        assert "blobs uploaded" in store.last_line  # type: ignore[attr-defined]
        again = _write_cache(Cache(tmp_path / "a"), store)
        assert again == blobs and "is up to date" in store.last_line  # type: ignore[attr-defined]
        client = registry.client(r.host)
        resp = client.send(
            "GET", "/v2/bc/artifact/manifests/cache", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
        )
        doc = resp.json()
        mapping = store.read()
    assert doc["artifactType"] == ARTIFACT_TYPE and doc["config"]["mediaType"] == ARTIFACT_TYPE
    assert sorted(d["digest"] for d in doc["layers"]) == sorted(blobs)  # no layer of its own: the images' layers
    assert mapping is not None and len(mapping.layers) == 4  # plain and gzip records of each layer
    assert {b.digest for b in mapping.blobs} == set(blobs)


def test_an_image_is_not_taken_for_a_cache(logged_in, tmp_path):
    r, options = logged_in
    with Registry(options, Cache(tmp_path / "c")) as registry:
        img = append_layers(
            empty_image("linux/amd64", ImageConfig()),
            [recompress(cached_layer(Cache(tmp_path / "c"), "x", lambda: _entries("x")), "gzip")],
        )
        registry.push(img, f"{r.host}/bc/image:1")
        with pytest.raises(GpushipError, match="is not a gpuship build cache"):
            open_store(f"{r.host}/bc/image:1", registry).read()


def test_hits_for_a_registry_output_are_neither_built_nor_pulled_and_are_mounted(logged_in, tmp_path):
    r, options = logged_in
    with Registry(options) as registry:
        store = open_store(f"{r.host}/bc/mount:cache", registry)
        blobs = _write_cache(Cache(tmp_path / "a"), store)
        fresh = Cache(tmp_path / "b")  # a fresh CI machine
        session = _reader(fresh, store, eager=False)
        with fresh.overlaid(session):
            layers = [recompress(cached_layer(fresh, k, _never), "gzip") for k in ("one", "two")]
        assert [x.digest for x in layers] == blobs and all(x.reused for x in layers)
        assert not any((fresh.root / "blobs" / "sha256" / d[7:]).exists() for d in blobs)  # nothing pulled
        img = append_layers(empty_image("linux/amd64", ImageConfig()), layers)
        with Registry(options, fresh) as pusher:
            result = pusher.push(img, f"{r.host}/bc/app:1")
    assert (result.uploaded, result.mounted, result.bytes_uploaded) == (1, 2, len(img.config_bytes()))
    assert not any((fresh.root / "blobs" / "sha256" / d[7:]).exists() for d in blobs)


def test_a_local_output_pulls_each_layer_checked_and_its_tar_on_demand(logged_in, tmp_path):
    r, options = logged_in
    with Registry(options) as registry:
        store = open_store(f"{r.host}/bc/pull:cache", registry)
        blobs = _write_cache(Cache(tmp_path / "a"), store)
        fresh = Cache(tmp_path / "b")
        session = _reader(fresh, store, eager=True)
        session.prefetch()
        with fresh.overlaid(session):
            plain = [cached_layer(fresh, k, _never) for k in ("one", "two")]
            packed = [recompress(x, "gzip") for x in plain]
        session.close()
    assert [x.digest for x in packed] == blobs and all(fresh.has(d) for d in blobs)
    assert not fresh.has(plain[0].digest)  # the plain tar is made only when read
    names = [e.path for e, _ in plain[0].entries()]
    assert names == ["opt", "opt/data.bin"] and fresh.has(plain[0].digest)


def _tampered(mapping: CacheManifest, layer_digest: str, **changes: object) -> CacheManifest:
    """``mapping`` with the gzip record and blob entry of one layer changed (``digest``, ``size``, ``diff_id``)."""
    layers = {k: dict(v) for k, v in mapping.layers.items()}
    blobs = list(mapping.blobs)
    for key, rec in layers.items():
        if rec["digest"] == layer_digest:
            layers[key] = {**rec, **changes}
    for i, b in enumerate(blobs):
        if b.digest == layer_digest:
            blobs[i] = replace(b, digest=str(changes.get("digest", b.digest)), size=int(changes.get("size", b.size)))  # type: ignore[call-overload]
    return replace(mapping, layers=layers, blobs=tuple(blobs))


@pytest.mark.parametrize("eager", [True, False], ids=["local output", "registry output"])
def test_a_blob_the_registry_lacks_or_of_another_size_is_built_instead(logged_in, tmp_path, eager):
    with _written(logged_in, tmp_path, "missing") as (store, blobs, honest):
        for case, changes in {"missing": {"digest": "sha256:" + "0" * 64}, "another size": {"size": 12}}.items():
            fresh = Cache(tmp_path / case)
            made: list[str] = []
            session = _reader(fresh, store, eager=eager, remote=_tampered(honest, blobs[0], **changes))
            with fresh.overlaid(session):
                got = recompress(cached_layer(fresh, "one", lambda m=made: m.append("one") or _entries("one")), "gzip")
            assert made == ["one"] and got.digest == blobs[0], case  # built again, the same bytes
            assert any("lacks" in w for w in session.warnings), (case, session.warnings)


def test_a_pulled_layer_that_does_not_unpack_to_its_diff_id_is_built_instead(logged_in, tmp_path):
    """The mapping says the blob of layer ``one`` is layer ``two``'s (both 'there', same size): a local output
    pulls it, the diff ID check fails, the layer is built; a registry output finds out when the bytes are needed
    and the build starts again without that record."""
    with _written(logged_in, tmp_path, "diffid", keys=("one", "uno")) as (store, blobs, honest):
        sizes = {b.digest: b.size for b in honest.blobs}
        both = _tampered(honest, blobs[0], digest=blobs[1], size=sizes[blobs[1]])
        # a blob the mapping pairs with two diff IDs is not used at all (whichever is wrong)
        fresh = Cache(tmp_path / "both")
        made: list[str] = []
        session = _reader(fresh, store, eager=True, remote=both)
        with fresh.overlaid(session):
            got = recompress(cached_layer(fresh, "one", lambda: made.append("one") or _entries("one")), "gzip")
        assert made == ["one"] and got.digest == blobs[0] and any("2 diff IDs" in w for w in session.warnings)
        # paired with one diff ID only (uno's own records gone), the lie is found out by the pull
        uno = {k for k, v in honest.layers.items() if v["digest"] == blobs[1]}
        uno |= {k for k, v in honest.layers.items() if v["digest"] in {honest.layers[u]["diff_id"] for u in uno}}
        lie = replace(both, layers={k: v for k, v in both.layers.items() if k not in uno})

        fresh = Cache(tmp_path / "local")
        made: list[str] = []
        session = _reader(fresh, store, eager=True, remote=lie)
        with fresh.overlaid(session):
            got = recompress(cached_layer(fresh, "one", lambda: made.append("one") or _entries("one")), "gzip")
        assert made == ["one"] and got.digest == blobs[0]
        assert any("failed its check" in w and "unpacks to" in w for w in session.warnings), session.warnings
        assert not fresh.has(blobs[1])  # the blob that failed was not kept

        fresh = Cache(tmp_path / "remote")
        session = _reader(fresh, store, eager=False, remote=lie)
        with fresh.overlaid(session):
            lazy = cached_layer(fresh, "one", _never)
            with pytest.raises(NotInCache) as caught:
                list(lazy.entries())
        assert caught.value.key == layer_key("one") and "unpacks to" in caught.value.why


def test_a_layer_only_used_to_make_another_is_asked_for_again(logged_in, tmp_path):
    """A record without a blob (an unpruned layer, say) is fine until its bytes are needed: then the build is
    told to start again without it."""
    with _written(logged_in, tmp_path, "inner") as (store, blobs, honest):
        gzip_keys = {recompress_key(str(rec["diff_id"]), "gzip") for rec in honest.layers.values()}
        inner = replace(honest, layers={k: v for k, v in honest.layers.items() if k not in gzip_keys})
        fresh = Cache(tmp_path / "b")
        session = _reader(fresh, store, eager=True, remote=inner)
        with fresh.overlaid(session):
            layer = cached_layer(fresh, "one", _never)  # known: its digest, no bytes
            assert layer.digest != blobs[0]
            with pytest.raises(NotInCache, match="no blob"):
                layer.open()


class _Breaking:
    """A plain-HTTP proxy to a registry that cuts the first download of each blob after ``cut`` bytes."""

    def __init__(self, upstream: LocalRegistry, cut: int) -> None:
        self.upstream, self.cut, self.ranges = upstream, cut, []
        self.port = free_port()
        self._client = httpx.Client(timeout=60, verify=False)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer._handle(self)

            do_HEAD = do_GET  # noqa: N815

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection")}
        resp = self._client.request(h.command, f"{self.upstream.url}{h.path}", headers=headers)
        data = b"" if h.command == "HEAD" else resp.content
        blob = "/blobs/sha256:" in h.path and h.command == "GET"
        if blob:
            self.ranges.append(h.headers.get("Range"))
        h.send_response(resp.status_code)
        for k, v in resp.headers.items():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                h.send_header(k, v)
        length = resp.headers.get("content-length", "0") if h.command == "HEAD" else str(len(data))
        h.send_header("Content-Length", length)
        h.end_headers()
        if blob and h.headers.get("Range") is None and len(data) > self.cut:
            h.wfile.write(data[: self.cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        h.wfile.write(data)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._client.close()


def test_a_broken_pull_goes_on_where_it_stopped(tmp_path):
    have_tools()
    upstream = LocalRegistry(tmp_path / "reg").start()  # plain HTTP behind the proxy
    proxy = _Breaking(upstream, cut=100_000)
    try:
        options = RegistryOptions(insecure=True)
        with Registry(options) as registry:
            blobs = _write_cache(Cache(tmp_path / "a"), open_store(f"{upstream.host}/bc/resume:cache", registry))
        with Registry(options) as registry:
            store = open_store(f"127.0.0.1:{proxy.port}/bc/resume:cache", registry)
            fresh = Cache(tmp_path / "b")
            session = _reader(fresh, store, eager=True)
            with fresh.overlaid(session):
                got = recompress(cached_layer(fresh, "one", lambda: _entries("one")), "gzip")
        assert not session.warnings, session.warnings
        assert got.digest == blobs[0] and fresh.has(blobs[0])
        resumed = [int(r[6:-1]) for r in proxy.ranges if r]
        assert resumed and 0 < resumed[0] <= 100_000  # a second request asked for the rest only
    finally:
        proxy.close()
        upstream.stop()


def test_a_pull_is_checked_against_the_diff_id_and_leaves_nothing_behind(logged_in, tmp_path):
    with _written(logged_in, tmp_path, "check") as (store, blobs, mapping):
        blob = next(b for b in mapping.blobs if b.digest == blobs[0])
        fresh = Cache(tmp_path / "b")
        with pytest.raises(IntegrityError, match="unpacks to"):
            store.pull(blob, "sha256:" + "1" * 64, fresh, plain=True)
        assert not fresh.has(blob.digest) and not os.listdir(fresh.root / "tmp")
