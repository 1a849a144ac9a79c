"""Push and pull against a real registry (docker-registry on loopback, TLS with a throw-away CA, htpasswd),
checked from the outside with the Docker Engine and skopeo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.errors import GpushipError, RegistryError
from gpuship.oci import Entry, Family, append_layers, build_layer, make_index, with_family
from gpuship.oci.media import DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_INDEX
from gpuship.registry import Credentials, login, lookup_credentials, pull, pull_image, push
from gpuship.registry.read import BASE_DIGEST
from test_registry_support import (
    LocalRegistry,
    have_tools,
    make_image,
    make_tls,
    secret,
    tls_registry_with_users,
)

pytestmark = pytest.mark.registry

USER = "gpuship"
PASSWORD = secret("registry-pw")
CERTS_D = Path("/etc/docker/certs.d")


class TLSRegistry:
    def __init__(self, reg: LocalRegistry, ca: Path, cert_dir: Path) -> None:
        self.reg, self.ca, self.cert_dir = reg, ca, cert_dir
        self.creds = Credentials(USER, PASSWORD)

    @property
    def host(self) -> str:
        return self.reg.host

    def ref(self, name: str) -> str:
        return f"{self.reg.host}/{name}"


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRegistry]:
    root = tmp_path_factory.mktemp("tls-registry")
    with tls_registry_with_users(root, {USER: PASSWORD}) as (reg, tls):
        # the engine trusts the CA through certs.d (read at pull time, no daemon restart); skopeo through --cert-dir
        engine_dir = CERTS_D / reg.host
        engine_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(tls.ca_cert, engine_dir / "ca.crt")
        cert_dir = root / "certs"
        cert_dir.mkdir()
        shutil.copy(tls.ca_cert, cert_dir / "ca.crt")
        try:
            yield TLSRegistry(reg, tls.ca_cert, cert_dir)
        finally:
            shutil.rmtree(engine_dir, ignore_errors=True)


def skopeo_inspect(r: TLSRegistry, ref: str, *extra: str) -> dict:
    proc = subprocess.run(
        [
            "skopeo",
            "inspect",
            *extra,
            "--cert-dir",
            str(r.cert_dir),
            "--creds",
            f"{USER}:{PASSWORD}",
            f"docker://{ref}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_push_is_pulled_by_docker_and_skopeo_and_repeats_upload_nothing(tls_registry, cache, docker, tmp_path):
    r = tls_registry
    img = make_image(
        cache,
        [
            {"usr/share/base/data.bin": os.urandom(200_000)},
            {"opt/app/lib.bin": os.urandom(120_000)},
            {"opt/app/main.py": b"print('hello')\n"},
        ],
    )
    ref = r.ref("gpuship-test/app:v1")
    first = push(img, ref, cache=cache, credentials=r.creds, ca_file=r.ca)
    config_size = len(img.config_bytes())
    assert (first.uploaded, first.skipped, first.mounted, first.manifests) == (4, 0, 0, 1)
    assert first.bytes_uploaded == sum(layer.size for layer in img.layers) + config_size
    assert first.digest == img.digest

    # skopeo sees exactly our manifest
    info = skopeo_inspect(r, ref)
    assert info["Digest"] == img.digest
    assert info["Layers"] == [layer.digest for layer in img.layers]

    # the Docker Engine pulls it (after docker login, with the CA in certs.d) and sees our diff_ids
    cfg = tmp_path / "docker-config"
    docker.run("--config", str(cfg), "login", r.host, "-u", USER, "--password-stdin", input=PASSWORD.encode())
    try:
        docker.run("--config", str(cfg), "pull", ref)
        rootfs = json.loads(docker.run("image", "inspect", ref, "--format", "{{json .RootFS.Layers}}").stdout)
        assert rootfs == [layer.diff_id for layer in img.layers]
    finally:
        docker.run("rmi", "-f", ref, check=False)

    # a second push sends no blob
    again = push(img, ref, cache=cache, credentials=r.creds, ca_file=r.ca)
    assert (again.uploaded, again.skipped, again.bytes_uploaded, again.bytes_sent) == (0, 4, 0, 0)
    assert again.digest == first.digest

    # a one-layer change uploads that layer and the new config, nothing else
    changed = build_layer([Entry.file("opt/app/main.py", b"print('hello, again')\n")], cache)
    img2 = append_layers(img.__class__(img.platform, img.config, img.layers[:2]), [changed])
    third = push(img2, r.ref("gpuship-test/app:v2"), cache=cache, credentials=r.creds, ca_file=r.ca)
    assert (third.uploaded, third.skipped) == (2, 2)
    assert third.bytes_uploaded == changed.size + len(img2.config_bytes())
    assert skopeo_inspect(r, r.ref("gpuship-test/app:v2"))["Layers"][-1] == changed.digest


def test_multi_platform_index_pushes_and_pulls_back_per_platform(tls_registry, cache, tmp_path):
    r = tls_registry
    amd = make_image(cache, [{"etc/arch": b"amd64\n"}, {"opt/shared": b"same bytes on both\n"}], "linux/amd64")
    arm = make_image(cache, [{"etc/arch": b"arm64\n"}, {"opt/shared": b"same bytes on both\n"}], "linux/arm64")
    index = make_index([amd, arm])
    ref = r.ref("gpuship-test/multi:1")
    result = push(index, ref, cache=cache, credentials=r.creds, ca_file=r.ca)
    assert result.digest == index.digest
    assert result.blobs == 5  # two configs, two arch layers, one shared layer
    assert result.manifests == 3  # two image manifests by digest, then the index by tag

    raw = skopeo_inspect(r, ref, "--raw")
    assert raw["mediaType"] == OCI_INDEX and len(raw["manifests"]) == 2

    other = Cache(tmp_path / "other-cache")
    for want in (amd, arm):
        got = pull_image(ref, want.platform, other, credentials=r.creds, ca_file=r.ca)
        assert got.platform.architecture == want.platform.architecture
        assert [layer.digest for layer in got.layers] == [layer.digest for layer in want.layers]
        assert [layer.diff_id for layer in got.layers] == [layer.diff_id for layer in want.layers]
        assert got.digest == want.digest  # unchanged, it keeps the registry's bytes
        assert got.layers[0].open().read() == want.layers[0].open().read()
    whole = pull(ref, other, credentials=r.creds, ca_file=r.ca)
    assert whole.digest == index.digest

    with pytest.raises(GpushipError, match="no linux/s390x"):
        pull_image(ref, "linux/s390x", other, credentials=r.creds, ca_file=r.ca)


def test_docker_family_survives_a_round_trip_without_mixing(tls_registry, cache, tmp_path):
    r = tls_registry
    img = with_family(make_image(cache, [{"etc/hostname": b"docker-family\n"}]), Family.DOCKER)
    ref = r.ref("gpuship-test/dockerish:1")
    push(img, ref, cache=cache, credentials=r.creds, ca_file=r.ca)
    other = Cache(tmp_path / "c2")
    got = pull_image(ref, "linux/amd64", other, credentials=r.creds, ca_file=r.ca)
    assert got.family is Family.DOCKER and got.digest == img.digest
    assert got.annotations[BASE_DIGEST] == img.digest
    # built upon, it stays one family: Docker types only, no OCI annotations
    grown = append_layers(got, [build_layer([Entry.file("opt/x", b"x")], other, compression="gzip")])
    m = grown.manifest_json()
    assert m["mediaType"] == DOCKER_MANIFEST and "annotations" not in m
    assert {d["mediaType"] for d in m["layers"]} == {DOCKER_LAYER_GZIP}
    assert "vnd.docker" in m["config"]["mediaType"]


def test_mount_from_another_repository_sends_no_bytes(tls_registry, cache):
    r = tls_registry
    img = make_image(cache, [{"opt/big.bin": os.urandom(150_000)}, {"opt/small": b"s"}])
    push(img, r.ref("gpuship-test/source:1"), cache=cache, credentials=r.creds, ca_file=r.ca)
    moved = push(img, r.ref("gpuship-test/elsewhere:1"), cache=cache, credentials=r.creds, ca_file=r.ca)
    assert (moved.mounted, moved.uploaded, moved.bytes_sent) == (3, 0, 0)
    assert skopeo_inspect(r, r.ref("gpuship-test/elsewhere:1"))["Digest"] == img.digest


def test_push_by_digest_and_chunked_upload(tls_registry, cache, tmp_path):
    r = tls_registry
    payload = os.urandom(300_000)
    img = make_image(cache, [{"opt/payload.bin": payload}])
    ref = r.ref(f"gpuship-test/chunks@{img.digest}")
    result = push(img, ref, cache=cache, credentials=r.creds, ca_file=r.ca, chunk_size=64 << 10)
    assert result.uploaded == 2 and result.bytes_sent == result.bytes_uploaded
    got = pull_image(ref, "linux/amd64", Cache(tmp_path / "c3"), credentials=r.creds, ca_file=r.ca)
    assert got.layers[0].digest == img.layers[0].digest
    with pytest.raises(GpushipError, match="names digest"):
        push(img, r.ref("gpuship-test/chunks@sha256:" + "0" * 64), cache=cache, credentials=r.creds, ca_file=r.ca)


def test_login_stores_auths_0600_and_push_uses_them(tls_registry, cache, tmp_path):
    r = tls_registry
    config = tmp_path / "docker" / "config.json"
    with pytest.raises(RegistryError, match="refused the credentials"):
        login(r.host, USER, "wrong-" + PASSWORD, ca_file=r.ca, docker_config=config)
    assert not config.exists()
    where = login(r.host, USER, PASSWORD, ca_file=r.ca, docker_config=config)
    assert where == str(config)
    assert (config.stat().st_mode & 0o777) == 0o600
    assert list(json.loads(config.read_text())["auths"]) == [r.host]
    creds = lookup_credentials(r.host, config)
    assert (creds.username, creds.password) == (USER, PASSWORD)
    img = make_image(cache, [{"etc/motd": b"from stored login\n"}])
    result = push(img, r.ref("gpuship-test/login:1"), cache=cache, ca_file=r.ca, docker_config=config)
    assert result.uploaded == 2


def test_wrong_password_is_one_clear_error(tls_registry, cache):
    r = tls_registry
    img = make_image(cache, [{"etc/x": b"x"}])
    with pytest.raises(RegistryError) as info:
        push(img, r.ref("gpuship-test/denied:1"), cache=cache, credentials=Credentials(USER, "nope"), ca_file=r.ca)
    line = info.value.line()
    assert "refused the credentials of user 'gpuship'" in line and "gpuship login" in line
    assert "\n" not in line and "nope" not in line


def test_unknown_ca_is_one_clear_error(tmp_path, cache):
    have_tools()
    tls = make_tls(tmp_path / "tls")  # a CA nobody trusts (not in certs.d, not passed)
    reg = LocalRegistry(tmp_path / "reg", tls=tls).start()
    try:
        img = make_image(cache, [{"etc/x": b"x"}])
        with pytest.raises(RegistryError) as info:
            push(img, f"{reg.host}/gpuship-test/untrusted:1", cache=cache)
        line = info.value.line()
        assert f"the TLS certificate of {reg.host} is not trusted" in line and "--ca-file" in line
        # with the CA it works, and --insecure works without it
        assert push(img, f"{reg.host}/gpuship-test/untrusted:1", cache=cache, ca_file=tls.ca_cert).uploaded == 2
        assert push(img, f"{reg.host}/gpuship-test/untrusted:2", cache=cache, insecure=True).skipped == 2
    finally:
        reg.stop()


def test_rich_progress_draws_every_blob(tls_registry, cache):
    import io

    from rich.console import Console

    from gpuship.cli.console import RichProgress

    r = tls_registry
    img = make_image(cache, [{"opt/a.bin": os.urandom(100_000)}, {"opt/b": b"b"}])
    buf = io.StringIO()
    with RichProgress(Console(file=buf, force_terminal=True, width=120), bars=True, transient=False) as progress:
        result = push(
            img,
            r.ref("gpuship-test/progress:1"),
            cache=cache,
            credentials=r.creds,
            ca_file=r.ca,
            progress=progress,
            chunk_size=32 << 10,
        )
    assert result.uploaded == 3
    text = buf.getvalue()
    for layer in img.layers:
        assert f"{layer.digest[7:19]} pushed" in text
