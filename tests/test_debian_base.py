"""The Debian base, for real: .debs from the host's configured mirror, layers loaded into the Docker Engine.

Indexes and packages go through the session's shared cache, so each downloads once per test session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.oci import append_layers, empty_image
from gpuship.oci.compress import for_transport
from gpuship.oci.sinks import load_into_engine
from gpuship.oci.unpack import unpack
from gpuship.sources.debian import PROFILES, DebianBase, build_base

IMPORTS = "import ssl, sqlite3, ctypes, zlib, lzma, bz2, uuid, decimal, hashlib"
PROBE = (
    f"{IMPORTS}, os, sys, platform, pwd; "
    "ctx = ssl.create_default_context(); "
    "print(sys.version_info[:2], os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name, os.getcwd(), "
    "platform.machine(), ctx.cert_store_stats()['x509_ca'] > 100, sqlite3.sqlite_version_info > (3, 0), "
    "uuid.uuid4().version, hashlib.sha256(b'').hexdigest()[:8], lzma.decompress(lzma.compress(b'x')), "
    "os.access('/tmp', os.W_OK))"
)


def _image(base: DebianBase):  # type: ignore[no-untyped-def]
    return append_layers(empty_image(base.platform, base.config), base.layers, created_by=f"gpuship: {base.profile}")


def _run_probe(docker, base: DebianBase, expect_version: str, machine: str) -> None:  # type: ignore[no-untyped-def]
    tag = docker.tag()
    load_into_engine(_image(base), tag)
    try:
        proc = docker.run("run", "--rm", "--platform", str(base.platform), tag, "python3", "-c", PROBE, timeout=300)
        major, minor = expect_version.split(".")
        assert proc.stdout.strip() == (
            f"({major}, {minor}) 65532 65532 app /home/app {machine} True True 4 e3b0c442 b'x' True"
        ), proc.stderr
        # no shell by default: the image runs python3 directly
        assert docker.run("run", "--rm", tag, "/bin/sh", "-c", "true", check=False).returncode != 0
    finally:
        docker.run("rmi", "-f", tag, check=False)


@pytest.fixture(scope="module")
def bookworm_amd64(shared_cache: Cache) -> DebianBase:
    return build_base("debian-bookworm", "linux/amd64", cache=shared_cache)


def test_bookworm_amd64_runs_python_as_non_root_with_the_full_stdlib(bookworm_amd64: DebianBase, docker) -> None:  # type: ignore[no-untyped-def]
    b = bookworm_amd64
    assert b.python.version == "3.11" and b.python.executable == "/usr/bin/python3.11"
    assert b.python.stdlib == "/usr/lib/python3.11"
    env = b.config.env_dict()
    assert env["LANG"] == "C.UTF-8" and env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert "/usr/bin" in env["PATH"] and b.config.user == "65532:65532" and b.config.working_dir == "/home/app"
    assert b.links == {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
    names = b.package_names()
    assert {"libc6", "python3.11-minimal", "libpython3.11-stdlib", "libssl3", "ca-certificates"} <= set(names)
    # Essential packages only where needed, and nothing for maintainer scripts
    assert not {"bash", "dash", "coreutils", "perl-base", "debconf", "dpkg", "openssl", "mawk"} & set(names)
    assert ("awk", "base-files") in b.skipped
    _run_probe(docker, b, "3.11", "x86_64")


def test_bookworm_amd64_is_small_and_reproducible(
    bookworm_amd64: DebianBase, shared_cache: Cache, tmp_path: Path
) -> None:
    b = bookworm_amd64
    size = sum(layer.size for layer in for_transport(_image(b), "gzip").layers)  # as a registry stores it
    assert size <= 20_000_000, f"the compressed base is {size / 1e6:.1f} MB"
    assert [layer.comment.split(":")[0] for layer in b.layers] == [
        "debian bookworm core",
        "debian bookworm python",
        "debian system files",
    ]
    # a second build from scratch: same .debs and indexes (hard-linked, no download), no cached layers
    fresh = Cache(tmp_path / "fresh")
    for blob in (shared_cache.root / "blobs" / "sha256").iterdir():
        os.link(blob, fresh.root / "blobs" / "sha256" / blob.name)
    for ns in (shared_cache.root / "refs").iterdir():
        if ns.name.startswith("debian-"):
            shutil.copytree(ns, fresh.root / "refs" / ns.name)
    again = build_base("debian-bookworm", "linux/amd64", cache=fresh)
    assert not any(layer.reused for layer in again.layers)
    assert [layer.digest for layer in again.layers] == [layer.digest for layer in b.layers]
    assert _image(again).digest == _image(b).digest
    assert again.packages == b.packages
    # and the same inputs are reused, not rebuilt
    assert all(layer.reused for layer in build_base("debian-bookworm", "linux/amd64", cache=fresh).layers)


def test_slimming_report_lists_what_was_dropped(bookworm_amd64: DebianBase) -> None:
    rep = bookworm_amd64.dropped
    assert {"docs", "python-stdlib"} <= set(rep.by_rule)
    paths = {d.path for d in rep.dropped}
    assert any(p.startswith("usr/share/doc/libc6/") for p in paths)
    assert not any(p.endswith("/copyright") and p.count("/") == 4 for p in paths)  # usr/share/doc/PKG/copyright stays
    assert any(p.startswith("usr/lib/python3.11/pydoc_data/") for p in paths)
    assert rep.bytes == sum(d.size for d in rep.dropped) > 1_000_000
    j = rep.to_json()
    assert j["files"] == len(rep.dropped) and j["dropped"][0]["path"].startswith("/")


def test_dpkg_status_lists_exactly_the_installed_packages(bookworm_amd64: DebianBase, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    unpack(list(bookworm_amd64.layers), root)
    admin = root / "var/lib/dpkg"
    q = subprocess.run(
        [
            "dpkg-query",
            "-W",
            "-f",
            "${Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n",
            f"--admindir={admin}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert q.stderr == ""
    rows = sorted(tuple(line.split("\t")) for line in q.stdout.splitlines())
    assert rows == sorted((n, v, a, "ii ") for n, v, a in bookworm_amd64.packages)
    # every file dpkg lists is there with the bytes its md5sums give (through the merged-/usr links)
    v = subprocess.run(["dpkg", f"--admindir={admin}", f"--root={root}", "--verify"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout == "", v.stdout + v.stderr
    listed = subprocess.run(
        ["dpkg-query", f"--admindir={admin}", "-L", "libc6"], capture_output=True, text=True, check=True
    )
    assert "/lib/x86_64-linux-gnu/libc.so.6" in listed.stdout.split()  # as the package names it
    assert (root / "usr/lib/x86_64-linux-gnu/libc.so.6").is_file() and (root / "lib").is_symlink()
    assert "VERSION_CODENAME=bookworm" in (root / "etc/os-release").read_text()
    assert (root / "etc/passwd").read_text().splitlines()[-1] == "app:x:65532:65532:app:/home/app:/usr/sbin/nologin"
    assert oct((root / "tmp").stat().st_mode & 0o7777) == "0o1777"
    assert os.readlink(root / "usr/bin/python3") == "python3.11"
    bundle = (root / "etc/ssl/certs/ca-certificates.crt").read_text()
    crts = sorted((root / "usr/share/ca-certificates/mozilla").glob("*.crt"))
    assert len(crts) > 100 and bundle.count("BEGIN CERTIFICATE") == len(crts)
    assert bundle.startswith(crts[0].read_text())  # update-ca-certificates' order: C-sorted paths
    assert not (root / "usr/share/man").exists() and not (root / "usr/lib/python3.11/test").exists()


def test_extra_package_adds_a_layer_and_reuses_the_base_layers(bookworm_amd64: DebianBase, shared_cache: Cache) -> None:
    more = build_base("debian-bookworm", "linux/amd64", extra_packages=("libyaml-0-2",), cache=shared_cache)
    assert [layer.digest for layer in more.layers[:2]] == [layer.digest for layer in bookworm_amd64.layers[:2]]
    assert all(layer.reused for layer in more.layers[:2])
    assert len(more.layers) == 4 and "libyaml-0-2" in more.layers[2].comment
    assert set(more.packages) - set(bookworm_amd64.packages) == {p for p in more.packages if p[0] == "libyaml-0-2"}
    assert more.why["libyaml-0-2"] == "requested"


def test_bookworm_arm64_runs_under_emulation(shared_cache: Cache, docker) -> None:  # type: ignore[no-untyped-def]
    b = build_base("debian-bookworm", "linux/arm64", cache=shared_cache)
    assert "lib64" not in b.links
    assert all(a in ("arm64", "all") for _, _, a in b.packages)
    _run_probe(docker, b, "3.11", "aarch64")


@pytest.mark.slow
def test_trixie_amd64_has_python_313(shared_cache: Cache, docker) -> None:  # type: ignore[no-untyped-def]
    b = build_base("debian-trixie", "linux/amd64", cache=shared_cache)
    assert PROFILES["debian-trixie"].python_version == "3.13" and b.python.executable == "/usr/bin/python3.13"
    assert [s.name for s in b.suites][:2] == ["trixie", "trixie-updates"]
    _run_probe(docker, b, "3.13", "x86_64")


@pytest.mark.slow
def test_trixie_arm64_runs_under_emulation(shared_cache: Cache, docker) -> None:  # type: ignore[no-untyped-def]
    _run_probe(docker, build_base("debian-trixie", "linux/arm64", cache=shared_cache), "3.13", "aarch64")
